"""Typed Uptane/TUF metadata: the four roles, target files with Uptane custom fields,
delegations (paths, hardware ids, terminating, TAP 3 multi-role, succinct hash bins),
the TAP 4 map file, and the signed envelope.

The JSON form is TUF's, so python-tuf loads it; Uptane additions live in ``custom`` and in
extra fields that python-tuf keeps as unrecognized. Fields this code does not know survive
a decode/encode round trip. Every ``from_dict`` takes a :class:`~uptane.limits.Limits`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, MutableMapping
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar

from uptane.allocation import collector_paused
from uptane.encoding.json import canonical, canonical_decoded, dumps, loads
from uptane.encoding.registry import COMPACT_DER as COMPACT_DER
from uptane.encoding.registry import DER as DER
from uptane.encoding.registry import JSON as JSON
from uptane.encoding.registry import codec_for
from uptane.errors import MalformedInput
from uptane.identity import HasIdentity, ImageIdentity, same_image
from uptane.keys import Key, Signer
from uptane.limits import Limits
from uptane.policy import (
    MAX_UINT,
    check_hex,
    check_target_name,
    check_text,
    check_uint,
    hex_ok,
    text_ok,
)

SPEC_VERSION = "1.0.31"
EXPIRES_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
#: the encodings of metadata (each a codec in uptane.codec, looked up by this name)
ENCODINGS = (JSON, DER, COMPACT_DER)

# --- small typed readers: every one raises MalformedInput, never KeyError/TypeError ----------


_V = TypeVar("_V")


def _take(d: dict[str, Any], key: str, kind: type[_V], what: str) -> _V:
    """``d[key]`` removed from ``d``, of type ``kind`` (a bool is no int)."""
    if key not in d:
        raise MalformedInput(f"{what}: missing field {key!r}")
    value = d.pop(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedInput(f"{what}: field {key!r} has the wrong type")
    return value


def _opt(d: dict[str, Any], key: str, kind: type[_V], what: str) -> _V | None:
    """:func:`_take`, or None when ``key`` is absent."""
    if key not in d:
        return None
    return _take(d, key, kind, what)


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedInput(f"{what}: expected an object")
    return dict(value)


def _nonneg(value: int, what: str) -> int:
    """A length or counter: ``0..2**63-1`` (the integer policy, uptane/policy.py)."""
    return check_uint(value, what)


def _uint(d: dict[str, Any], key: str, what: str, low: int = 0) -> int:
    """``d[key]`` removed from ``d``: an integer in ``low..2**63-1`` (uptane/policy.py)."""
    return check_uint(_take(d, key, int, what), f"{what} {key}", low=low)


def _text(value: str, what: str, limits: Limits, cap: int | None = None) -> str:
    """An identifier, name or URL: within its length cap, no control character."""
    limits.check_string(what, value, cap)
    return check_text(value, what)


def _str_list(value: Any, what: str, limits: Limits, cap: int) -> list[str]:
    if not isinstance(value, list):
        raise MalformedInput(f"{what}: expected a list")
    limits.check_count(what, len(value), cap)
    for item in value:
        if not isinstance(item, str):
            raise MalformedInput(f"{what}: expected strings")
        _text(item, what, limits)
    return list(value)


def _hashes(value: Any, what: str, limits: Limits) -> dict[str, str]:
    d = _obj(value, what)
    limits.check_count(f"{what} hashes", len(d), limits.max_hashes)
    for alg, digest in d.items():
        check_text(alg, f"{what} hash algorithm")
        if not isinstance(digest, str):
            raise MalformedInput(f"{what}: hash {alg[:32]!r} must be a hex string")
        limits.check_string("hash", digest, 1024)
        check_hex(digest, f"{what}: hash {alg[:32]!r}")
    return d


def parse_expires(value: str) -> datetime:
    """Parse the TUF expiry form ``YYYY-MM-DDTHH:MM:SSZ`` into an aware UTC datetime."""
    try:
        return datetime.strptime(value, EXPIRES_FORMAT).replace(tzinfo=UTC)
    except (ValueError, TypeError):
        raise MalformedInput(f"bad expiry {str(value)[:40]!r}") from None


def format_expires(value: datetime) -> str:
    """Write an aware datetime in the TUF expiry form."""
    return value.astimezone(UTC).strftime(EXPIRES_FORMAT)


# --- envelope pieces ---------------------------------------------------------------------


#: hex digits of the key-id hint a DER signature carries: the first 8 bytes of the key id
#: (docs/der-profile.md, "Signature"); JSON signatures carry the whole key id
KEYID_HINT_HEX = 16


def signature_keyid(keyid: str, encoding: str) -> str:
    """The key id a new signature in ``encoding`` names: the whole id in JSON, its first 8
    bytes in DER (the codec's rule, :meth:`uptane.codec.Codec.signature_keyid`)."""
    return codec_for(encoding).signature_keyid(keyid)


@dataclass
class Signature:
    """One signature: the signing key's id (or, in DER, its 8-byte hint) and the raw
    signature bytes."""

    keyid: str
    sig: bytes
    unrecognized: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"keyid": self.keyid, "sig": self.sig.hex(), **self.unrecognized}

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> Signature:
        d = _obj(d, "signature")
        keyid = _take(d, "keyid", str, "signature")
        sig = _take(d, "sig", str, "signature")
        _text(keyid, "keyid", limits, limits.max_identifier)
        limits.check_string("signature", sig, 2048)
        return cls(keyid, check_hex(sig, "signature: sig"), d)


def signatures_from_dicts(docs: list[Any], limits: Limits) -> list[Signature]:
    """The ``signatures`` of a metadata envelope, in order. A key id named twice makes the
    whole file malformed, even if the threshold would be met (TUF; python-tuf refuses
    "Multiple signatures found for keyid"), in every encoding."""
    limits.check_count("signatures", len(docs), limits.max_signatures)
    out = [Signature.from_dict(s, limits) for s in docs]
    seen: set[str] = set()
    for sig in out:
        if sig.keyid in seen:
            raise MalformedInput(f"metadata: two signatures name the key id {sig.keyid[:64]!r}")
        seen.add(sig.keyid)
    return out


@dataclass
class MetaFile:
    """A snapshot or timestamp entry: the version of a metadata file, and optionally its
    length and hashes."""

    version: int
    length: int | None = None
    hashes: dict[str, str] | None = None
    unrecognized: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"version": self.version, **self.unrecognized}
        if self.length is not None:
            d["length"] = self.length
        if self.hashes is not None:
            d["hashes"] = dict(self.hashes)
        return d

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> MetaFile:
        d = _obj(d, "meta")
        version = _uint(d, "version", "meta", low=1)
        length = _opt(d, "length", int, "meta")
        if length is not None:
            _nonneg(length, "meta length")
        hashes = d.pop("hashes", None)
        return cls(version, length, None if hashes is None else _hashes(hashes, "meta", limits), d)


@dataclass
class Role:
    """A top-level role entry in root: which keys sign it and how many must."""

    keyids: list[str]
    threshold: int
    unrecognized: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"keyids": list(self.keyids), "threshold": self.threshold, **self.unrecognized}

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> Role:
        d = _obj(d, "role")
        keyids = _str_list(_take(d, "keyids", list, "role"), "keyids", limits, limits.max_keys)
        threshold = _uint(d, "threshold", "role", low=1)
        return cls(keyids, threshold, d)


# --- signed parts --------------------------------------------------------------------------


@dataclass
class Signed:
    """Fields every role has (§5.2.1): type, version, spec_version and expiry."""

    _type: ClassVar[str] = ""
    version: int = 1
    expires: datetime = field(default_factory=lambda: datetime(2100, 1, 1, tzinfo=UTC))
    spec_version: str = SPEC_VERSION
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        """The role type: root, timestamp, snapshot or targets."""
        return self._type

    def is_expired(self, now: datetime) -> bool:
        """Expired when the current time is at or past the expiry."""
        return now >= self.expires

    def _common_to_dict(self) -> dict[str, Any]:
        return {
            "_type": self._type,
            "version": self.version,
            "spec_version": self.spec_version,
            "expires": format_expires(self.expires),
            **self.unrecognized,
        }

    @classmethod
    def _common_from_dict(cls, d: dict[str, Any], limits: Limits) -> dict[str, Any]:
        what = cls._type
        t = _take(d, "_type", str, what)
        if t != cls._type:
            raise MalformedInput(f"expected {cls._type} metadata, got {t[:32]!r}")
        version = _uint(d, "version", what, low=1)
        spec = _text(_take(d, "spec_version", str, what), "spec_version", limits, 32)
        expires = parse_expires(_take(d, "expires", str, what))
        return {"version": version, "spec_version": spec, "expires": expires}

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> Signed:
        raise NotImplementedError


@dataclass
class Root(Signed):
    """Root metadata (§5.2.2): the keys and thresholds of the four top-level roles."""

    _type: ClassVar[str] = "root"
    consistent_snapshot: bool = True
    keys: dict[str, Key] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self._common_to_dict(),
            "consistent_snapshot": self.consistent_snapshot,
            "keys": {k: v.to_dict() for k, v in self.keys.items()},
            "roles": {k: v.to_dict() for k, v in self.roles.items()},
        }

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> Root:
        d = _obj(d, "root")
        common = cls._common_from_dict(d, limits)
        cs = _opt(d, "consistent_snapshot", bool, "root")
        keys_d = _obj(_take(d, "keys", dict, "root"), "root keys")
        limits.check_count("root keys", len(keys_d), limits.max_keys)
        roles_d = _obj(_take(d, "roles", dict, "root"), "root roles")
        limits.check_count("root roles", len(roles_d), limits.max_roles)
        keys = {}
        for kid, kd in keys_d.items():
            _text(kid, "keyid", limits, limits.max_identifier)
            keys[kid] = Key.from_dict(kd, limits)
        roles = {
            _text(name, "role name", limits): Role.from_dict(rd, limits)
            for name, rd in roles_d.items()
        }
        for name in ("root", "timestamp", "snapshot", "targets"):
            if name not in roles:
                raise MalformedInput(f"root: role {name!r} is missing")
        return cls(
            **common,
            consistent_snapshot=bool(cs) if cs is not None else False,
            keys=keys,
            roles=roles,
            unrecognized=d,
        )

    def role_keys(self, role: str) -> tuple[dict[str, Key], Role]:
        """The keys (by listed key id) and the entry of a top-level role."""
        entry = self.roles[role]
        return {k: self.keys[k] for k in entry.keyids if k in self.keys}, entry

    def add_key(self, key: Key, role: str) -> None:
        """Authorise ``key`` for ``role`` (listed once)."""
        self.keys[key.keyid] = key
        entry = self.roles.setdefault(role, Role([], 1))
        if key.keyid not in entry.keyids:
            entry.keyids.append(key.keyid)

    def revoke_key(self, keyid: str, role: str) -> None:
        """Remove ``keyid`` from ``role``, and from the key list if no role uses it."""
        entry = self.roles[role]
        if keyid in entry.keyids:
            entry.keyids.remove(keyid)
        if all(keyid not in r.keyids for r in self.roles.values()):
            self.keys.pop(keyid, None)


@dataclass
class Timestamp(Signed):
    """Timestamp metadata (§5.2.5): the current snapshot version and hashes."""

    _type: ClassVar[str] = "timestamp"
    snapshot_meta: MetaFile = field(default_factory=lambda: MetaFile(1))

    def to_dict(self) -> dict[str, Any]:
        return {**self._common_to_dict(), "meta": {"snapshot.json": self.snapshot_meta.to_dict()}}

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> Timestamp:
        d = _obj(d, "timestamp")
        common = cls._common_from_dict(d, limits)
        meta = _obj(_take(d, "meta", dict, "timestamp"), "timestamp meta")
        if set(meta) != {"snapshot.json"}:
            raise MalformedInput("timestamp: meta must list exactly snapshot.json")
        return cls(
            **common,
            snapshot_meta=MetaFile.from_dict(meta["snapshot.json"], limits),
            unrecognized=d,
        )


@dataclass
class Snapshot(Signed):
    """Snapshot metadata (§5.2.4): the version of every targets metadata file."""

    _type: ClassVar[str] = "snapshot"
    meta: dict[str, MetaFile] = field(default_factory=lambda: {"targets.json": MetaFile(1)})

    def to_dict(self) -> dict[str, Any]:
        return {**self._common_to_dict(), "meta": {k: v.to_dict() for k, v in self.meta.items()}}

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> Snapshot:
        d = _obj(d, "snapshot")
        common = cls._common_from_dict(d, limits)
        meta_d = _obj(_take(d, "meta", dict, "snapshot"), "snapshot meta")
        limits.check_count("snapshot entries", len(meta_d), limits.max_snapshot_entries)
        meta = {}
        for name, md in meta_d.items():
            _text(name, "snapshot entry", limits, limits.max_identifier + 5)
            meta[name] = MetaFile.from_dict(md, limits)
        return cls(**common, meta=meta, unrecognized=d)

    def role_meta(self, role: str) -> MetaFile | None:
        """The entry for targets role ``role`` (``targets`` or a delegated name)."""
        return self.meta.get(f"{role}.json")


@dataclass
class WrappedKey:
    """An image's content key wrapped to one ECU's encryption key (uptane/encryption.py)."""

    keyid: str  # the id of the ECU encryption public key it is wrapped to
    value: bytes  # the wrapped key (HPKE encapsulated key and ciphertext)

    def to_dict(self) -> dict[str, Any]:
        return {"keyid": self.keyid, "value": self.value.hex()}

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> WrappedKey:
        d = _obj(d, "wrappedKeys entry")
        keyid = _text(
            _take(d, "keyid", str, "wrappedKeys entry"),
            "wrapped key id",
            limits,
            limits.max_identifier,
        )
        value = _take(d, "value", str, "wrappedKeys entry")
        limits.check_string("wrapped key", value)
        if d:
            raise MalformedInput(f"wrappedKeys entry: unknown fields {sorted(d)[:4]}")
        return cls(keyid, check_hex(value, "wrappedKeys entry: value"))


@dataclass
class EncryptedImage:
    """How an image is encrypted for the ECUs of its entry (§5.2.3.1.1, conditionally
    required): the ciphertext the Primary downloads and checks (``filename``, ``length``,
    ``hashes``), the construction (``method``) and the content key wrapped to each ECU
    (``wrapped_keys``, by ECU id). The entry's own length and hashes are the plaintext's,
    which the ECU checks after decrypting. ``wrapped_key`` is the older single-key form,
    kept so such entries still decode; ``uptane.encryption`` writes ``wrapped_keys``.
    """

    filename: str
    length: int
    hashes: dict[str, str]
    wrapped_key: bytes
    method: str
    wrapped_keys: dict[str, WrappedKey] = field(default_factory=dict)

    def identity(self) -> ImageIdentity:
        """The ciphertext as an image (:mod:`uptane.identity`): what the Primary fetches."""
        return ImageIdentity(self.filename, self.length, self.hashes)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "filename": self.filename,
            "length": self.length,
            "hashes": dict(self.hashes),
            "wrappedKey": self.wrapped_key.hex(),
            "method": self.method,
        }
        if self.wrapped_keys:
            d["wrappedKeys"] = {e: k.to_dict() for e, k in self.wrapped_keys.items()}
        return d

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> EncryptedImage:
        d = _obj(d, "encryptedImage")
        filename = _take(d, "filename", str, "encryptedImage")
        limits.check_string("encrypted filename", filename)
        check_target_name(filename, "encrypted filename")
        length = _uint(d, "length", "encryptedImage")
        hashes = _hashes(_take(d, "hashes", dict, "encryptedImage"), "encryptedImage", limits)
        wrapped = _take(d, "wrappedKey", str, "encryptedImage")
        limits.check_string("wrapped key", wrapped)
        method = _take(d, "method", str, "encryptedImage")
        _text(method, "encryption method", limits, limits.max_identifier)
        key = check_hex(wrapped, "encryptedImage: wrappedKey")
        keys: dict[str, WrappedKey] = {}
        per_ecu = _opt(d, "wrappedKeys", dict, "encryptedImage")
        if per_ecu is not None:
            limits.check_count("wrappedKeys", len(per_ecu), limits.max_ecus)
            for ecu, kd in per_ecu.items():
                _text(ecu, "ECU id", limits, limits.max_identifier)
                keys[ecu] = WrappedKey.from_dict(kd, limits)
        return cls(filename, length, hashes, key, method, keys)


def _image_ref_to_dict(image: ImageIdentity) -> dict[str, Any]:
    return {"filename": image.path, "length": image.length, "hashes": dict(image.hashes)}


def _image_ref(value: Any, what: str, limits: Limits) -> ImageIdentity:
    d = _obj(value, what)
    path = _take(d, "filename", str, what)
    limits.check_string(f"{what} filename", path)
    check_target_name(path, f"{what} filename")
    length = _uint(d, "length", what)
    hashes = _hashes(_take(d, "hashes", dict, what), what, limits)
    if not hashes or d:
        raise MalformedInput(f"{what}: needs exactly filename, length and hashes (one or more)")
    return ImageIdentity(path, length, hashes)


@dataclass
class DeltaImage:
    """What a delta target is (issue 17; uptane/delta.py): a patch in ``format`` that turns
    the ``base`` image into the full image ``target``. The entry's own length and hashes
    are the patch's; the produced image is checked against ``target``'s."""

    format: str
    base: ImageIdentity
    target: ImageIdentity

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "base": _image_ref_to_dict(self.base),
            "target": _image_ref_to_dict(self.target),
        }

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> DeltaImage:
        d = _obj(d, "delta")
        fmt = _text(_take(d, "format", str, "delta"), "delta format", limits, limits.max_identifier)
        base = _image_ref(_take(d, "base", dict, "delta"), "delta base", limits)
        target = _image_ref(_take(d, "target", dict, "delta"), "delta target", limits)
        if d:
            raise MalformedInput(f"delta: unknown fields {sorted(d)[:4]}")
        return cls(fmt, base, target)


@dataclass
class TargetFile:
    """One image entry (§5.2.3.1): length, hashes, and the Uptane custom fields.

    ``ecu_ids`` maps an ECU identifier to the hardware id that ECU has; it is set only on
    the Director. Unknown ``custom`` keys are kept in ``custom_extra``.
    """

    path: str
    length: int
    hashes: dict[str, str]
    hardware_ids: list[str] = field(default_factory=list)
    release_counter: int | None = None
    ecu_ids: dict[str, str] = field(default_factory=dict)
    shall_match: dict[str, Any] | None = None
    encrypted: EncryptedImage | None = None
    url: str | None = None
    custom_extra: dict[str, Any] = field(default_factory=dict)
    unrecognized: dict[str, Any] = field(default_factory=dict)
    delta: DeltaImage | None = None

    @property
    def custom(self) -> dict[str, Any]:
        """The JSON ``custom`` object for this target."""
        c: dict[str, Any] = dict(self.custom_extra)
        if self.hardware_ids:
            c["hardwareIds"] = list(self.hardware_ids)
        if self.release_counter is not None:
            c["releaseCounter"] = self.release_counter
        if self.ecu_ids:
            c["ecuIdentifiers"] = {e: {"hardwareId": h} for e, h in self.ecu_ids.items()}
        if self.shall_match is not None:
            c["shallMatch"] = self.shall_match
        if self.encrypted is not None:
            c["encryptedImage"] = self.encrypted.to_dict()
        if self.url is not None:
            c["uri"] = self.url
        if self.delta is not None:
            c["delta"] = self.delta.to_dict()
        return c

    def identity(self) -> ImageIdentity:
        """The image this entry names (:mod:`uptane.identity`)."""
        return ImageIdentity(self.path, self.length, self.hashes)

    def same_image(self, other: HasIdentity | None) -> bool:
        """True when ``other`` names the same image (:func:`uptane.identity.same_image`)."""
        return same_image(self, other)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"length": self.length, "hashes": dict(self.hashes)}
        custom = self.custom
        if custom:
            d["custom"] = custom
        d.update(self.unrecognized)
        return d

    @classmethod
    def from_dict(cls, path: str, d: Any, limits: Limits) -> TargetFile:
        what = f"target {path[:64]!r}"
        check_target_name(path)
        d = _obj(d, what)
        length = _uint(d, "length", what)
        hashes = _hashes(_take(d, "hashes", dict, what), what, limits)
        if not hashes:
            raise MalformedInput(f"{what}: at least one hash is required")
        custom = _opt(d, "custom", dict, what)
        tf = cls(path, length, hashes, unrecognized=d)
        if custom is None:
            return tf
        c = dict(custom)
        limits.check_count("custom fields", len(c), limits.max_custom_items)
        hw = c.pop("hardwareIds", None)
        if hw is not None:
            tf.hardware_ids = _str_list(hw, "hardwareIds", limits, limits.max_hardware_ids)
        rc = _opt(c, "releaseCounter", int, what)
        if rc is not None:
            tf.release_counter = _nonneg(rc, "releaseCounter")
        ecus = _opt(c, "ecuIdentifiers", dict, what)
        if ecus is not None:
            limits.check_count("ecuIdentifiers", len(ecus), limits.max_ecus)
            for ecu, info in ecus.items():
                _text(ecu, "ECU id", limits, limits.max_identifier)
                info = _obj(info, "ecuIdentifiers entry")
                hwid = _take(info, "hardwareId", str, "ecuIdentifiers entry")
                tf.ecu_ids[ecu] = _text(hwid, "hardware id", limits, limits.max_identifier)
        sm = _opt(c, "shallMatch", dict, what)
        if sm is not None:
            tf.shall_match = sm
        enc = c.pop("encryptedImage", None)
        if enc is not None:
            tf.encrypted = EncryptedImage.from_dict(enc, limits)
        url = _opt(c, "uri", str, what)
        if url is not None:
            tf.url = _text(url, "uri", limits)
        delta = c.pop("delta", None)
        if delta is not None:
            tf.delta = DeltaImage.from_dict(delta, limits)
        tf.custom_extra = c
        return tf

    @classmethod
    def from_data(
        cls, path: str, data: bytes, algorithms: tuple[str, ...] = ("sha256",), **fields: Any
    ) -> TargetFile:
        """A target entry for ``data``, hashed with ``algorithms``."""
        hashes = {a: hashlib.new(a, data).hexdigest() for a in algorithms}
        return cls(path, len(data), hashes, **fields)


#: the keys of a target entry's ``custom`` object that :func:`_plain_entry` checks itself
_PLAIN_CUSTOM = frozenset(("hardwareIds", "releaseCounter"))


def _plain_entry(td: Any, limits: Limits) -> bool:
    """Whether :meth:`TargetFile.from_dict` accepts ``td``, for an entry of the common
    shape (``length``, ``hashes``, and a ``custom`` holding at most ``hardwareIds`` and
    ``releaseCounter``), decided by the same checks without building anything.

    True means that ``from_dict`` succeeds on ``td`` (each check below is one it makes,
    with the same caps), so the entry may be built later, on lookup. False means "not
    decided here": the caller builds the entry at once, which either raises the precise
    error or builds an entry of another shape.
    """
    if type(td) is not dict:
        return False
    length = td.get("length")
    if type(length) is not int or not 0 <= length <= MAX_UINT:
        return False
    hashes = td.get("hashes")
    if type(hashes) is not dict or not hashes or len(hashes) > limits.max_hashes:
        return False
    for alg, digest in hashes.items():
        if type(digest) is not str or len(digest) > 1024 or not text_ok(alg):
            return False
        if not hex_ok(digest):
            return False
    if "custom" not in td:
        return True
    custom = td["custom"]
    if type(custom) is not dict or len(custom) > limits.max_custom_items:
        return False
    if not _PLAIN_CUSTOM.issuperset(custom):
        return False
    if "hardwareIds" in custom:
        hw = custom["hardwareIds"]
        if type(hw) is not list or len(hw) > limits.max_hardware_ids:
            return False
        max_string = limits.max_string
        for item in hw:
            if type(item) is not str or len(item) > max_string or not text_ok(item):
                return False
    if "releaseCounter" in custom:
        rc = custom["releaseCounter"]
        if type(rc) is not int or not 0 <= rc <= MAX_UINT:
            return False
    return True


class TargetMap(MutableMapping[str, TargetFile]):
    """path -> :class:`TargetFile` of a targets role, in the order of the metadata.

    A decoded role validates every entry when it is decoded (:meth:`Targets.from_dict`);
    what waits is only building the ``TargetFile`` of an entry of the common shape: its
    checked, decoded JSON object is kept and built on first lookup (a refresh of a
    1,000-target repository looks up one entry). Every read goes through
    :meth:`__getitem__`, so no caller ever sees an unbuilt entry. See docs/core.md,
    "Target entries".
    """

    def __init__(
        self,
        entries: AbcMapping[str, TargetFile] | None = None,
        limits: Limits | None = None,
    ) -> None:
        #: a TargetFile, or (not yet built) the entry's checked JSON object
        self._entries: dict[str, TargetFile | dict[str, Any]] = dict(entries or {})
        self._limits = limits

    @classmethod
    def _decoded(cls, entries: dict[str, TargetFile | dict[str, Any]], limits: Limits) -> TargetMap:
        m = cls(None, limits)
        m._entries = entries
        return m

    def __getitem__(self, path: str) -> TargetFile:
        value = self._entries[path]
        if type(value) is dict:
            assert self._limits is not None
            value = TargetFile.from_dict(path, value, self._limits)
            self._entries[path] = value
        return value  # type: ignore[return-value]

    def __setitem__(self, path: str, target: TargetFile) -> None:
        self._entries[path] = target

    def __delitem__(self, path: str) -> None:
        del self._entries[path]

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.items())!r})"


@dataclass
class RoleRef:
    """One role inside a TAP 3 multi-role delegation."""

    name: str
    keyids: list[str]
    threshold: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "keyids": list(self.keyids), "threshold": self.threshold}

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> RoleRef:
        d = _obj(d, "multi-role entry")
        name = _take(d, "name", str, "multi-role entry")
        _text(name, "role name", limits, limits.max_identifier)
        keyids = _str_list(
            _take(d, "keyids", list, "multi-role entry"), "keyids", limits, limits.max_keys
        )
        threshold = _uint(d, "threshold", "multi-role entry", low=1)
        return cls(name, keyids, threshold)


@dataclass
class DelegatedRole:
    """A delegation (§5.2.3.2): which paths (and hardware ids) a role may sign for.

    ``multi_roles``/``min_roles_in_agreement`` make it a TAP 3 multi-role delegation:
    at least that many of the listed roles must list an identical target (§5.4.4.8).
    """

    name: str
    keyids: list[str]
    threshold: int
    terminating: bool = False
    paths: list[str] | None = None
    path_hash_prefixes: list[str] | None = None
    hardware_ids: list[str] | None = None
    multi_roles: list[RoleRef] | None = None
    min_roles_in_agreement: int | None = None
    unrecognized: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "keyids": list(self.keyids),
            "threshold": self.threshold,
            "terminating": self.terminating,
            **self.unrecognized,
        }
        if self.paths is not None:
            d["paths"] = list(self.paths)
        if self.path_hash_prefixes is not None:
            d["path_hash_prefixes"] = list(self.path_hash_prefixes)
        if self.hardware_ids is not None:
            d["hardwareIds"] = list(self.hardware_ids)
        if self.multi_roles is not None:
            d["multiRole"] = {
                "minRolesInAgreement": self.min_roles_in_agreement,
                "roles": [r.to_dict() for r in self.multi_roles],
            }
        return d

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> DelegatedRole:
        d = _obj(d, "delegated role")
        name = _take(d, "name", str, "delegated role")
        _text(name, "role name", limits, limits.max_identifier)
        keyids = _str_list(
            _take(d, "keyids", list, "delegated role"), "keyids", limits, limits.max_keys
        )
        threshold = _uint(d, "threshold", "delegated role", low=1)
        terminating = _opt(d, "terminating", bool, "delegated role") or False
        paths = d.pop("paths", None)
        prefixes = d.pop("path_hash_prefixes", None)
        if paths is not None and prefixes is not None:
            raise MalformedInput("delegated role: paths and path_hash_prefixes are exclusive")
        role = cls(name, keyids, threshold, terminating, unrecognized=d)
        if paths is not None:
            role.paths = _str_list(paths, "paths", limits, limits.max_paths)
        if prefixes is not None:
            role.path_hash_prefixes = _str_list(
                prefixes, "path_hash_prefixes", limits, limits.max_paths
            )
        hw = d.pop("hardwareIds", None)
        if hw is not None:
            role.hardware_ids = _str_list(hw, "hardwareIds", limits, limits.max_hardware_ids)
        multi = _opt(d, "multiRole", dict, "delegated role")
        if multi is not None:
            multi = dict(multi)
            refs = _take(multi, "roles", list, "multiRole")
            limits.check_count("multiRole roles", len(refs), limits.max_roles)
            role.multi_roles = [RoleRef.from_dict(r, limits) for r in refs]
            k = _take(multi, "minRolesInAgreement", int, "multiRole")
            if not 1 <= k <= len(role.multi_roles):
                raise MalformedInput("multiRole: minRolesInAgreement out of range")
            role.min_roles_in_agreement = k
        return role


@dataclass
class SuccinctRoles:
    """TUF succinct hash-bin delegation: 2**bit_length bins named ``prefix-XX``."""

    keyids: list[str]
    threshold: int
    bit_length: int
    name_prefix: str
    unrecognized: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "keyids": list(self.keyids),
            "threshold": self.threshold,
            "bit_length": self.bit_length,
            "name_prefix": self.name_prefix,
            **self.unrecognized,
        }

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> SuccinctRoles:
        d = _obj(d, "succinct_roles")
        keyids = _str_list(
            _take(d, "keyids", list, "succinct_roles"), "keyids", limits, limits.max_keys
        )
        threshold = _uint(d, "threshold", "succinct_roles", low=1)
        bits = check_uint(
            _take(d, "bit_length", int, "succinct_roles"), "bit_length", low=1, high=32
        )
        prefix = _take(d, "name_prefix", str, "succinct_roles")
        _text(prefix, "name_prefix", limits, limits.max_identifier)
        return cls(keyids, threshold, bits, prefix, d)

    @property
    def suffix_len(self) -> int:
        return (self.bit_length + 3) // 4

    def role_for_target(self, path: str) -> str:
        """The bin role that ``path`` hashes into."""
        digest = hashlib.sha256(path.encode("utf-8")).digest()
        bin_no = int.from_bytes(digest[:4], "big") >> (32 - self.bit_length)
        return f"{self.name_prefix}-{bin_no:0{self.suffix_len}x}"

    def is_bin_name(self, name: str) -> bool:
        """True if ``name`` is one of this delegation's bins."""
        head, _, tail = name.rpartition("-")
        if head != self.name_prefix or len(tail) != self.suffix_len:
            return False
        try:
            return int(tail, 16) < 1 << self.bit_length
        except ValueError:
            return False


@dataclass
class Delegations:
    """The delegations of an Image-repository targets role (§5.2.3.2), in priority order."""

    keys: dict[str, Key] = field(default_factory=dict)
    roles: list[DelegatedRole] | None = field(default_factory=list)
    succinct_roles: SuccinctRoles | None = None
    unrecognized: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "keys": {k: v.to_dict() for k, v in self.keys.items()},
            **self.unrecognized,
        }
        if self.roles is not None:
            d["roles"] = [r.to_dict() for r in self.roles]
        if self.succinct_roles is not None:
            d["succinct_roles"] = self.succinct_roles.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> Delegations:
        d = _obj(d, "delegations")
        keys_d = _obj(_take(d, "keys", dict, "delegations"), "delegation keys")
        limits.check_count("delegation keys", len(keys_d), limits.max_keys)
        keys = {}
        for kid, kd in keys_d.items():
            _text(kid, "keyid", limits, limits.max_identifier)
            keys[kid] = Key.from_dict(kd, limits)
        roles_l = _opt(d, "roles", list, "delegations")
        succinct = d.pop("succinct_roles", None)
        if (roles_l is None) == (succinct is None):
            raise MalformedInput("delegations: exactly one of roles and succinct_roles")
        roles = None
        if roles_l is not None:
            limits.check_count("delegated roles", len(roles_l), limits.max_delegations)
            roles = [DelegatedRole.from_dict(r, limits) for r in roles_l]
            names = [r.name for r in roles]
            if len(set(names)) != len(names):
                raise MalformedInput("delegations: a role name appears twice")
        return cls(
            keys,
            roles,
            None if succinct is None else SuccinctRoles.from_dict(succinct, limits),
            d,
        )


@dataclass
class Targets(Signed):
    """Targets metadata (§5.2.3). On the Director it names the vehicle (§5.2.3.1)."""

    _type: ClassVar[str] = "targets"
    #: a plain dict when built in code; a :class:`TargetMap` when decoded
    targets: MutableMapping[str, TargetFile] = field(default_factory=dict)
    delegations: Delegations | None = None
    vehicle_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            **self._common_to_dict(),
            "targets": {k: v.to_dict() for k, v in self.targets.items()},
        }
        if self.delegations is not None:
            d["delegations"] = self.delegations.to_dict()
        if self.vehicle_id is not None:
            d["vehicleId"] = self.vehicle_id
        return d

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> Targets:
        d = _obj(d, "targets")
        common = cls._common_from_dict(d, limits)
        targets_d = _obj(_take(d, "targets", dict, "targets"), "targets list")
        limits.check_count("targets", len(targets_d), limits.max_targets)
        # every entry is checked now; an entry of the common shape is built on lookup
        entries: dict[str, TargetFile | dict[str, Any]] = {}
        max_string = limits.max_string
        for path, td in targets_d.items():
            if len(path) > max_string:
                limits.check_string("target path", path)
            check_target_name(path)
            entries[path] = (
                td if _plain_entry(td, limits) else TargetFile.from_dict(path, td, limits)
            )
        targets = TargetMap._decoded(entries, limits)
        dd = d.pop("delegations", None)
        vin = _opt(d, "vehicleId", str, "targets")
        if vin is not None:
            _text(vin, "vehicle id", limits, limits.max_identifier)
        return cls(
            **common,
            targets=targets,
            delegations=None if dd is None else Delegations.from_dict(dd, limits),
            vehicle_id=vin,
            unrecognized=d,
        )


ROLE_CLASSES: dict[str, type[Signed]] = {
    "root": Root,
    "timestamp": Timestamp,
    "snapshot": Snapshot,
    "targets": Targets,
}

T = TypeVar("T", bound=Signed)


@dataclass
class Metadata(Generic[T]):
    """A signed envelope: the signed part, its signatures, and the exact bytes they sign.

    ``signed_bytes`` is what the signatures cover: canonical JSON of ``signed`` for JSON,
    the DER of the signed part for DER. It is set by the decoders and by :meth:`sign`.
    """

    signed: T
    signatures: list[Signature] = field(default_factory=list)
    encoding: str = JSON
    signed_bytes: bytes | None = None
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.signed.type

    def payload(self) -> bytes:
        """The bytes a signature covers, in this envelope's encoding."""
        return codec_for(self.encoding).metadata_payload(self.signed)

    def sign(self, signer: Signer, *, append: bool = True) -> Signature:
        """Sign the signed part with ``signer``; replaces all signatures unless ``append``."""
        codec = codec_for(self.encoding)
        self.signed_bytes = codec.metadata_payload(self.signed)
        sig = Signature(
            codec.signature_keyid(signer.key.keyid),
            signer.sign(self.signed_bytes),
            codec.signature_fields(signer.key),
        )
        if not append:
            self.signatures = []
        self.signatures = [s for s in self.signatures if s.keyid != sig.keyid] + [sig]
        return sig

    def refresh_payload(self) -> bytes:
        """Recompute and remember ``signed_bytes`` (after changing ``signed``)."""
        self.signed_bytes = self.payload()
        return self.signed_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "signatures": [s.to_dict() for s in self.signatures],
            "signed": self.signed.to_dict(),
            **self.unrecognized,
        }

    def to_bytes(self, encoding: str | None = None) -> bytes:
        """Encode the whole envelope in ``encoding`` (default: this envelope's)."""
        return codec_for(encoding or self.encoding).encode_metadata(self)

    @classmethod
    def from_json(
        cls, data: bytes, limits: Limits, *, role_type: str | None = None, cap: int | None = None
    ) -> Metadata[Any]:
        """Decode JSON metadata bytes under ``limits``. ``role_type`` pins the expected type;
        ``cap`` bounds the byte length (default: the cap of ``role_type``)."""
        if cap is None:
            cap = limits.bytes_for_role(role_type) if role_type else None
        doc = loads(data, limits, cap=cap, what=f"{role_type or 'metadata'} JSON")
        # a tree from loads holds only JSON types, so its canonical form can be taken at
        # C speed (canonical_decoded); from_dict takes any dict and uses canonical()
        return cls._from_dict(doc, limits, role_type, canonical_decoded)

    @classmethod
    def from_dict(cls, doc: Any, limits: Limits, *, role_type: str | None = None) -> Metadata[Any]:
        """Build from a decoded JSON document; sets ``signed_bytes`` to its canonical form."""
        return cls._from_dict(doc, limits, role_type, canonical)

    @classmethod
    def _from_dict(
        cls,
        doc: Any,
        limits: Limits,
        role_type: str | None,
        canon: Callable[[Any], bytes],
    ) -> Metadata[Any]:
        doc = _obj(doc, "metadata")
        sigs = _take(doc, "signatures", list, "metadata")
        limits.check_count("signatures", len(sigs), limits.max_signatures)
        signed_d = _obj(_take(doc, "signed", dict, "metadata"), "signed")
        t = signed_d.get("_type")
        if not isinstance(t, str) or t not in ROLE_CLASSES:
            raise MalformedInput(f"unknown metadata type {str(t)[:32]!r}")
        if role_type is not None and t != role_type:
            raise MalformedInput(f"expected {role_type} metadata, got {t}", role=role_type)
        signed_bytes = canon(signed_d)
        signed = ROLE_CLASSES[t].from_dict(signed_d, limits)
        # the role is known only now, at run time: Metadata[Signed], returned as Metadata[Any]
        return Metadata(
            signed,
            signatures_from_dicts(sigs, limits),
            JSON,
            signed_bytes,
            doc,
        )


def decode(
    data: bytes,
    limits: Limits,
    *,
    encoding: str = JSON,
    role_type: str | None = None,
    cap: int | None = None,
) -> Metadata[Any]:
    """Decode metadata in ``encoding`` (:func:`uptane.codec.codec_for`); the one entry point
    transports should use. The cyclic garbage collector is paused meanwhile for large
    inputs (:mod:`uptane.allocation`: a decoder makes no cycles)."""
    with collector_paused(len(data)):
        return codec_for(encoding).decode_metadata(data, limits, role_type=role_type, cap=cap)


# --- TAP 4 map file (§5.2.6) -----------------------------------------------------------


@dataclass
class Mapping:
    """One rule of the map file: targets matching ``paths`` need ``threshold`` of
    ``repositories`` to agree; ``terminating`` stops the search at this rule."""

    paths: list[str]
    repositories: list[str]
    threshold: int = 2
    terminating: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "paths": list(self.paths),
            "repositories": list(self.repositories),
            "threshold": self.threshold,
            "terminating": self.terminating,
        }


@dataclass
class MapFile:
    """The TAP 4 repository mapping (§5.2.6). The Uptane default: every path needs both the
    Director and the Image repository."""

    repositories: dict[str, list[str]]
    mapping: list[Mapping]

    @classmethod
    def default(cls, director_url: str = "", image_url: str = "") -> MapFile:
        return cls(
            {"director": [director_url], "image": [image_url]},
            [Mapping(["*"], ["director", "image"], 2, True)],
        )

    def to_dict(self) -> dict[str, Any]:
        return {"repositories": self.repositories, "mapping": [m.to_dict() for m in self.mapping]}

    def to_json(self) -> bytes:
        return dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes, limits: Limits) -> MapFile:
        """The map file in JSON, bounded by ``limits.map_file_bytes``."""
        return cls.from_dict(
            loads(data, limits, cap=limits.map_file_bytes, what="map file"), limits
        )

    @classmethod
    def from_dict(cls, doc: Any, limits: Limits) -> MapFile:
        """The map file from its JSON shape (any encoding's decoder gives it), checked:
        every rule names defined repositories with a threshold in range."""
        doc = _obj(doc, "map file")
        repos_d = _obj(_take(doc, "repositories", dict, "map file"), "map repositories")
        limits.check_count("map repositories", len(repos_d), limits.max_roles)
        repos = {}
        for name, urls in repos_d.items():
            _text(name, "repository name", limits, limits.max_identifier)
            repos[name] = _str_list(urls, "repository urls", limits, limits.max_paths)
        maps_l = _take(doc, "mapping", list, "map file")
        limits.check_count("map rules", len(maps_l), limits.max_delegations)
        mapping = []
        for md in maps_l:
            md = _obj(md, "mapping")
            paths = _str_list(
                _take(md, "paths", list, "mapping"), "paths", limits, limits.max_paths
            )
            names = _str_list(
                _take(md, "repositories", list, "mapping"), "repositories", limits, limits.max_roles
            )
            threshold = _uint(md, "threshold", "mapping", low=1)
            terminating = _opt(md, "terminating", bool, "mapping") or False
            unknown = [n for n in names if n not in repos]
            if unknown:
                raise MalformedInput(f"mapping names unknown repositories {unknown}")
            if not 1 <= threshold <= len(names):
                raise MalformedInput("mapping threshold out of range")
            mapping.append(Mapping(paths, names, threshold, terminating))
        return cls(repos, mapping)
