"""serve() on a real pty when the port fails: a port that is gone for good (the other end
of the pty closed, the device node removed, as when a USB-serial adapter is unplugged)
makes serve() give up with a LinkError after a bounded number of retries with a growing
delay, logging once per retry; a port that fails a few times and then works again is
served on."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from pathlib import Path

import pytest
import serial
from hw_support import FdPort, MemoryHandler

from hardware.client import LinkClient
from hardware.protocol import SecondaryEndpoint
from hardware.serial_link import SerialTransport
from hardware.server import serve
from uptane.errors import LinkError
from uptane.limits import CONSTRAINED, PRIMARY

RETRY = {"max_failures": 4, "retry_delay": 0.01, "max_retry_delay": 0.04}


def run_serve(transport: SerialTransport, endpoint: SecondaryEndpoint, **kw) -> BaseException:
    """serve() in a thread (so a regression cannot hang the suite); returns what it
    raised."""
    stop = threading.Event()
    outcome: list[BaseException] = []

    def target() -> None:
        try:
            serve(transport, endpoint, stop, poll=0.02, **kw)
        except BaseException as e:  # handed to the test
            outcome.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    stop.set()
    thread.join(5)
    assert outcome, "serve() kept going on a port that is gone"
    return outcome[0]


@pytest.mark.parametrize("unplug", [False, True], ids=["pty-hangup", "device-link-removed"])
def test_serve_gives_up_when_the_port_is_gone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, unplug: bool
) -> None:
    master, slave = os.openpty()
    device = tmp_path / "ttyUSB-ecu"  # as /dev/serial/by-id/... names an adapter
    device.symlink_to(os.ttyname(slave))
    transport = SerialTransport(str(device), ack_timeout=0.03, limits=CONSTRAINED)
    os.close(slave)
    endpoint = SecondaryEndpoint(MemoryHandler(limits=CONSTRAINED), CONSTRAINED)
    try:
        os.close(master)  # the other end hangs up: every read is EIO
        if unplug:
            device.unlink()  # and udev removes the device's name
        assert not device.exists()
        caplog.set_level(logging.INFO, logger="hardware.server")
        error = run_serve(transport, endpoint, **RETRY)
    finally:
        with contextlib.suppress(OSError):
            transport.close()
    assert isinstance(error, LinkError)
    assert "giving up" in str(error) and "Input/output error" in str(error)
    assert isinstance(error.__cause__, LinkError)
    retries = [r for r in caplog.records if r.name == "hardware.server"]
    # one line per retry, not a tight loop of them
    assert len(retries) == RETRY["max_failures"]
    assert all("retrying in" in r.getMessage() for r in retries)


class FlakyPort:
    """Wraps a real port; its first ``failures`` reads fail with EIO, then it works."""

    def __init__(self, port, failures: int) -> None:
        self.port = port
        self.failures = failures

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
        if self.failures > 0:
            self.failures -= 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return self.port.read(size)

    def write(self, data: bytes) -> int:
        return self.port.write(data)

    def close(self) -> None:
        self.port.close()


def test_serve_recovers_from_transient_port_errors(caplog: pytest.LogCaptureFixture) -> None:
    master, slave = os.openpty()
    port = FlakyPort(serial.Serial(os.ttyname(slave), timeout=0.005), failures=3)
    os.close(slave)
    sec = SerialTransport(port, ack_timeout=0.03, limits=CONSTRAINED, max_frame=512)
    handler = MemoryHandler(limits=CONSTRAINED)
    endpoint = SecondaryEndpoint(handler, CONSTRAINED, max_frame=512)
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="hardware.server")
    thread = threading.Thread(
        target=serve, args=(sec, endpoint, stop), kwargs={"poll": 0.02, **RETRY}, daemon=True
    )
    thread.start()
    client = LinkClient(
        SerialTransport(FdPort(master), ack_timeout=0.03, retries=40), PRIMARY, timeout=1.0
    )
    try:
        image = bytes(range(256)) * 40
        assert client.hello().ecu_serial == "ecu-1"
        client.put_image("fw.bin", image, len(image))
        assert client.install("fw.bin").installed == "fw.bin"
        assert thread.is_alive()  # still serving
    finally:
        stop.set()
        thread.join(5)
        client.close()
        sec.close()
    assert bytes(handler.image) == image
    assert port.failures == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "hardware.server"]
    assert sum("retrying in" in m for m in messages) == 3
    assert any("recovered after 3 failure" in m for m in messages)
