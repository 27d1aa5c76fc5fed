"""The top-level client workflow of one repository (§5.4.4.3–§5.4.4.6), attack by attack.

Every attack plays a man in the middle (``source.overrides``) or a holder of some keys
(:meth:`Repo.sign`) against a real RepositoryBuilder repository, and checks the named
error, where it happened, and that the trusted state did not move.
"""

from __future__ import annotations

import contextlib
import copy
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trust_support import NOW, VIN, director_entry, make_repo

from uptane.errors import (
    BadEcuId,
    DirectorDelegation,
    DropRequestAttack,
    EndlessDataAttack,
    ExpiredMetadata,
    FreezeAttack,
    MalformedInput,
    MixAndMatchAttack,
    RepeatedEcuId,
    RollbackAttack,
    ThresholdNotMet,
    UptaneError,
    VehicleMismatch,
)
from uptane.keys import PrivateKey
from uptane.limits import PRIMARY
from uptane.metadata import (
    DER,
    JSON,
    DelegatedRole,
    Metadata,
    MetaFile,
    Signature,
    TargetFile,
    Timestamp,
)
from uptane.trust import RepositoryTrust, verify_targets_bytes

LATER = NOW + timedelta(hours=1)


def fresh(repo=None, **kw):
    repo = repo or make_repo(targets=[TargetFile.from_data("fw/a.bin", b"a")], **kw)
    trust = repo.trust()
    trust.refresh(repo.source, NOW)
    return repo, trust


# --- provisioning --------------------------------------------------------------------


def test_5_4_1_provisioned_root_must_be_signed_by_its_own_keys():
    repo = make_repo()
    root = repo.current("root")
    forged = repo.sign(root, PrivateKey.generate())
    with pytest.raises(ThresholdNotMet) as e:
        RepositoryTrust("image", forged, PRIMARY)
    assert (e.value.repository, e.value.role) == ("image", "root")
    with pytest.raises(MalformedInput):
        RepositoryTrust("image", b"{not json", PRIMARY)


def test_5_4_4_2_refresh_reaches_every_top_level_role_and_finds_the_target():
    repo = make_repo(targets=[TargetFile.from_data("fw/a.bin", b"a")])
    trust = repo.trust()
    result = trust.refresh(repo.source, NOW)
    assert result.timestamp_changed and result.snapshot_changed and result.targets_changed
    assert result.stopped_early is None
    assert trust.state() == {
        "repository": "image",
        "root": 1,
        "timestamp": 2,
        "snapshot": 2,
        "targets": 2,
        "delegated": {},
    }
    assert trust.find_target("fw/a.bin", repo.source, NOW).length == 1
    assert set(trust.raw) == {"root", "timestamp", "snapshot", "targets"}


# --- §5.4.4.3 root ---------------------------------------------------------------------


def test_5_4_4_3_root_rotation_chain_is_followed_version_by_version():
    repo = make_repo()
    trust = repo.trust()
    for _ in range(3):
        repo.builder.rotate_keys(
            "root", [PrivateKey.generate()], revoke=[repo.builder.root.roles["root"].keyids[0]]
        )
        repo.publish()
    result = trust.refresh(repo.source, NOW)
    assert result.root_rotations == 3
    assert trust.root.signed.version == 4
    assert repo.source.requests[:4] == ["2.root.json", "3.root.json", "4.root.json", "5.root.json"]
    assert trust.raw["root"] == repo.file("4.root.json")


def _next_root(repo, *, version=None, rotate_to=None):
    root = repo.current("root")
    root.version = version or root.version + 1
    if rotate_to is not None:
        for kid in list(root.roles["root"].keyids):
            root.revoke_key(kid, "root")
        root.add_key(rotate_to.key, "root")
    return root


def test_5_4_4_3_root_needs_threshold_of_old_and_new_keys():
    repo = make_repo()
    old = repo.keys["root"][0]
    new = PrivateKey.generate()
    root = _next_root(repo, rotate_to=new)
    for signers in ([new], [old]):  # only the new keys, then only the old keys
        trust = repo.trust()
        repo.source.overrides["2.root.json"] = repo.sign(root, *signers)
        with pytest.raises(ThresholdNotMet) as e:
            trust.refresh(repo.source, NOW)
        assert (e.value.repository, e.value.role) == ("image", "root")
        assert trust.root.signed.version == 1
    repo.source.overrides["2.root.json"] = repo.sign(root, old, new)
    trust = repo.trust()
    with pytest.raises(DropRequestAttack):  # the root is accepted; no timestamp is served
        repo.source.overrides["timestamp.json"] = None
        trust.refresh(repo.source, NOW)
    assert trust.root.signed.version == 2


def test_5_4_4_3_root_threshold_counts_unique_keys_not_signatures():
    repo = make_repo(thresholds={"root": 2}, keys_per_role=2)
    stolen = repo.keys["root"][0]
    root = _next_root(repo)
    # the attacker lists its one key under a second id and signs twice
    alias = "f" * 64
    root.keys[alias] = stolen.key
    root.roles["root"].keyids.append(alias)
    md = Metadata(root)
    sig = md.sign(stolen)
    md.signatures.append(Signature(alias, sig.sig))
    repo.source.overrides["2.root.json"] = md.to_bytes()
    trust = repo.trust()
    with pytest.raises(ThresholdNotMet):
        trust.refresh(repo.source, NOW)
    assert trust.root.signed.version == 1
    # the same signature repeated under the same key id: the file is malformed (TUF,
    # python-tuf "Multiple signatures found for keyid"), threshold or not
    md.signatures.append(Signature(stolen.keyid, sig.sig))
    repo.source.overrides["2.root.json"] = md.to_bytes()
    with pytest.raises(MalformedInput, match="two signatures name the key id"):
        trust.refresh(repo.source, NOW)
    assert trust.root.signed.version == 1


def test_5_4_4_3_root_version_must_be_exactly_n_plus_1():
    repo = make_repo()
    root = _next_root(repo, version=3)
    repo.source.overrides["2.root.json"] = repo.sign(root, repo.keys["root"][0])
    trust = repo.trust()
    with pytest.raises(RollbackAttack) as e:
        trust.refresh(repo.source, NOW)
    assert e.value.role == "root"
    # a replayed version 1 under the name 2.root.json is a rollback as well
    repo.source.overrides["2.root.json"] = repo.builder.trusted_root()
    with pytest.raises(RollbackAttack):
        trust.refresh(repo.source, NOW)


def test_5_4_4_3_root_loop_is_bounded_by_max_root_rotations():
    repo = make_repo()
    for _ in range(4):
        repo.builder.mark("root")
        repo.publish()
    limits = PRIMARY.replace(max_root_rotations=2)
    trust = repo.trust(limits)
    assert trust.refresh(repo.source, NOW).root_rotations == 2
    assert trust.root.signed.version == 3
    trust.refresh(repo.source, NOW)
    assert trust.root.signed.version == 5


def test_5_4_4_3_expired_final_root_is_a_freeze_attack_but_intermediate_roots_may_expire():
    repo = make_repo(expiry={"root": timedelta(days=1)})
    repo.builder.mark("root")
    repo.publish(NOW)  # root 2 expires NOW+1d
    trust = repo.trust()
    with pytest.raises(ExpiredMetadata) as e:
        trust.refresh(repo.source, NOW + timedelta(days=2))
    assert isinstance(e.value, FreezeAttack)
    assert (e.value.repository, e.value.role) == ("image", "root")
    assert trust.root.signed.version == 2  # the verified root is kept, as in the Standard
    later = NOW + timedelta(days=10)
    repo.builder.mark("root")
    repo.builder.mark("snapshot")
    repo.publish(later)  # root 3 is fresh; root 2 (expired) is only a step on the way
    trust = repo.trust()
    trust.refresh(repo.source, later)
    assert trust.root.signed.version == 3


def _forged_timestamp(repo, version, snapshot_version=None, **meta):
    ts = repo.current("timestamp")
    ts.version = version
    if snapshot_version is not None:
        ts.snapshot_meta = MetaFile(snapshot_version, **meta)
    return repo.sign(ts, *repo.keys["timestamp"])


def test_5_4_4_3_timestamp_key_rotation_recovers_from_fast_forward():
    repo, trust = fresh()
    # a stolen timestamp key fast-forwards the client to version 1000
    repo.source.overrides["timestamp.json"] = _forged_timestamp(repo, 1000)
    trust.refresh(repo.source, NOW)
    assert trust.timestamp.signed.version == 1000
    del repo.source.overrides["timestamp.json"]
    # without a rotation the real timestamp now looks like a rollback
    repo.publish(LATER)
    with pytest.raises(RollbackAttack):
        trust.refresh(repo.source, LATER)
    # the repository rotates the timestamp key: the client forgets the fast-forwarded file
    old = repo.keys["timestamp"][0]
    repo.builder.rotate_keys("timestamp", [PrivateKey.generate()], revoke=[old.keyid])
    repo.publish(LATER)
    result = trust.refresh(repo.source, LATER)
    assert "timestamp" in result.keys_rotated
    assert trust.timestamp.signed.version == repo.builder.timestamp.version < 1000
    assert trust.find_target("fw/a.bin", repo.source, LATER)


def test_5_4_4_3_snapshot_key_rotation_forgets_timestamp_snapshot_and_targets():
    repo, trust = fresh()
    old = repo.keys["snapshot"][0]
    repo.builder.rotate_keys("snapshot", [PrivateKey.generate()], revoke=[old.keyid])
    repo.builder.mark("root")
    repo.source.overrides["timestamp.json"] = None  # the cycle stops after the root loop
    repo.publish(LATER)
    with pytest.raises(DropRequestAttack):
        trust.refresh(repo.source, LATER)
    assert trust.timestamp is None and trust.snapshot is None
    assert "timestamp" not in trust.raw and "snapshot" not in trust.raw
    # the targets versions were held through the snapshot: they go with it (TUF
    # fast-forward recovery, as python-tuf)
    assert trust.targets is None and "targets" not in trust.raw and not trust.delegated


def test_5_4_4_3_timestamp_key_rotation_keeps_the_targets_floor():
    repo, trust = fresh()
    old = repo.keys["timestamp"][0]
    repo.builder.rotate_keys("timestamp", [PrivateKey.generate()], revoke=[old.keyid])
    repo.builder.mark("root")
    repo.source.overrides["timestamp.json"] = None
    repo.publish(LATER)
    with pytest.raises(DropRequestAttack):
        trust.refresh(repo.source, LATER)
    assert trust.timestamp is None and trust.snapshot is None
    assert trust.targets is not None  # only a snapshot key rotation drops it


# --- §5.4.4.4 timestamp -----------------------------------------------------------------


def test_5_4_4_4_timestamp_rollback_refused():
    repo, trust = fresh()
    old = repo.file("timestamp.json")
    repo.publish(LATER)
    trust.refresh(repo.source, LATER)
    state = trust.state()
    repo.source.overrides["timestamp.json"] = old
    with pytest.raises(RollbackAttack) as e:
        trust.refresh(repo.source, LATER)
    assert (e.value.repository, e.value.role) == ("image", "timestamp")
    assert trust.state() == state


def test_5_4_4_4_timestamp_equal_version_keeps_the_trusted_one():
    repo, trust = fresh()
    result = trust.refresh(repo.source, NOW)
    assert result.stopped_early == "timestamp unchanged"
    assert not result.timestamp_changed and result.timestamp_kept is None
    trusted, raw = trust.timestamp, trust.raw["timestamp"]
    # the same version with other content (here: a later expiry): no update, no attack;
    # the trusted timestamp is kept and the refresh goes on (TUF 5.4.3, python-tuf)
    ts = repo.current("timestamp")
    ts.expires += timedelta(days=30)
    repo.source.overrides["timestamp.json"] = repo.sign(ts, *repo.keys["timestamp"])
    result = trust.refresh(repo.source, NOW)
    assert result.stopped_early == "timestamp unchanged" and not result.timestamp_changed
    assert result.timestamp_kept is not None and "kept" in result.timestamp_kept
    assert trust.timestamp is trusted and trust.raw["timestamp"] == raw
    # the kept timestamp must itself be fresh
    with pytest.raises(ExpiredMetadata) as e:
        trust.refresh(repo.source, trusted.signed.expires)
    assert e.value.role == "timestamp"


def test_5_4_4_4_timestamp_must_not_name_an_older_snapshot():
    repo, trust = fresh()
    repo.source.overrides["timestamp.json"] = _forged_timestamp(repo, 50, snapshot_version=1)
    with pytest.raises(RollbackAttack):
        trust.refresh(repo.source, NOW)


def test_5_4_4_4_timestamp_needs_threshold():
    repo, trust = fresh()
    ts = repo.current("timestamp")
    ts.version += 1
    repo.source.overrides["timestamp.json"] = repo.sign(ts, PrivateKey.generate())
    with pytest.raises(ThresholdNotMet) as e:
        trust.refresh(repo.source, NOW)
    assert e.value.role == "timestamp"


def test_5_4_4_4_expired_timestamp_is_a_freeze_attack():
    repo, trust = fresh()
    with pytest.raises(ExpiredMetadata) as e:
        trust.refresh(repo.source, NOW + timedelta(days=2))
    assert e.value.role == "timestamp"


def test_5_4_4_4_oversize_timestamp_is_endless_data():
    repo, trust = fresh()
    repo.source.overrides["timestamp.json"] = b" " * (PRIMARY.role_bytes["timestamp"] + 1)
    with pytest.raises(EndlessDataAttack):
        trust.refresh(repo.source, NOW)
    # bytes handed in directly are capped as well
    with pytest.raises(EndlessDataAttack) as e:
        trust.update_timestamp(b"{" * (PRIMARY.role_bytes["timestamp"] + 1), NOW)
    assert (e.value.repository, e.value.role) == ("image", "timestamp")


# --- §5.4.4.5 snapshot ------------------------------------------------------------------


def test_5_4_4_5_snapshot_version_must_match_timestamp():
    repo, trust = fresh()
    # a timestamp without hashes names snapshot 3; version 2 is served under that name
    repo.source.overrides["timestamp.json"] = _forged_timestamp(repo, 9, snapshot_version=3)
    repo.source.overrides["3.snapshot.json"] = repo.file("2.snapshot.json")
    with pytest.raises(MixAndMatchAttack) as e:
        trust.refresh(repo.source, NOW)
    assert e.value.role == "snapshot"


def test_5_4_4_5_snapshot_hashes_and_length_must_match_timestamp():
    repo, trust = fresh()
    repo.builder.mark("snapshot")
    repo.publish(LATER)
    name = f"{repo.builder.snapshot.version}.snapshot.json"
    snap = repo.current("snapshot")
    snap.expires += timedelta(seconds=1)  # same length, other bytes
    repo.source.overrides[name] = repo.sign(snap, *repo.keys["snapshot"])
    with pytest.raises(MixAndMatchAttack):
        trust.refresh(repo.source, LATER)
    assert trust.snapshot.signed.version == 2


def test_5_4_4_5_snapshot_download_is_capped_by_timestamp_length():
    repo, trust = fresh()
    repo.builder.mark("snapshot")
    repo.publish(LATER)
    name = f"{repo.builder.snapshot.version}.snapshot.json"
    repo.source.overrides[name] = repo.file(name) + b" " * 10
    with pytest.raises(EndlessDataAttack):
        trust.refresh(repo.source, LATER)


def _delegating_repo():
    repo = make_repo(targets=[TargetFile.from_data("fw/a.bin", b"a")])
    sup = PrivateKey.generate()
    repo.builder.delegate("targets", DelegatedRole("supplier", [], 1, paths=["sup/*"]), [sup])
    repo.builder.add_target(TargetFile.from_data("sup/x.bin", b"x"), role="supplier")
    repo.publish()
    repo.extra["supplier"] = sup
    return repo


def _forge_snapshot_and_timestamp(repo, change):
    snap = repo.current("snapshot")
    snap.version += 1
    change(snap)
    data = repo.sign(snap, *repo.keys["snapshot"])
    repo.source.overrides[f"{snap.version}.snapshot.json"] = data
    ts = repo.current("timestamp")
    ts.version += 1
    ts.snapshot_meta = MetaFile(snap.version, len(data))
    repo.source.overrides["timestamp.json"] = repo.sign(ts, *repo.keys["timestamp"])


def test_5_4_4_5_snapshot_must_not_drop_a_targets_entry():
    repo, trust = fresh(_delegating_repo())
    _forge_snapshot_and_timestamp(repo, lambda s: s.meta.pop("supplier.json"))
    with pytest.raises(RollbackAttack) as e:
        trust.refresh(repo.source, NOW)
    assert e.value.role == "snapshot"


def test_5_4_4_5_snapshot_must_not_roll_back_a_targets_version():
    repo, trust = fresh(_delegating_repo())
    _forge_snapshot_and_timestamp(repo, lambda s: setattr(s.meta["supplier.json"], "version", 1))
    with pytest.raises(RollbackAttack):
        trust.refresh(repo.source, NOW)


def test_5_4_4_5_snapshot_needs_threshold_and_freshness():
    repo, trust = fresh()
    snap = repo.current("snapshot")
    snap.version += 1

    def forge(*signers):
        data = repo.sign(snap, *signers)
        repo.source.overrides[f"{snap.version}.snapshot.json"] = data
        ts = repo.current("timestamp")
        ts.version += 1
        ts.snapshot_meta = MetaFile(snap.version)
        repo.source.overrides["timestamp.json"] = repo.sign(ts, *repo.keys["timestamp"])

    forge(PrivateKey.generate())
    with pytest.raises(ThresholdNotMet):
        trust.refresh(repo.source, NOW)
    snap.expires = NOW - timedelta(seconds=1)
    forge(*repo.keys["snapshot"])
    with pytest.raises(ExpiredMetadata) as e:
        trust.refresh(repo.source, NOW)
    assert e.value.role == "snapshot"


def test_5_4_4_5_snapshot_needs_a_trusted_timestamp():
    repo = make_repo()
    with pytest.raises(MixAndMatchAttack):
        repo.trust().update_snapshot(repo.file("1.snapshot.json"), NOW)


# --- §5.4.4.6 targets -------------------------------------------------------------------


def test_5_4_4_6_targets_version_must_match_snapshot():
    repo, trust = fresh()
    v = repo.builder.targets.version
    older = repo.file(f"{v}.targets.json")
    repo.builder.add_target(TargetFile.from_data("fw/b.bin", b"b"))
    repo.publish(LATER)
    v += 1
    repo.source.overrides[f"{v}.targets.json"] = older
    with pytest.raises(MixAndMatchAttack) as e:
        trust.refresh(repo.source, LATER)
    assert (e.value.repository, e.value.role) == ("image", "targets")
    assert trust.targets.signed.version == v - 1


def test_5_4_4_6_targets_rollback_refused():
    repo = make_repo()
    older = repo.file("1.targets.json")
    repo.builder.add_target(TargetFile.from_data("fw/a.bin", b"a"))
    repo.publish()
    repo, trust = fresh(repo)
    keys, entry = trust.root.signed.role_keys("targets")
    with pytest.raises(RollbackAttack):
        verify_targets_bytes(
            older,
            role="targets",
            keys=keys,
            keyids=entry.keyids,
            threshold=entry.threshold,
            trusted=trust.targets,
            snapshot_meta=None,
            now=NOW,
            limits=PRIMARY,
        )


def test_5_4_4_6_targets_threshold_expiry_and_size():
    repo, trust = fresh()
    t = repo.current("targets")
    t.version += 1
    snap = repo.current("snapshot")

    def serve(data, length=None):
        snap.version += 1
        snap.meta["targets.json"] = MetaFile(t.version, length)
        sdata = repo.sign(snap, *repo.keys["snapshot"])
        repo.source.overrides[f"{snap.version}.snapshot.json"] = sdata
        repo.source.overrides[f"{t.version}.targets.json"] = data
        ts = repo.current("timestamp")
        ts.version = snap.version + 10
        ts.snapshot_meta = MetaFile(snap.version)
        repo.source.overrides["timestamp.json"] = repo.sign(ts, *repo.keys["timestamp"])

    serve(repo.sign(t, PrivateKey.generate()))
    with pytest.raises(ThresholdNotMet):
        trust.refresh(repo.source, NOW)
    t.expires = NOW
    serve(repo.sign(t, *repo.keys["targets"]))
    with pytest.raises(ExpiredMetadata):
        trust.refresh(repo.source, NOW)
    t.expires = NOW + timedelta(days=1)
    good = repo.sign(t, *repo.keys["targets"])
    serve(good, length=len(good) - 1)  # the snapshot caps the download
    with pytest.raises(EndlessDataAttack):
        trust.refresh(repo.source, NOW)
    serve(good, length=len(good))
    trust.refresh(repo.source, NOW)
    assert trust.targets.signed.version == t.version


def test_5_4_4_6_director_must_not_delegate():
    repo = make_repo("director", vehicle_id=VIN)
    repo.builder.delegate(
        "targets", DelegatedRole("d", [], 1, paths=["*"]), [PrivateKey.generate()]
    )
    repo.publish()
    trust = repo.trust(vehicle_id=VIN)
    with pytest.raises(DirectorDelegation) as e:
        trust.refresh(repo.source, NOW)
    assert (e.value.repository, e.value.role) == ("director", "targets")
    assert trust.targets is None


def test_5_4_4_6_director_repeated_ecu_id_refused():
    repo = make_repo(
        "director",
        vehicle_id=VIN,
        targets=[
            director_entry(b"a", "a.bin", "ecu-1", "hw"),
            director_entry(b"b", "b.bin", "ecu-1", "hw"),
        ],
    )
    with pytest.raises(RepeatedEcuId):
        repo.trust(vehicle_id=VIN).refresh(repo.source, NOW)


def test_5_4_4_2_director_ecu_ids_must_belong_to_the_vehicle():
    repo = make_repo(
        "director", vehicle_id=VIN, targets=[director_entry(b"a", "a.bin", "ecu-x", "hw")]
    )
    with pytest.raises(BadEcuId):
        repo.trust(vehicle_id=VIN, ecu_ids={"ecu-1", "ecu-2"}).refresh(repo.source, NOW)
    trust = repo.trust(vehicle_id=VIN, ecu_ids={"ecu-x"})
    trust.refresh(repo.source, NOW)
    assert "a.bin" in trust.targets.signed.targets


def test_5_2_3_1_replayed_empty_director_targets_of_another_vehicle_refused():
    repo = make_repo("director", vehicle_id="VIN-OTHER")  # empty targets, other vehicle
    trust = repo.trust(vehicle_id=VIN)
    with pytest.raises(VehicleMismatch) as e:
        trust.refresh(repo.source, NOW)
    assert isinstance(e.value, FreezeAttack)
    assert trust.targets is None
    # empty targets that name no vehicle could be anyone's: refused as well
    anon = make_repo("director")
    with pytest.raises(VehicleMismatch):
        anon.trust(vehicle_id=VIN).refresh(anon.source, NOW)
    # ours is accepted
    mine = make_repo("director", vehicle_id=VIN)
    mine.trust(vehicle_id=VIN).refresh(mine.source, NOW)


def test_5_4_4_6_image_repository_may_delegate():
    _, trust = fresh(_delegating_repo())
    assert trust.targets.signed.delegations is not None


# --- early stops, names and caps ----------------------------------------------------------


def test_5_4_4_2_unchanged_targets_is_not_downloaded_again():
    repo, trust = fresh()
    repo.builder.mark("snapshot")
    repo.publish(LATER)
    result = trust.refresh(repo.source, LATER)
    assert result.snapshot_changed and not result.targets_changed
    # not an early stop: whether anything is left to install is full verification's call
    assert result.stopped_early is None
    assert not any(r.endswith("targets.json") for r in repo.source.requests[-2:])


class RecordingSource:
    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def fetch_metadata(self, role, version, max_bytes):
        self.calls.append((role, version, max_bytes))
        return self.inner.fetch_metadata(role, version, max_bytes)


@pytest.mark.parametrize("consistent", [True, False])
def test_5_2_7_metadata_file_names_and_download_caps(consistent):
    repo = make_repo(consistent_snapshot=consistent)
    src = RecordingSource(repo.source)
    repo.trust().refresh(src, NOW)
    snap_len = len(repo.file("snapshot.json"))
    v = 1 if consistent else None
    assert src.calls == [
        ("root", 2, PRIMARY.role_bytes["root"]),
        ("timestamp", None, PRIMARY.role_bytes["timestamp"]),
        ("snapshot", v, snap_len),
        ("targets", v, PRIMARY.role_bytes["targets"]),
    ]


def test_missing_file_is_a_dropped_request():
    repo = make_repo()
    repo.source.overrides["1.snapshot.json"] = None
    trust = repo.trust()
    with pytest.raises(DropRequestAttack) as e:
        trust.refresh(repo.source, NOW)
    assert (e.value.repository, e.value.role) == ("image", "snapshot")


# --- persisted state --------------------------------------------------------------------


def test_load_restores_state_and_keeps_rollback_protection_after_expiry():
    repo, trust = fresh()
    old_ts = repo.file("timestamp.json")
    repo.publish(LATER)
    trust.refresh(repo.source, LATER)
    months = LATER + timedelta(days=200)  # everything has expired meanwhile
    loaded = RepositoryTrust.load("image", dict(trust.raw), PRIMARY)
    assert loaded.state() == trust.state() and loaded.dropped == []
    with pytest.raises(ExpiredMetadata):  # previous state, never fresh
        loaded.find_target("fw/a.bin", repo.source, months)
    repo.source.overrides["timestamp.json"] = old_ts
    with pytest.raises(RollbackAttack):
        loaded.update_timestamp(old_ts, LATER)
    del repo.source.overrides["timestamp.json"]
    # the repository re-signs; the client recovers without a manual step
    repo.builder.mark("targets")
    repo.publish(months)
    loaded.refresh(repo.source, months)
    assert loaded.find_target("fw/a.bin", repo.source, months).length == 1


def test_load_drops_files_that_no_longer_verify():
    repo, trust = fresh()
    files = dict(trust.raw)
    t = repo.current("targets")
    files["targets"] = repo.sign(t, PrivateKey.generate())
    loaded = RepositoryTrust.load("image", files, PRIMARY)
    assert loaded.targets is None and loaded.dropped == ["targets"]
    files["root"] = copy.copy(files["targets"])
    with pytest.raises(MalformedInput):
        RepositoryTrust.load("image", files, PRIMARY)
    with pytest.raises(MalformedInput):
        RepositoryTrust.load("image", {}, PRIMARY)


def test_load_keeps_delegated_roles_verified_through_their_parent():
    repo, trust = fresh(_delegating_repo())
    trust.find_target("sup/x.bin", repo.source, NOW)
    loaded = RepositoryTrust.load("image", dict(trust.raw), PRIMARY)
    assert set(loaded.delegated) == {"supplier"}
    files = dict(trust.raw)
    files["supplier"] = repo.sign(repo.current("supplier"), PrivateKey.generate())
    assert RepositoryTrust.load("image", files, PRIMARY).dropped == ["supplier"]


def test_timestamp_model_roundtrip_is_what_the_client_sees():
    # sanity: the attacker helper produces timestamps our decoder accepts
    repo = make_repo()
    data = _forged_timestamp(repo, 7)
    md = Metadata.from_json(data, PRIMARY, role_type="timestamp")
    assert isinstance(md.signed, Timestamp) and md.signed.version == 7


def test_5_4_4_3_targets_signed_by_rotated_away_keys_is_not_reused():
    repo, trust = fresh()
    old = repo.keys["targets"][0]
    repo.builder.rotate_keys("targets", [PrivateKey.generate()], revoke=[old.keyid])
    repo.publish(LATER)
    trust.update_root(repo.file("2.root.json"))
    # the trusted targets (signed by the old key) is no longer usable for an install
    with pytest.raises(MixAndMatchAttack):
        trust.find_target("fw/a.bin", repo.source, LATER)
    result = trust.refresh(repo.source, LATER)
    assert result.targets_changed
    assert trust.find_target("fw/a.bin", repo.source, LATER).length == 1


def test_5_4_4_2_der_repository_refreshes_and_refuses_a_rollback():
    from uptane.metadata import DER

    repo = make_repo(targets=[TargetFile.from_data("fw/a.bin", b"a")], encodings=(JSON, DER))
    source = repo.builder.source(DER)
    trust = RepositoryTrust("image", repo.builder.trusted_root(DER), PRIMARY, encoding=DER)
    trust.refresh(source, NOW)
    assert source.requests == ["2.root.der", "timestamp.der", "2.snapshot.der", "2.targets.der"]
    assert trust.find_target("fw/a.bin", source, NOW).length == 1
    old = repo.builder.files[DER]["timestamp"]
    repo.publish(LATER)
    trust.refresh(source, LATER)
    with pytest.raises(RollbackAttack):
        trust.update_timestamp(old, LATER)
    # a JSON file handed to a DER client is malformed input, not a crash
    with pytest.raises(MalformedInput):
        trust.update_timestamp(repo.builder.files[JSON]["timestamp"], LATER)


def test_5_4_4_4_duplicate_signatures_make_the_file_malformed():
    repo = make_repo(thresholds={"timestamp": 2}, keys_per_role=2)
    trust = repo.trust()
    trust.refresh(repo.source, NOW)
    ts = repo.current("timestamp")
    ts.version += 1
    md = Metadata(ts)
    sig = md.sign(repo.keys["timestamp"][0])
    md.signatures += [Signature(sig.keyid, sig.sig)]
    repo.source.overrides["timestamp.json"] = md.to_bytes()
    with pytest.raises(MalformedInput, match="two signatures"):
        trust.refresh(repo.source, NOW)
    # a threshold met does not make a repeated key id acceptable (python-tuf refuses it)
    md.sign(repo.keys["timestamp"][1])
    assert len(md.signatures) == 3
    repo.source.overrides["timestamp.json"] = md.to_bytes()
    with pytest.raises(MalformedInput, match="two signatures"):
        trust.refresh(repo.source, NOW)
    md.signatures = [s for i, s in enumerate(md.signatures) if i != 1]
    repo.source.overrides["timestamp.json"] = md.to_bytes()
    trust.refresh(repo.source, NOW)
    assert trust.timestamp.signed.version == ts.version


def test_two_repo_factory_gives_agreeing_repositories(two_repo_factory):
    director, image = two_repo_factory(
        {"fw/a.bin": b"a", "fw/b.bin": b"bb"},
        {"ecu-1": ("fw/a.bin", "hw-1"), "ecu-2": ("fw/b.bin", "hw-2")},
        release_counter=7,
    )
    d = director.trust(vehicle_id=VIN, ecu_ids={"ecu-1", "ecu-2"})
    d.refresh(director.source, NOW)
    i = image.trust()
    i.refresh(image.source, NOW)
    for path, entry in d.targets.signed.targets.items():
        found = i.find_target(path, image.source, NOW, hardware_id=entry.hardware_ids[0])
        assert (found.length, found.hashes, found.release_counter) == (
            entry.length,
            entry.hashes,
            7,
        )


# --- property: whatever a man in the middle replays, trust only moves forward ---------------


@settings(max_examples=40, deadline=None, database=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["publish", "new-target", "rotate-ts", "replay", "garbage", "drop"]),
            st.integers(0, 50),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_trusted_versions_never_decrease_and_honest_refresh_catches_up(steps):
    repo = make_repo(targets=[TargetFile.from_data("fw/a.bin", b"a")])
    trust = repo.trust()
    trust.refresh(repo.source, NOW)
    history: dict[str, list[bytes]] = {}

    def remember():
        for name, data in repo.builder.versioned_files(JSON).items():
            history.setdefault(name, [])
            if data not in history[name]:
                history[name].append(data)

    remember()
    floor = trust.state()
    for i, (action, n) in enumerate(steps):
        when = NOW + timedelta(minutes=i + 1)
        repo.source.overrides.clear()
        if action == "publish":
            repo.builder.mark("snapshot")
            repo.publish(when)
        elif action == "new-target":
            repo.builder.add_target(TargetFile.from_data(f"fw/{i}.bin", b"x" * (n + 1)))
            repo.publish(when)
        elif action == "rotate-ts":
            old = repo.builder.root.roles["timestamp"].keyids[0]
            repo.builder.rotate_keys("timestamp", [PrivateKey.generate()], revoke=[old])
            repo.publish(when)
        remember()
        if action in ("replay", "garbage", "drop"):
            names = sorted(history)
            name = names[n % len(names)]
            if action == "replay":
                repo.source.overrides[name] = history[name][n % len(history[name])]
            else:
                repo.source.overrides[name] = None if action == "drop" else b"\x00" * (n + 1)
        with contextlib.suppress(UptaneError):
            trust.refresh(repo.source, when)
        state = trust.state()
        for role in ("root", "timestamp", "snapshot", "targets"):
            if state[role] is not None and floor[role] is not None:
                assert state[role] >= floor[role], (role, state, floor)
        floor = {k: (state[k] if state[k] is not None else floor[k]) for k in state}
        # with the man in the middle gone, the client reaches the repository's state
        repo.source.overrides.clear()
        trust.refresh(repo.source, when)
        b = repo.builder
        assert (trust.timestamp.signed.version, trust.snapshot.signed.version) == (
            b.timestamp.version,
            b.snapshot.version,
        )
        assert trust.targets.signed.version == b.targets.version
        floor = trust.state()


# --- §5.4.4.6 the verified targets in another encoding ---------------------------------


def test_5_4_4_6_targets_in_another_encoding_must_be_the_verified_version():
    repo = make_repo(targets=[TargetFile.from_data("fw/a.bin", b"a")], encodings=(JSON, DER))
    trust = repo.trust()
    trust.refresh(repo.source, NOW)
    der_now = repo.builder.files[DER]["targets"]
    assert trust.verify_targets_encoding(der_now, DER, NOW).signed.version == 2
    older = repo.builder.versioned_files(DER)["2.targets.der"]
    repo.builder.add_target(TargetFile.from_data("fw/b.bin", b"b"))
    repo.publish(LATER)
    # the DER of another version than the verified one: mix-and-match
    newer = repo.builder.files[DER]["targets"]
    with pytest.raises(MixAndMatchAttack) as e:
        trust.verify_targets_encoding(newer, DER, LATER)
    assert (e.value.repository, e.value.role) == ("image", "targets")
    assert trust.verify_targets_encoding(older, DER, LATER).signed.version == 2
    # signed by a key the trusted root does not name
    forged = Metadata(copy.deepcopy(trust.targets.signed), encoding=DER)
    forged.sign(PrivateKey.generate())
    with pytest.raises(ThresholdNotMet):
        trust.verify_targets_encoding(forged.to_bytes(), DER, NOW)
