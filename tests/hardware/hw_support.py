"""Test-only helpers for the link layer: an in-memory Secondary handler (and, re-exported,
:class:`hardware.fdport.FdPort` for pty ports)."""

from __future__ import annotations

from hardware.fdport import FdPort
from hardware.messages import Status
from hardware.protocol import EcuInfo
from uptane.errors import BadLength, EndlessDataAttack, ProtocolViolation
from uptane.limits import Limits

__all__ = ["FdPort", "MemoryHandler"]


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
        self.nonces = 0

    def hello_info(self) -> EcuInfo:
        return self.info

    def report(self, nonce: bytes) -> bytes:
        self.reports += 1
        return b"report:" + self.info.ecu_serial.encode() + b":" + nonce

    def time_nonce(self) -> bytes:
        self.nonces += 1
        return self.nonces.to_bytes(16, "big")

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
