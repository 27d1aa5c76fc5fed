"""An atomic file store for an ECU's state (trusted metadata, keys, counters).

``AtomicStore(directory).write(name, data)`` replaces the file for ``name`` so that a power
cut at any moment leaves either the old bytes or the new bytes, never a mix:

1. write the new bytes to a temporary file in the same directory;
2. fsync the temporary file;
3. rename it over the old file (atomic on POSIX);
4. fsync the directory, so the rename itself is durable.

Each step is one write point of the optional ``fault`` hook (a
:class:`hardware.flash.PowerCut`), so tests can cut the power at every one. Names are
encoded with :func:`uptane.paths.encode_name`, so no name can leave the directory. The
store is used by Secondaries and is reusable by the Primary.

The module's primitives are the one copy of this logic for the agents' other files:
:func:`write_all`, :func:`fsync_dir` and :func:`atomic_write` (one file, no fault hook).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from hardware.flash import PowerCut, PowerLoss
from uptane.encoding.json import dumps, loads
from uptane.errors import EndlessDataAttack, MalformedInput
from uptane.limits import Limits
from uptane.paths import encode_name

#: "+" never appears in an encoded name (encode_name writes it as %2B), so these suffixes
#: cannot collide with a stored name.
_TMP = "+tmp."
_OLD = "+old"
_MAX_NAME = 200


class AtomicStore:
    """Named byte blobs in one directory, each replaced atomically (see the module doc)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fault: PowerCut | None = None,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.directory = Path(directory)
        self.fault = fault
        self.max_bytes = max_bytes
        self._dead = False
        self.directory.mkdir(parents=True, exist_ok=True)
        self._recover()

    def _recover(self) -> None:
        """Remove what an interrupted write left behind: its temp file (never renamed)."""
        for p in self.directory.iterdir():
            if _TMP in p.name or p.name.endswith(_OLD):
                p.unlink(missing_ok=True)

    def path(self, name: str) -> Path:
        """The file that holds ``name``; refuses names that encode to an unusable file name."""
        if not isinstance(name, str):
            raise MalformedInput("a store name must be a string")
        enc = encode_name(name)
        if len(enc) > _MAX_NAME:
            raise MalformedInput(f"store name {name[:32]!r}... is too long")
        return self.directory / enc

    # --- the fault hook -------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self._dead or (self.fault is not None and self.fault.fired):
            self._dead = True
            raise PowerLoss("the power is off")

    def _point(self, what: str) -> bool:
        return self.fault is not None and self.fault.hit(what)

    def _die(self) -> None:
        self._dead = True
        raise PowerLoss(f"power cut at {self.fault.fired_at if self.fault else '?'}")

    # --- API ------------------------------------------------------------------------------

    def write(self, name: str, data: bytes) -> None:
        """Replace the bytes stored under ``name`` atomically (four write points)."""
        self._check_alive()
        target = self.path(name)
        if len(data) > self.max_bytes:
            raise EndlessDataAttack(f"{len(data)} bytes exceeds the store's {self.max_bytes}")
        tmp = self.directory / f"{target.name}{_TMP}{secrets.token_hex(4)}"
        lose = self.fault is not None and self.fault.lose_unsynced
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if self._point(f"store write {name}"):
                assert self.fault is not None
                os.write(fd, memoryview(data)[: int(len(data) * self.fault.torn)])
                self._die()
            write_all(fd, data)
            if self._point(f"store fsync {name}"):
                self._die()
            os.fsync(fd)
        finally:
            os.close(fd)
        old = self.directory / (target.name + _OLD)
        if lose and target.exists():
            # simulation only: keep the old inode so an unsynced rename can be undone
            os.link(target, old)
        if self._point(f"store rename {name}"):
            self._die()
        os.replace(tmp, target)
        if self._point(f"store fsync-dir {name}"):
            if lose:  # the rename never reached the disk
                if old.exists():
                    os.replace(old, target)
                else:
                    target.unlink(missing_ok=True)
            self._die()
        fsync_dir(self.directory)
        old.unlink(missing_ok=True)

    def read(self, name: str, max_bytes: int | None = None) -> bytes | None:
        """The bytes stored under ``name``, or None; refuses more than ``max_bytes``."""
        self._check_alive()
        cap = self.max_bytes if max_bytes is None else max_bytes
        try:
            with open(self.path(name), "rb") as f:
                # read what the file holds, not cap + 1: a read of n bytes allocates n first
                data = f.read(min(os.fstat(f.fileno()).st_size, cap) + 1)
        except FileNotFoundError:
            return None
        if len(data) > cap:
            raise EndlessDataAttack(f"stored {name[:64]!r} exceeds {cap} bytes")
        return data

    def delete(self, name: str) -> None:
        """Remove ``name`` if present (two write points: unlink, fsync the directory)."""
        self._check_alive()
        target = self.path(name)
        if self._point(f"store unlink {name}"):
            self._die()
        target.unlink(missing_ok=True)
        if self._point(f"store fsync-dir {name}"):
            self._die()
        fsync_dir(self.directory)

    def names(self) -> list[str]:
        """The encoded names present (sorted)."""
        self._check_alive()
        return sorted(
            p.name
            for p in self.directory.iterdir()
            if p.is_file() and _TMP not in p.name and not p.name.endswith(_OLD)
        )

    def write_json(self, name: str, value: Any) -> None:
        """Store ``value`` as compact sorted JSON."""
        self.write(name, dumps(value))

    def read_json(self, name: str, limits: Limits | None = None) -> Any:
        """Decode the JSON stored under ``name`` with the bounded decoder, or None."""
        limits = limits or Limits.primary()
        data = self.read(name)
        if data is None:
            return None
        return loads(data, limits, cap=self.max_bytes, what=f"stored {name[:64]!r}")


def read_capped(path: str | os.PathLike[str], cap: int) -> bytes:
    """The bytes of a local file (a config, a key), refusing more than ``cap`` bytes
    without reading past ``cap + 1`` (EndlessDataAttack)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > cap:
            raise EndlessDataAttack(f"{os.fspath(path)} is larger than {cap} bytes")
        # read(n) allocates n bytes up front: ask for what the file holds (+1 notices a
        # file that grew meanwhile), never for the cap
        data = f.read(size + 1)
    if len(data) > cap:
        raise EndlessDataAttack(f"{os.fspath(path)} is larger than {cap} bytes")
    return data


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than it is given)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def fsync_dir(directory: Path) -> None:
    """fsync ``directory`` itself, so the renames and unlinks done in it are durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace one file outside a store atomically: a temp file in the same directory
    (``.NAME.*.tmp``), fsync, ``mode``, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
