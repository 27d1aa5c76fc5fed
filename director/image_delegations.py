"""Delegations of the Image repository's top-level targets (§5.3.1): suppliers holding
their own keys, thresholds over several keys, TAP 3 multi-role delegations, succinct hash
bins signed by online keys, terminating flags and hardware-id restrictions; and revocation.

Every change here is a change of the top-level targets, so it is signed like one: at once
when this machine holds a threshold of the targets keys, else in a ceremony
(:mod:`director.image_keys`). The OEM never holds a supplier's private key: a delegation
takes public keys only, and the supplier signs every version of its role, the first one
included (until then the role is delegated but not listed in snapshot).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from director import repostate
from director.image_keys import BINS_KEY, Outcome, carry_out, start_targets
from keystore import authorized
from uptane.keys import Key
from uptane.metadata import (
    DelegatedRole,
    Delegations,
    RoleRef,
    SuccinctRoles,
    TargetFile,
    Targets,
)
from uptane.paths import check_target_path
from uptane.repository import RepositoryBuilder

if TYPE_CHECKING:
    from director.image_repo import ImageRepository


@dataclass
class Found:
    """Where a delegated role's authority comes from: its parent, the keys and threshold
    that sign it, and the delegation entry (paths, hardware ids)."""

    parent: str
    keys: dict[str, Key]
    keyids: list[str]
    threshold: int
    delegation: DelegatedRole | None


def _parents(b: RepositoryBuilder) -> list[str]:
    """The targets roles that may delegate: every one but the hash bins, which this
    repository signs itself with no delegations (so a repository of many bins decodes
    none of them to look for a delegation)."""
    sr = bins_of(b)
    return ["targets"] + [
        r
        for r in b.delegated
        if sr is None or not (sr.is_bin_name(r) and b.parents.get(r) == "targets")
    ]


def find_delegation(b: RepositoryBuilder, role: str) -> Found | None:
    """The delegation of ``role`` from any targets role of the repository: a plain entry,
    a member of a TAP 3 multi-role entry, or a hash bin."""
    for parent in _parents(b):
        pm = b.role(parent)
        if not isinstance(pm, Targets) or pm.delegations is None:
            continue
        dels = pm.delegations
        sr = dels.succinct_roles
        if sr is not None and sr.is_bin_name(role):
            return Found(parent, dels.keys, sr.keyids, sr.threshold, None)
        for d in dels.roles or []:
            if d.name == role and not d.multi_roles:
                return Found(parent, dels.keys, d.keyids, d.threshold, d)
            for ref in d.multi_roles or []:
                if ref.name == role:
                    return Found(parent, dels.keys, ref.keyids, ref.threshold, d)
    return None


def delegated_names(b: RepositoryBuilder) -> list[str]:
    """Every role some targets role delegates to, listed or still awaiting its first
    version (hash bins included)."""
    names = list(b.delegated)
    for parent in _parents(b):
        pm = b.role(parent)
        dels = pm.delegations if isinstance(pm, Targets) else None
        for d in (dels.roles or []) if dels is not None else []:
            for name in [d.name] if not d.multi_roles else [r.name for r in d.multi_roles]:
                if name not in names:
                    names.append(name)
    return names


def describe(b: RepositoryBuilder) -> dict[str, Any]:
    """Every delegation of the top-level targets as the service's status shows it: roles
    with their paths, hardware ids, keys, thresholds and TAP 3 members, the version each
    holder last published (0: awaiting its first), and the hash bins."""
    dels = b.targets.delegations
    out: dict[str, Any] = {"roles": [], "bins": None}
    if dels is None:
        return out

    def version(name: str) -> int:
        return b.role(name).version if b.has_role(name) else 0

    for d in dels.roles or []:
        entry: dict[str, Any] = {
            "name": d.name,
            "paths": d.paths,
            "hardware_ids": d.hardware_ids,
            "terminating": d.terminating,
            "threshold": d.threshold,
            "keyids": d.keyids,
        }
        if d.multi_roles:
            entry["agree"] = d.min_roles_in_agreement
            entry["members"] = [
                {"name": r.name, "keyids": r.keyids, "threshold": r.threshold,
                 "version": version(r.name)}
                for r in d.multi_roles
            ]  # fmt: skip
        else:
            entry["version"] = version(d.name)
        out["roles"].append(entry)
    sr = dels.succinct_roles
    if sr is not None:
        out["bins"] = {
            "prefix": sr.name_prefix,
            "count": 1 << sr.bit_length,
            "threshold": sr.threshold,
            "keyids": sr.keyids,
        }
    return out


def bins_of(b: RepositoryBuilder) -> SuccinctRoles | None:
    dels = b.targets.delegations
    return dels.succinct_roles if dels is not None else None


def bin_for(b: RepositoryBuilder, path: str) -> str | None:
    """The hash bin that holds ``path``, when the top-level targets delegates to bins."""
    sr = bins_of(b)
    return sr.role_for_target(path) if sr is not None else None


#: above this many images in the top-level targets, ``sign`` advises hash bins: the file
#: is then about 330 KB per encoding, downloaded whole by every vehicle after each release
BINS_ADVISED = 1000
#: a Primary's update fetches about this many images, each through its own bin
IMAGES_PER_UPDATE = 3
#: bytes per target entry in JSON (sha256 + sha512, hardware id, release counter) and per
#: role in a JSON snapshot, measured on this repository's files
ENTRY_BYTES, SNAPSHOT_ENTRY_BYTES = 335, 29


def suggest_bits(n_images: int) -> int:
    """Hash-bin bits for a repository of ``n_images``: what minimises the metadata a
    vehicle downloads after a release, the snapshot (one entry per bin) plus the bins of
    the images it installs (``n / bins`` entries each). That optimum is at
    ``bins = sqrt(IMAGES_PER_UPDATE * ENTRY_BYTES * n / SNAPSHOT_ENTRY_BYTES)``, rounded to
    a power of two, from 16 to 16,384 bins (docs/image-repo.md, 'Large repositories')."""
    best = (IMAGES_PER_UPDATE * ENTRY_BYTES * max(n_images, 1) / SNAPSHOT_ENTRY_BYTES) ** 0.5
    return min(14, max(4, round(math.log2(best))))


def move_into_bins(b: RepositoryBuilder, before: Mapping[str, TargetFile]) -> int:
    """A top-level targets that newly delegates to hash bins takes the images it listed
    out; each goes into its bin in the same publish, so vehicles never see it missing.
    Returns how many moved."""
    sr = bins_of(b)
    if sr is None or not before:
        return 0
    moved = 0
    for path, tf in before.items():
        if path not in b.targets.targets:
            b.add_target(tf, role=sr.role_for_target(path))
            moved += 1
    return moved


def _check_new_role(model: Targets, role: str) -> None:
    repostate.check_role_name(role)
    dels = model.delegations
    if dels is not None and dels.succinct_roles is not None:
        raise ValueError("the top-level targets delegates to hash bins: no other role fits")
    names = {d.name for d in (dels.roles or [])} if dels is not None else set()
    names |= {r.name for d in (dels.roles or []) for r in d.multi_roles or []} if dels else set()
    if role in names:
        raise ValueError(f"role {role!r} already exists")


def _add_keys(model: Targets, keys: list[Key]) -> list[str]:
    if model.delegations is None:
        model.delegations = Delegations()
    for k in keys:
        model.delegations.keys[k.keyid] = k
    return [k.keyid for k in keys]


def _check_threshold(threshold: int, n: int, what: str) -> None:
    if not 1 <= threshold <= n:
        raise ValueError(f"{what}: threshold {threshold} of {n} key(s) could never be met")


def delegate(
    repo: ImageRepository,
    now: datetime,
    role: str,
    paths: list[str],
    hardware_ids: list[str],
    keys: list[Key],
    *,
    threshold: int = 1,
    terminating: bool = True,
    members: list[tuple[str, list[Key], int]] | None = None,
    agree: int | None = None,
) -> Outcome:
    """Delegate ``paths`` (and ``hardware_ids``) to ``role``, signed by a ``threshold`` of
    the suppliers' public ``keys``; or, with ``members``, a TAP 3 multi-role delegation:
    ``agree`` of the member roles (each with its keys and threshold) must list an
    identical image."""
    if not paths:
        raise ValueError("a delegation needs at least one path pattern")
    for p in paths:
        check_target_path(p.replace("*", "x").replace("?", "x"))
    if not members and not keys:
        raise ValueError("a delegation needs the supplier's public key(s): --key FILE")

    def edit(model: Targets) -> None:
        _check_new_role(model, role)
        d = DelegatedRole(
            role,
            [],
            threshold,
            terminating,
            paths=list(paths),
            hardware_ids=list(hardware_ids) or None,
        )
        if members:
            refs = []
            for name, mkeys, t in members:
                _check_new_role(model, name)
                _check_threshold(t, len(mkeys), name)
                refs.append(RoleRef(name, _add_keys(model, mkeys), t))
            _check_threshold(agree or len(refs), len(refs), f"{role} agreement")
            d.multi_roles, d.min_roles_in_agreement = refs, agree or len(refs)
            d.keyids = sorted({k for r in refs for k in r.keyids})
        else:
            _check_threshold(threshold, len(keys), role)
            d.keyids = _add_keys(model, keys)
        assert model.delegations is not None and model.delegations.roles is not None
        model.delegations.roles.append(d)

    return carry_out(repo, now, start_targets(repo, now, edit), ("targets",))


def revoke(repo: ImageRepository, now: datetime, role: str) -> Outcome:
    """Remove the delegation ``role`` (a supplier, or a multi-role entry): once published,
    vehicles find nothing that role signs, its next metadata included. Its last metadata
    stays listed in snapshot (see :func:`reconcile`)."""

    def edit(model: Targets) -> None:
        dels = model.delegations
        names = [d.name for d in (dels.roles or [])] if dels is not None else []
        if role not in names:
            raise ValueError(f"the top-level targets delegates no role {role!r}")
        assert dels is not None and dels.roles is not None
        dels.roles = [d for d in dels.roles if d.name != role]
        _prune_keys(dels)

    return carry_out(repo, now, start_targets(repo, now, edit), ("targets",))


def change_keys(
    repo: ImageRepository,
    now: datetime,
    role: str,
    *,
    add: list[Key] = (),  # type: ignore[assignment]
    remove: list[str] = (),  # type: ignore[assignment]
    threshold: int | None = None,
) -> Outcome:
    """Add or remove keys of the delegation ``role`` (a key a supplier lost, or one that
    left), or change its threshold: metadata signed by a removed key is refused."""

    def edit(model: Targets) -> None:
        dels = model.delegations
        d = next((x for x in (dels.roles or []) if x.name == role), None) if dels else None
        if d is None or dels is None or d.multi_roles:
            raise ValueError(f"the top-level targets has no single-role delegation {role!r}")
        for kid in remove:
            full = [k for k in d.keyids if k.startswith(kid.lower())]
            if len(full) != 1:
                raise ValueError(f"{role} has {len(full)} key(s) whose id starts {kid[:16]!r}")
            d.keyids.remove(full[0])
        d.keyids += [k for k in _add_keys(model, list(add)) if k not in d.keyids]
        if threshold is not None:
            d.threshold = threshold
        _check_threshold(d.threshold, len(d.keyids), role)
        _prune_keys(dels)

    return carry_out(repo, now, start_targets(repo, now, edit), ("targets",))


def _prune_keys(dels: Delegations) -> None:
    used = {k for d in dels.roles or [] for k in d.keyids}
    used |= {k for d in dels.roles or [] for r in d.multi_roles or [] for k in r.keyids}
    if dels.succinct_roles is not None:
        used |= set(dels.succinct_roles.keyids)
    dels.keys = {k: v for k, v in dels.keys.items() if k in used}


def delegate_bins(
    repo: ImageRepository, now: datetime, bit_length: int, prefix: str = "bin"
) -> Outcome:
    """Delegate every path of the top-level targets to ``2**bit_length`` hash bins (TUF's
    succinct delegation, ``prefix-XX``), signed by the online key source's ``bins`` keys
    (made there if it has none). The images the top-level targets lists move into their
    bins when this is published (:func:`move_into_bins`); staged entries then go to their
    bin and are signed online; the top-level targets lists images no more."""
    if not 1 <= bit_length <= 16:
        raise ValueError("bins: give 1 to 16 bits (2 to 65,536 bins)")
    repostate.check_role_name(f"{prefix}-0")
    held = repo.online.signers(BINS_KEY) or [repo.online.generate(BINS_KEY, "ed25519")]

    def edit(model: Targets) -> None:
        if model.delegations is not None and (
            model.delegations.roles or model.delegations.succinct_roles
        ):
            raise ValueError("the top-level targets delegates already; bins need it alone")
        model.targets = {}  # moved into the bins at publish (move_into_bins)
        model.delegations = Delegations(roles=None)
        model.delegations.succinct_roles = SuccinctRoles(
            _add_keys(model, [held[0].key]), 1, bit_length, prefix
        )

    return carry_out(repo, now, start_targets(repo, now, edit), ("targets",))


def rotate_bins(repo: ImageRepository, now: datetime, scheme: str) -> Outcome:
    """A new hash-bin key in the online key source, delegated to in the next top-level
    targets; every bin is re-signed with it when that is published."""
    if bins_of(repo.builder) is None:
        raise ValueError("the repository has no hash bins")
    new = repo.online.generate(BINS_KEY, scheme)

    def edit(model: Targets) -> None:
        assert model.delegations is not None and model.delegations.succinct_roles is not None
        model.delegations.succinct_roles.keyids = [new.key.keyid]
        model.delegations.keys = {new.key.keyid: new.key}

    return carry_out(repo, now, start_targets(repo, now, edit), ("targets",))


def reconcile(repo: ImageRepository, b: RepositoryBuilder) -> None:
    """After a new top-level targets: make the hash bins it delegates to and give them
    their online signers. A role it no longer delegates to stays listed in snapshot with
    its last version (TUF §5.5.5: a client refuses a snapshot that drops a role as a
    rollback), but nothing leads a client to it any more, and no upload is accepted."""
    dels = b.targets.delegations
    sr = dels.succinct_roles if dels is not None else None
    if sr is None:
        return
    signers = authorized(repo.online, BINS_KEY, sr.keyids)
    if len(signers) < sr.threshold:
        raise PermissionError(f"the online key source lacks the hash-bin keys ({BINS_KEY})")
    for i in range(1 << sr.bit_length):
        name = f"{sr.name_prefix}-{i:0{sr.suffix_len}x}"
        if not b.has_role(name):
            b.add_role(name, "targets", signers)
        elif {s.key.keyid for s in b.signers_of(name)} != {s.key.keyid for s in signers}:
            b.set_signers(name, signers)
            b.mark(name)


__all__ = [
    "BINS_ADVISED",
    "BINS_KEY",
    "Found",
    "bin_for",
    "change_keys",
    "delegate",
    "delegate_bins",
    "delegated_names",
    "describe",
    "find_delegation",
    "move_into_bins",
    "reconcile",
    "revoke",
    "rotate_bins",
    "suggest_bits",
]
