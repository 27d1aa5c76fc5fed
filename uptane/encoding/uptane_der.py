"""Uptane metadata, map files and manifests in the standard DER of the Uptane ASN.1 modules.

The schema is :data:`uptane.encoding.uptane_schema.SCHEMA` (the uptane/asn1 modules as
POUF 1 publishes them, with Standard 2.x extension additions; docs/der-profile.md). The
asn1crypto classes below mirror it field by field with the tags AUTOMATIC TAGS gives:
each SEQUENCE component ``[n]`` IMPLICIT in order (EXPLICIT for the CHOICE ``body``), the
extension additions numbered on after the root components. Reading and writing are
der.py's bounded engine (:func:`~uptane.encoding.der.check_structure`, ``_read``,
``_der``, ``_matches``): the same strict, canonical DER, refused with the project's errors.

**What is signed and how** (as the reference implementation and POUF 1 do): every
signature is made over the 32-byte SHA-256 digest of the DER of the signed part (the
``Signed`` SEQUENCE, or an ECU report's or vehicle manifest's signed SEQUENCE), with the
key's scheme; ``Signature.hash`` carries ``{sha256, that digest}`` and ``method`` names the
scheme. So the bytes a signature covers (``Metadata.signed_bytes``) are that digest. A
decoder requires every ``hash`` to be exactly that digest (the re-encoding check does it).

Everything the model carries is written, or the encoder refuses with
:class:`~uptane.errors.MalformedInput` naming what the modules cannot hold (for example a
string that is not printable ASCII where the modules say ``VisibleString``, a hash
algorithm that is not a ``HashFunction``, a key type that is not a ``PublicKeyType``, a
field this code does not know). ``spec_version`` is not in the modules: a decoded role
has :data:`uptane.metadata.SPEC_VERSION`.

Decoding is strict and bounded exactly as in der.py: byte cap, the TLV walk, the schema
reader, the JSON shape through the JSON path's caps and the model's ``from_dict``, and the
decoded value re-encoded must equal the input (every ``numberOf…`` count, DEFAULT left
out, the canonical choices of docs/der-profile.md).
"""

# mypy: disallow-subclassing-any=False
# (the schema classes subclass asn1crypto's, which has no type information)

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

from asn1crypto import core

from uptane.encoding import der
from uptane.encoding.der import (
    _bad,
    _convert,
    _encode,
    _int,
    _json_from_asn,
    _json_to_asn,
    _model_shape,
    _parse,
    _pem,
    _pem_body,
    _signed_span,
    _time_from_int,
    _time_to_int,
    check_structure,
    require_encodes_to,
    require_same,
)
from uptane.encoding.json import canonical, check_tree
from uptane.encoding.registry import DER
from uptane.errors import EndlessDataAttack, MalformedInput, UnsupportedAlgorithm
from uptane.limits import Limits
from uptane.manifest import ECU_REPORT, VEHICLE_MANIFEST
from uptane.metadata import (
    ROLE_CLASSES,
    SPEC_VERSION,
    MapFile,
    Metadata,
    Signed,
    signatures_from_dicts,
)

Spec = type[Any]


def _t(n: int, **more: Any) -> dict[str, Any]:
    return {"implicit": n, **more}


def _o(n: int) -> dict[str, Any]:
    return {"implicit": n, "optional": True}


# --- CommonModule ------------------------------------------------------------------------


class Enumerated(core.Enumerated):
    _map: dict[int, str] = {}


class VisibleStrings(core.SequenceOf):
    _child_spec = core.VisibleString


class Hash(core.Sequence):
    _fields = [("function", Enumerated, _t(0)), ("digest", core.OctetString, _t(1))]


class Hashes(core.SequenceOf):
    _child_spec = Hash


class Keyids(core.SequenceOf):
    _child_spec = core.OctetString


class Signature(core.Sequence):
    _fields = [
        ("keyid", core.OctetString, _t(0)),
        ("method", Enumerated, _t(1)),
        ("hash", Hash, _t(2)),
        ("value", core.OctetString, _t(3)),
    ]


class Signatures(core.SequenceOf):
    _child_spec = Signature


class PublicKey(core.Sequence):
    _fields = [
        ("publicKeyid", core.OctetString, _t(0)),
        ("publicKeyType", Enumerated, _t(1)),
        ("publicKeyValue", core.OctetString, _t(2)),
    ]


class PublicKeys(core.SequenceOf):
    _child_spec = PublicKey


# --- RootModule ----------------------------------------------------------------------------


class TopLevelRole(core.Sequence):
    _fields = [
        ("role", Enumerated, _t(0)),
        ("numberOfURLs", core.Integer, _o(1)),
        ("urls", VisibleStrings, _o(2)),
        ("numberOfKeyids", core.Integer, _t(3)),
        ("keyids", Keyids, _t(4)),
        ("threshold", core.Integer, _t(5)),
    ]


class TopLevelRoles(core.SequenceOf):
    _child_spec = TopLevelRole


class RootMetadata(core.Sequence):
    _fields = [
        ("numberOfKeys", core.Integer, _t(0)),
        ("keys", PublicKeys, _t(1)),
        ("numberOfRoles", core.Integer, _t(2)),
        ("roles", TopLevelRoles, _t(3)),
        ("consistentSnapshot", core.Boolean, _t(4, default=False)),
    ]


# --- SnapshotModule, TimestampModule -------------------------------------------------------


class SnapshotMetadataFile(core.Sequence):
    _fields = [
        ("filename", core.VisibleString, _t(0)),
        ("version", core.Integer, _t(1)),
        ("length", core.Integer, _o(2)),
        ("hashes", Hashes, _o(3)),
    ]


class SnapshotMetadataFiles(core.SequenceOf):
    _child_spec = SnapshotMetadataFile


class SnapshotMetadata(core.Sequence):
    _fields = [
        ("numberOfSnapshotMetadataFiles", core.Integer, _t(0)),
        ("snapshotMetadataFiles", SnapshotMetadataFiles, _t(1)),
    ]


class TimestampMetadata(core.Sequence):
    _fields = [
        ("filename", core.VisibleString, _t(0)),
        ("version", core.Integer, _t(1)),
        ("length", core.Integer, _t(2)),
        ("numberOfHashes", core.Integer, _t(3)),
        ("hashes", Hashes, _t(4)),
    ]


# --- TargetsModule ---------------------------------------------------------------------------


class Target(core.Sequence):
    _fields = [
        ("filename", core.VisibleString, _t(0)),
        ("length", core.Integer, _t(1)),
        ("numberOfHashes", core.Integer, _t(2)),
        ("hashes", Hashes, _t(3)),
    ]


class EncryptedSymmetricKey(core.Sequence):
    _fields = [
        ("encryptedSymmetricKeyType", Enumerated, _t(0)),
        ("encryptedSymmetricKeyValue", core.OctetString, _t(1)),
    ]


class EcuIdentifier(core.Sequence):
    _fields = [
        ("ecuIdentifier", core.VisibleString, _t(0)),
        ("hardwareIdentifier", core.VisibleString, _t(1)),
    ]


class EcuIdentifiers(core.SequenceOf):
    _child_spec = EcuIdentifier


class EcuWrappedKey(core.Sequence):
    _fields = [
        ("ecuIdentifier", core.VisibleString, _t(0)),
        ("keyid", core.OctetString, _t(1)),
        ("wrappedKey", core.OctetString, _t(2)),
    ]


class EcuWrappedKeys(core.SequenceOf):
    _child_spec = EcuWrappedKey


class DeltaImage(core.Sequence):
    _fields = [
        ("format", core.VisibleString, _t(0)),
        ("base", Target, _t(1)),
        ("target", Target, _t(2)),
    ]


class Custom(core.Sequence):
    _fields = [
        ("releaseCounter", core.Integer, _o(0)),
        ("hardwareIdentifier", core.VisibleString, _o(1)),
        ("ecuIdentifier", core.VisibleString, _o(2)),
        ("encryptedTarget", Target, _o(3)),
        ("encryptedSymmetricKey", EncryptedSymmetricKey, _o(4)),
        # extension additions
        ("hardwareIdentifiers", VisibleStrings, _o(5)),
        ("ecuIdentifiers", EcuIdentifiers, _o(6)),
        ("encryptionMethod", core.VisibleString, _o(7)),
        ("wrappedKeys", EcuWrappedKeys, _o(8)),
        ("url", core.VisibleString, _o(9)),
        ("delta", DeltaImage, _o(10)),
        ("shallMatch", core.OctetString, _o(11)),
        ("otherCustom", core.OctetString, _o(12)),
    ]


class TargetAndCustom(core.Sequence):
    _fields = [("target", Target, _t(0)), ("custom", Custom, _o(1))]


class Targets(core.SequenceOf):
    _child_spec = TargetAndCustom


class MultiRole(core.Sequence):
    _fields = [
        ("rolename", core.VisibleString, _t(0)),
        ("numberOfKeyids", core.Integer, _t(1)),
        ("keyids", Keyids, _t(2)),
        ("threshold", core.Integer, _t(3)),
    ]


class MultiRoles(core.SequenceOf):
    _child_spec = MultiRole


class PathsToRoles(core.Sequence):
    _fields = [
        ("numberOfPaths", core.Integer, _t(0)),
        ("paths", VisibleStrings, _t(1)),
        ("numberOfRoles", core.Integer, _t(2)),
        ("roles", MultiRoles, _t(3)),
        ("terminating", core.Boolean, _t(4, default=False)),
    ]


class PrioritizedPathsToRoles(core.SequenceOf):
    _child_spec = PathsToRoles


class TargetsDelegations(core.Sequence):
    _fields = [
        ("numberOfKeys", core.Integer, _t(0)),
        ("keys", PublicKeys, _t(1)),
        ("numberOfDelegations", core.Integer, _t(2)),
        ("delegations", PrioritizedPathsToRoles, _t(3)),
    ]


class UptaneDelegatedRole(core.Sequence):
    _fields = [
        ("rolename", core.VisibleString, _t(0)),
        ("keyids", Keyids, _t(1)),
        ("threshold", core.Integer, _t(2)),
        ("terminating", core.Boolean, _t(3, default=False)),
        ("paths", VisibleStrings, _o(4)),
        ("pathHashPrefixes", VisibleStrings, _o(5)),
        ("hardwareIdentifiers", VisibleStrings, _o(6)),
        ("minRolesInAgreement", core.Integer, _o(7)),
        ("multiRoles", MultiRoles, _o(8)),
    ]


class UptaneDelegatedRoles(core.SequenceOf):
    _child_spec = UptaneDelegatedRole


class SuccinctRoles(core.Sequence):
    _fields = [
        ("keyids", Keyids, _t(0)),
        ("threshold", core.Integer, _t(1)),
        ("bitLength", core.Integer, _t(2)),
        ("namePrefix", core.VisibleString, _t(3)),
    ]


class UptaneDelegations(core.Sequence):
    _fields = [
        ("keys", PublicKeys, _t(0)),
        ("roles", UptaneDelegatedRoles, _o(1)),
        ("succinctRoles", SuccinctRoles, _o(2)),
    ]


class TargetsMetadata(core.Sequence):
    _fields = [
        ("numberOfTargets", core.Integer, _t(0)),
        ("targets", Targets, _t(1)),
        ("delegations", TargetsDelegations, _o(2)),
        ("vehicleIdentifier", core.VisibleString, _o(3)),
        ("uptaneDelegations", UptaneDelegations, _o(4)),
    ]


# --- MetadataModule ------------------------------------------------------------------------


class SignedBody(core.Choice):
    _alternatives = [
        ("rootMetadata", RootMetadata, _t(0)),
        ("targetsMetadata", TargetsMetadata, _t(1)),
        ("snapshotMetadata", SnapshotMetadata, _t(2)),
        ("timestampMetadata", TimestampMetadata, _t(3)),
    ]


class SignedAsn(core.Sequence):
    _fields = [
        ("type", Enumerated, _t(0)),
        ("expires", core.Integer, _t(1)),
        ("version", core.Integer, _t(2)),
        ("body", SignedBody, {"explicit": 3}),  # AUTOMATIC TAGS: a CHOICE is tagged EXPLICIT
    ]


class MetadataAsn(core.Sequence):
    _fields = [
        ("signed", SignedAsn, _t(0)),
        ("numberOfSignatures", core.Integer, _t(1)),
        ("signatures", Signatures, _t(2)),
    ]


# --- MapFileModule ---------------------------------------------------------------------------


class Repository(core.Sequence):
    _fields = [
        ("name", core.VisibleString, _t(0)),
        ("numberOfServers", core.Integer, _t(1)),
        ("servers", VisibleStrings, _t(2)),
    ]


class Repositories(core.SequenceOf):
    _child_spec = Repository


class MappingAsn(core.Sequence):
    _fields = [
        ("numberOfPaths", core.Integer, _t(0)),
        ("paths", VisibleStrings, _t(1)),
        ("numberOfRepositories", core.Integer, _t(2)),
        ("repositories", VisibleStrings, _t(3)),
        ("terminating", core.Boolean, _t(4, default=False)),
        ("threshold", core.Integer, _o(5)),
    ]


class Mappings(core.SequenceOf):
    _child_spec = MappingAsn


class MapFileAsn(core.Sequence):
    _fields = [
        ("numberOfRepositories", core.Integer, _t(0)),
        ("repositories", Repositories, _t(1)),
        ("numberOfMappings", core.Integer, _t(2)),
        ("mappings", Mappings, _t(3)),
    ]


# --- ECUModule -------------------------------------------------------------------------------


class ECUVersionManifestSigned(core.Sequence):
    _fields = [
        ("ecuIdentifier", core.VisibleString, _t(0)),
        ("previousTime", core.Integer, _t(1)),
        ("currentTime", core.Integer, _t(2)),
        ("securityAttack", core.VisibleString, _o(3)),
        ("installedImage", Target, _t(4)),
        ("nonce", core.OctetString, _o(5)),
        ("counter", core.Integer, _o(6)),
        ("releaseCounter", core.Integer, _o(7)),
        ("otherFields", core.OctetString, _o(8)),
    ]


class ECUVersionManifest(core.Sequence):
    _fields = [
        ("signed", ECUVersionManifestSigned, _t(0)),
        ("numberOfSignatures", core.Integer, _t(1)),
        ("signatures", Signatures, _t(2)),
    ]


class ECUVersionManifests(core.SequenceOf):
    _child_spec = ECUVersionManifest


class UnreachableEcu(core.Sequence):
    _fields = [
        ("ecuIdentifier", core.VisibleString, _t(0)),
        ("reason", core.UTF8String, _t(1)),
        ("lastSeen", core.Integer, _o(2)),
    ]


class UnreachableEcus(core.SequenceOf):
    _child_spec = UnreachableEcu


class VehicleVersionManifestSigned(core.Sequence):
    _fields = [
        ("vehicleIdentifier", core.VisibleString, _t(0)),
        ("primaryIdentifier", core.VisibleString, _t(1)),
        ("numberOfECUVersionManifests", core.Integer, _t(2)),
        ("ecuVersionManifests", ECUVersionManifests, _t(3)),
        ("securityAttack", core.VisibleString, _o(4)),
        ("unreachableEcus", UnreachableEcus, _o(5)),
        ("otherFields", core.OctetString, _o(6)),
    ]


class VehicleVersionManifest(core.Sequence):
    _fields = [
        ("signed", VehicleVersionManifestSigned, _t(0)),
        ("numberOfSignatures", core.Integer, _t(1)),
        ("signatures", Signatures, _t(2)),
    ]


# --- enumerations ----------------------------------------------------------------------------

ROLE_TYPES = ("root", "targets", "snapshot", "timestamp")
BODIES = ("rootMetadata", "targetsMetadata", "snapshotMetadata", "timestampMetadata")
#: HashFunction, by the model's algorithm names (hashlib's)
HASH_FUNCTIONS = ("sha224", "sha256", "sha384", "sha512", "sha512_224", "sha512_256")
SHA256 = HASH_FUNCTIONS.index("sha256")
#: SignatureMethod (``ecdsa-sha2-nistp256`` an extension value), by the model's schemes
SIGNATURE_METHODS = ("rsassa-pss-sha256", "ed25519", "ecdsa-sha2-nistp256")
#: PublicKeyType (``ecdsa`` an extension value) -> the model's (keytype, scheme)
KEY_TYPES = (("rsa", "rsassa-pss-sha256"), ("ed25519", "ed25519"), ("ecdsa", "ecdsa-sha2-nistp256"))
AES256 = 2  # EncryptedSymmetricKeyType: the content keys of uptane/encryption.py
#: the file name a timestamp lists (the model's, as the reference implementation writes it)
SNAPSHOT_FILE = "snapshot.json"


# --- small conversions -----------------------------------------------------------------------


def _cannot(what: str, why: str) -> MalformedInput:
    return _bad(f"{what} cannot be written in Uptane DER: {why}")


def _enum(names: tuple[Any, ...], value: Any, what: str) -> int:
    if value not in names:
        raise _cannot(what, f"{str(value)[:40]!r} is not one of {names}")
    return names.index(value)


def _named(names: tuple[Any, ...], code: int, what: str) -> Any:
    if not 0 <= code < len(names):
        raise UnsupportedAlgorithm(f"DER: {what} value {code} is not supported")
    return names[code]


def _raw(value: Any, what: str) -> bytes:
    """A model hex string as raw bytes: it must be lowercase, even-length hex."""
    if not isinstance(value, str) or not der._HEX.fullmatch(value) or not value:
        raise _cannot(what, "not lowercase hex")
    return bytes.fromhex(value)


def _only(d: Any, known: tuple[str, ...], what: str) -> dict[str, Any]:
    """``d`` (a JSON-shape object) with exactly the ``known`` fields among its keys."""
    if not isinstance(d, dict):
        raise _bad(f"{what} must be an object")
    extra = [k for k in d if k not in known]
    if extra:
        raise _cannot(what, f"fields {sorted(extra)[:4]} have no place in the modules")
    return d


def _need(d: dict[str, Any], key: str, what: str) -> Any:
    if key not in d:
        raise _bad(f"{what}: missing field {key!r}")
    return d[key]


def _counted(asn: dict[str, Any], count: str, items: str) -> list[Any]:
    """``asn[items]``, whose ``numberOf…`` field ``count`` must say how many it holds."""
    value: list[Any] = asn[items]
    if _int(asn[count]) != len(value):
        raise _bad(f"{count} is {asn[count]}, the list holds {len(value)}")
    return value


def _strings(values: Any, what: str) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise _bad(f"{what} must be a list of strings")
    return list(values)


def _hashes_to_asn(hashes: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(hashes, dict) or not hashes:
        raise _cannot(what, "Hashes holds at least one hash")
    return [
        {"function": _enum(HASH_FUNCTIONS, alg, f"{what} hash"), "digest": _raw(h, f"{what} hash")}
        for alg, h in hashes.items()
    ]


def _hashes_from_asn(asn: list[dict[str, Any]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for h in asn:
        alg = _named(HASH_FUNCTIONS, h["function"], "HashFunction")
        if alg in out:
            raise _bad("a hash algorithm appears twice")
        out[alg] = bytes(h["digest"]).hex()
    return out


def _target_to_asn(path: Any, d: Any, what: str) -> dict[str, Any]:
    hashes = _hashes_to_asn(_need(d, "hashes", what), what)
    return {
        "filename": path,
        "length": _int(_need(d, "length", what)),
        "numberOfHashes": len(hashes),
        "hashes": hashes,
    }


def _target_from_asn(asn: dict[str, Any]) -> dict[str, Any]:
    return {
        "filename": asn["filename"],
        "length": _int(asn["length"]),
        "hashes": _hashes_from_asn(_counted(asn, "numberOfHashes", "hashes")),
    }


# --- keys and signatures -----------------------------------------------------------------------


def _keys_to_asn(keys: Any) -> list[dict[str, Any]]:
    if not isinstance(keys, dict):
        raise _bad("keys must be an object")
    out = []
    for kid, k in keys.items():
        k = _only(k, ("keytype", "scheme", "keyval"), "key")
        kind = _enum(KEY_TYPES, (k.get("keytype"), k.get("scheme")), "key type and scheme")
        keyval = _need(k, "keyval", "key")
        public = keyval.get("public") if isinstance(keyval, dict) and len(keyval) == 1 else None
        if not isinstance(public, str):
            raise _cannot("key", "keyval must hold exactly 'public'")
        value = _raw(public, "ed25519 key") if kind == 1 else _pem_body(public)
        if value is None or (kind == 1 and len(value) != 32):
            raise _cannot("key", "not a 32-byte ed25519 key or a PEM public key")
        out.append(
            {"publicKeyid": _raw(kid, "key id"), "publicKeyType": kind, "publicKeyValue": value}
        )
    return out


def _keys_from_asn(asn: list[dict[str, Any]], limits: Limits) -> dict[str, Any]:
    limits.check_count("keys", len(asn), limits.max_keys)
    out: dict[str, Any] = {}
    for k in asn:
        kid = bytes(k["publicKeyid"]).hex()
        if kid in out:
            raise _bad("a key id appears twice")
        keytype, scheme = _named(KEY_TYPES, k["publicKeyType"], "PublicKeyType")
        raw = bytes(k["publicKeyValue"])
        if keytype == "ed25519" and len(raw) != 32:
            raise _bad("an ed25519 public key is 32 bytes")
        public = raw.hex() if keytype == "ed25519" else _pem(raw)
        out[kid] = {"keytype": keytype, "scheme": scheme, "keyval": {"public": public}}
    return out


def guess_method(sig: bytes) -> str:
    """The method of a signature made without one (built by hand): 64 bytes is ed25519, a
    DER ECDSA-Sig-Value (at most 72 bytes, a SEQUENCE) ecdsa, anything else RSA-PSS."""
    if len(sig) == 64:
        return "ed25519"
    if 8 <= len(sig) <= 72 and sig[0] == 0x30:
        return "ecdsa-sha2-nistp256"
    return "rsassa-pss-sha256"


def _sigs_to_asn(sigs: Any, digest: bytes) -> list[dict[str, Any]]:
    if not isinstance(sigs, list):
        raise _bad("signatures must be a list")
    out = []
    for s in sigs:
        s = _only(s, ("keyid", "sig", "method"), "signature")
        value = _raw(_need(s, "sig", "signature"), "signature")
        method = s.get("method") or guess_method(value)
        out.append(
            {
                "keyid": _raw(_need(s, "keyid", "signature"), "signature key id"),
                "method": _enum(SIGNATURE_METHODS, method, "signature method"),
                "hash": {"function": SHA256, "digest": digest},
                "value": value,
            }
        )
    return out


def _sigs_from_asn(asn: dict[str, Any], limits: Limits) -> list[dict[str, Any]]:
    sigs = _counted(asn, "numberOfSignatures", "signatures")
    limits.check_count("signatures", len(sigs), limits.max_signatures)
    out = []
    for s in sigs:
        if s["hash"]["function"] != SHA256:
            raise UnsupportedAlgorithm("DER: a signature's hash is not SHA-256")
        out.append(
            {
                "keyid": bytes(s["keyid"]).hex(),
                "sig": bytes(s["value"]).hex(),
                "method": _named(SIGNATURE_METHODS, s["method"], "SignatureMethod"),
            }
        )
    return out


#: the signed part as it stands in its envelope: the envelope's first field, ``[0]``
SIGNED_TAG = {"implicit": 0}


def _encode_signed_part(spec: Spec, fn: Callable[[], Any], what: str) -> bytes:
    """DER of a signed part as it stands in its envelope (its ``[0]`` tag included): the
    bytes whose SHA-256 the signatures are made over."""
    return _convert(lambda: der._der(spec, fn(), SIGNED_TAG), f"cannot encode {what}")  # type: ignore[no-any-return]


def _digest(signed_der: bytes | memoryview) -> bytes:
    """What every signature is made over: SHA-256 of the DER of the signed part."""
    return hashlib.sha256(signed_der).digest()


# --- root, snapshot, timestamp -----------------------------------------------------------------

_COMMON = ("_type", "version", "spec_version", "expires")


def _root_to_asn(d: dict[str, Any]) -> dict[str, Any]:
    _only(d, (*_COMMON, "consistent_snapshot", "keys", "roles"), "root")
    keys = _keys_to_asn(_need(d, "keys", "root"))
    roles = []
    for name, r in _need(d, "roles", "root").items():
        r = _only(r, ("keyids", "threshold", "urls"), "root role")
        keyids = [_raw(k, "key id") for k in _strings(_need(r, "keyids", "role"), "keyids")]
        asn: dict[str, Any] = {
            "role": _enum(ROLE_TYPES, name, "root role"),
            "numberOfKeyids": len(keyids),
            "keyids": keyids,
            "threshold": _int(_need(r, "threshold", "role")),
        }
        if "urls" in r:  # TAP 5, kept in the model as an unrecognized field
            asn["urls"] = _strings(r["urls"], "urls")
            asn["numberOfURLs"] = len(asn["urls"])
        roles.append(asn)
    cs = d.get("consistent_snapshot", False)
    if not isinstance(cs, bool):
        raise _bad("consistent_snapshot must be a boolean")
    return {
        "numberOfKeys": len(keys),
        "keys": keys,
        "numberOfRoles": len(roles),
        "roles": roles,
        "consistentSnapshot": cs,
    }


def _root_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    roles: dict[str, Any] = {}
    for r in _counted(asn, "numberOfRoles", "roles"):
        name = _named(ROLE_TYPES, r["role"], "RoleType")
        if name in roles:
            raise _bad(f"root role {name} appears twice")
        keyids = [bytes(k).hex() for k in _counted(r, "numberOfKeyids", "keyids")]
        roles[name] = {"keyids": keyids, "threshold": _int(r["threshold"])}
        if ("urls" in r) != ("numberOfURLs" in r):
            raise _bad("numberOfURLs and urls go together")
        if "urls" in r:
            roles[name]["urls"] = _counted(r, "numberOfURLs", "urls")
    return {
        "consistent_snapshot": asn.get("consistentSnapshot", False),
        "keys": _keys_from_asn(_counted(asn, "numberOfKeys", "keys"), limits),
        "roles": roles,
    }


def _metafile_fields(d: Any, what: str) -> dict[str, Any]:
    d = _only(d, ("version", "length", "hashes"), what)
    out: dict[str, Any] = {"version": _int(_need(d, "version", what))}
    if "length" in d:
        out["length"] = _int(d["length"])
    if "hashes" in d:
        out["hashes"] = _hashes_to_asn(d["hashes"], what)
    return out


def _snapshot_to_asn(d: dict[str, Any]) -> dict[str, Any]:
    _only(d, (*_COMMON, "meta"), "snapshot")
    files = [
        {"filename": name, **_metafile_fields(m, "snapshot entry")}
        for name, m in _need(d, "meta", "snapshot").items()
    ]
    return {"numberOfSnapshotMetadataFiles": len(files), "snapshotMetadataFiles": files}


def _snapshot_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    files = _counted(asn, "numberOfSnapshotMetadataFiles", "snapshotMetadataFiles")
    limits.check_count("snapshot entries", len(files), limits.max_snapshot_entries)
    meta: dict[str, Any] = {}
    for f in files:
        if f["filename"] in meta:
            raise _bad("a snapshot entry appears twice")
        entry: dict[str, Any] = {"version": _int(f["version"])}
        if "length" in f:
            entry["length"] = _int(f["length"])
        if "hashes" in f:
            entry["hashes"] = _hashes_from_asn(f["hashes"])
        meta[f["filename"]] = entry
    return {"meta": meta}


def _timestamp_to_asn(d: dict[str, Any]) -> dict[str, Any]:
    _only(d, (*_COMMON, "meta"), "timestamp")
    meta = _need(d, "meta", "timestamp")
    if not isinstance(meta, dict) or set(meta) != {SNAPSHOT_FILE}:
        raise _bad("a timestamp lists exactly snapshot.json")
    fields = _metafile_fields(meta[SNAPSHOT_FILE], "timestamp entry")
    if "length" not in fields or "hashes" not in fields:
        raise _cannot("timestamp", "TimestampMetadata needs the snapshot's length and hashes")
    return {
        "filename": SNAPSHOT_FILE,
        "version": fields["version"],
        "length": fields["length"],
        "numberOfHashes": len(fields["hashes"]),
        "hashes": fields["hashes"],
    }


def _timestamp_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    if asn["filename"] != SNAPSHOT_FILE:
        raise _bad(f"a timestamp lists {SNAPSHOT_FILE}, not {asn['filename'][:64]!r}")
    entry = {
        "version": _int(asn["version"]),
        "length": _int(asn["length"]),
        "hashes": _hashes_from_asn(_counted(asn, "numberOfHashes", "hashes")),
    }
    return {"meta": {SNAPSHOT_FILE: entry}}


# --- targets ------------------------------------------------------------------------------------

_CUSTOM_KNOWN = (
    "releaseCounter",
    "hardwareIds",
    "ecuIdentifiers",
    "encryptedImage",
    "uri",
    "delta",
    "shallMatch",
)


def _ecus_to_asn(ecus: Any, hardware: list[str], asn: dict[str, Any]) -> None:
    if not isinstance(ecus, dict):
        raise _bad("ecuIdentifiers must be an object")
    pairs = []
    for ecu, info in ecus.items():
        info = _only(info, ("hardwareId",), "ecuIdentifiers entry")
        pairs.append({"ecuIdentifier": ecu, "hardwareIdentifier": _need(info, "hardwareId", "")})
    # the modules' one ecuIdentifier when one ECU has the target's one hardware id
    if len(pairs) == 1 and hardware == [pairs[0]["hardwareIdentifier"]]:
        asn["ecuIdentifier"] = pairs[0]["ecuIdentifier"]
    elif pairs:
        asn["ecuIdentifiers"] = pairs


def _encrypted_to_asn(e: Any, asn: dict[str, Any]) -> None:
    e = _only(e, ("filename", "length", "hashes", "wrappedKey", "method", "wrappedKeys"), "enc")
    asn["encryptedTarget"] = _target_to_asn(_need(e, "filename", "encryptedImage"), e, "enc")
    wrapped = _need(e, "wrappedKey", "encryptedImage")
    if wrapped:
        asn["encryptedSymmetricKey"] = {
            "encryptedSymmetricKeyType": AES256,
            "encryptedSymmetricKeyValue": _raw(wrapped, "wrappedKey"),
        }
    asn["encryptionMethod"] = _need(e, "method", "encryptedImage")
    if "wrappedKeys" in e:
        asn["wrappedKeys"] = [
            {
                "ecuIdentifier": ecu,
                "keyid": _raw(_need(_only(k, ("keyid", "value"), "wk"), "keyid", "wk"), "keyid"),
                "wrappedKey": _raw(_need(k, "value", "wrappedKeys entry"), "wrapped key"),
            }
            for ecu, k in e["wrappedKeys"].items()
        ]


def _custom_to_asn(custom: Any) -> dict[str, Any]:
    if not isinstance(custom, dict):
        raise _bad("custom must be an object")
    asn: dict[str, Any] = {}
    if "releaseCounter" in custom:
        asn["releaseCounter"] = _int(custom["releaseCounter"])
    hardware = _strings(custom.get("hardwareIds", []), "hardwareIds")
    if len(hardware) == 1:
        asn["hardwareIdentifier"] = hardware[0]
    elif hardware:
        asn["hardwareIdentifiers"] = hardware
    if "ecuIdentifiers" in custom:
        _ecus_to_asn(custom["ecuIdentifiers"], hardware, asn)
    if "encryptedImage" in custom:
        _encrypted_to_asn(custom["encryptedImage"], asn)
    if "uri" in custom:
        asn["url"] = custom["uri"]
    if "delta" in custom:
        d = _only(custom["delta"], ("format", "base", "target"), "delta")
        asn["delta"] = {
            "format": _need(d, "format", "delta"),
            "base": _target_to_asn(_need(d["base"], "filename", "delta"), d["base"], "delta"),
            "target": _target_to_asn(_need(d["target"], "filename", "delta"), d["target"], "delta"),
        }
    if "shallMatch" in custom:
        asn["shallMatch"] = _json_to_asn(custom["shallMatch"])
    other = {k: v for k, v in custom.items() if k not in _CUSTOM_KNOWN}
    if other:
        asn["otherCustom"] = canonical(other)
    return asn


def _entry_to_asn(path: str, d: Any) -> dict[str, Any]:
    d = _only(d, ("length", "hashes", "custom"), "target")
    asn: dict[str, Any] = {"target": _target_to_asn(path, d, "target")}
    if "custom" in d:
        asn["custom"] = _custom_to_asn(d["custom"])
    return asn


def _ecus_from_asn(c: dict[str, Any], custom: dict[str, Any]) -> None:
    if "ecuIdentifier" in c:
        hardware = c.get("hardwareIdentifier")
        if hardware is None or "ecuIdentifiers" in c:
            raise _bad("ecuIdentifier needs the target's one hardwareIdentifier")
        custom["ecuIdentifiers"] = {c["ecuIdentifier"]: {"hardwareId": hardware}}
    elif "ecuIdentifiers" in c:
        ecus: dict[str, Any] = {}
        for pair in c["ecuIdentifiers"]:
            if pair["ecuIdentifier"] in ecus:
                raise _bad("an ECU id appears twice in one target")
            ecus[pair["ecuIdentifier"]] = {"hardwareId": pair["hardwareIdentifier"]}
        custom["ecuIdentifiers"] = ecus


def _encrypted_from_asn(c: dict[str, Any]) -> dict[str, Any]:
    if "encryptionMethod" not in c:
        raise _bad("encryptedTarget needs its encryptionMethod")
    e = _target_from_asn(c["encryptedTarget"])
    key = c.get("encryptedSymmetricKey")
    if key is not None and key["encryptedSymmetricKeyType"] != AES256:
        raise UnsupportedAlgorithm("DER: only aes256 content keys are supported")
    e["wrappedKey"] = "" if key is None else bytes(key["encryptedSymmetricKeyValue"]).hex()
    e["method"] = c["encryptionMethod"]
    if "wrappedKeys" in c:
        keys: dict[str, Any] = {}
        for k in c["wrappedKeys"]:
            if k["ecuIdentifier"] in keys:
                raise _bad("a wrapped key names its ECU twice")
            keys[k["ecuIdentifier"]] = {
                "keyid": bytes(k["keyid"]).hex(),
                "value": bytes(k["wrappedKey"]).hex(),
            }
        e["wrappedKeys"] = keys
    return e


def _custom_from_asn(c: dict[str, Any], limits: Limits) -> dict[str, Any]:
    custom: dict[str, Any] = {}
    if "otherCustom" in c:
        custom.update(_json_from_asn(c["otherCustom"], limits))
        if not custom or any(k in custom for k in _CUSTOM_KNOWN):
            raise _bad("otherCustom holds only fields the Custom SEQUENCE has no place for")
    if "releaseCounter" in c:
        custom["releaseCounter"] = _int(c["releaseCounter"])
    if "hardwareIdentifier" in c and "hardwareIdentifiers" in c:
        raise _bad("hardwareIdentifier and hardwareIdentifiers are exclusive")
    if "hardwareIdentifier" in c:
        custom["hardwareIds"] = [c["hardwareIdentifier"]]
    elif "hardwareIdentifiers" in c:
        custom["hardwareIds"] = c["hardwareIdentifiers"]
    _ecus_from_asn(c, custom)
    if "encryptedTarget" in c:
        custom["encryptedImage"] = _encrypted_from_asn(c)
    elif any(k in c for k in ("encryptedSymmetricKey", "encryptionMethod", "wrappedKeys")):
        raise _bad("encryption fields without an encryptedTarget")
    if "url" in c:
        custom["uri"] = c["url"]
    if "delta" in c:
        d = c["delta"]
        custom["delta"] = {
            "format": d["format"],
            "base": _target_from_asn(d["base"]),
            "target": _target_from_asn(d["target"]),
        }
    if "shallMatch" in c:
        custom["shallMatch"] = _json_from_asn(c["shallMatch"], limits)
    return custom


def entry_from_asn(asn: dict[str, Any], limits: Limits) -> tuple[str, dict[str, Any]]:
    """One TargetAndCustom as (path, the JSON shape of its entry)."""
    t = _target_from_asn(asn["target"])
    d: dict[str, Any] = {"length": t["length"], "hashes": t["hashes"]}
    if "custom" in asn:
        d["custom"] = _custom_from_asn(asn["custom"], limits)
    path: str = t["filename"]
    return path, d


def entry_to_asn(path: str, d: Any) -> dict[str, Any]:
    """The TargetAndCustom of a target entry's JSON shape."""
    return _entry_to_asn(path, d)


# --- delegations ---------------------------------------------------------------------------------

_PLAIN_ROLE = ("name", "keyids", "threshold", "terminating", "paths")


def _keyids(values: Any) -> list[bytes]:
    return [_raw(k, "key id") for k in _strings(values, "keyids")]


def _multi_role(name: Any, keyids: Any, threshold: Any) -> dict[str, Any]:
    ids = _keyids(keyids)
    return {
        "rolename": name,
        "numberOfKeyids": len(ids),
        "keyids": ids,
        "threshold": _int(threshold),
    }


def _is_plain(d: dict[str, Any]) -> bool:
    """Whether the TAP 3 form of the modules holds these delegations: path delegations
    of one role each, nothing else."""
    roles = d.get("roles")
    return (
        set(d) == {"keys", "roles"}
        and isinstance(roles, list)
        and all(isinstance(r, dict) and set(r) <= set(_PLAIN_ROLE) and "paths" in r for r in roles)
    )


def _plain_to_asn(d: dict[str, Any]) -> dict[str, Any]:
    keys = _keys_to_asn(d["keys"])
    rules = []
    for r in d["roles"]:
        paths = _strings(r["paths"], "paths")
        rules.append(
            {
                "numberOfPaths": len(paths),
                "paths": paths,
                "numberOfRoles": 1,
                "roles": [
                    _multi_role(_need(r, "name", "role"), r.get("keyids"), r.get("threshold"))
                ],
                "terminating": r.get("terminating", False),
            }
        )
    return {
        "numberOfKeys": len(keys),
        "keys": keys,
        "numberOfDelegations": len(rules),
        "delegations": rules,
    }


def _role_to_asn(r: Any) -> dict[str, Any]:
    known = (*_PLAIN_ROLE, "path_hash_prefixes", "hardwareIds", "multiRole")
    r = _only(r, known, "delegated role")
    asn: dict[str, Any] = {
        "rolename": _need(r, "name", "delegated role"),
        "keyids": _keyids(_need(r, "keyids", "delegated role")),
        "threshold": _int(_need(r, "threshold", "delegated role")),
        "terminating": r.get("terminating", False),
    }
    for key, field in (
        ("paths", "paths"),
        ("path_hash_prefixes", "pathHashPrefixes"),
        ("hardwareIds", "hardwareIdentifiers"),
    ):
        if key in r:
            asn[field] = _strings(r[key], key)
    if "multiRole" in r:
        m = _only(r["multiRole"], ("minRolesInAgreement", "roles"), "multiRole")
        asn["minRolesInAgreement"] = _int(_need(m, "minRolesInAgreement", "multiRole"))
        asn["multiRoles"] = [
            _multi_role(x.get("name"), x.get("keyids"), x.get("threshold"))
            for x in _need(m, "roles", "multiRole")
        ]
    return asn


def _uptane_delegations_to_asn(d: dict[str, Any]) -> dict[str, Any]:
    _only(d, ("keys", "roles", "succinct_roles"), "delegations")
    asn: dict[str, Any] = {"keys": _keys_to_asn(_need(d, "keys", "delegations"))}
    if "roles" in d:
        asn["roles"] = [_role_to_asn(r) for r in d["roles"]]
    if "succinct_roles" in d:
        s = _only(d["succinct_roles"], ("keyids", "threshold", "bit_length", "name_prefix"), "sr")
        asn["succinctRoles"] = {
            "keyids": _keyids(_need(s, "keyids", "succinct_roles")),
            "threshold": _int(_need(s, "threshold", "succinct_roles")),
            "bitLength": _int(_need(s, "bit_length", "succinct_roles")),
            "namePrefix": _need(s, "name_prefix", "succinct_roles"),
        }
    return asn


def _multi_from_asn(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": m["rolename"],
        "keyids": [bytes(k).hex() for k in _counted(m, "numberOfKeyids", "keyids")],
        "threshold": _int(m["threshold"]),
    }


def _plain_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    roles = []
    for rule in _counted(asn, "numberOfDelegations", "delegations"):
        members = _counted(rule, "numberOfRoles", "roles")
        if len(members) != 1:
            raise _bad(
                "a PathsToRoles with several roles (TAP 3, all must agree) is read from "
                "uptaneDelegations only"
            )
        role = _multi_from_asn(members[0])
        role["terminating"] = rule.get("terminating", False)
        role["paths"] = _counted(rule, "numberOfPaths", "paths")
        roles.append(role)
    return {"keys": _keys_from_asn(_counted(asn, "numberOfKeys", "keys"), limits), "roles": roles}


def _role_from_asn(r: dict[str, Any]) -> dict[str, Any]:
    role: dict[str, Any] = {
        "name": r["rolename"],
        "keyids": [bytes(k).hex() for k in r["keyids"]],
        "threshold": _int(r["threshold"]),
        "terminating": r.get("terminating", False),
    }
    for field, key in (
        ("paths", "paths"),
        ("pathHashPrefixes", "path_hash_prefixes"),
        ("hardwareIdentifiers", "hardwareIds"),
    ):
        if field in r:
            role[key] = r[field]
    if ("minRolesInAgreement" in r) != ("multiRoles" in r):
        raise _bad("minRolesInAgreement and multiRoles go together")
    if "multiRoles" in r:
        role["multiRole"] = {
            "minRolesInAgreement": _int(r["minRolesInAgreement"]),
            "roles": [_multi_from_asn(m) for m in r["multiRoles"]],
        }
    return role


def _uptane_delegations_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    d: dict[str, Any] = {"keys": _keys_from_asn(asn["keys"], limits)}
    if "roles" in asn:
        d["roles"] = [_role_from_asn(r) for r in asn["roles"]]
    if "succinctRoles" in asn:
        s = asn["succinctRoles"]
        d["succinct_roles"] = {
            "keyids": [bytes(k).hex() for k in s["keyids"]],
            "threshold": _int(s["threshold"]),
            "bit_length": _int(s["bitLength"]),
            "name_prefix": s["namePrefix"],
        }
    return d


def _targets_to_asn(d: dict[str, Any]) -> dict[str, Any]:
    _only(d, (*_COMMON, "targets", "delegations", "vehicleId"), "targets")
    targets = _need(d, "targets", "targets")
    if not isinstance(targets, dict):
        raise _bad("targets must be an object")
    entries = [_entry_to_asn(path, targets[path]) for path in targets]
    asn: dict[str, Any] = {"numberOfTargets": len(entries), "targets": entries}
    if "delegations" in d:
        dd = d["delegations"]
        if not isinstance(dd, dict):
            raise _bad("delegations must be an object")
        if _is_plain(dd):
            asn["delegations"] = _plain_to_asn(dd)
        else:
            asn["uptaneDelegations"] = _uptane_delegations_to_asn(dd)
    if "vehicleId" in d:
        asn["vehicleIdentifier"] = d["vehicleId"]
    return asn


def _targets_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    entries = _counted(asn, "numberOfTargets", "targets")
    limits.check_count("targets", len(entries), limits.max_targets)
    targets: dict[str, Any] = {}
    for e in entries:
        path, d = entry_from_asn(e, limits)
        if path in targets:
            raise _bad("a target path appears twice")
        targets[path] = d
    out: dict[str, Any] = {"targets": targets}
    if "delegations" in asn and "uptaneDelegations" in asn:
        raise _bad("delegations and uptaneDelegations are exclusive")
    if "delegations" in asn:
        out["delegations"] = _plain_from_asn(asn["delegations"], limits)
    if "uptaneDelegations" in asn:
        out["delegations"] = _uptane_delegations_from_asn(asn["uptaneDelegations"], limits)
    if "vehicleIdentifier" in asn:
        out["vehicleId"] = asn["vehicleIdentifier"]
    return out


# --- the envelope ---------------------------------------------------------------------------------

_BODY_TO: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "root": _root_to_asn,
    "targets": _targets_to_asn,
    "snapshot": _snapshot_to_asn,
    "timestamp": _timestamp_to_asn,
}
_BODY_FROM: dict[str, Callable[[dict[str, Any], Limits], dict[str, Any]]] = {
    "root": _root_from_asn,
    "targets": _targets_from_asn,
    "snapshot": _snapshot_from_asn,
    "timestamp": _timestamp_from_asn,
}


def _signed_to_asn(d: Any) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise _bad("signed must be an object")
    role = d.get("_type")
    kind = _enum(ROLE_TYPES, role, "role type")
    return {
        "type": kind,
        "expires": _time_to_int(_need(d, "expires", "signed")),
        "version": _int(_need(d, "version", "signed")),
        "body": (BODIES[kind], _BODY_TO[ROLE_TYPES[kind]](d)),
    }


def _signed_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    role = _named(ROLE_TYPES, asn["type"], "RoleType")
    body_name, body = asn["body"]
    if body_name != BODIES[ROLE_TYPES.index(role)]:
        raise _bad(f"a {role} type with a {body_name} body")
    return {
        "_type": role,
        "version": _int(asn["version"]),
        "spec_version": SPEC_VERSION,
        "expires": _time_from_int(_int(asn["expires"])),
        **_BODY_FROM[role](body, limits),
    }


def encode_signed_dict(signed: dict[str, Any]) -> bytes:
    """DER of the JSON shape of a signed part (``Signed.to_dict()``)."""
    return _encode_signed_part(SignedAsn, lambda: _signed_to_asn(signed), "signed metadata")


def encode_signed(signed: Signed) -> bytes:
    """DER of the signed part (what is hashed for the signatures)."""
    return encode_signed_dict(signed.to_dict())


def metadata_payload(signed: Signed) -> bytes:
    """The bytes a metadata signature covers: SHA-256 of the DER of the signed part."""
    return _digest(encode_signed(signed))


def _metadata_to_asn(doc: Any, digest: bytes | None = None) -> dict[str, Any]:
    doc = _only(doc, ("signed", "signatures"), "metadata envelope")
    signed = _signed_to_asn(_need(doc, "signed", "metadata"))
    if digest is None:
        digest = _digest(der._der(SignedAsn, signed, SIGNED_TAG))
    sigs = _sigs_to_asn(_need(doc, "signatures", "metadata"), digest)
    return {"signed": signed, "numberOfSignatures": len(sigs), "signatures": sigs}


def encode_metadata(md: Metadata[Any]) -> bytes:
    """DER of the whole envelope {signed, numberOfSignatures, signatures}."""
    return _encode(MetadataAsn, lambda: _metadata_to_asn(md.to_dict()), "metadata")


def decode_envelope(
    data: Any,
    limits: Limits,
    *,
    role_type: str | None = None,
    cap: int | None = None,
    digest: bytes | None = None,
) -> Metadata[Any]:
    """Decode DER metadata strictly and under ``limits``; ``signed_bytes`` is the digest
    every signature covers. ``digest`` (for the targets walk, which decodes a shell of the
    input) stands for the SHA-256 of the signed part; default: the input's own."""
    if cap is None:
        cap = limits.bytes_for_role(role_type) if role_type else max(limits.role_bytes.values())
    what = f"{role_type or 'metadata'} DER"
    data, asn = _parse(data, MetadataAsn, limits, cap, what)
    if digest is None:
        digest = _digest(memoryview(data)[_signed_slice(data)])

    def to_doc(asn: dict[str, Any]) -> dict[str, Any]:
        return {
            "signed": _signed_from_asn(asn["signed"], limits),
            "signatures": _sigs_from_asn(asn, limits),
        }

    doc = _convert(functools.partial(to_doc, asn), what)
    del asn
    check_tree(doc, limits)
    signed_d, sigs = doc["signed"], doc["signatures"]
    t = signed_d["_type"]
    if role_type is not None and t != role_type:
        raise MalformedInput(f"expected {role_type} metadata, got {t}", role=role_type)
    signed = ROLE_CLASSES[t].from_dict(signed_d, limits)
    del doc, signed_d
    md = Metadata(signed, signatures_from_dicts(sigs, limits), DER, digest, {})
    # the model, encoded again (with every signature's hash the digest), is the input
    shape = _model_shape(md)
    require_encodes_to(
        MetadataAsn, _convert(lambda: _metadata_to_asn(shape, digest), what), data, what
    )
    return md


def decode_metadata(
    data: Any, limits: Limits, *, role_type: str | None = None, cap: int | None = None
) -> Metadata[Any]:
    """:func:`decode_envelope` of the whole input."""
    return decode_envelope(data, limits, role_type=role_type, cap=cap)


def _signed_slice(data: bytes) -> slice:
    """Where the signed part (the first child of the top-level SEQUENCE) is in ``data``,
    which has passed :func:`check_structure`."""
    inner, _ = der._header(data, 0)
    start, length = der._header(data, inner)
    return slice(inner, start + length)


# --- map file -------------------------------------------------------------------------------------


def _map_to_asn(m: MapFile) -> dict[str, Any]:
    repos = [
        {"name": name, "numberOfServers": len(urls), "servers": list(urls)}
        for name, urls in m.repositories.items()
    ]
    rules = []
    for rule in m.mapping:
        asn: dict[str, Any] = {
            "numberOfPaths": len(rule.paths),
            "paths": list(rule.paths),
            "numberOfRepositories": len(rule.repositories),
            "repositories": list(rule.repositories),
            "terminating": rule.terminating,
        }
        if rule.threshold != len(rule.repositories):  # absent: all of them (POUF 1)
            asn["threshold"] = rule.threshold
        rules.append(asn)
    return {
        "numberOfRepositories": len(repos),
        "repositories": repos,
        "numberOfMappings": len(rules),
        "mappings": rules,
    }


def encode_map_file(m: MapFile) -> bytes:
    """The TAP 4 map file in DER (MapFileModule)."""
    return _encode(MapFileAsn, lambda: _map_to_asn(m), "map file")


def decode_map_file(data: Any, limits: Limits) -> MapFile:
    """A DER map file, strictly and under ``limits.map_file_bytes``; checked as the JSON
    one (:meth:`MapFile.from_dict`)."""
    what = "map file DER"
    data, asn = _parse(data, MapFileAsn, limits, limits.map_file_bytes, what)

    def to_doc() -> dict[str, Any]:
        repos: dict[str, Any] = {}
        for r in _counted(asn, "numberOfRepositories", "repositories"):
            if r["name"] in repos:
                raise _bad("a repository appears twice")
            repos[r["name"]] = _counted(r, "numberOfServers", "servers")
        rules = []
        for rule in _counted(asn, "numberOfMappings", "mappings"):
            names = _counted(rule, "numberOfRepositories", "repositories")
            rules.append(
                {
                    "paths": _counted(rule, "numberOfPaths", "paths"),
                    "repositories": names,
                    "threshold": _int(rule.get("threshold", len(names))),
                    "terminating": rule.get("terminating", False),
                }
            )
        return {"repositories": repos, "mapping": rules}

    doc = _convert(to_doc, what)
    check_tree(doc, limits)
    out = MapFile.from_dict(doc, limits)
    require_same(data, encode_map_file(out), what)
    return out


# --- manifests ------------------------------------------------------------------------------------

_REPORT_KEYS = (
    "_type",
    "ecu_id",
    "installed_image",
    "latest_time",
    "previous_time",
    "release_counter",
    "attack",
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


def _other_fields(d: dict[str, Any], known: tuple[str, ...], asn: dict[str, Any]) -> None:
    """The fields of ``d`` outside ``known``, as ``otherFields`` (canonical JSON)."""
    other = {k: v for k, v in d.items() if k not in known}
    if other:
        asn["otherFields"] = canonical(other)


def _other_from_asn(asn: dict[str, Any], known: tuple[str, ...], limits: Limits) -> dict[str, Any]:
    if "otherFields" not in asn:
        return {}
    other = _json_from_asn(asn["otherFields"], limits)
    if not other or any(k in other for k in known):
        raise _bad("otherFields holds only fields the SEQUENCE has no place for")
    return other


def _report_signed_to_asn(d: Any) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise _bad("an ECU version report must be an object")
    image = _only(_need(d, "installed_image", "report"), ("filename", "length", "hashes"), "image")
    latest = _time_to_int(_need(d, "latest_time", "report"))
    asn: dict[str, Any] = {
        "ecuIdentifier": _need(d, "ecu_id", "report"),
        "previousTime": _time_to_int(d["previous_time"]) if "previous_time" in d else latest,
        "currentTime": latest,
        "installedImage": _target_to_asn(_need(image, "filename", "image"), image, "image"),
    }
    if "attack" in d:
        asn["securityAttack"] = d["attack"]
    if "nonce" in d:
        asn["nonce"] = _raw(d["nonce"], "nonce")
    if "counter" in d:
        asn["counter"] = _int(d["counter"])
    if "release_counter" in d:
        asn["releaseCounter"] = _int(d["release_counter"])
    _other_fields(d, _REPORT_KEYS, asn)
    return asn


def _report_signed_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    d: dict[str, Any] = {
        **_other_from_asn(asn, _REPORT_KEYS, limits),
        "_type": ECU_REPORT,
        "ecu_id": asn["ecuIdentifier"],
        "installed_image": _target_from_asn(asn["installedImage"]),
        "latest_time": _time_from_int(_int(asn["currentTime"])),
    }
    if asn["previousTime"] != asn["currentTime"]:
        d["previous_time"] = _time_from_int(_int(asn["previousTime"]))
    if "securityAttack" in asn:
        d["attack"] = asn["securityAttack"]
    if "nonce" in asn:
        d["nonce"] = bytes(asn["nonce"]).hex()
    if "counter" in asn:
        d["counter"] = _int(asn["counter"])
    if "releaseCounter" in asn:
        d["release_counter"] = _int(asn["releaseCounter"])
    return d


def _report_to_asn(doc: Any) -> dict[str, Any]:
    doc = _only(doc, ("signed", "signatures"), "ECU version report envelope")
    signed = _report_signed_to_asn(_need(doc, "signed", "report"))
    digest = _digest(der._der(ECUVersionManifestSigned, signed, SIGNED_TAG))
    sigs = _sigs_to_asn(_need(doc, "signatures", "report"), digest)
    return {"signed": signed, "numberOfSignatures": len(sigs), "signatures": sigs}


def _report_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    return {
        "signed": _report_signed_from_asn(asn["signed"], limits),
        "signatures": _sigs_from_asn(asn, limits),
    }


def _vvm_signed_to_asn(d: Any) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise _bad("a vehicle version manifest must be an object")
    reports = [_report_to_asn(r) for r in _need(d, "ecu_version_reports", "manifest")]
    asn: dict[str, Any] = {
        "vehicleIdentifier": _need(d, "vehicle_id", "manifest"),
        "primaryIdentifier": _need(d, "primary_id", "manifest"),
        "numberOfECUVersionManifests": len(reports),
        "ecuVersionManifests": reports,
    }
    if "attack" in d:
        asn["securityAttack"] = d["attack"]
    if "unreachable_ecus" in d:
        asn["unreachableEcus"] = []
        for u in d["unreachable_ecus"]:
            u = _only(u, ("ecu_id", "reason", "last_seen"), "unreachable ECU")
            entry = {"ecuIdentifier": _need(u, "ecu_id", "ecu"), "reason": _need(u, "reason", "")}
            if "last_seen" in u:
                entry["lastSeen"] = _time_to_int(u["last_seen"])
            asn["unreachableEcus"].append(entry)
    _other_fields(d, _VVM_KEYS, asn)
    return asn


def _vvm_signed_from_asn(asn: dict[str, Any], limits: Limits) -> dict[str, Any]:
    reports = _counted(asn, "numberOfECUVersionManifests", "ecuVersionManifests")
    limits.check_count("ECU version reports", len(reports), limits.max_ecus)
    d: dict[str, Any] = {
        **_other_from_asn(asn, _VVM_KEYS, limits),
        "_type": VEHICLE_MANIFEST,
        "vehicle_id": asn["vehicleIdentifier"],
        "primary_id": asn["primaryIdentifier"],
        "ecu_version_reports": [_report_from_asn(r, limits) for r in reports],
    }
    if "securityAttack" in asn:
        d["attack"] = asn["securityAttack"]
    if "unreachableEcus" in asn:
        limits.check_count("unreachable ECUs", len(asn["unreachableEcus"]), limits.max_ecus)
        d["unreachable_ecus"] = []
        for u in asn["unreachableEcus"]:
            entry: dict[str, Any] = {"ecu_id": u["ecuIdentifier"], "reason": u["reason"]}
            if "lastSeen" in u:
                entry["last_seen"] = _time_from_int(_int(u["lastSeen"]))
            d["unreachable_ecus"].append(entry)
    return d


def _kind_of(d: Any) -> str:
    kind = d.get("_type") if isinstance(d, dict) else None
    if kind not in (ECU_REPORT, VEHICLE_MANIFEST):
        raise _bad(f"unknown manifest type {str(kind)[:32]!r}")
    return str(kind)


def encode_manifest_signed(signed: dict[str, Any]) -> bytes:
    """DER of a manifest's signed part (ECU version report or vehicle manifest)."""
    if _kind_of(signed) == ECU_REPORT:
        return _encode_signed_part(
            ECUVersionManifestSigned, lambda: _report_signed_to_asn(signed), "report"
        )
    return _encode_signed_part(
        VehicleVersionManifestSigned, lambda: _vvm_signed_to_asn(signed), "manifest"
    )


def manifest_payload(signed: dict[str, Any]) -> bytes:
    """The bytes a report's or manifest's signature covers: SHA-256 of its signed DER."""
    return _digest(encode_manifest_signed(signed))


def encode_manifest(doc: dict[str, Any]) -> bytes:
    """DER of a manifest envelope {signed, signatures} in its JSON shape."""
    signed = doc.get("signed") if isinstance(doc, dict) else None
    if _kind_of(signed) == ECU_REPORT:
        return _encode(ECUVersionManifest, lambda: _report_to_asn(doc), "report")

    def build() -> dict[str, Any]:
        d = _only(doc, ("signed", "signatures"), "manifest envelope")
        body = _vvm_signed_to_asn(d["signed"])
        digest = _digest(der._der(VehicleVersionManifestSigned, body, SIGNED_TAG))
        sigs = _sigs_to_asn(_need(d, "signatures", "manifest"), digest)
        return {"signed": body, "numberOfSignatures": len(sigs), "signatures": sigs}

    return _encode(VehicleVersionManifest, build, "manifest")


def _manifest_kind(data: bytes) -> str:
    """An ECU report's signed part has installedImage [4] (or securityAttack [3]) fourth,
    a vehicle manifest's ecuVersionManifests [3]; ``data`` has been checked."""
    try:
        inner, _ = der._header(data, 0)
        signed, signed_len = der._header(data, inner)
        pos = signed
        for _ in range(3):
            start, length = der._header(data, pos)
            pos = start + length
        if pos < signed + signed_len:
            if data[pos] == 0xA3:
                return VEHICLE_MANIFEST
            if data[pos] in (0x83, 0xA4):
                return ECU_REPORT
    except IndexError:
        pass
    raise _bad("neither an ECU version report nor a vehicle version manifest")


def decode_manifest(
    data: Any, limits: Limits, *, kind: str | None = None, cap: int | None = None
) -> tuple[dict[str, Any], bytes]:
    """Decode a DER report or vehicle manifest of ``kind`` (None: either, told apart by
    its structure) into its JSON shape, strictly and under ``limits``. Returns the
    envelope and the digest its signatures cover; the caller builds the model and must
    check :func:`require_same` against it re-encoded."""
    cap = limits.manifest_bytes if cap is None else cap
    if kind is None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise _bad("manifest: expected bytes")
        data = bytes(data)
        if len(data) > cap:
            raise EndlessDataAttack(f"manifest: {len(data)} bytes exceeds the {cap}-byte cap")
        check_structure(data, limits, cap)
        kind = _manifest_kind(data)
    spec: Spec
    if kind == ECU_REPORT:
        spec, signed_fn = ECUVersionManifest, _report_signed_from_asn
    elif kind == VEHICLE_MANIFEST:
        spec, signed_fn = VehicleVersionManifest, _vvm_signed_from_asn
    else:
        raise ValueError(f"unknown manifest kind {kind!r}")
    what = f"{kind} DER"
    data, asn = _parse(data, spec, limits, cap, what)

    def to_doc() -> dict[str, Any]:
        return {
            "signed": signed_fn(asn["signed"], limits),
            "signatures": _sigs_from_asn(asn, limits),
        }

    doc = _convert(to_doc, what)
    check_tree(doc, limits)
    return doc, _digest(_signed_span(data))
