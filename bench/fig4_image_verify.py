"""Figure 4: streaming image verification against raw ``hashlib.sha256``.

The same random image is checked by :class:`uptane.verify.ImageVerifier` (a target listing
its SHA-256, fed in the constrained Secondary's chunk size, then ``finish``) and hashed by
``hashlib.sha256`` in one call over the whole buffer. The figure is the throughput ratio,
ours / raw (≥ 0.9): runs alternate, and each side counts its fastest run (hashing is
CPU-bound, so load from the shared machine only adds time); the median of the
back-to-back pairs' ratios is reported too. Runs are short (2 MiB, about a millisecond)
and many, so that some of them run without being preempted. ``details`` also gives the
Primary's chunk size, other chunk sizes, and hashlib itself fed the same small chunks,
to show where any gap comes from.
"""

from __future__ import annotations

import hashlib
import random

from bench.common import Figure, alternate, median
from uptane.limits import Limits
from uptane.metadata import TargetFile
from uptane.verify import ImageVerifier

NAME = "streaming_image_verification"
TITLE = "Streaming image verification (ImageVerifier) vs raw hashlib.sha256"
GOAL = "throughput ours / raw ≥ 0.9"


def _ours(target: TargetFile, data: bytes, limits: Limits, chunk: int):
    view = memoryview(data)

    def run() -> None:
        v = ImageVerifier(target, limits)
        for off in range(0, len(view), chunk):
            v.update(view[off : off + chunk])
        v.finish()

    return run


def _raw(data: bytes):
    def run() -> None:
        hashlib.sha256(data).hexdigest()

    return run


def _raw_chunked(data: bytes, chunk: int):
    view = memoryview(data)

    def run() -> None:
        h = hashlib.sha256()
        for off in range(0, len(view), chunk):
            h.update(view[off : off + chunk])
        h.hexdigest()

    return run


def _pair_ratio(ours: list[float], raw: list[float]) -> float:
    """Median over alternating pairs of raw time / our time (each pair ran back to back)."""
    return median([r / o for o, r in zip(ours, raw, strict=True)])


def _best_ratio(ours: list[float], raw: list[float]) -> float:
    """Raw time / our time, each the fastest of its runs. Hashing is CPU-bound and
    deterministic, so noise from the shared machine only ever adds time: the fastest run
    of each is the least disturbed one (what ``timeit`` recommends)."""
    return min(raw) / min(ours)


def run(smoke: bool = False) -> list[Figure]:
    size, runs = (1 << 20, 3) if smoke else (2 << 20, 151)
    data = random.Random(4).randbytes(size)
    target = TargetFile.from_data("fw.bin", data)
    constrained, primary = Limits.constrained(), Limits.primary()
    small = constrained.chunk_size
    t_ours, t_raw = alternate(_ours(target, data, constrained, small), _raw(data), runs)
    ratio = _best_ratio(t_ours, t_raw)
    value, reference = size / min(t_ours), size / min(t_raw)
    t_big, t_raw2 = alternate(
        _ours(target, data, primary, primary.chunk_size), _raw(data), max(3, runs // 2)
    )
    t_rawc, t_raw3 = alternate(_raw_chunked(data, small), _raw(data), max(3, runs // 2))
    sweep = {}
    for chunk in (8 << 10, 16 << 10, 32 << 10):
        lim = primary.replace(chunk_size=chunk)
        a, b = alternate(_ours(target, data, lim, chunk), _raw(data), max(3, runs // 2))
        sweep[chunk] = round(_best_ratio(a, b), 4)
    mib = float(1 << 20)
    return [
        Figure(
            NAME,
            TITLE,
            GOAL,
            value=value / mib,
            reference=reference / mib,
            ratio=ratio,
            met=ratio >= 0.9,
            unit="MiB/s, ImageVerifier (fastest run)",
            reference_unit="MiB/s, hashlib.sha256 one call (fastest run)",
            notes=(
                f"{size >> 20} MiB image, sha256 listed, fed in {small}-byte chunks (the "
                f"constrained Limits chunk, which a Secondary's slot read-back and boot check "
                f"use; image chunks off the link are 7,168 bytes, see the 8 KiB row in "
                f"details); {runs} alternating runs each, fastest "
                f"of each (median of the pairs' ratios: {_pair_ratio(t_ours, t_raw):.3f}). "
                f"With the Primary's {primary.chunk_size >> 10} KiB chunks: "
                f"{_best_ratio(t_big, t_raw2):.3f}; hashlib itself fed {small}-byte chunks: "
                f"{_best_ratio(t_rawc, t_raw3):.3f}."
            ),
            details={
                "primary_chunk_ratio": round(_best_ratio(t_big, t_raw2), 4),
                "primary_chunk_bytes": primary.chunk_size,
                "hashlib_same_small_chunks_ratio": round(_best_ratio(t_rawc, t_raw3), 4),
                "median_pair_ratio": round(_pair_ratio(t_ours, t_raw), 4),
                "ratio_of_medians": round(median(t_raw) / median(t_ours), 4),
                "ratio_by_chunk_bytes": sweep,
            },
        )
    ]
