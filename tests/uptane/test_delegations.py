"""Delegation resolution on the Image repository (§5.4.4.7) and TAP 3 multi-role
delegations (§5.4.4.8): priority order, terminating roles, paths and hardware ids, hash
prefixes and succinct hash bins, cycles and limits, and every delegated file's checks."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from trust_support import NOW, make_repo

from uptane.errors import (
    DirectorDelegation,
    DropRequestAttack,
    ExpiredMetadata,
    LimitExceeded,
    MixAndMatchAttack,
    RollbackAttack,
    TargetNotFound,
    ThresholdNotMet,
    UnknownRole,
)
from uptane.keys import PrivateKey
from uptane.limits import PRIMARY
from uptane.metadata import (
    DelegatedRole,
    Delegations,
    MetaFile,
    RoleRef,
    SuccinctRoles,
    TargetFile,
)
from uptane.trust import RepositoryTrust, delegation_applies, is_delegated_path


def repo_with(*delegations, parent="targets"):
    """A repository whose ``parent`` delegates, in order, to each (DelegatedRole, {path:
    data}) given; returns the repo and each role's signer."""
    repo = make_repo()
    signers = {}
    for d, files in delegations:
        s = PrivateKey.generate()
        signers[d.name] = s
        repo.builder.delegate(parent, d, [s])
        for path, data in files.items():
            repo.builder.add_target(TargetFile.from_data(path, data), role=d.name)
    repo.publish()
    return repo, signers


def client(repo, limits=PRIMARY):
    trust = repo.trust(limits)
    trust.refresh(repo.source, NOW)
    return trust


def role(name, paths=("*",), **kw):
    return DelegatedRole(name, [], 1, paths=list(paths), **kw)


# --- matching -----------------------------------------------------------------------------


def test_5_4_4_7_path_patterns_do_not_cross_directories():
    d = role("r", paths=["fw/*", "exact/name.bin", "img-?.bin"])
    assert is_delegated_path(d, "fw/a.bin")
    assert not is_delegated_path(d, "fw/sub/a.bin")
    assert is_delegated_path(d, "exact/name.bin")
    assert is_delegated_path(d, "img-1.bin") and not is_delegated_path(d, "img-10.bin")
    assert not is_delegated_path(role("r", paths=[]), "fw/a.bin")
    digest = hashlib.sha256(b"fw/a.bin").hexdigest()
    hashed = DelegatedRole("h", [], 1, path_hash_prefixes=[digest[:2]])
    assert is_delegated_path(hashed, "fw/a.bin")
    other = DelegatedRole("h", [], 1, path_hash_prefixes=["zz"])
    assert not is_delegated_path(other, "fw/a.bin")


def test_5_4_4_7_hardware_id_and_path_must_both_match():
    d = role("r", paths=["fw/*"], hardware_ids=["brake-v1"])
    assert delegation_applies(d, "fw/a.bin", "brake-v1")
    assert not delegation_applies(d, "fw/a.bin", "engine-v1")
    assert not delegation_applies(d, "other/a.bin", "brake-v1")
    assert delegation_applies(d, "fw/a.bin", None)  # no hardware id asked about
    assert delegation_applies(role("r", paths=["fw/*"]), "fw/a.bin", "engine-v1")


def test_5_4_4_7_hardware_restricted_delegation_is_skipped_for_other_hardware():
    repo, _ = repo_with(
        (role("brake", paths=["fw/*"], hardware_ids=["brake-v1"]), {"fw/a.bin": b"brake"}),
        (role("any", paths=["fw/*"]), {"fw/a.bin": b"generic"}),
    )
    trust = client(repo)
    brake = trust.find_target("fw/a.bin", repo.source, NOW, hardware_id="brake-v1")
    other = trust.find_target("fw/a.bin", repo.source, NOW, hardware_id="engine-v1")
    assert brake.length == len(b"brake") and other.length == len(b"generic")


# --- order, termination ---------------------------------------------------------------------


def test_5_4_4_7_delegations_are_searched_in_priority_order():
    repo, _ = repo_with(
        (role("first", paths=["fw/*"]), {"fw/a.bin": b"first"}),
        (role("second", paths=["fw/*"]), {"fw/a.bin": b"second!"}),
    )
    trust = client(repo)
    assert trust.find_target("fw/a.bin", repo.source, NOW).length == len(b"first")
    assert "first" in trust.delegated and "second" not in trust.delegated


def test_5_4_4_7_top_level_targets_win_over_delegations():
    repo, _ = repo_with((role("r"), {"a.bin": b"delegated"}))
    repo.builder.add_target(TargetFile.from_data("a.bin", b"top"))
    repo.publish()
    assert client(repo).find_target("a.bin", repo.source, NOW).length == 3


def test_5_4_4_7_terminating_delegation_stops_search():
    repo, _ = repo_with(
        (role("term", paths=["fw/*"], terminating=True), {"fw/other.bin": b"x"}),
        (role("later", paths=["fw/*"]), {"fw/a.bin": b"later"}),
    )
    with pytest.raises(TargetNotFound) as e:
        client(repo).find_target("fw/a.bin", repo.source, NOW)
    assert e.value.repository == "image"
    # the same without terminating: the search goes on to the next delegation
    repo, _ = repo_with(
        (role("term", paths=["fw/*"]), {"fw/other.bin": b"x"}),
        (role("later", paths=["fw/*"]), {"fw/a.bin": b"later"}),
    )
    assert client(repo).find_target("fw/a.bin", repo.source, NOW).length == 5


def test_5_4_4_7_terminating_role_still_searches_its_own_delegations():
    repo, _ = repo_with((role("term", paths=["fw/*"], terminating=True), {}))
    s = PrivateKey.generate()
    repo.builder.delegate("term", role("sub", paths=["fw/*"]), [s])
    repo.builder.add_target(TargetFile.from_data("fw/a.bin", b"sub"), role="sub")
    repo.publish()
    assert client(repo).find_target("fw/a.bin", repo.source, NOW).length == 3


def test_5_4_4_7_backtracks_to_the_next_delegation_of_the_parent():
    repo, _ = repo_with(
        (role("a", paths=["fw/*"]), {}),
        (role("b", paths=["fw/*"]), {"fw/x.bin": b"bbb"}),
    )
    s = PrivateKey.generate()
    repo.builder.delegate("a", role("a1", paths=["fw/*"]), [s])
    repo.publish()
    trust = client(repo)
    assert trust.find_target("fw/x.bin", repo.source, NOW).length == 3
    assert {"a", "a1", "b"} <= set(trust.delegated)


def test_5_4_4_7_unknown_path_is_target_not_found():
    repo, _ = repo_with((role("r", paths=["fw/*"]), {"fw/a.bin": b"a"}))
    with pytest.raises(TargetNotFound):
        client(repo).find_target("nope.bin", repo.source, NOW)


# --- hash prefixes and succinct hash bins ---------------------------------------------------


def test_5_4_4_7_path_hash_prefix_delegation():
    path = "fw/hashed.bin"
    prefix = hashlib.sha256(path.encode()).hexdigest()[:1]
    wrong = "0" if prefix != "0" else "1"
    repo, _ = repo_with(
        (DelegatedRole("miss", [], 1, path_hash_prefixes=[wrong]), {path: b"miss"}),
        (DelegatedRole("hit", [], 1, path_hash_prefixes=[prefix]), {path: b"hit"}),
    )
    assert client(repo).find_target(path, repo.source, NOW).length == 3


def test_5_4_4_7_succinct_hash_bins():
    repo = make_repo()
    bins = SuccinctRoles([], 1, 2, "bin")
    key = PrivateKey.generate()
    names = [f"bin-{i}" for i in range(4)]
    for n in names:
        repo.builder.delegate("targets", role(n), [key])
    bins.keyids = [key.keyid]
    paths = [f"fw/{i}.bin" for i in range(8)]
    for p in paths:
        repo.builder.add_target(TargetFile.from_data(p, p.encode()), role=bins.role_for_target(p))
    # replace the listed delegations by the succinct form
    repo.builder.targets.delegations = Delegations({key.keyid: key.key}, None, bins)
    repo.builder.mark("targets")
    repo.publish()
    trust = client(repo)
    for p in paths:
        assert trust.find_target(p, repo.source, NOW).length == len(p)
    missing = next(f"x{i}" for i in range(100) if bins.role_for_target(f"x{i}") == "bin-0")
    with pytest.raises(TargetNotFound):
        trust.find_target(missing, repo.source, NOW)
    # a bin signed by another key is refused
    bad = bins.role_for_target(paths[0])
    repo.source.overrides[f"{repo.builder.role(bad).version}.{bad}.json"] = repo.sign(
        repo.current(bad), PrivateKey.generate()
    )
    fresh = repo.trust()
    fresh.refresh(repo.source, NOW)
    with pytest.raises(ThresholdNotMet) as e:
        fresh.find_target(paths[0], repo.source, NOW)
    assert e.value.role == bad


# --- cycles and limits ----------------------------------------------------------------------


def test_5_4_4_7_delegation_cycle_is_detected():
    repo, signers = repo_with((role("a"), {}))
    repo.builder.delegate("a", role("b"), [PrivateKey.generate()])
    b = repo.builder.role("b")
    b.delegations = Delegations({signers["a"].keyid: signers["a"].key}, [role("a")])
    b.delegations.roles[0].keyids = [signers["a"].keyid]
    repo.builder.mark("b")
    repo.publish()
    with pytest.raises(TargetNotFound) as e:
        client(repo).find_target("nowhere.bin", repo.source, NOW)
    assert "cycle" in str(e.value)


def test_5_4_4_7_delegation_depth_is_limited():
    repo, _ = repo_with((role("d0"), {}))
    for i in range(1, 5):
        repo.builder.delegate(f"d{i - 1}", role(f"d{i}"), [PrivateKey.generate()])
    repo.builder.add_target(TargetFile.from_data("deep.bin", b"deep"), role="d4")
    repo.publish()
    assert client(repo).find_target("deep.bin", repo.source, NOW).length == 4
    with pytest.raises(LimitExceeded):
        client(repo, PRIMARY.replace(max_delegation_depth=3)).find_target(
            "deep.bin", repo.source, NOW
        )


def test_5_4_4_7_number_of_roles_visited_is_limited():
    repo, _ = repo_with(*[(role(f"r{i}"), {}) for i in range(6)])
    with pytest.raises(LimitExceeded):
        client(repo, PRIMARY.replace(max_delegations_visited=4)).find_target(
            "x.bin", repo.source, NOW
        )


# --- every delegated file is checked (§5.4.4.6 via §5.4.4.7 step 1) -------------------------


def test_5_4_4_7_delegated_role_needs_parents_keys():
    repo, _ = repo_with((role("sup", paths=["fw/*"]), {"fw/a.bin": b"a"}))
    v = repo.builder.role("sup").version
    repo.source.overrides[f"{v}.sup.json"] = repo.sign(repo.current("sup"), PrivateKey.generate())
    trust = client(repo)
    with pytest.raises(ThresholdNotMet) as e:
        trust.find_target("fw/a.bin", repo.source, NOW)
    assert (e.value.repository, e.value.role) == ("image", "sup")
    assert "sup" not in trust.delegated


def test_5_4_4_7_delegated_version_must_match_snapshot():
    repo, _ = repo_with((role("sup", paths=["fw/*"]), {"fw/a.bin": b"a"}))
    v = repo.builder.role("sup").version
    old = repo.file(f"{v}.sup.json")
    repo.builder.add_target(TargetFile.from_data("fw/b.bin", b"b"), role="sup")
    repo.publish()
    repo.source.overrides[f"{v + 1}.sup.json"] = old
    with pytest.raises(MixAndMatchAttack):
        client(repo).find_target("fw/a.bin", repo.source, NOW)


def test_5_4_4_7_delegated_rollback_expiry_and_missing_file():
    repo, signers = repo_with((role("sup", paths=["fw/*"]), {"fw/a.bin": b"a"}))
    trust = client(repo)
    trust.find_target("fw/a.bin", repo.source, NOW)
    sup = repo.current("sup")
    # rollback: a lower version than the trusted one, straight into update_delegated
    sup.version = 1
    trust.delegated["sup"].signed.version = 5
    snap_entry = trust.snapshot.signed.meta["sup.json"]
    snap_entry.version = 1
    with pytest.raises(RollbackAttack):
        trust.update_delegated("sup", "targets", repo.sign(sup, signers["sup"]), NOW)
    # expired
    repo2, _signers2 = repo_with((role("sup", paths=["fw/*"]), {"fw/a.bin": b"a"}))
    repo2.builder.expiry["delegated"] = timedelta(seconds=1)
    repo2.builder.mark("sup")
    repo2.publish()
    with pytest.raises(ExpiredMetadata) as e:
        client(repo2).find_target("fw/a.bin", repo2.source, NOW + timedelta(seconds=5))
    assert e.value.role == "sup"
    # missing
    repo3, _ = repo_with((role("sup", paths=["fw/*"]), {"fw/a.bin": b"a"}))
    repo3.source.overrides[f"{repo3.builder.role('sup').version}.sup.json"] = None
    with pytest.raises(DropRequestAttack):
        client(repo3).find_target("fw/a.bin", repo3.source, NOW)


def test_5_4_4_7_update_delegated_needs_a_delegation():
    repo, _signers = repo_with((role("sup"), {"a.bin": b"a"}))
    trust = client(repo)
    data = repo.file(f"{repo.builder.role('sup').version}.sup.json")
    with pytest.raises(UnknownRole):
        trust.update_delegated("sup", "nobody", data, NOW)
    assert trust.update_delegated("sup", "targets", data, NOW).signed.version >= 1
    director = RepositoryTrust("director", repo.builder.trusted_root(), PRIMARY)
    with pytest.raises(DirectorDelegation):
        director.update_delegated("sup", "targets", data, NOW)


def test_5_4_4_7_cached_delegated_role_is_reused_while_snapshot_lists_it():
    repo, _ = repo_with((role("sup"), {"a.bin": b"a"}))
    trust = client(repo)
    trust.find_target("a.bin", repo.source, NOW)
    before = len(repo.source.requests)
    trust.find_target("a.bin", repo.source, NOW)
    assert len(repo.source.requests) == before


def test_5_4_4_7_snapshot_must_list_the_delegated_role():
    repo, _ = repo_with((role("sup"), {"a.bin": b"a"}))
    trust = client(repo)
    del trust.snapshot.signed.meta["sup.json"]
    with pytest.raises(MixAndMatchAttack):
        trust.find_target("a.bin", repo.source, NOW)


# --- §5.4.4.8 multi-role (TAP 3) ------------------------------------------------------------


def multi_repo(answers, need, *, terminating=False, extra_after=None):
    """Roles m0..mN each listing ``fw/a.bin`` with the data in ``answers`` (None: not
    listed), joined in one multi-role delegation needing ``need`` of them."""
    repo = make_repo()
    refs = []
    for i, data in enumerate(answers):
        s = PrivateKey.generate()
        name = f"m{i}"
        # the roles exist (listed in snapshot, keys known) but are reached only through
        # the multi-role delegation: their own entry matches no path
        repo.builder.delegate("targets", role(name, paths=["never/*"]), [s])
        if data is not None:
            repo.builder.add_target(TargetFile.from_data("fw/a.bin", data), role=name)
        refs.append(RoleRef(name, [s.keyid], 1))
    multi = role("multi", paths=["fw/*"], terminating=terminating)
    multi.multi_roles, multi.min_roles_in_agreement = refs, need
    repo.builder.delegate("targets", multi, [])
    if extra_after is not None:
        repo.builder.delegate("targets", role("after", paths=["fw/*"]), [PrivateKey.generate()])
        repo.builder.add_target(TargetFile.from_data("fw/a.bin", extra_after), role="after")
    repo.publish()
    return repo


def test_5_4_4_8_multi_role_needs_agreement():
    repo = multi_repo([b"good", b"good", b"evil!"], 2)
    assert client(repo).find_target("fw/a.bin", repo.source, NOW).length == 4
    repo = multi_repo([b"good", b"evil!", None], 2)
    with pytest.raises(TargetNotFound) as e:
        client(repo).find_target("fw/a.bin", repo.source, NOW)
    assert "agree" in str(e.value)


def test_5_4_4_8_multi_role_conflict_picks_the_set_with_the_earliest_role():
    repo = multi_repo([b"evil!", b"good", b"good", b"evil!"], 2)
    assert client(repo).find_target("fw/a.bin", repo.source, NOW).length == 5


def test_5_4_4_8_multi_role_agreement_includes_custom_metadata():
    repo = multi_repo([b"same", b"same"], 2)
    t = repo.builder.role("m1").targets["fw/a.bin"]
    t.hardware_ids = ["other-hw"]
    repo.builder.mark("m1")
    repo.publish()
    with pytest.raises(TargetNotFound):
        client(repo).find_target("fw/a.bin", repo.source, NOW)


def test_5_4_4_8_a_failing_role_does_not_agree_but_others_still_can():
    repo = multi_repo([b"good", b"good", b"good"], 2)
    v = repo.builder.role("m0").version
    repo.source.overrides[f"{v}.m0.json"] = repo.sign(repo.current("m0"), PrivateKey.generate())
    assert client(repo).find_target("fw/a.bin", repo.source, NOW).length == 4
    repo.source.overrides[f"{v}.m1.json"] = None
    with pytest.raises(TargetNotFound):
        client(repo).find_target("fw/a.bin", repo.source, NOW)


def test_5_4_4_8_terminating_multi_role_without_agreement_stops_search():
    repo = multi_repo([b"good", None], 2, extra_after=b"later")
    assert client(repo).find_target("fw/a.bin", repo.source, NOW).length == 5
    repo = multi_repo([b"good", None], 2, terminating=True, extra_after=b"later")
    with pytest.raises(TargetNotFound):
        client(repo).find_target("fw/a.bin", repo.source, NOW)


def test_find_target_needs_fresh_state():
    repo, _ = repo_with((role("sup"), {"a.bin": b"a"}))
    trust = repo.trust()
    with pytest.raises(DropRequestAttack):
        trust.find_target("a.bin", repo.source, NOW)
    trust.refresh(repo.source, NOW)
    with pytest.raises(ExpiredMetadata):
        trust.find_target("a.bin", repo.source, NOW + timedelta(days=400))
    # a snapshot that no longer names the trusted targets version
    trust.snapshot.signed.meta["targets.json"] = MetaFile(99)
    with pytest.raises(MixAndMatchAttack):
        trust.find_target("a.bin", repo.source, NOW)
