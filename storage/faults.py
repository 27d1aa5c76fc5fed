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
- :class:`FlashCut` is a :class:`PowerCut` on a realistic flash (seeded, reproducible):
  the interrupted write stops at any byte and leaves the page it stopped in partly
  programmed (each byte old, new or a mix of their bits); with ``lose_unsynced`` the cache
  loses an arbitrary subset of the unsynced pages, each page ending as any one of the
  versions it went through since the last fsync (or a bit mix of two), and the directory
  keeps a random prefix of its unsynced renames and unlinks (an ordered journal).
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
import random
import signal
import sys
from collections.abc import Callable
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

    def tear(
        self, data: bytes | bytearray | memoryview, offset: int, old: Callable[[int, int], bytes]
    ) -> bytes | bytearray | memoryview:
        """What of the write cut at this point reaches the file at ``offset``: the first
        ``torn`` of its bytes. ``old(size, offset)`` reads what is there now."""
        return memoryview(data)[: int(len(data) * self.torn)]

    def lose(self, unsynced: list[_Undo]) -> None:
        """Put back every change no fsync made durable, newest first (``lose_unsynced``)."""
        for undo in reversed(unsynced):
            _apply(undo)

    def __repr__(self) -> str:
        return f"PowerCut(at_write={self.at_write}, lose_unsynced={self.lose_unsynced})"


class FlashCut(PowerCut):
    """A power cut at the ``at_write``-th point of a realistic flash (module doc).

    ``page`` is the flash page in bytes (the granularity of a torn program and of the
    cache); ``seed`` makes every random choice reproducible: the same seed cuts the same
    way. :attr:`what` says what the cut did, for a failing test's message.
    """

    def __init__(
        self, at_write: int, *, seed: int, page: int = 256, lose_unsynced: bool = False
    ) -> None:
        super().__init__(at_write, torn=0.5, lose_unsynced=lose_unsynced)
        if page < 1:
            raise ValueError("page is a positive number of bytes")
        self.seed = seed
        self.page = page
        self.rng = random.Random(seed)
        self.what: list[str] = []

    def _mix(self, a: int, b: int) -> int:
        """One byte of a page whose programming stopped: old, new, or some of its bits."""
        r = self.rng.random()
        if r < 1 / 3:
            return a
        if r < 2 / 3:
            return b
        return a ^ ((a ^ b) & self.rng.getrandbits(8))

    def _mix_bytes(self, a: bytes, b: bytes) -> bytes:
        n = max(len(a), len(b))
        a, b = a.ljust(n, b"\0"), b.ljust(n, b"\0")
        return bytes(self._mix(x, y) for x, y in zip(a, b, strict=True))

    def tear(
        self, data: bytes | bytearray | memoryview, offset: int, old: Callable[[int, int], bytes]
    ) -> bytes | bytearray | memoryview:
        """Every page before the cut byte programmed, the page it falls in partly, the
        pages after it untouched."""
        new = bytes(data)
        before = old(len(new), offset)
        cut = self.rng.randint(0, len(new))
        page_end = min(len(new), ((offset + cut) // self.page + 1) * self.page - offset)
        out = bytearray(new[:cut])
        out += self._mix_bytes(before[cut:page_end], new[cut:page_end])
        out += before[page_end:]  # later pages keep what they held
        self.what.append(f"write torn at byte {cut} of {len(new)}")
        return out

    def lose(self, unsynced: list[_Undo]) -> None:
        """A random prefix of the directory operations stays; each unsynced page of each
        file ends as one of its versions since the last fsync."""
        dirops = [u for u in unsynced if u.kind != "write"]
        keep = self.rng.randint(0, len(dirops))
        for undo in reversed(dirops[keep:]):
            _apply(undo)
        files: dict[Path, list[_Undo]] = {}
        for u in unsynced:
            if u.kind == "write":
                files.setdefault(u.path, []).append(u)
        for path, undos in files.items():
            if path.exists():
                path.write_bytes(self._lose_pages(bytearray(path.read_bytes()), undos))
                self.what.append(f"cache: {path.name}")
        if dirops:
            self.what.append(f"directory: kept {keep} of {len(dirops)} operations")

    def _pages(self, u: _Undo) -> range:
        return range(u.offset // self.page, -(-(u.offset + u.length) // self.page))

    def _lose_pages(self, cur: bytearray, undos: list[_Undo]) -> bytearray:
        """The file ``cur`` (its current bytes) after the cache lost some of ``undos``."""
        page = self.page
        versions: dict[int, list[bytes]] = {}
        for u in undos:
            for p in self._pages(u):
                versions.setdefault(p, [bytes(cur[p * page : (p + 1) * page])])
        sizes = [len(cur)]
        for u in reversed(undos):  # walk back to the synced file, keeping each version
            cur[u.offset : u.offset + len(u.old or b"")] = u.old or b""
            del cur[u.old_size :]
            sizes.append(len(cur))
            for p in self._pages(u):
                versions[p].append(bytes(cur[p * page : (p + 1) * page]))
        r = self.rng.random()  # all kept, all lost, or page by page
        pick: Callable[[list[bytes]], bytes]
        if r < 0.2:
            size, pick = sizes[0], lambda vs: vs[0]
        elif r < 0.4:
            size, pick = sizes[-1], lambda vs: vs[-1]
        else:
            size, pick = self.rng.choice(sizes), self._pick
        end = max(max(sizes), (max(versions) + 1) * page)
        out = cur + bytes(end - len(cur))
        for p, vs in versions.items():
            v = pick(list(dict.fromkeys(vs)))
            out[p * page : (p + 1) * page] = v.ljust(page, b"\0")[: len(out) - p * page]
        del out[size:]
        return out + bytes(size - len(out))

    def _pick(self, versions: list[bytes]) -> bytes:
        """One version of a page (newest first), or now and then a mix of two neighbours."""
        j = self.rng.randrange(len(versions))
        if j + 1 < len(versions) and self.rng.random() < 0.25:
            return self._mix_bytes(versions[j], versions[j + 1])
        return versions[j]

    def __repr__(self) -> str:
        return (
            f"FlashCut(at_write={self.at_write}, seed={self.seed}, page={self.page}, "
            f"lose_unsynced={self.lose_unsynced})"
        )


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
    length: int = 0  # bytes the write covered (a write past the end covers more than old)


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
            self.trigger.lose(self._unsynced)
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
                _Undo(
                    "write",
                    self.where,
                    self.where.parent,
                    offset,
                    old,
                    self.size(),
                    None,
                    len(data),
                )
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
            super().pwrite(self.fs.trigger.tear(data, offset, self.pread), offset)
            self.fs.die()
        super().pwrite(data, offset)

    def truncate(self, size: int) -> None:
        self.fs.check()
        old = self.size()
        if size < old and self.fs.trigger.lose_unsynced:
            self.fs._journal(
                _Undo(
                    "write",
                    self.where,
                    self.where.parent,
                    size,
                    self.pread(old - size, size),
                    old,
                    length=old - size,
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


__all__ = [
    "FaultyFileSystem",
    "FlashCut",
    "KillAt",
    "PowerCut",
    "PowerLoss",
    "WritePointCounter",
]
