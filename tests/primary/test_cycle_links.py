"""The cycle over the real link transports: one Secondary on a serial line (a pty, with
pyserial on the Primary's side) and one on CAN (ISO-TP on python-can's virtual bus, in
this process), both configured in the Primary's TOML file."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime

import can
from cycle_support import VIN, backend_and_vehicle
from ecu_support import FdPort, make_agent

from hardware.can_link import CanTransport
from hardware.serial_link import SerialTransport
from hardware.server import serve

PRI_TX, SEC_TX = 0x6E0, 0x6E8


def test_5_4_2_cycle_over_serial_and_can_links(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    master, slave = os.openpty()
    channel = f"uptane-primary-{os.getpid()}"
    links = {
        "brk-1": f'{{ type = "serial", port = "{os.ttyname(slave)}", baudrate = 115200 }}',
        "tcu-1": (
            f'{{ type = "can", channel = "{channel}", interface = "virtual", '
            f"tx_id = {PRI_TX}, rx_id = {SEC_TX} }}"
        ),
    }
    stop = threading.Event()
    threads: list[threading.Thread] = []
    with backend_and_vehicle(tmp_path, now, links=links) as (backend, car):
        # the Secondaries' ends: the pty master, and a second handle on the virtual bus
        brk = make_agent("brk-1", "brk-v1", car.ecus["brk-1"].directory)
        serial_end = SerialTransport(FdPort(master), limits=brk.limits)
        tcu = make_agent("tcu-1", "tcu-v5", car.ecus["tcu-1"].directory)
        bus = can.Bus(interface="virtual", channel=channel)
        can_end = CanTransport(bus, txid=SEC_TX, rxid=PRI_TX, limits=tcu.limits)
        for agent, transport in ((brk, serial_end), (tcu, can_end)):
            car.attach(agent.ecu_serial, agent)
            t = threading.Thread(
                target=serve,
                args=(transport, agent.endpoint(max_frame=transport.max_frame), stop),
                daemon=True,
            )
            t.start()
            threads.append(t)
        try:
            backend.assign(VIN, [("brk-1", "brakes/fw-3.bin"), ("tcu-1", "tcu/tcu-5.bin")])
            result = car.cycle()
            assert result.error is None, "\n".join(car.lines)
            assert result.installed == {"brk-1": "brakes/fw-3.bin", "tcu-1": "tcu/tcu-5.bin"}
            assert car.installed("brk-1") == "brakes/fw-3.bin"
            assert car.installed("tcu-1") == "tcu/tcu-5.bin"
        finally:
            stop.set()
            for t in threads:
                t.join(5)
            can_end.close()
            bus.shutdown()
            serial_end.close()
            os.close(slave)


def test_link_refusals_are_the_links_never_the_ecus_verdict() -> None:
    """What may come in an unauthenticated REFUSAL (SessionRequired, a key mismatch) makes
    a Secondary unreachable for the cycle, never a refusal of its update: a peer without
    the link key cannot make the Primary drop an update (docs/link-protocol.md)."""
    from primary.secondaries import is_unreachable
    from uptane.errors import BadHash, LinkAuthentication, SessionRequired

    assert is_unreachable(SessionRequired("send HELLO first"))
    assert is_unreachable(LinkAuthentication("keys differ"))
    assert not is_unreachable(BadHash("the ECU's verdict"))
