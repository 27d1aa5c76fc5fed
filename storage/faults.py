"""Power cuts and crashes, injected by wrapping the file system (tests and simulators only).

A test gives the code under test a :class:`FaultyFileSystem` instead of
:data:`storage.fs.LOCAL`. The wrapper counts the write points (listed in
:mod:`storage.fs`) in order and asks its trigger at each one:

- :class:`PowerCut` cuts the power at the ``at_write``-th point: the interrupted write is
  torn (``torn`` of its bytes reach the file), the device is dead (every later operation
  raises :class:`PowerLoss`) until the test builds a new object over the same directory
  (the reboot). With ``lose_unsynced`` the disk also loses what no fsync made durable:
  writes since the file's last fsync, renames and unlinks since the directory's last
  fsync (a volatile write cache). Without it every completed operation is durable (raw
  flash, programmed in order).
- :class:`WritePointCounter` never cuts; it records the points of a clean run, so a test
  can walk every one of them.
- :class:`KillAt` SIGKILLs its own process at one point (a crash test runs the real agent
  in a child process built with it).

One wrapper shared by several stores and a flash simulator is one power supply: the count
runs across all of them and they die together. Nothing here verifies anything;
:class:`PowerLoss` is a plain ``Exception``, not an Uptane error.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from storage.fs import LOCAL, File, FileSystem, StrPath, short


class PowerLoss(Exception):
    """The simulated power was cut; the device is dead until it is opened again."""


class PowerCut:
    """The trigger of a power cut at the ``at_write``-th write point (1-based)."""

    def __init__(self, at_write: int, *, torn: float = 0.5, lose_unsynced: bool = False) -> None:
        if at_write < 1:
            raise ValueError("at_write counts from 1")
        if not 0.0 <= torn <= 1.0:
            raise ValueError("torn is a fraction between 0 and 1")
        self.at_write = at_write
        self.torn = torn
        self.lose_unsynced = lose_unsynced
        self.count = 0
        self.fired = False
        self.fired_at: str | None = None

    def hit(self, what: str) -> bool:
        """Count one write point; True when the power dies at this one."""
        if self.fired:
            return True
        self.count += 1
        if self.count == self.at_write:
            self.fired = True
            self.fired_at = what
            return True
        return False

    def __repr__(self) -> str:
        return f"PowerCut(at_write={self.at_write}, lose_unsynced={self.lose_unsynced})"


class WritePointCounter(PowerCut):
    """A trigger that never fires: counts (and names) the write points of a clean run."""

    def __init__(self) -> None:
        super().__init__(1)
        self.at_write = 0
        self.points: list[str] = []

    def hit(self, what: str) -> bool:
        self.count += 1
        self.points.append(what)
        return False


class KillAt(PowerCut):
    """SIGKILL this process at write point ``at_write``, or at the ``nth`` point whose
    words contain ``match``: a crash, not an orderly exit. The operation at that point
    does not happen (nothing of it is written)."""

    def __init__(self, at_write: int | None = None, *, match: str | None = None, nth: int = 1):
        if (at_write is None) == (match is None):
            raise ValueError("give at_write or match")
        super().__init__(at_write or 1, torn=0.0)
        self.at_write = at_write or 0
        self.match = match
        self.nth = nth
        self.matched = 0

    @classmethod
    def parse(cls, spec: str) -> KillAt:
        """``"17"`` (write point 17) or ``"rename state/cycle#2"`` (the second point whose
        words contain ``rename state/cycle``): how a test tells a child process where."""
        if spec.isdigit():
            return cls(int(spec))
        words, _, nth = spec.rpartition("#")
        if words and nth.isdigit():
            return cls(match=words, nth=int(nth))
        return cls(match=spec)

    def hit(self, what: str) -> bool:
        self.count += 1
        if self.match is not None and self.match in what:
            self.matched += 1
        if self.count == self.at_write or (self.match is not None and self.matched == self.nth):
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return False


@dataclass
class _Undo:
    """One change the disk may still lose: how to put back what was there before."""

    kind: str  # "write", "rename" or "unlink"
    path: Path
    directory: Path
    offset: int = 0
    old: bytes | None = None  # the bytes that were there (None: the file did not exist)
    old_size: int = 0
    src: Path | None = None


class FaultyFileSystem(FileSystem):
    """A :class:`FileSystem` that asks ``trigger`` at every write point (module doc)."""

    def __init__(self, trigger: PowerCut, base: FileSystem = LOCAL) -> None:
        self.trigger = trigger
        self.base = base
        self.dead = False
        self._unsynced: list[_Undo] = []

    # --- the device ----------------------------------------------------------------------

    def check(self) -> None:
        if self.dead or self.trigger.fired:
            self.dead = True
            raise PowerLoss("the power is off")

    def point(self, what: str) -> None:
        """One write point: cut the power here if the trigger says so."""
        self.check()
        if self.trigger.hit(what):
            self.die()

    def die(self) -> None:
        """Leave the files as a power loss would, mark the device dead, raise PowerLoss."""
        self.dead = True
        if self.trigger.lose_unsynced:
            for undo in reversed(self._unsynced):
                _apply(undo)
        self._unsynced.clear()
        raise PowerLoss(f"power cut at {self.trigger.fired_at}")

    def _journal(self, undo: _Undo) -> None:
        if self.trigger.lose_unsynced:
            self._unsynced.append(undo)

    # --- operations ----------------------------------------------------------------------

    def create(self, path: StrPath, mode: int = 0o600, *, label: str | None = None) -> File:
        self.check()
        f = self.base.create(path, mode, label=label)
        return _FaultyFile(f, self)

    def open(self, path: StrPath, mode: int = 0o644, *, label: str | None = None) -> File:
        self.check()
        f = self.base.open(path, mode, label=label)
        return _FaultyFile(f, self)

    def replace(self, src: StrPath, dst: StrPath) -> None:
        s, d = Path(src), Path(dst)
        self.point(f"rename {short(d)}")
        self._journal(_Undo("rename", d, d.parent, old=_contents(d), src=s))
        self.base.replace(s, d)

    def unlink(self, path: StrPath) -> None:
        p = Path(path)
        self.point(f"unlink {short(p)}")
        old = _contents(p)
        if old is not None:
            self._journal(_Undo("unlink", p, p.parent, old=old))
        self.base.unlink(p)

    def sync_dir(self, directory: StrPath) -> None:
        d = Path(directory)
        self.point(f"fsync-dir {d.name}")
        self.base.sync_dir(d)
        self._unsynced = [
            u for u in self._unsynced if u.kind == "write" or u.directory.resolve() != d.resolve()
        ]

    def synced(self, path: Path) -> None:
        """A file's fsync returned: its writes can no longer be lost."""
        self._unsynced = [u for u in self._unsynced if u.kind != "write" or u.path != path]


class _FaultyFile(File):
    """A file of a :class:`FaultyFileSystem`: its first write and its fsync are points."""

    def __init__(self, inner: File, fs: FaultyFileSystem) -> None:
        super().__init__(inner.fd, inner.path, inner.label)
        self.where = Path(inner.path)
        self.fs = fs
        self.wrote = False

    def _before_write(self, data: bytes | bytearray | memoryview, offset: int) -> bool:
        """Journal what the write will overwrite; True when the power dies at this write."""
        self.fs.check()
        if self.fs.trigger.lose_unsynced:
            old = self.pread(len(data), offset)
            self.fs._journal(
                _Undo("write", self.where, self.where.parent, offset, old, self.size())
            )
        if self.wrote:
            return False
        self.wrote = True
        return self.fs.trigger.hit(f"write {self.label}")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        offset = os.lseek(self.fd, 0, os.SEEK_CUR)
        self.pwrite(data, offset)
        os.lseek(self.fd, offset + len(data), os.SEEK_SET)

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        if self._before_write(data, offset):
            super().pwrite(memoryview(data)[: int(len(data) * self.fs.trigger.torn)], offset)
            self.fs.die()
        super().pwrite(data, offset)

    def truncate(self, size: int) -> None:
        self.fs.check()
        old = self.size()
        if size < old and self.fs.trigger.lose_unsynced:
            self.fs._journal(
                _Undo(
                    "write", self.where, self.where.parent, size, self.pread(old - size, size), old
                )
            )
        super().truncate(size)

    def sync(self) -> None:
        self.fs.point(f"fsync {self.label}")
        super().sync()
        self.fs.synced(self.where)


def _contents(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _apply(u: _Undo) -> None:
    """Put back what ``u`` changed (the simulated loss of an unsynced change)."""
    if u.kind == "write":
        if not u.path.exists():
            return
        with open(u.path, "r+b") as f:
            f.seek(u.offset)
            f.write(u.old or b"")
            f.truncate(u.old_size)
    elif u.kind == "rename":
        # the renamed file's own bytes were fsynced before the rename: it is back at src
        if u.src is not None and u.path.exists():
            u.src.write_bytes(u.path.read_bytes())
        if u.old is None:
            u.path.unlink(missing_ok=True)
        else:
            u.path.write_bytes(u.old)
    elif u.kind == "unlink" and u.old is not None:
        u.path.write_bytes(u.old)


__all__ = ["FaultyFileSystem", "KillAt", "PowerCut", "PowerLoss", "WritePointCounter"]
