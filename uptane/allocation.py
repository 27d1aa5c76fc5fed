"""Automatic garbage collection paused while one bounded document is decoded.

Decoding a large metadata file (a targets role of 33,000 entries is 6 MB of JSON) makes
hundreds of thousands of objects. CPython's cyclic collector runs every 700 allocations
and, as the heap grows, ever more often over the older generations, whose cost grows
with everything alive: measured on a 33,000-entry targets file (bench figure 1, issue 20),
``json.loads`` took 0.39 s with the collector on and 0.08 s with it off, and the whole
decode 0.66 s against 0.29 s; a refresh of 100,000 targets spent 38 % of its time there
and grew 26 times from 10,000 targets instead of 10.

What a decoder allocates holds no reference cycle (JSON and DER trees, and the model built
from them, are trees), so reference counting frees all of it on its own and pausing the
collector loses nothing. The pause is bounded: a decode is capped by
:class:`uptane.limits.Limits` (16 MiB at most), and the collector is enabled again as soon
as the outermost decode ends, in every thread's case (a counter under a lock; a collector
disabled by the application stays disabled).

At the end of a pause, the objects made meanwhile go straight to the oldest generation
(``gc.freeze()`` then ``gc.unfreeze()``: two list splices, nothing scanned). A decoded file
is long-lived trusted state, which is where the collector would move it after walking it
twice; the young collection right after the pause would otherwise walk all of it (0.13 s
for two 33,000-entry roles). Cycles other threads made meanwhile are not lost: the next
full collection, which CPython runs once a quarter of the oldest generation is new, finds
them.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: inputs smaller than this decode in well under a millisecond: no pause for them
PAUSE_FROM_BYTES = 64 * 1024

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def collector_paused(size: int) -> Iterator[None]:
    """Pause automatic garbage collection while decoding an input of ``size`` bytes (only
    from :data:`PAUSE_FROM_BYTES` on); nested and concurrent pauses end together."""
    global _depth, _was_enabled
    if size < PAUSE_FROM_BYTES:
        yield
        return
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                # what was made meanwhile is long-lived (trusted metadata): put it in the
                # oldest generation at once (freeze then unfreeze moves the lists, scans
                # nothing) rather than have the next young collection walk all of it
                gc.freeze()
                gc.unfreeze()
                if _was_enabled:
                    gc.enable()
