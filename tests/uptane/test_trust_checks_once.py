"""A signature check is not made twice on the same inputs (issue 20): a client loading
trusted files it verified before skips only checks whose every input (bytes, keys, key
ids, threshold, limits, encoding) is the same as one that passed. Any change among them
means a full check: these tests change each kind of input and count the checks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from trust_support import NOW, make_repo

from uptane import trust as trust_mod
from uptane.keys import PrivateKey
from uptane.limits import PRIMARY
from uptane.metadata import DelegatedRole, TargetFile
from uptane.trust import RepositoryTrust

LATER = NOW + timedelta(hours=1)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The roles whose signatures are checked (``verify_signed_by`` calls)."""
    calls: list[str] = []
    real = trust_mod.verify_signed_by

    def counting(md, keys, keyids, threshold, limits, *, role, repository=None):  # type: ignore[no-untyped-def]
        calls.append(role)
        return real(md, keys, keyids, threshold, limits, role=role, repository=repository)

    monkeypatch.setattr(trust_mod, "verify_signed_by", counting)
    return calls


def _delegating_repo():
    repo = make_repo(targets=[TargetFile.from_data("fw/a.bin", b"a")])
    vendor = PrivateKey.generate()
    repo.builder.delegate("targets", DelegatedRole("vendor", [], 1, paths=["v/*"]), [vendor])
    repo.builder.add_target(TargetFile.from_data("v/x.bin", b"x"), "vendor")
    repo.publish()
    trust = repo.trust()
    trust.refresh(repo.source, NOW)
    assert trust.find_target("v/x.bin", repo.source, NOW).length == 1
    return repo, trust


def test_20_unchanged_trusted_files_are_not_checked_again(counted: list[str]) -> None:
    _repo, trust = _delegating_repo()
    checks = trust.verified_checks()
    assert len(checks) == 4  # timestamp, snapshot, targets, vendor
    counted.clear()
    again = RepositoryTrust.load("image", dict(trust.raw), PRIMARY, verified=checks)
    assert counted == ["root"] and again.dropped == []  # the anchor: always checked
    assert set(again.raw) == set(trust.raw)
    counted.clear()
    RepositoryTrust.load("image", dict(trust.raw), PRIMARY)  # no record: every check
    assert sorted(counted) == ["root", "snapshot", "targets", "timestamp", "vendor"]


def test_20_a_changed_byte_is_checked_in_full_and_dropped(counted: list[str]) -> None:
    _repo, trust = _delegating_repo()
    checks = trust.verified_checks()
    files = dict(trust.raw)
    files["vendor"] = files["vendor"].replace(b'"length":1', b'"length":2', 1)
    assert files["vendor"] != trust.raw["vendor"]
    counted.clear()
    again = RepositoryTrust.load("image", files, PRIMARY, verified=checks)
    assert counted == ["root", "vendor"]
    assert again.dropped == ["vendor"] and "vendor" not in again.raw


def test_20_a_root_that_rotated_the_keys_makes_every_check_again(counted: list[str]) -> None:
    repo, trust = _delegating_repo()
    checks = trust.verified_checks()
    old = repo.keys["targets"][0]
    repo.builder.rotate_keys("targets", [PrivateKey.generate()], revoke=[old.keyid])
    repo.publish(LATER)
    files = dict(trust.raw)
    files["root"] = repo.file("2.root.json")  # the old targets, signed by the old key
    counted.clear()
    again = RepositoryTrust.load("image", files, PRIMARY, verified=checks)
    assert "targets" in counted and "targets" in again.dropped
    assert "vendor" not in again.raw  # nothing verified leads to it any more


def test_20_other_limits_make_every_check_again(counted: list[str]) -> None:
    _repo, trust = _delegating_repo()
    checks = trust.verified_checks()
    counted.clear()
    RepositoryTrust.load("image", dict(trust.raw), PRIMARY.replace(max_keys=200), verified=checks)
    assert sorted(counted) == ["root", "snapshot", "targets", "timestamp", "vendor"]


def test_20_a_search_reusing_a_delegated_role_does_not_check_it_twice(
    counted: list[str],
) -> None:
    repo, trust = _delegating_repo()
    counted.clear()
    assert trust.find_target("v/x.bin", repo.source, NOW).length == 1
    assert counted == []
