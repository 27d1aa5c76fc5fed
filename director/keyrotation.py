"""The Director's keys and root: creating them (``init``), changing the root in a
threshold ceremony, and rotating every role (§5.4.4.3).

The root keys are offline: in ``DIR.offline-keys`` for one holder, or each in its holder's
own directory or token for a t-of-n root. The online targets, snapshot and timestamp keys
come from the key source configured in ``director.json`` (files, encrypted files, a
PKCS#11 token). Every root version is kept as ``DIR/root/N.root.EXT``.

A root change (new keys, thresholds, an online key rotated) is a pending root
(:class:`director.ceremony.Pending`): signed at once with the root keys this machine
holds, published when that meets the current root's threshold and the new one's,
otherwise left in ``DIR/ceremony/`` for the other holders. Publishing writes the root
files and has every vehicle's metadata re-signed with the keys the new root lists
(:meth:`Publisher.reload_keys`); online keys it no longer lists are retired.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from director.ceremony import Outcome, Pending, RootChange
from director.common import Invalid
from director.publishing import ONLINE_ROLES, Publisher
from director.repostate import director_encodings
from keystore import FileKeySource, KeyStore, Secret, authorized
from storage import atomic_write
from uptane.keys import ED25519, Key, Signer
from uptane.metadata import JSON, Root
from uptane.repository import RepositoryBuilder, metadata_filename

#: root files are public: every vehicle downloads them
ROOT_MODE = 0o644
CEREMONY_DIR = "ceremony"
ROLES = ("root", *ONLINE_ROLES)
#: the root's lifetime when director.json names none (renewed by a rotation or ceremony)
ROOT_DAYS = 365.0


def _write_root(directory: Path, version: int, files: dict[str, bytes]) -> None:
    for enc, data in files.items():
        # named with the codec's suffix (.json, .der, .cder), as every metadata file
        atomic_write(
            directory / "root" / metadata_filename("root", version, enc), data, mode=ROOT_MODE
        )


def offline_source(offline_dir: Path, passphrase_env: str | None = None) -> FileKeySource:
    secret = Secret(f"passphrase of the keys in {offline_dir}", passphrase_env)
    return FileKeySource(offline_dir, secret if passphrase_env else None)


def create(
    directory: Path,
    offline_dir: Path,
    now: datetime,
    scheme: str,
    online: KeyStore,
    *,
    passphrase_env: str | None = None,
) -> None:
    """Generate whatever key is missing (root offline, the others in ``online``) and sign
    root version 1 with them."""
    offline = offline_source(offline_dir, passphrase_env)
    if offline.directory.resolve().is_relative_to(directory.resolve()):
        raise ValueError("the offline key directory must be outside the Director directory")
    signers: dict[str, list[Signer]] = {}
    for role in ROLES:
        src: KeyStore = offline if role == "root" else online
        if not src.signers(role):
            src.generate(role, scheme)
        signers[role] = src.signers(role)
    b = RepositoryBuilder("director", signers, now, encodings=director_encodings())
    _write_root(directory, 1, b.root_history[0])


def start_root(publisher: Publisher, now: datetime, change: RootChange) -> Pending:
    """The next Director root with ``change`` applied, unsigned, as a pending file."""
    cur = publisher.root()
    model = Root.from_dict(cur.to_dict(), publisher.limits)
    model.version = cur.version + 1
    days = publisher.config.expiry_days.get("root", ROOT_DAYS)
    model.expires = (now + timedelta(days=days)).replace(microsecond=0)
    change.apply(model)
    authority = publisher.root_files[max(publisher.root_files)][JSON]
    return Pending.start("director", model, publisher.encodings, authority)


def pending_path(directory: Path, version: int) -> Path:
    return directory / CEREMONY_DIR / f"root-v{version}.pending.json"


def carry_out(
    publisher: Publisher, offline: FileKeySource, now: datetime, pending: Pending
) -> Outcome:
    """Sign with this machine's root keys; publish when every threshold is met, else
    write the pending file for the other holders."""
    needed = {k for req in pending.requirements() for k in req.keys}
    for s in offline.signers("root"):
        if s.key.keyid in needed:
            pending.sign(s, f"root key in {offline.directory}")
    version = pending.model().version
    if not any(r.missing for r in pending.requirements()):
        publish_root(publisher, pending)
        offline.retire("root", publisher.root().roles["root"].keyids)
        return Outcome("root", version, True)
    path = pending_path(publisher.dir, version)
    pending.save(path)
    return Outcome("root", version, False, path, pending.status_lines())


def publish_root(publisher: Publisher, pending: Pending) -> int:
    """Publish a pending Director root once it meets the current root's threshold and its
    own (§5.4.4.3), and the online key source holds a threshold of each online role's new
    keys; every vehicle is then re-signed. Returns the new root version."""
    cur = publisher.root()
    model = pending.model()
    if model.version != cur.version + 1:
        raise Invalid(
            f"the pending root is version {model.version}, the Director is at {cur.version}:"
            " start a new ceremony from the current root"
        )
    pending.check(authority=cur)
    keys: KeyStore = publisher.keys  # type: ignore[assignment]
    for role in ONLINE_ROLES:
        entry = model.roles[role]
        if len(authorized(keys, role, entry.keyids)) < entry.threshold:
            raise PermissionError(
                f"the online key source holds fewer than {entry.threshold} of the {role}"
                f" keys this root lists: make them first (`rotate-key DIR {role}`)"
            )
    _write_root(publisher.dir, model.version, pending.files())
    publisher.reload_keys(force=True)
    for role in ONLINE_ROLES:
        retire = getattr(keys, "retire", None)
        if callable(retire):
            retire(role, model.roles[role].keyids)
    return model.version


def rotate_key(
    publisher: Publisher,
    role: str,
    offline: FileKeySource,
    now: datetime,
    *,
    scheme: str = ED25519,
    keys: list[Key] | None = None,
    count: int = 1,
    threshold: int | None = None,
) -> Outcome:
    """New keys for ``role``: for root, the holders' public ``keys`` (or one made in the
    offline directory); for targets, snapshot and timestamp, ``count`` keys made in the
    online key source. The next root lists them in place of the old ones (with
    ``threshold``); it is published at once when this machine's root keys suffice."""
    if role not in ROLES:
        raise Invalid(f"unknown role {role!r}")
    if role == "root":
        new = list(keys or []) or [offline.generate("root", scheme).key]
    else:
        src = publisher.keys
        if not hasattr(src, "generate"):
            raise Invalid(f"the {role} keys are not held in a key source this can add to")
        new = [src.generate(role, scheme).key for _ in range(count)]  # type: ignore[attr-defined]
    change = RootChange(
        add={role: new},
        remove={role: list(publisher.root().roles[role].keyids)},
        thresholds={role: threshold or 1},
    )
    return carry_out(publisher, offline, now, start_root(publisher, now, change))


__all__ = ["carry_out", "create", "offline_source", "publish_root", "rotate_key", "start_root"]
