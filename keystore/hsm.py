"""Keys inside a PKCS#11 token (an HSM, a smart card, SoftHSM2), through python-pkcs11.

The private half never leaves the token: keys are made inside it (``SENSITIVE``, not
``EXTRACTABLE``), and signing sends the data, or its SHA-256 for ECDSA, into the token.

- Ed25519: ``CKM_EDDSA`` over the data; the signature is the 64 raw bytes TUF expects.
- ECDSA P-256: ``CKM_ECDSA`` is raw ECDSA (SoftHSM2 has no ``CKM_ECDSA_SHA256``), so the
  host hashes with SHA-256 and the token's ``r || s`` is DER-encoded, as the project's
  keys (and securesystemslib) write ECDSA signatures.

Objects are found by label as key files are by name: ``ROLE`` and ``ROLE.N``. A retired key
is relabelled ``ROLE.retired.KEYID8`` and is never used again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from keystore.files import role_of
from keystore.pkcs11uri import Pkcs11Uri
from keystore.secret import Secret, SecretUnavailable, from_file
from uptane.errors import UnsupportedAlgorithm
from uptane.keys import ECDSA, ED25519, Key

#: where Debian's softhsm2 package puts its module (the default when no path is named)
DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
#: RFC 8410 and SEC 2: the curves this project signs with
ED25519_OID = "1.3.101.112"
P256 = "secp256r1"

_libs: dict[str, Any] = {}
_libs_lock = threading.Lock()
#: one logged-in session per token and process: a PKCS#11 login holds for the whole
#: application, so a second ``C_Login`` on the same token fails (USER_ALREADY_LOGGED_IN)
_sessions: dict[tuple[str, str | None, bytes | None], tuple[Any, threading.RLock]] = {}


class TokenError(Exception):
    """The module, the token or a key cannot be used; the message says what to check."""


def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise TokenError(
            "PKCS#11 keys need python-pkcs11: pip install 'uptane-stack[hsm]'"
        ) from None
    return pkcs11


def _lib(path: str) -> Any:
    """The loaded PKCS#11 module (one per process: a module is initialised once)."""
    with _libs_lock:
        if path not in _libs:
            if not os.path.exists(path):
                raise TokenError(f"no PKCS#11 module at {path}: install it or set module-path")
            _libs[path] = _pkcs11().lib(path)
        return _libs[path]


def _pin(uri: Pkcs11Uri, pin: Secret | None) -> bytes:
    if "pin-value" in uri.query:
        return uri.query["pin-value"]
    source = uri.text("pin-source")
    if source is not None:
        return from_file(source.removeprefix("file:"))
    if pin is None:
        pin = Secret(f"PIN of PKCS#11 token {uri.token!r}")
    return pin.get()


def _ec_point(raw: bytes) -> bytes:
    """``CKA_EC_POINT`` is a DER OCTET STRING around the point; some tokens give it bare."""
    from asn1crypto.core import OctetString

    if raw[:1] == b"\x04" and len(raw) > 2 and raw[1] == len(raw) - 2:
        return bytes(OctetString.load(raw).native)
    return raw


def public_key(pub: Any) -> tuple[Key, str]:
    """The TUF key and scheme of a token's public key object."""
    pk = _pkcs11()
    key_type = pub[pk.Attribute.KEY_TYPE]
    point = _ec_point(bytes(pub[pk.Attribute.EC_POINT]))
    if key_type == pk.KeyType.EC_EDWARDS:
        return Key.from_public_object(ed25519.Ed25519PublicKey.from_public_bytes(point)), ED25519
    if key_type == pk.KeyType.EC:
        obj = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        return Key.from_public_object(obj), ECDSA
    raise UnsupportedAlgorithm(f"token key type {key_type!r}: use Ed25519 or ECDSA P-256")


class TokenSigner:
    """One private key inside the token; :meth:`sign` runs in the token."""

    def __init__(self, token: TokenSession, private: Any, key: Key, scheme: str, label: str):
        self._token = token
        self._private = private
        self._key = key
        self.scheme = scheme
        self.label = label

    @property
    def key(self) -> Key:
        return self._key

    def sign(self, data: bytes) -> bytes:
        pk = _pkcs11()
        with self._token.lock:
            if self.scheme == ED25519:
                return bytes(self._private.sign(data, mechanism=pk.Mechanism.EDDSA))
            digest = hashlib.sha256(data).digest()
            raw = bytes(self._private.sign(digest, mechanism=pk.Mechanism.ECDSA))
        from pkcs11.util.ec import encode_ecdsa_signature

        return bytes(encode_ecdsa_signature(raw))


class TokenSession:
    """One logged-in session on the token an URI names, shared by its signers (PKCS#11
    sessions are not for concurrent use: every call holds :attr:`lock`)."""

    def __init__(self, uri: Pkcs11Uri, pin: Secret | None = None, module: str | None = None):
        self.uri = uri
        self.module = uri.module_path or module or DEFAULT_MODULE
        self._pin = pin
        self._where = (self.module, uri.token, uri.path.get("serial"))
        with _libs_lock:
            known = _sessions.get(self._where)
        #: held around every call into the session (shared by every source on the token)
        self.lock: threading.RLock = known[1] if known else threading.RLock()

    def session(self) -> Any:
        with _libs_lock:
            known = _sessions.get(self._where)
        if known is not None:
            self.lock = known[1]
            return known[0]
        with self.lock:
            opened = self._open()
            with _libs_lock:
                _sessions.setdefault(self._where, (opened, self.lock))
                session, self.lock = _sessions[self._where]
            return session

    def _open(self) -> Any:
        pk = _pkcs11()
        lib = _lib(self.module)
        kw: dict[str, Any] = {}
        if self.uri.token is not None:
            kw["token_label"] = self.uri.token
        if "serial" in self.uri.path:
            kw["token_serial"] = self.uri.path["serial"]
        try:
            token = lib.get_token(**kw)
        except (pk.exceptions.NoSuchToken, pk.exceptions.MultipleTokensReturned) as e:
            raise TokenError(
                f"{type(e).__name__}: no single token matches {self.uri}; check the token"
                " label (softhsm2-util --show-slots) and that the token was there when the"
                " service started"
            ) from None
        try:
            return token.open(rw=True, user_pin=_pin(self.uri, self._pin).decode("utf-8"))
        except pk.exceptions.PinIncorrect:
            raise TokenError(f"wrong PIN for token {self.uri.token!r}") from None
        except SecretUnavailable as e:
            raise TokenError(str(e)) from None

    def private_keys(self) -> list[tuple[str, Any]]:
        """(label, object) of every private key on the token."""
        pk = _pkcs11()
        with self.lock:
            objs = self.session().get_objects({pk.Attribute.CLASS: pk.ObjectClass.PRIVATE_KEY})
            return [(o[pk.Attribute.LABEL], o) for o in objs]

    def signer(self, label: str, private: Any) -> TokenSigner:
        pk = _pkcs11()
        with self.lock:
            kid = private[pk.Attribute.ID]
            found = list(
                self.session().get_objects(
                    {pk.Attribute.CLASS: pk.ObjectClass.PUBLIC_KEY, pk.Attribute.ID: kid}
                )
            )
            if not found:
                raise TokenError(f"token key {label!r} has no public key object with its id")
            key, scheme = public_key(found[0])
        return TokenSigner(self, private, key, scheme, label)

    def generate(self, label: str, scheme: str) -> TokenSigner:
        """A new key pair made inside the token, its private half unexportable."""
        pk = _pkcs11()
        from pkcs11.util.ec import encode_named_curve_parameters

        if scheme == ED25519:
            kind, curve = pk.KeyType.EC_EDWARDS, ED25519_OID
            mech = pk.Mechanism.EC_EDWARDS_KEY_PAIR_GEN
        elif scheme == ECDSA:
            kind, curve, mech = pk.KeyType.EC, P256, pk.Mechanism.EC_KEY_PAIR_GEN
        else:
            raise UnsupportedAlgorithm(f"{scheme} keys are not made in tokens: use {ED25519}")
        private_template = {
            pk.Attribute.SENSITIVE: True,
            pk.Attribute.EXTRACTABLE: False,
            pk.Attribute.PRIVATE: True,
            pk.Attribute.SIGN: True,
        }
        with self.lock:
            params = self.session().create_domain_parameters(
                kind, {pk.Attribute.EC_PARAMS: encode_named_curve_parameters(curve)}, local=True
            )
            _pub, priv = params.generate_keypair(
                store=True,
                label=label,
                id=os.urandom(16),
                mechanism=mech,
                private_template=private_template,
            )
        return self.signer(label, priv)

    def relabel(self, private: Any, label: str) -> None:
        pk = _pkcs11()
        with self.lock:
            kid = private[pk.Attribute.ID]
            for obj in self.session().get_objects({pk.Attribute.ID: kid}):
                obj[pk.Attribute.LABEL] = label


class Pkcs11KeySource:
    """Keys on the token ``uri`` names, labelled by role (``timestamp``, ``timestamp.1``).
    An URI naming an ``object`` holds that one key, whatever role is asked for."""

    def __init__(
        self, uri: str | Pkcs11Uri, *, pin: Secret | None = None, module: str | None = None
    ) -> None:
        self.uri = uri if isinstance(uri, Pkcs11Uri) else Pkcs11Uri.parse(uri)
        self.token = TokenSession(self.uri, pin, module)
        self._cache: dict[str, list[TokenSigner]] = {}

    def describe(self) -> str:
        return f"PKCS#11 token {self.uri} (module {self.token.module})"

    def _labelled(self, role: str) -> list[tuple[str, Any]]:
        only = self.uri.object
        return sorted(
            (label, obj)
            for label, obj in self.token.private_keys()
            if (label == only if only is not None else role_of(label, role))
        )

    def signers(self, role: str) -> list[Any]:
        if role not in self._cache:
            self._cache[role] = [self.token.signer(lb, o) for lb, o in self._labelled(role)]
        return list(self._cache[role])

    def generate(self, role: str, scheme: str = ED25519) -> TokenSigner:
        taken = {label for label, _ in self.token.private_keys()}
        label, n = role, 1
        while label in taken:
            label, n = f"{role}.{n}", n + 1
        self._cache.pop(role, None)
        return self.token.generate(label, scheme)

    def retire(self, role: str, keep: Iterable[str]) -> list[str]:
        wanted = set(keep)
        gone = []
        for s in self.signers(role):
            if s.key.keyid not in wanted:
                self.token.relabel(s._private, f"{role}.retired.{s.key.keyid[:8]}")
                gone.append(s.key.keyid)
        self._cache.pop(role, None)
        return gone

    def forget(self) -> None:
        self._cache.clear()


__all__ = ["DEFAULT_MODULE", "Pkcs11KeySource", "TokenError", "TokenSession", "TokenSigner"]
