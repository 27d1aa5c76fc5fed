"""Secondary agents for the Primary's tests, rebuilt from their directories (key, state,
flash) and served on a link; light imports, so the crash harness starts fast."""

from __future__ import annotations

import base64
from pathlib import Path

from hardware.fdport import FdPort
from hardware.flash import Flash
from hardware.secure_link import LinkKey
from primary.secondaries import InProcessSecondary, serve_inprocess
from secondary.agent import SecondaryAgent
from storage import LOCAL, AtomicStore, FileSystem
from uptane import roughtime as rt
from uptane.encryption import EncryptionPrivateKey
from uptane.keys import PrivateKey
from uptane.metadata import DER

__all__ = ["FdPort", "boot_agent", "make_agent"]


def make_agent(
    serial: str,
    hardware_id: str,
    directory: Path,
    mode: str = "partial",
    vin: str = "VIN-PRIMARY-1",
    *,
    fs: FileSystem = LOCAL,
    encoding: str = DER,
) -> SecondaryAgent:
    """A Secondary agent rebuilt from ``directory`` (key, link key, encryption key and time
    keys if there are some, state, flash), booted; its store and flash write through
    ``fs``."""
    link = directory / "link.key"
    enc = directory / "encryption.pem"
    time_keys = [
        rt.TimeServerKey(p.stem, base64.b64decode(p.read_bytes()))
        for p in sorted((directory / "time-keys").glob("*.pub"))
    ]
    agent = SecondaryAgent(
        ecu_serial=serial,
        hardware_id=hardware_id,
        key=PrivateKey.from_pem((directory / "key.pem").read_bytes()),
        store=AtomicStore(directory / "state", fs=fs),
        flash=Flash(directory / "flash", 1 << 20, fs=fs),
        mode=mode,
        vehicle_id=vin,
        encoding=encoding,
        link_key=LinkKey.load(link) if link.exists() else None,
        time_keys=time_keys,
        encryption_key=EncryptionPrivateKey.from_pem(enc.read_bytes()) if enc.exists() else None,
    )
    agent.start()
    return agent


def boot_agent(
    serial: str,
    hardware_id: str,
    directory: Path,
    mode: str = "partial",
    vin: str = "VIN-PRIMARY-1",
    *,
    fs: FileSystem = LOCAL,
    encoding: str = DER,
) -> tuple[SecondaryAgent, InProcessSecondary]:
    """:func:`make_agent`, served on the in-process link named ``serial``."""
    agent = make_agent(serial, hardware_id, directory, mode, vin, fs=fs, encoding=encoding)
    return agent, serve_inprocess(serial, agent, agent.limits)
