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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from storage import atomic_write, read_json, write_json
from uptane.codec import codec_for
from uptane.keys import Signer
from uptane.limits import Limits
from uptane.metadata import COMPACT_DER, DER, JSON, Targets, format_expires, parse_expires
from uptane.repository import TOP, RepositoryBuilder, StoredRole, metadata_filename

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
    """Write the files of ``builder`` that changed since it was loaded or last saved (new
    root versions, then the roles in ``builder.unsaved``), then ``current.json``.

    Unchanged roles are never rewritten. A changed role's versioned file is written even if
    one of that name exists: ``current.json`` does not name that version yet, so the file
    is a leftover of a run that crashed before publishing it, and what this run signed
    replaces it (the timestamp names the bytes written now)."""
    mdir.mkdir(parents=True, exist_ok=True)
    first: list[tuple[Path, bytes]] = []
    last: list[tuple[Path, bytes]] = []
    for enc in builder.encodings:
        for i in range(builder.saved_roots, len(builder.root_history)):
            first.append(
                (mdir / metadata_filename("root", i + 1, enc), builder.root_history[i][enc])
            )
        for role in sorted(builder.unsaved):
            data = builder.files[enc][role]
            if role == "timestamp":
                last.append((mdir / metadata_filename(role, None, enc), data))
                continue
            if role != "root":
                first.append((mdir / metadata_filename(role, builder.version_of(role), enc), data))
            first.append((mdir / metadata_filename(role, None, enc), data))
    _write_all(first)
    _write_all(last)  # the timestamps name what is on disk now
    roles = ["targets", "snapshot", "timestamp", *builder.delegated]
    write_json(
        mdir / CURRENT,
        {
            "encodings": list(builder.encodings),
            "root": len(builder.root_history),
            "versions": {r: builder.version_of(r) for r in roles},
            "expires": {r: format_expires(builder.expires_of(r)) for r in roles},
            "delegated": list(builder.delegated),
            "parents": dict(builder.parents),
        },
        mode=0o644,
    )
    builder.mark_saved()


def _write(item: tuple[Path, bytes]) -> None:
    atomic_write(item[0], item[1], mode=0o644)  # served as it is


#: files written side by side when a publish re-signs many roles (hash bins made or
#: renewed): each is its own atomic write, and concurrent fsyncs let the kernel commit
#: them together (2,048 bins: 4,096 files in about a quarter of the time one by one)
WRITERS = 8


def _write_all(items: list[tuple[Path, bytes]]) -> None:
    """Write every item atomically; returns once all are durable (the first error is
    raised, after the others finished)."""
    if len(items) <= 4:
        for item in items:
            _write(item)
        return
    with ThreadPoolExecutor(WRITERS, thread_name_prefix="repostate-write") as pool:
        for _ in pool.map(_write, items):
            pass


def _reader(mdir: Path, versions: dict[str, int]) -> Callable[[str, str], bytes]:
    """A role's current file in an encoding, as ``current.json`` names its version."""

    def read(role: str, enc: str) -> bytes:
        version = None if role == "timestamp" else versions[role]
        return (mdir / metadata_filename(role, version, enc)).read_bytes()

    return read


def _decoder(encoding: str, limits: Limits) -> Callable[[str, bytes], Any]:
    """A role's model from its file in ``encoding``, bounded by ``limits``."""
    codec = codec_for(encoding)

    def dec(role: str, data: bytes) -> Any:
        rtype = role if role in TOP else "targets"
        return codec.decode_metadata(data, limits, role_type=rtype).signed

    return dec


def _expires(text: str) -> datetime:
    """An expiry from ``current.json``, which this module wrote (``format_expires``):
    ``fromisoformat`` reads it in a microsecond where ``strptime`` takes 20 (thousands of
    hash bins are listed there); anything else goes through the one TUF parser."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return parse_expires(text)
    return t if t.tzinfo is not None else parse_expires(text)


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
    Root and the top-level roles are read and decoded now; a delegated role (a supplier's,
    a hash bin) only when something needs it, so that opening a repository of many roles
    costs what the caller touches (issue 20). ``limits`` bound every decode, and the
    builder refuses to publish a file they would refuse.
    """
    cur = read_json(mdir / CURRENT)
    if cur is None:
        raise FileNotFoundError(f"no repository in {mdir}")
    encs = tuple(e for e in cur["encodings"] if e in available_encodings())
    read, dec = _reader(mdir, cur["versions"]), _decoder(encs[0], limits)
    history = [
        {e: (mdir / metadata_filename("root", i, e)).read_bytes() for e in encs}
        for i in range(1, cur["root"] + 1)
    ]
    files: dict[str, dict[str, bytes]] = {e: {"root": history[-1][e]} for e in encs}
    models: dict[str, Any] = {"root": dec("root", history[-1][encs[0]])}
    versions: dict[str, int] = cur["versions"]
    for role in ("targets", "snapshot", "timestamp"):
        for e in encs:
            files[e][role] = read(role, e)
        models[role] = dec(role, files[encs[0]][role])
    expires = cur.get("expires", {})
    stored = {
        r: StoredRole(v, _expires(expires[r]) if r in expires else None)
        for r, v in versions.items()
        if r not in models
    }
    return RepositoryBuilder.restore(
        name,
        signers,
        models=models,
        files=files,
        root_history=history,
        delegated=cur["delegated"],
        parents=cur["parents"],
        expiry=expiry,
        stored=stored,
        read=read,
        decode=dec,
        limits=limits,
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
