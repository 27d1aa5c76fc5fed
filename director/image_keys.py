"""The Image repository's keys: changes of root and of top-level targets signed in
ceremonies (:mod:`director.ceremony`), and the rotation of every role.

Every change of root or top-level targets is made the same way:

1. the next version is built from the current one and changed (:class:`RootChange`, a
   targets edit);
2. it is signed with the keys this machine holds, if any (the offline directory);
3. if that meets every threshold it is published at once; otherwise it is written as a
   pending file that other key holders sign (``ceremony sign``), and ``ceremony publish``
   publishes it once the thresholds are met (:func:`publish`).

Online roles (snapshot, timestamp, hash bins) are rotated by making the new key in the
online key source, then publishing a root (or targets, for bins) that lists it; the old key
is retired once that is published. Vehicles follow: they update root first (§5.4.4.3),
then verify the re-signed roles with the new keys.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from director import repostate
from director.ceremony import Outcome, Pending, RootChange
from keystore import authorized
from uptane.keys import ED25519, Key, Signer
from uptane.limits import Limits
from uptane.metadata import JSON, Root, Targets, decode
from uptane.repository import RepositoryBuilder
from uptane.signatures import count_valid

if TYPE_CHECKING:
    from director.image_repo import ImageRepository

ONLINE_ROLES = ("snapshot", "timestamp")
#: the online key source's role name for the keys that sign hash bins
BINS_KEY = "bins"
CEREMONY_DIR = "ceremony"


def pending_path(repo_dir: Path, role: str, version: int) -> Path:
    return Path(repo_dir) / CEREMONY_DIR / f"{role}-v{version}.pending.json"


def local_signers(repo: ImageRepository, role: str, keyids: set[str]) -> list[Signer]:
    """The keys in this machine's offline directory that ``keyids`` names."""
    if repo.offline is None:
        return []
    return [s for s in repo.offline.signers(role) if s.key.keyid in keyids]


def _sign_locally(repo: ImageRepository, pending: Pending, roles: tuple[str, ...]) -> None:
    needed = {k for req in pending.requirements() for k in req.keys}
    for role in roles:
        for s in local_signers(repo, role, needed):
            pending.sign(s, f"{role} key in {repo.offline.directory if repo.offline else '?'}")


def start_root(repo: ImageRepository, now: datetime, change: RootChange) -> Pending:
    """A pending root: the next version with ``change`` applied, unsigned."""
    b = repo.builder
    model = b.next_root(now)
    change.apply(model)
    return Pending.start("image", model, b.encodings, b.files[JSON]["root"])


def start_targets(
    repo: ImageRepository,
    now: datetime,
    edit: Callable[[Targets], None] | None = None,
    *,
    under: Pending | None = None,
) -> Pending:
    """A pending top-level targets: the next version, with the staged entries that belong
    to it and ``edit`` applied; authorised by the current root or by the pending root
    ``under`` (to be published together)."""
    b = repo.builder
    model = copy.deepcopy(b.targets)
    model.version += 1
    model.expires = (now + b.lifetime("targets")).replace(microsecond=0)
    for tf in repo.staged():
        if repo.bin_for(tf.path) is None:
            model.targets[tf.path] = tf
    if edit is not None:
        edit(model)
    authority = under.envelopes[JSON] if under is not None else b.files[JSON]["root"]
    return Pending.start("image", model, b.encodings, authority)


def carry_out(
    repo: ImageRepository,
    now: datetime,
    pending: Pending,
    roles: tuple[str, ...],
    *,
    require_local: bool = False,
) -> Outcome:
    """Sign ``pending`` with the local offline keys of ``roles``; publish it if that meets
    every threshold, else write the pending file for the other key holders
    (``require_local``: refuse instead when this machine holds none of the keys)."""
    _sign_locally(repo, pending, roles)
    if require_local and not pending.signers:
        raise PermissionError(
            f"the offline {'/'.join(roles)} key is needed (--offline-keys); with several"
            f" key holders, start a ceremony: uptane-image-repo ceremony start DIR {pending.role}"
        )
    version = pending.model().version
    if not any(r.missing for r in pending.requirements()):
        if pending.role == "root":
            publish(repo, now, root=pending)
        else:
            publish(repo, now, targets=pending)
        return Outcome(pending.role, version, True)
    path = pending_path(repo.paths.root, pending.role, version)
    pending.save(path)
    return Outcome(pending.role, version, False, path, pending.status_lines())


def _check_root(b: RepositoryBuilder, repo: ImageRepository, pending: Pending) -> Root:
    model = pending.model()
    if model.version != b.root.version + 1:
        raise ValueError(
            f"the pending root is version {model.version}, the repository is at"
            f" {b.root.version}: start a new ceremony from the current root"
        )
    pending.check(authority=b.root)
    for role in ONLINE_ROLES:
        keys = model.roles[role]
        held = authorized(repo.online, role, keys.keyids)
        if len(held) < keys.threshold:
            raise PermissionError(
                f"the online key source holds {len(held)} of the {keys.threshold} {role}"
                f" key(s) this root needs ({repo.online.describe()}): make them first"
                f" (`rotate {role}`)"
            )
    return model


def _targets_verify_under(b: RepositoryBuilder, root: Root, limits: Limits) -> bool:
    """Whether the current targets still meet ``root``'s targets threshold in every
    encoding (a root that rotates the targets keys needs targets signed by the new ones)."""
    keys, entry = root.role_keys("targets")
    for enc in b.encodings:
        md = decode(b.files[enc]["targets"], limits, encoding=enc, role_type="targets")
        assert md.signed_bytes is not None
        if count_valid(md.signed_bytes, md.signatures, keys, entry.keyids) < entry.threshold:
            return False
    return True


def publish(
    repo: ImageRepository,
    now: datetime,
    *,
    root: Pending | None = None,
    targets: Pending | None = None,
) -> None:
    """Publish a root, a top-level targets, or both (a root that rotates the targets keys
    needs targets signed by the new ones). Every threshold is checked again against the
    repository as it is now; nothing changes if one is not met."""
    if root is None and targets is None:
        raise ValueError("nothing to publish")
    with repo.mutation(now) as b:
        new_root = _check_root(b, repo, root) if root is not None else None
        auth = new_root or b.root
        tmodel = None
        if targets is not None:
            tmodel = targets.model()
            if tmodel.version <= b.targets.version:
                raise ValueError(
                    f"the pending targets is version {tmodel.version}, the repository is"
                    f" at {b.targets.version}: start a new ceremony"
                )
            targets.check(authority=auth)
        elif new_root is not None and not _targets_verify_under(b, new_root, repo.limits):
            raise PermissionError(
                "this root changes the targets keys: the targets must be signed by the new"
                " ones and published with it (`ceremony start DIR targets --under"
                " ROOT_PENDING`, sign, then `ceremony publish DIR ROOT_PENDING TARGETS_PENDING`)"
            )
        if root is not None and new_root is not None:
            b.install_root(new_root, root.files())
            repo.attach_signers(b)
            b.mark("snapshot")
        if targets is not None and tmodel is not None:
            repo.install_targets(b, tmodel, targets.files())
        b.publish(now)
        repostate.save(b, repo.paths.metadata)
        if new_root is not None:
            retire_online(repo, new_root)
        dels = b.targets.delegations
        if targets is not None and dels is not None and dels.succinct_roles is not None:
            repo.online.retire(BINS_KEY, dels.succinct_roles.keyids)


def retire_online(repo: ImageRepository, root: Root) -> None:
    """Put aside the online keys the new root no longer lists."""
    for role in ONLINE_ROLES:
        repo.online.retire(role, root.roles[role].keyids)


def rotate_online(
    repo: ImageRepository,
    now: datetime,
    role: str,
    scheme: str,
    *,
    count: int = 1,
    threshold: int | None = None,
) -> Outcome:
    """New key(s) for snapshot or timestamp, made in the online key source, and the root
    that lists them (in place of the old ones)."""
    if role not in ONLINE_ROLES:
        raise ValueError(f"{role} is not an online role of the Image repository")
    made = [repo.online.generate(role, scheme) for _ in range(count)]
    old = list(repo.builder.root.roles[role].keyids)
    change = RootChange(
        add={role: [s.key for s in made]},
        remove={role: old},
        thresholds={role: threshold or 1},
    )
    return carry_out(repo, now, start_root(repo, now, change), ("root",))


def retire_offline(repo: ImageRepository, root: Root, role: str) -> None:
    """Put aside this machine's offline keys of ``role`` that ``root`` no longer lists."""
    if repo.offline is not None:
        repo.offline.retire(role, root.roles[role].keyids)


def rotate_offline(
    repo: ImageRepository,
    now: datetime,
    role: str,
    keys: list[Key],
    *,
    threshold: int | None = None,
    scheme: str = ED25519,
) -> list[Outcome]:
    """New keys for root or targets: the holders' public ``keys``, or with none, one key
    made in this machine's offline directory. Root needs the old and the new root keys;
    targets needs the root keys, and the targets re-signed by the new targets keys, both
    published together."""
    if role not in ("root", "targets"):
        raise ValueError(f"{role} is not an offline role of the Image repository")
    if not keys:
        if repo.offline is None:
            raise PermissionError("give the new public keys (--key), or --offline-keys")
        keys = [repo.offline.generate(role, scheme).key]
    old = list(repo.builder.root.roles[role].keyids)
    change = RootChange(add={role: keys}, remove={role: old}, thresholds={role: threshold or 1})
    root_p = start_root(repo, now, change)
    if role == "root":
        out = carry_out(repo, now, root_p, ("root",))
        if out.published:
            retire_offline(repo, repo.builder.root, "root")
        return [out]
    targets_p = start_targets(repo, now, under=root_p)
    _sign_locally(repo, root_p, ("root",))
    _sign_locally(repo, targets_p, ("targets",))
    if not any(r.missing for p in (root_p, targets_p) for r in p.requirements()):
        publish(repo, now, root=root_p, targets=targets_p)
        retire_offline(repo, repo.builder.root, "targets")
        return [
            Outcome("root", root_p.model().version, True),
            Outcome("targets", targets_p.model().version, True),
        ]
    outs = []
    for p in (root_p, targets_p):
        path = pending_path(repo.paths.root, p.role, p.model().version)
        p.save(path)
        outs.append(Outcome(p.role, p.model().version, False, path, p.status_lines()))
    return outs


__all__ = [
    "Outcome",
    "RootChange",
    "carry_out",
    "pending_path",
    "publish",
    "rotate_offline",
    "rotate_online",
    "start_root",
    "start_targets",
]
