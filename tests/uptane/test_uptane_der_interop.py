"""The standard DER against an independent ASN.1 toolkit compiled from the same schema text
(asn1tools; uptane/encoding/uptane_schema.py), both directions, for every message type:

- ours -> asn1tools: every message our codec writes decodes with asn1tools, and asn1tools
  writes it back byte for byte (so our bytes are the DER of the modules' value);
- asn1tools -> ours: messages built and signed with asn1tools alone, as another
  implementation of POUF 1 would (the signature over the SHA-256 of the [0]-tagged signed
  part, named in ``Signature.hash``), decode with our codec to the expected model, and
  their signatures verify.

docs/der-profile.md must show this very schema text.
"""

from __future__ import annotations

import copy
import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asn1tools
import pytest

from uptane.codec import DER_CODEC
from uptane.encoding.uptane_schema import SCHEMA
from uptane.identity import ImageIdentity
from uptane.keys import ECDSA, ED25519, RSA_PSS, PrivateKey
from uptane.limits import CONSTRAINED, PRIMARY
from uptane.manifest import (
    ECU_REPORT,
    VEHICLE_MANIFEST,
    EcuVersionReport,
    InstalledImage,
    SignedManifest,
    UnreachableEcu,
    build_vehicle_manifest,
)
from uptane.metadata import (
    DER,
    DelegatedRole,
    Delegations,
    DeltaImage,
    EncryptedImage,
    MapFile,
    Mapping,
    Metadata,
    MetaFile,
    Role,
    RoleRef,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
    WrappedKey,
)
from uptane.signatures import check_single, check_threshold

ROOT = Path(__file__).resolve().parents[2]
EXPIRES = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
TOOLKIT = asn1tools.compile_string(SCHEMA, "der")
KEYS = {s: PrivateKey.generate(s) for s in (ED25519, ECDSA, RSA_PSS)}
K = KEYS[ED25519]


def _root() -> Root:
    root = Root(expires=EXPIRES, keys={}, roles={})
    for role, key in (("root", ED25519), ("timestamp", ECDSA), ("snapshot", RSA_PSS)):
        root.add_key(KEYS[key].key, role)
    root.add_key(K.key, "targets")
    root.add_key(KEYS[ECDSA].key, "root")
    root.roles["timestamp"].unrecognized["urls"] = ["https://tuf.example/timestamp.der"]
    return root


def _director_entry() -> TargetFile:
    return TargetFile.from_data(
        "ecu/brake-fw-5.2.1.bin",
        b"brake firmware" * 20,
        ("sha256", "sha512"),
        hardware_ids=["brake-v2"],
        release_counter=5,
        ecu_ids={"ECU-BRAKE-1": "brake-v2"},
    )


def _rich_entry() -> TargetFile:
    """Everything a Director entry may carry: several kinds of hardware and ECUs, an
    encrypted image with per-ECU wrapped keys, a URL, a delta, SHALL-match and other
    custom fields."""
    base = ImageIdentity("fw-1.bin", 100, {"sha256": "ab" * 32})
    full = ImageIdentity("fw-2.bin", 120, {"sha256": "cd" * 32, "sha512": "ef" * 64})
    return TargetFile.from_data(
        "fw-2.patch",
        b"patch bytes",
        ("sha256",),
        hardware_ids=["hw-a", "hw-b"],
        release_counter=0,
        ecu_ids={"E1": "hw-a", "E2": "hw-b"},
        shall_match={"variant": "EU", "build": [1, 2]},
        encrypted=EncryptedImage(
            "fw-2.patch.enc",
            140,
            {"sha256": "12" * 32},
            b"",
            "hpke-x25519-aes256gcm+stream-aes256gcm-v1",
            {"E1": WrappedKey("aa" * 32, b"\x01" * 80), "E2": WrappedKey("bb" * 32, b"\x02" * 80)},
        ),
        url="https://cdn.example/fw-2.patch.enc",
        custom_extra={"note": "signed off", "x-oem": {"line": 7}},
        delta=DeltaImage("detools-sequential-heatshrink", base, full),
    )


def _plain_delegations() -> Delegations:
    return Delegations(
        {K.keyid: K.key, KEYS[ECDSA].keyid: KEYS[ECDSA].key},
        [
            DelegatedRole("supplier-a", [K.keyid], 1, True, paths=["brake/*", "abs/*"]),
            DelegatedRole("supplier-b", [KEYS[ECDSA].keyid], 1, paths=["radio/*"]),
        ],
    )


def _uptane_delegations() -> Delegations:
    return Delegations(
        {K.keyid: K.key},
        [
            DelegatedRole("r1", [K.keyid], 1, True, paths=["a/*"], hardware_ids=["hw"]),
            DelegatedRole(
                "r2",
                [K.keyid],
                1,
                path_hash_prefixes=["0a", "1b"],
                multi_roles=[RoleRef("m1", [K.keyid], 1), RoleRef("m2", [K.keyid], 1)],
                min_roles_in_agreement=1,
            ),
        ],
    )


def _metadata() -> dict[str, Metadata[Any]]:
    signed = {
        "root": _root(),
        "timestamp": Timestamp(
            version=9, expires=EXPIRES, snapshot_meta=MetaFile(4, 512, {"sha256": "11" * 32})
        ),
        "snapshot": Snapshot(
            version=4,
            expires=EXPIRES,
            meta={
                "targets.json": MetaFile(3),
                "supplier-a.json": MetaFile(2, 300, {"sha256": "22" * 32, "sha512": "33" * 64}),
            },
        ),
        "image targets": Targets(
            version=3,
            expires=EXPIRES,
            targets={"brake/fw.bin": TargetFile.from_data("brake/fw.bin", b"x", ("sha256",))},
            delegations=_plain_delegations(),
        ),
        "delegated targets (uptaneDelegations)": Targets(
            expires=EXPIRES,
            delegations=_uptane_delegations(),
        ),
        "succinct delegations": Targets(
            expires=EXPIRES,
            delegations=Delegations({K.keyid: K.key}, None, SuccinctRoles([K.keyid], 1, 8, "bins")),
        ),
        "director targets": Targets(
            version=2,
            expires=EXPIRES,
            targets={e.path: e for e in (_director_entry(), _rich_entry())},
            vehicle_id="WVWZZZ1JZXW000001",
        ),
        "empty director targets": Targets(expires=EXPIRES, vehicle_id="WVWZZZ1JZXW000001"),
    }
    out: dict[str, Metadata[Any]] = {}
    for name, s in signed.items():
        md: Metadata[Any] = Metadata(s, encoding=DER)
        for key in KEYS.values() if name == "root" else (K,):
            md.sign(key)
        out[name] = md
    return out


def _manifests() -> dict[str, SignedManifest[Any]]:
    img = InstalledImage("ecu/brake-fw-5.2.1.bin", 280, {"sha256": "44" * 32})
    reports = [
        SignedManifest(
            EcuVersionReport("E1", img, EXPIRES, nonce=b"\x05" * 16, release_counter=5),
            encoding=DER,
        ),
        SignedManifest(
            EcuVersionReport(
                "E2",
                img,
                EXPIRES,
                counter=7,
                attack="rollback: release counter 4 below 5",
                previous_time=datetime(2031, 1, 1, tzinfo=UTC),
                unrecognized={"hardware_id": "brake-v2", "slot": "B"},
            ),
            encoding=DER,
        ),
    ]
    reports[0].sign(K)
    reports[1].sign(KEYS[ECDSA])
    vvm = build_vehicle_manifest(
        "WVWZZZ1JZXW000001",
        "E1",
        reports,
        KEYS[RSA_PSS],
        encoding=DER,
        attack="freeze: director metadata expired",
        unreachable=[UnreachableEcu("E3", "timeout: no answer on CAN", EXPIRES)],
    )
    return {
        "ECU version report (nonce)": reports[0],
        "ECU version report (counter)": reports[1],
        "vehicle version manifest": vvm,
    }


MAP_FILE = MapFile(
    {"director": ["https://d.example"], "oem": ["https://o.example"], "supplier": []},
    [
        Mapping(["brake/*"], ["director", "oem", "supplier"], 2, True),
        Mapping(["*"], ["director", "oem"], 2, False),
    ],
)


def _messages() -> list[tuple[str, str, bytes]]:
    out = [(name, "Metadata", md.to_bytes()) for name, md in _metadata().items()]
    for name, m in _manifests().items():
        kind = "ECUVersionManifest" if m.kind == ECU_REPORT else "VehicleVersionManifest"
        out.append((name, kind, m.to_bytes()))
    out.append(("map file", "MapFile", DER_CODEC.encode_map_file(MAP_FILE)))
    return out


MESSAGES = _messages()


@pytest.mark.parametrize("name, asn_type, data", MESSAGES, ids=[m[0] for m in MESSAGES])
def test_every_message_we_write_decodes_with_asn1tools_and_back_byte_for_byte(
    name: str, asn_type: str, data: bytes
) -> None:
    value = TOOLKIT.decode(asn_type, data)
    assert TOOLKIT.encode(asn_type, value) == data
    if asn_type in ("Metadata", "ECUVersionManifest", "VehicleVersionManifest"):
        # every signature names SHA-256 of the [0]-tagged signed part as its hash
        digest = _digest(asn_type, value["signed"])
        for sig in value["signatures"]:
            assert sig["hash"] == {"function": "sha256", "digest": digest}
        assert value["numberOfSignatures"] == len(value["signatures"])


def test_the_messages_cover_every_type_and_extension_addition() -> None:
    """What the interop run covers: every role, every SignedBody alternative, every
    extension addition of the schema, the map file and both manifests."""
    seen: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            seen.update(v)
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            if len(v) == 2 and isinstance(v[0], str) and v[0].endswith("Metadata"):
                seen.add(v[0])
            for x in v:
                walk(x)

    for _, asn_type, data in MESSAGES:
        walk(TOOLKIT.decode(asn_type, data))
    wanted = {
        "rootMetadata", "targetsMetadata", "snapshotMetadata", "timestampMetadata",
        "consistentSnapshot", "urls", "vehicleIdentifier", "uptaneDelegations",
        "delegations", "hardwareIdentifiers", "ecuIdentifiers", "encryptedTarget",
        "encryptionMethod", "wrappedKeys", "url", "delta", "shallMatch", "otherCustom",
        "hardwareIdentifier", "ecuIdentifier", "releaseCounter", "succinctRoles",
        "pathHashPrefixes", "multiRoles", "minRolesInAgreement", "length", "hashes",
        "nonce", "counter", "securityAttack", "unreachableEcus", "otherFields", "lastSeen",
        "threshold", "servers",
    }  # fmt: skip
    assert wanted <= seen, sorted(wanted - seen)


# --- asn1tools -> ours: messages another implementation writes ---------------------------------


def _digest(asn_type: str, signed: Any) -> bytes:
    """SHA-256 of the signed part as it stands in its envelope: the [0]-tagged SEQUENCE,
    which is asn1tools' universal SEQUENCE with the tag byte 0xA0."""
    signed_type = {
        "Metadata": "Signed",
        "ECUVersionManifest": "ECUVersionManifestSigned",
        "VehicleVersionManifest": "VehicleVersionManifestSigned",
    }[asn_type]
    der = TOOLKIT.encode(signed_type, signed)
    assert der[0] == 0x30
    return hashlib.sha256(b"\xa0" + der[1:]).digest()


METHODS = {ED25519: "ed25519", ECDSA: "ecdsa-sha2-nistp256", RSA_PSS: "rsassa-pss"}


def _sign(asn_type: str, signed: Any, *keys: PrivateKey) -> bytes:
    """The whole envelope, written and signed with asn1tools alone (POUF 1)."""
    digest = _digest(asn_type, signed)
    sigs = [
        {
            "keyid": bytes.fromhex(k.keyid),
            "method": METHODS[k.key.scheme],
            "hash": {"function": "sha256", "digest": digest},
            "value": k.sign(digest),
        }
        for k in keys
    ]
    return TOOLKIT.encode(
        asn_type, {"signed": signed, "numberOfSignatures": len(sigs), "signatures": sigs}
    )


def _hash(alg: str, data: bytes) -> dict[str, Any]:
    return {"function": alg.replace("_", "-"), "digest": hashlib.new(alg, data).digest()}


def _target(name: str, data: bytes) -> dict[str, Any]:
    return {
        "filename": name,
        "length": len(data),
        "numberOfHashes": 1,
        "hashes": [_hash("sha256", data)],
    }


def _public(k: PrivateKey) -> dict[str, Any]:
    kinds = {ED25519: "ed25519", ECDSA: "ecdsa", RSA_PSS: "rsa"}
    value = bytes.fromhex(k.key.public) if k.key.scheme == ED25519 else _spki(k.key.public)
    return {
        "publicKeyid": bytes.fromhex(k.keyid),
        "publicKeyType": kinds[k.key.scheme],
        "publicKeyValue": value,
    }


def _spki(pem: str) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(pem.encode())
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _signed(kind: str, body: Any, version: int = 1) -> dict[str, Any]:
    return {
        "type": kind,
        "expires": int(EXPIRES.timestamp()),
        "version": version,
        "body": (f"{kind}Metadata", body),
    }


def test_a_root_written_by_another_implementation_decodes_and_verifies() -> None:
    keys = [K, KEYS[ECDSA], KEYS[RSA_PSS]]
    root = {
        "numberOfKeys": 3,
        "keys": [_public(k) for k in keys],
        "numberOfRoles": 4,
        "roles": [
            {"role": r, "numberOfKeyids": 1, "keyids": [bytes.fromhex(k.keyid)], "threshold": 1}
            for r, k in zip(("root", "targets", "snapshot", "timestamp"), [*keys, K], strict=True)
        ],
    }
    data = _sign("Metadata", _signed("root", root), K)
    md = DER_CODEC.decode_metadata(data, PRIMARY, role_type="root")
    assert md.signed.consistent_snapshot is False and md.signed.version == 1
    assert md.signed.roles["targets"] == Role([KEYS[ECDSA].keyid], 1)
    assert md.signed.keys[KEYS[RSA_PSS].keyid] == KEYS[RSA_PSS].key
    assert md.signed.keys[KEYS[ECDSA].keyid] == KEYS[ECDSA].key
    keys_, entry = md.signed.role_keys("root")
    check_threshold(md.signed_bytes, md.signatures, keys_, entry.keyids, 1, PRIMARY)
    assert md.to_bytes() == data  # we write it back exactly


def test_targets_timestamp_and_snapshot_written_by_another_implementation() -> None:
    image = b"an image from another implementation"
    targets = {
        "numberOfTargets": 1,
        "targets": [
            {
                "target": _target("fw.bin", image),
                "custom": {"releaseCounter": 3, "hardwareIdentifier": "hw", "ecuIdentifier": "E1"},
            }
        ],
        "vehicleIdentifier": "VIN-1",
    }
    data = _sign("Metadata", _signed("targets", targets, 2), KEYS[ECDSA])
    md = DER_CODEC.decode_metadata(data, PRIMARY, role_type="targets")
    entry = md.signed.targets["fw.bin"]
    assert (entry.length, entry.release_counter, entry.hardware_ids) == (len(image), 3, ["hw"])
    assert entry.ecu_ids == {"E1": "hw"} and md.signed.vehicle_id == "VIN-1"
    check_single(md.signed_bytes, md.signatures, KEYS[ECDSA].key, "targets")
    # the partial-verification walk reads it the same
    view = DER_CODEC.read_targets(data, CONSTRAINED, "E1")
    assert view.mine == entry and bytes(view.payload) == md.signed_bytes
    snapshot = {
        "numberOfSnapshotMetadataFiles": 1,
        "snapshotMetadataFiles": [{"filename": "targets.json", "version": 2}],
    }
    data = _sign("Metadata", _signed("snapshot", snapshot), K)
    snap = DER_CODEC.decode_metadata(data, PRIMARY, role_type="snapshot")
    assert snap.signed.meta == {"targets.json": MetaFile(2)}
    ts = {"filename": "snapshot.json", "version": 1, "length": len(data), "numberOfHashes": 1,
          "hashes": [_hash("sha256", data)]}  # fmt: skip
    ts_md = DER_CODEC.decode_metadata(_sign("Metadata", _signed("timestamp", ts), K), PRIMARY)
    assert ts_md.signed.snapshot_meta == MetaFile(
        1, len(data), {"sha256": hashlib.sha256(data).hexdigest()}
    )


def test_delegations_in_the_tap3_form_written_by_another_implementation() -> None:
    delegations = {
        "numberOfKeys": 1,
        "keys": [_public(K)],
        "numberOfDelegations": 1,
        "delegations": [
            {
                "numberOfPaths": 1,
                "paths": ["brake/*"],
                "numberOfRoles": 1,
                "roles": [
                    {
                        "rolename": "supplier",
                        "numberOfKeyids": 1,
                        "keyids": [bytes.fromhex(K.keyid)],
                        "threshold": 1,
                    }
                ],
                "terminating": True,
            }
        ],
    }
    body = {"numberOfTargets": 0, "targets": [], "delegations": delegations}
    md = DER_CODEC.decode_metadata(_sign("Metadata", _signed("targets", body), K), PRIMARY)
    assert md.signed.delegations.roles == [
        DelegatedRole("supplier", [K.keyid], 1, True, paths=["brake/*"])
    ]


def test_manifests_written_by_another_implementation_decode_and_verify() -> None:
    report_signed = {
        "ecuIdentifier": "E1",
        "previousTime": int(EXPIRES.timestamp()) - 60,
        "currentTime": int(EXPIRES.timestamp()),
        "installedImage": _target("fw.bin", b"fw"),
        "nonce": b"\x09" * 12,
    }
    report_bytes = _sign("ECUVersionManifest", report_signed, KEYS[ECDSA])
    report = DER_CODEC.decode_manifest(report_bytes, PRIMARY, kind=ECU_REPORT)
    assert report.signed.ecu_id == "E1" and report.signed.nonce == b"\x09" * 12
    assert report.signed.previous_time is not None
    report.verify(KEYS[ECDSA].key)
    vvm_signed = {
        "vehicleIdentifier": "VIN-1",
        "primaryIdentifier": "E1",
        "numberOfECUVersionManifests": 1,
        "ecuVersionManifests": [TOOLKIT.decode("ECUVersionManifest", report_bytes)],
        "securityAttack": "rollback: seen",
    }
    data = _sign("VehicleVersionManifest", vvm_signed, K)
    vvm = DER_CODEC.decode_manifest(data, PRIMARY)  # the kind told by its structure
    assert vvm.kind == VEHICLE_MANIFEST and vvm.signed.attack == "rollback: seen"
    vvm.verify(K.key)
    vvm.signed.reports[0].verify(KEYS[ECDSA].key)


def test_a_map_file_written_by_another_implementation() -> None:
    value = {
        "numberOfRepositories": 2,
        "repositories": [
            {"name": "director", "numberOfServers": 1, "servers": ["https://d"]},
            {"name": "image", "numberOfServers": 1, "servers": ["https://i"]},
        ],
        "numberOfMappings": 1,
        "mappings": [
            {
                "numberOfPaths": 1,
                "paths": ["*"],
                "numberOfRepositories": 2,
                "repositories": ["director", "image"],
                "terminating": True,
            }
        ],
    }
    m = DER_CODEC.decode_map_file(TOOLKIT.encode("MapFile", value), PRIMARY)
    assert m == MapFile.default("https://d", "https://i")  # POUF 1: all repositories agree


def test_a_changed_message_from_asn1tools_is_refused_unless_re_signed() -> None:
    """A value asn1tools changed (the version) but whose signatures' hash still names the
    old digest is not in the canonical form of any value; signed afresh, it verifies."""
    md = _metadata()["director targets"]
    value = TOOLKIT.decode("Metadata", md.to_bytes())
    changed = copy.deepcopy(value)
    changed["signed"]["version"] += 1
    from uptane.errors import NonCanonicalEncoding

    with pytest.raises(NonCanonicalEncoding):
        DER_CODEC.decode_metadata(TOOLKIT.encode("Metadata", changed), PRIMARY)
    again = DER_CODEC.decode_metadata(_sign("Metadata", changed["signed"], K), PRIMARY)
    assert again.signed.version == md.signed.version + 1
    check_single(again.signed_bytes, again.signatures, K.key, "targets")


def test_docs_show_the_schema_text() -> None:
    doc = (ROOT / "docs" / "der-profile.md").read_text("utf-8")
    blocks = re.findall(r"```asn1\n(.*?)```", doc, re.S)
    assert SCHEMA in blocks, "docs/der-profile.md must show uptane_schema.SCHEMA verbatim"
