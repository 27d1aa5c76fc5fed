"""Secondary agents for the Primary's tests, rebuilt from their directories (key, state,
flash) and served on a link; light imports, so the crash harness starts fast."""

from __future__ import annotations

import contextlib
import os
import select
from pathlib import Path

from hardware.flash import Flash
from hardware.store import AtomicStore
from primary.secondaries import InProcessSecondary, serve_inprocess
from secondary.agent import SecondaryAgent
from uptane.keys import PrivateKey
from uptane.metadata import DER


def make_agent(
    serial: str,
    hardware_id: str,
    directory: Path,
    mode: str = "partial",
    vin: str = "VIN-PRIMARY-1",
) -> SecondaryAgent:
    """A Secondary agent rebuilt from ``directory`` (key, state, flash), booted."""
    agent = SecondaryAgent(
        ecu_serial=serial,
        hardware_id=hardware_id,
        key=PrivateKey.from_pem((directory / "key.pem").read_bytes()),
        store=AtomicStore(directory / "state"),
        flash=Flash(directory / "flash", 1 << 20),
        mode=mode,
        vehicle_id=vin,
        encoding=DER,
    )
    agent.start()
    return agent


def boot_agent(
    serial: str,
    hardware_id: str,
    directory: Path,
    mode: str = "partial",
    vin: str = "VIN-PRIMARY-1",
) -> tuple[SecondaryAgent, InProcessSecondary]:
    """:func:`make_agent`, served on the in-process link named ``serial``."""
    agent = make_agent(serial, hardware_id, directory, mode, vin)
    return agent, serve_inprocess(serial, agent, agent.limits)


class FdPort:
    """A pyserial-like port over a raw file descriptor (the master side of a pty)."""

    def __init__(self, fd: int, timeout: float = 0.01) -> None:
        import tty

        tty.setraw(fd)
        self.fd = fd
        self.timeout = timeout

    @property
    def in_waiting(self) -> int:
        r, _, _ = select.select([self.fd], [], [], 0)
        return 1 if r else 0

    def read(self, size: int = 1) -> bytes:
        r, _, _ = select.select([self.fd], [], [], self.timeout)
        if not r:
            return b""
        try:
            return os.read(self.fd, max(size, 4096))
        except OSError:
            return b""

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
