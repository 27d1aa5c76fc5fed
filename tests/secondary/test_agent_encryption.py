"""Encrypted images and deltas at a partial-verification Secondary (issue 17), through the
real link endpoint: the ECU decrypts while streaming into the inactive slot, applies a
delta from its running image, installs the full image, and refuses by name (nothing
installed, the indicator in its next report) a wrong key, a swapped wrapped key, a
ciphertext for another ECU, a cut or reordered chunk, a delta for another base and a patch
that does not produce the full image. A transfer cut on the link resumes, for ciphertexts
and deltas; an encrypted transfer also resumes after a reboot."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from test_agent_attacks import Ecu, ecu_config, refused
from test_agent_support import ECU, HW, NOW, image_bytes, later

from secondary.agent import SecondaryAgent
from uptane.delta import create_delta, delta_path, delta_target
from uptane.encryption import (
    EncryptionPrivateKey,
    EncryptionPublicKey,
    encrypt_image,
)
from uptane.errors import (
    BadHash,
    BadLength,
    DecryptionFailed,
    DeltaBaseMismatch,
    KeyUnwrapFailed,
    UptaneError,
    WrongEncryptionKey,
)
from uptane.metadata import DER, DeltaImage, TargetFile

MARKER = b"<<plaintext marker 17>>"
V1 = image_bytes("v1", 9_000)  # what the Ecu fixture installs first (fw/v1.bin)
V2 = bytearray(V1)
V2[2000:2600] = image_bytes("v2 changes", 600)
V2[7000 : 7000 + len(MARKER)] = MARKER
V2 = bytes(V2)
CHUNK = 1024


def my_key(ecu: Ecu) -> EncryptionPrivateKey:
    cfg = ecu_config(ecu)
    key = cfg.load_encryption_key()
    assert key is not None, "provisioning makes an encryption key"
    return key


def entry(path: str, data: bytes, **kw: object) -> TargetFile:
    return TargetFile.from_data(
        path,
        data,
        ("sha256", "sha512"),
        hardware_ids=[HW],
        release_counter=6,
        ecu_ids={ECU: HW},
        **kw,  # type: ignore[arg-type]
    )


def publish(ecu: Ecu, tf: TargetFile) -> None:
    """The Director signs ``tf`` as this ECU's only image and the Primary sends the
    targets (and the time)."""
    b = ecu.director.builder
    b.clear_targets()
    b.add_target(tf)
    b.publish(NOW)
    ecu.client.put_time(int(later(1).timestamp()))
    ecu.client.put_metadata("targets", DER, ecu.director.targets)


def sealed(tf: TargetFile, data: bytes, recipients: dict[str, EncryptionPublicKey]) -> bytes:
    ct, enc = encrypt_image(tf, data, recipients, chunk_size=CHUNK)
    tf.encrypted = enc
    return ct


def delta_entry() -> tuple[TargetFile, bytes]:
    base = TargetFile.from_data("fw/v1.bin", V1, ("sha256", "sha512"))
    full = TargetFile.from_data("fw/v2.bin", V2, ("sha256", "sha512"))
    patch = create_delta(V1, V2)
    tf = delta_target(
        delta_path(full, base),
        patch,
        base,
        full,
        ("sha256", "sha512"),
        hardware_ids=[HW],
        release_counter=6,
    )
    tf.ecu_ids = {ECU: HW}
    return tf, patch


def installed_v2(ecu: Ecu, wire_path: str) -> None:
    st = ecu.client.install(wire_path)
    assert st.state in ("idle", "trial", "confirmed", "booted"), st
    info = ecu.agent.slots.status().installed
    assert info is not None and info.filename == "fw/v2.bin"
    assert ecu.agent.flash.read(ecu.agent.slots.status().active, 0, len(V2)) == V2
    assert ecu.report_attack() is None


@pytest.fixture
def ecu(tmp_path: Path) -> Ecu:
    return Ecu(tmp_path)


# --- what installs --------------------------------------------------------------------------


def test_5_4_3_4_an_encrypted_image_is_decrypted_into_the_slot(ecu: Ecu) -> None:
    tf = entry("fw/v2.bin", V2)
    ct = sealed(tf, V2, {ECU: my_key(ecu).public_key()})
    assert MARKER not in ct and MARKER not in ecu.director.targets
    publish(ecu, tf)
    # what crosses the link is the ciphertext, of its signed length
    assert ecu.client.put_image(tf.path, ct, len(ct)) == 0
    assert ecu.agent.status().image_total == len(ct)
    installed_v2(ecu, tf.path)


def test_5_4_3_3_the_plaintext_in_place_of_the_ciphertext_is_refused(ecu: Ecu) -> None:
    tf = entry("fw/v2.bin", V2)
    sealed(tf, V2, {ECU: my_key(ecu).public_key()})
    publish(ecu, tf)
    refused(ecu, BadLength, lambda: ecu.client.put_image(tf.path, V2, len(V2)))


def test_5_4_3_4_a_delta_is_applied_from_the_running_slot(ecu: Ecu) -> None:
    tf, patch = delta_entry()
    publish(ecu, tf)
    ecu.client.put_image(tf.path, patch, len(patch))
    installed_v2(ecu, tf.path)


def test_5_4_3_4_an_encrypted_delta_is_decrypted_then_applied(ecu: Ecu) -> None:
    tf, patch = delta_entry()
    ct = sealed(tf, patch, {ECU: my_key(ecu).public_key()})
    publish(ecu, tf)
    ecu.client.put_image(tf.path, ct, len(ct))
    installed_v2(ecu, tf.path)


# --- refusals ----------------------------------------------------------------------------------


def test_5_4_1_a_key_the_ecu_does_not_hold_is_a_key_mismatch(ecu: Ecu) -> None:
    tf = entry("fw/v2.bin", V2)
    ct = sealed(tf, V2, {ECU: EncryptionPrivateKey.generate().public_key()})  # a stale key
    publish(ecu, tf)
    refused(ecu, WrongEncryptionKey, lambda: ecu.client.put_image(tf.path, ct, len(ct)))


def test_4_3_a_swapped_wrapped_key_does_not_open(ecu: Ecu) -> None:
    other = EncryptionPrivateKey.generate()
    tf = entry("fw/v2.bin", V2)
    ct = sealed(tf, V2, {ECU: my_key(ecu).public_key(), "door-1": other.public_key()})
    enc = tf.encrypted
    assert enc is not None
    # the other ECU's wrapped key put in this ECU's place, under this ECU's key id
    enc.wrapped_keys[ECU] = type(enc.wrapped_keys[ECU])(
        enc.wrapped_keys[ECU].keyid, enc.wrapped_keys["door-1"].value
    )
    del enc.wrapped_keys["door-1"]
    publish(ecu, tf)
    refused(ecu, KeyUnwrapFailed, lambda: ecu.client.put_image(tf.path, ct, len(ct)))


def test_4_3_a_ciphertext_made_for_another_ecu_is_refused(ecu: Ecu) -> None:
    tf = entry("fw/v2.bin", V2)
    theirs = sealed(tf, V2, {"door-1": EncryptionPrivateKey.generate().public_key()})
    sealed(tf, V2, {ECU: my_key(ecu).public_key()})
    publish(ecu, tf)
    assert len(theirs) == tf.encrypted.length  # type: ignore[union-attr]
    refused(ecu, DecryptionFailed, lambda: ecu.client.put_image(tf.path, theirs, len(theirs)))


@pytest.mark.parametrize("how", ["cut", "reordered"])
def test_4_3_a_cut_or_reordered_chunk_is_refused(ecu: Ecu, how: str) -> None:
    tf = entry("fw/v2.bin", V2)
    ct = sealed(tf, V2, {ECU: my_key(ecu).public_key()})
    head, size = 16, CHUNK + 16
    chunks = [ct[i : i + size] for i in range(head, len(ct), size)]
    if how == "cut":  # a chunk's last bytes dropped, the stream padded to its length
        wire = ct[:head] + b"".join(chunks[:2]) + chunks[2][:-7] + b"".join(chunks[3:]) + b"\0" * 7
    else:
        chunks[1], chunks[2] = chunks[2], chunks[1]
        wire = ct[:head] + b"".join(chunks)
    publish(ecu, tf)
    refused(ecu, DecryptionFailed, lambda: ecu.client.put_image(tf.path, wire, len(wire)))


def test_5_4_3_4_a_delta_for_another_base_is_refused_before_writing(ecu: Ecu) -> None:
    other = image_bytes("someone else's v1", 9_000)
    base = TargetFile.from_data("fw/v0.bin", other, ("sha256",))
    full = TargetFile.from_data("fw/v2.bin", V2, ("sha256", "sha512"))
    patch = create_delta(other, V2)
    tf = delta_target(
        delta_path(full, base), patch, base, full, hardware_ids=[HW], release_counter=6
    )
    tf.ecu_ids = {ECU: HW}
    publish(ecu, tf)
    refused(ecu, DeltaBaseMismatch, lambda: ecu.client.put_image(tf.path, patch, len(patch)))


def test_5_4_3_4_a_patch_that_does_not_produce_the_full_image_is_refused(ecu: Ecu) -> None:
    tf, patch = delta_entry()
    assert tf.delta is not None
    lie = image_bytes("not v2", len(V2))
    claimed = TargetFile.from_data("fw/v2.bin", lie, ("sha256", "sha512"))
    tf.delta = DeltaImage(tf.delta.format, tf.delta.base, claimed.identity())
    publish(ecu, tf)
    ecu.client.put_image(tf.path, patch, len(patch))
    refused(ecu, BadHash, lambda: ecu.client.install(tf.path))


# --- resume ---------------------------------------------------------------------------------


def _cut_then_resume(ecu: Ecu, tf: TargetFile, wire: bytes, cut: int) -> None:
    """The first ``cut`` bytes arrive in small pieces, then the link breaks; the Primary
    comes back, asks STATUS and continues from the offset the ECU acknowledged."""
    for off in range(0, cut, 300):
        ecu.agent.put_image_chunk(tf.path, len(wire), off, wire[off : min(off + 300, cut)])
    held = ecu.agent.status().image_offset
    assert held == cut
    assert ecu.client.put_image(tf.path, wire, len(wire), resume=True) == held


def test_5_4_3_an_encrypted_transfer_resumes_after_a_link_cut(ecu: Ecu) -> None:
    tf = entry("fw/v2.bin", V2)
    ct = sealed(tf, V2, {ECU: my_key(ecu).public_key()})
    publish(ecu, tf)
    _cut_then_resume(ecu, tf, ct, 5000)
    installed_v2(ecu, tf.path)


def test_5_4_3_a_delta_resumes_after_a_link_cut(ecu: Ecu) -> None:
    tf, patch = delta_entry()
    ct = sealed(tf, patch, {ECU: my_key(ecu).public_key()})
    publish(ecu, tf)
    _cut_then_resume(ecu, tf, ct, len(ct) // 2 + 1)
    installed_v2(ecu, tf.path)


def test_5_4_3_an_encrypted_transfer_resumes_after_a_reboot_at_a_whole_chunk(
    tmp_path: Path,
) -> None:
    ecu = Ecu(tmp_path)
    big = image_bytes("big v2", 40_000)
    tf = entry("fw/v2.bin", big)
    ct = sealed(tf, big, {ECU: my_key(ecu).public_key()})
    publish(ecu, tf)
    ecu.agent.checkpoint_bytes = 4096
    with pytest.raises(UptaneError):
        ecu.client.put_image(tf.path, io.BytesIO(ct[:30_000]), len(ct))
    # power off and on: the agent resumes from its checkpoint, at a whole chunk
    again = SecondaryAgent.from_config(ecu_config(ecu))
    again.start()
    x = again.receiver.current
    assert x is not None and 0 < x.offset < 30_000
    start = x.offset
    assert (start - 16) % (CHUNK + 16) == 0  # the header, then whole chunks
    from test_agent_support import client_for

    client = client_for(again)
    client.put_time(int(later(1).timestamp()))
    assert client.put_image(tf.path, ct, len(ct), resume=True) == start
    client.install(tf.path)
    info = again.slots.status().installed
    assert info is not None and info.filename == "fw/v2.bin"
    assert again.flash.read(again.slots.status().active, 0, len(big)) == big


def test_an_ecu_without_a_key_refuses_an_encrypted_image_by_name(tmp_path: Path) -> None:
    ecu = Ecu(tmp_path)
    ecu.agent.receiver.encryption_key = None  # provisioned before encryption existed
    tf = entry("fw/v2.bin", V2)
    ct = sealed(tf, V2, {ECU: EncryptionPrivateKey.generate().public_key()})
    publish(ecu, tf)
    refused(ecu, WrongEncryptionKey, lambda: ecu.client.put_image(tf.path, ct, len(ct)))
