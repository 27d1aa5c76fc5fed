"""Per-ECU image encryption (uptane/encryption.py; §4.3 eavesdrop, §5.2.3.1.1, §5.4.1,
§5.4.3.4): round trips, every refusal by name, the metadata it rides in, hostile input to
the decoders, and memory that does not grow with the image."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import tempfile
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uptane.encryption import (
    HEADER_BYTES,
    KEY_SCHEME,
    MAX_CHUNK_SIZE,
    METHOD,
    TAG_BYTES,
    Decryptor,
    EncryptionPrivateKey,
    EncryptionPublicKey,
    Encryptor,
    Header,
    ciphertext_length,
    decrypt_image,
    decryptor_for,
    encrypt_image,
    unwrap_key,
    wrap_key,
)
from uptane.errors import (
    BadCiphertextHeader,
    DecryptionFailed,
    EndlessDataAttack,
    KeyUnwrapFailed,
    MalformedInput,
    NonCanonicalEncoding,
    TruncatedCiphertext,
    UnsupportedAlgorithm,
    UptaneError,
    WrongEncryptionKey,
)
from uptane.keys import PrivateKey
from uptane.limits import CONSTRAINED, PRIMARY
from uptane.metadata import (
    COMPACT_DER,
    DER,
    JSON,
    Metadata,
    TargetFile,
    Targets,
    WrappedKey,
    decode,
)

CHUNK = 1024
MARKER = b"SECRET-FIRMWARE-MARKER"


def _image(size: int, seed: int = 1) -> bytes:
    data = bytearray(random.Random(seed).randbytes(size))
    if size > len(MARKER) * 2:
        data[size // 2 : size // 2 + len(MARKER)] = MARKER
    return bytes(data)


def _setup(
    size: int = 5 * CHUNK + 17, ecus: tuple[str, ...] = ("ecu-1", "ecu-2"), chunk: int = CHUNK
) -> tuple[bytes, TargetFile, dict[str, EncryptionPrivateKey], bytes]:
    """An image for ``ecus``, encrypted once: (plaintext, the Director entry, each ECU's
    encryption key, the ciphertext)."""
    data = _image(size)
    keys = {e: EncryptionPrivateKey.generate() for e in ecus}
    target = TargetFile.from_data(
        "brake/fw-2.bin", data, ("sha256", "sha512"), ecu_ids={e: "hw" for e in ecus}
    )
    ciphertext, enc = encrypt_image(
        target, data, {e: k.public_key() for e, k in keys.items()}, chunk_size=chunk
    )
    target.encrypted = enc
    return data, target, keys, ciphertext


def _chunks(ciphertext: bytes, chunk: int = CHUNK) -> tuple[bytes, list[bytes]]:
    body = ciphertext[HEADER_BYTES:]
    step = chunk + TAG_BYTES
    return ciphertext[:HEADER_BYTES], [body[i : i + step] for i in range(0, len(body), step)]


def _decrypt(
    target: TargetFile, ecu: str, key: EncryptionPrivateKey, ciphertext: bytes
) -> tuple[bytearray, Callable[[], None]]:
    """Feed all of ``ciphertext``; returns what reached the sink and ``finish``."""
    out = bytearray()
    dec = decryptor_for(target, ecu, key, PRIMARY)
    dec.feed(ciphertext, out.extend)
    return out, dec.finish


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5, 100_000]
)
def test_5_4_3_4_every_ecu_of_the_entry_decrypts_the_one_ciphertext(size: int) -> None:
    data, target, keys, ciphertext = _setup(size)
    assert len(ciphertext) == ciphertext_length(size, CHUNK) == target.encrypted.length  # type: ignore[union-attr]
    for ecu, key in keys.items():
        assert decrypt_image(target, ecu, key, ciphertext, CONSTRAINED) == data


def test_4_3_eavesdrop_the_ciphertext_and_the_entry_hold_no_plaintext() -> None:
    data, target, _, ciphertext = _setup(64 * CHUNK)
    assert MARKER in data
    assert MARKER not in ciphertext
    entry = Metadata(Targets(expires=datetime.now(UTC) + timedelta(days=1)), encoding=DER)
    entry.signed.targets[target.path] = target
    entry.sign(PrivateKey.generate())
    assert MARKER not in entry.to_bytes()
    # what the Primary checks: the ciphertext's own length and hashes
    enc = target.encrypted
    assert enc is not None and enc.method == METHOD
    assert enc.hashes["sha256"] == hashlib.sha256(ciphertext).hexdigest()


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 6 * 512 + 3),
    chunk=st.sampled_from([256, 512, 4096]),
    cuts=st.lists(st.integers(1, 2000), max_size=40),
)
def test_5_4_3_4_pieces_of_any_size_give_the_same_plaintext(
    size: int, chunk: int, cuts: list[int]
) -> None:
    data = random.Random(size).randbytes(size)
    enc = Encryptor(size, chunk_size=chunk)
    ciphertext = b""
    pos = 0
    for n in cuts:  # the Director side fed in pieces too
        ciphertext += enc.update(data[pos : pos + n])
        pos = min(size, pos + n)
    ciphertext += enc.update(data[pos:]) + enc.finish()
    out = bytearray()
    dec = Decryptor(enc.content_key, size, CONSTRAINED, ciphertext_length=len(ciphertext))
    pos = 0
    for n in [*cuts, len(ciphertext)]:
        dec.feed(ciphertext[pos : pos + n], out.extend)
        pos = min(len(ciphertext), pos + n)
    dec.finish()
    assert bytes(out) == data


def test_5_4_3_resume_after_a_cut_from_the_last_whole_chunk() -> None:
    data, target, keys, ciphertext = _setup(10 * CHUNK + 3)
    key = keys["ecu-1"]
    out = bytearray()
    dec = decryptor_for(target, "ecu-1", key, CONSTRAINED)
    dec.feed(ciphertext[: HEADER_BYTES + 3 * (CHUNK + TAG_BYTES) + 100], out.extend)  # link cut
    point = dec.checkpoint()
    assert point is not None and point.chunks == 3 and point.plaintext_offset == 3 * CHUNK
    kept = bytes(out[: point.plaintext_offset])  # what the slot holds
    again = bytearray(kept)
    dec2 = decryptor_for(target, "ecu-1", key, CONSTRAINED, resume=point)
    dec2.feed(ciphertext[point.ciphertext_offset :], again.extend)
    dec2.finish()
    assert bytes(again) == data


# --- refusals: keys -----------------------------------------------------------------------


def test_5_4_1_wrong_key_is_a_key_mismatch_not_an_attack() -> None:
    _, target, _, ciphertext = _setup()
    with pytest.raises(WrongEncryptionKey) as e:
        _decrypt(target, "ecu-1", EncryptionPrivateKey.generate(), ciphertext)
    assert e.value.attack == "encryption-key-mismatch"
    assert "register" in str(e.value)


def test_5_4_1_no_key_wrapped_for_this_ecu_is_a_key_mismatch() -> None:
    _, target, keys, ciphertext = _setup()
    with pytest.raises(WrongEncryptionKey):
        _decrypt(target, "ecu-3", keys["ecu-1"], ciphertext)


def test_4_3_wrapped_key_swapped_to_another_ecu_does_not_open() -> None:
    _, target, keys, ciphertext = _setup()
    enc = target.encrypted
    assert enc is not None
    # ecu-1's wrapped key put in ecu-2's place, named with ecu-2's key id
    theirs = enc.wrapped_keys["ecu-1"]
    enc.wrapped_keys["ecu-2"] = WrappedKey(keys["ecu-2"].public_key().keyid, theirs.value)
    out = bytearray()
    with pytest.raises(KeyUnwrapFailed) as e:
        decryptor_for(target, "ecu-2", keys["ecu-2"], PRIMARY).feed(ciphertext, out.extend)
    assert e.value.attack == "arbitrary-software"
    assert not out


def test_4_3_wrapped_key_of_another_image_does_not_open() -> None:
    _, target, keys, _ = _setup()
    other_data, other, _, other_ct = _setup(3000)
    key = keys["ecu-1"]
    # the same ECU, another image's key wrapped to it
    other.encrypted.wrapped_keys["ecu-1"] = wrap_key(  # type: ignore[union-attr]
        os.urandom(32), key.public_key(), "ecu-1", target
    )
    with pytest.raises(KeyUnwrapFailed):
        decrypt_image(other, "ecu-1", key, other_ct, PRIMARY)
    # and this image's wrapped key moved into the other image's entry
    other.encrypted.wrapped_keys["ecu-1"] = target.encrypted.wrapped_keys["ecu-1"]  # type: ignore[union-attr]
    with pytest.raises(KeyUnwrapFailed):
        decrypt_image(other, "ecu-1", key, other_ct, PRIMARY)
    assert other_data  # never decrypted


@pytest.mark.parametrize("how", ["flip", "short", "long"])
def test_4_3_altered_wrapped_key_does_not_open(how: str) -> None:
    _, target, keys, _ = _setup()
    wk = target.encrypted.wrapped_keys["ecu-1"]  # type: ignore[union-attr]
    value = bytearray(wk.value)
    if how == "flip":
        value[40] ^= 1
    elif how == "short":
        del value[-1]
    else:
        value += b"\0"
    target.encrypted.wrapped_keys["ecu-1"] = WrappedKey(wk.keyid, bytes(value))  # type: ignore[union-attr]
    with pytest.raises(KeyUnwrapFailed):
        unwrap_key(target.encrypted, "ecu-1", target, keys["ecu-1"])  # type: ignore[arg-type]


def test_5_4_3_4_an_unknown_method_is_unsupported() -> None:
    _, target, keys, _ = _setup()
    target.encrypted.method = "aes-128-cbc"  # type: ignore[union-attr]
    with pytest.raises(UnsupportedAlgorithm):
        unwrap_key(target.encrypted, "ecu-1", target, keys["ecu-1"])  # type: ignore[arg-type]


def test_4_3_ciphertext_made_for_another_ecu_fails_on_its_first_chunk() -> None:
    data, target, keys, _ = _setup(ecus=("ecu-1",))
    # the same image encrypted separately for another ECU (another content key)
    _, theirs = encrypt_image(
        target, data, {"ecu-2": EncryptionPrivateKey.generate().public_key()}, chunk_size=CHUNK
    )
    enc2 = Encryptor(len(data), chunk_size=CHUNK)
    their_ct = enc2.update(data) + enc2.finish()
    assert theirs.length == len(their_ct)
    out, _ = bytearray(), None
    with pytest.raises(DecryptionFailed) as e:
        out, _ = _decrypt(target, "ecu-1", keys["ecu-1"], their_ct)
    assert "chunk 0 " in str(e.value) and not out


# --- refusals: the chunk stream ---------------------------------------------------------------


def _tamper_refused(target: TargetFile, key: EncryptionPrivateKey, ciphertext: bytes) -> int:
    """Feed a tampered stream; it must raise a named error. Returns how many plaintext
    bytes reached the sink before (only whole authenticated chunks)."""
    out = bytearray()
    dec = decryptor_for(target, "ecu-1", key, PRIMARY)
    with pytest.raises((DecryptionFailed, EndlessDataAttack, BadCiphertextHeader)):
        dec.feed(ciphertext, out.extend)
        dec.finish()
    assert len(out) % CHUNK == 0
    return len(out)


def test_4_3_altered_byte_in_a_chunk_is_refused_before_its_plaintext_is_released() -> None:
    _, target, keys, ciphertext = _setup()
    bad = bytearray(ciphertext)
    bad[HEADER_BYTES + 2 * (CHUNK + TAG_BYTES) + 5] ^= 0x40
    got = _tamper_refused(target, keys["ecu-1"], bytes(bad))
    assert got == 2 * CHUNK  # chunks 0 and 1 only


def test_4_3_cut_chunk_is_refused() -> None:
    _, target, keys, ciphertext = _setup()
    head, chunks = _chunks(ciphertext)
    chunks[1] = chunks[1][:100] + chunks[1][110:]  # ten bytes cut out of chunk 1
    with pytest.raises(DecryptionFailed):
        _, finish = _decrypt(target, "ecu-1", keys["ecu-1"], head + b"".join(chunks))
        finish()


def test_4_3_reordered_chunks_are_refused() -> None:
    _, target, keys, ciphertext = _setup()
    head, chunks = _chunks(ciphertext)
    chunks[1], chunks[2] = chunks[2], chunks[1]
    assert _tamper_refused(target, keys["ecu-1"], head + b"".join(chunks)) == CHUNK


def test_4_3_duplicated_chunk_is_refused() -> None:
    _, target, keys, ciphertext = _setup()
    head, chunks = _chunks(ciphertext)
    in_place = [*chunks[:2], chunks[1], *chunks[3:]]  # chunk 1 again instead of chunk 2
    assert _tamper_refused(target, keys["ecu-1"], head + b"".join(in_place)) == 2 * CHUNK
    appended = head + b"".join(chunks) + chunks[-1]
    with pytest.raises(EndlessDataAttack):
        _decrypt(target, "ecu-1", keys["ecu-1"], appended)


def test_4_3_truncated_stream_is_refused_at_finish() -> None:
    _, target, keys, ciphertext = _setup()
    head, chunks = _chunks(ciphertext)
    out, finish = _decrypt(target, "ecu-1", keys["ecu-1"], head + b"".join(chunks[:-1]))
    with pytest.raises(TruncatedCiphertext) as e:
        finish()
    assert e.value.attack == "arbitrary-software"
    assert len(out) == (len(chunks) - 1) * CHUNK


def test_4_3_a_stream_cut_on_a_chunk_boundary_is_not_a_shorter_image() -> None:
    """The last-chunk flag: a full stream's first chunk is not a valid one-chunk stream,
    even to a decryptor told the shorter length."""
    enc = Encryptor(3 * CHUNK, chunk_size=CHUNK)
    ciphertext = enc.update(_image(3 * CHUNK)) + enc.finish()
    dec = Decryptor(enc.content_key, CHUNK, PRIMARY)
    with pytest.raises(DecryptionFailed):
        dec.feed(ciphertext[: HEADER_BYTES + CHUNK + TAG_BYTES], lambda _: None)


@pytest.mark.parametrize(
    "offset,error",
    [
        (0, BadCiphertextHeader),  # magic
        (4, BadCiphertextHeader),  # version
        (7, BadCiphertextHeader),  # chunk size 1280: no longer fits the signed length
        (8, DecryptionFailed),  # chunk size 1025: same length, but the header is the AAD
        (12, DecryptionFailed),  # nonce prefix: every chunk's nonce and AAD change
    ],
)
def test_4_3_altered_header_is_refused(offset: int, error: type[UptaneError]) -> None:
    _, target, keys, ciphertext = _setup()
    bad = bytearray(ciphertext)
    bad[offset] ^= 0x01
    with pytest.raises(error):
        _decrypt(target, "ecu-1", keys["ecu-1"], bytes(bad))


def test_header_chunk_size_is_bounded() -> None:
    for size in (0, 255, MAX_CHUNK_SIZE + 1, 2**32 - 1):
        with pytest.raises(BadCiphertextHeader):
            Header.parse(Header(size, b"\0" * 7).to_bytes())
    with pytest.raises(BadCiphertextHeader):
        Header.parse(Header(8192, b"\0" * 7).to_bytes(), max_chunk_size=4096)


def test_4_3_endless_data_image_over_the_cap_is_refused_before_anything() -> None:
    with pytest.raises(EndlessDataAttack):
        Decryptor(b"\0" * 32, CONSTRAINED.image_bytes + 1, CONSTRAINED)


# --- keys: inventory forms ------------------------------------------------------------------


def test_5_4_1_encryption_key_is_not_a_signing_key_and_round_trips() -> None:
    key = EncryptionPrivateKey.generate()
    pub = key.public_key()
    d = pub.to_dict()
    assert d["keytype"] == "x25519" and d["scheme"] == KEY_SCHEME
    assert EncryptionPublicKey.from_dict(d, CONSTRAINED) == pub
    der = pub.to_der()
    assert len(der) == 44 and EncryptionPublicKey.from_der(der) == pub
    assert len(pub.keyid) == 64
    again = EncryptionPrivateKey.from_pem(key.to_pem(b"pw"), b"pw")
    assert again.public_key() == pub
    # the Standard's "separate from the signing key": a signing key is refused
    signing = PrivateKey.generate()
    with pytest.raises(UptaneError):
        EncryptionPublicKey.from_dict(signing.key.to_dict(), CONSTRAINED)


def test_encryption_public_key_refusals() -> None:
    pub = EncryptionPrivateKey.generate().public_key()
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    ed_der = ed.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(UnsupportedAlgorithm):
        EncryptionPublicKey.from_der(ed_der)
    with pytest.raises(MalformedInput):
        EncryptionPublicKey.from_der(pub.to_der()[:-1])
    with pytest.raises(MalformedInput):
        EncryptionPublicKey.from_der(b"\x30" * 300)
    d = pub.to_dict()
    for bad in (
        {**d, "scheme": "other"},
        {**d, "extra": 1},
        {**d, "keyval": {"public": d["keyval"]["public"].upper()}},
        {**d, "keyval": {"public": "00" * 31}},
        {**d, "keyval": {"public": 5}},
        [],
    ):
        with pytest.raises(UptaneError):
            EncryptionPublicKey.from_dict(bad, CONSTRAINED)
    x = x25519.X25519PrivateKey.generate()
    assert EncryptionPrivateKey(x).public_key().raw == x.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


# --- the metadata the entry rides in ---------------------------------------------------------


@pytest.mark.parametrize("encoding", [JSON, DER, COMPACT_DER])
def test_5_2_3_1_1_encrypted_entry_round_trips_in_json_and_der(encoding: str) -> None:
    data, target, keys, ciphertext = _setup()
    targets = Targets(expires=datetime.now(UTC) + timedelta(days=1))
    targets.targets[target.path] = target
    md = Metadata(targets, encoding=encoding)
    md.sign(PrivateKey.generate())
    back = decode(md.to_bytes(), CONSTRAINED, encoding=encoding).signed.targets[target.path]
    assert back == target
    assert decrypt_image(back, "ecu-2", keys["ecu-2"], ciphertext, CONSTRAINED) == data


def test_der_wrapped_keys_out_of_order_or_twice_are_refused() -> None:
    from uptane.encoding import der

    _, target, _, _ = _setup()
    targets = Targets(expires=datetime.now(UTC) + timedelta(days=1))
    targets.targets[target.path] = target
    md = Metadata(targets, encoding=COMPACT_DER)  # compact-der sorts them by ECU id
    md.sign(PrivateKey.generate())
    good = md.to_bytes()
    ids = sorted(target.encrypted.wrapped_keys)  # type: ignore[union-attr]
    a, b = (e.encode() for e in ids)
    assert good.index(a) < good.index(b)
    # swap the two ECU ids (same length): the list is no longer sorted
    swapped = good.replace(a, b"\0" * len(a)).replace(b, a).replace(b"\0" * len(a), b)
    with pytest.raises(NonCanonicalEncoding):
        der.decode_metadata(swapped, PRIMARY)
    twice = good.replace(b, a)
    with pytest.raises(MalformedInput):
        der.decode_metadata(twice, PRIMARY)


# --- hostile input to the decoders -------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=HEADER_BYTES + 3 * (256 + TAG_BYTES)))
def test_decryptor_on_random_bytes_raises_only_named_errors(data: bytes) -> None:
    dec = Decryptor(b"\1" * 32, 700, CONSTRAINED)
    try:
        dec.feed(data, lambda _: None)
        dec.finish()
    except UptaneError:
        return
    pytest.fail("random bytes decrypted")  # pragma: no cover


@FUZZ
@given(st.data())
def test_decryptor_on_mutated_streams_releases_only_authentic_chunks(data: st.DataObject) -> None:
    size = 3 * 256 + 10
    plain = random.Random(7).randbytes(size)
    enc = Encryptor(size, chunk_size=256, content_key=b"\2" * 32)
    ct = bytearray(enc.update(plain) + enc.finish())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, max(len(ct) - 1, 0)))
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if op == "flip" and ct:
            ct[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del ct[i:]
        elif op == "insert":
            ct[i:i] = data.draw(st.binary(min_size=1, max_size=20))
        elif op == "delete":
            del ct[i : i + data.draw(st.integers(1, 20))]
    out = bytearray()
    dec = Decryptor(b"\2" * 32, size, CONSTRAINED)
    try:
        dec.feed(bytes(ct), out.extend)
        dec.finish()
    except UptaneError:
        assert plain.startswith(bytes(out))  # whatever was released is authentic
        return
    assert bytes(out) == plain


@FUZZ
@given(st.binary(max_size=300))
def test_public_key_decoders_raise_only_named_errors(data: bytes) -> None:
    with contextlib.suppress(UptaneError):
        EncryptionPublicKey.from_der(data)
    with contextlib.suppress(UptaneError):
        EncryptionPublicKey.from_dict(
            {"keytype": "x25519", "scheme": KEY_SCHEME, "keyval": {"public": data.hex()}},
            CONSTRAINED,
        )


# --- memory does not grow with the image ---------------------------------------------------------


def _peak_decrypting(size: int, work: Path) -> int:
    """Peak traced bytes decrypting a ``size``-byte image read from a file in link-sized
    pieces; the plaintext goes into a hash (as into a slot and an ImageVerifier)."""
    enc = Encryptor(size, chunk_size=16 * 1024)
    path = work / f"ct-{size}"
    block = random.Random(size).randbytes(1 << 20)
    with path.open("wb") as f:
        for off in range(0, size, len(block)):
            f.write(enc.update(block[: min(len(block), size - off)]))
        f.write(enc.finish())
    del block
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        tracemalloc.start()
        try:
            base, _ = tracemalloc.get_traced_memory()
            dec = Decryptor(enc.content_key, size, CONSTRAINED)
            while piece := f.read(7168):
                dec.feed(piece, digest.update)
            dec.finish()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return peak - base


def test_decryption_memory_is_flat_1_mib_vs_16_mib() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        small = _peak_decrypting(1 << 20, Path(tmp))
        big = _peak_decrypting(16 << 20, Path(tmp))
    assert big <= small * 1.05 + 1024, (small, big)
    assert big < 64 * 1024  # one 16 KiB chunk in, one out, one link piece
