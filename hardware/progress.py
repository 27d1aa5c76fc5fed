"""Progress bars for transfers, drawn by ``tqdm``: the one kind of bar the project shows
(the bench tool, the Primary, the Secondary, the demos).

    bar = progress_bar("image", stream=sys.stderr)
    client.put_image(name, f, length, progress=bar)   # bar(done, total) after each chunk

On a terminal the bar is redrawn in place (tqdm throttles the redraws) and left on screen
when the transfer ends. Anywhere else (a pipe, a log file) nothing is redrawn: the bar
writes at most ``log_steps`` plain lines per transfer, the last one when the transfer ends,
so a log stays short and readable (``log_steps=0``: silent off a terminal). ``quiet=True``
shows nothing at all. A line reads::

    image  50% [##########..........] 512kB/1.00MB [00:06<00:06, 87.4kB/s]

``timing=False`` leaves out the times and the rate (``image  50% [###...] 512kB/1.00MB``):
for a bar fed by another process's reports, whose timing is that of their arrival.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

#: the layout of every bar, on a terminal and in a log (tqdm's fields; sizes in 1024s)
BAR_FORMAT = "{desc} {percentage:3.0f}% [{bar:20}] {n_fmt}B/{total_fmt}B"
TIMING = " [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def _bar_format(timing: bool) -> str:
    return BAR_FORMAT + (TIMING if timing else "{postfix}")


def format_line(
    label: str, done: int, total: int, elapsed: float, note: str = "", *, timing: bool = True
) -> str:
    """One plain-text bar line (the form written to a log), e.g.
    ``image  50% [##########..........] 512kB/1.00MB [00:06<00:06, 87.4kB/s]``."""
    return tqdm.format_meter(
        min(done, total) if total > 0 else 0,
        max(total, 0),
        elapsed,
        prefix=label,
        ascii=".#",
        bar_format=_bar_format(timing),
        postfix=note or None,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
    )


class Progress:
    """One transfer's bar: call it with ``(done, total)``; it closes itself when ``done``
    reaches ``total`` (unless ``auto_close`` is false: the caller then closes it, with a
    note such as ``sha256 ok``). :meth:`close` also ends it early (a refused transfer)."""

    def __init__(
        self,
        label: str,
        stream: TextIO,
        *,
        quiet: bool = False,
        log_steps: int = 1,
        auto_close: bool = True,
        timing: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream
        self.quiet = quiet
        self.log_steps = max(0, log_steps)
        self.auto_close = auto_close
        self.timing = timing
        self.clock = clock
        self.tty = not quiet and _isatty(stream)
        self.closed = False
        self.lines: list[str] = []  # what went to a non-terminal, for tests and callers
        self._start = clock()
        self._bar: tqdm[None] | None = None
        self._step = -1
        self._done = 0
        self._total = 0

    def __call__(self, done: int, total: int) -> None:
        if self.closed:
            return
        self._done, self._total = done, total
        finished = done >= total
        if self.quiet:
            pass
        elif self.tty:
            self._draw(done, total)
        elif self.log_steps > 1 and not finished:
            step = done * self.log_steps // total
            if step != self._step:
                self._step = step
                self._log()
        if finished and self.auto_close:
            self.close()

    def close(self, note: str = "") -> None:
        """End the bar where it stands; ``note`` is shown after it (e.g. ``REFUSED``)."""
        if self.closed:
            return
        self.closed = True
        if self.quiet:
            return
        if self.tty:
            self._draw(self._done, self._total)
            assert self._bar is not None
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.close()
        elif self.log_steps > 0:
            self._log(note)

    def _draw(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            return
        cols, rows = _screen(self.stream)
        self._bar = tqdm(
            total=max(total, 0),
            initial=done,
            desc=self.label,
            file=self.stream,
            bar_format=_bar_format(self.timing),
            leave=True,
            ncols=cols,
            nrows=rows,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
        )

    def _log(self, note: str = "") -> None:
        elapsed = self.clock() - self._start
        line = format_line(self.label, self._done, self._total, elapsed, note, timing=self.timing)
        self.lines.append(line)
        self.stream.write(line + "\n")
        self.stream.flush()


def progress_bar(
    label: str,
    *,
    stream: TextIO | None = None,
    quiet: bool = False,
    log_steps: int = 1,
    auto_close: bool = True,
    timing: bool = True,
) -> Progress:
    """A bar for one transfer on ``stream`` (default: standard error), as a
    ``(done, total) -> None`` callback; see the module doc for ``quiet``, ``log_steps``
    and ``timing``, and :class:`Progress` for ``auto_close``."""
    return Progress(
        label,
        stream or sys.stderr,
        quiet=quiet,
        log_steps=log_steps,
        auto_close=auto_close,
        timing=timing,
    )


def _screen(stream: TextIO) -> tuple[int, int]:
    """The columns and rows tqdm may use: one column less than the terminal's (no wrap in
    the last one), and no limit where the terminal does not say (a pty nobody sized
    reports 0 x 0, which tqdm takes as "trim the bar to nothing" and "hide it")."""
    try:
        size = os.get_terminal_size(stream.fileno())
        cols, rows = size.columns, size.lines
    except (AttributeError, OSError, ValueError):
        cols, rows = 0, 0
    return (cols - 1 if cols > 1 else 1 << 16), (rows if rows > 0 else 1 << 16)


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
