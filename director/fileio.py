"""Atomic file writes and a directory lock: nothing half-written is ever visible.

Every file the backend writes goes through :func:`atomic_write` (temp file in the same
directory, fsync, rename, fsync the directory). Commands and the server that change one
repository directory hold :func:`dir_lock` while they do.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically: temp file, fsync, rename, fsync dir."""
    _replace(path, mode, lambda f: f.write(data))


def atomic_copy(src: Path, dest: Path, mode: int = 0o644) -> None:
    """Copy ``src`` to ``dest`` atomically, streaming (images are not held in memory)."""

    def fill(f: BinaryIO) -> None:
        with src.open("rb") as r:
            shutil.copyfileobj(r, f, 1024 * 1024)

    _replace(dest, mode, fill)


def _replace(dest: Path, mode: int, fill: Callable[[BinaryIO], object]) -> None:
    """A temp file in ``dest``'s directory, written by ``fill``, fsynced, given ``mode``,
    renamed over ``dest``; then the directory is fsynced so the rename is durable."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json(path: Path, value: Any, mode: int = 0o644) -> None:
    """Atomically write ``value`` as indented JSON."""
    atomic_write(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode(), mode)


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON file this package wrote; ``default`` if it does not exist."""
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return default


@contextlib.contextmanager
def dir_lock(directory: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``directory`` (``.lock`` inside it)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
