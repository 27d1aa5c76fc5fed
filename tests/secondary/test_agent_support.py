"""Helpers for the Secondary agent tests (imported as ``test_agent_support``; no tests
here): a DER Director built with RepositoryBuilder, a provisioned agent in a temp
directory, and an in-process loopback transport so that LinkClient talks to the real
agent endpoint."""

from __future__ import annotations

import hashlib
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hardware.client import LinkClient
from hardware.flash import Flash
from hardware.protocol import SecondaryEndpoint
from secondary.agent import SecondaryAgent
from secondary.cli import provision
from secondary.config import SecondaryConfig
from storage import LOCAL, FileSystem
from uptane.keys import PrivateKey
from uptane.limits import PRIMARY
from uptane.metadata import DER, JSON, TargetFile
from uptane.repository import RepositoryBuilder

NOW = datetime(2026, 3, 1, tzinfo=UTC)
VIN = "VIN-SEC-0001"
ECU = "ecu-sec-1"
HW = "hw-brake-7"
SLOT = 64 * 1024


def image_bytes(tag: str, size: int) -> bytes:
    """Deterministic image content of ``size`` bytes."""
    out = bytearray()
    block = hashlib.sha256(tag.encode()).digest()
    while len(out) < size:
        out += block
        block = hashlib.sha256(block).digest()
    return bytes(out[:size])


class Director:
    """A Director repository for one vehicle, in DER (and JSON), with its keys."""

    def __init__(
        self,
        now: datetime = NOW,
        *,
        targets_keys: int = 1,
        threshold: int = 1,
        encodings: tuple[str, ...] = (JSON, DER),
    ):
        self.keys = {
            "root": [PrivateKey.generate()],
            "targets": [PrivateKey.generate() for _ in range(targets_keys)],
            "snapshot": [PrivateKey.generate()],
            "timestamp": [PrivateKey.generate()],
        }
        self.builder = RepositoryBuilder(
            "director",
            dict(self.keys),  # type: ignore[arg-type]
            now,
            thresholds={"targets": threshold},
            vehicle_id=VIN,
            encodings=encodings,
        )

    def assign(
        self,
        image: bytes,
        path: str,
        *,
        ecu: str = ECU,
        hw: str = HW,
        release_counter: int = 1,
        now: datetime = NOW,
        entry: dict[str, Any] | None = None,
    ) -> TargetFile:
        """Make ``path`` the only image of ``ecu`` and publish."""
        self.builder.clear_targets()
        t = TargetFile.from_data(
            path,
            image,
            ("sha256", "sha512"),
            hardware_ids=[hw],
            release_counter=release_counter,
            ecu_ids={ecu: hw},
            **(entry or {}),
        )
        self.builder.add_target(t)
        self.builder.publish(now)
        return t

    def clear(self, now: datetime = NOW) -> None:
        self.builder.clear_targets()
        self.builder.publish(now)

    @property
    def root(self) -> bytes:
        return self.builder.trusted_root(DER)

    @property
    def targets(self) -> bytes:
        return self.builder.files[DER]["targets"]

    def write_dir(self, directory: Path) -> Path:
        """The metadata directory the bench tool reads: every root version and targets."""
        directory.mkdir(parents=True, exist_ok=True)
        for i, entry in enumerate(self.builder.root_history, start=1):
            (directory / f"{i}.root.der").write_bytes(entry[DER])
        (directory / "targets.der").write_bytes(self.targets)
        return directory


def provision_ecu(
    tmp: Path,
    director: Director,
    *,
    slot_size: int = SLOT,
    initial_targets: bool = False,
    port: str = "",
    now: datetime = NOW,
    time_keys: dict[str, bytes] | None = None,
    link_key: bool = True,
    flash_model: Any = None,
) -> SecondaryConfig:
    """Provision a Secondary in ``tmp/ecu`` through the CLI function; returns its config
    (``time_keys``: name -> a time server's public key in base64: signed time only)."""
    from secondary.config import LinkConfig

    provision(
        tmp / "ecu",
        ecu_serial=ECU,
        hardware_id=HW,
        director_root=director.root,
        targets=director.targets if initial_targets else None,
        vehicle_id=VIN,
        slot_size=slot_size,
        link=LinkConfig(port=port),
        now=now.timestamp(),
        time_keys=time_keys,
        link_key=link_key,
        flash_model=flash_model,
    )
    return SecondaryConfig.load(tmp / "ecu" / "secondary.toml")


def open_agent(cfg: SecondaryConfig, *, fs: FileSystem = LOCAL, **changes: Any) -> SecondaryAgent:
    """The agent for ``cfg`` after a power-on (bootloader run); its store and flash write
    through ``fs`` (a storage.faults.FaultyFileSystem to cut the power)."""
    for k, v in changes.items():
        setattr(cfg, k, v)
    agent = SecondaryAgent.from_config(cfg, fs=fs)
    agent.start()
    return agent


class Loopback:
    """A MessageTransport that hands each request to an endpoint in the same process."""

    def __init__(self, endpoint: SecondaryEndpoint) -> None:
        self.endpoint = endpoint
        self.inbox: deque[bytes] = deque()

    @property
    def max_frame(self) -> int:
        return 1024

    def negotiate(self, frame_size: int) -> None:
        pass

    def send(self, message: bytes, timeout: float | None = None) -> None:
        reply = self.endpoint.receive(message)
        if reply is not None:  # dropped by the link's envelope: no answer
            self.inbox.append(reply)

    def recv(self, timeout: float) -> bytes | None:
        return self.inbox.popleft() if self.inbox else None

    def close(self) -> None:
        pass


def client_for(agent: SecondaryAgent) -> LinkClient:
    """A client of ``agent`` that holds its link key (as its Primary does)."""
    return LinkClient(
        Loopback(agent.endpoint()), PRIMARY, timeout=0.5, retries=0, link_key=agent.link_key
    )


def slot_bytes(flash: Flash, slot: str, length: int) -> bytes:
    return flash.read(slot, 0, length)


def snapshot(agent: SecondaryAgent) -> dict[str, Any]:
    """What must not change when an attack is refused: the running image (name, info and
    the bytes of the slot it boots from), the active slot and the trusted metadata."""
    st = agent.slots.status()
    booted = st.booted or st.active
    length = st.installed.length if st.installed else 0
    return {
        "installed": st.installed,
        "active": st.active,
        "booted": booted,
        "trial": st.trial,
        "bytes": hashlib.sha256(agent.flash.read(booted, 0, length)).hexdigest(),
        "targets": agent.trusted_targets,
        "counter": st.release_counter,
    }


def later(days: int) -> datetime:
    return NOW + timedelta(days=days)
