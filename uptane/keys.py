"""Public keys, key ids, signers and verifiers, all through ``cryptography``.

Formats follow the TUF specification, so python-tuf reads our keys and we read theirs:
ed25519 public keys as hex, ecdsa and rsa as PEM SubjectPublicKeyInfo. The key id is the
SHA-256 of the key's canonical JSON (keytype, scheme, keyval).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from uptane.encoding.json import canonical, loads
from uptane.errors import EndlessDataAttack, MalformedInput, UnsupportedAlgorithm
from uptane.limits import Limits
from uptane.policy import check_hex

ED25519 = "ed25519"
ECDSA = "ecdsa-sha2-nistp256"
RSA_PSS = "rsassa-pss-sha256"
SCHEMES = (ED25519, ECDSA, RSA_PSS)

#: keytype names accepted on input for each scheme; the first is what we write
_KEYTYPES = {ED25519: ("ed25519",), ECDSA: ("ecdsa", "ecdsa-sha2-nistp256"), RSA_PSS: ("rsa",)}

#: the most bytes a public key file may hold (an RSA-4096 PEM is under 1 KiB)
MAX_KEY_FILE = 64 * 1024

PublicKeyObject = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKeyObject = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
#: what a signature is checked over: bytes, or a view into larger bytes (a Secondary checks
#: the signed part of DER targets in place, uptane/encoding/der_targets.py); cryptography's
#: verify takes any buffer
SignedData = bytes | memoryview


@functools.lru_cache(maxsize=256)
def _load_public(scheme: str, public: str) -> PublicKeyObject:
    """Parse a public key value for ``scheme`` (hex or PEM); MalformedInput if it is bad.

    Cached by value: every signature check of a role loads the same few keys again, and
    the parsed objects are immutable. Only keys that parsed are cached (an exception is
    never remembered); the cache holds at most 256 of them."""
    try:
        if scheme == ED25519:
            raw = check_hex(public, "ed25519 public key")  # exact hex (uptane/policy.py)
            if len(raw) != 32:
                raise ValueError("ed25519 public key must be 32 bytes")
            return ed25519.Ed25519PublicKey.from_public_bytes(raw)
        obj = serialization.load_pem_public_key(public.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError) as e:
        raise MalformedInput(f"bad {scheme} public key: {e}") from None
    if scheme == ECDSA and not (
        isinstance(obj, ec.EllipticCurvePublicKey) and isinstance(obj.curve, ec.SECP256R1)
    ):
        raise MalformedInput("ecdsa-sha2-nistp256 key is not a P-256 key")
    if scheme == RSA_PSS and not isinstance(obj, rsa.RSAPublicKey):
        raise MalformedInput("rsassa-pss-sha256 key is not an RSA key")
    return obj  # type: ignore[return-value]


@dataclass(frozen=True)
class Key:
    """A public key as TUF writes it: keytype, scheme and the public value."""

    keytype: str
    scheme: str
    public: str
    unrecognized: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    # --- (de)serialisation -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The TUF JSON form of this key (extra ``keyval`` entries kept, ``public`` wins)."""
        d = {k: v for k, v in self.unrecognized.items() if k != "keyval"}
        extra = self.unrecognized.get("keyval")
        keyval = dict(extra) if isinstance(extra, dict) else {}
        keyval["public"] = self.public
        return {"keytype": self.keytype, "scheme": self.scheme, "keyval": keyval, **d}

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> Key:
        """Parse the TUF JSON form, refusing unknown schemes and malformed values."""
        if not isinstance(d, dict):
            raise MalformedInput("key must be an object")
        d = dict(d)
        try:
            keytype = d.pop("keytype")
            scheme = d.pop("scheme")
            keyval = d.pop("keyval")
            public = keyval["public"]
        except (KeyError, TypeError):
            raise MalformedInput("key needs keytype, scheme and keyval.public") from None
        if not all(isinstance(x, str) for x in (keytype, scheme, public)):
            raise MalformedInput("key fields must be strings")
        limits.check_string("public key", public)
        extra_keyval = {k: v for k, v in keyval.items() if k != "public"}
        if extra_keyval:
            d["keyval"] = extra_keyval  # kept only for round trips; not part of the key
        key = cls(keytype, scheme, public, d)
        key._check_type()
        return key

    def _check_type(self) -> None:
        if self.scheme not in _KEYTYPES:
            raise UnsupportedAlgorithm(f"signature scheme {self.scheme!r} is not supported")
        if self.keytype not in _KEYTYPES[self.scheme]:
            raise UnsupportedAlgorithm(
                f"keytype {self.keytype!r} does not fit scheme {self.scheme!r}"
            )

    def _id_dict(self) -> dict[str, Any]:
        return {"keytype": self.keytype, "scheme": self.scheme, "keyval": {"public": self.public}}

    @functools.cached_property
    def keyid(self) -> str:
        """SHA-256 (hex) of the canonical JSON of keytype, scheme and keyval (computed once
        per key: the fields are frozen)."""
        return hashlib.sha256(canonical(self._id_dict())).hexdigest()

    @property
    def identity(self) -> bytes:
        """The raw public key bytes, the same however the key is written (for uniqueness)."""
        obj = self.load()
        if isinstance(obj, ed25519.Ed25519PublicKey):
            return obj.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return obj.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    # --- cryptography ---------------------------------------------------------------------

    def load(self) -> PublicKeyObject:
        """The ``cryptography`` public key object; MalformedInput if the value is bad."""
        self._check_type()
        return _load_public(self.scheme, self.public)

    def verify(self, signature: bytes, data: SignedData) -> bool:
        """True if ``signature`` over ``data`` verifies with this key; never raises for a
        bad signature (a malformed key raises MalformedInput)."""
        obj = self.load()
        try:
            if isinstance(obj, ed25519.Ed25519PublicKey):
                obj.verify(signature, data)
            elif isinstance(obj, ec.EllipticCurvePublicKey):
                obj.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            else:
                # RSA's verify is declared for bytes only (ed25519 and ecdsa take any
                # buffer); a copy costs little beside an RSA verify
                obj.verify(
                    signature,
                    bytes(data),
                    padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
                    hashes.SHA256(),
                )
        except (InvalidSignature, ValueError):
            return False
        return True

    @classmethod
    def from_bytes(cls, data: bytes, limits: Limits) -> Key:
        """A public key file's bytes: TUF JSON (keytype/scheme/keyval), decoded with the
        bounded decoder, the provisioning record ``uptane-secondary provision`` writes
        (``ecu_key.pub.json``: the key under ``public_key``), or a PEM
        SubjectPublicKeyInfo. MalformedInput for anything else,
        EndlessDataAttack past :data:`MAX_KEY_FILE` bytes."""
        if len(data) > MAX_KEY_FILE:
            raise EndlessDataAttack(f"a key file of more than {MAX_KEY_FILE} bytes")
        if data.lstrip().startswith(b"{"):
            doc = loads(data, limits, cap=MAX_KEY_FILE, what="key file")
            if isinstance(doc, dict) and "keytype" not in doc and "public_key" in doc:
                return cls._from_record(doc, limits)
            return cls.from_dict(doc, limits)
        try:
            obj = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as e:
            raise MalformedInput(f"bad public key: {e}") from None
        if not isinstance(
            obj, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey)
        ):
            raise UnsupportedAlgorithm(f"unsupported public key {type(obj).__name__}")
        return cls.from_public_object(obj)

    @classmethod
    def _from_record(cls, doc: dict[str, Any], limits: Limits) -> Key:
        """The key of a provisioning record (``ecu_key.pub.json`` of ``uptane-secondary
        provision``: ``public_key`` beside the ECU's serial, hardware id and ``keyid``); a
        ``keyid`` that is not this key's is refused."""
        key = cls.from_dict(doc["public_key"], limits)
        keyid = doc.get("keyid")
        if keyid is not None and keyid != key.keyid:
            raise MalformedInput("the record's keyid is not the id of its public_key")
        return key

    @classmethod
    def from_public_object(cls, obj: PublicKeyObject) -> Key:
        """The TUF key for a ``cryptography`` public key object."""
        if isinstance(obj, ed25519.Ed25519PublicKey):
            raw = obj.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return cls("ed25519", ED25519, raw.hex())
        pem = obj.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")
        if isinstance(obj, ec.EllipticCurvePublicKey):
            if not isinstance(obj.curve, ec.SECP256R1):
                raise UnsupportedAlgorithm("only the P-256 curve is supported for ecdsa")
            return cls("ecdsa", ECDSA, pem)
        if isinstance(obj, rsa.RSAPublicKey):
            return cls("rsa", RSA_PSS, pem)
        raise UnsupportedAlgorithm(f"unsupported key object {type(obj).__name__}")


class Signer(Protocol):
    """Anything that signs bytes for a known public key: a key file, or an HSM later."""

    @property
    def key(self) -> Key: ...

    def sign(self, data: bytes) -> bytes: ...


class PrivateKey:
    """A private key held in memory, signing with its TUF scheme."""

    def __init__(self, obj: PrivateKeyObject) -> None:
        self._obj = obj
        self._key = Key.from_public_object(obj.public_key())

    @property
    def key(self) -> Key:
        """The public half, as a TUF key."""
        return self._key

    @property
    def keyid(self) -> str:
        """The key id of the public half."""
        return self._key.keyid

    @classmethod
    def generate(cls, scheme: str = ED25519) -> PrivateKey:
        """A fresh key for ``scheme``."""
        if scheme == ED25519:
            return cls(ed25519.Ed25519PrivateKey.generate())
        if scheme == ECDSA:
            return cls(ec.generate_private_key(ec.SECP256R1()))
        if scheme == RSA_PSS:
            return cls(rsa.generate_private_key(public_exponent=65537, key_size=3072))
        raise UnsupportedAlgorithm(f"signature scheme {scheme!r} is not supported")

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` (ecdsa signatures are DER, as securesystemslib writes them)."""
        obj = self._obj
        if isinstance(obj, ed25519.Ed25519PrivateKey):
            return obj.sign(data)
        if isinstance(obj, ec.EllipticCurvePrivateKey):
            return obj.sign(data, ec.ECDSA(hashes.SHA256()))
        return obj.sign(
            data,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
            hashes.SHA256(),
        )

    def to_pem(self, password: bytes | None = None) -> bytes:
        """PKCS#8 PEM, encrypted when ``password`` is given."""
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self._obj.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
        )

    @classmethod
    def from_pem(cls, data: bytes, password: bytes | None = None) -> PrivateKey:
        """Load a PEM private key; MalformedInput if it is not one we support."""
        try:
            obj = serialization.load_pem_private_key(data, password=password)
        except (ValueError, TypeError) as e:
            raise MalformedInput(f"bad private key: {e}") from None
        if not isinstance(
            obj, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)
        ):
            raise UnsupportedAlgorithm(f"unsupported private key {type(obj).__name__}")
        return cls(obj)
