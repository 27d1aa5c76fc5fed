"""Figure 11: delta updates (issue 17), bytes and memory.

Bytes. A 4 MiB firmware-like image (runs of random code and repeated tables) and a new
version with 5 % of its bytes changed: non-overlapping edits of 16..2,048 bytes at random
places, 80 % of the changed bytes replaced, 10 % inserted, 10 % deleted (so later code
shifts, as a rebuild does). The figure is the bytes of the :data:`uptane.delta.FORMAT`
patch (what crosses the link instead of the image) over the full image's bytes (≤ 0.15).
``details`` has the same pair through the other candidates (bsdiff4; detools with lzma and
zstd): patch size, peak memory and speed to apply, which is the measurement behind the
choice of format (uptane/delta.py).

Memory. A Secondary's side in a fresh interpreter per size, through the integrated path a
Secondary runs (:class:`uptane.inbound.InboundImage`, what ``secondary.transfer`` streams
every transfer through): the delta's base checked against the running image, the patch read
from a file in 7,168-byte link pieces (its length and hashes checked) into
:class:`uptane.delta.DeltaApplier`, the base read from the "active slot" file with
``os.pread``, the produced image fed to the full image's verifier and written to the
"inactive slot" file, inside one ``tracemalloc`` window; peak(100 MiB) / peak(1 MiB) ≤ 1.05.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.common import (
    Figure,
    flat_memory_figure,
    in_fresh_interpreters,
    memory_sizes,
    not_yet,
)

NAME_BYTES = "delta_bytes_ratio"
NAME_MEM = "delta_patch_peak_memory_ratio"
TITLE_BYTES = "Delta bytes on the wire vs the full image (4 MiB image, 5 % of bytes changed)"
TITLE_MEM = "Secondary delta apply + verify + slot write peak memory, 100 MiB vs 1 MiB image"
GOAL_BYTES = "delta / full bytes ≤ 0.15"
GOAL_MEM = "peak(100 MiB) / peak(1 MiB) ≤ 1.05"
LINK_PIECE = 7168


def firmware(size: int, seed: int) -> bytes:
    """Runs of random bytes (code) and of a repeated 4-byte word (tables, padding)."""
    rnd = random.Random(seed)
    parts: list[bytes] = []
    total = 0
    while total < size:
        if rnd.random() < 0.6:
            part = rnd.randbytes(rnd.randint(256, 4096))
        else:
            part = rnd.randbytes(4) * rnd.randint(64, 1024)
        parts.append(part)
        total += len(part)
    return b"".join(parts)[:size]


def new_version(base: bytes, fraction: float, seed: int) -> tuple[bytes, int]:
    """``base`` with ``fraction`` of its bytes changed by non-overlapping edits (one per
    4 KiB slot at most); returns the new image and the bytes changed. The new bytes come
    from a generator of their own (one seeded like the base's would repeat its bytes,
    which bsdiff then finds)."""
    rnd = random.Random(f"edits-{seed}")
    budget = int(len(base) * fraction)
    slots = rnd.sample(range(len(base) // 4096), k=min(len(base) // 4096, budget // 16))
    edits: list[tuple[int, int, str]] = []
    spent = 0
    for slot in slots:
        if spent >= budget:
            break
        n = min(rnd.randint(16, 2048), budget - spent)
        kind = rnd.choices(["replace", "insert", "delete"], weights=[8, 1, 1])[0]
        edits.append((slot * 4096 + rnd.randrange(0, 4096 - n + 1), n, kind))
        spent += n
    out, pos = [], 0
    for off, n, kind in sorted(edits):
        out.append(base[pos:off])
        if kind == "replace":
            out.append(rnd.randbytes(n))
            pos = off + n
        elif kind == "insert":
            out.append(rnd.randbytes(n))
            pos = off
        else:
            pos = off + n
    out.append(base[pos:])
    return b"".join(out), spent


def _traced(fn: Any) -> tuple[Any, int, float]:
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        t0 = time.perf_counter()
        got = fn()
        secs = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return got, peak - start, secs


def _candidates(base: bytes, new: bytes, work: Path) -> dict[str, dict[str, float]]:
    """Patch size, apply peak memory and speed for the other formats (files for the old
    image and the patch, as a device would read them)."""
    out: dict[str, dict[str, float]] = {}
    (work / "base").write_bytes(base)
    try:
        import detools
    except ImportError:
        return out
    for compression in ("lzma", "zstd", "heatshrink"):
        buf = io.BytesIO()
        detools.create_patch(io.BytesIO(base), io.BytesIO(new), buf, compression=compression)
        (work / "patch").write_bytes(buf.getvalue())
        with (
            (work / "base").open("rb") as fb,
            (work / "patch").open("rb") as fp,
            (work / "out").open("wb") as fo,
        ):
            _, peak, secs = _traced(lambda fb=fb, fp=fp, fo=fo: detools.apply_patch(fb, fp, fo))
        out[f"detools-sequential-{compression} (detools.apply_patch)"] = _row(buf, new, peak, secs)
    try:
        import bsdiff4
    except ImportError:
        return out
    patch = bsdiff4.diff(base, new)
    (work / "patch").write_bytes(patch)

    def apply() -> bytes:
        return bytes(bsdiff4.patch((work / "base").read_bytes(), (work / "patch").read_bytes()))

    got, peak, secs = _traced(apply)
    assert got == new
    out["bsdiff4 (BSDIFF40)"] = _row(io.BytesIO(patch), new, peak, secs)
    return out


def _row(patch: io.BytesIO, new: bytes, peak: int, secs: float) -> dict[str, float]:
    return {
        "patch_over_full": round(len(patch.getvalue()) / len(new), 4),
        "apply_peak_kib": round(peak / 1024, 1),
        "apply_mib_per_s": round(len(new) / secs / (1 << 20), 1),
    }


def _apply_ours(base: bytes, patch: bytes, length: int) -> bytes:
    """DeltaApplier over in-memory base and patch, fed link pieces; the output's SHA-256."""
    from uptane.delta import DeltaApplier
    from uptane.limits import Limits

    digest = hashlib.sha256()
    applier = DeltaApplier(
        lambda off, n: base[off : off + n],
        len(base),
        digest.update,
        patch_length=len(patch),
        output_length=length,
        limits=Limits.constrained(),
    )
    view = memoryview(patch)
    for off in range(0, len(view), LINK_PIECE):
        applier.feed(view[off : off + LINK_PIECE])
    applier.finish()
    return digest.digest()


def measure_apply(size: int, work: Path) -> dict[str, Any]:
    """One Secondary-side delta install of a ``size``-byte image; the traced peak."""
    from uptane.delta import create_delta, delta_target
    from uptane.inbound import InboundImage
    from uptane.limits import Limits
    from uptane.metadata import TargetFile

    base = firmware(size, seed=size)
    new, _ = new_version(base, 0.05, seed=size)
    patch = create_delta(base, new)
    base_t = TargetFile.from_data("fw-1.bin", base, ("sha256",))
    full_t = TargetFile.from_data("fw-2.bin", new, ("sha256", "sha512"))
    delta = delta_target("fw-1-to-2.delta", patch, base_t, full_t)
    (work / "active").write_bytes(base)
    (work / "patch").write_bytes(patch)
    del base, new
    active = os.open(work / "active", os.O_RDONLY)
    inactive = os.open(work / "inactive", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    src = os.open(work / "patch", os.O_RDONLY)
    limits = Limits.constrained()
    tracemalloc.start(8)
    try:
        start, _ = tracemalloc.get_traced_memory()
        # the integrated path a Secondary runs: base checked, patch length and hashes,
        # applied from the active slot, the full image's verifier
        inbound = InboundImage(
            delta,
            "ecu-brake",
            limits,
            installed=base_t,
            read_base=lambda off, n: os.pread(active, n, off),
        )

        def write(data: memoryview) -> None:
            os.write(inactive, data)

        while piece := os.read(src, LINK_PIECE):
            inbound.feed(piece, write)
        inbound.complete()
        inbound.verifier.finish()
        full = inbound.image
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        for fd in (active, inactive, src):
            os.close(fd)
    return {"peak": peak - start, "patch": delta.length, "image": full.length}


def _bytes_figure(smoke: bool, work: Path) -> Figure:
    """The patch of the 4 MiB pair over the full image, and the other formats' rows."""
    from uptane.delta import FORMAT, create_delta

    size = (256 << 10) if smoke else (4 << 20)
    base = firmware(size, seed=4)
    new, changed = new_version(base, 0.05, seed=4)
    t0 = time.perf_counter()
    patch = create_delta(base, new)
    create_s = time.perf_counter() - t0
    produced, peak, secs = _traced(lambda: _apply_ours(base, patch, len(new)))
    assert produced == hashlib.sha256(new).digest()
    rows = {
        f"{FORMAT} (uptane.delta.DeltaApplier, {LINK_PIECE}-byte pieces)": _row(
            io.BytesIO(patch), new, peak, secs
        )
    }
    rows.update(_candidates(base, new, work))
    ratio = len(patch) / len(new)
    return Figure(
        NAME_BYTES,
        TITLE_BYTES,
        GOAL_BYTES,
        value=float(len(patch)),
        reference=float(len(new)),
        ratio=ratio,
        met=ratio <= 0.15,
        unit=f"bytes, {FORMAT} patch",
        reference_unit="bytes, full image",
        notes=(
            f"{size >> 10} KiB base, new image {len(new)} bytes with {changed} bytes "
            f"({changed / size:.1%}) changed by non-overlapping edits (80 % replaced, "
            f"10 % inserted, 10 % deleted); patch made in {create_s:.1f} s. Image bytes "
            f"only: the delta target's metadata entry is a few hundred bytes either way. "
            f"Other formats on the same pair in details (patch/full, apply peak KiB, "
            f"apply MiB/s)."
        ),
        details={"candidates": rows, "changed_bytes": changed},
    )


def _memory_figure(smoke: bool, work: Path) -> Figure:
    sizes = memory_sizes(smoke)
    a, b = in_fresh_interpreters(measure_apply, sizes, work)
    notes = (
        f"Each size in a fresh interpreter. Constrained Limits; patch "
        f"({b['patch']} bytes for the big image) read in {LINK_PIECE}-byte pieces, "
        f"base read with pread from the active-slot file, output verified "
        f"(sha256 + sha512) and written to the inactive-slot file inside the window."
    )
    return flat_memory_figure((NAME_MEM, TITLE_MEM, GOAL_MEM), a, b, sizes, notes)


def run(smoke: bool = False) -> list[Figure]:
    try:
        import uptane.delta  # noqa: F401
    except ImportError as e:  # detools is not installed
        reason = f"uptane.delta is not importable: {e}"
        return [
            not_yet(NAME_BYTES, TITLE_BYTES, GOAL_BYTES, reason),
            not_yet(NAME_MEM, TITLE_MEM, GOAL_MEM, reason),
        ]
    with tempfile.TemporaryDirectory(prefix="bench-delta-") as tmp:
        return [_bytes_figure(smoke, Path(tmp)), _memory_figure(smoke, Path(tmp))]
