"""Figure 4: streaming image verification against raw ``hashlib.sha256``.

The same random image is checked by :class:`uptane.verify.ImageVerifier` (a target listing
its SHA-256, fed in the constrained Secondary's chunk size, then ``finish``) and hashed by
``hashlib.sha256`` in one call over the whole buffer. The figure is the throughput ratio,
ours / raw (≥ 0.9). Runs alternate; medians. ``details`` also gives the Primary's chunk
size and hashlib fed in the same small chunks, to show where any gap comes from.
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


def run(smoke: bool = False) -> list[Figure]:
    size, runs = (1 << 20, 3) if smoke else (32 << 20, 9)
    data = random.Random(4).randbytes(size)
    target = TargetFile.from_data("fw.bin", data)
    constrained, primary = Limits.constrained(), Limits.primary()
    small = constrained.chunk_size
    t_ours, t_raw = alternate(_ours(target, data, constrained, small), _raw(data), runs)
    value, reference = size / median(t_ours), size / median(t_raw)
    t_big, t_raw2 = alternate(
        _ours(target, data, primary, primary.chunk_size), _raw(data), max(3, runs // 2)
    )
    t_rawc, t_raw3 = alternate(_raw_chunked(data, small), _raw(data), max(3, runs // 2))
    ratio = value / reference
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
            unit="MiB/s, ImageVerifier (median)",
            reference_unit="MiB/s, hashlib.sha256 one call (median)",
            notes=(
                f"{size >> 20} MiB image, sha256 listed, fed in {small}-byte chunks (the "
                f"constrained Secondary's chunk size); {runs} alternating runs each."
            ),
            details={
                "primary_chunk_ratio": round(median(t_raw2) / median(t_big), 4),
                "primary_chunk_bytes": primary.chunk_size,
                "hashlib_same_small_chunks_ratio": round(median(t_raw3) / median(t_rawc), 4),
            },
        )
    ]
