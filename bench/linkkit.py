"""What the link benchmarks share (figures 5 and 6).

- :class:`SinkHandler`: a Secondary that acknowledges and counts what arrives and keeps
  nothing, so a figure can measure the link alone (framing, flow control, request/reply)
  and not the agent. It follows :class:`hardware.protocol.SecondaryHandler`'s contract
  exactly (the acknowledged offset advances by each chunk), so the real endpoint and
  client run unchanged.
- :class:`PacedPort`: a pty end that behaves like a UART at a nominal baud rate (a pty
  ignores the baud rate): what is written leaves at ``baud / 10`` bytes per second, and,
  optionally, what the other end wrote arrives no faster either (for a peer process that
  writes to its own end unpaced, such as ``uptane-secondary run``).
- :func:`secondary_process`: a real ``uptane-secondary run`` process, provisioned with
  ``uptane-secondary``'s own function, on the slave end of a pty, with Director metadata
  that assigns it an image.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hardware.fdport import FdPort
from hardware.messages import Status
from hardware.protocol import EcuInfo
from uptane.errors import BadLength, ProtocolViolation

ROOT = Path(__file__).resolve().parents[1]


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

    def time_nonce(self) -> bytes:
        return os.urandom(16)

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


class PacedPort(FdPort):
    """A :class:`hardware.fdport.FdPort` at ``baud`` (8N1: ``baud / 10`` bytes/s).

    Writes leave no faster than the line would carry them, in slices of about a
    millisecond, from a thread of their own (a UART's transmit FIFO, so ``write`` does not
    block the protocol). With ``pace_reads``, a second thread takes what the other end
    wrote as soon as it is there and hands it to :meth:`read` only once the line could
    have carried it: each piece is due ``len / rate`` seconds after the previous one, or
    after it was written if the line was idle. That stands for the pacing of a peer that
    writes to its end of the pty unpaced. Each direction is paced on its own, as on a
    full-duplex UART.
    """

    def __init__(
        self, fd: int, baud: int, timeout: float = 0.005, *, pace_reads: bool = False
    ) -> None:
        super().__init__(fd, timeout)
        self.rate = baud / 10.0
        self.slice = max(1, int(self.rate / 1000))  # about a millisecond of line time
        self._queue: deque[bytes] = deque()
        self._pending = 0  # bytes written and not yet out
        self._cv = threading.Condition()
        self._closed = False
        self.sent = 0
        self._rx: deque[tuple[float, bytes]] | None = deque() if pace_reads else None
        self._rx_cv = threading.Condition()
        threads = [self._drain] + ([self._receive] if pace_reads else [])
        self._threads = [threading.Thread(target=t, daemon=True) for t in threads]
        for t in self._threads:
            t.start()

    def write(self, data: bytes) -> int:
        with self._cv:
            self._queue.append(bytes(data))
            self._pending += len(data)
            self._cv.notify_all()
        return len(data)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything written has left (as pyserial's ``flush``), at most
        ``timeout`` seconds."""
        end = time.perf_counter() + timeout
        with self._cv:
            while self._pending and not self._closed:
                left = end - time.perf_counter()
                if left <= 0:
                    return
                self._cv.wait(left)

    def _drain(self) -> None:
        due = time.perf_counter()
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                data = self._queue.popleft()
            due = max(due, time.perf_counter())  # an idle line does not bank credit
            view = memoryview(data)
            while view:
                piece, view = view[: self.slice], view[self.slice :]
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                out = piece
                while out:
                    n = os.write(self.fd, out)
                    out = out[n:]
                self.sent += len(piece)
                due += len(piece) / self.rate  # the last bit of this piece leaves here
            with self._cv:
                self._pending -= len(data)
                self._cv.notify_all()

    def _receive(self) -> None:
        """Take what arrives, each piece stamped with when the line would deliver it."""
        assert self._rx is not None
        due = time.perf_counter()
        while not self._closed:
            if not select.select([self.fd], [], [], 0.05)[0]:
                continue
            try:
                data = os.read(self.fd, self.slice)
            except OSError:  # the other end hung up
                return
            if not data:
                return
            due = max(due, time.perf_counter()) + len(data) / self.rate
            with self._rx_cv:
                self._rx.append((due, data))
                self._rx_cv.notify()

    @property
    def in_waiting(self) -> int:
        if self._rx is None:
            return super().in_waiting
        with self._rx_cv:
            return 1 if self._rx and self._rx[0][0] <= time.perf_counter() else 0

    def read(self, size: int = 1) -> bytes:
        """What has arrived by now (paced reads), waiting up to ``timeout`` for it."""
        if self._rx is None:
            return super().read(size)
        end = time.perf_counter() + (self.timeout or 0)
        out = bytearray()
        with self._rx_cv:
            while True:
                now = time.perf_counter()
                while self._rx and self._rx[0][0] <= now and len(out) < max(size, 4096):
                    out += self._rx.popleft()[1]
                if out or now >= end:
                    return bytes(out)
                head = self._rx[0][0] if self._rx else end
                self._rx_cv.wait(max(0.0, min(head, end) - now))

    def close(self) -> None:
        """Let what was written leave (the last acknowledgement above all: a peer still
        waiting for it would retransmit), then stop both threads and close the fd."""
        self.flush()
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        for t in self._threads:
            t.join(2)
        super().close()


# --- a real Secondary on a pty ---------------------------------------------------------------

VIN, ECU, HW = "VIN-BENCH-LINK", "ecu-bench-link", "hw-bench-link"


@dataclass
class EcuProcess:
    """A running ``uptane-secondary run`` and what a Primary needs to update it."""

    master: int
    proc: subprocess.Popen[str]
    link_key: Any
    metadata: list[Any]
    image_name: str
    config: Any


def _director(image: bytes, name: str, work: Path) -> tuple[bytes, list[Any]]:
    """A Director repository (DER) assigning ``image`` to the bench ECU: its root, and
    the metadata files the bench tool sends (every root version and the targets)."""
    from bench.repos import now
    from hardware.bench import load_metadata
    from uptane.keys import PrivateKey
    from uptane.metadata import DER, TargetFile
    from uptane.repository import RepositoryBuilder

    roles = ("root", "targets", "snapshot", "timestamp")
    builder = RepositoryBuilder(
        "director",
        {r: [PrivateKey.generate()] for r in roles},  # type: ignore[misc]
        now(),
        vehicle_id=VIN,
        encodings=(DER,),
    )
    builder.add_target(
        TargetFile.from_data(
            name,
            image,
            ("sha256", "sha512"),
            hardware_ids=[HW],
            release_counter=1,
            ecu_ids={ECU: HW},
        )
    )
    builder.publish(now())
    meta = work / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    for i, entry in enumerate(builder.root_history, start=1):
        (meta / f"{i}.root.der").write_bytes(entry[DER])
    (meta / "targets.der").write_bytes(builder.files[DER]["targets"])
    return builder.trusted_root(DER), load_metadata(meta)


def _script() -> list[str]:
    """The ``uptane-secondary`` console script beside this interpreter, as users run it."""
    script = Path(sys.executable).with_name("uptane-secondary")
    return [str(script)] if script.exists() else [sys.executable, "-m", "secondary"]


@contextlib.contextmanager
def secondary_process(work: Path, image: bytes, baud: int, max_frame: int) -> Iterator[EcuProcess]:
    """Provision a Secondary in ``work`` (partial verification, constrained limits, a link
    key, an A/B flash simulator in files, ``[link]`` on the slave end of a new pty at
    ``baud`` with ``max_frame``), start ``uptane-secondary run`` on it and wait for its
    ready line; yields the pty's master end (the caller dups it for its own port) and what
    to send."""
    from secondary.cli import provision
    from secondary.config import LinkConfig, SecondaryConfig

    name = "fw/bench.bin"
    root, metadata = _director(image, name, work)
    master, slave = os.openpty()
    try:
        provision(
            work / "ecu",
            ecu_serial=ECU,
            hardware_id=HW,
            director_root=root,
            vehicle_id=VIN,
            slot_size=max(64 * 1024, -(-len(image) // 4096) * 4096),
            link=LinkConfig(port=os.ttyname(slave), baudrate=baud, max_frame=max_frame),
        )
        cfg = SecondaryConfig.load(work / "ecu" / "secondary.toml")
        out = work / "secondary.out"
        with out.open("w") as stdout:
            proc = subprocess.Popen(
                [*_script(), "run", "--config", str(cfg.path)],
                cwd=ROOT,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                text=True,
            )
        try:
            _ready(proc, out)
            yield EcuProcess(master, proc, cfg.load_link_key(), metadata, name, cfg)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        os.close(slave)
        os.close(master)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _ready(proc: subprocess.Popen[str], out: Path, timeout: float = 30.0) -> None:
    """Wait for the ``ready ECU slot=...`` line ``uptane-secondary run`` prints."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(line.startswith("ready ") for line in out.read_text().splitlines()):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    tail = out.read_text()[-2000:]
    raise RuntimeError(f"uptane-secondary run did not start (exit code {proc.poll()}): {tail}")
