"""Figure 5: image goodput into a real Secondary over a serial link, against the line rate,
at 115,200 and 1,000,000 baud.

The receiver is the Secondary as users run it: ``uptane-secondary run`` in its own process
(provisioned by ``uptane-secondary``'s own function: partial verification, the constrained
limits, a link key, an A/B flash simulator in files), its ``[link]`` a serial port at the
nominal baud rate: the slave end of a pty. The Primary's end is the real stack:
:class:`hardware.client.LinkClient` over :class:`hardware.serial_link.SerialTransport` on
the master end. A pty ignores the baud rate, so the master end is a
:class:`bench.linkkit.PacedPort`: what the Primary writes leaves at ``baud / 10`` bytes per
second (8N1: start bit, 8 data bits, stop bit), and what the Secondary writes (its link
acknowledgements and replies) reaches the Primary no faster either, each direction paced
on its own as on a full-duplex UART.

The Primary sends what ``uptane-flash install`` sends: the time, the Director's signed
metadata (every root version and the targets that assign the image to this ECU, DER),
then the image (random bytes, listed with its length, SHA-256 and SHA-512). The Secondary
verifies the metadata, then streams each chunk through its image verifier into the
inactive slot (with its resume checkpoints) before it acknowledges it. Both ends offer the
link's largest frame (:data:`hardware.serial_link.MAX_FRAME`, ``[link] max_frame``).
Figure: image bytes over the time ``put_image`` takes, divided by the line rate (≥ 0.95).
The install that follows (length and hashes checked, the slot read back, the boot record)
is timed apart and checked through the Secondary's new signed report.

Details: the link alone, the same image over the same stack, pacing and link key into
:class:`bench.linkkit.SinkHandler` (counts and drops the bytes) in a forked process, so
that the difference is the Secondary's own time per chunk, next to its process's CPU;
and a quarter of the image into the same Secondary with ``[link] max_frame``'s default
(1,024-byte frames).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Figure
from bench.linkkit import PacedPort, cpu_seconds, secondary_process

#: SerialTransport's and ``[link] max_frame``'s default
DEFAULT_MAX_FRAME = 1024
TITLE = "Serial goodput into uptane-secondary over a software-paced pty at {baud:,} baud"
GOAL = "goodput / line rate ≥ 0.95"


def measure_agent(baud: int, size: int, frame: int | None = None) -> dict[str, Any]:
    """A ``size``-byte image into a real ``uptane-secondary run`` at ``baud`` (frames of
    ``frame`` bytes on the Secondary's side, the link's largest on the Primary's)."""
    from hardware.bench import send_time
    from hardware.client import LinkClient
    from hardware.serial_link import MAX_FRAME, SerialTransport
    from uptane.limits import PRIMARY
    from uptane.manifest import decode_report
    from uptane.metadata import DER

    image = random.Random(5).randbytes(size)
    with (
        tempfile.TemporaryDirectory(prefix="bench-serial-") as tmp,
        secondary_process(Path(tmp), image, baud, frame or MAX_FRAME) as ecu,
    ):
        port = PacedPort(os.dup(ecu.master), baud, pace_reads=True)
        transport = SerialTransport(port, baudrate=baud, max_frame=MAX_FRAME)
        client = LinkClient(transport, PRIMARY, timeout=10.0, link_key=ecu.link_key)
        try:
            hello = client.hello()
            t0 = time.perf_counter()
            send_time(client)
            for f in ecu.metadata:
                client.put_metadata(f.role, f.encoding, f.data, repository=f.repository)
            c1, p1, t1 = cpu_seconds(ecu.proc.pid), time.process_time(), time.perf_counter()
            client.put_image(ecu.image_name, image, size, resume=False)
            t2, p2, c2 = time.perf_counter(), time.process_time(), cpu_seconds(ecu.proc.pid)
            status = client.install(ecu.image_name)
            t3 = time.perf_counter()
            nonce = secrets.token_bytes(16)
            report = decode_report(client.get_report(nonce), PRIMARY, DER)
            installed = report.signed.installed
            chunks = -(-size // client.endpoint.chunk_size())
            if status.installed != ecu.image_name or installed.length != size:
                raise RuntimeError(f"the Secondary did not install the image: {status}")
            out = {
                "elapsed": t2 - t1,
                "goodput": size / (t2 - t1),
                "line_rate": baud / 10.0,
                "frame": transport.link.frame_size,
                "chunk": client.endpoint.chunk_size(),
                "retransmits": transport.link.retransmits,
                "metadata_s": t1 - t0,
                "metadata_bytes": sum(len(f.data) for f in ecu.metadata),
                "install_s": t3 - t2,
                "mode": hello.mode,
                # CPU per chunk in the transfer: the Secondary's process, and this one (the
                # Primary's stack and both pacing threads)
                "secondary_cpu_ms_per_chunk": None
                if c1 is None or c2 is None
                else (c2 - c1) / chunks * 1e3,
                "primary_cpu_ms_per_chunk": (p2 - p1) / chunks * 1e3,
            }
        finally:
            client.close()
    return out


def _sink(fd: int, baud: int, frame: int, key: bytes, stop: Any, ready: Any) -> None:
    """The sink's end, as the Secondary's: its own port unpaced (the Primary's end paces
    what it writes), the same link key."""
    from bench.linkkit import SinkHandler
    from hardware.fdport import FdPort
    from hardware.protocol import SecondaryEndpoint
    from hardware.secure_link import LinkKey
    from hardware.serial_link import SerialTransport
    from hardware.server import serve
    from uptane.limits import CONSTRAINED

    transport = SerialTransport(FdPort(fd), baudrate=baud, max_frame=frame, limits=CONSTRAINED)
    endpoint = SecondaryEndpoint(SinkHandler(), CONSTRAINED, max_frame=frame, link_key=LinkKey(key))
    ready.set()
    try:
        serve(transport, endpoint, stop)
    finally:
        transport.close()


def measure_sink(baud: int, size: int, frame: int | None = None) -> dict[str, Any]:
    """The link alone: the same Primary stack, pacing and link key against a sink in a
    forked process (nothing verified or written)."""
    from hardware.client import LinkClient
    from hardware.secure_link import LinkKey
    from hardware.serial_link import MAX_FRAME, SerialTransport
    from uptane.limits import PRIMARY

    frame = frame or MAX_FRAME
    key = LinkKey.generate()
    master, slave = os.openpty()
    ctx = mp.get_context("fork")
    stop, ready = ctx.Event(), ctx.Event()
    args = (slave, baud, frame, key.raw, stop, ready)
    proc = ctx.Process(target=_sink, args=args, daemon=True)
    proc.start()
    ready.wait(10)
    port = PacedPort(master, baud, pace_reads=True)
    transport = SerialTransport(port, baudrate=baud, max_frame=frame)
    client = LinkClient(transport, PRIMARY, timeout=10.0, link_key=key)
    image = random.Random(5).randbytes(size)
    try:
        client.hello()
        t0 = time.perf_counter()
        client.put_image("fw.bin", image, size, resume=False)
        elapsed = time.perf_counter() - t0
    finally:
        client.close()
        stop.set()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
        os.close(slave)
    return {"elapsed": elapsed, "goodput": size / elapsed, "line_rate": baud / 10.0}


def _per_chunk_ms(agent: dict[str, Any], sink: dict[str, Any]) -> float:
    """How much longer a chunk takes into the Secondary than into the sink on the same
    paced line with the same link key: the Secondary's own time per chunk (the image
    verifier, the flash writes and the resume checkpoints, and waiting to be scheduled)."""
    return (1 / agent["goodput"] - 1 / sink["goodput"]) * agent["chunk"] * 1e3


def _figure(baud: int, size: int, m: dict[str, Any]) -> Figure:
    ratio = m["goodput"] / m["line_rate"]
    notes = (
        f"{size >> 10} KiB image into uptane-secondary run ({m['mode']} verification, link"
        f" key, flash simulator) in {m['elapsed']:.2f} s; frames of {m['frame']} bytes,"
        f" PUT_IMAGE chunks of {m['chunk']} bytes; {m['retransmits']} retransmits. Before it:"
        f" time and {m['metadata_bytes']:,} bytes of metadata in {m['metadata_s']:.2f} s;"
        f" after it the install in {m['install_s']:.2f} s."
    )
    if "sink_ratio" in m:
        notes += (
            f" The link alone (a sink, same pacing): {m['sink_ratio']:.3f}; the Secondary"
            f" adds {m['secondary_ms_per_chunk']:.1f} ms per chunk"
        )
        cpu = m.get("secondary_cpu_ms_per_chunk")
        notes += f" (its process's CPU: {cpu:.1f} ms per chunk)." if cpu is not None else "."
    if "default_frame_ratio" in m:
        notes += f" With {DEFAULT_MAX_FRAME}-byte frames: {m['default_frame_ratio']:.3f}."
    return Figure(
        f"serial_goodput_{baud}",
        TITLE.format(baud=baud),
        GOAL,
        value=m["goodput"] / 1024,
        reference=m["line_rate"] / 1024,
        ratio=ratio,
        met=ratio >= 0.95,
        unit="KiB/s of image",
        reference_unit="KiB/s = baud / 10 (8N1)",
        notes=notes,
        details={k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()},
    )


def run(smoke: bool = False, quick: bool = False) -> list[Figure]:
    """Each baud rate: the image into the Secondary; the same into the sink; with
    neither ``smoke`` nor ``quick``, a quarter of it into the Secondary with the default
    frame size too (``quick``: images of a quarter of the size)."""
    plan = (
        ((115_200, 8 * 1024), (1_000_000, 64 * 1024))
        if smoke
        else ((115_200, 128 * 1024), (1_000_000, 1024 * 1024))
    )
    out = []
    for baud, full in plan:
        size = full // 4 if quick else full
        m = measure_agent(baud, size)
        if not (smoke or quick):
            d = measure_agent(baud, size // 4, DEFAULT_MAX_FRAME)
            m["default_frame"] = DEFAULT_MAX_FRAME
            m["default_frame_ratio"] = d["goodput"] / d["line_rate"]
        sink = measure_sink(baud, size)
        m["sink_ratio"] = sink["goodput"] / sink["line_rate"]
        m["secondary_ms_per_chunk"] = _per_chunk_ms(m, sink)
        out.append(_figure(baud, size, m))
    return out
