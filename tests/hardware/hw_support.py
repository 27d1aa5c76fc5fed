"""Test-only helpers for the link layer: an in-memory Secondary handler and pty ports."""

from __future__ import annotations

import os
import select
import tty

from hardware.messages import Status
from hardware.protocol import EcuInfo
from uptane.errors import BadLength, EndlessDataAttack, ProtocolViolation
from uptane.limits import Limits


class MemoryHandler:
    """A :class:`hardware.protocol.SecondaryHandler` that keeps everything in memory."""

    def __init__(
        self,
        *,
        ecu_serial: str = "ecu-1",
        hardware_id: str = "hw-a",
        mode: str = "partial",
        slot_size: int = 1 << 20,
        limits: Limits | None = None,
    ) -> None:
        self.info = EcuInfo(ecu_serial, hardware_id, mode, slot_size)
        self.metadata: dict[tuple[str, str, str], bytes] = {}
        self.time: int | bytes | None = None
        self.token: bytes | None = None
        self.image_filename: str | None = None
        self.image_total: int | None = None
        self.image = bytearray()
        self.installed: str | None = None
        self.state = "idle"
        self.chunks = 0
        self.reports = 0

    def hello_info(self) -> EcuInfo:
        return self.info

    def report(self, nonce: bytes) -> bytes:
        self.reports += 1
        return b"report:" + self.info.ecu_serial.encode() + b":" + nonce

    def put_time(self, time: int | bytes, token: bytes | None) -> None:
        self.time, self.token = time, token

    def put_metadata(self, repository: str, role: str, encoding: str, data: bytes) -> None:
        self.metadata[(repository, role, encoding)] = data

    def put_image_chunk(self, filename: str, total: int, offset: int, chunk: bytes) -> None:
        if total > self.info.slot_size:
            raise EndlessDataAttack(f"{total} bytes do not fit the slot")
        if offset == 0:
            self.image_filename, self.image_total, self.image = filename, total, bytearray()
        if offset != len(self.image) or filename != self.image_filename:
            raise ProtocolViolation(f"handler got offset {offset}, has {len(self.image)}")
        self.image += chunk
        self.chunks += 1
        self.state = "ready" if len(self.image) == total else "receiving"

    def install(self, filename: str | None) -> None:
        if self.image_total is None or len(self.image) != self.image_total:
            raise BadLength("image incomplete")
        self.installed = self.image_filename
        self.state = "installed"

    def status(self) -> Status:
        return Status(
            state=self.state,
            image_filename=self.image_filename,
            image_total=self.image_total,
            image_offset=len(self.image),
            installed=self.installed,
        )


class FdPort:
    """A pyserial-like port over a raw file descriptor (the master side of a pty)."""

    def __init__(self, fd: int, timeout: float = 0.01) -> None:
        tty.setraw(fd)
        self.fd = fd
        self.timeout = timeout
        self.is_open = True

    @property
    def in_waiting(self) -> int:
        r, _, _ = select.select([self.fd], [], [], 0)
        return 1 if r else 0

    def read(self, size: int = 1) -> bytes:
        r, _, _ = select.select([self.fd], [], [], self.timeout)
        if not r:
            return b""
        try:
            return os.read(self.fd, max(size, 4096))
        except OSError:
            return b""

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.is_open:
            self.is_open = False
            os.close(self.fd)
