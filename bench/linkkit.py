"""A Secondary for link benchmarks: it acknowledges and counts what arrives and keeps
nothing, so the figures measure the link (framing, flow control, request/reply) and not
the disk. It follows :class:`hardware.protocol.SecondaryHandler`'s contract exactly (the
acknowledged offset advances by each chunk) so the real endpoint and client run unchanged.
"""

from __future__ import annotations

from hardware.messages import Status
from hardware.protocol import EcuInfo
from uptane.errors import BadLength, ProtocolViolation


class SinkHandler:
    """Receives an image into nowhere; ``received`` counts the image bytes."""

    def __init__(self, slot_size: int = 1 << 30) -> None:
        self.info = EcuInfo("ecu-bench", "hw-bench", "partial", slot_size)
        self.filename: str | None = None
        self.total: int | None = None
        self.received = 0
        self.installed: str | None = None
        self.metadata_bytes = 0

    def hello_info(self) -> EcuInfo:
        return self.info

    def report(self, nonce: bytes) -> bytes:
        return b"report:" + nonce

    def put_time(self, time: int | bytes, token: bytes | None) -> None:
        pass

    def put_metadata(self, repository: str, role: str, encoding: str, data: bytes) -> None:
        self.metadata_bytes += len(data)

    def put_image_chunk(self, filename: str, total: int, offset: int, chunk: bytes) -> None:
        if offset == 0:
            self.filename, self.total, self.received = filename, total, 0
        if offset != self.received or filename != self.filename:
            raise ProtocolViolation(f"offset {offset}, have {self.received}")
        self.received += len(chunk)

    def install(self, filename: str | None) -> None:
        if self.total is None or self.received != self.total:
            raise BadLength("image incomplete")
        self.installed = self.filename

    def status(self) -> Status:
        state = "ready" if self.total is not None and self.received == self.total else "idle"
        return Status(
            state=state,
            image_filename=self.filename,
            image_total=self.total,
            image_offset=self.received,
            installed=self.installed,
        )
