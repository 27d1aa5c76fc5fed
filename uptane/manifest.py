"""ECU version reports (§5.4.2.1.2) and vehicle version manifests (§5.4.2.1.1): built,
signed and checked, in canonical JSON and in DER (docs/der-profile.md, ECUModule).

- :class:`EcuVersionReport`: what one ECU says it runs. It names the ECU, the installed
  image (filename, length, hashes), its release counter, the attack indicator (an
  :mod:`uptane.errors` attack name and message, or None), the latest verified secure time,
  and a value that changes every cycle: a ``nonce`` (bytes) or a ``counter`` (int), exactly
  one of them.
- :class:`VehicleVersionManifest`: what the Primary sends the Director: the vehicle id, the
  Primary's ECU id, and every ECU's *signed* report (each its own envelope, so the Director
  checks each with that ECU's key), plus an optional attack indicator of the Primary and,
  for each ECU the Primary could not reach, an :class:`UnreachableEcu` entry (signed by the
  Primary as part of its manifest: the ECU is represented, with no version claim).
- :class:`SignedManifest`: the envelope ``{"signed": ..., "signatures": [...]}``, the same
  shape as metadata. JSON signatures cover the canonical JSON of ``signed``; DER signatures
  cover the DER of the signed part. ``signed_bytes`` is what was signed.

Decoding (:func:`decode_report`, :func:`decode_vehicle_manifest`,
:meth:`SignedManifest.from_bytes`) is bounded by ``limits.manifest_bytes``,
``limits.max_ecus`` and the string and count caps, and strict: the decoded value must
write back to exactly what was signed, so a checked manifest can be stored and forwarded.

Checks: :func:`check_report` and :func:`check_vehicle_manifest` verify signatures and
identities only; :func:`check_report_freshness` is the Director's pure anti-replay check
(§5.3.2.1: reject a reused nonce or a counter that did not increase, and a report time
outside the accepted window).

JSON shapes (field names are this project's; DER uses the ASN.1 names)::

    ECU version report signed part
    {"_type": "ecu_version_report", "ecu_id": str,
     "installed_image": {"filename": str, "length": int, "hashes": {alg: hex}},
     "latest_time": "YYYY-MM-DDTHH:MM:SSZ", "previous_time"?: same,
     "release_counter"?: int, "attack"?: str, "nonce"?: hex | "counter"?: int, ...}

    vehicle version manifest signed part
    {"_type": "vehicle_version_manifest", "vehicle_id": str, "primary_id": str,
     "ecu_version_reports": [{"signed": ..., "signatures": [...]}, ...], "attack"?: str,
     "unreachable_ecus"?: [{"ecu_id": str, "reason": str,
                            "last_seen"?: "YYYY-MM-DDTHH:MM:SSZ"}, ...], ...}

``unreachable_ecus`` is omitted when every ECU answered (an empty list is refused, so that
one manifest has one encoding); ``last_seen`` is the last time the ECU answered the
Primary, omitted if it never did.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Generic, TypeVar

from uptane.encoding.registry import JSON, codec_for
from uptane.errors import (
    BadEcuId,
    MalformedInput,
    NonCanonicalEncoding,
    ReplayAttack,
    ReportTimeSkew,
    UptaneError,
    VehicleMismatch,
)
from uptane.identity import ImageIdentity
from uptane.keys import Key, Signer
from uptane.limits import Limits
from uptane.metadata import (
    Signature,
    TargetFile,
    _hashes,
    _nonneg,
    _obj,
    _opt,
    _take,
    _text,
    format_expires,
    parse_expires,
)
from uptane.policy import check_hex, check_target_name
from uptane.signatures import check_single

#: the ``_type`` of an ECU version report's and of a vehicle version manifest's signed part
ECU_REPORT = "ecu_version_report"
VEHICLE_MANIFEST = "vehicle_version_manifest"
#: the longest nonce accepted, in bytes
MAX_NONCE_BYTES = 64


def attack_indicator(error: UptaneError, max_length: int = 1024) -> str:
    """The attack indicator a report carries for ``error``: ``"<attack>: <message>"`` on one
    line of printable ASCII (whitespace runs, newlines included, become one space; any
    other character is escaped as ``\\xNN``/``\\uNNNN``, since the Uptane modules write it as
    a VisibleString), at most ``max_length`` characters."""
    text = " ".join(f"{error.attack}: {error.message}".split())
    visible = (c if " " <= c <= "~" else c.encode("unicode_escape").decode("ascii") for c in text)
    return "".join(visible)[:max_length]


_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")


def _parse_time(value: str) -> datetime:
    """:func:`parse_expires` without strptime for the canonical form (a third of a
    manifest's decode at the Director); anything else, and any error, goes through it."""
    m = _TIME.fullmatch(value)
    if m is not None:
        try:
            year, month, day, hour, minute, second = map(int, m.groups())
            return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        except ValueError:
            pass
    return parse_expires(value)


def _format_time(value: datetime) -> str:
    """:func:`format_expires`, without strftime for a UTC time (years from 1000: glibc's
    strftime writes earlier years unpadded, and the canonical check relies on that)."""
    if value.tzinfo is UTC and value.year >= 1000:
        return (
            f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}Z"
        )
    return format_expires(value)


def _time(d: dict[str, Any], key: str, what: str, required: bool) -> datetime | None:
    value = _take(d, key, str, what) if required else _opt(d, key, str, what)
    if value is None:
        return None
    parsed = _parse_time(value)
    if _format_time(parsed) != value:
        raise NonCanonicalEncoding(f"{what}: {key} is not written as YYYY-MM-DDTHH:MM:SSZ")
    return parsed


def _ident(d: dict[str, Any], key: str, what: str, limits: Limits) -> str:
    value = _take(d, key, str, what)
    if not value:
        raise MalformedInput(f"{what}: {key} must not be empty")
    return _text(value, f"{what} {key}", limits, limits.max_identifier)


def _attack(d: dict[str, Any], what: str, limits: Limits) -> str | None:
    value = _opt(d, "attack", str, what)
    if value is not None:
        _text(value, f"{what} attack indicator", limits)
    return value


@dataclass
class InstalledImage:
    """The image an ECU runs: filename, length and hashes, as its targets entry lists them."""

    filename: str
    length: int
    hashes: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"filename": self.filename, "length": self.length, "hashes": dict(self.hashes)}

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> InstalledImage:
        d = _obj(d, "installed_image")
        filename = _take(d, "filename", str, "installed_image")
        limits.check_string("installed filename", filename)
        if filename:  # "" is an ECU that runs nothing the Director knows yet
            check_target_name(filename, "installed_image filename")
        length = _nonneg(_take(d, "length", int, "installed_image"), "installed_image length")
        hashes = _hashes(_take(d, "hashes", dict, "installed_image"), "installed_image", limits)
        if not hashes:
            raise MalformedInput("installed_image: at least one hash is required")
        if d:
            raise MalformedInput(f"installed_image: unknown fields {sorted(d)[:4]}")
        return cls(filename, length, hashes)

    def identity(self) -> ImageIdentity:
        """The image this report names (:mod:`uptane.identity`)."""
        return ImageIdentity(self.filename, self.length, self.hashes)

    @classmethod
    def from_target(cls, target: TargetFile) -> InstalledImage:
        """The installed image described by the targets entry it was installed from."""
        return cls(target.path, target.length, dict(target.hashes))


@dataclass
class EcuVersionReport:
    """The signed part of an ECU version report (§5.4.2.1.2)."""

    _type: ClassVar[str] = ECU_REPORT
    ecu_id: str
    installed: InstalledImage
    latest_time: datetime
    nonce: bytes | None = None
    counter: int | None = None
    release_counter: int | None = None
    attack: str | None = None
    previous_time: datetime | None = None
    unrecognized: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # §5.4.2.1.2: a nonce or a counter that changes every cycle, exactly one of them
        if (self.nonce is None) == (self.counter is None):
            raise MalformedInput("an ECU version report has exactly one of nonce and counter")

    @property
    def type(self) -> str:
        return self._type

    @property
    def attack_name(self) -> str | None:
        """The attack named by the indicator (the text before the first colon)."""
        return None if self.attack is None else self.attack.split(":", 1)[0].strip()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            **self.unrecognized,
            "_type": self._type,
            "ecu_id": self.ecu_id,
            "installed_image": self.installed.to_dict(),
            "latest_time": _format_time(self.latest_time),
        }
        if self.previous_time is not None:
            d["previous_time"] = _format_time(self.previous_time)
        if self.release_counter is not None:
            d["release_counter"] = self.release_counter
        if self.attack is not None:
            d["attack"] = self.attack
        if self.nonce is not None:
            d["nonce"] = self.nonce.hex()
        if self.counter is not None:
            d["counter"] = self.counter
        return d

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> EcuVersionReport:
        what = "ECU version report"
        d = _obj(d, what)
        if _take(d, "_type", str, what) != ECU_REPORT:
            raise MalformedInput(f"{what}: wrong _type")
        ecu_id = _ident(d, "ecu_id", what, limits)
        installed = InstalledImage.from_dict(_take(d, "installed_image", dict, what), limits)
        latest = _time(d, "latest_time", what, True)
        previous = _time(d, "previous_time", what, False)
        rc = _opt(d, "release_counter", int, what)
        if rc is not None:
            _nonneg(rc, f"{what} release_counter")
        attack = _attack(d, what, limits)
        nonce_hex = _opt(d, "nonce", str, what)
        counter = _opt(d, "counter", int, what)
        nonce = None
        if nonce_hex is not None:
            limits.check_string("nonce", nonce_hex, 2 * MAX_NONCE_BYTES)
            nonce = check_hex(nonce_hex, f"{what}: nonce")
            if not nonce:
                raise MalformedInput(f"{what}: the nonce must not be empty")
        if counter is not None:
            _nonneg(counter, f"{what} counter")
        if (nonce is None) == (counter is None):
            raise MalformedInput(f"{what}: exactly one of nonce and counter is required")
        assert latest is not None
        return cls(ecu_id, installed, latest, nonce, counter, rc, attack, previous, d)


@dataclass
class UnreachableEcu:
    """An ECU the Primary could not reach this cycle, as it names it inside its own signed
    manifest: the ECU's id, why (one line, e.g. ``"timeout: no answer on the serial link"``)
    and the last time the ECU answered (None: never). It represents the ECU in the manifest
    (§5.3.2.1) without any claim about what the ECU runs."""

    ecu_id: str
    reason: str
    last_seen: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ecu_id": self.ecu_id, "reason": self.reason}
        if self.last_seen is not None:
            d["last_seen"] = _format_time(self.last_seen)
        return d

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> UnreachableEcu:
        what = "unreachable ECU"
        d = _obj(d, what)
        ecu_id = _ident(d, "ecu_id", what, limits)
        reason = _take(d, "reason", str, what)
        if not reason:
            raise MalformedInput(f"{what}: reason must not be empty")
        _text(reason, f"{what} reason", limits)
        last_seen = _time(d, "last_seen", what, False)
        if d:
            raise MalformedInput(f"{what}: unknown fields {sorted(d)[:4]}")
        return cls(ecu_id, reason, last_seen)


def _unreachable(
    d: dict[str, Any], reports: list[SignedManifest[EcuVersionReport]], limits: Limits
) -> list[UnreachableEcu]:
    """The manifest's ``unreachable_ecus`` (absent: none), bounded with the reports by
    ``limits.max_ecus``; an ECU named twice, or both reported and unreachable, is refused."""
    what = "vehicle version manifest"
    docs = _opt(d, "unreachable_ecus", list, what)
    if docs is None:
        return []
    if not docs:
        raise MalformedInput(f"{what}: omit unreachable_ecus when every ECU answered")
    limits.check_count("ECUs in a manifest", len(reports) + len(docs), limits.max_ecus)
    seen = {r.signed.ecu_id for r in reports}
    out: list[UnreachableEcu] = []
    for doc in docs:
        entry = UnreachableEcu.from_dict(doc, limits)
        if entry.ecu_id in seen:  # each ECU is represented once (§5.3.2.1)
            raise MalformedInput(f"{what}: ECU {entry.ecu_id[:64]!r} is named twice")
        seen.add(entry.ecu_id)
        out.append(entry)
    return out


@dataclass
class VehicleVersionManifest:
    """The signed part of a vehicle version manifest (§5.4.2.1.1)."""

    _type: ClassVar[str] = VEHICLE_MANIFEST
    vehicle_id: str
    primary_id: str
    reports: list[SignedManifest[EcuVersionReport]] = field(default_factory=list)
    attack: str | None = None
    unrecognized: dict[str, Any] = field(default_factory=dict)
    #: the ECUs the Primary could not reach (each in no report)
    unreachable: list[UnreachableEcu] = field(default_factory=list)

    @property
    def type(self) -> str:
        return self._type

    def report_for(self, ecu_id: str) -> SignedManifest[EcuVersionReport] | None:
        """The signed report of ``ecu_id``, if the manifest has one."""
        for r in self.reports:
            if r.signed.ecu_id == ecu_id:
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            **self.unrecognized,
            "_type": self._type,
            "vehicle_id": self.vehicle_id,
            "primary_id": self.primary_id,
            "ecu_version_reports": [r.to_dict() for r in self.reports],
        }
        if self.attack is not None:
            d["attack"] = self.attack
        if self.unreachable:
            d["unreachable_ecus"] = [u.to_dict() for u in self.unreachable]
        return d

    @classmethod
    def from_dict(cls, d: Any, limits: Limits, *, encoding: str = JSON) -> VehicleVersionManifest:
        """Build from the JSON shape; nested reports get ``signed_bytes`` in ``encoding``."""
        what = "vehicle version manifest"
        d = _obj(d, what)
        if _take(d, "_type", str, what) != VEHICLE_MANIFEST:
            raise MalformedInput(f"{what}: wrong _type")
        vehicle_id = _ident(d, "vehicle_id", what, limits)
        primary_id = _ident(d, "primary_id", what, limits)
        docs = _take(d, "ecu_version_reports", list, what)
        limits.check_count("ECU version reports", len(docs), limits.max_ecus)
        reports: list[SignedManifest[EcuVersionReport]] = []
        seen: set[str] = set()
        for doc in docs:
            report = SignedManifest.from_dict(doc, limits, kind=ECU_REPORT, encoding=encoding)
            ecu_id = report.signed.ecu_id
            if ecu_id in seen:  # §5.4.2.1.1: one report per ECU
                raise MalformedInput(f"{what}: two reports for ECU {ecu_id[:64]!r}")
            seen.add(ecu_id)
            reports.append(report)
        attack = _attack(d, what, limits)
        unreachable = _unreachable(d, reports, limits)
        return cls(vehicle_id, primary_id, reports, attack, d, unreachable)


M = TypeVar("M", EcuVersionReport, VehicleVersionManifest)

_KINDS: dict[str, Any] = {ECU_REPORT: EcuVersionReport, VEHICLE_MANIFEST: VehicleVersionManifest}


@dataclass
class SignedManifest(Generic[M]):
    """A signed report or manifest, with the exact bytes its signatures cover."""

    signed: M
    signatures: list[Signature] = field(default_factory=list)
    encoding: str = JSON
    signed_bytes: bytes | None = None

    @property
    def kind(self) -> str:
        return self.signed.type

    def payload(self, encoding: str | None = None) -> bytes:
        """The bytes a signature covers in ``encoding`` (default: this envelope's)."""
        return codec_for(encoding or self.encoding).manifest_payload(self.signed)

    def sign(self, signer: Signer, *, append: bool = False) -> Signature:
        """Sign the signed part; replaces earlier signatures unless ``append``."""
        codec = codec_for(self.encoding)
        self.signed_bytes = codec.manifest_payload(self.signed)
        key = signer.key
        sig = Signature(
            codec.signature_keyid(key.keyid),
            signer.sign(self.signed_bytes),
            codec.signature_fields(key),
        )
        kept: list[Signature] = (
            [s for s in self.signatures if s.keyid != sig.keyid] if append else []
        )
        self.signatures = [*kept, sig]
        return sig

    def to_dict(self) -> dict[str, Any]:
        return {
            "signed": self.signed.to_dict(),
            "signatures": [s.to_dict() for s in self.signatures],
        }

    def to_bytes(self, encoding: str | None = None) -> bytes:
        """The whole envelope in canonical JSON or DER (default: this envelope's encoding).
        Signatures made in one encoding do not verify in the other."""
        return codec_for(encoding or self.encoding).encode_manifest(self)

    def verify(self, key: Key) -> None:
        """Raise :class:`~uptane.errors.BadSignature` unless ``key`` signed this."""
        payload = self.signed_bytes if self.signed_bytes is not None else self.payload()
        what = self.kind.replace("_", " ")
        check_single(payload, self.signatures, key, what)

    @classmethod
    def from_dict(
        cls, doc: Any, limits: Limits, *, kind: str | None = None, encoding: str = JSON
    ) -> SignedManifest[Any]:
        """Build from the JSON shape of an envelope. For JSON, ``signed_bytes`` is the
        canonical JSON of the ``signed`` object received; for DER, the DER of the signed
        part (the DER decoder checks it equals the input)."""
        doc = _obj(doc, "manifest")
        sigs = _take(doc, "signatures", list, "manifest")
        signed_d = _take(doc, "signed", dict, "manifest")
        if doc:
            raise MalformedInput(f"manifest envelope: unknown fields {sorted(doc)[:4]}")
        limits.check_count("signatures", len(sigs), limits.max_signatures)
        t = signed_d.get("_type")
        if not isinstance(t, str) or t not in _KINDS or (kind is not None and t != kind):
            raise MalformedInput(f"expected a {kind or 'manifest'}, got {str(t)[:40]!r}")
        if t == VEHICLE_MANIFEST:
            signed: Any = VehicleVersionManifest.from_dict(signed_d, limits, encoding=encoding)
        else:
            signed = EcuVersionReport.from_dict(signed_d, limits)
        out = cls(signed, [Signature.from_dict(s, limits) for s in sigs], encoding)
        out.signed_bytes = codec_for(encoding).received_manifest_payload(signed, signed_d)
        return out

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        limits: Limits,
        encoding: str = JSON,
        *,
        kind: str | None = None,
        cap: int | None = None,
    ) -> SignedManifest[Any]:
        """Decode a report or manifest under ``limits`` (``cap`` defaults to
        ``limits.manifest_bytes``); ``kind`` pins ECU_REPORT or VEHICLE_MANIFEST."""
        cap = limits.manifest_bytes if cap is None else cap
        return codec_for(encoding).decode_manifest(data, limits, kind=kind, cap=cap)


def decode_report(
    data: bytes, limits: Limits, encoding: str = JSON
) -> SignedManifest[EcuVersionReport]:
    """Decode one signed ECU version report (from a Secondary, or stored)."""
    return SignedManifest.from_bytes(data, limits, encoding, kind=ECU_REPORT)


def decode_vehicle_manifest(
    data: bytes, limits: Limits, encoding: str = JSON
) -> SignedManifest[VehicleVersionManifest]:
    """Decode one signed vehicle version manifest (at the Director)."""
    return SignedManifest.from_bytes(data, limits, encoding, kind=VEHICLE_MANIFEST)


def build_vehicle_manifest(
    vehicle_id: str,
    primary_id: str,
    reports: list[SignedManifest[EcuVersionReport]],
    signer: Signer,
    *,
    encoding: str = JSON,
    attack: str | None = None,
    unreachable: Sequence[UnreachableEcu] = (),
) -> SignedManifest[VehicleVersionManifest]:
    """§5.4.2.1.1: the Primary wraps every ECU's signed report (its own included) and signs.
    Reports are carried as signed, in the manifest's encoding. ``unreachable`` names the
    ECUs the Primary could not reach, inside what it signs (§5.3.2.1: every ECU is
    represented, by a report or by such an entry)."""
    for r in reports:
        if r.encoding != encoding:
            raise MalformedInput(
                f"report of {r.signed.ecu_id!r} is signed in {r.encoding}, manifest is {encoding}"
            )
    body = VehicleVersionManifest(vehicle_id, primary_id, list(reports), attack)
    body.unreachable = list(unreachable)
    vvm = SignedManifest(body)
    vvm.encoding = encoding
    vvm.sign(signer)
    return vvm


# --- checks ----------------------------------------------------------------------------------


def check_report(
    report: SignedManifest[EcuVersionReport],
    key: Key,
    *,
    expected_ecu_id: str,
    expected_nonce: bytes | None = None,
) -> EcuVersionReport:
    """Signature and identity of one ECU version report (§5.3.2.1: each report is signed by
    its ECU's key). ``expected_nonce``, when given, is the nonce this cycle handed out.
    Freshness policy is :func:`check_report_freshness`."""
    body = report.signed
    if not isinstance(body, EcuVersionReport):
        raise MalformedInput("not an ECU version report")
    if body.ecu_id != expected_ecu_id:
        raise BadEcuId(f"report names ECU {body.ecu_id[:64]!r}, expected {expected_ecu_id!r}")
    report.verify(key)  # §5.3.2.1: each report verifies with its ECU's key
    if expected_nonce is not None and body.nonce != expected_nonce:
        raise ReplayAttack(f"report of {expected_ecu_id!r} does not carry this cycle's nonce")
    return body


def check_vehicle_manifest(
    manifest: SignedManifest[VehicleVersionManifest],
    primary_key: Key,
    *,
    expected_vehicle_id: str,
    expected_primary_id: str | None = None,
) -> VehicleVersionManifest:
    """Signature and identity of a vehicle version manifest (§5.3.2.1: the Primary's
    signature, the vehicle it names). Each report inside is checked with
    :func:`check_report` against the inventory's key for its ECU."""
    body = manifest.signed
    if not isinstance(body, VehicleVersionManifest):
        raise MalformedInput("not a vehicle version manifest")
    # §5.3.2.1: the manifest names this vehicle and its Primary, and the Primary signed it
    if body.vehicle_id != expected_vehicle_id:
        raise VehicleMismatch(
            f"manifest names vehicle {body.vehicle_id[:64]!r}, expected {expected_vehicle_id!r}"
        )
    if expected_primary_id is not None and body.primary_id != expected_primary_id:
        raise BadEcuId(
            f"manifest names Primary {body.primary_id[:64]!r}, expected {expected_primary_id!r}"
        )
    manifest.verify(primary_key)
    return body


def check_manifest_against_inventory(
    manifest: SignedManifest[VehicleVersionManifest],
    *,
    vehicle_id: str,
    primary_id: str,
    ecu_keys: Mapping[str, Key],
) -> tuple[VehicleVersionManifest, dict[str, EcuVersionReport]]:
    """§5.3.2.1: check a vehicle version manifest against the Director's inventory of the
    vehicle, ``ecu_keys`` (every registered ECU serial -> its public key, the Primary's
    included). The manifest must name this vehicle and its Primary and carry the
    Primary's signature; every report must come from a registered ECU, once, signed by
    that ECU's key; and every registered ECU must be represented exactly once: by its
    report, or by an entry of ``unreachable_ecus`` (signed by the Primary with the rest of
    its manifest), never both and never by anything else. The Primary is never
    unreachable: it signed the manifest. Returns the manifest body (``body.unreachable``:
    the unreachable entries) and the checked reports by ECU serial; raises the error
    naming what failed."""
    primary_key = ecu_keys.get(primary_id)
    if primary_key is None:
        raise BadEcuId(f"Primary {primary_id[:64]!r} is not registered in vehicle {vehicle_id}")
    body = check_vehicle_manifest(
        manifest, primary_key, expected_vehicle_id=vehicle_id, expected_primary_id=primary_id
    )
    reports: dict[str, EcuVersionReport] = {}
    for signed in body.reports:
        serial = signed.signed.ecu_id
        key = ecu_keys.get(serial)
        # §5.3.2.1: a report from an ECU the inventory does not list is refused
        if key is None:
            raise BadEcuId(f"ECU {serial[:64]!r} is not registered in vehicle {vehicle_id}")
        # §5.3.2.1: each ECU reports exactly once
        if serial in reports:
            raise BadEcuId(f"ECU {serial[:64]!r} reports twice")
        # §5.3.2.1: each report carries the signature of the ECU it names
        reports[serial] = check_report(signed, key, expected_ecu_id=serial)
    unreachable: set[str] = set()
    for entry in body.unreachable:
        serial = entry.ecu_id
        # §5.3.2.1: an unreachable entry represents a registered ECU, once, and never the
        # Primary that signed the manifest
        if serial not in ecu_keys:
            raise BadEcuId(f"unreachable ECU {serial[:64]!r} is not registered in {vehicle_id}")
        if serial == primary_id:
            raise BadEcuId(f"the Primary {serial[:64]!r} signed this manifest: not unreachable")
        if serial in reports or serial in unreachable:
            raise BadEcuId(f"ECU {serial[:64]!r} is represented twice")
        unreachable.add(serial)
    # §5.3.2.1: every ECU in the inventory is represented (a report, or unreachable)
    missing = sorted(set(ecu_keys) - set(reports) - unreachable)
    if missing:
        raise BadEcuId(
            f"no report from registered ECU(s) {missing[:8]}, and the Primary did not name"
            " them unreachable"
        )
    return body, reports


def check_report_freshness(
    report: EcuVersionReport,
    seen: Collection[bytes] | int | None,
    now: datetime,
    max_skew: timedelta,
    *,
    earliest: datetime | None = None,
    horizon: datetime | None = None,
    last_time: datetime | None = None,
) -> None:
    """§5.3.2.1 (Director, anti-replay): refuse a report whose nonce was seen before
    (``seen``: the nonces already used by this ECU) or whose counter does not exceed the
    last accepted one (``seen``: that counter); ``None`` means no earlier report. The
    report's latest verified time must lie within ``max_skew`` of ``now`` (Standard 2.1.0:
    the Director SHOULD check the time in the report), or, for a manifest carried back
    from an offline vehicle, between ``earliest`` and ``max_skew`` past ``now``; and a
    nonce report must not be older than ``horizon``, before which the Director no longer
    keeps the nonces it saw (docs/retention.md). Records nothing (the caller stores the
    nonce or counter once the whole manifest is accepted).

    A reused nonce or a counter that did not increase is a :class:`ReplayAttack`; so is a
    report outside the window that is older than ``last_time`` (the time of the last
    report accepted from this ECU, whose verified time only moves forward: a stale report
    sent again). Any other report outside the window is :class:`ReportTimeSkew`: a wrong
    clock, not an attack."""
    who = report.ecu_id[:64]
    # §5.3.2.1: a reused nonce or a counter that did not increase is a replay
    if report.nonce is not None:
        if isinstance(seen, int):
            raise ReplayAttack(f"ECU {who!r} sent a nonce where a counter was expected")
        if seen is not None and report.nonce in seen:
            raise ReplayAttack(f"ECU {who!r} reused a nonce")
    else:
        if seen is not None and not isinstance(seen, int):
            raise ReplayAttack(f"ECU {who!r} sent a counter where a nonce was expected")
        assert report.counter is not None
        if seen is not None and report.counter <= seen:
            raise ReplayAttack(
                f"ECU {who!r} counter {report.counter} does not exceed the last one, {seen}"
            )
    # §5.3.2.1 (2.1.0): the time in the report must be near now; a manifest carried back
    # from an offline vehicle (issue 18) may be older, down to ``earliest``; a nonce report
    # is never older than ``horizon`` (its nonce may have been pruned: docs/retention.md)
    low = now - max_skew if earliest is None else earliest
    pruned = horizon is not None and report.nonce is not None and horizon > low
    if horizon is not None and pruned:
        low = horizon
    if low <= report.latest_time <= now + max_skew:
        return
    if earliest is None and not pruned:
        window = f"{max_skew} of {format_expires(now)}"
    else:
        window = f"{format_expires(low)} .. {format_expires(now + max_skew)}"
    what = f"ECU {who!r} report time {format_expires(report.latest_time)} is outside {window}"
    if last_time is not None and report.latest_time < last_time:
        raise ReplayAttack(
            f"{what}, and older than its last report accepted ({format_expires(last_time)}):"
            " a stale report sent again"
        )
    why = " (nonce reports older than the retention window are refused)" if pruned else ""
    raise ReportTimeSkew(
        f"{what}{why}: the ECU's clock (its last verified time) or the Director's is wrong,"
        " or the manifest was held back; give the vehicle fresh signed time and check the"
        " Director's clock"
    )
