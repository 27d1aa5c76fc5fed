"""The time server's keys on disk: a long-term key kept offline, and delegations of an
online key for a window of time (draft-ietf-ntp-roughtime-11 §6.2.6, CERT/DELE).

Layout (both directories are the operator's choice and must differ):

- ``KEYS_DIR/longterm.key`` (0600): the long-term Ed25519 private key, PKCS#8 PEM. Only
  ``init`` and ``delegate`` read it; keep this directory offline;
- ``KEYS_DIR/longterm.pub`` and ``ONLINE_DIR/longterm.pub`` (0644): the long-term public
  key in base64, what ECUs and Primaries are provisioned with;
- ``ONLINE_DIR/delegation.json`` (0600): the online private key and its certificate (the
  CERT value, signed by the long-term key) with its window, written in one atomic step so
  the key and the certificate always match. ``serve`` loads only this file.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from storage import atomic_write, read_capped
from uptane import roughtime as rt
from uptane.errors import MalformedInput, UptaneError

LONG_TERM_KEY = "longterm.key"
LONG_TERM_PUB = "longterm.pub"
DELEGATION = "delegation.json"
_MAX_FILE = 64 * 1024


class KeyFileError(Exception):
    """A key directory that cannot be used as asked (the message says what to do)."""


@dataclass(frozen=True)
class OnlineIdentity:
    """What ``serve`` holds: the online key, its certificate and window, and the long-term
    public key it speaks for (its private half is not here)."""

    online_key: Ed25519PrivateKey
    certificate: bytes
    mint: int
    maxt: int
    long_term_public: bytes

    @property
    def key_id(self) -> str:
        """The long-term key's SRV value in hex (draft 11 §6.1.3)."""
        return rt.server_id(self.long_term_public).hex()

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.long_term_public).decode()


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_pem(data: bytes, what: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{what} is not a readable private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{what} is not an Ed25519 key")
    return key


def load_public(text: str | bytes) -> bytes:
    """A long-term public key from its base64 form (the content of ``longterm.pub``)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise MalformedInput("a time server key is 32 bytes in base64") from None
    if len(raw) != rt.KEY_BYTES:
        raise MalformedInput(f"a time server key is 32 bytes, not {len(raw)}")
    return raw


def read_public(path: Path) -> bytes:
    """The long-term public key in a ``longterm.pub`` file."""
    return load_public(read_capped(path, _MAX_FILE))


def _check_dirs(keys_dir: Path, online_dir: Path) -> None:
    if keys_dir.resolve() == online_dir.resolve():
        raise KeyFileError(
            "the online directory must not be the long-term key's directory: the serving "
            "process must never be able to read the long-term private key"
        )


def init(keys_dir: Path, online_dir: Path, *, now: int, days: int) -> OnlineIdentity:
    """Create the long-term key in ``keys_dir`` and a first delegation (``now`` for
    ``days`` days) in ``online_dir``. Refuses to replace an existing long-term key."""
    _check_dirs(keys_dir, online_dir)
    if (keys_dir / LONG_TERM_KEY).exists():
        raise KeyFileError(f"{keys_dir / LONG_TERM_KEY} exists; use `delegate` to renew")
    long_term = Ed25519PrivateKey.generate()
    atomic_write(keys_dir / LONG_TERM_KEY, _pem(long_term), mode=0o600)
    public = base64.b64encode(rt.public_bytes(long_term)) + b"\n"
    atomic_write(keys_dir / LONG_TERM_PUB, public, mode=0o644)
    return delegate(keys_dir, online_dir, not_before=now, days=days)


def delegate(keys_dir: Path, online_dir: Path, *, not_before: int, days: int) -> OnlineIdentity:
    """A new online key, certified by the long-term key for ``not_before`` ..
    ``not_before + days`` days, replacing the delegation in ``online_dir`` atomically."""
    _check_dirs(keys_dir, online_dir)
    if days <= 0:
        raise KeyFileError("a delegation lasts at least one day")
    long_term = _load_pem(read_capped(keys_dir / LONG_TERM_KEY, _MAX_FILE), LONG_TERM_KEY)
    online = Ed25519PrivateKey.generate()
    mint, maxt = not_before, not_before + days * rt.DAY
    cert = rt.make_certificate(long_term, rt.public_bytes(online), mint, maxt)
    record = {
        "draft": rt.DRAFT,
        "online_key": _pem(online).decode(),
        "certificate": base64.b64encode(cert).decode(),
        "mint": mint,
        "maxt": maxt,
        "long_term_public": base64.b64encode(rt.public_bytes(long_term)).decode(),
    }
    atomic_write(online_dir / DELEGATION, json.dumps(record, indent=2).encode(), mode=0o600)
    public = base64.b64encode(rt.public_bytes(long_term)) + b"\n"
    atomic_write(online_dir / LONG_TERM_PUB, public, mode=0o644)
    return OnlineIdentity(online, cert, mint, maxt, rt.public_bytes(long_term))


def load_online(online_dir: Path) -> OnlineIdentity:
    """The delegation ``serve`` runs with. Refuses a directory that holds the long-term
    private key, and a certificate that does not match its key."""
    if (online_dir / LONG_TERM_KEY).exists():
        raise KeyFileError(
            f"{online_dir} holds the long-term private key; move it offline and serve only "
            "the delegation (`uptane-time-server delegate --keys OFFLINE --online DIR`)"
        )
    try:
        record = json.loads(read_capped(online_dir / DELEGATION, _MAX_FILE))
        online = _load_pem(record["online_key"].encode(), DELEGATION)
        cert = base64.b64decode(record["certificate"], validate=True)
        identity = OnlineIdentity(
            online,
            cert,
            int(record["mint"]),
            int(record["maxt"]),
            load_public(record["long_term_public"]),
        )
    except FileNotFoundError:
        raise KeyFileError(
            f"no {DELEGATION} in {online_dir}: run `uptane-time-server init`"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError, MalformedInput) as e:
        raise KeyFileError(f"{online_dir / DELEGATION} is damaged ({e}); run `delegate`") from None
    _check_certificate(identity)
    return identity


def _check_certificate(identity: OnlineIdentity) -> None:
    """The certificate must certify this online key, for the recorded window, by this
    long-term key: a response signed here must pass what every client checks (§6.4)."""
    nonce = bytes(rt.NONCE_BYTES)
    probe = rt.sign_batch(
        [nonce],
        midpoint=identity.mint,
        radius=rt.MIN_RADIUS,
        certificate=identity.certificate,
        online_key=identity.online_key,
    )[0]
    key = rt.TimeServerKey("self", identity.long_term_public)
    try:
        rt.verify_response(probe, nonce, [key], rt.PRIMARY_LIMITS)
        window = rt.parse_response(probe, rt.PRIMARY_LIMITS)
    except UptaneError as e:
        raise KeyFileError(f"the delegation does not verify ({e}); run `delegate`") from None
    if (window.mint, window.maxt) != (identity.mint, identity.maxt):
        raise KeyFileError("the delegation's window does not match its certificate; run `delegate`")
