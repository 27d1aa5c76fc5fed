"""A file-backed flash simulator for a Secondary: two image slots and a boot-control area.

The device has three regions, each backed by one file in a directory:

- ``"A"`` and ``"B"``: image slots of a fixed ``slot_size``;
- ``"boot"``: the boot-control area, two copies of ``boot_copy_size`` bytes each.

Every change goes through :meth:`Flash.write` (program some bytes) and :meth:`Flash.commit`
(the barrier that makes a region's earlier writes durable), which write through a
:class:`storage.fs.FileSystem`. Each call is one *write point* of that file system, so a
test that builds the flash over a :class:`storage.faults.FaultyFileSystem` can cut the
power at every one of them; one such file system shared with the ECU's
:class:`storage.AtomicStore` is one power supply.

The boot-control area is never torn: :meth:`Flash.write_boot` writes the new record into the
copy that does not hold the newest valid record, with a higher sequence number and a CRC-32,
then commits. :meth:`Flash.read_boot` takes the valid copy with the highest sequence number.
A power cut leaves the old record (the other copy is untouched) or the new one.

By default the device is *ideal*: a write overwrites whatever was there. With a
:class:`FlashModel` it behaves like NOR flash: each region is made of erase blocks,
:meth:`Flash.erase` sets a block's bytes to ``0xFF`` (one write point), and a program can
only clear bits (what lands is ``old & new``, as on a real chip: programming over bytes that
were not erased corrupts them, and :attr:`Flash.overprograms` counts it). Each boot-control
copy then fills whole erase blocks, so erasing one copy never touches the other. The model
is kept in the device's geometry file; a device written before models existed (no model in
its geometry) reads the same, and can be opened with a model whose erase block divides its
copies. Page-granular tears and a lossy cache are the fault layer's
(:class:`storage.faults.FlashCut`), not the device's.

This module simulates hardware and verifies nothing.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.faults import PowerLoss
from storage.fs import LOCAL, FileSystem
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
_GEOMETRY = "geometry.json"
_GEOMETRY_KEYS = ("slot_size", "boot_copy_size")
_MODEL_KEYS = ("erase_block", "page")
_ERASED = 0xFF


@dataclass(frozen=True)
class FlashModel:
    """How the simulated chip programs (module doc): erase blocks of ``erase_block``
    bytes, programmed in pages of ``page`` bytes. The defaults are a typical SPI NOR
    (4 KiB sectors, 256-byte pages). ``Flash(..., model=None)`` is the ideal device."""

    erase_block: int = 4096
    page: int = 256

    def __post_init__(self) -> None:
        eb, pg = self.erase_block, self.page
        if not (type(eb) is int and type(pg) is int and 0 < pg <= eb and eb % pg == 0):
            raise ValueError("a flash model needs a page that divides its erase block")

    def round_up(self, n: int) -> int:
        """``n`` rounded up to whole erase blocks."""
        return -(-n // self.erase_block) * self.erase_block

    def fits(self, slot_size: int, boot_copy_size: int) -> bool:
        """True when slots and boot copies are whole erase blocks (no copy shares one)."""
        return slot_size % self.erase_block == 0 and boot_copy_size % self.erase_block == 0


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
    the existing one (its geometry must match). Writes go through ``fs`` (the real disk
    unless a test passes a :class:`storage.faults.FaultyFileSystem`). ``model`` makes a
    new device a NOR flash with erase blocks (module doc); an existing one keeps its own.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        slot_size: int | None = None,
        *,
        boot_copy_size: int = 4096,
        fs: FileSystem = LOCAL,
        model: FlashModel | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.fs = fs
        self.write_points = 0
        #: program operations that had to set a bit (NOR leaves it cleared: corruption)
        self.overprograms = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        if (self.directory / _GEOMETRY).exists():
            self._open(slot_size, model)
        else:
            if slot_size is None or slot_size <= 0:
                raise ValueError("a new flash needs a positive slot_size")
            if boot_copy_size < 256:
                raise ValueError("boot_copy_size must be at least 256 bytes")
            if model is not None and slot_size % model.erase_block:
                raise ValueError(
                    f"slot size {slot_size} is not whole {model.erase_block}-byte blocks"
                )
            self.slot_size = slot_size
            # each copy fills whole erase blocks: erasing one never touches the other
            self.boot_copy_size = model.round_up(boot_copy_size) if model else boot_copy_size
            self.model = model
            self._format()
        self._sizes = {"A": self.slot_size, "B": self.slot_size, BOOT: 2 * self.boot_copy_size}
        #: erase blocks: 0 on the ideal device, where nothing needs erasing
        self.erase_block = self.model.erase_block if self.model else 0
        # journals of older versions of this simulator (power losses are simulated by the
        # file system now): nothing in them is needed
        for region in REGIONS:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / f"{region}.unsynced")

    # --- setup --------------------------------------------------------------------------

    def _open(self, slot_size: int | None, model: FlashModel | None) -> None:
        """Read an existing device's geometry; ``model`` must agree with it."""
        raw = (self.directory / _GEOMETRY).read_bytes()
        geo = loads(raw, Limits.primary(), cap=4096, what="flash geometry")
        geo = geo if isinstance(geo, dict) else {}
        found = [v for k in _GEOMETRY_KEYS if type(v := geo.get(k)) is int and v > 0]
        if len(found) != len(_GEOMETRY_KEYS):
            raise MalformedInput(f"flash geometry in {self.directory} is malformed")
        if slot_size is not None and slot_size != found[0]:
            raise ValueError(f"flash in {self.directory} has slot size {found[0]}")
        self.slot_size, self.boot_copy_size = found
        try:
            stored = _stored_model(geo, found)
        except ValueError:
            raise MalformedInput(f"flash geometry in {self.directory} is malformed") from None
        if stored is not None and model is not None and model != stored:
            raise ValueError(f"flash in {self.directory} is a {stored}")
        if stored is None and model is not None and not model.fits(*found):
            raise ValueError(
                f"flash in {self.directory} was laid out without erase blocks: its "
                f"{self.boot_copy_size}-byte boot copies or {self.slot_size}-byte slots are "
                f"not whole {model.erase_block}-byte blocks; open it without a model"
            )
        self.model = stored or model

    def _format(self) -> None:
        # the factory formats the device before it is ever powered in the field: plain
        # writes, not write points of the file system
        fill = b"\xff" * 65536 if self.model else b""  # a NOR chip leaves the factory erased
        for region, size in (("A", self.slot_size), ("B", self.slot_size)):
            with open(self._path(region), "wb") as f:
                for _ in range(0, size, len(fill) or size):
                    f.write(fill)
                f.truncate(size)
                f.flush()
                os.fsync(f.fileno())
        with open(self._path(BOOT), "wb") as f:
            f.write(b"\xff" * (2 * self.boot_copy_size))  # erased: no valid copy
            f.flush()
            os.fsync(f.fileno())
        geometry = {"slot_size": self.slot_size, "boot_copy_size": self.boot_copy_size}
        if self.model:  # a device without a model keeps the geometry file of old
            geometry.update(erase_block=self.model.erase_block, page=self.model.page)
        geo = canonical(geometry)
        tmp = self.directory / (_GEOMETRY + "+tmp")
        with open(tmp, "wb") as f:
            f.write(geo)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / _GEOMETRY)
        _fsync_dir(self.directory)

    def reopen(self, *, fs: FileSystem = LOCAL) -> Flash:
        """Simulate a reboot: a new device object that re-reads everything from the files."""
        return Flash(self.directory, fs=fs, model=self.model)

    def _path(self, region: str) -> str:
        # cached plain strings: building a Path per chunk made CPython's interned-string
        # table grow with the image size (bench fig 3a)
        cache = self.__dict__.setdefault("_path_cache", {})
        p = cache.get(region)
        if p is None:
            p = cache[region] = os.fspath(self.directory / f"{region}.bin")
        return p

    def size(self, region: str) -> int:
        """Size of a region in bytes."""
        self._check_region(region)
        return self._sizes[region]

    @property
    def alive(self) -> bool:
        """False once the power was cut; reopen to continue."""
        try:
            self.fs.check()
        except PowerLoss:
            return False
        return True

    def _check_region(self, region: str) -> None:
        if region not in REGIONS:
            raise ValueError(f"unknown flash region {region!r}")

    # --- the one write path ---------------------------------------------------------------

    def read(self, region: str, offset: int, length: int) -> bytes:
        """Read ``length`` bytes of ``region`` at ``offset``."""
        self.fs.check()
        self._check_range(region, offset, length)
        with open(self._path(region), "rb") as f:
            f.seek(offset)
            return f.read(length)

    def write(self, region: str, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Program ``data`` at ``offset`` of ``region``: one write point. With a model,
        only the bits ``data`` clears change (erase the blocks first)."""
        self.fs.check()
        self._check_range(region, offset, len(data))
        self.write_points += 1
        with self.fs.open(self._path(region), label=f"{region}@{offset}+{len(data)}") as f:
            if self.erase_block:
                data = self._program(f.pread(len(data), offset), data)
            f.pwrite(data, offset)

    def _program(self, old: bytes, data: bytes | bytearray | memoryview) -> bytes:
        """What a NOR program of ``data`` over ``old`` leaves: ``old & data``."""
        n = len(old)
        was, want = int.from_bytes(old, "big"), int.from_bytes(data, "big")
        if want & ~was:
            self.overprograms += 1  # bits that should be 1 stay 0
        return (was & want).to_bytes(n, "big")

    def erase(self, region: str, offset: int, length: int) -> None:
        """Erase whole blocks of ``region`` to ``0xFF``: one write point. Nothing on the
        ideal device (no model), where a write overwrites anyway."""
        if not self.erase_block:
            return
        self.fs.check()
        self._check_range(region, offset, length)
        if offset % self.erase_block or length % self.erase_block:
            raise ValueError(f"erase of {region}@{offset}+{length} is not whole blocks")
        self.write_points += 1
        with self.fs.open(self._path(region), label=f"erase {region}@{offset}+{length}") as f:
            f.pwrite(bytes([_ERASED]) * length, offset)

    def commit(self, region: str) -> None:
        """Make every earlier write to ``region`` durable (fsync): one write point."""
        self.fs.check()
        self._check_region(region)
        self.write_points += 1
        with self.fs.open(self._path(region), label=region) as f:
            f.sync()

    def _check_range(self, region: str, offset: int, length: int) -> None:
        self._check_region(region)
        if offset < 0 or length < 0 or offset + length > self._sizes[region]:
            raise ValueError(
                f"{region}@{offset}+{length} is outside the {self._sizes[region]}-byte region"
            )

    # --- boot control ---------------------------------------------------------------------

    def _read_copy(self, index: int) -> BootRecord | None:
        start = index * self.boot_copy_size
        head = self.read(BOOT, start, _BOOT_HEADER.size)
        magic, fmt, seq, length = _BOOT_HEADER.unpack_from(head)
        if magic != _BOOT_MAGIC or fmt != _BOOT_FORMAT:
            return None
        end = _BOOT_HEADER.size + length
        if end + _CRC.size > self.boot_copy_size:
            return None
        raw = head + self.read(BOOT, start + len(head), end + _CRC.size - len(head))
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
        """Write ``record`` as the new boot state (two write points: write, commit; with
        a model, the copy's erase first: three).

        It goes into the copy that does not hold the newest valid record, with the next
        sequence number, so a cut at any point leaves the old record readable.
        Returns the record with its sequence number.
        """
        copies = self._copies()
        newest = max(
            (i for i in (0, 1) if copies[i] is not None),
            key=lambda i: _sequence(copies[i]),
            default=None,
        )
        seq = 1 if newest is None else _sequence(copies[newest]) + 1
        target = 0 if newest is None else 1 - newest
        payload = record.to_payload()
        body = _BOOT_HEADER.pack(_BOOT_MAGIC, _BOOT_FORMAT, seq, len(payload)) + payload
        blob = body + _CRC.pack(zlib.crc32(body))
        if len(blob) > self.boot_copy_size:
            raise ValueError(f"boot record of {len(blob)} bytes does not fit its copy")
        self.erase(BOOT, target * self.boot_copy_size, self.boot_copy_size)
        self.write(BOOT, target * self.boot_copy_size, blob)
        self.commit(BOOT)
        return BootRecord(
            record.active, record.trial, record.attempts, record.confirmed, record.data, seq
        )


def _stored_model(geo: dict[str, Any], sizes: list[int]) -> FlashModel | None:
    """The model a geometry file names (None: an ideal device, or one from before models);
    ValueError when it names a model that does not fit the device's sizes."""
    if not any(k in geo for k in _MODEL_KEYS):
        return None
    erase_block, page = geo.get("erase_block"), geo.get("page")
    if type(erase_block) is not int or type(page) is not int:
        raise ValueError("the model's sizes are not integers")
    model = FlashModel(erase_block, page)
    if not model.fits(*sizes):
        raise ValueError("the device's regions are not whole erase blocks")
    return model


def _sequence(record: BootRecord | None) -> int:
    return record.sequence if record is not None else 0


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "BOOT",
    "REGIONS",
    "SLOTS",
    "BootRecord",
    "Flash",
    "FlashModel",
    "other_slot",
]
