"""The whole link over a real pty: LinkClient <-> serve() through SerialTransport, in two
threads and with the Secondary in a separate process; faults injected on the wire."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from hw_support import FdPort, MemoryHandler

from hardware.client import LinkClient
from hardware.protocol import SecondaryEndpoint
from hardware.serial_link import SerialTransport
from hardware.server import serve
from uptane.errors import (
    BadLength,
    DropRequestAttack,
    EndlessDataAttack,
    LinkTimeout,
    UptaneError,
)
from uptane.limits import CONSTRAINED, PRIMARY

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


class FaultyPort:
    """Wraps a port; damages what is written at a byte error rate, or drops it all."""

    def __init__(self, port, rate: float = 0.0, seed: int = 0) -> None:
        self.port = port
        self.rate = rate
        self.rng = random.Random(seed)
        self.dead = False
        self.written = 0

    @property
    def timeout(self):
        return self.port.timeout

    @timeout.setter
    def timeout(self, value) -> None:
        self.port.timeout = value

    @property
    def in_waiting(self) -> int:
        return self.port.in_waiting

    def read(self, size: int = 1) -> bytes:
        data = self.port.read(size)
        return b"" if self.dead else data

    def write(self, data: bytes) -> int:
        self.written += len(data)
        if self.dead:
            return len(data)
        out = bytearray()
        for b in data:
            if self.rng.random() >= self.rate:
                out.append(b)
                continue
            kind = self.rng.randrange(4)
            if kind == 0:
                out.append(b ^ (1 << self.rng.randrange(8)))
            elif kind == 2:
                out += bytes((b, b))
            elif kind == 3:
                break
        self.port.write(bytes(out))
        return len(data)

    def close(self) -> None:
        self.port.close()


class PtyLink:
    """A pty: the Primary on the master fd, the Secondary on the slave through pyserial."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def pty_link() -> Iterator[PtyLink]:
    link = PtyLink()
    yield link
    link.close()


class SecondaryThread:
    """serve() in a thread over pyserial on the pty's slave side."""

    def __init__(self, path: str, *, rate: float = 0.0, limits=CONSTRAINED, max_frame=512):
        self.handler = MemoryHandler(limits=limits)
        self.port = FaultyPort(serial.Serial(path, timeout=0.005), rate, seed=99)
        self.transport = SerialTransport(
            self.port, max_frame=max_frame, ack_timeout=0.03, limits=limits
        )
        self.endpoint = SecondaryEndpoint(self.handler, limits, max_frame=max_frame)
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=serve, args=(self.transport, self.endpoint, self.stop), daemon=True
        )

    def __enter__(self) -> SecondaryThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.transport.close()


def make_client(pty_link: PtyLink, *, rate: float = 0.0, seed: int = 1, **kw) -> LinkClient:
    port = FaultyPort(FdPort(os.dup(pty_link.master)), rate, seed)
    transport = SerialTransport(port, max_frame=1024, ack_timeout=0.03, retries=20)
    kw.setdefault("timeout", 1.0)
    return LinkClient(transport, PRIMARY, **kw)


def test_full_session_over_a_pty(pty_link: PtyLink) -> None:
    image = random.Random(5).randbytes(50_000)
    metadata = random.Random(6).randbytes(12_000)
    progress: list[tuple[int, int]] = []
    with SecondaryThread(pty_link.path) as sec, make_client(pty_link) as client:
        info = client.hello()
        assert (info.ecu_serial, info.hardware_id, info.mode) == ("ecu-1", "hw-a", "partial")
        assert info.max_frame == 512  # min(1024 offered, 512 accepted)
        assert client.transport.link.frame_size == 512
        assert client.get_report(b"nonce-1") == b"report:ecu-1:nonce-1"
        client.put_time(1_790_000_000, b"token")
        client.put_metadata("targets", "der", metadata, progress=lambda d, t: None)
        client.put_image("fw.bin", image, len(image), progress=lambda d, t: progress.append((d, t)))
        status = client.install("fw.bin")
        assert status.state == "installed" and status.installed == "fw.bin"
    assert sec.handler.metadata[("director", "targets", "der")] == metadata
    assert bytes(sec.handler.image) == image
    assert sec.handler.time == 1_790_000_000
    assert progress[-1] == (len(image), len(image))
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)


def test_secondary_errors_arrive_as_named_errors(pty_link: PtyLink) -> None:
    with SecondaryThread(pty_link.path), make_client(pty_link) as client:
        with pytest.raises(BadLength):
            client.install()
        too_big = CONSTRAINED.bytes_for_role("root") + 1
        with pytest.raises(EndlessDataAttack):
            client.put_metadata("root", "der", b"r" * too_big)
        client.status()  # the link is still fine


@pytest.mark.parametrize("seed", [1, 2])
def test_faulty_pty_transfer_is_byte_exact_or_fails_clean(pty_link: PtyLink, seed: int) -> None:
    image = random.Random(seed).randbytes(30_000)
    with (
        SecondaryThread(pty_link.path, rate=1e-3) as sec,
        make_client(pty_link, rate=1e-3, seed=seed) as client,
    ):
        try:
            client.put_image("fw.bin", image, len(image))
            done = True
        except (LinkTimeout, DropRequestAttack):
            done = False
        except UptaneError as e:  # any other failure must still be a named error
            pytest.fail(f"unexpected {e!r}")
        link = client.transport.link
    held = bytes(sec.handler.image)
    assert held == image[: len(held)]
    if done:
        assert held == image
        assert link.retransmits + sec.transport.link.retransmits > 0


def test_interrupted_image_resumes_at_the_acknowledged_offset(pty_link: PtyLink) -> None:
    image = random.Random(7).randbytes(60_000)
    with SecondaryThread(pty_link.path) as sec:
        client = make_client(pty_link, timeout=0.2, retries=1)
        port = client.transport.port

        def cut(done: int, total: int) -> None:
            if done >= 20_000:
                port.dead = True  # the cable is pulled

        with pytest.raises(DropRequestAttack):
            client.put_image("fw.bin", image, len(image), progress=cut)
        client.close()
        acked = sec.handler.status().image_offset
        assert 20_000 <= acked < len(image)
        chunks_before = sec.handler.chunks

        with make_client(pty_link) as again:
            sent_from: list[int] = []
            start = again.put_image(
                "fw.bin", image, len(image), progress=lambda d, t: sent_from.append(d)
            )
        assert start == acked
        assert bytes(sec.handler.image) == image
        chunk = again.endpoint.chunk_size()
        assert sec.handler.chunks - chunks_before == -(-(len(image) - acked) // chunk)


def test_dead_secondary_raises_drop_request_without_hanging(pty_link: PtyLink) -> None:
    with make_client(pty_link, timeout=0.1, retries=2) as client:
        client.transport.link.retries = 3
        with pytest.raises(DropRequestAttack):
            client.hello()


SECONDARY_PROCESS = """
import sys, threading
from hw_support import MemoryHandler
from hardware.protocol import SecondaryEndpoint
from hardware.serial_link import SerialTransport
from hardware.server import serve
from uptane.limits import CONSTRAINED

transport = SerialTransport(sys.argv[1], max_frame=256, ack_timeout=0.05, limits=CONSTRAINED)
handler = MemoryHandler(ecu_serial="ecu-proc", mode="full")
endpoint = SecondaryEndpoint(handler, CONSTRAINED, max_frame=256)
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
serve(transport, endpoint, stop)
print(handler.installed, len(handler.image), flush=True)
"""


def test_secondary_in_another_process(pty_link: PtyLink) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
    proc = subprocess.Popen(
        [sys.executable, "-c", SECONDARY_PROCESS, pty_link.path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        image = random.Random(3).randbytes(30_000)
        with make_client(pty_link, timeout=2.0) as client:
            info = client.hello()
            assert info.ecu_serial == "ecu-proc" and info.mode == "full"
            assert info.max_frame == 256
            client.put_image("proc.bin", image, len(image))
            assert client.install().installed == "proc.bin"
        out, _ = proc.communicate("", timeout=20)
        assert out.split() == ["proc.bin", str(len(image))]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_peer_that_stops_reading_does_not_hang_the_writer(pty_link: PtyLink) -> None:
    # nobody reads the master side: the pty buffer fills with retransmissions
    transport = SerialTransport(
        pty_link.path, max_frame=4096, ack_timeout=0.0, retries=100_000, write_timeout=0.2
    )
    try:
        transport.negotiate(4096)
        with pytest.raises(LinkTimeout):
            transport.send(b"x" * 60_000, timeout=30)
    finally:
        transport.close()
