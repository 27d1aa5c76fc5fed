"""Keys inside a PKCS#11 token (issue 16), against a real SoftHSM2 token made for the
test: Ed25519 and ECDSA P-256 made in the token, signing in the token, private keys that
cannot be read out, RFC 7512 URIs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from keys_support import MODULE, PIN, PIN_ENV, fresh_token, key_source_spec, token_uri

from keystore import (
    BadUri,
    Pkcs11KeySource,
    Pkcs11Uri,
    Secret,
    TokenError,
    generate_in_token,
    open_signer,
    open_source,
)
from uptane.keys import ECDSA, ED25519
from uptane.limits import Limits
from uptane.metadata import DER, JSON, Metadata, Targets, decode
from uptane.signatures import check_threshold


def test_rfc7512_uris() -> None:
    uri = Pkcs11Uri.parse(
        "pkcs11:token=The%20Token;object=my-key;id=%01%02"
        "?module-path=/usr/lib/x.so&pin-source=file:/etc/pin"
    )
    assert uri.token == "The Token"
    assert uri.object == "my-key"
    assert uri.object_id == b"\x01\x02"
    assert uri.module_path == "/usr/lib/x.so"
    assert uri.text("pin-source") == "file:/etc/pin"
    assert str(Pkcs11Uri.parse(str(uri))) == str(uri)
    secret = Pkcs11Uri.parse("pkcs11:token=t?pin-value=1234")
    assert "1234" not in str(secret)
    for bad in ("pkcs11:tokn=x", "pkcs11:token=a;token=b", "file:x", "pkcs11:token"):
        with pytest.raises(BadUri):
            Pkcs11Uri.parse(bad)


@pytest.fixture
def source() -> Pkcs11KeySource:
    src = open_source(key_source_spec(fresh_token()), Path("/nonexistent"), "unused")
    assert isinstance(src, Pkcs11KeySource)
    return src


@pytest.mark.parametrize("scheme", [ED25519, ECDSA])
def test_keys_made_in_the_token_sign_metadata_every_encoding(
    source: Pkcs11KeySource, scheme: str
) -> None:
    signer = source.generate("timestamp", scheme)
    assert signer.key.scheme == scheme
    now = datetime.now(UTC).replace(microsecond=0)
    for enc in (JSON, DER):
        md = Metadata(Targets(version=3, expires=now + timedelta(days=1)), encoding=enc)
        md.sign(signer)
        back = decode(md.to_bytes(), Limits.primary(), encoding=enc, role_type="targets")
        assert back.signed_bytes is not None
        check_threshold(
            back.signed_bytes,
            back.signatures,
            {signer.key.keyid: signer.key},
            [signer.key.keyid],
            1,
            Limits.primary(),
        )


def test_ecdsa_signature_is_der_over_sha256(source: Pkcs11KeySource) -> None:
    """The token signs a digest made on the host; the signature is DER (r, s), as
    ``cryptography`` and securesystemslib write them."""
    signer = source.generate("snapshot", ECDSA)
    sig = signer.sign(b"payload")
    assert sig[0] == 0x30
    pub = signer.key.load()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(sig, b"payload", ec.ECDSA(hashes.SHA256()))


def test_private_keys_never_leave_the_token(source: Pkcs11KeySource) -> None:
    import pkcs11
    from pkcs11 import Attribute

    signer = source.generate("targets", ED25519)
    priv = signer._private
    assert priv[Attribute.SENSITIVE] is True
    assert priv[Attribute.EXTRACTABLE] is False
    assert priv[Attribute.NEVER_EXTRACTABLE] is True
    with pytest.raises(pkcs11.exceptions.AttributeSensitive):
        priv[Attribute.VALUE]


def test_keys_are_found_by_role_label_and_retired_by_relabelling(
    source: Pkcs11KeySource,
) -> None:
    a = source.generate("timestamp", ED25519)
    b = source.generate("timestamp", ECDSA)
    source.generate("snapshot", ED25519)
    assert [s.label for s in source.signers("timestamp")] == ["timestamp", "timestamp.1"]
    # a second source on the same token (another process, a restart) sees the same keys
    again = Pkcs11KeySource(str(source.uri), pin=Secret("pin", PIN_ENV))
    assert {s.key.keyid for s in again.signers("timestamp")} == {a.key.keyid, b.key.keyid}
    assert source.retire("timestamp", [b.key.keyid]) == [a.key.keyid]
    assert [s.key.keyid for s in source.signers("timestamp")] == [b.key.keyid]
    again.forget()
    assert [s.key.keyid for s in again.signers("timestamp")] == [b.key.keyid]
    assert "PKCS#11 token" in source.describe() and PIN not in source.describe()


def test_one_key_by_uri_for_a_signer_on_the_command_line() -> None:
    label = fresh_token()
    key = generate_in_token(token_uri(label, "alice"), ECDSA, pin_env=PIN_ENV)
    signer = open_signer(token_uri(label, "alice"), pin_env=PIN_ENV)
    assert signer.key == key
    assert key.verify(signer.sign(b"x"), b"x")
    with pytest.raises(ValueError, match="already holds"):
        generate_in_token(token_uri(label, "alice"), pin_env=PIN_ENV)
    with pytest.raises(ValueError, match="object=LABEL"):
        open_signer(token_uri(label), pin_env=PIN_ENV)


def test_wrong_pin_and_missing_token_say_what_to_check(monkeypatch: pytest.MonkeyPatch) -> None:
    label = fresh_token()
    monkeypatch.setenv("KEYS_TEST_WRONG_PIN", "000000")
    src = Pkcs11KeySource(token_uri(label), pin=Secret("pin", "KEYS_TEST_WRONG_PIN"))
    with pytest.raises(TokenError, match="wrong PIN"):
        src.signers("timestamp")
    gone = Pkcs11KeySource(token_uri("no-such-token"), pin=Secret("pin", PIN_ENV))
    with pytest.raises(TokenError, match="softhsm2-util --show-slots"):
        gone.signers("timestamp")
    nomod = Pkcs11KeySource("pkcs11:token=x?module-path=/nonexistent.so")
    with pytest.raises(TokenError, match="no PKCS#11 module"):
        nomod.signers("timestamp")
    assert MODULE.endswith(".so")
