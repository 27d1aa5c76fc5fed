"""Keys, key ids and canonical JSON, checked against python-tuf/securesystemslib."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.hazmat.primitives.serialization import PublicFormat as _PF
from securesystemslib.formats import encode_canonical

from uptane.encoding.json import canonical, loads
from uptane.errors import EndlessDataAttack, LimitExceeded, MalformedInput
from uptane.keys import ECDSA, ED25519, MAX_KEY_FILE, RSA_PSS, Key, PrivateKey
from uptane.limits import PRIMARY

SPKI = _PF.SubjectPublicKeyInfo

DOCS = [
    {"b": 1, "a": [True, False, None, 'x"y\\z', "é"], "c": {"z": -3, "y": ""}},
    {"signed": {"_type": "root", "keys": {}}, "signatures": []},
]


@pytest.mark.parametrize("doc", DOCS)
def test_canonical_json_is_byte_identical_to_securesystemslib(doc):
    assert canonical(doc) == encode_canonical(doc).encode("utf-8")


@pytest.mark.parametrize("bad", [b"1.5", b"NaN", b'{"a":1,"a":2}', b"\xff", b"[", b"{}x"])
def test_bounded_json_refuses_malformed(bad):
    with pytest.raises(MalformedInput):
        loads(bad, PRIMARY)


def test_bounded_json_refuses_deep_nesting_and_endless_data():
    with pytest.raises(LimitExceeded):
        loads(b"[" * 100_000 + b"]" * 100_000, PRIMARY, cap=10**6)
    with pytest.raises(LimitExceeded):
        loads(b"[" * 40 + b"]" * 40, PRIMARY)
    with pytest.raises(EndlessDataAttack):
        loads(b" " * 101, PRIMARY, cap=100)


@pytest.mark.parametrize("scheme", [ED25519, ECDSA, RSA_PSS])
def test_sign_verify_and_keyid(scheme):
    k = PrivateKey.generate(scheme)
    sig = k.sign(b"payload")
    assert k.key.verify(sig, b"payload")
    assert not k.key.verify(sig, b"other")
    assert not k.key.verify(b"\x00" * len(sig), b"payload")
    again = Key.from_dict(k.key.to_dict(), PRIMARY)
    assert again.keyid == k.keyid
    # python-tuf computes the same key id for the same key
    from securesystemslib.signer import SSlibKey

    ss = SSlibKey.from_dict(k.keyid, k.key.to_dict())
    ss.verify_signature(
        __import__("securesystemslib.signer", fromlist=["Signature"]).Signature(k.keyid, sig.hex()),
        b"payload",
    )


def test_keytype_ecdsa_alias_accepted():
    k = PrivateKey.generate(ECDSA)
    d = k.key.to_dict()
    d["keytype"] = "ecdsa-sha2-nistp256"
    assert Key.from_dict(d, PRIMARY).verify(k.sign(b"m"), b"m")


def test_parsed_keys_are_cached_by_value_and_bad_ones_refused_every_time():
    k = PrivateKey.generate(ED25519)
    again = Key.from_dict(k.key.to_dict(), PRIMARY)
    assert again.load() is k.key.load()  # one parse for every check with this key
    sig = k.sign(b"payload")
    assert again.verify(sig, b"payload") and not again.verify(sig, b"other")
    bad = Key("ed25519", ED25519, "00" * 31)
    for _ in range(2):
        with pytest.raises(MalformedInput):
            bad.load()
    ecdsa_as_rsa = Key("rsa", RSA_PSS, PrivateKey.generate(ECDSA).key.public)
    for _ in range(2):
        with pytest.raises(MalformedInput):
            ecdsa_as_rsa.load()


@pytest.mark.parametrize("scheme", [ED25519, ECDSA, RSA_PSS])
def test_key_file_bytes_read_as_tuf_json_or_pem(scheme):
    key = PrivateKey.generate(scheme).key
    assert Key.from_bytes(canonical(key.to_dict()), PRIMARY) == key
    assert Key.from_bytes(key.load().public_bytes(Encoding.PEM, SPKI), PRIMARY) == key


def test_hostile_key_file_bytes_are_refused_with_named_errors():
    with pytest.raises(LimitExceeded):  # never a RecursionError
        Key.from_bytes(b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}", PRIMARY)
    with pytest.raises(EndlessDataAttack):
        Key.from_bytes(b"{" + b" " * (MAX_KEY_FILE + 1) + b"}", PRIMARY)
    with pytest.raises(MalformedInput):
        Key.from_bytes(b"-----BEGIN PUBLIC KEY-----\nnot a key\n", PRIMARY)
    with pytest.raises(MalformedInput):
        Key.from_bytes(b'{"keytype": "ed25519"}', PRIMARY)
