"""Figure 10: decrypting an encrypted image (issue 17), speed and memory.

Throughput. :class:`uptane.encryption.Decryptor` (STREAM chunks of AES-256-GCM, the
Director's default 64 KiB chunks, every chunk authenticated before its plaintext is handed
on) against ``cryptography``'s ``AESGCM.decrypt`` in one call over the same bytes (one
nonce, one tag): the ratio ours / raw (≥ 0.8). Decryption is CPU work with no I/O, so runs
alternate and each side counts its fastest (as figure 4); ``details`` has the ratio by chunk
size and with the ciphertext fed in the 7,168-byte pieces a link delivers (each piece is
copied into the chunk buffer: at ~9 GB/s for AES-GCM, a copy costs about as much as the
decryption).

Memory. A Secondary's side in a fresh interpreter per size, through the integrated path a
Secondary runs (:class:`uptane.inbound.InboundImage`, what ``secondary.transfer`` streams
every transfer through): the ciphertext read from a file in 7,168-byte link pieces,
decrypted, every plaintext chunk fed to the full image's verifier and written to a slot
file, inside one ``tracemalloc`` window; peak(100 MiB) / peak(1 MiB) ≤ 1.05. The content
key is unwrapped from the entry (HPKE) inside the window too.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

from bench.common import (
    Figure,
    alternate,
    flat_memory_figure,
    in_fresh_interpreters,
    median,
    memory_sizes,
    not_yet,
)

NAME_SPEED = "decrypt_throughput_ratio"
NAME_MEM = "decrypt_peak_memory_ratio"
TITLE_SPEED = "Streaming decryption (Decryptor, STREAM AES-256-GCM) vs raw AES-GCM, same bytes"
TITLE_MEM = "Secondary decrypt + verify + slot write peak memory, 100 MiB vs 1 MiB image"
GOAL_SPEED = "throughput ours / raw AES-GCM ≥ 0.8"
GOAL_MEM = "peak(100 MiB) / peak(1 MiB) ≤ 1.05"
LINK_PIECE = 7168
ECU = "ecu-brake"


def _ours(key: bytes, size: int, ciphertext: bytes, piece: int | None):
    from uptane.encryption import Decryptor
    from uptane.limits import Limits

    lim = Limits.primary()
    view = memoryview(ciphertext)

    def sink(_: memoryview) -> None:
        return None

    def run() -> None:
        dec = Decryptor(key, size, lim)
        if piece is None:
            dec.feed(view, sink)
        else:
            for off in range(0, len(view), piece):
                dec.feed(view[off : off + piece], sink)
        dec.finish()

    return run


def _raw(size: int, data: bytes):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(AESGCM.generate_key(256))
    nonce = os.urandom(12)
    ct = aead.encrypt(nonce, data, b"header")

    def run() -> None:
        aead.decrypt(nonce, ct, b"header")

    return run


def _ratio(ours: list[float], raw: list[float]) -> float:
    return min(raw) / min(ours)


def _speed(size: int, runs: int) -> tuple[float, float, float, dict[str, Any]]:
    from uptane.encryption import DEFAULT_CHUNK_SIZE, Encryptor

    data = random.Random(10).randbytes(size)
    raw = _raw(size, data)
    sweep: dict[int, float] = {}
    results: dict[int, tuple[list[float], list[float], bytes, bytes]] = {}
    for chunk in (4096, 16384, DEFAULT_CHUNK_SIZE):
        enc = Encryptor(size, chunk_size=chunk)
        ct = enc.update(data) + enc.finish()
        n = runs if chunk == DEFAULT_CHUNK_SIZE else max(3, runs // 3)
        t_ours, t_raw = alternate(_ours(enc.content_key, size, ct, None), raw, n)
        sweep[chunk] = round(_ratio(t_ours, t_raw), 4)
        results[chunk] = (t_ours, t_raw, enc.content_key, ct)
    t_ours, t_raw, key, ct = results[DEFAULT_CHUNK_SIZE]
    a, b = alternate(_ours(key, size, ct, LINK_PIECE), raw, max(3, runs // 3))
    details = {
        "ratio_by_chunk_bytes": sweep,
        "link_pieces_ratio": round(_ratio(a, b), 4),
        "median_pair_ratio": round(median([r / o for o, r in zip(t_ours, t_raw, strict=True)]), 4),
        "chunk_bytes": DEFAULT_CHUNK_SIZE,
    }
    return size / min(t_ours), size / min(t_raw), _ratio(t_ours, t_raw), details


def measure_memory(size: int, work: Path) -> dict[str, Any]:
    """One Secondary-side decryption of a ``size``-byte image; the traced peak."""
    from uptane.encryption import (
        EncryptionPrivateKey,
        Encryptor,
        encrypted_entry,
        wrap_key,
    )
    from uptane.inbound import InboundImage
    from uptane.limits import Limits
    from uptane.metadata import TargetFile

    key = EncryptionPrivateKey.generate()
    block = random.Random(size).randbytes(1 << 20)
    h256, h512 = hashlib.sha256(), hashlib.sha512()
    enc = Encryptor(size)
    ct_path = work / f"image-{size}.enc"
    with ct_path.open("wb") as f:
        for off in range(0, size, len(block)):
            part = block[: min(len(block), size - off)]
            h256.update(part)
            h512.update(part)
            f.write(enc.update(part))
        f.write(enc.finish())
    del block
    target = TargetFile(
        "brake/fw.bin", size, {"sha256": h256.hexdigest(), "sha512": h512.hexdigest()}
    )
    target.ecu_ids[ECU] = "hw"
    wrapped = {ECU: wrap_key(enc.content_key, key.public_key(), ECU, target)}
    target.encrypted = encrypted_entry(ct_path.name, enc.ciphertext_length, {}, wrapped)
    limits = Limits.constrained()
    slot = os.open(work / f"slot-{size}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    src = os.open(ct_path, os.O_RDONLY)
    tracemalloc.start(8)
    try:
        base, _ = tracemalloc.get_traced_memory()
        inbound = InboundImage(target, ECU, limits, key=key)  # unwraps the key for this ECU

        def sink(plain: memoryview) -> None:
            os.write(slot, plain)

        while piece := os.read(src, LINK_PIECE):
            inbound.feed(piece, sink)
        inbound.complete()
        inbound.verifier.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        os.close(slot)
        os.close(src)
    return {"peak": peak - base, "ciphertext": enc.ciphertext_length}


def _speed_figure(smoke: bool) -> Figure:
    size, runs = (1 << 20, 3) if smoke else (4 << 20, 61)
    value, reference, ratio, details = _speed(size, runs)
    mib = float(1 << 20)
    by_chunk = ", ".join(
        f"{k >> 10} KiB {v:.3f}" for k, v in details["ratio_by_chunk_bytes"].items()
    )
    return Figure(
        NAME_SPEED,
        TITLE_SPEED,
        GOAL_SPEED,
        value=value / mib,
        reference=reference / mib,
        ratio=ratio,
        met=ratio >= 0.8,
        unit="MiB/s, Decryptor (fastest run)",
        reference_unit="MiB/s, AESGCM.decrypt one call (fastest run)",
        notes=(
            f"{size >> 20} MiB image, {details['chunk_bytes'] >> 10} KiB chunks, the "
            f"ciphertext fed as one buffer (whole chunks are decrypted in place, no copy); "
            f"{runs} alternating runs each, fastest of each. Fed in {LINK_PIECE}-byte "
            f"link pieces (every chunk copied into the buffer first): "
            f"{details['link_pieces_ratio']:.3f}. By chunk size: {by_chunk}."
        ),
        details=details,
    )


def _memory_figure(smoke: bool) -> Figure:
    sizes = memory_sizes(smoke)
    with tempfile.TemporaryDirectory(prefix="bench-decrypt-") as tmp:
        a, b = in_fresh_interpreters(measure_memory, sizes, Path(tmp))
    notes = (
        f"Each size in a fresh interpreter. Constrained Limits; 64 KiB encryption "
        f"chunks; ciphertext read in {LINK_PIECE}-byte pieces; key unwrapped (HPKE), "
        f"each chunk authenticated, verified (sha256 + sha512) and written to a slot "
        f"file inside the window. The peak is about one ciphertext chunk and one "
        f"plaintext chunk: smaller chunks (the Director's choice per ECU) shrink it."
    )
    return flat_memory_figure((NAME_MEM, TITLE_MEM, GOAL_MEM), a, b, sizes, notes)


def run(smoke: bool = False) -> list[Figure]:
    try:
        import uptane.encryption  # noqa: F401
    except ImportError as e:
        reason = f"uptane.encryption is not importable: {e}"
        return [
            not_yet(NAME_SPEED, TITLE_SPEED, GOAL_SPEED, reason),
            not_yet(NAME_MEM, TITLE_MEM, GOAL_MEM, reason),
        ]
    return [_speed_figure(smoke), _memory_figure(smoke)]
