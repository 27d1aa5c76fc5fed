"""Figure 6: CAN frames sent for a 1 MiB image over ISO-TP, against the theoretical
minimum, on classic CAN (8-byte frames) and CAN FD (64-byte frames).

The real link stack on python-can's ``virtual`` bus in one process:
:class:`hardware.client.LinkClient` (the Primary) over :class:`hardware.can_link.
CanTransport`, and :func:`hardware.server.serve` with a :class:`hardware.protocol.
SecondaryEndpoint` over a second ``CanTransport`` (constrained Secondary limits, default
block size), answering for a :class:`bench.linkkit.SinkHandler`. A third bus handle on the
same channel sniffs every frame. Only the ``PUT_IMAGE`` exchanges are counted (the
handshake runs first).

The theoretical minimum is ``ceil(image bytes / bytes per consecutive frame)``: 7 on classic
CAN, 63 on CAN FD, i.e. every frame full of image bytes and nothing else. The figure counts
the frames the sender (the Primary) puts on the bus: first and consecutive frames of each
``PUT_IMAGE`` PDU and its flow-control frames for the replies. The Secondary's frames (its
flow control every block and its ``ACK`` replies) are given in ``details``, with the ratio
of every frame on the bus, which includes them.
"""

from __future__ import annotations

import itertools
import random
import threading
from typing import Any

from bench.common import Figure
from bench.linkkit import SinkHandler

TITLE = "ISO-TP frames sent for a {size} image vs the theoretical minimum, {kind}"
GOAL = "frames / minimum ≤ 1.02"
PRIMARY_TX, SECONDARY_TX = 0x6F1, 0x6F2
_channels = itertools.count()


def measure(size: int, fd: bool) -> dict[str, Any]:
    import can

    from hardware.can_link import CanTransport
    from hardware.client import LinkClient
    from hardware.protocol import SecondaryEndpoint
    from hardware.server import serve
    from uptane.limits import CONSTRAINED, PRIMARY

    channel = f"uptane-bench-{next(_channels)}"
    buses = [can.Bus(interface="virtual", channel=channel, fd=fd) for _ in range(3)]
    sec_bus, pri_bus, sniffer = buses
    sec = CanTransport(sec_bus, txid=SECONDARY_TX, rxid=PRIMARY_TX, fd=fd, limits=CONSTRAINED)
    pri = CanTransport(pri_bus, txid=PRIMARY_TX, rxid=SECONDARY_TX, fd=fd, limits=PRIMARY)
    handler = SinkHandler()
    endpoint = SecondaryEndpoint(handler, CONSTRAINED, max_frame=sec.max_frame)
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(sec, endpoint, stop), daemon=True)
    thread.start()
    counts = {PRIMARY_TX: 0, SECONDARY_TX: 0}
    counting = threading.Event()
    done = threading.Event()

    def sniff() -> None:
        while not done.is_set():
            msg = sniffer.recv(0.05)
            if msg is not None and counting.is_set():
                counts[msg.arbitration_id] = counts.get(msg.arbitration_id, 0) + 1

    sniffing = threading.Thread(target=sniff, daemon=True)
    sniffing.start()
    image = random.Random(6).randbytes(size)
    client = LinkClient(pri, PRIMARY, timeout=5.0)
    try:
        client.hello()
        chunk = client.endpoint.chunk_size()
        counting.set()
        client.put_image("fw.bin", image, size, resume=False)
        # the last ACK's frames are on the bus once put_image returns; let the sniffer drain
        while True:
            before = sum(counts.values())
            threading.Event().wait(0.2)
            if sum(counts.values()) == before:
                break
        counting.clear()
        assert handler.received == size
    finally:
        done.set()
        sniffing.join(2)
        stop.set()
        thread.join(5)
        sec.close()
        pri.close()
        for b in buses:
            b.shutdown()
    per_frame = 63 if fd else 7
    minimum = -(-size // per_frame)
    return {
        "primary": counts[PRIMARY_TX],
        "secondary": counts[SECONDARY_TX],
        "minimum": minimum,
        "chunk": chunk,
        "messages": -(-size // chunk),
    }


def run(smoke: bool = False) -> list[Figure]:
    size = 16 * 1024 if smoke else 1 << 20
    label = f"{size >> 10} KiB" if size < (1 << 20) else f"{size >> 20} MiB"
    out = []
    for fd, kind, name in ((False, "classic CAN", "classic"), (True, "CAN FD", "fd")):
        try:
            m = measure(size, fd)
        except ImportError as e:
            from bench.common import not_yet

            out.append(
                not_yet(f"isotp_frames_{name}", TITLE.format(size=label, kind=kind), GOAL, str(e))
            )
            continue
        ratio = m["primary"] / m["minimum"]
        total = m["primary"] + m["secondary"]
        out.append(
            Figure(
                f"isotp_frames_{name}",
                TITLE.format(size=label, kind=kind),
                GOAL,
                value=float(m["primary"]),
                reference=float(m["minimum"]),
                ratio=ratio,
                met=ratio <= 1.02,
                unit="frames sent by the Primary",
                reference_unit=f"frames = ceil(bytes / {63 if fd else 7})",
                notes=(
                    f"{m['messages']} PUT_IMAGE PDUs of ≤ {m['chunk']} image bytes "
                    f"(constrained Secondary: 8 KiB link messages), ISO-TP block size 8. "
                    f"Every frame on the bus, the Secondary's flow control and ACKs included: "
                    f"{total} = {total / m['minimum']:.3f} × the minimum."
                ),
                details={
                    "secondary_frames": m["secondary"],
                    "all_frames": total,
                    "all_frames_ratio": round(total / m["minimum"], 4),
                },
            )
        )
    return out
