"""A repository's signed files on disk, and a :class:`uptane.repository.RepositoryBuilder`
restored from them so that versions keep growing across processes and restarts.

Layout of a metadata directory (exactly what a static TUF server serves): ``N.root.EXT``,
``N.targets.EXT``, ``N.snapshot.EXT``, ``N.ROLE.EXT`` for delegated roles, the unversioned
``timestamp.EXT``, and ``current.json`` naming the current version of every role. Versioned
files never change once written; ``current.json`` is replaced last, atomically, so a crash
leaves either the old repository or the new one.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from storage import atomic_write, read_json, write_json
from uptane.keys import Signer
from uptane.limits import Limits
from uptane.metadata import COMPACT_DER, DER, JSON, Metadata, Targets, decode
from uptane.repository import TOP, RepositoryBuilder, metadata_filename

ROLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
CURRENT = "current.json"


def available_encodings() -> tuple[str, ...]:
    """The encodings the Image repository publishes: JSON and the standard DER (a supplier
    uploads its role in each)."""
    return (JSON, DER)


def director_encodings() -> tuple[str, ...]:
    """The encodings the Director publishes (its root and every vehicle's metadata): JSON,
    the standard DER and compact-der (docs/der-profile.md), for Secondaries that negotiate
    it on the link. Files are named with each codec's suffix
    (:func:`uptane.repository.metadata_filename`: ``N.targets.cder``)."""
    return (JSON, DER, COMPACT_DER)


def check_role_name(name: str) -> str:
    """A delegated role name that is safe as a file name and not a top-level role."""
    if not ROLE_NAME.match(name) or name in TOP:
        raise ValueError(f"bad role name {name[:64]!r}: use letters, digits, '-' and '_'")
    return name


def save(builder: RepositoryBuilder, mdir: Path) -> None:
    """Write every file of ``builder`` that is not on disk yet, then ``current.json``."""
    mdir.mkdir(parents=True, exist_ok=True)
    for enc in builder.encodings:
        for fname, data in builder.versioned_files(enc).items():
            path = mdir / fname
            versioned = fname.split(".", 1)[0].isdigit()
            if versioned and path.exists():
                continue
            atomic_write(path, data, mode=0o644)  # served as it is
    roles = ["targets", "snapshot", "timestamp", *builder.delegated]
    write_json(
        mdir / CURRENT,
        {
            "encodings": list(builder.encodings),
            "root": len(builder.root_history),
            "versions": {r: builder.role(r).version for r in roles},
            "delegated": list(builder.delegated),
            "parents": dict(builder.parents),
        },
        mode=0o644,
    )


def exists(mdir: Path) -> bool:
    return (mdir / CURRENT).exists()


def load(
    name: str,
    mdir: Path,
    signers: dict[str, list[Signer]],
    now: datetime,
    limits: Limits,
    *,
    expiry: dict[str, timedelta] | None = None,
) -> RepositoryBuilder:
    """Rebuild the builder of the repository stored in ``mdir``.

    ``signers`` are the keys held by the caller (online keys for a server; offline ones
    too for an offline command). Roles without a signer keep their stored signed bytes and
    are never re-signed here.

    The builder is restored with :meth:`RepositoryBuilder.restore`: nothing is re-signed.
    """
    cur = read_json(mdir / CURRENT)
    if cur is None:
        raise FileNotFoundError(f"no repository in {mdir}")
    encs = tuple(e for e in cur["encodings"] if e in available_encodings())

    def rd(fname: str) -> bytes:
        return (mdir / fname).read_bytes()

    history = [
        {e: rd(metadata_filename("root", i, e)) for e in encs} for i in range(1, cur["root"] + 1)
    ]
    files: dict[str, dict[str, bytes]] = {e: {"root": history[-1][e]} for e in encs}
    models: dict[str, Any] = {"root": decode(history[-1][JSON], limits, role_type="root").signed}
    for role, version in cur["versions"].items():
        for e in encs:
            files[e][role] = rd(
                metadata_filename(role, None if role == "timestamp" else version, e)
            )
        rtype = role if role in TOP else "targets"
        md: Metadata[Any] = decode(files[JSON][role], limits, role_type=rtype)
        models[role] = md.signed

    return RepositoryBuilder.restore(
        name,
        signers,
        models=models,
        files=files,
        root_history=history,
        delegated=cur["delegated"],
        parents=cur["parents"],
        expiry=expiry,
    )


def delegations_of(builder: RepositoryBuilder, role: str) -> Any:
    """The delegation entry (from its parent) of delegated ``role``, or None."""
    parent = builder.parents.get(role)
    if parent is None:
        return None
    pm = builder.role(parent)
    assert isinstance(pm, Targets)
    if pm.delegations is None or pm.delegations.roles is None:
        return None
    for d in pm.delegations.roles:
        if d.name == role:
            return d
    return None
