"""Atomic files and stores: a power cut at any moment leaves the old bytes or the new.

- :func:`atomic_write` / :func:`atomic_copy` / :func:`write_json` replace one file: a temp
  file in the same directory, written, fsynced, given its mode, renamed over the old file,
  then the directory fsynced so the rename itself is durable.
- :class:`AtomicStore` keeps named blobs in one directory (an ECU's trusted metadata, its
  counters, the Primary's cycle record), each replaced the same way; names are encoded
  with :func:`uptane.paths.encode_name`, so no name can leave the directory.
- :func:`read_capped` / :func:`read_json` read a local file without reading past a cap.
- :func:`dir_lock` serialises the commands and servers that change one directory.

Every write goes through a :class:`storage.fs.FileSystem` (default: the real disk), which
is where tests inject power cuts (:mod:`storage.faults`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from storage.fs import LOCAL, File, FileSystem, StrPath, short
from uptane.encoding.json import dumps, loads
from uptane.errors import EndlessDataAttack, MalformedInput
from uptane.limits import Limits
from uptane.paths import encode_name

#: "+" never appears in an encoded name (encode_name writes it as %2B), so these suffixes
#: cannot collide with a stored name.
_TMP = "+tmp."
_MAX_NAME = 200
#: files this project writes for itself (configurations, state) are far smaller
_MAX_OWN_FILE = 16 * 1024 * 1024


def read_capped(path: StrPath, cap: int) -> bytes:
    """The bytes of a local file (a config, a key, a stored blob), refusing more than
    ``cap`` bytes without reading past ``cap + 1`` (EndlessDataAttack)."""
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


def _replace(
    dest: Path, mode: int, fill: Callable[[File], None], fs: FileSystem, label: str
) -> None:
    """A temp file beside ``dest`` written by ``fill``, fsynced, given ``mode``, renamed
    over ``dest``; then the directory is fsynced so the rename is durable. On an error
    (not a power cut: that leaves what it leaves) the temp file is removed."""
    fs.check()
    tmp = dest.parent / f".{dest.name}{_TMP}{secrets.token_hex(4)}"
    f = fs.create(tmp, 0o600, label=label)
    try:
        with f:
            fill(f)
            f.sync()
            f.chmod(mode)
        fs.replace(tmp, dest)
    except BaseException:
        # an ordinary error removes the temp file; a dead device (a simulated power cut)
        # cannot, and the next open's recovery or the next write replaces it
        with contextlib.suppress(Exception):
            fs.check()
            tmp.unlink(missing_ok=True)
        raise
    fs.sync_dir(dest.parent)


def atomic_write(path: StrPath, data: bytes, *, mode: int, fs: FileSystem = LOCAL) -> None:
    """Replace ``path`` with ``data`` atomically (see the module doc). ``mode`` is required:
    0o600 for keys, tokens and state; 0o644 for what others must read."""
    dest = Path(path)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"atomic_write needs bytes, not {type(data).__name__}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _replace(dest, mode, lambda f: f.write(data), fs, short(dest))


def atomic_copy(src: StrPath, dest: StrPath, *, mode: int, fs: FileSystem = LOCAL) -> None:
    """Copy ``src`` to ``dest`` atomically, streaming 1 MiB at a time (images are never
    held whole in memory)."""
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)

    def fill(f: File) -> None:
        with open(src, "rb") as r:
            while chunk := r.read(1024 * 1024):
                f.write(chunk)

    _replace(target, mode, fill, fs, short(target))


def write_json(path: StrPath, value: Any, *, mode: int, fs: FileSystem = LOCAL) -> None:
    """Atomically write ``value`` as indented, sorted JSON (files people read and edit)."""
    text = json.dumps(value, indent=2, sort_keys=True) + "\n"
    atomic_write(path, text.encode("utf-8"), mode=mode, fs=fs)


def read_json(path: StrPath, default: Any = None, *, cap: int = _MAX_OWN_FILE) -> Any:
    """Read a JSON file this project wrote (at most ``cap`` bytes); ``default`` if it does
    not exist."""
    try:
        data = read_capped(path, cap)
    except FileNotFoundError:
        return default
    return json.loads(data.decode("utf-8"))


@contextlib.contextmanager
def dir_lock(directory: StrPath) -> Iterator[None]:
    """An exclusive advisory lock on ``directory`` (``.lock`` inside it)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class AtomicStore:
    """Named byte blobs in one directory, each replaced atomically (four write points a
    write: the temp file's bytes, its fsync, the rename, the directory's fsync)."""

    def __init__(
        self,
        directory: StrPath,
        *,
        fs: FileSystem = LOCAL,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.directory = Path(directory)
        self.fs = fs
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._recover()

    def _recover(self) -> None:
        """Remove what an interrupted write left behind: its temp file (never renamed)."""
        for p in self.directory.iterdir():
            if _TMP in p.name:
                p.unlink(missing_ok=True)

    def path(self, name: str) -> Path:
        """The file that holds ``name``; refuses names that encode to an unusable file name."""
        if not isinstance(name, str):
            raise MalformedInput("a store name must be a string")
        enc = encode_name(name)
        if len(enc) > _MAX_NAME:
            raise MalformedInput(f"store name {name[:32]!r}... is too long")
        return self.directory / enc

    def write(self, name: str, data: bytes) -> None:
        """Replace the bytes stored under ``name`` atomically."""
        self.fs.check()
        target = self.path(name)
        if len(data) > self.max_bytes:
            raise EndlessDataAttack(f"{len(data)} bytes exceeds the store's {self.max_bytes}")
        _replace(target, 0o600, lambda f: f.write(data), self.fs, f"store {name[:64]}")

    def read(self, name: str, max_bytes: int | None = None) -> bytes | None:
        """The bytes stored under ``name``, or None; refuses more than ``max_bytes``."""
        self.fs.check()
        cap = self.max_bytes if max_bytes is None else max_bytes
        try:
            return read_capped(self.path(name), cap)
        except FileNotFoundError:
            return None
        except EndlessDataAttack:
            raise EndlessDataAttack(f"stored {name[:64]!r} exceeds {cap} bytes") from None

    def delete(self, name: str) -> None:
        """Remove ``name`` if present (two write points: unlink, fsync the directory)."""
        self.fs.check()
        self.fs.unlink(self.path(name))
        self.fs.sync_dir(self.directory)

    def names(self) -> list[str]:
        """The encoded names present (sorted)."""
        self.fs.check()
        return sorted(
            p.name for p in self.directory.iterdir() if p.is_file() and _TMP not in p.name
        )

    def write_json(self, name: str, value: Any) -> None:
        """Store ``value`` as compact sorted JSON."""
        self.write(name, dumps(value))

    def read_json(self, name: str, limits: Limits | None = None) -> Any:
        """Decode the JSON stored under ``name`` with the bounded decoder, or None."""
        data = self.read(name)
        if data is None:
            return None
        return loads(
            data, limits or Limits.primary(), cap=self.max_bytes, what=f"stored {name[:64]!r}"
        )


__all__ = [
    "AtomicStore",
    "atomic_copy",
    "atomic_write",
    "dir_lock",
    "read_capped",
    "read_json",
    "write_json",
]
