"""Link messages over ISO-TP on python-can's virtual bus (one process): classic CAN and
CAN FD, payloads over 4095 bytes, lost frames, a dead peer."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Iterator

import can
import pytest
from hw_support import MemoryHandler

from hardware.can_link import CanTransport
from hardware.client import LinkClient
from hardware.protocol import SecondaryEndpoint
from hardware.server import serve
from uptane.errors import DropRequestAttack, EndlessDataAttack, LinkError, UptaneError
from uptane.limits import CONSTRAINED, PRIMARY

_channels = itertools.count()

PRIMARY_TX, SECONDARY_TX = 0x6F1, 0x6F2


class LossyBus(can.BusABC):
    """A virtual bus that loses each frame it sends with probability ``loss``."""

    def __init__(self, channel: str, loss: float, seed: int, fd: bool) -> None:
        self.inner = can.Bus(interface="virtual", channel=channel, fd=fd)
        self.loss = loss
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.lost = 0
        super().__init__(channel=channel)

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        with self.lock:
            drop = self.rng.random() < self.loss
        if drop:
            self.lost += 1
            return
        self.inner.send(msg, timeout)

    def _recv_internal(self, timeout: float | None):
        return self.inner.recv(timeout), False

    def shutdown(self) -> None:
        self.inner.shutdown()
        super().shutdown()


class CanPair:
    """A Secondary serving on one bus handle and a Primary client on another."""

    def __init__(self, *, fd: bool, loss: float = 0.0, sec_limits=PRIMARY, block_size=8):
        channel = f"uptane-hw-{next(_channels)}"
        if loss:
            self.sec_bus: can.BusABC = LossyBus(channel, loss, 11, fd)
            self.pri_bus: can.BusABC = LossyBus(channel, loss, 12, fd)
        else:
            self.sec_bus = can.Bus(interface="virtual", channel=channel, fd=fd)
            self.pri_bus = can.Bus(interface="virtual", channel=channel, fd=fd)
        timeouts = {"fc_timeout": 0.3, "cf_timeout": 0.3}
        self.sec_transport = CanTransport(
            self.sec_bus,
            txid=SECONDARY_TX,
            rxid=PRIMARY_TX,
            fd=fd,
            limits=sec_limits,
            block_size=block_size,
            **timeouts,
        )
        self.pri_transport = CanTransport(
            self.pri_bus,
            txid=PRIMARY_TX,
            rxid=SECONDARY_TX,
            fd=fd,
            block_size=block_size,
            **timeouts,
        )
        self.handler = MemoryHandler(slot_size=1 << 22)
        self.endpoint = SecondaryEndpoint(
            self.handler, sec_limits, max_frame=self.sec_transport.max_frame
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=serve, args=(self.sec_transport, self.endpoint, self.stop), daemon=True
        )
        self.thread.start()

    def client(self, **kw) -> LinkClient:
        kw.setdefault("timeout", 1.0)
        return LinkClient(self.pri_transport, PRIMARY, **kw)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sec_transport.close()
        self.pri_transport.close()
        self.sec_bus.shutdown()
        self.pri_bus.shutdown()


@pytest.fixture
def can_pair(request) -> Iterator[CanPair]:
    pair = CanPair(**request.param)
    yield pair
    pair.close()


@pytest.mark.parametrize(
    "can_pair",
    [{"fd": False}, {"fd": True}, {"fd": False, "block_size": 16}],
    indirect=True,
    ids=["classic", "fd", "classic-bs16"],
)
def test_full_session_over_can_with_large_payloads(can_pair: CanPair) -> None:
    image = random.Random(1).randbytes(150_000)
    metadata = random.Random(2).randbytes(9_000)
    client = can_pair.client()
    info = client.hello()
    assert info.ecu_serial == "ecu-1"
    chunk = client.endpoint.chunk_size()
    assert chunk > 4095  # every PUT is one ISO-TP PDU over 4095 bytes
    client.put_metadata("targets", "der", metadata, repository="image")
    client.put_image("fw.bin", image, len(image))
    assert client.install().installed == "fw.bin"
    assert bytes(can_pair.handler.image) == image
    assert can_pair.handler.metadata[("image", "targets", "der")] == metadata
    assert can_pair.handler.chunks == -(-len(image) // chunk)


@pytest.mark.parametrize(
    "can_pair", [{"fd": True, "loss": 0.004, "sec_limits": CONSTRAINED}], indirect=True, ids=["fd"]
)
def test_lost_can_frames_byte_exact_or_clean_failure(can_pair: CanPair) -> None:
    image = random.Random(3).randbytes(80_000)
    client = can_pair.client(timeout=0.4, retries=6, backoff=1.0)
    try:
        client.put_image("fw.bin", image, len(image))
        done = True
    except (DropRequestAttack, LinkError):
        done = False
    except UptaneError as e:
        pytest.fail(f"unexpected {e!r}")
    held = bytes(can_pair.handler.image)
    assert held == image[: len(held)]
    if done:
        assert held == image
    assert can_pair.sec_bus.lost + can_pair.pri_bus.lost > 0


def test_dead_can_peer_raises_drop_request_without_hanging() -> None:
    bus = can.Bus(interface="virtual", channel=f"uptane-hw-{next(_channels)}")
    transport = CanTransport(bus, txid=PRIMARY_TX, rxid=SECONDARY_TX, fc_timeout=0.1)
    try:
        client = LinkClient(transport, PRIMARY, timeout=0.1, retries=1, send_timeout=1.0)
        with pytest.raises(DropRequestAttack):
            client.hello()
    finally:
        transport.close()
        bus.shutdown()


def test_can_transport_checks_its_arguments() -> None:
    bus = can.Bus(interface="virtual", channel=f"uptane-hw-{next(_channels)}")
    try:
        with pytest.raises(ValueError):
            CanTransport(bus, txid=1, rxid=2, block_size=4)
        t = CanTransport(
            bus, txid=0x18DAF110, rxid=0x18DA10F1, extended_id=True, limits=CONSTRAINED
        )
        try:
            with pytest.raises(EndlessDataAttack):
                t.send(b"x" * (CONSTRAINED.link_message_bytes + 1), 0.1)
        finally:
            t.close()
    finally:
        bus.shutdown()


def test_shared_bus_through_a_notifier() -> None:
    channel = f"uptane-hw-{next(_channels)}"
    sec_bus = can.Bus(interface="virtual", channel=channel)
    pri_bus = can.Bus(interface="virtual", channel=channel)
    seen: list[can.Message] = []
    notifier = can.Notifier(sec_bus, [seen.append])  # another listener on the same bus
    sec = CanTransport(sec_bus, txid=SECONDARY_TX, rxid=PRIMARY_TX, notifier=notifier)
    pri = CanTransport(pri_bus, txid=PRIMARY_TX, rxid=SECONDARY_TX)
    handler = MemoryHandler()
    stop = threading.Event()
    thread = threading.Thread(
        target=serve,
        args=(sec, SecondaryEndpoint(handler, PRIMARY, max_frame=sec.max_frame), stop),
        daemon=True,
    )
    thread.start()
    try:
        client = LinkClient(pri, PRIMARY, timeout=1.0)
        image = random.Random(4).randbytes(10_000)
        client.put_image("shared.bin", image, len(image))
        assert bytes(handler.image) == image
        assert any(msg.arbitration_id == PRIMARY_TX for msg in seen)
    finally:
        stop.set()
        thread.join(5)
        sec.close()
        pri.close()
        notifier.stop()
        sec_bus.shutdown()
        pri_bus.shutdown()
