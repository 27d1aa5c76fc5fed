"""The metadata model: every role round-trips, unknown fields survive, Uptane custom fields
are typed, limits are enforced, and python-tuf reads what we write."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from tuf.api.metadata import Metadata as TufMetadata

from uptane.encoding.json import canonical
from uptane.errors import EndlessDataAttack, LimitExceeded, MalformedInput
from uptane.keys import PrivateKey
from uptane.limits import CONSTRAINED, PRIMARY
from uptane.metadata import (
    DelegatedRole,
    Delegations,
    EncryptedImage,
    MapFile,
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
    decode,
)

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


def _root(key: PrivateKey) -> Root:
    root = Root(expires=EXPIRES)
    for role in ("root", "timestamp", "snapshot", "targets"):
        root.add_key(key.key, role)
    return root


def _image_targets(key: PrivateKey) -> Targets:
    t = Targets(expires=EXPIRES)
    t.targets["ecu/fw-1.bin"] = TargetFile.from_data(
        "ecu/fw-1.bin",
        b"firmware",
        ("sha256", "sha512"),
        hardware_ids=["hw-a", "hw-b"],
        release_counter=7,
        shall_match={"build": "2026.11"},
        url="https://cdn.example/fw-1.bin",
        custom_extra={"vendor": {"x": 1}},
    )
    t.delegations = Delegations(
        keys={key.keyid: key.key},
        roles=[
            DelegatedRole(
                "supplier",
                [key.keyid],
                1,
                terminating=True,
                paths=["supplier/*"],
                hardware_ids=["hw-a"],
            ),
            DelegatedRole(
                "joint",
                [],
                1,
                paths=["joint/*"],
                multi_roles=[RoleRef("qa", [key.keyid], 1), RoleRef("rel", [key.keyid], 1)],
                min_roles_in_agreement=2,
            ),
        ],
    )
    return t


def _director_targets() -> Targets:
    t = Targets(expires=EXPIRES, vehicle_id="VIN123")
    tf = TargetFile.from_data("ecu/fw-1.bin", b"firmware", release_counter=7)
    tf.ecu_ids = {"ecu-1": "hw-a"}
    tf.encrypted = EncryptedImage("fw-1.bin.enc", 24, {"sha256": "00" * 32}, b"\x01\x02", "aes")
    t.targets[tf.path] = tf
    return t


def _all_signed(key: PrivateKey):
    snap = Snapshot(
        expires=EXPIRES, meta={"targets.json": MetaFile(3), "supplier.json": MetaFile(2)}
    )
    ts = Timestamp(expires=EXPIRES, snapshot_meta=MetaFile(4, 120, {"sha256": "ab" * 32}))
    return [_root(key), ts, snap, _image_targets(key), _director_targets(), Targets(vehicle_id="V")]


@pytest.mark.parametrize("index", range(6))
def test_5_2_1_every_role_round_trips_json(index):
    key = PrivateKey.generate()
    signed = _all_signed(key)[index]
    md = Metadata(signed)
    md.sign(key)
    data = md.to_bytes()
    back = decode(data, PRIMARY)
    assert back.signed.to_dict() == signed.to_dict()
    assert back.signed_bytes == canonical(signed.to_dict())
    assert back.to_bytes() == data


def test_5_2_1_unknown_fields_survive_round_trip():
    key = PrivateKey.generate()
    md = Metadata(_image_targets(key))
    md.sign(key)
    doc = md.to_dict()
    doc["x-envelope"] = 1
    doc["signed"]["x-future"] = {"a": [1, 2]}
    doc["signed"]["targets"]["ecu/fw-1.bin"]["x-target"] = True
    doc["signed"]["delegations"]["roles"][0]["x-role"] = "r"
    doc["signed"]["delegations"]["keys"][key.keyid]["x-key"] = "k"
    data = canonical(doc)
    back = Metadata.from_json(data, PRIMARY)
    assert back.to_bytes() == data


def test_5_2_3_1_uptane_custom_fields_are_typed():
    key = PrivateKey.generate()
    image = Metadata.from_dict(Metadata(_image_targets(key)).to_dict(), PRIMARY)
    tf = image.signed.targets["ecu/fw-1.bin"]
    assert tf.hardware_ids == ["hw-a", "hw-b"]
    assert tf.release_counter == 7
    assert tf.shall_match == {"build": "2026.11"}
    assert tf.url == "https://cdn.example/fw-1.bin"
    assert tf.custom_extra == {"vendor": {"x": 1}}
    director = Metadata.from_dict(Metadata(_director_targets()).to_dict(), PRIMARY)
    dtf = director.signed.targets["ecu/fw-1.bin"]
    assert dtf.ecu_ids == {"ecu-1": "hw-a"}
    assert dtf.encrypted is not None and dtf.encrypted.wrapped_key == b"\x01\x02"
    assert director.signed.vehicle_id == "VIN123"


def test_5_2_3_1_empty_director_targets_still_name_the_vehicle():
    md = Metadata(Targets(vehicle_id="VIN9"))
    back = Metadata.from_json(md.to_bytes(), PRIMARY, role_type="targets")
    assert back.signed.targets == {} and back.signed.vehicle_id == "VIN9"


def test_python_tuf_loads_and_verifies_every_role_we_write():
    key = PrivateKey.generate()
    root_md = Metadata(_root(key))
    root_md.sign(key)
    tuf_root = TufMetadata.from_bytes(root_md.to_bytes())
    for signed in _all_signed(key)[1:]:
        md = Metadata(signed)
        md.sign(key)
        tuf_md = TufMetadata.from_bytes(md.to_bytes())
        tuf_root.verify_delegate(signed.type, tuf_md)


def test_succinct_hash_bins_match_python_tuf():
    from tuf.api.metadata import SuccinctRoles as TufSuccinct

    ours = SuccinctRoles([], 1, 6, "bin")
    theirs = TufSuccinct([], 1, 6, "bin")
    for path in ("a", "ecu/fw.bin", "x" * 50, "é"):
        assert ours.role_for_target(path) == theirs.get_role_for_target(path)
    assert ours.is_bin_name("bin-3f") and not ours.is_bin_name("bin-40")


def test_wrong_type_and_missing_fields_are_malformed():
    key = PrivateKey.generate()
    md = Metadata(Timestamp(expires=EXPIRES))
    md.sign(key)
    with pytest.raises(MalformedInput):
        Metadata.from_json(md.to_bytes(), PRIMARY, role_type="snapshot")
    doc = md.to_dict()
    del doc["signed"]["version"]
    with pytest.raises(MalformedInput):
        Metadata.from_dict(doc, PRIMARY)
    doc = md.to_dict()
    doc["signed"]["version"] = True
    with pytest.raises(MalformedInput):
        Metadata.from_dict(doc, PRIMARY)
    doc = md.to_dict()
    doc["signed"]["expires"] = "2030-01-01"
    with pytest.raises(MalformedInput):
        Metadata.from_dict(doc, PRIMARY)


def test_limits_are_enforced_before_trusting_counts():
    t = Targets(expires=EXPIRES)
    for i in range(CONSTRAINED.max_targets + 1):
        t.targets[f"f{i}"] = TargetFile(f"f{i}", 1, {"sha256": "00" * 32})
    data = Metadata(t).to_bytes()
    with pytest.raises((LimitExceeded, EndlessDataAttack)):
        Metadata.from_json(data, CONSTRAINED, role_type="targets")
    with pytest.raises(EndlessDataAttack):
        Metadata.from_json(
            b" " * (CONSTRAINED.bytes_for_role("timestamp") + 1), CONSTRAINED, role_type="timestamp"
        )
    md = Metadata(Timestamp(expires=EXPIRES))
    md.signatures = [md.sign(PrivateKey.generate())] * (PRIMARY.max_signatures + 1)
    with pytest.raises(LimitExceeded):
        Metadata.from_json(md.to_bytes(), PRIMARY)


def test_5_2_6_map_file_round_trip_and_validation():
    mf = MapFile.default("https://d", "https://i")
    back = MapFile.from_json(mf.to_json(), PRIMARY)
    assert back.to_dict() == mf.to_dict()
    bad = mf.to_dict()
    bad["mapping"][0]["repositories"] = ["director", "nope"]
    with pytest.raises(MalformedInput):
        MapFile.from_json(canonical(bad), PRIMARY)
    bad = mf.to_dict()
    bad["mapping"][0]["threshold"] = 3
    with pytest.raises(MalformedInput):
        MapFile.from_json(canonical(bad), PRIMARY)


def test_root_key_helpers_dedupe():
    key = PrivateKey.generate()
    root = _root(key)
    root.add_key(key.key, "root")
    assert root.roles["root"].keyids == [key.keyid]
    root.revoke_key(key.keyid, "root")
    assert key.keyid in root.keys  # still used by other roles
    for r in ("timestamp", "snapshot", "targets"):
        root.revoke_key(key.keyid, r)
    assert key.keyid not in root.keys
    assert isinstance(root.roles["root"], Role)
