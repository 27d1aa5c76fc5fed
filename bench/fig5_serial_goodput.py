"""Figure 5: image goodput over a serial link against the line rate, at 115,200 and
1,000,000 baud.

A pty carries the bytes; a pty ignores the baud rate, so each end's writes go through a
:class:`PacedPort` that lets bytes out no faster than the line would: ``baud / 10`` bytes
per second (8N1: start bit, 8 data bits, stop bit), in slices of about a millisecond, on
a thread of its own (a UART's transmit FIFO, so ``write`` does not block the protocol).
Each direction is paced on its own, as on a full-duplex UART.

The real stack runs on both ends: :class:`hardware.client.LinkClient` over
:class:`hardware.serial_link.SerialTransport` on the master side (the Primary), and
:func:`hardware.server.serve` with a :class:`hardware.protocol.SecondaryEndpoint` over a
second ``SerialTransport`` on the slave side, in a separate process (the Secondary),
answering for a :class:`bench.linkkit.SinkHandler` (constrained limits). Both offer the
link's largest frame (:data:`hardware.serial_link.MAX_FRAME`). The figure is image bytes
over the time ``put_image`` takes, divided by the line rate (≥ 0.95).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import threading
import time
from collections import deque
from typing import Any

from bench.common import Figure
from hardware.fdport import FdPort

#: SerialTransport's default ``max_frame``
DEFAULT_MAX_FRAME = 1024
TITLE = "Serial goodput over a software-paced pty at {baud:,} baud vs the line rate"
GOAL = "goodput / line rate ≥ 0.95"


class PacedPort(FdPort):
    """A :class:`hardware.fdport.FdPort` whose writes leave at ``baud / 10`` bytes/s."""

    def __init__(self, fd: int, baud: int, timeout: float = 0.005) -> None:
        super().__init__(fd, timeout)
        self.rate = baud / 10.0
        self.slice = max(1, int(self.rate / 1000))  # about a millisecond of line time
        self._queue: deque[bytes] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self.sent = 0
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> int:
        with self._cv:
            self._queue.append(bytes(data))
            self._cv.notify()
        return len(data)

    def _drain(self) -> None:
        due = time.perf_counter()
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                data = self._queue.popleft()
            now = time.perf_counter()
            due = max(due, now)  # an idle line does not bank credit
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

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(2)
        super().close()


def _secondary(fd: int, baud: int, frame: int, stop: Any, ready: Any) -> None:
    from bench.linkkit import SinkHandler
    from hardware.protocol import SecondaryEndpoint
    from hardware.serial_link import SerialTransport
    from hardware.server import serve
    from uptane.limits import CONSTRAINED

    port = PacedPort(fd, baud)
    transport = SerialTransport(port, baudrate=baud, max_frame=frame, limits=CONSTRAINED)
    endpoint = SecondaryEndpoint(SinkHandler(), CONSTRAINED, max_frame=frame)
    ready.set()
    try:
        serve(transport, endpoint, stop, poll=0.05)
    finally:
        transport.close()


def measure(baud: int, size: int, frame: int | None = None) -> dict[str, Any]:
    from hardware.client import LinkClient
    from hardware.serial_link import MAX_FRAME, SerialTransport
    from uptane.limits import PRIMARY

    frame = frame or MAX_FRAME
    master, slave = os.openpty()
    ctx = mp.get_context("fork")
    stop, ready = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_secondary, args=(slave, baud, frame, stop, ready), daemon=True)
    proc.start()
    os.close(slave)
    ready.wait(10)
    port = PacedPort(master, baud)
    transport = SerialTransport(port, baudrate=baud, max_frame=frame)
    client = LinkClient(transport, PRIMARY, timeout=5.0)
    image = random.Random(5).randbytes(size)
    try:
        client.hello()
        frame = transport.link.frame_size
        chunk = client.endpoint.chunk_size()
        t0 = time.perf_counter()
        client.put_image("fw.bin", image, size, resume=False)
        elapsed = time.perf_counter() - t0
        retransmits = transport.link.retransmits
    finally:
        stop.set()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
        transport.close()
    return {
        "elapsed": elapsed,
        "goodput": size / elapsed,
        "line_rate": baud / 10.0,
        "frame": frame,
        "chunk": chunk,
        "retransmits": retransmits,
    }


def run(smoke: bool = False) -> list[Figure]:
    plan = (
        ((115_200, 8 * 1024), (1_000_000, 64 * 1024))
        if smoke
        else ((115_200, 128 * 1024), (1_000_000, 1024 * 1024))
    )
    out = []
    for baud, size in plan:
        m = measure(baud, size)
        # the same link with SerialTransport's default frame size, a shorter image
        d = measure(baud, max(4096, size // 4), DEFAULT_MAX_FRAME)
        m["default_frame"] = DEFAULT_MAX_FRAME
        m["default_frame_ratio"] = d["goodput"] / d["line_rate"]
        ratio = m["goodput"] / m["line_rate"]
        out.append(
            Figure(
                f"serial_goodput_{baud}",
                TITLE.format(baud=baud),
                GOAL,
                value=m["goodput"] / 1024,
                reference=m["line_rate"] / 1024,
                ratio=ratio,
                met=ratio >= 0.95,
                unit="KiB/s of image",
                reference_unit="KiB/s = baud / 10 (8N1)",
                notes=(
                    f"{size >> 10} KiB image in {m['elapsed']:.2f} s; frames of "
                    f"{m['frame']} bytes, PUT_IMAGE chunks of {m['chunk']} bytes; "
                    f"{m['retransmits']} retransmits. With SerialTransport's default "
                    f"{DEFAULT_MAX_FRAME}-byte frames: {m['default_frame_ratio']:.3f}."
                ),
                details={k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()},
            )
        )
    return out
