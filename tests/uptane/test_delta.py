"""Delta updates (uptane/delta.py, issue 17): detools sequential patches applied from the
active slot into the inactive one in pieces, the delta target's metadata, every refusal by
name (a base that is not the installed image, corrupt patches), hostile patches, and memory
that does not grow with the image."""

from __future__ import annotations

import hashlib
import io
import random
import re
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from detools.bsdiff import pack_size
from detools.compression.heatshrink import HeatshrinkCompressor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uptane.delta import (
    FORMAT,
    DeltaApplier,
    apply_delta,
    check_delta_base,
    create_delta,
    delta_target,
    full_image_target,
)
from uptane.encryption import EncryptionPrivateKey, decryptor_for, encrypt_image
from uptane.errors import (
    BadHash,
    CorruptPatch,
    DeltaBaseMismatch,
    EndlessDataAttack,
    UnsupportedAlgorithm,
    UptaneError,
)
from uptane.keys import PrivateKey
from uptane.limits import CONSTRAINED
from uptane.metadata import DER, JSON, Metadata, TargetFile, Targets, decode
from uptane.verify import ImageVerifier


def changed(base: bytes, fraction: float, seed: int = 5) -> bytes:
    """``base`` with about ``fraction`` of its bytes changed: replaced runs, insertions and
    deletions (what a firmware rebuild does)."""
    rnd = random.Random(seed)
    new = bytearray(base)
    budget = int(len(base) * fraction)
    while budget > 0:
        n = min(rnd.randint(16, 512), budget)
        off = rnd.randrange(0, max(1, len(new) - n))
        kind = rnd.random()
        if kind < 0.8:
            new[off : off + n] = rnd.randbytes(n)
        elif kind < 0.9:
            new[off:off] = rnd.randbytes(n)
        else:
            del new[off : off + n]
        budget -= n
    return bytes(new)


def firmware(size: int, seed: int = 3) -> bytes:
    rnd = random.Random(seed)
    parts, total = [], 0
    while total < size:
        part = (
            rnd.randbytes(rnd.randint(64, 2048)) if rnd.random() < 0.6 else rnd.randbytes(4) * 200
        )
        parts.append(part)
        total += len(part)
    return b"".join(parts)[:size]


BASE = firmware(200_000)
NEW = changed(BASE, 0.05)


def _apply(base: bytes, patch: bytes, out_len: int, pieces: list[int] | None = None) -> bytes:
    out = bytearray()
    applier = DeltaApplier(
        lambda off, n: base[off : off + n],
        len(base),
        out.extend,
        patch_length=len(patch),
        output_length=out_len,
        limits=CONSTRAINED,
    )
    pos = 0
    for n in [*(pieces or []), len(patch)]:
        applier.feed(patch[pos : pos + n])
        pos = min(len(patch), pos + n)
    applier.finish()
    return bytes(out)


def _targets(
    base: bytes = BASE, new: bytes = NEW
) -> tuple[TargetFile, TargetFile, TargetFile, bytes]:
    """The base and full image entries and a delta entry between them, and the patch."""
    base_t = TargetFile.from_data("brake/fw-1.bin", base, ("sha256", "sha512"))
    full_t = TargetFile.from_data(
        "brake/fw-2.bin", new, ("sha256", "sha512"), hardware_ids=["hw"], release_counter=2
    )
    patch = create_delta(base, new)
    delta = delta_target(
        "brake/fw-1-to-2.delta",
        patch,
        base_t,
        full_t,
        ("sha256",),
        hardware_ids=["hw"],
        release_counter=2,
        ecu_ids={"ecu-1": "hw"},
    )
    return base_t, full_t, delta, patch


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base,new",
    [
        (BASE, NEW),
        (BASE, b""),
        (b"", b"a new image from nothing" * 50),
        (BASE, BASE),
        (BASE[:1000], BASE),  # grows
        (BASE, BASE[:5000]),  # shrinks
    ],
    ids=["5-percent", "to-empty", "from-empty", "same", "grows", "shrinks"],
)
def test_delta_round_trip(base: bytes, new: bytes) -> None:
    patch = create_delta(base, new)
    assert _apply(base, patch, len(new)) == new


def test_delta_of_five_percent_is_a_fraction_of_the_image() -> None:
    patch = create_delta(BASE, NEW)
    assert len(patch) < 0.15 * len(NEW)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 5000), max_size=60))
def test_patch_pieces_of_any_size_give_the_same_image(pieces: list[int]) -> None:
    patch = create_delta(BASE, NEW)
    assert _apply(BASE, patch, len(NEW), pieces) == NEW


def test_apply_delta_pulls_a_stored_patch() -> None:
    patch = create_delta(BASE, NEW)
    out = bytearray()
    n = apply_delta(
        io.BytesIO(patch).read,
        lambda off, k: BASE[off : off + k],
        len(BASE),
        out.extend,
        patch_length=len(patch),
        output_length=len(NEW),
        limits=CONSTRAINED,
    )
    assert n == len(NEW) and bytes(out) == NEW


def test_5_4_3_4_an_encrypted_delta_decrypts_into_the_applier_and_verifies_as_the_full_image() -> (
    None
):
    base_t, full_t, delta, patch = _targets()
    key = EncryptionPrivateKey.generate()
    ciphertext, enc = encrypt_image(delta, patch, {"ecu-1": key.public_key()}, chunk_size=4096)
    delta.encrypted = enc
    full = full_image_target(delta)
    assert full.same_image(full_t) and full.release_counter == 2
    verifier = ImageVerifier(full, CONSTRAINED)
    slot = bytearray()

    def write(data: bytes) -> None:
        verifier.update(data)
        slot.extend(data)

    check_delta_base(delta, base_t)
    applier = DeltaApplier(
        lambda off, n: BASE[off : off + n],
        len(BASE),
        write,
        patch_length=delta.length,
        output_length=full.length,
        limits=CONSTRAINED,
    )
    dec = decryptor_for(delta, "ecu-1", key, CONSTRAINED)
    for off in range(0, len(ciphertext), 7168):  # link-sized pieces
        dec.feed(ciphertext[off : off + 7168], applier.feed)
    dec.finish()
    applier.finish()
    verifier.finish()
    assert bytes(slot) == NEW


# --- the delta target's metadata --------------------------------------------------------------


@pytest.mark.parametrize("encoding", [JSON, DER])
def test_delta_target_round_trips_in_json_and_der(encoding: str) -> None:
    _, full_t, delta, patch = _targets()
    assert delta.delta is not None and delta.delta.format == FORMAT
    assert delta.length == len(patch) and delta.delta.target.length == len(NEW)
    targets = Targets(expires=datetime.now(UTC) + timedelta(days=1))
    targets.targets[delta.path] = delta
    md = Metadata(targets, encoding=encoding)
    md.sign(PrivateKey.generate())
    back = decode(md.to_bytes(), CONSTRAINED, encoding=encoding).signed.targets[delta.path]
    assert back == delta
    assert full_image_target(back).same_image(full_t)


@pytest.mark.parametrize(
    "custom",
    [
        {"format": FORMAT, "base": {"filename": "a", "length": 1, "hashes": {}}, "target": {}},
        {"format": FORMAT, "base": {"filename": "a", "length": -1, "hashes": {"sha256": "00"}}},
        {"format": 5},
        {"format": FORMAT, "extra": 1},
        [],
    ],
)
def test_malformed_delta_fields_are_refused(custom: object) -> None:
    d = {"length": 1, "hashes": {"sha256": "00" * 32}, "custom": {"delta": custom}}
    with pytest.raises(UptaneError):
        TargetFile.from_dict("x.delta", d, CONSTRAINED)


# --- refusals ------------------------------------------------------------------------------------


def test_5_4_3_delta_whose_base_is_not_the_installed_image_is_refused_before_writing() -> None:
    base_t, full_t, delta, _ = _targets()
    assert check_delta_base(delta, base_t) is delta.delta
    other = TargetFile.from_data(base_t.path, BASE + b"!", ("sha256",))  # same name, other bytes
    for installed in (other, full_t, None):
        with pytest.raises(DeltaBaseMismatch) as e:
            check_delta_base(delta, installed)
        assert e.value.attack == "delta-base-mismatch"
        assert "full image" in str(e.value)


def test_5_4_3_4_patch_applied_to_another_base_fails_the_full_images_hashes() -> None:
    """If a caller skipped the base check, the produced image still cannot pass."""
    _, _, delta, patch = _targets()
    wrong = bytearray(BASE)
    wrong[1000:1010] = b"0123456789"
    verifier = ImageVerifier(full_image_target(delta), CONSTRAINED)
    applier = DeltaApplier(
        lambda off, n: wrong[off : off + n],
        len(wrong),
        verifier.update,
        patch_length=len(patch),
        output_length=len(NEW),
        limits=CONSTRAINED,
    )
    applier.feed(patch)
    applier.finish()
    with pytest.raises(BadHash):
        verifier.finish()


def test_unknown_delta_format_and_plain_targets_are_unsupported() -> None:
    base_t, _, delta, _ = _targets()
    assert delta.delta is not None
    delta.delta.format = "bsdiff40"
    with pytest.raises(UnsupportedAlgorithm):
        check_delta_base(delta, base_t)
    with pytest.raises(UnsupportedAlgorithm):
        check_delta_base(base_t, base_t)
    with pytest.raises(UnsupportedAlgorithm):
        full_image_target(base_t)


def _craft(to_size: int, body: bytes, header: int = 0x04) -> bytes:
    """A sequential heatshrink patch whose decompressed stream is ``body``."""
    comp = HeatshrinkCompressor(8, 7)
    return bytes([header]) + bytes(pack_size(to_size)) + comp.compress(body) + comp.flush()


def _size(n: int) -> bytes:
    return bytes(pack_size(n))


CORRUPT = {
    "not-sequential": (_craft(10, b"", header=0x14), "not a detools sequential"),
    "lzma-compression": (bytes([0x01]) + _size(10), "not a detools sequential"),
    "other-heatshrink-window": (b"\x04" + _size(10) + b"\x75" + b"\0" * 8, "heatshrink window"),
    "data-format": (_craft(10, _size(3) + _size(0) + b"abc"), "data-format"),
    "negative-diff-size": (_craft(10, _size(0) + _size(-4)), "-4 bytes"),
    "diff-overruns-image": (_craft(10, _size(0) + _size(11)), "overruns"),
    "extra-overruns-image": (_craft(10, _size(0) + _size(0) + _size(11)), "overruns"),
    "reads-before-base": (
        _craft(10, _size(0) + _size(0) + _size(0) + _size(-5) + _size(10) + bytes(10)),
        "reads base bytes -5",
    ),
    "reads-past-base": (
        _craft(10, _size(0) + _size(0) + _size(0) + _size(500_000) + _size(10) + bytes(10)),
        "reads base bytes 500000",
    ),
    "goes-on-after-image": (
        _craft(10, _size(0) + _size(0) + _size(10) + b"0123456789" + _size(0) + b"more"),
        "goes on after",
    ),
    "size-field-too-long": (_craft(10, _size(0) + b"\xff" * 12), "too long"),
    "ends-early": (_craft(10, _size(0) + _size(0) + _size(10) + b"01234"), "5 of 10"),
    "wrong-image-size": (
        _craft(11, _size(0) + _size(0) + _size(10) + b"0123456789" + _size(0)),
        "11-byte image",
    ),
    "header-only": (b"\x04" + _size(10), "0 of 10"),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_corrupt_patch_is_refused_by_name(name: str) -> None:
    patch, why = CORRUPT[name]
    out = bytearray()
    with pytest.raises(CorruptPatch, match=re.escape(why)):
        applier = DeltaApplier(
            lambda off, n: BASE[off : off + n],
            len(BASE),
            out.extend,
            patch_length=len(patch),
            output_length=10,
            limits=CONSTRAINED,
        )
        applier.feed(patch)
        applier.finish()
    assert len(out) <= 10


def test_crafted_patch_helper_makes_valid_patches() -> None:
    """The control for the table above: a crafted patch that is well formed applies."""
    good = _craft(10, _size(0) + _size(0) + _size(10) + b"0123456789" + _size(0))
    assert _apply(BASE, good, 10) == b"0123456789"


def test_4_3_endless_data_patch_longer_than_signed_is_refused() -> None:
    patch = create_delta(BASE, NEW)
    applier = DeltaApplier(
        lambda off, n: BASE[off : off + n],
        len(BASE),
        lambda _: None,
        patch_length=len(patch) - 1,
        output_length=len(NEW),
        limits=CONSTRAINED,
    )
    with pytest.raises(EndlessDataAttack):
        applier.feed(patch)
    with pytest.raises(EndlessDataAttack):
        DeltaApplier(
            lambda off, n: b"",
            0,
            lambda _: None,
            patch_length=10,
            output_length=CONSTRAINED.image_bytes + 1,
            limits=CONSTRAINED,
        )


def test_truncated_patch_is_refused_at_finish() -> None:
    patch = create_delta(BASE, NEW)
    applier = DeltaApplier(
        lambda off, n: BASE[off : off + n],
        len(BASE),
        lambda _: None,
        patch_length=len(patch),
        output_length=len(NEW),
        limits=CONSTRAINED,
    )
    applier.feed(patch[:-10])
    with pytest.raises(CorruptPatch):
        applier.finish()


# --- hostile patches ------------------------------------------------------------------------

SMALL_BASE = firmware(3000, seed=9)
SMALL_NEW = changed(SMALL_BASE, 0.1, seed=2)
SMALL_PATCH = create_delta(SMALL_BASE, SMALL_NEW)


def _run_hostile(patch: bytes) -> bytes | None:
    """Apply ``patch`` to SMALL_BASE; the produced image, or None after a named refusal.
    Output never exceeds the declared size."""
    out = bytearray()

    def write(data: bytes) -> None:
        out.extend(data)
        assert len(out) <= len(SMALL_NEW)

    try:
        applier = DeltaApplier(
            lambda off, n: SMALL_BASE[off : off + n],
            len(SMALL_BASE),
            write,
            patch_length=len(patch),
            output_length=len(SMALL_NEW),
            limits=CONSTRAINED,
        )
        applier.feed(patch)
        applier.finish()
    except UptaneError:
        return None
    return bytes(out)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_patches_raise_only_named_errors(data: st.DataObject) -> None:
    patch = bytearray(SMALL_PATCH)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(patch) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "set"]))
        if op == "flip":
            patch[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            patch[i] = data.draw(st.sampled_from([0x00, 0x7F, 0x80, 0xBF, 0xFF]))
        elif op == "insert":
            patch[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif len(patch) > 2:
            del patch[i : i + data.draw(st.integers(1, 8))]
    produced = _run_hostile(bytes(patch))
    if produced is not None:  # it decoded: the full image's hashes decide (BadHash)
        assert len(produced) == len(SMALL_NEW)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_random_patches_raise_only_named_errors(data: bytes) -> None:
    _run_hostile(b"\x04" + bytes(pack_size(len(SMALL_NEW))) + data)
    _run_hostile(data)


# --- memory does not grow with the image ----------------------------------------------------------


def _peak_patching(size: int) -> int:
    """Peak traced bytes applying a 5 %-changed delta of a ``size``-byte image, the patch
    fed in link-sized pieces, the base read and the output hashed in pieces (flash reads
    and slot writes are the Secondary's I/O, outside its heap)."""
    base = firmware(size, seed=size)
    new = changed(base, 0.05, seed=size)
    patch = create_delta(base, new)
    read: Callable[[int, int], bytes] = lambda off, n: base[off : off + n]  # noqa: E731
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        applier = DeltaApplier(
            read,
            len(base),
            digest.update,
            patch_length=len(patch),
            output_length=len(new),
            limits=CONSTRAINED,
        )
        view = memoryview(patch)
        for off in range(0, len(patch), 7168):
            applier.feed(view[off : off + 7168])
        applier.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.digest() == hashlib.sha256(new).digest()
    return peak - start


def test_patching_memory_is_flat_1_mib_vs_16_mib() -> None:
    small = _peak_patching(1 << 20)
    big = _peak_patching(16 << 20)
    assert big <= small * 1.05 + 1024, (small, big)
    assert big < 64 * 1024
