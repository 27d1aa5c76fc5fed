"""An image arriving at an ECU (uptane/inbound.py, issue 17): the four things the link may
carry for an entry (image, ciphertext, delta, encrypted delta) all leave the full image,
and every refusal happens before a byte of the wrong image is handed on. Also the core's
delta rules around it: the Director's delta section must be the Image repository's
(§5.4.4.2 step 10.2), and a delta counts as installed once its full image is (step 6)."""

from __future__ import annotations

import hashlib
import random

import pytest

from uptane.delta import create_delta, delta_path, delta_target, produced_image
from uptane.encryption import (
    EncryptionPrivateKey,
    ResumePoint,
    encrypt_image,
    encrypted_for,
    transport_target,
)
from uptane.errors import (
    BadHash,
    CorruptPatch,
    DecryptionFailed,
    DeltaBaseMismatch,
    EndlessDataAttack,
    KeyUnwrapFailed,
    TargetMismatch,
    TruncatedCiphertext,
    WrongEncryptionKey,
)
from uptane.identity import ImageIdentity
from uptane.inbound import InboundImage
from uptane.limits import CONSTRAINED
from uptane.metadata import DeltaImage, TargetFile
from uptane.verify import check_director_image_match

ECU, OTHER = "brake-1", "door-1"
CHUNK = 1024
MARKER = b"SECRET-FIRMWARE-MARKER"


def _image(size: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    body = bytearray(rnd.randbytes(size))
    body[size // 3 : size // 3 + len(MARKER)] = MARKER
    return bytes(body)


BASE = _image(40_000, 1)
NEW = bytearray(BASE)
NEW[1000:1400] = random.Random(7).randbytes(400)
NEW[30_000:30_050] = b"x" * 50
NEW = bytes(NEW)
KEYS = {ECU: EncryptionPrivateKey.generate(), OTHER: EncryptionPrivateKey.generate()}


def _entry(path: str, data: bytes) -> TargetFile:
    tf = TargetFile.from_data(path, data, ("sha256", "sha512"), hardware_ids=["hw"])
    tf.ecu_ids = {ECU: "hw", OTHER: "hw"}
    return tf


def _encrypt(tf: TargetFile, data: bytes, ecus: tuple[str, ...] = (ECU,)) -> bytes:
    recipients = {e: KEYS[e].public_key() for e in ecus}
    ct, enc = encrypt_image(tf, data, recipients, chunk_size=CHUNK)
    tf.encrypted = enc
    return ct


def _delta() -> tuple[TargetFile, bytes]:
    base = TargetFile.from_data("fw-1.bin", BASE, ("sha256",))
    full = TargetFile.from_data("fw-2.bin", NEW, ("sha256", "sha512"))
    patch = create_delta(BASE, NEW)
    tf = delta_target(delta_path(full, base), patch, base, full, ("sha256",), hardware_ids=["hw"])
    tf.ecu_ids = {ECU: "hw", OTHER: "hw"}
    return tf, patch


INSTALLED = TargetFile.from_data("fw-1.bin", BASE, ("sha256",))


def _read_base(offset: int, length: int) -> bytes:
    return BASE[offset : offset + length]


def _run(
    inbound: InboundImage, wire: bytes, piece: int = 700, start: int = 0
) -> tuple[bytes, list[int]]:
    """Feed ``wire`` from ``start`` in pieces; the bytes handed on, and when (in wire
    bytes received) each handful arrived."""
    out = bytearray()
    when: list[int] = []

    def write(view: memoryview) -> None:
        out.extend(view)
        when.append(inbound.received)

    for off in range(start, len(wire), piece):
        inbound.feed(wire[off : off + piece], write)
    return bytes(out), when


def _finish(inbound: InboundImage) -> None:
    inbound.complete()
    inbound.verifier.finish()


def test_5_4_3_4_a_plain_image_passes_through() -> None:
    tf = _entry("fw-2.bin", NEW)
    inbound = InboundImage(tf, ECU, CONSTRAINED)
    assert inbound.wire is tf and inbound.total == len(NEW)
    out, _ = _run(inbound, NEW)
    _finish(inbound)
    assert out == NEW


def test_5_4_3_4_an_encrypted_image_is_decrypted_and_checked() -> None:
    tf = _entry("fw-2.bin", NEW)
    ct = _encrypt(tf, NEW)
    assert encrypted_for(tf, ECU) and not encrypted_for(tf, OTHER)
    inbound = InboundImage(tf, ECU, CONSTRAINED, key=KEYS[ECU])
    assert inbound.total == len(ct) == tf.encrypted.length  # type: ignore[union-attr]
    assert MARKER not in ct
    out, _ = _run(inbound, ct)
    _finish(inbound)
    assert out == NEW
    # an ECU of the entry without a wrapped key gets the plaintext
    other = InboundImage(tf, OTHER, CONSTRAINED, key=KEYS[OTHER])
    assert other.wire is tf and other.decryptor is None


def test_5_4_3_4_a_delta_produces_the_full_image() -> None:
    tf, patch = _delta()
    assert produced_image(tf).same_image(TargetFile.from_data("fw-2.bin", NEW, ("sha256",)))
    inbound = InboundImage(tf, ECU, CONSTRAINED, installed=INSTALLED, read_base=_read_base)
    assert inbound.is_delta and inbound.total == len(patch) < len(NEW) // 5
    out, _ = _run(inbound, patch, piece=97)
    _finish(inbound)
    assert out == NEW


def test_5_4_3_4_an_encrypted_delta_is_decrypted_then_applied() -> None:
    tf, patch = _delta()
    ct = _encrypt(tf, patch)
    inbound = InboundImage(
        tf, ECU, CONSTRAINED, key=KEYS[ECU], installed=INSTALLED, read_base=_read_base
    )
    out, _ = _run(inbound, ct)
    _finish(inbound)
    assert out == NEW


def test_5_4_1_no_key_or_the_wrong_key_is_a_key_mismatch_before_anything() -> None:
    tf = _entry("fw-2.bin", NEW)
    _encrypt(tf, NEW)
    with pytest.raises(WrongEncryptionKey):
        InboundImage(tf, ECU, CONSTRAINED)
    with pytest.raises(WrongEncryptionKey):
        InboundImage(tf, ECU, CONSTRAINED, key=EncryptionPrivateKey.generate())


def test_4_3_a_swapped_wrapped_key_does_not_open() -> None:
    tf = _entry("fw-2.bin", NEW)
    _encrypt(tf, NEW, (ECU, OTHER))
    enc = tf.encrypted
    assert enc is not None
    # the other ECU's wrapped key in this ECU's place, relabelled with this ECU's key id
    theirs = enc.wrapped_keys[OTHER]
    enc.wrapped_keys[ECU] = type(theirs)(enc.wrapped_keys[ECU].keyid, theirs.value)
    with pytest.raises(KeyUnwrapFailed):
        InboundImage(tf, ECU, CONSTRAINED, key=KEYS[ECU])


def test_4_3_a_ciphertext_for_another_ecu_is_refused_on_its_first_chunk() -> None:
    tf = _entry("fw-2.bin", NEW)
    theirs = _encrypt(tf, NEW, (OTHER,))  # another content key: the other ECU's bundle
    _encrypt(tf, NEW, (ECU,))
    inbound = InboundImage(tf, ECU, CONSTRAINED, key=KEYS[ECU])
    with pytest.raises(DecryptionFailed):
        _run(inbound, theirs)
    assert inbound.verifier.received == 0  # nothing handed on


@pytest.mark.parametrize("how", ["cut", "reordered"])
def test_4_3_a_cut_or_reordered_chunk_is_refused(how: str) -> None:
    tf = _entry("fw-2.bin", NEW)
    ct = _encrypt(tf, NEW)
    head, size = 16, CHUNK + 16
    chunks = [ct[i : i + size] for i in range(head, len(ct), size)]
    if how == "cut":
        wire = (
            ct[:head] + b"".join(chunks[:3]) + chunks[3][:-5] + chunks[4][:5] + b"".join(chunks[4:])
        )
        wire = wire[: len(ct)]
    else:
        chunks[2], chunks[3] = chunks[3], chunks[2]
        wire = ct[:head] + b"".join(chunks)
    inbound = InboundImage(tf, ECU, CONSTRAINED, key=KEYS[ECU])
    with pytest.raises(DecryptionFailed):
        _run(inbound, wire)
    # the chunks before the bad one, and no more
    assert inbound.verifier.received == (3 if how == "cut" else 2) * CHUNK


def test_4_3_a_stream_that_stops_early_is_truncated() -> None:
    tf = _entry("fw-2.bin", NEW)
    ct = _encrypt(tf, NEW)
    inbound = InboundImage(tf, ECU, CONSTRAINED, key=KEYS[ECU])
    _run(inbound, ct[: len(ct) - 100])
    with pytest.raises(TruncatedCiphertext):
        inbound.complete()


def test_4_3_endless_data_past_the_wire_length() -> None:
    tf = _entry("fw-2.bin", NEW)
    ct = _encrypt(tf, NEW)
    inbound = InboundImage(tf, ECU, CONSTRAINED, key=KEYS[ECU])
    with pytest.raises(EndlessDataAttack):
        _run(inbound, ct + b"\0" * 10, piece=len(ct) + 10)


def test_5_4_3_4_a_delta_for_another_base_is_refused_before_anything() -> None:
    tf, _patch = _delta()
    other = TargetFile.from_data("fw-0.bin", b"older", ("sha256",))
    with pytest.raises(DeltaBaseMismatch):
        InboundImage(tf, ECU, CONSTRAINED, installed=other, read_base=_read_base)
    with pytest.raises(DeltaBaseMismatch):
        InboundImage(tf, ECU, CONSTRAINED, installed=None, read_base=_read_base)


def test_5_4_3_4_a_patch_that_produces_another_image_fails_the_full_hashes() -> None:
    tf, patch = _delta()
    assert tf.delta is not None
    wrong = hashlib.sha256(b"not it").hexdigest()
    tf.delta = DeltaImage(
        tf.delta.format,
        tf.delta.base,
        ImageIdentity(tf.delta.target.path, tf.delta.target.length, {"sha256": wrong}),
    )
    inbound = InboundImage(tf, ECU, CONSTRAINED, installed=INSTALLED, read_base=_read_base)
    _run(inbound, patch)
    inbound.complete()
    with pytest.raises(BadHash):
        inbound.verifier.finish()


def test_5_4_3_4_a_corrupt_patch_is_refused_by_name() -> None:
    tf, patch = _delta()
    bad = patch[:1] + b"\x7f" + patch[2:]
    inbound = InboundImage(tf, ECU, CONSTRAINED, installed=INSTALLED, read_base=_read_base)
    with pytest.raises((CorruptPatch, BadHash)):
        _run(inbound, bad)
        _finish(inbound)


def test_5_4_3_an_encrypted_transfer_resumes_at_its_last_whole_chunk() -> None:
    tf = _entry("fw-2.bin", NEW)
    ct = _encrypt(tf, NEW)
    first = InboundImage(tf, ECU, CONSTRAINED, key=KEYS[ECU])
    done, _ = _run(first, ct[: 16 + 5 * (CHUNK + 16) + 300])
    point = first.checkpoint()
    assert point is not None and point.chunks == 5
    again = InboundImage(
        tf, ECU, CONSTRAINED, key=KEYS[ECU], resume=ResumePoint(point.header, point.chunks)
    )
    assert again.received == point.ciphertext_offset
    for i in range(0, point.plaintext_offset, 4096):  # the slot's bytes, hashed again
        again.verifier.update(NEW[i : min(i + 4096, point.plaintext_offset)])
    rest, _ = _run(again, ct, start=point.ciphertext_offset)
    _finish(again)
    assert done[: point.plaintext_offset] + rest == NEW


def test_5_4_4_2_10_2_the_delta_section_must_be_the_image_repositorys() -> None:
    director, _ = _delta()
    image, _ = _delta()
    check_director_image_match(director, image)
    assert director.delta is not None
    image.delta = DeltaImage(director.delta.format, director.delta.target, director.delta.base)
    with pytest.raises(TargetMismatch):
        check_director_image_match(director, image)
    image.delta = None
    with pytest.raises(TargetMismatch):
        check_director_image_match(director, image)


def test_transport_target_is_the_ciphertext_for_its_ecus_only() -> None:
    tf = _entry("fw-2.bin", NEW)
    assert transport_target(tf, ECU) is tf
    ct = _encrypt(tf, NEW)
    wire = transport_target(tf, ECU)
    assert (wire.length, wire.hashes["sha256"]) == (len(ct), hashlib.sha256(ct).hexdigest())
    assert transport_target(tf, OTHER) is tf
