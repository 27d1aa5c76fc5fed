"""A file-backed flash simulator for a Secondary: two image slots and a boot-control area.

The device has three regions, each backed by one file in a directory:

- ``"A"`` and ``"B"``: image slots of a fixed ``slot_size``;
- ``"boot"``: the boot-control area, two copies of ``boot_copy_size`` bytes each.

Every change goes through :meth:`Flash.write` (program some bytes) and :meth:`Flash.commit`
(the barrier that makes a region's earlier writes durable). Each call is one *write point*,
counted in order, so a test can cut the power at every one of them with :class:`PowerCut`.

The boot-control area is never torn: :meth:`Flash.write_boot` writes the new record into the
copy that does not hold the newest valid record, with a higher sequence number and a CRC-32,
then commits. :meth:`Flash.read_boot` takes the valid copy with the highest sequence number.
A power cut leaves the old record (the other copy is untouched) or the new one.

This module simulates hardware: :class:`PowerLoss` is a plain ``Exception``, not an Uptane
error, and nothing here verifies anything.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uptane.encoding.json import canonical, loads
from uptane.errors import MalformedInput, UptaneError
from uptane.limits import Limits

SLOTS = ("A", "B")
BOOT = "boot"
REGIONS = (*SLOTS, BOOT)

_BOOT_MAGIC = b"UPBC"
_BOOT_FORMAT = 1
_BOOT_HEADER = struct.Struct(">4sIQI")  # magic, format, sequence, payload length
_CRC = struct.Struct(">I")
_JOURNAL_ENTRY = struct.Struct(">QI")  # offset, length of the old bytes that follow
_GEOMETRY = "geometry.json"
_GEOMETRY_KEYS = ("slot_size", "boot_copy_size")


class PowerLoss(Exception):
    """The simulated power was cut; the device is dead until :meth:`Flash.reopen`."""


class PowerCut:
    """A fault hook: the ``at_write``-th write point (1-based) loses power.

    - ``torn``: the fraction of the interrupted write that reaches the medium (a torn write).
    - ``lose_unsynced``: when True, writes that no :meth:`Flash.commit` made durable yet are
      lost as well (a volatile write cache); when False every completed write is durable
      (raw flash, programmed in order).

    One hook may be shared by a :class:`Flash` and a :class:`hardware.store.AtomicStore`
    that share a power supply: the count runs across both and both die together.
    """

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
    """A hook that never cuts: counts the write points of a clean run."""

    def __init__(self) -> None:
        super().__init__(1)
        self.at_write = 0
        self.points: list[str] = []

    def hit(self, what: str) -> bool:
        self.count += 1
        self.points.append(what)
        return False


@dataclass(frozen=True)
class BootRecord:
    """The boot flag and what goes with it, written as one unit.

    ``active`` is the confirmed slot, ``trial`` the slot to try next (or None),
    ``attempts`` how often the trial slot has been booted, ``confirmed`` whether the last
    install was confirmed. ``data`` is opaque to the flash (hardware/slots.py keeps the
    image info of each slot and the last install result there). ``sequence`` is assigned by
    :meth:`Flash.write_boot`.
    """

    active: str = "A"
    trial: str | None = None
    attempts: int = 0
    confirmed: bool = True
    data: dict[str, Any] = field(default_factory=dict)
    sequence: int = 0

    def to_payload(self) -> bytes:
        return canonical(
            {
                "active": self.active,
                "trial": self.trial,
                "attempts": self.attempts,
                "confirmed": self.confirmed,
                "data": self.data,
            }
        )

    @classmethod
    def from_payload(cls, payload: bytes, sequence: int) -> BootRecord:
        """Decode a payload; raises ValueError (or an UptaneError) if it is not a record."""
        d = loads(payload, Limits.primary(), cap=len(payload), what="boot record")
        fields = ("active", "trial", "attempts", "confirmed", "data")
        if not isinstance(d, dict) or set(d) != set(fields):
            raise ValueError("boot record is not an object with the record's fields")
        active, trial, attempts, confirmed, data = (d[k] for k in fields)
        if active not in SLOTS or (trial is not None and trial not in SLOTS) or trial == active:
            raise ValueError("boot record names an unknown slot")
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
            raise ValueError("boot record attempts is not a count")
        if not isinstance(confirmed, bool) or not isinstance(data, dict):
            raise ValueError("boot record has bad fields")
        return cls(active, trial, attempts, confirmed, data, sequence)


def other_slot(slot: str) -> str:
    """The slot that is not ``slot``."""
    if slot not in SLOTS:
        raise ValueError(f"unknown slot {slot!r}")
    return "B" if slot == "A" else "A"


class Flash:
    """A file-backed flash device with slots A and B and a two-copy boot-control area.

    ``Flash(directory, slot_size)`` creates the device if the directory has none, or opens
    the existing one (its geometry must match). ``fault`` is an optional :class:`PowerCut`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        slot_size: int | None = None,
        *,
        boot_copy_size: int = 4096,
        fault: PowerCut | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.fault = fault
        self.write_points = 0
        self._dead = False
        self.directory.mkdir(parents=True, exist_ok=True)
        geo_path = self.directory / _GEOMETRY
        if geo_path.exists():
            geo = loads(geo_path.read_bytes(), Limits.primary(), cap=4096, what="flash geometry")
            sizes = [geo.get(k) if isinstance(geo, dict) else None for k in _GEOMETRY_KEYS]
            if not all(type(v) is int and v > 0 for v in sizes):
                raise MalformedInput(f"flash geometry in {directory} is malformed")
            if slot_size is not None and slot_size != sizes[0]:
                raise ValueError(f"flash in {directory} has slot size {sizes[0]}")
            self.slot_size, self.boot_copy_size = sizes
        else:
            if slot_size is None or slot_size <= 0:
                raise ValueError("a new flash needs a positive slot_size")
            if boot_copy_size < 256:
                raise ValueError("boot_copy_size must be at least 256 bytes")
            self.slot_size = slot_size
            self.boot_copy_size = boot_copy_size
            self._format()
        self._sizes = {"A": self.slot_size, "B": self.slot_size, BOOT: 2 * self.boot_copy_size}
        # An orderly open: whatever the journals hold was either applied or undone by the
        # power loss that left them; a clean start treats the files as they are.
        for region in REGIONS:
            _unlink(self._journal_path(region))

    # --- setup --------------------------------------------------------------------------

    def _format(self) -> None:
        for region, size in (("A", self.slot_size), ("B", self.slot_size)):
            with open(self._path(region), "wb") as f:
                f.truncate(size)
                f.flush()
                os.fsync(f.fileno())
        with open(self._path(BOOT), "wb") as f:
            f.write(b"\xff" * (2 * self.boot_copy_size))  # erased: no valid copy
            f.flush()
            os.fsync(f.fileno())
        geo = canonical({"slot_size": self.slot_size, "boot_copy_size": self.boot_copy_size})
        tmp = self.directory / (_GEOMETRY + "+tmp")
        with open(tmp, "wb") as f:
            f.write(geo)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / _GEOMETRY)
        _fsync_dir(self.directory)

    def reopen(self, *, fault: PowerCut | None = None) -> Flash:
        """Simulate a reboot: a new device object that re-reads everything from the files."""
        return Flash(self.directory, fault=fault)

    def _path(self, region: str) -> str:
        # cached plain strings: building a Path per chunk made CPython's interned-string
        # table grow with the image size (bench fig 3a)
        cache = self.__dict__.setdefault("_path_cache", {})
        p = cache.get(region)
        if p is None:
            p = cache[region] = os.fspath(self.directory / f"{region}.bin")
        return p

    def _journal_path(self, region: str) -> str:
        cache = self.__dict__.setdefault("_journal_cache", {})
        p = cache.get(region)
        if p is None:
            p = cache[region] = os.fspath(self.directory / f"{region}.unsynced")
        return p

    def size(self, region: str) -> int:
        """Size of a region in bytes."""
        self._check_region(region)
        return self._sizes[region]

    @property
    def alive(self) -> bool:
        """False once the power was cut; reopen to continue."""
        return not self._dead

    def _check_region(self, region: str) -> None:
        if region not in REGIONS:
            raise ValueError(f"unknown flash region {region!r}")

    def _check_alive(self) -> None:
        if self._dead or (self.fault is not None and self.fault.fired):
            self._dead = True
            raise PowerLoss("the power is off")

    # --- the one write path ---------------------------------------------------------------

    def read(self, region: str, offset: int, length: int) -> bytes:
        """Read ``length`` bytes of ``region`` at ``offset``."""
        self._check_alive()
        self._check_range(region, offset, length)
        with open(self._path(region), "rb") as f:
            f.seek(offset)
            return f.read(length)

    def write(self, region: str, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Program ``data`` at ``offset`` of ``region``: one write point."""
        self._check_alive()
        n = len(data)
        self._check_range(region, offset, n)
        self.write_points += 1
        fault = self.fault
        cut = fault is not None and fault.hit(f"write {region}@{offset}+{n}")
        journal = fault is not None and fault.lose_unsynced
        with open(self._path(region), "r+b") as f:
            if journal:
                f.seek(offset)
                old = f.read(n)
                with open(self._journal_path(region), "ab") as j:
                    j.write(_JOURNAL_ENTRY.pack(offset, len(old)))
                    j.write(old)
            f.seek(offset)
            if cut:
                assert fault is not None
                f.write(memoryview(data)[: int(n * fault.torn)])
            else:
                f.write(data)
        if cut:
            self._power_loss()

    def commit(self, region: str) -> None:
        """Make every earlier write to ``region`` durable (fsync): one write point."""
        self._check_alive()
        self._check_region(region)
        self.write_points += 1
        if self.fault is not None and self.fault.hit(f"commit {region}"):
            self._power_loss()
        with open(self._path(region), "r+b") as f:
            os.fsync(f.fileno())
        _unlink(self._journal_path(region))

    def _check_range(self, region: str, offset: int, length: int) -> None:
        self._check_region(region)
        if offset < 0 or length < 0 or offset + length > self._sizes[region]:
            raise ValueError(
                f"{region}@{offset}+{length} is outside the {self._sizes[region]}-byte region"
            )

    def _power_loss(self) -> None:
        """Leave the files as a power loss would, mark the device dead, raise PowerLoss."""
        self._dead = True
        if self.fault is not None and self.fault.lose_unsynced:
            for region in REGIONS:
                self._undo_unsynced(region)
        for region in REGIONS:
            _unlink(self._journal_path(region))
        raise PowerLoss(f"power cut at {self.fault.fired_at if self.fault else '?'}")

    def _undo_unsynced(self, region: str) -> None:
        jp = self._journal_path(region)
        if not os.path.exists(jp):
            return
        entries: list[tuple[int, int, int]] = []  # (offset, length, position in journal)
        with open(jp, "rb") as j:
            while True:
                head = j.read(_JOURNAL_ENTRY.size)
                if len(head) < _JOURNAL_ENTRY.size:
                    break
                off, n = _JOURNAL_ENTRY.unpack(head)
                entries.append((off, n, j.tell()))
                j.seek(n, os.SEEK_CUR)
            with open(self._path(region), "r+b") as f:
                for off, n, pos in reversed(entries):
                    j.seek(pos)
                    f.seek(off)
                    f.write(j.read(n))
                f.flush()
                os.fsync(f.fileno())

    # --- boot control ---------------------------------------------------------------------

    def _read_copy(self, index: int) -> BootRecord | None:
        raw = self.read(BOOT, index * self.boot_copy_size, self.boot_copy_size)
        magic, fmt, seq, length = _BOOT_HEADER.unpack_from(raw)
        if magic != _BOOT_MAGIC or fmt != _BOOT_FORMAT:
            return None
        end = _BOOT_HEADER.size + length
        if end + _CRC.size > len(raw):
            return None
        (crc,) = _CRC.unpack_from(raw, end)
        if zlib.crc32(raw[:end]) != crc:
            return None
        try:
            return BootRecord.from_payload(raw[_BOOT_HEADER.size : end], seq)
        except (ValueError, KeyError, TypeError, UptaneError):
            return None

    def _copies(self) -> list[BootRecord | None]:
        return [self._read_copy(0), self._read_copy(1)]

    def read_boot(self) -> BootRecord | None:
        """The newest valid boot-control record, or None on a device never written."""
        valid = [c for c in self._copies() if c is not None]
        return max(valid, key=lambda c: c.sequence) if valid else None

    def write_boot(self, record: BootRecord) -> BootRecord:
        """Write ``record`` as the new boot state (two write points: write, commit).

        It goes into the copy that does not hold the newest valid record, with the next
        sequence number, so a cut at either point leaves the old record readable.
        Returns the record with its sequence number.
        """
        copies = self._copies()
        newest = max(
            (i for i in (0, 1) if copies[i] is not None),
            key=lambda i: copies[i].sequence,  # type: ignore[union-attr]
            default=None,
        )
        seq = 1 if newest is None else copies[newest].sequence + 1  # type: ignore[union-attr]
        target = 0 if newest is None else 1 - newest
        payload = record.to_payload()
        body = _BOOT_HEADER.pack(_BOOT_MAGIC, _BOOT_FORMAT, seq, len(payload)) + payload
        blob = body + _CRC.pack(zlib.crc32(body))
        if len(blob) > self.boot_copy_size:
            raise ValueError(f"boot record of {len(blob)} bytes does not fit its copy")
        self.write(BOOT, target * self.boot_copy_size, blob)
        self.commit(BOOT)
        return BootRecord(
            record.active, record.trial, record.attempts, record.confirmed, record.data, seq
        )


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
