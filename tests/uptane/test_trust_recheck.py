"""A trusted snapshot or targets file is checked against the *current* root's keys before
it is reused; a file this object already checked against that same root is not checked a
second time (a find right after a refresh). These tests hold the re-check where it
matters: after a root update that rotated the role's keys."""

from __future__ import annotations

from datetime import timedelta

import pytest
from trust_support import NOW, make_repo

from uptane.errors import DropRequestAttack, MixAndMatchAttack
from uptane.keys import PrivateKey
from uptane.metadata import TargetFile
from uptane.trust import RepositoryTrust

LATER = NOW + timedelta(hours=1)


def _fresh():
    repo = make_repo(targets=[TargetFile.from_data("fw/a.bin", b"a")])
    trust = repo.trust()
    trust.refresh(repo.source, NOW)
    return repo, trust


def _rotate_and_stop_after_the_root_loop(repo, trust, role: str) -> None:
    """A new root rotating ``role``'s keys is accepted, then the timestamp is withheld,
    so the trusted snapshot and targets are the ones checked under the old root."""
    old = repo.keys[role][0]
    repo.builder.rotate_keys(role, [PrivateKey.generate()], revoke=[old.keyid])
    repo.builder.mark("root")
    repo.publish(LATER)
    repo.source.overrides["timestamp.json"] = None
    with pytest.raises(DropRequestAttack):
        trust.refresh(repo.source, LATER)
    assert trust.root.signed.version == 2


def test_5_4_4_6_targets_checked_under_an_older_root_are_checked_again() -> None:
    repo, trust = _fresh()
    old_targets = trust.targets
    assert trust.find_target("fw/a.bin", repo.source, NOW)  # checked under root 1
    _rotate_and_stop_after_the_root_loop(repo, trust, "targets")
    assert trust.targets is old_targets
    with pytest.raises(MixAndMatchAttack, match="refresh first"):
        trust.find_target("fw/a.bin", repo.source, LATER)


def test_a_file_checked_under_this_root_is_reused_and_loaded_state_too() -> None:
    repo, trust = _fresh()
    assert trust.find_target("fw/a.bin", repo.source, NOW).length == 1
    assert trust.find_target("fw/a.bin", repo.source, NOW).length == 1
    loaded = RepositoryTrust.load("image", dict(trust.raw), trust.limits)
    assert loaded.dropped == []
    assert loaded.find_target("fw/a.bin", repo.source, NOW).length == 1
