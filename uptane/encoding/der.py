"""Uptane metadata and manifests in strict, bounded DER (the profile in docs/der-profile.md).

The schema follows the uptane/asn1 modules (CommonModule, MetadataModule, RootModule,
TargetsModule, SnapshotModule, TimestampModule, ECUModule), extended for Standard 2.x so
that it carries everything the metadata model carries. The schema is written as asn1crypto
classes; this module reads and writes DER by them itself and converts between DER and the
*JSON shape* of a document (what ``to_dict()`` returns), so the model's ``from_dict`` does
every field check and every :class:`~uptane.limits.Limits` cap exactly as on the JSON path.

Public API: :func:`encode_signed` (the bytes DER signatures cover), :func:`encode_metadata`,
:func:`decode_metadata` (used by ``uptane.metadata``); :func:`encode_manifest_signed`,
:func:`encode_manifest`, :func:`decode_manifest` (used by ``uptane.manifest``);
:func:`check_structure` (the pre-parse walk), :func:`require_same` and
:func:`require_encodes_to`.

Decoding is strict and bounded, in this order:

1. the byte cap (:class:`~uptane.errors.EndlessDataAttack`);
2. an iterative walk over the raw TLV structure, before anything is built: no
   indefinite or non-minimal lengths, no lengths past the buffer, no trailing bytes, no
   high tag numbers, nesting at most ``limits.max_depth``, element counts capped;
3. a reader walks the TLVs by the schema below (its asn1crypto classes describe it) into
   plain values: dicts, lists, ints, bytes, strings; no asn1crypto parse tree, which kept
   an object and a copy of the contents per value (see :func:`_read`);
4. conversion to the JSON shape, the JSON path's generic checks on it (depth, every
   string, item count) and the model's ``from_dict`` (field checks and count caps);
5. the decoded value, re-encoded, must give the input bytes again (for metadata compared
   piece by piece against the input, :func:`require_encodes_to`): this refuses every
   BER-only form (non-minimal INTEGER, BOOLEAN other than 0xFF, DEFAULT values spelled
   out, unknown extra fields) and gives every value exactly one accepted encoding (maps
   sorted by key, the compact alternative wherever it applies, empty things left out).

Encoding walks the same asn1crypto schema classes but writes DER directly (:func:`_der`):
asn1crypto's own object building and dumping costs time superlinear in the size of large
targets metadata.

Anything wrong raises :class:`~uptane.errors.MalformedInput` (or a subclass:
:class:`~uptane.errors.NonCanonicalEncoding`, :class:`~uptane.errors.LimitExceeded`) or
:class:`~uptane.errors.EndlessDataAttack`; no asn1crypto, ``ValueError`` or
``RecursionError`` escapes.
"""

# mypy: disallow-subclassing-any=False
# (the schema classes subclass asn1crypto's, which has no type information)

from __future__ import annotations

import base64
import binascii
import calendar
import copy
import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from asn1crypto import core

from uptane.encoding.json import canonical, check_tree, loads
from uptane.errors import (
    EndlessDataAttack,
    LimitExceeded,
    MalformedInput,
    NonCanonicalEncoding,
    UptaneError,
)
from uptane.limits import Limits
from uptane.manifest import ECU_REPORT as ECU_REPORT_TYPE
from uptane.manifest import VEHICLE_MANIFEST as VVM_TYPE
from uptane.metadata import (
    COMPACT_DER,
    ROLE_CLASSES,
    Metadata,
    Signed,
    Targets,
    format_expires,
    parse_expires,
    signatures_from_dicts,
)
from uptane.policy import check_document_string

#: a schema class below: a subclass of an asn1crypto type. asn1crypto has no type
#: information, so a class's ``_fields``, ``_child_spec`` and ``_alternatives`` are untyped
Spec = type[Any]

# --- the ASN.1 profile (see docs/der-profile.md) -------------------------------------------

#: context tag of the ``unrecognized`` field, the same in every SEQUENCE that has one
UNRECOGNIZED_TAG = 15
#: the largest INTEGER content accepted: 8 bytes, a signed 64-bit value (the integer
#: policy, uptane/policy.py; 9 bytes let through values up to 2**71, issue 15)
MAX_INTEGER_BYTES = 8
#: the DEFAULT of ``specVersion``; fixed forever, whatever the model's SPEC_VERSION becomes
DEFAULT_SPEC_VERSION = "1.0.31"
#: latest ``expires``/time value: 9999-12-31T23:59:59Z as POSIX seconds
MAX_TIME = 253402300799

_OPT: dict[str, Any] = {"optional": True}


def _tag(n: int) -> dict[str, Any]:
    return {"implicit": n, "optional": True}


_UNREC = ("unrecognized", core.OctetString, _tag(UNRECOGNIZED_TAG))


class HexString(core.Choice):
    """A hex string of the model: raw bytes when it is lowercase even-length hex, else text."""

    _alternatives = [("raw", core.OctetString), ("text", core.UTF8String)]


class HexStrings(core.SequenceOf):
    _child_spec = HexString


class Utf8Strings(core.SequenceOf):
    _child_spec = core.UTF8String


HASH_NAMES = {
    0: "sha224",
    1: "sha256",
    2: "sha384",
    3: "sha512",
    4: "sha512_224",
    5: "sha512_256",
    6: "sha3_256",
    7: "sha3_512",
    8: "blake2b",
    9: "blake2s",
}
_HASH_ALTERNATIVES = frozenset(HASH_NAMES.values())
OTHER_HASH_TAG = 10


class OtherHash(core.Sequence):
    _fields = [("function", core.UTF8String), ("digest", HexString)]


class HashValue(core.Choice):
    """One digest; the context tag names the algorithm (``HASH_NAMES``), so the common
    case costs no algorithm field. Unlisted algorithms and non-canonical hex use ``other``."""

    _alternatives = [
        *((name, core.OctetString, {"implicit": code}) for code, name in HASH_NAMES.items()),
        ("other", OtherHash, {"implicit": OTHER_HASH_TAG}),
    ]


class Hashes(core.SequenceOf):
    _child_spec = HashValue


class SignatureAsn(core.Sequence):
    _fields = [("keyid", HexString), ("value", HexString), _UNREC]


class Signatures(core.SequenceOf):
    _child_spec = SignatureAsn


class PublicKeyValue(core.Choice):
    _alternatives = [
        ("ed25519", core.OctetString, {"implicit": 0}),
        ("spki", core.OctetString, {"implicit": 1}),
        ("text", core.UTF8String),
    ]


class PublicKey(core.Sequence):
    _fields = [
        ("keyid", HexString),
        ("keytype", core.UTF8String),
        ("scheme", core.UTF8String),
        ("public", PublicKeyValue),
        _UNREC,
    ]


class PublicKeys(core.SequenceOf):
    _child_spec = PublicKey


class TopLevelRole(core.Sequence):
    _fields = [
        ("role", core.UTF8String),
        ("keyids", HexStrings),
        ("threshold", core.Integer),
        _UNREC,
    ]


class TopLevelRoles(core.SequenceOf):
    _child_spec = TopLevelRole


class RootMetadata(core.Sequence):
    _fields = [
        ("consistentSnapshot", core.Boolean),
        ("keys", PublicKeys),
        ("roles", TopLevelRoles),
    ]


class MetaFile(core.Sequence):
    _fields = [
        ("version", core.Integer),
        ("length", core.Integer, _tag(0)),
        ("hashes", Hashes, _tag(1)),
        _UNREC,
    ]


class SnapshotEntry(core.Sequence):
    _fields = [("filename", core.UTF8String), ("meta", MetaFile)]


class SnapshotMetadata(core.SequenceOf):
    _child_spec = SnapshotEntry


class EcuWrappedKey(core.Sequence):
    """The content key wrapped to one ECU's encryption key (uptane/encryption.py)."""

    _fields = [
        ("ecuIdentifier", core.UTF8String),
        ("keyid", HexString),
        ("wrappedKey", core.OctetString),
    ]


class EcuWrappedKeys(core.SequenceOf):
    _child_spec = EcuWrappedKey


class EncryptedImage(core.Sequence):
    _fields = [
        ("filename", core.UTF8String),
        ("length", core.Integer),
        ("hashes", Hashes),
        ("wrappedKey", HexString),
        ("method", core.UTF8String),
        ("wrappedKeys", EcuWrappedKeys, _tag(0)),  # sorted by ECU id
    ]


class ImageRef(core.Sequence):
    _fields = [("filename", core.UTF8String), ("length", core.Integer), ("hashes", Hashes)]


class DeltaImage(core.Sequence):
    """A delta target's patch format, base image and produced full image (uptane/delta.py)."""

    _fields = [("format", core.UTF8String), ("base", ImageRef), ("target", ImageRef)]


class EcuHardware(core.Sequence):
    """One ECU id of a Director target; the hardware id is left out when it equals the
    target's first hardware identifier (the usual case)."""

    _fields = [
        ("ecuIdentifier", core.UTF8String),
        ("hardwareIdentifier", core.UTF8String, _OPT),
    ]


class EcuHardwareList(core.SequenceOf):
    _child_spec = EcuHardware


class TargetAndCustom(core.Sequence):
    """A target and its Uptane custom fields, flattened into one SEQUENCE."""

    _fields = [
        ("filename", core.UTF8String),
        ("length", core.Integer),
        ("hashes", Hashes),
        ("releaseCounter", core.Integer, _tag(0)),
        ("hardwareIdentifiers", Utf8Strings, _tag(1)),
        ("ecuIdentifiers", EcuHardwareList, _tag(2)),
        ("shallMatch", core.OctetString, _tag(3)),
        ("encryptedImage", EncryptedImage, _tag(4)),
        ("url", core.UTF8String, _tag(5)),
        ("customExtra", core.OctetString, _tag(6)),
        ("delta", DeltaImage, _tag(7)),
        _UNREC,
    ]


_CUSTOM_FIELDS = (
    "releaseCounter",
    "hardwareIdentifiers",
    "ecuIdentifiers",
    "shallMatch",
    "encryptedImage",
    "url",
    "customExtra",
    "delta",
)


class TargetList(core.SequenceOf):
    _child_spec = TargetAndCustom


class RoleRef(core.Sequence):
    _fields = [("rolename", core.UTF8String), ("keyids", HexStrings), ("threshold", core.Integer)]


class RoleRefs(core.SequenceOf):
    _child_spec = RoleRef


class MultiRole(core.Sequence):
    _fields = [("minRolesInAgreement", core.Integer), ("roles", RoleRefs)]


class DelegatedRole(core.Sequence):
    _fields = [
        ("rolename", core.UTF8String),
        ("keyids", HexStrings),
        ("threshold", core.Integer),
        ("terminating", core.Boolean),
        ("paths", Utf8Strings, _tag(0)),
        ("pathHashPrefixes", Utf8Strings, _tag(1)),
        ("hardwareIdentifiers", Utf8Strings, _tag(2)),
        ("multiRole", MultiRole, _tag(3)),
        _UNREC,
    ]


class DelegatedRoles(core.SequenceOf):
    _child_spec = DelegatedRole


class SuccinctRoles(core.Sequence):
    _fields = [
        ("keyids", HexStrings),
        ("threshold", core.Integer),
        ("bitLength", core.Integer),
        ("namePrefix", core.UTF8String),
        _UNREC,
    ]


class TargetsDelegations(core.Sequence):
    _fields = [
        ("keys", PublicKeys),
        ("roles", DelegatedRoles, _tag(0)),
        ("succinctRoles", SuccinctRoles, _tag(1)),
        _UNREC,
    ]


class TargetsMetadata(core.Sequence):
    _fields = [
        ("targets", TargetList),
        ("delegations", TargetsDelegations, _tag(0)),
        ("vehicleIdentifier", core.UTF8String, _tag(1)),
    ]


class SignedBody(core.Choice):
    _alternatives = [
        ("root", RootMetadata, {"implicit": 0}),
        ("targets", TargetsMetadata, {"implicit": 1}),
        ("snapshot", SnapshotMetadata, {"implicit": 2}),
        ("timestamp", MetaFile, {"implicit": 3}),
    ]


class SignedAsn(core.Sequence):
    _fields = [
        ("expires", core.Integer),
        ("version", core.Integer),
        ("specVersion", core.UTF8String, {"default": DEFAULT_SPEC_VERSION}),
        ("body", SignedBody),
        _UNREC,
    ]


class MetadataAsn(core.Sequence):
    _fields = [("signed", SignedAsn), ("signatures", Signatures), _UNREC]


# ECUModule, extended: nonce/counter, release counter, attack indicator as text
class InstalledImage(core.Sequence):
    _fields = [("filename", core.UTF8String), ("length", core.Integer), ("hashes", Hashes)]


class EcuVersionReportSigned(core.Sequence):
    _fields = [
        ("ecuIdentifier", core.UTF8String),
        ("latestTime", core.Integer),
        ("installedImage", InstalledImage),
        ("previousTime", core.Integer, _tag(0)),
        ("securityAttack", core.UTF8String, _tag(1)),
        ("releaseCounter", core.Integer, _tag(2)),
        ("nonce", core.OctetString, _tag(3)),
        ("counter", core.Integer, _tag(4)),
        _UNREC,
    ]


class EcuVersionReport(core.Sequence):
    _fields = [("signed", EcuVersionReportSigned), ("signatures", Signatures)]


class EcuVersionReports(core.SequenceOf):
    _child_spec = EcuVersionReport


class UnreachableEcu(core.Sequence):
    """An ECU the Primary could not reach, named in its signed manifest (an extension:
    docs/der-profile.md)."""

    _fields = [
        ("ecuIdentifier", core.UTF8String),
        ("reason", core.UTF8String),
        ("lastSeen", core.Integer, _tag(0)),
    ]


class UnreachableEcus(core.SequenceOf):
    _child_spec = UnreachableEcu


class VehicleVersionManifestSigned(core.Sequence):
    _fields = [
        ("vehicleIdentifier", core.UTF8String),
        ("primaryIdentifier", core.UTF8String),
        ("ecuVersionReports", EcuVersionReports),
        ("securityAttack", core.UTF8String, _tag(0)),
        ("unreachableEcus", UnreachableEcus, _tag(1)),
        _UNREC,
    ]


class VehicleVersionManifest(core.Sequence):
    _fields = [("signed", VehicleVersionManifestSigned), ("signatures", Signatures)]


#: JSON ``_type`` of the two manifests

# --- small conversions ---------------------------------------------------------------------

_HEX = re.compile(r"(?:[0-9a-f]{2})*")
#: the characters of an ASN.1 VisibleString: printable ASCII, space included
_VISIBLE = re.compile(rb"[\x20-\x7e]*")
_PEM_HEAD = "-----BEGIN PUBLIC KEY-----\n"
_PEM_TAIL = "-----END PUBLIC KEY-----\n"


def _bad(message: str) -> MalformedInput:
    return MalformedInput(f"DER: {message}")


def _why(e: Exception) -> str:
    """A parser exception as one short line (its text may travel in an attack indicator)."""
    return f"{type(e).__name__}: " + " ".join(str(e).split())[:200]


def _hex_to_asn(value: Any, what: str) -> Any:
    if not isinstance(value, str):
        raise _bad(f"{what} must be a string")
    if _HEX.fullmatch(value):
        return ("raw", bytes.fromhex(value))
    return ("text", value)


def _hex_from_asn(value: tuple[str, Any]) -> str:
    name, inner = value
    if name == "raw":
        raw: bytes = inner  # HexString: raw is an OCTET STRING, text a UTF8String
        return raw.hex()
    text: str = inner
    return text


def _pem(body: bytes) -> str:
    b64 = base64.b64encode(body).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return _PEM_HEAD + "".join(line + "\n" for line in lines) + _PEM_TAIL


def _pem_body(text: str) -> bytes | None:
    """The DER body of a PEM public key written exactly as ``cryptography`` writes it."""
    if not (text.startswith(_PEM_HEAD) and text.endswith(_PEM_TAIL)):
        return None
    inner = text[len(_PEM_HEAD) : -len(_PEM_TAIL)].replace("\n", "")
    try:
        body = base64.b64decode(inner, validate=True)
    except (binascii.Error, ValueError):
        return None
    return body if _pem(body) == text else None


def _public_to_asn(public: Any) -> Any:
    if not isinstance(public, str):
        raise _bad("public key value must be a string")
    if len(public) == 64 and _HEX.fullmatch(public):
        return ("ed25519", bytes.fromhex(public))
    body = _pem_body(public)
    if body is not None:
        return ("spki", body)
    return ("text", public)


def _public_from_asn(value: tuple[str, Any]) -> str:
    name, inner = value
    if name == "text":
        text: str = inner  # PublicKeyValue: text is a UTF8String, the others OCTET STRINGs
        return text
    raw: bytes = inner
    if name == "ed25519":
        if len(raw) != 32:
            raise _bad("an ed25519 public key is 32 bytes")
        return raw.hex()
    return _pem(raw)


def _time_to_int(value: Any) -> int:
    dt = value.astimezone(UTC) if isinstance(value, datetime) else parse_expires(value)
    return calendar.timegm(dt.timetuple())


def _time_from_int(value: int) -> str:
    if not 0 <= value <= MAX_TIME:
        raise _bad("time out of range")
    return format_expires(datetime.fromtimestamp(value, UTC))


def _json_to_asn(value: Any) -> Any:
    if not isinstance(value, dict):
        raise _bad("an embedded JSON field must be an object")
    return canonical(value)


_CONTROL = re.compile(rb"[\x00-\x1f]")


def _json_from_asn(value: Any, limits: Limits) -> dict[str, Any]:
    raw = bytes(value)
    limits.check_bytes("DER embedded JSON", len(raw), 64 * limits.max_string)
    # canonical JSON writes control characters inside strings raw; the strict JSON reader
    # wants them escaped. Outside strings they stay invalid, and the re-encoding check
    # refuses any other difference.
    raw = _CONTROL.sub(lambda m: b"\\u%04x" % m.group()[0], raw)
    doc = loads(raw, limits, cap=len(raw), what="DER embedded JSON")
    if not isinstance(doc, dict):
        raise _bad("an embedded JSON field must be an object")
    return doc


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad("expected an integer")
    if value.bit_length() > 8 * MAX_INTEGER_BYTES - 1:  # uptane/policy.py
        bits = value.bit_length()
        raise LimitExceeded(f"DER: a {bits}-bit integer is outside the signed 64-bit range")
    return value


def _split(d: Any, known: tuple[str, ...], what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a JSON-shape object into its known fields and the rest (unrecognized)."""
    if not isinstance(d, dict):
        raise _bad(f"{what} must be an object")
    return {k: d[k] for k in known if k in d}, {k: v for k, v in d.items() if k not in known}


def _need(d: dict[str, Any], key: str, what: str) -> Any:
    if key not in d:
        raise _bad(f"{what}: missing field {key!r}")
    return d[key]


def _set_unrec(asn: dict[str, Any], rest: dict[str, Any]) -> None:
    if rest:
        asn["unrecognized"] = canonical(rest)


def _get_unrec(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    value = asn.get("unrecognized")
    return {} if value is None else _json_from_asn(value, limits)


def _strings(values: Any, what: str) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise _bad(f"{what} must be a list of strings")
    return list(values)


# --- JSON shape -> ASN.1 -------------------------------------------------------------------


def _hashes_to_asn(hashes: Any, what: str) -> Any:
    if not isinstance(hashes, dict):
        raise _bad(f"{what}: hashes must be an object")
    out: list[tuple[str, Any]] = []
    for alg in sorted(hashes):
        digest = hashes[alg]
        if not isinstance(digest, str):
            raise _bad(f"{what}: a digest must be a string")
        if alg in _HASH_ALTERNATIVES and _HEX.fullmatch(digest):
            out.append((alg, bytes.fromhex(digest)))
        else:
            other = {"function": alg, "digest": _hex_to_asn(digest, "digest")}
            out.append(("other", other))
    return out


def _hashes_from_asn(asn: list[tuple[str, Any]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, inner in asn:
        if name == "other":
            alg, digest = inner["function"], _hex_from_asn(inner["digest"])
        else:
            alg, digest = name, inner.hex()
        if alg in out:
            raise _bad("a hash algorithm appears twice")
        out[alg] = digest
    return out


def _sigs_to_asn(sigs: Any) -> Any:
    if not isinstance(sigs, list):
        raise _bad("signatures must be a list")
    out = []
    for s in sigs:
        known, rest = _split(s, ("keyid", "sig"), "signature")
        asn = {
            "keyid": _hex_to_asn(_need(known, "keyid", "signature"), "keyid"),
            "value": _hex_to_asn(_need(known, "sig", "signature"), "sig"),
        }
        _set_unrec(asn, rest)
        out.append(asn)
    return out


def _sigs_from_asn(asn: list[dict[str, Any]], limits: Limits) -> list[dict[str, Any]]:
    limits.check_count("signatures", len(asn), limits.max_signatures)
    return [
        {
            **_get_unrec(s, limits),
            "keyid": _hex_from_asn(s["keyid"]),
            "sig": _hex_from_asn(s["value"]),
        }
        for s in asn
    ]


def _keys_to_asn(keys: Any) -> Any:
    if not isinstance(keys, dict):
        raise _bad("keys must be an object")
    out = []
    for kid in sorted(keys):
        known, rest = _split(keys[kid], ("keytype", "scheme", "keyval"), "key")
        keyval = _need(known, "keyval", "key")
        if not isinstance(keyval, dict) or set(keyval) != {"public"}:
            raise _bad("a key's keyval must hold exactly 'public' to be encoded")
        asn = {
            "keyid": _hex_to_asn(kid, "keyid"),
            "keytype": _need(known, "keytype", "key"),
            "scheme": _need(known, "scheme", "key"),
            "public": _public_to_asn(keyval["public"]),
        }
        _set_unrec(asn, rest)
        out.append(asn)
    return out


def _keys_from_asn(asn: list[dict[str, Any]], limits: Limits) -> dict[str, Any]:
    limits.check_count("keys", len(asn), limits.max_keys)
    out: dict[str, Any] = {}
    for k in asn:
        kid = _hex_from_asn(k["keyid"])
        if kid in out:
            raise _bad("a key id appears twice")
        out[kid] = {
            **_get_unrec(k, limits),
            "keytype": k["keytype"],
            "scheme": k["scheme"],
            "keyval": {"public": _public_from_asn(k["public"])},
        }
    return out


def _metafile_to_asn(d: Any) -> Any:
    known, rest = _split(d, ("version", "length", "hashes"), "meta")
    v: dict[str, Any] = {"version": _int(_need(known, "version", "meta"))}
    if "length" in known:
        v["length"] = _int(known["length"])
    if "hashes" in known:
        v["hashes"] = _hashes_to_asn(known["hashes"], "meta")
    if rest:
        v["unrecognized"] = canonical(rest)
    return v


def _metafile_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    d: dict[str, Any] = {**_get_unrec(asn, limits), "version": _int(asn["version"])}
    if "length" in asn:
        d["length"] = _int(asn["length"])
    if "hashes" in asn:
        d["hashes"] = _hashes_from_asn(asn["hashes"])
    return d


def _root_to_asn(d: dict[str, Any]) -> Any:
    roles = _need(d, "roles", "root")
    if not isinstance(roles, dict):
        raise _bad("root roles must be an object")
    role_list = []
    for name in sorted(roles):
        known, rest = _split(roles[name], ("keyids", "threshold"), "role")
        asn = {
            "role": name,
            "keyids": _keyids_to_asn(known, "role"),
            "threshold": _int(_need(known, "threshold", "role")),
        }
        _set_unrec(asn, rest)
        role_list.append(asn)
    cs = _need(d, "consistent_snapshot", "root")
    if not isinstance(cs, bool):
        raise _bad("consistent_snapshot must be a boolean")
    return {
        "consistentSnapshot": cs,
        "keys": _keys_to_asn(_need(d, "keys", "root")),
        "roles": role_list,
    }


def _root_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    roles_asn = asn["roles"]
    limits.check_count("root roles", len(roles_asn), limits.max_roles)
    roles: dict[str, Any] = {}
    for r in roles_asn:
        name = r["role"]
        if name in roles:
            raise _bad("a role appears twice")
        roles[name] = {
            **_get_unrec(r, limits),
            "keyids": [_hex_from_asn(k) for k in r["keyids"]],
            "threshold": _int(r["threshold"]),
        }
    return {
        "consistent_snapshot": asn["consistentSnapshot"],
        "keys": _keys_from_asn(asn["keys"], limits),
        "roles": roles,
    }


def _target_to_asn(path: str, d: Any) -> Any:
    known, rest = _split(d, ("length", "hashes", "custom"), "target")
    v: dict[str, Any] = {
        "filename": path,
        "length": _int(_need(known, "length", "target")),
        "hashes": _hashes_to_asn(_need(known, "hashes", "target"), "target"),
    }
    if "custom" in known:
        v.update(_custom_to_asn(known["custom"]))
    if rest:
        v["unrecognized"] = canonical(rest)
    return v


_CUSTOM_KEYS = (
    "releaseCounter",
    "hardwareIds",
    "ecuIdentifiers",
    "shallMatch",
    "encryptedImage",
    "uri",
    "delta",
)


def _custom_to_asn(custom: Any) -> Any:
    known, rest = _split(custom, _CUSTOM_KEYS, "custom")
    asn: dict[str, Any] = {}
    if "releaseCounter" in known:
        asn["releaseCounter"] = _int(known["releaseCounter"])
    hwids: list[str] = []
    if "hardwareIds" in known:
        hwids = _strings(known["hardwareIds"], "hardwareIds")
        asn["hardwareIdentifiers"] = hwids
    if "ecuIdentifiers" in known:
        ecus = known["ecuIdentifiers"]
        if not isinstance(ecus, dict):
            raise _bad("ecuIdentifiers must be an object")
        lst = []
        for ecu in sorted(ecus):
            info = ecus[ecu]
            if not isinstance(info, dict) or set(info) != {"hardwareId"}:
                raise _bad("an ecuIdentifiers entry must hold exactly hardwareId")
            entry = {"ecuIdentifier": ecu}
            if not hwids or info["hardwareId"] != hwids[0]:
                entry["hardwareIdentifier"] = info["hardwareId"]
            lst.append(entry)
        asn["ecuIdentifiers"] = lst
    if "shallMatch" in known:
        asn["shallMatch"] = _json_to_asn(known["shallMatch"])
    if "encryptedImage" in known:
        asn["encryptedImage"] = _encrypted_to_asn(known["encryptedImage"])
    if "uri" in known:
        asn["url"] = known["uri"]
    if "delta" in known:
        asn["delta"] = _delta_to_asn(known["delta"])
    if rest:
        asn["customExtra"] = canonical(rest)
    return asn


def _encrypted_to_asn(value: Any) -> Any:
    what = "encryptedImage"
    fields = ("filename", "length", "hashes", "wrappedKey", "method", "wrappedKeys")
    enc, extra = _split(value, fields, what)
    if extra:
        raise _bad("encryptedImage has fields DER cannot carry")
    asn = {
        "filename": _need(enc, "filename", what),
        "length": _int(_need(enc, "length", what)),
        "hashes": _hashes_to_asn(_need(enc, "hashes", what), "encrypted"),
        "wrappedKey": _hex_to_asn(_need(enc, "wrappedKey", what), "key"),
        "method": _need(enc, "method", what),
    }
    if "wrappedKeys" in enc:
        keys = enc["wrappedKeys"]
        if not isinstance(keys, dict):
            raise _bad("wrappedKeys must be an object")
        lst = []
        for ecu in sorted(keys):
            k, kextra = _split(keys[ecu], ("keyid", "value"), "wrappedKeys entry")
            value = _need(k, "value", "wrappedKeys entry")
            if kextra or not isinstance(value, str) or not _HEX.fullmatch(value):
                raise _bad("a wrappedKeys entry must hold exactly keyid and a hex value")
            keyid = _hex_to_asn(_need(k, "keyid", "wrappedKeys entry"), "keyid")
            lst.append({"ecuIdentifier": ecu, "keyid": keyid, "wrappedKey": bytes.fromhex(value)})
        asn["wrappedKeys"] = lst
    return asn


def _encrypted_from_asn(e: dict[str, Any], limits: Limits) -> dict[str, Any]:
    out = {
        "filename": e["filename"],
        "length": _int(e["length"]),
        "hashes": _hashes_from_asn(e["hashes"]),
        "wrappedKey": _hex_from_asn(e["wrappedKey"]),
        "method": e["method"],
    }
    if "wrappedKeys" in e:
        lst = e["wrappedKeys"]
        limits.check_count("wrappedKeys", len(lst), limits.max_ecus)
        keys: dict[str, Any] = {}
        for k in lst:
            if k["ecuIdentifier"] in keys:
                raise _bad("an ECU id appears twice in wrappedKeys")
            value: bytes = k["wrappedKey"]
            keys[k["ecuIdentifier"]] = {"keyid": _hex_from_asn(k["keyid"]), "value": value.hex()}
        out["wrappedKeys"] = keys
    return out


def _image_ref_to_asn(value: Any, what: str) -> Any:
    ref, extra = _split(value, ("filename", "length", "hashes"), what)
    if extra:
        raise _bad(f"{what} has fields DER cannot carry")
    return {
        "filename": _need(ref, "filename", what),
        "length": _int(_need(ref, "length", what)),
        "hashes": _hashes_to_asn(_need(ref, "hashes", what), what),
    }


def _delta_to_asn(value: Any) -> Any:
    delta, extra = _split(value, ("format", "base", "target"), "delta")
    if extra:
        raise _bad("delta has fields DER cannot carry")
    return {
        "format": _need(delta, "format", "delta"),
        "base": _image_ref_to_asn(_need(delta, "base", "delta"), "delta base"),
        "target": _image_ref_to_asn(_need(delta, "target", "delta"), "delta target"),
    }


def _delta_from_asn(d: dict[str, Any]) -> dict[str, Any]:
    def ref(r: dict[str, Any]) -> dict[str, Any]:
        return {
            "filename": r["filename"],
            "length": _int(r["length"]),
            "hashes": _hashes_from_asn(r["hashes"]),
        }

    return {"format": d["format"], "base": ref(d["base"]), "target": ref(d["target"])}


def _target_from_asn(asn: dict[str, Any], limits: Limits) -> tuple[str, dict[str, Any]]:
    d: dict[str, Any] = {
        **_get_unrec(asn, limits),
        "length": _int(asn["length"]),
        "hashes": _hashes_from_asn(asn["hashes"]),
    }
    if not any(f in asn for f in _CUSTOM_FIELDS):
        return asn["filename"], d
    custom: dict[str, Any] = {}
    if "customExtra" in asn:
        custom.update(_json_from_asn(asn["customExtra"], limits))
    if "releaseCounter" in asn:
        custom["releaseCounter"] = _int(asn["releaseCounter"])
    hwids: list[str] = []
    if "hardwareIdentifiers" in asn:
        hwids = asn["hardwareIdentifiers"]
        custom["hardwareIds"] = hwids
    if "ecuIdentifiers" in asn:
        lst = asn["ecuIdentifiers"]
        limits.check_count("ecuIdentifiers", len(lst), limits.max_ecus)
        ecus: dict[str, Any] = {}
        for e in lst:
            ecu = e["ecuIdentifier"]
            if ecu in ecus:
                raise _bad("an ECU id appears twice in ecuIdentifiers")
            if "hardwareIdentifier" in e:
                hwid = e["hardwareIdentifier"]
            elif hwids:
                hwid = hwids[0]
            else:
                raise _bad("an ECU's hardware id is left out but the target lists none")
            ecus[ecu] = {"hardwareId": hwid}
        custom["ecuIdentifiers"] = ecus
    if "shallMatch" in asn:
        custom["shallMatch"] = _json_from_asn(asn["shallMatch"], limits)
    if "encryptedImage" in asn:
        custom["encryptedImage"] = _encrypted_from_asn(asn["encryptedImage"], limits)
    if "url" in asn:
        custom["uri"] = asn["url"]
    if "delta" in asn:
        custom["delta"] = _delta_from_asn(asn["delta"])
    d["custom"] = custom
    return asn["filename"], d


def _keyids_to_asn(d: dict[str, Any], what: str) -> Any:
    return [_hex_to_asn(k, "keyid") for k in _strings(_need(d, "keyids", what), "keyids")]


def _delegations_to_asn(d: Any) -> Any:
    known, rest = _split(d, ("keys", "roles", "succinct_roles"), "delegations")
    asn = {"keys": _keys_to_asn(_need(known, "keys", "delegations"))}
    if "roles" in known:
        roles = known["roles"]
        if not isinstance(roles, list):
            raise _bad("delegated roles must be a list")
        asn["roles"] = [_delegated_role_to_asn(r) for r in roles]
    if "succinct_roles" in known:
        sk, srest = _split(
            known["succinct_roles"],
            ("keyids", "threshold", "bit_length", "name_prefix"),
            "succinct_roles",
        )
        s = {
            "keyids": _keyids_to_asn(sk, "succinct_roles"),
            "threshold": _int(_need(sk, "threshold", "succinct_roles")),
            "bitLength": _int(_need(sk, "bit_length", "succinct_roles")),
            "namePrefix": _need(sk, "name_prefix", "succinct_roles"),
        }
        _set_unrec(s, srest)
        asn["succinctRoles"] = s
    _set_unrec(asn, rest)
    return asn


def _delegated_role_to_asn(r: Any) -> Any:
    fields = (
        "name",
        "keyids",
        "threshold",
        "terminating",
        "paths",
        "path_hash_prefixes",
        "hardwareIds",
        "multiRole",
    )
    known, rest = _split(r, fields, "delegated role")
    term = _need(known, "terminating", "delegated role")
    if not isinstance(term, bool):
        raise _bad("terminating must be a boolean")
    asn = {
        "rolename": _need(known, "name", "delegated role"),
        "keyids": _keyids_to_asn(known, "delegated role"),
        "threshold": _int(_need(known, "threshold", "delegated role")),
        "terminating": term,
    }
    if "paths" in known:
        asn["paths"] = _strings(known["paths"], "paths")
    if "path_hash_prefixes" in known:
        asn["pathHashPrefixes"] = _strings(known["path_hash_prefixes"], "path_hash_prefixes")
    if "hardwareIds" in known:
        asn["hardwareIdentifiers"] = _strings(known["hardwareIds"], "hardwareIds")
    if "multiRole" in known:
        mk, mrest = _split(known["multiRole"], ("minRolesInAgreement", "roles"), "multiRole")
        refs = _need(mk, "roles", "multiRole")
        if mrest or not isinstance(refs, list):
            raise _bad("multiRole must hold minRolesInAgreement and a list of roles")
        ref_list = []
        for ref in refs:
            rk, rrest = _split(ref, ("name", "keyids", "threshold"), "multi-role entry")
            if rrest:
                raise _bad("a multi-role entry has fields DER cannot carry")
            ref_list.append(
                {
                    "rolename": _need(rk, "name", "multi-role entry"),
                    "keyids": _keyids_to_asn(rk, "multi-role entry"),
                    "threshold": _int(_need(rk, "threshold", "multi-role entry")),
                }
            )
        asn["multiRole"] = {
            "minRolesInAgreement": _int(_need(mk, "minRolesInAgreement", "multiRole")),
            "roles": ref_list,
        }
    _set_unrec(asn, rest)
    return asn


def _delegations_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    d: dict[str, Any] = {**_get_unrec(asn, limits), "keys": _keys_from_asn(asn["keys"], limits)}
    if "roles" in asn:
        roles = asn["roles"]
        limits.check_count("delegated roles", len(roles), limits.max_delegations)
        out = []
        for r in roles:
            rd: dict[str, Any] = {
                **_get_unrec(r, limits),
                "name": r["rolename"],
                "keyids": [_hex_from_asn(k) for k in r["keyids"]],
                "threshold": _int(r["threshold"]),
                "terminating": r["terminating"],
            }
            if "paths" in r:
                rd["paths"] = r["paths"]
            if "pathHashPrefixes" in r:
                rd["path_hash_prefixes"] = r["pathHashPrefixes"]
            if "hardwareIdentifiers" in r:
                rd["hardwareIds"] = r["hardwareIdentifiers"]
            if "multiRole" in r:
                m = r["multiRole"]
                rd["multiRole"] = {
                    "minRolesInAgreement": _int(m["minRolesInAgreement"]),
                    "roles": [
                        {
                            "name": ref["rolename"],
                            "keyids": [_hex_from_asn(k) for k in ref["keyids"]],
                            "threshold": _int(ref["threshold"]),
                        }
                        for ref in m["roles"]
                    ],
                }
            out.append(rd)
        d["roles"] = out
    if "succinctRoles" in asn:
        s = asn["succinctRoles"]
        d["succinct_roles"] = {
            **_get_unrec(s, limits),
            "keyids": [_hex_from_asn(k) for k in s["keyids"]],
            "threshold": _int(s["threshold"]),
            "bit_length": _int(s["bitLength"]),
            "name_prefix": s["namePrefix"],
        }
    return d


def _targets_to_asn(d: dict[str, Any]) -> Any:
    targets = _need(d, "targets", "targets")
    if not isinstance(targets, dict):
        raise _bad("targets must be an object")
    # one entry at a time: the encoder and the re-encoding check each go through it once,
    # so only one target's shape is alive at a time (see _model_shape)
    lst = (_target_to_asn(path, targets[path]) for path in sorted(targets))
    asn: dict[str, Any] = {"targets": lst}
    if "delegations" in d:
        asn["delegations"] = _delegations_to_asn(d["delegations"])
    if "vehicleId" in d:
        asn["vehicleIdentifier"] = d["vehicleId"]
    return asn


def _targets_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    lst = asn["targets"]
    limits.check_count("targets", len(lst), limits.max_targets)
    targets: dict[str, Any] = {}
    for t in lst:
        path, td = _target_from_asn(t, limits)
        if path in targets:
            raise _bad("a target path appears twice")
        targets[path] = td
    d: dict[str, Any] = {"targets": targets}
    if "delegations" in asn:
        d["delegations"] = _delegations_from_asn(asn["delegations"], limits)
    if "vehicleIdentifier" in asn:
        d["vehicleId"] = asn["vehicleIdentifier"]
    return d


def _snapshot_to_asn(d: dict[str, Any]) -> Any:
    meta = _need(d, "meta", "snapshot")
    if not isinstance(meta, dict):
        raise _bad("snapshot meta must be an object")
    return [{"filename": n, "meta": _metafile_to_asn(meta[n])} for n in sorted(meta)]


def _snapshot_from_asn(asn: list[dict[str, Any]], limits: Limits) -> dict[str, Any]:
    limits.check_count("snapshot entries", len(asn), limits.max_snapshot_entries)
    meta: dict[str, Any] = {}
    for e in asn:
        name = e["filename"]
        if name in meta:
            raise _bad("a snapshot entry appears twice")
        meta[name] = _metafile_from_asn(e["meta"], limits)
    return {"meta": meta}


def _timestamp_to_asn(d: dict[str, Any]) -> Any:
    meta = _need(d, "meta", "timestamp")
    if not isinstance(meta, dict) or set(meta) != {"snapshot.json"}:
        raise _bad("timestamp meta must list exactly snapshot.json")
    return _metafile_to_asn(meta["snapshot.json"])


_BODY_KEYS: dict[str, tuple[str, ...]] = {
    "root": ("consistent_snapshot", "keys", "roles"),
    "targets": ("targets", "delegations", "vehicleId"),
    "snapshot": ("meta",),
    "timestamp": ("meta",),
}
_COMMON_KEYS = ("_type", "version", "spec_version", "expires")


def _signed_to_asn(d: Any) -> Any:
    if not isinstance(d, dict):
        raise _bad("signed must be an object")
    role = d.get("_type")
    if role not in _BODY_KEYS:
        raise _bad(f"cannot encode metadata of type {str(role)[:32]!r}")
    known, rest = _split(d, _COMMON_KEYS + _BODY_KEYS[role], role)
    if role == "root":
        body = ("root", _root_to_asn(known))
    elif role == "targets":
        body = ("targets", _targets_to_asn(known))
    elif role == "snapshot":
        body = ("snapshot", _snapshot_to_asn(known))
    else:
        body = ("timestamp", _timestamp_to_asn(known))
    asn = {
        "expires": _time_to_int(_need(known, "expires", role)),
        "version": _int(_need(known, "version", role)),
        "specVersion": _need(known, "spec_version", role),
        "body": body,
    }
    _set_unrec(asn, rest)
    return asn


def _signed_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    role, value = asn["body"]
    if role == "root":
        fields = _root_from_asn(value, limits)
    elif role == "targets":
        fields = _targets_from_asn(value, limits)
    elif role == "snapshot":
        fields = _snapshot_from_asn(value, limits)
    else:
        fields = {"meta": {"snapshot.json": _metafile_from_asn(value, limits)}}
    return {
        **_get_unrec(asn, limits),
        **fields,
        "_type": role,
        "version": _int(asn["version"]),
        "spec_version": asn.get("specVersion", DEFAULT_SPEC_VERSION),
        "expires": _time_from_int(_int(asn["expires"])),
    }


def _metadata_to_asn(doc: Any) -> Any:
    known, rest = _split(doc, ("signed", "signatures"), "metadata")
    asn = {
        "signed": _signed_to_asn(_need(known, "signed", "metadata")),
        "signatures": _sigs_to_asn(_need(known, "signatures", "metadata")),
    }
    _set_unrec(asn, rest)
    return asn


# --- manifests (JSON shape <-> ASN.1) ------------------------------------------------------

_REPORT_KEYS = (
    "_type",
    "ecu_id",
    "latest_time",
    "installed_image",
    "previous_time",
    "attack",
    "release_counter",
    "nonce",
    "counter",
)
_VVM_KEYS = (
    "_type",
    "vehicle_id",
    "primary_id",
    "ecu_version_reports",
    "attack",
    "unreachable_ecus",
)


def _report_signed_to_asn(d: Any) -> Any:
    known, rest = _split(d, _REPORT_KEYS, "ECU version report")
    if known.get("_type") != ECU_REPORT_TYPE:
        raise _bad("not an ECU version report")
    img, extra = _split(
        _need(known, "installed_image", "report"), ("filename", "length", "hashes"), "image"
    )
    if extra:
        raise _bad("installed_image has fields DER cannot carry")
    asn = {
        "ecuIdentifier": _need(known, "ecu_id", "report"),
        "latestTime": _time_to_int(_need(known, "latest_time", "report")),
        "installedImage": {
            "filename": _need(img, "filename", "installed_image"),
            "length": _int(_need(img, "length", "installed_image")),
            "hashes": _hashes_to_asn(_need(img, "hashes", "installed_image"), "image"),
        },
    }
    if "previous_time" in known:
        asn["previousTime"] = _time_to_int(known["previous_time"])
    if "attack" in known:
        asn["securityAttack"] = known["attack"]
    if "release_counter" in known:
        asn["releaseCounter"] = _int(known["release_counter"])
    if "nonce" in known:
        nonce = known["nonce"]
        if not isinstance(nonce, str) or not _HEX.fullmatch(nonce):
            raise _bad("nonce must be lowercase hex")
        asn["nonce"] = bytes.fromhex(nonce)
    if "counter" in known:
        asn["counter"] = _int(known["counter"])
    _set_unrec(asn, rest)
    return asn


def _report_signed_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    img = asn["installedImage"]
    d: dict[str, Any] = {
        **_get_unrec(asn, limits),
        "_type": ECU_REPORT_TYPE,
        "ecu_id": asn["ecuIdentifier"],
        "latest_time": _time_from_int(_int(asn["latestTime"])),
        "installed_image": {
            "filename": img["filename"],
            "length": _int(img["length"]),
            "hashes": _hashes_from_asn(img["hashes"]),
        },
    }
    if "previousTime" in asn:
        d["previous_time"] = _time_from_int(_int(asn["previousTime"]))
    if "securityAttack" in asn:
        d["attack"] = asn["securityAttack"]
    if "releaseCounter" in asn:
        d["release_counter"] = _int(asn["releaseCounter"])
    if "nonce" in asn:
        d["nonce"] = asn["nonce"].hex()
    if "counter" in asn:
        d["counter"] = _int(asn["counter"])
    return d


def _report_to_asn(doc: Any) -> Any:
    known, rest = _split(doc, ("signed", "signatures"), "ECU version report")
    if rest:
        raise _bad("an ECU version report envelope has fields DER cannot carry")
    return {
        "signed": _report_signed_to_asn(_need(known, "signed", "report")),
        "signatures": _sigs_to_asn(_need(known, "signatures", "report")),
    }


def _report_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    return {
        "signed": _report_signed_from_asn(asn["signed"], limits),
        "signatures": _sigs_from_asn(asn["signatures"], limits),
    }


def _vvm_signed_to_asn(d: Any) -> Any:
    known, rest = _split(d, _VVM_KEYS, "vehicle version manifest")
    if known.get("_type") != VVM_TYPE:
        raise _bad("not a vehicle version manifest")
    reports = _need(known, "ecu_version_reports", "manifest")
    if not isinstance(reports, list):
        raise _bad("ecu_version_reports must be a list")
    asn = {
        "vehicleIdentifier": _need(known, "vehicle_id", "manifest"),
        "primaryIdentifier": _need(known, "primary_id", "manifest"),
        "ecuVersionReports": [_report_to_asn(r) for r in reports],
    }
    if "attack" in known:
        asn["securityAttack"] = known["attack"]
    if "unreachable_ecus" in known:
        asn["unreachableEcus"] = _unreachable_to_asn(known["unreachable_ecus"])
    _set_unrec(asn, rest)
    return asn


def _unreachable_to_asn(entries: Any) -> Any:
    if not isinstance(entries, list):
        raise _bad("unreachable_ecus must be a list")
    out = []
    for entry in entries:
        known, rest = _split(entry, ("ecu_id", "reason", "last_seen"), "unreachable ECU")
        if rest:
            raise _bad("an unreachable ECU has fields DER cannot carry")
        asn = {
            "ecuIdentifier": _need(known, "ecu_id", "unreachable ECU"),
            "reason": _need(known, "reason", "unreachable ECU"),
        }
        if "last_seen" in known:
            asn["lastSeen"] = _time_to_int(known["last_seen"])
        out.append(asn)
    return out


def _unreachable_from_asn(asn: list[dict[str, Any]], limits: Limits) -> list[dict[str, Any]]:
    limits.check_count("unreachable ECUs", len(asn), limits.max_ecus)
    out = []
    for e in asn:
        d: dict[str, Any] = {"ecu_id": e["ecuIdentifier"], "reason": e["reason"]}
        if "lastSeen" in e:
            d["last_seen"] = _time_from_int(_int(e["lastSeen"]))
        out.append(d)
    return out


def _vvm_signed_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    reports = asn["ecuVersionReports"]
    limits.check_count("ECU version reports", len(reports), limits.max_ecus)
    d: dict[str, Any] = {
        **_get_unrec(asn, limits),
        "_type": VVM_TYPE,
        "vehicle_id": asn["vehicleIdentifier"],
        "primary_id": asn["primaryIdentifier"],
        "ecu_version_reports": [_report_from_asn(r, limits) for r in reports],
    }
    if "securityAttack" in asn:
        d["attack"] = asn["securityAttack"]
    if "unreachableEcus" in asn:
        d["unreachable_ecus"] = _unreachable_from_asn(asn["unreachableEcus"], limits)
    return d


def _manifest_kind_of(d: Any) -> str:
    kind = d.get("_type") if isinstance(d, dict) else None
    if not isinstance(kind, str) or kind not in (ECU_REPORT_TYPE, VVM_TYPE):
        raise _bad(f"unknown manifest type {str(kind)[:32]!r}")
    return kind


# --- bounded structure walk ----------------------------------------------------------------


def _element_cap(limits: Limits) -> int:
    """The most children any one constructed value may have: the largest count cap plus
    room for the fields of a SEQUENCE."""
    return 16 + max(
        limits.max_targets,
        limits.max_snapshot_entries,
        limits.max_keys,
        limits.max_signatures,
        limits.max_roles,
        limits.max_delegations,
        limits.max_paths,
        limits.max_hardware_ids,
        limits.max_ecus,
        limits.max_custom_items,
        limits.max_hashes,
    )


def _total_cap(limits: Limits) -> int:
    return 32 * max(limits.max_targets, limits.max_snapshot_entries) + 4096


def check_structure(data: bytes, limits: Limits, cap: int) -> None:
    """Walk the TLV structure of ``data`` without recursion and without building anything.

    Refuses: high tag numbers, indefinite lengths (BER), long-form lengths longer than
    needed, lengths running past their container, constructed strings, nesting deeper than
    ``limits.max_depth``, more children per value or values in total than the caps, and
    anything but exactly one top-level SEQUENCE.
    """
    n = len(data)
    if n == 0 or data[0] != 0x30:
        raise _bad("empty input" if n == 0 else "the top-level value must be a SEQUENCE")
    per_value = _element_cap(limits)
    total_cap = _total_cap(limits)
    ends: list[int] = [n]  # end offset of each open constructed value (outermost first)
    counts: list[int] = [0]
    pos = 0
    total = 0
    while True:
        while len(ends) > 1 and pos == ends[-1]:
            ends.pop()
            counts.pop()
        if pos == n:
            break
        end = ends[-1]
        if counts[0] == 1 and len(ends) == 1:
            raise _bad(f"{n - pos} trailing byte(s) after the DER value")
        # identifier octet
        ident = data[pos]
        pos += 1
        if ident & 0x1F == 0x1F:
            raise _bad("high tag numbers are not used by this profile")
        constructed = bool(ident & 0x20)
        if pos >= end:
            raise _bad("truncated: a length is missing")
        first = data[pos]
        pos += 1
        if first < 0x80:  # the short form inline: most values are short (hot loop)
            length = first
        else:
            length, pos = _long_length(data, pos, first, end)
        if length > cap:
            raise EndlessDataAttack(f"DER: a value declares {length} bytes, over the {cap} cap")
        if pos + length > end:
            raise _bad("a length runs past the end of its container")
        counts[-1] += 1
        total += 1
        if counts[-1] > per_value:
            raise LimitExceeded(f"DER: more than {per_value} elements in one value")
        if total > total_cap:
            raise LimitExceeded(f"DER: more than {total_cap} values in total")
        if constructed:
            if ident in (0x23, 0x24, 0x2C):  # constructed BIT/OCTET/UTF8 STRING
                raise NonCanonicalEncoding("DER: constructed strings are not allowed")
            if len(ends) > limits.max_depth:
                raise LimitExceeded(f"DER: nesting deeper than {limits.max_depth}")
            ends.append(pos + length)
            counts.append(0)
        else:
            pos += length


def _long_length(data: bytes, pos: int, first: int, end: int) -> tuple[int, int]:
    """:func:`check_structure`: the long-form length whose first octet ``first`` was read
    and whose length octets start at ``pos``; returns (length, position after it)."""
    if first == 0x80:
        raise NonCanonicalEncoding("DER: indefinite length (BER) is not allowed")
    k = first & 0x7F
    if pos + k > end:
        raise _bad("truncated: a long-form length runs past the data")
    if data[pos] == 0:
        raise NonCanonicalEncoding("DER: a long-form length has a leading zero byte")
    if k > 4:
        raise EndlessDataAttack(f"DER: a {k}-byte length exceeds any cap")
    length = int.from_bytes(data[pos : pos + k], "big")
    if length < 0x80:
        raise NonCanonicalEncoding("DER: a long-form length where short form fits")
    return length, pos + k


def _header(data: bytes, pos: int) -> tuple[int, int]:
    """(content start, content length) of the TLV at ``pos`` of checked DER."""
    first = data[pos + 1]
    if first < 0x80:
        return pos + 2, first
    k = first & 0x7F
    return pos + 2 + k, int.from_bytes(data[pos + 2 : pos + 2 + k], "big")


def _signed_span(data: bytes) -> bytes:
    """The bytes of the first child of the top-level SEQUENCE (the signed part); ``data``
    has passed :func:`check_structure`."""
    inner, _ = _header(data, 0)
    start, length = _header(data, inner)
    return data[inner : start + length]


def _manifest_kind(data: bytes) -> str:
    """Tell an ECU version report from a VVM by the second field of the signed part
    (INTEGER latestTime or UTF8String primaryIdentifier); ``data`` has been checked."""
    try:
        inner, _ = _header(data, 0)
        signed, signed_len = _header(data, inner)
        first, first_len = _header(data, signed)
        second = first + first_len
        if data[inner] == 0x30 and second < signed + signed_len:
            if data[second] == 0x02:
                return ECU_REPORT_TYPE
            if data[second] == 0x0C:
                return VVM_TYPE
    except IndexError:
        pass
    raise _bad("neither an ECU version report nor a vehicle version manifest")


def _parse(
    data: Any, spec: type[core.Asn1Value], limits: Limits, cap: int, what: str
) -> tuple[bytes, Any]:
    """Bounded parse of ``data`` as ``spec``: steps 1 to 3 of the module docstring. The
    DER check (the parsed value re-encodes to the input) is done on the decoded model by
    the caller, which also catches whatever this reader tolerates but the model drops."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _bad(f"{what}: expected bytes")
    data = bytes(data)
    if len(data) > cap:
        raise EndlessDataAttack(f"{what}: {len(data)} bytes exceeds the {cap}-byte cap")
    check_structure(data, limits, cap)
    return data, _convert(lambda: _read_top(spec, data), what)


# --- the reader: checked DER -> plain values, by the schema classes above ---------------------
#
# asn1crypto's parse tree keeps a Python object and a copy of the contents for every value
# (hundreds of KiB for a 16 KiB targets file); this reader walks the TLVs once and builds
# only the plain values the conversion needs: a dict of the present fields for a SEQUENCE
# (a DEFAULT field left out is absent), a list for a SEQUENCE OF, ``(name, value)`` for a
# CHOICE, and int, bool, bytes or str for the primitives. It runs after check_structure, so
# every header it reads is well formed and inside its container; the caller's re-encoding
# check refuses every other form that is not the one DER encoding of its value.

#: universal tags of the primitive and constructed types the schema uses
_UNIVERSAL: tuple[tuple[type, int], ...] = (
    (core.Sequence, 0x30),
    (core.SequenceOf, 0x30),
    (core.Boolean, 0x01),
    (core.Enumerated, 0x0A),  # before Integer: asn1crypto's Enumerated subclasses it
    (core.Integer, 0x02),
    (core.OctetString, 0x04),
    (core.UTF8String, 0x0C),
    (core.VisibleString, 0x1A),
)
#: (name, spec, identifier octets it may start with, required, EXPLICIT tag or None)
_Field = tuple[str, Spec, frozenset[int], bool, int | None]
_FIELDS: dict[Spec, tuple[_Field, ...]] = {}
_ALTERNATIVES: dict[Spec, dict[int, tuple[str, Spec]]] = {}


def _universal(spec: Spec) -> int:
    for base, tag in _UNIVERSAL:
        if issubclass(spec, base):
            return tag
    raise TypeError(f"no DER tag for {spec.__name__}")  # pragma: no cover - schema bug


def _tags(spec: Spec, params: dict[str, Any]) -> frozenset[int]:
    """The identifier octets a value of ``spec`` (with ``params``) may start with."""
    if "explicit" in params:
        return frozenset({0xA0 | params["explicit"]})
    if "implicit" in params:
        if issubclass(spec, core.Choice):  # pragma: no cover - the schema has none
            raise TypeError("an implicitly tagged CHOICE is not DER-decodable")
        return frozenset({0x80 | (_universal(spec) & 0x20) | params["implicit"]})
    if issubclass(spec, core.Choice):
        return frozenset(_alternatives(spec))
    return frozenset({_universal(spec)})


def _alternatives(spec: Spec) -> dict[int, tuple[str, Spec]]:
    table = _ALTERNATIVES.get(spec)
    if table is None:
        table = {}
        for a in spec._alternatives:
            for tag in _tags(a[1], a[2] if len(a) > 2 else {}):
                table[tag] = (a[0], a[1])
        _ALTERNATIVES[spec] = table
    return table


def _fields(spec: Spec) -> tuple[_Field, ...]:
    table = _FIELDS.get(spec)
    if table is None:
        out = []
        for f in spec._fields:
            params = f[2] if len(f) > 2 else {}
            required = "optional" not in params and "default" not in params
            out.append((f[0], f[1], _tags(f[1], params), required, params.get("explicit")))
        table = tuple(out)
        _FIELDS[spec] = table
    return table


def _read_top(spec: Spec, data: bytes) -> Any:
    start, length = _header(data, 0)
    return _read(spec, data, start, start + length)


def _read(spec: Spec, data: bytes, start: int, end: int) -> Any:
    """The value of ``spec`` whose contents are ``data[start:end]`` (its tag matched)."""
    if issubclass(spec, core.Sequence):
        out: dict[str, Any] = {}
        fields = _fields(spec)
        i, n = 0, len(fields)
        pos = start
        while pos < end:
            tag = data[pos]
            cstart, clen = _header(data, pos)
            while i < n and tag not in fields[i][2]:
                if fields[i][3]:
                    raise _bad(f"{spec.__name__}: field {fields[i][0]} is missing")
                i += 1
            if i == n:
                raise _bad(f"{spec.__name__}: unexpected element (tag 0x{tag:02x})")
            name, fspec = fields[i][0], fields[i][1]
            if fields[i][4] is None:
                out[name] = _read_tagged(fspec, tag, data, cstart, cstart + clen)
            else:
                out[name] = _read_explicit(fspec, data, cstart, cstart + clen)
            i += 1
            pos = cstart + clen
        for name, _, _, required, _ in fields[i:]:
            if required:
                raise _bad(f"{spec.__name__}: field {name} is missing")
        return out
    if issubclass(spec, core.SequenceOf):
        child = spec._child_spec
        tags = _tags(child, {})
        items = []
        pos = start
        while pos < end:
            tag = data[pos]
            if tag not in tags:
                raise _bad(f"{spec.__name__}: unexpected element (tag 0x{tag:02x})")
            cstart, clen = _header(data, pos)
            items.append(_read_tagged(child, tag, data, cstart, cstart + clen))
            pos = cstart + clen
        return items
    content = data[start:end]
    if issubclass(spec, core.Boolean):
        if len(content) != 1:
            raise _bad("a BOOLEAN is one byte")
        return content != b"\x00"
    if issubclass(spec, core.Integer):
        if not content:
            raise _bad("an INTEGER has at least one byte")
        if len(content) > MAX_INTEGER_BYTES:  # uptane/policy.py: signed 64-bit only
            n = len(content)
            raise LimitExceeded(f"DER: an INTEGER of {n} bytes is outside the signed 64-bit range")
        return int.from_bytes(content, "big", signed=True)
    if issubclass(spec, core.OctetString):
        return content
    if issubclass(spec, core.UTF8String):
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("a UTF8String is not valid UTF-8") from None
        return check_document_string(text, "DER: a UTF8String")  # uptane/policy.py
    if issubclass(spec, core.VisibleString):
        if not _VISIBLE.fullmatch(content):
            raise _bad("a VisibleString holds only printable ASCII")
        return content.decode("ascii")
    raise TypeError(f"no DER reader for {spec.__name__}")  # pragma: no cover - schema bug


def _read_explicit(spec: Spec, data: bytes, start: int, end: int) -> Any:
    """The value inside an EXPLICIT tag whose contents are ``data[start:end]``: exactly
    one TLV of ``spec``."""
    if start >= end or data[start] not in _tags(spec, {}):
        raise _bad(f"{spec.__name__}: an explicit tag holds no {spec.__name__}")
    cstart, clen = _header(data, start)
    if cstart + clen != end:
        raise _bad(f"{spec.__name__}: an explicit tag holds more than one value")
    return _read_tagged(spec, data[start], data, cstart, cstart + clen)


def _read_tagged(spec: Spec, tag: int, data: bytes, start: int, end: int) -> Any:
    """Like :func:`_read`; a CHOICE becomes ``(alternative name, value)`` by ``tag``."""
    if issubclass(spec, core.Choice):
        name, alt = _alternatives(spec)[tag]
        return (name, _read_tagged(alt, tag, data, start, end))
    return _read(spec, data, start, end)


def _convert(fn: Callable[[], Any], what: str) -> Any:
    """Run a conversion from parsed ASN.1, mapping any stray exception to MalformedInput."""
    try:
        return fn()
    except UptaneError:
        raise
    except Exception as e:
        raise _bad(f"{what}: {_why(e)}") from None


_CHOICES: dict[Spec, dict[str, tuple[Spec, dict[str, Any]]]] = {}


def _alternative(spec: Spec, name: str) -> tuple[Spec, dict[str, Any]]:
    table = _CHOICES.get(spec)
    if table is None:
        table = {a[0]: (a[1], a[2] if len(a) > 2 else {}) for a in spec._alternatives}
        _CHOICES[spec] = table
    if name not in table:
        raise _bad(f"{spec.__name__} has no alternative {name!r}")
    return table[name]


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(spec: Spec, value: Any, params: dict[str, Any] | None = None) -> bytes:
    """DER of ``value`` as ``spec``, one of the schema classes above: a dict for a SEQUENCE
    (absent key: absent OPTIONAL field; a value equal to its DEFAULT is left out), a list
    for a SEQUENCE OF, ``(name, value)`` for a CHOICE, int/bool/bytes/str for primitives.

    asn1crypto parses this schema; encoding walks the same classes directly, because
    building asn1crypto objects and dumping them costs time superlinear in the size of
    large targets metadata. The decoder's re-encoding check keeps the two in step.
    """
    if params and "explicit" in params:
        inner_der = _der(spec, value)
        return bytes([0xA0 | params["explicit"]]) + _length(len(inner_der)) + inner_der
    if issubclass(spec, core.Choice):
        name, inner = value
        alt_spec, alt_params = _alternative(spec, name)
        return _der(alt_spec, inner, alt_params)
    if issubclass(spec, core.Sequence):
        parts = []
        for f in spec._fields:
            name, fspec = f[0], f[1]
            fparams = f[2] if len(f) > 2 else {}
            if name not in value:
                if "optional" not in fparams and "default" not in fparams:
                    raise _bad(f"{spec.__name__}: field {name} is missing")
                continue
            v = value[name]
            if "default" in fparams and v == fparams["default"]:
                continue
            parts.append(_der(fspec, v, fparams))
        if len(value) > len(parts) and set(value) - {f[0] for f in spec._fields}:
            raise _bad(f"{spec.__name__}: unknown fields")
        content, tag = b"".join(parts), 0x30
    elif issubclass(spec, core.SequenceOf):
        content, tag = b"".join(_der(spec._child_spec, v) for v in value), 0x30
    elif issubclass(spec, core.Boolean):
        if not isinstance(value, bool):
            raise _bad("expected a boolean")
        content, tag = (b"\xff" if value else b"\x00"), 0x01
    elif issubclass(spec, core.Integer):
        v = _int(value)
        content, tag = (
            v.to_bytes(((v if v >= 0 else ~v).bit_length() + 8) // 8, "big", signed=True),
            0x0A if issubclass(spec, core.Enumerated) else 0x02,
        )
    elif issubclass(spec, core.OctetString):
        if not isinstance(value, bytes):
            raise _bad("expected bytes")
        content, tag = value, 0x04
    elif issubclass(spec, core.UTF8String):
        if not isinstance(value, str):
            raise _bad("expected a string")
        content, tag = value.encode("utf-8"), 0x0C
    elif issubclass(spec, core.VisibleString):
        if not isinstance(value, str) or not value.isascii():
            raise _bad("expected a string of printable ASCII (an ASN.1 VisibleString)")
        content, tag = value.encode("ascii"), 0x1A
        if not _VISIBLE.fullmatch(content):
            raise _bad("expected a string of printable ASCII (an ASN.1 VisibleString)")
    else:  # pragma: no cover - the schema uses only the types above
        raise TypeError(f"no DER encoder for {spec.__name__}")
    if params and "implicit" in params:
        tag = 0x80 | (tag & 0x20) | params["implicit"]
    return bytes([tag]) + _length(len(content)) + content


def _matches(spec: Spec, value: Any, data: bytes, pos: int, params: dict[str, Any] | None) -> int:
    """Whether ``_der(spec, value, params)`` equals the bytes of ``data`` from ``pos``,
    checked piece by piece without building the encoding; returns the end of the match.

    ``data`` has passed :func:`check_structure`, so its headers use minimal lengths: a
    constructed value matches when its tag is right and its children, matched one after
    another, end exactly where its length says. Any difference raises NonCanonicalEncoding.
    """
    if params and "explicit" in params:
        if pos >= len(data) or data[pos] != 0xA0 | params["explicit"]:
            raise _differs()
        start, length = _header(data, pos)
        if _matches(spec, value, data, start, None) != start + length:
            raise _differs()
        return start + length
    if issubclass(spec, core.Choice):
        name, inner = value
        alt_spec, alt_params = _alternative(spec, name)
        return _matches(alt_spec, inner, data, pos, alt_params)
    constructed = issubclass(spec, (core.Sequence, core.SequenceOf))
    if not constructed:
        enc = _der(spec, value, params)
        if not data.startswith(enc, pos):
            raise _differs()
        return pos + len(enc)
    tag = 0x30
    if params and "implicit" in params:
        tag = 0xA0 | params["implicit"]
    if pos >= len(data) or data[pos] != tag:
        raise _differs()
    start, length = _header(data, pos)
    end, at = start + length, start
    if issubclass(spec, core.Sequence):
        seen = 0
        for f in spec._fields:
            name, fspec = f[0], f[1]
            fparams = f[2] if len(f) > 2 else {}
            if name not in value:
                if "optional" not in fparams and "default" not in fparams:
                    raise _bad(f"{spec.__name__}: field {name} is missing")
                continue
            seen += 1
            v = value[name]
            if "default" in fparams and v == fparams["default"]:
                continue
            at = _matches(fspec, v, data, at, fparams)
        if len(value) > seen:
            raise _bad(f"{spec.__name__}: unknown fields")
    else:
        for v in value:
            at = _matches(spec._child_spec, v, data, at, None)
    if at != end:
        raise _differs()
    return end


def _differs() -> NonCanonicalEncoding:
    return NonCanonicalEncoding("DER: the input is not in the canonical form of its value")


def require_encodes_to(spec: Spec, value: Any, data: bytes, what: str) -> None:
    """Refuse ``data`` (checked by :func:`check_structure`) unless it is exactly the DER of
    ``value`` as ``spec``: :func:`require_same` without building the re-encoding."""
    try:
        if _matches(spec, value, data, 0, None) != len(data):
            raise _differs()
    except NonCanonicalEncoding:
        raise NonCanonicalEncoding(
            f"DER: {what} is not in the canonical form of its value"
        ) from None
    except UptaneError:
        raise
    except Exception as e:
        raise _bad(f"cannot encode {what}: {_why(e)}") from None


def _encode(spec: Spec, fn: Callable[[], Any], what: str) -> bytes:
    try:
        return _der(spec, fn())
    except UptaneError:
        raise
    except Exception as e:
        raise _bad(f"cannot encode {what}: {_why(e)}") from None


def require_same(data: bytes, again: bytes, what: str) -> None:
    """Refuse input whose decoded value does not re-encode to exactly the same bytes."""
    if data != again:
        raise NonCanonicalEncoding(f"DER: {what} is not in the canonical form of its value")


# --- public API: metadata ------------------------------------------------------------------


def encode_signed_dict(signed: dict[str, Any]) -> bytes:
    """DER of the JSON shape of a signed part (``Signed.to_dict()``)."""
    return _encode(SignedAsn, lambda: _signed_to_asn(signed), "signed metadata")


def encode_metadata_dict(doc: dict[str, Any]) -> bytes:
    """DER of the JSON shape of a metadata envelope (``Metadata.to_dict()``)."""
    return _encode(MetadataAsn, lambda: _metadata_to_asn(doc), "metadata")


def encode_signed(signed: Signed) -> bytes:
    """DER of the signed part: the bytes that DER signatures cover."""
    return encode_signed_dict(signed.to_dict())


def encode_metadata(md: Metadata[Any]) -> bytes:
    """DER of the whole envelope {signed, signatures}."""
    return encode_metadata_dict(md.to_dict())


def decode_metadata(
    data: bytes,
    limits: Limits,
    *,
    role_type: str | None = None,
    cap: int | None = None,
) -> Metadata[Any]:
    """Decode DER metadata strictly and under ``limits``; ``role_type`` pins the type,
    ``cap`` bounds the byte length (default: the cap of ``role_type``, else the largest)."""
    if cap is None:
        cap = limits.bytes_for_role(role_type) if role_type else max(limits.role_bytes.values())
    what = f"{role_type or 'metadata'} DER"
    data, asn = _parse(data, MetadataAsn, limits, cap, what)

    def to_doc(asn: dict[str, Any]) -> dict[str, Any]:
        return {
            **_get_unrec(asn, limits),
            "signed": _signed_from_asn(asn["signed"], limits),
            "signatures": _sigs_from_asn(asn["signatures"], limits),
        }

    doc = _convert(functools.partial(to_doc, asn), what)
    del asn  # each stage's tree is dropped once the next is built: peak memory, not speed
    check_tree(doc, limits)  # the JSON path's generic caps: depth, every string, item count
    signed_d = doc.pop("signed")
    sigs = doc.pop("signatures")
    t = signed_d["_type"]
    if role_type is not None and t != role_type:
        raise MalformedInput(f"expected {role_type} metadata, got {t}", role=role_type)
    signed = ROLE_CLASSES[t].from_dict(signed_d, limits)
    del signed_d
    md = Metadata(
        signed,
        signatures_from_dicts(sigs, limits),
        COMPACT_DER,
        _signed_span(data),
        doc,
    )
    # the model, encoded again, must give the input bytes (compared piece by piece)
    require_encodes_to(MetadataAsn, _metadata_to_asn(_model_shape(md)), data, what)
    return md


class _ShapeOnDemand(dict):  # type: ignore[type-arg]
    """path -> TargetFile, read as path -> the entry's JSON shape, built when asked for."""

    def __getitem__(self, path: str) -> Any:
        return dict.__getitem__(self, path).to_dict()


def _model_shape(md: Metadata[Any]) -> dict[str, Any]:
    """``md.to_dict()``, except that a targets role's entries are shaped one at a time as
    the re-encoding check reaches them, instead of all at once (peak memory of a
    constrained Secondary: the shapes of a 16 KiB file's targets are about 20 KiB)."""
    signed = md.signed
    if isinstance(signed, Targets) and signed.targets:
        shell = copy.copy(signed)
        shell.targets = {}
        signed_d = shell.to_dict()
        signed_d["targets"] = _ShapeOnDemand(signed.targets)
    else:
        signed_d = signed.to_dict()
    return {
        "signatures": [s.to_dict() for s in md.signatures],
        "signed": signed_d,
        **md.unrecognized,
    }


# --- public API: manifests -----------------------------------------------------------------


def encode_manifest_signed(signed: dict[str, Any]) -> bytes:
    """DER of the JSON shape of a manifest's signed part (ECU version report or VVM)."""
    if _manifest_kind_of(signed) == ECU_REPORT_TYPE:
        return _encode(EcuVersionReportSigned, lambda: _report_signed_to_asn(signed), "report")
    return _encode(VehicleVersionManifestSigned, lambda: _vvm_signed_to_asn(signed), "manifest")


def encode_manifest(doc: dict[str, Any]) -> bytes:
    """DER of a manifest envelope {signed, signatures} in its JSON shape."""
    signed = doc.get("signed") if isinstance(doc, dict) else None
    if _manifest_kind_of(signed) == ECU_REPORT_TYPE:
        return _encode(EcuVersionReport, lambda: _report_to_asn(doc), "report")

    def build() -> dict[str, Any]:
        known, rest = _split(doc, ("signed", "signatures"), "manifest")
        if rest:
            raise _bad("a manifest envelope has fields DER cannot carry")
        return {
            "signed": _vvm_signed_to_asn(_need(known, "signed", "manifest")),
            "signatures": _sigs_to_asn(_need(known, "signatures", "manifest")),
        }

    return _encode(VehicleVersionManifest, build, "manifest")


def decode_manifest(
    data: bytes, limits: Limits, *, kind: str | None = None, cap: int | None = None
) -> tuple[dict[str, Any], bytes]:
    """Decode a DER manifest envelope of ``kind`` (``ECU_REPORT_TYPE`` or ``VVM_TYPE``; None:
    either, told apart by its structure) into its JSON shape, strictly and under ``limits``
    (default cap ``limits.manifest_bytes``).

    Returns the envelope dict and the exact bytes of its signed part. The caller builds its
    model from the dict and must check :func:`require_same` against the model re-encoded.
    """
    cap = limits.manifest_bytes if cap is None else cap
    if kind is None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise _bad("manifest: expected bytes")
        data = bytes(data)
        if len(data) > cap:
            raise EndlessDataAttack(f"manifest: {len(data)} bytes exceeds the {cap}-byte cap")
        check_structure(data, limits, cap)
        kind = _manifest_kind(data)
    spec: type[core.Sequence]
    if kind == ECU_REPORT_TYPE:
        spec, signed_fn = EcuVersionReport, _report_signed_from_asn
    elif kind == VVM_TYPE:
        spec, signed_fn = VehicleVersionManifest, _vvm_signed_from_asn
    else:
        raise ValueError(f"unknown manifest kind {kind!r}")
    what = f"{kind} DER"
    data, asn = _parse(data, spec, limits, cap, what)

    def to_doc() -> dict[str, Any]:
        return {
            "signed": signed_fn(asn["signed"], limits),
            "signatures": _sigs_from_asn(asn["signatures"], limits),
        }

    doc = _convert(to_doc, what)
    check_tree(doc, limits)  # the JSON path's generic caps: depth, every string, item count
    return doc, _signed_span(data)
