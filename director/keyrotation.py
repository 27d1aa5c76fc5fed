"""The Director's keys and root: creating them (``init``) and rotating them (§5.4.4.3).

The root key lives offline (``DIR.offline-keys``), never in the Director's directory; the
online targets, snapshot and timestamp keys in ``DIR/online-keys``. Every root version is
kept as ``DIR/root/N.root.EXT``; a rotation signs the next one and then has every
vehicle's metadata re-signed with the current keys (:meth:`Publisher.reload_keys`).
"""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path

from director.common import Invalid
from director.keysource import FileKeySource, generate
from director.publishing import ONLINE_ROLES, Publisher
from director.repostate import available_encodings
from storage import atomic_write
from uptane.keys import Signer
from uptane.repository import RepositoryBuilder

#: root files are public: every vehicle downloads them
ROOT_MODE = 0o644


def _write_root(directory: Path, version: int, files: dict[str, bytes]) -> None:
    for enc, data in files.items():
        atomic_write(directory / "root" / f"{version}.root.{enc}", data, mode=ROOT_MODE)


def create(directory: Path, offline_dir: Path, now: datetime, scheme: str) -> None:
    """Generate whatever key is missing (root offline, the others online) and sign root
    version 1 with them."""
    offline = FileKeySource(offline_dir)
    if offline.directory.resolve().is_relative_to(directory.resolve()):
        raise ValueError("the offline key directory must be outside the Director directory")
    online = FileKeySource(directory / "online-keys")
    signers: dict[str, list[Signer]] = {}
    for role in ("root", *ONLINE_ROLES):
        src = offline if role == "root" else online
        if not src.signers(role):
            src.add(role, generate(scheme))
        signers[role] = src.signers(role)
    b = RepositoryBuilder("director", signers, now, encodings=available_encodings())
    _write_root(directory, 1, b.root_history[0])


def rotate_key(
    publisher: Publisher, role: str, offline_dir: Path, now: datetime, *, scheme: str
) -> int:
    """Replace the key of ``role`` (root, targets, snapshot or timestamp) with a new one
    and sign the next Director root with the offline root key; for root, the new root is
    signed by the old and the new root keys (§5.4.4.3). Every vehicle's metadata is then
    re-signed with the current keys. Also the yearly way to renew the root's expiry.
    Returns the new root version."""
    if role not in ("root", *ONLINE_ROLES):
        raise Invalid(f"unknown role {role!r}")
    online = publisher.keys
    if role != "root" and not isinstance(online, FileKeySource):
        raise Invalid(f"the {role} key is not held in files here; rotate it at its source")
    offline = FileKeySource(offline_dir)
    old_root = offline.signers("root")
    if not old_root:
        raise PermissionError(f"the offline Director root key is needed ({offline_dir})")
    cur = publisher.root()
    signers: dict[str, list[Signer]] = {"root": old_root, **publisher.signers()}
    b = RepositoryBuilder("director", signers, now, encodings=publisher.encodings)
    b.root.version = cur.version
    b.root.keys = dict(cur.keys)
    b.root.roles = {r: copy.deepcopy(e) for r, e in cur.roles.items()}
    b.root.consistent_snapshot = cur.consistent_snapshot
    new = generate(scheme)
    b.rotate_keys(role, [new], revoke=list(cur.roles[role].keyids))
    b.publish(now)
    version = b.root.version
    _write_root(publisher.dir, version, b.root_history[-1])
    if role == "root":
        offline.replace("root", new)
    else:
        assert isinstance(online, FileKeySource)
        online.replace(role, new)
    publisher.reload_keys(force=True)
    return version


__all__ = ["create", "rotate_key"]
