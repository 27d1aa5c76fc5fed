"""The file-system seam: every durable change the project makes goes through a
:class:`FileSystem`.

Atomic stores, atomic file writes, image downloads, the flash simulator and prunes create,
write, fsync, rename and unlink through one ``FileSystem`` object instead of calling
:mod:`os` themselves. Production code uses :data:`LOCAL`, which is plain POSIX I/O. A test
passes a wrapper from :mod:`storage.faults` instead, which counts every *write point* and
cuts the power (or kills the process) at one of them. That is the only place faults are
injected: agent code receives a ``FileSystem`` like any other dependency and carries no
fault parameter.

The write points, in the words the fault wrappers use for them:

- ``write LABEL``: the *first* write on an open file (the bytes of a temp file, the first
  chunk of a download, one flash program operation). Later writes on the same handle are
  not separate points: a cut there is no different from a cut at the file's fsync;
- ``fsync LABEL``: :meth:`File.sync`;
- ``rename DIR/NAME``: :meth:`FileSystem.replace`;
- ``unlink DIR/NAME``: :meth:`FileSystem.unlink`;
- ``fsync-dir DIRNAME``: :meth:`FileSystem.sync_dir`, which makes renames and unlinks durable.

``LABEL`` is the name the caller gives :meth:`FileSystem.create` or :meth:`FileSystem.open`
(for example the store name of a temp file, whose own name is random), so the points of two
runs in different directories have the same words.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType

StrPath = str | os.PathLike[str]


def short(path: StrPath) -> str:
    """``DIR/NAME`` of ``path``: how write points name a file, the same in any directory."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


class File:
    """An open file, for writing through a :class:`FileSystem` (and reading back)."""

    def __init__(self, fd: int, path: str, label: str) -> None:
        self.fd = fd
        #: a plain string: a Path per open would intern its parts (a flash simulator opens
        #: its region file once per chunk; bench figure 3)
        self.path = path
        self.label = label
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data`` at the current position."""
        write_all(self.fd, data)

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        """Write all of ``data`` at ``offset`` (the position does not move)."""
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def pread(self, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes at ``offset``."""
        return os.pread(self.fd, size, offset)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def seek(self, offset: int) -> None:
        os.lseek(self.fd, offset, os.SEEK_SET)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def chmod(self, mode: int) -> None:
        """Set the exact mode (the creating umask does not apply)."""
        os.fchmod(self.fd, mode)

    def sync(self) -> None:
        """fsync: every earlier write to this file is durable when this returns."""
        os.fsync(self.fd)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)

    def __enter__(self) -> File:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class FileSystem:
    """Plain POSIX file operations: the real disk (see the module doc)."""

    def check(self) -> None:
        """Raise when the device is off (only a fault wrapper's device ever is)."""

    def create(self, path: StrPath, mode: int = 0o600, *, label: str | None = None) -> File:
        """A new file that must not exist yet (a temp file), opened for writing."""
        p = os.fspath(path)
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
        return File(fd, p, label or os.path.basename(p))

    def open(self, path: StrPath, mode: int = 0o644, *, label: str | None = None) -> File:
        """An existing file opened for reading and writing, created empty if missing."""
        p = os.fspath(path)
        fd = os.open(p, os.O_RDWR | os.O_CREAT, mode)
        return File(fd, p, label or os.path.basename(p))

    def replace(self, src: StrPath, dst: StrPath) -> None:
        """Rename ``src`` over ``dst`` (atomic on POSIX; durable after :meth:`sync_dir`)."""
        os.replace(src, dst)

    def unlink(self, path: StrPath) -> None:
        """Remove ``path`` if it exists (durable after :meth:`sync_dir`)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def sync_dir(self, directory: StrPath) -> None:
        """fsync the directory itself, so the renames and unlinks done in it are durable."""
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


#: The real disk.
LOCAL = FileSystem()


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than it is given)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


__all__ = ["LOCAL", "File", "FileSystem", "StrPath", "short", "write_all"]
