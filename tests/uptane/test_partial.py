"""Partial verification on a Secondary (§5.4.4.1): Director root rotation, Director targets
checks without snapshot binding, this ECU's entry, and state kept on every failure."""

from __future__ import annotations

from datetime import timedelta

import pytest
from trust_support import NOW, VIN, director_entry, make_repo

from uptane.errors import (
    BadHardwareId,
    DirectorDelegation,
    EndlessDataAttack,
    ExpiredMetadata,
    MalformedInput,
    RepeatedEcuId,
    RollbackAttack,
    ThresholdNotMet,
    UptaneError,
    VehicleMismatch,
)
from uptane.keys import PrivateKey
from uptane.limits import CONSTRAINED
from uptane.metadata import JSON, DelegatedRole
from uptane.partial import PartialVerifier

ECU, HW = "ecu-1", "hw-1"


def director(**kw):
    kw.setdefault("targets", [director_entry(b"img", "fw/a.bin", ECU, HW, release_counter=3)])
    return make_repo("director", vehicle_id=VIN, **kw)


def verifier(repo, **kw):
    kw.setdefault("vehicle_id", VIN)
    return PartialVerifier(repo.builder.trusted_root(), ECU, HW, CONSTRAINED, encoding=JSON, **kw)


def targets_of(repo):
    return repo.file("targets.json")


def test_5_4_4_1_partial_accepts_director_targets_and_returns_this_ecus_entry():
    repo = director()
    pv = verifier(repo)
    entry = pv.verify(targets_of(repo), NOW, installed_release_counter=2)
    assert entry is not None and entry.path == "fw/a.bin" and entry.release_counter == 3
    assert pv.state() == {"repository": "director", "root": 1, "targets": 2}
    assert pv.raw["targets"] == targets_of(repo)


def test_5_4_4_1_partial_returns_none_when_nothing_is_for_this_ecu():
    repo = director(targets=[director_entry(b"x", "fw/x.bin", "ecu-2", "hw-2")])
    pv = verifier(repo)
    assert pv.verify(targets_of(repo), NOW) is None
    assert pv.targets is not None  # still the latest Director targets, for rollback


def test_5_4_4_1_partial_keeps_previous_targets_on_failure():
    repo = director()
    pv = verifier(repo)
    first = targets_of(repo)
    pv.verify(first, NOW)
    repo.builder.add_target(director_entry(b"img2", "fw/b.bin", "ecu-2", "hw-2"))
    repo.publish(NOW)
    state, raw = pv.state(), dict(pv.raw)
    t = repo.current("targets")
    attacks = [
        (repo.sign(t, PrivateKey.generate()), ThresholdNotMet),
        (b"{", MalformedInput),
        (b" " * (CONSTRAINED.role_bytes["targets"] + 1), EndlessDataAttack),
    ]
    t2 = repo.current("targets")
    t2.expires = NOW - timedelta(seconds=1)
    attacks.append((repo.sign(t2, *repo.keys["targets"]), ExpiredMetadata))
    for data, error in attacks:
        with pytest.raises(error) as e:
            pv.verify(data, NOW)
        assert e.value.repository == "director"
        assert pv.state() == state and pv.raw == raw
    # the genuine update is still accepted afterwards
    pv.verify(targets_of(repo), NOW)
    assert pv.targets.signed.version == 3
    # and the older file is now a rollback
    with pytest.raises(RollbackAttack):
        pv.verify(first, NOW)
    assert pv.targets.signed.version == 3


def test_5_4_4_1_partial_checks_this_ecus_hardware_id_and_release_counter():
    repo = director()
    pv = PartialVerifier(repo.builder.trusted_root(), ECU, "other-hw", CONSTRAINED, encoding=JSON)
    with pytest.raises(BadHardwareId):
        pv.verify(targets_of(repo), NOW)
    assert pv.targets is None
    pv = verifier(repo)
    with pytest.raises(RollbackAttack):
        pv.verify(targets_of(repo), NOW, installed_release_counter=4)
    assert pv.targets is None


def test_5_4_4_6_partial_director_must_not_delegate():
    repo = director()
    repo.builder.delegate(
        "targets", DelegatedRole("d", [], 1, paths=["*"]), [PrivateKey.generate()]
    )
    repo.publish()
    with pytest.raises(DirectorDelegation):
        verifier(repo).verify(targets_of(repo), NOW)


def test_5_4_4_6_partial_repeated_ecu_id_refused():
    repo = director(
        targets=[
            director_entry(b"a", "a.bin", ECU, HW),
            director_entry(b"b", "b.bin", ECU, HW),
        ]
    )
    with pytest.raises(RepeatedEcuId):
        verifier(repo).verify(targets_of(repo), NOW)


def test_5_2_3_1_partial_refuses_replayed_empty_targets_of_another_vehicle():
    other = make_repo("director", vehicle_id="VIN-OTHER")
    # same Director keys, another vehicle's (empty) targets: sign them with our repo's key
    repo = director()
    t = other.current("targets")
    t.version = 50
    data = repo.sign(t, *repo.keys["targets"])
    pv = verifier(repo)
    with pytest.raises(VehicleMismatch):
        pv.verify(data, NOW)
    assert pv.targets is None


def test_5_4_4_1_partial_follows_director_root_rotation():
    repo = director()
    pv = verifier(repo)
    pv.verify(targets_of(repo), NOW)
    old_root, old_targets = repo.keys["root"][0], repo.keys["targets"][0]
    repo.builder.rotate_keys("root", [PrivateKey.generate()], revoke=[old_root.keyid])
    repo.publish()
    repo.builder.rotate_keys("targets", [PrivateKey.generate()], revoke=[old_targets.keyid])
    repo.publish()
    roots = [repo.file(f"{v}.root.json") for v in (1, 2, 3)]
    # without the new roots the targets (signed by the new key) do not verify
    with pytest.raises(ThresholdNotMet):
        pv.verify(targets_of(repo), NOW)
    assert pv.verify(targets_of(repo), NOW, root_updates=roots) is not None
    assert pv.state()["root"] == 3
    assert (
        PartialVerifier.load(pv.raw, ECU, HW, CONSTRAINED, encoding=JSON, vehicle_id=VIN).state()
        == pv.state()
    )


def test_5_4_4_3_partial_root_update_needs_old_keys_and_fresh_final_root():
    repo = director(expiry={"root": timedelta(days=1)})
    pv = verifier(repo)
    root = repo.current("root")
    root.version = 2
    forged = repo.sign(root, PrivateKey.generate())
    with pytest.raises(ThresholdNotMet) as e:
        pv.verify(targets_of(repo), NOW, root_updates=[forged])
    assert (e.value.repository, e.value.role) == ("director", "root")
    assert pv.state() == {"repository": "director", "root": 1, "targets": None}
    repo.builder.mark("root")
    repo.publish()
    with pytest.raises(ExpiredMetadata):
        pv.verify(
            targets_of(repo), NOW + timedelta(days=2), root_updates=[repo.file("2.root.json")]
        )
    assert pv.targets is None
    with pytest.raises(UptaneError):
        pv.verify(targets_of(repo), NOW, root_updates=[b"junk"])


def test_5_4_4_1_partial_load_drops_targets_that_no_longer_verify():
    repo = director()
    pv = verifier(repo)
    pv.verify(targets_of(repo), NOW)
    files = dict(pv.raw)
    files["targets"] = repo.sign(repo.current("targets"), PrivateKey.generate())
    loaded = PartialVerifier.load(files, ECU, HW, CONSTRAINED, encoding=JSON)
    assert loaded.targets is None and loaded.dropped == ["targets"]
    with pytest.raises(MalformedInput):
        PartialVerifier.load({}, ECU, HW, CONSTRAINED, encoding=JSON)


def test_5_4_4_1_persisted_expired_targets_still_block_rollback():
    repo = director()
    pv = verifier(repo)
    pv.verify(targets_of(repo), NOW)
    old = targets_of(repo)
    repo.builder.mark("targets")
    repo.publish(NOW)
    pv.verify(targets_of(repo), NOW)
    much_later = NOW + timedelta(days=365)
    loaded = PartialVerifier.load(pv.raw, ECU, HW, CONSTRAINED, encoding=JSON, vehicle_id=VIN)
    assert loaded.targets.signed.is_expired(much_later)
    t = repo.current("targets")
    t.version = 1
    t.expires = much_later + timedelta(days=1)
    with pytest.raises(RollbackAttack):
        loaded.verify(repo.sign(t, *repo.keys["targets"]), much_later)
    with pytest.raises(RollbackAttack):
        loaded.verify(old, much_later)
    with pytest.raises(ExpiredMetadata):  # the trusted file itself is stale by now
        loaded.verify(loaded.raw["targets"], much_later)


def test_5_4_4_1_partial_verification_over_der():
    from uptane.metadata import DER

    repo = make_repo(
        "director",
        vehicle_id=VIN,
        targets=[director_entry(b"img", "fw/a.bin", ECU, HW, release_counter=3)],
        encodings=(JSON, DER),
    )
    pv = PartialVerifier(repo.builder.trusted_root(DER), ECU, HW, CONSTRAINED, vehicle_id=VIN)
    files = repo.builder.files[DER]
    entry = pv.verify(files["targets"], NOW, root_updates=[files["root"]])
    assert entry is not None and entry.release_counter == 3
    with pytest.raises(MalformedInput):
        pv.verify(repo.builder.files[JSON]["targets"], NOW)
    assert pv.raw["targets"] == files["targets"]


def test_5_4_4_3_partial_root_updates_are_bounded():
    from uptane.errors import LimitExceeded

    repo = director()
    pv = verifier(repo)
    too_many = [repo.builder.trusted_root()] * (CONSTRAINED.max_root_rotations + 1)
    with pytest.raises(LimitExceeded) as e:
        pv.verify(targets_of(repo), NOW, root_updates=too_many)
    assert (e.value.repository, e.value.role) == ("director", "root")
    # versions already trusted are skipped, not errors
    assert pv.verify(targets_of(repo), NOW, root_updates=[repo.builder.trusted_root()])
