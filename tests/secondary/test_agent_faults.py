"""Link faults through the real agent: a pty whose both directions flip bits, drop,
duplicate and truncate bytes at a byte error rate up to 1e-3. Every update either
completes with the exact image installed, or fails with a named error and leaves the ECU
running a verified image; a corrupt image is never installed, and the report is true."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import serial
from test_agent_support import Director, image_bytes, provision_ecu

from hardware import bench
from hardware.client import LinkClient
from hardware.fdport import FdPort
from hardware.serial_link import SerialTransport
from hardware.server import serve
from secondary.agent import SecondaryAgent
from uptane.errors import UptaneError
from uptane.limits import CONSTRAINED, PRIMARY
from uptane.manifest import decode_report
from uptane.metadata import DER


class NoisyPort:
    """Wraps a port; damages what it writes at a byte error rate: a bit flip, a dropped
    byte, a duplicated byte, or the rest of the write cut off (truncation)."""

    def __init__(
        self,
        port,
        rate: float,
        seed: int,
        *,
        blackout_when: Callable[[], bool] | None = None,
        blackout_writes: int = 0,
    ) -> None:
        self.port = port
        self.rate = rate
        self.rng = random.Random(seed)
        self.damaged = 0
        #: once ``blackout_when()`` is true, drop the next ``blackout_writes`` writes whole
        self.blackout_when = blackout_when
        self.blackout_writes = blackout_writes
        self.blackout_on = False

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
        return self.port.read(size)

    def write(self, data: bytes) -> int:
        if not self.blackout_on and self.blackout_when is not None and self.blackout_when():
            self.blackout_on = True
        if self.blackout_on and self.blackout_writes:
            self.blackout_writes -= 1
            self.damaged += len(data)
            return len(data)
        out = bytearray()
        for b in data:
            if self.rng.random() >= self.rate:
                out.append(b)
                continue
            self.damaged += 1
            kind = self.rng.randrange(4)
            if kind == 0:
                out.append(b ^ (1 << self.rng.randrange(8)))
            elif kind == 2:
                out += bytes((b, b))
            elif kind == 3:
                break  # truncated
        self.port.write(bytes(out))
        return len(data)

    def close(self) -> None:
        self.port.close()


def check_true_report(agent: SecondaryAgent) -> None:
    """The booted slot holds exactly the image the boot record and the report name."""
    st = agent.slots.status()
    body = decode_report(agent.report(b"check"), PRIMARY, DER).signed
    if st.installed is None:
        assert body.installed.length == 0
        return
    data = agent.flash.read(st.booted or st.active, 0, st.installed.length)
    assert hashlib.sha256(data).hexdigest() == st.installed.hashes["sha256"]
    assert body.installed.filename == st.installed.filename
    assert body.installed.hashes == st.installed.hashes


@pytest.mark.parametrize(
    ("rate", "seed", "blackout"),
    [(1e-4, 1, 0), (1e-3, 2, 0), (1e-3, 3, 0), (1e-3, 4, 120)],
    ids=["1e-4", "1e-3-a", "1e-3-b", "1e-3-blackout"],
)
def test_faulty_serial_link_update_completes_exactly_or_fails_clean(
    tmp_path: Path, rate: float, seed: int, blackout: int
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    director = Director(now - timedelta(hours=1))
    cfg = provision_ecu(tmp_path, director, now=now)
    agent = SecondaryAgent.from_config(cfg)
    agent.start()
    master, slave = os.openpty()
    path = os.ttyname(slave)
    sec_port = NoisyPort(serial.Serial(path, timeout=0.005), rate, seed * 7)
    sec_link = SerialTransport(sec_port, max_frame=256, ack_timeout=0.03, limits=CONSTRAINED)
    stop = threading.Event()
    server = threading.Thread(
        target=serve, args=(sec_link, agent.endpoint(max_frame=256), stop), daemon=True
    )
    server.start()
    image = image_bytes(f"noisy-{seed}", 24_000)
    director.assign(image, "fw.bin", release_counter=1, now=now - timedelta(minutes=5))
    (tmp_path / "fw.bin").write_bytes(image)
    files = bench.load_metadata(director.write_dir(tmp_path / "meta"))

    # the blackout drops every write of the Primary for a while mid-image: the link gives
    # up (LinkTimeout), the cycle fails clean, and the next one resumes the transfer
    def mid_image() -> bool:
        return agent.status().image_offset >= 8_192

    pri_port = NoisyPort(
        FdPort(os.dup(master)),
        rate,
        seed,
        blackout_when=mid_image if blackout else None,
        blackout_writes=blackout,
    )
    pri_link = SerialTransport(pri_port, max_frame=1024, ack_timeout=0.03, retries=20)
    errors: list[UptaneError] = []
    installed = False
    resumed = 0
    try:
        with LinkClient(
            pri_link, PRIMARY, timeout=0.3, retries=2, link_key=agent.link_key
        ) as client:
            for _ in range(6):  # a Primary retries a failed cycle; the transfer resumes
                try:
                    out = bench.install(client, files, tmp_path / "fw.bin")
                except UptaneError as e:
                    errors.append(e)
                    check_true_report(agent)
                    continue
                installed = True
                resumed = out["resumed_from"]
                assert out["installed"] == "fw.bin"
                break
    finally:
        stop.set()
        server.join(10)
        sec_link.close()
        with contextlib.suppress(OSError):
            os.close(master)
        with contextlib.suppress(OSError):
            os.close(slave)
    assert pri_port.damaged + sec_port.damaged > 0 or rate < 1e-3
    st = agent.slots.status()
    if blackout:
        assert errors, "the blackout did not interrupt the transfer"
        assert installed and resumed > 0, "the next cycle did not resume the transfer"
    if installed:
        assert st.installed.filename == "fw.bin"
        assert agent.flash.read(st.booted, 0, len(image)) == image
    else:
        assert errors, "neither installed nor failed"
        assert st.installed is None or st.installed.filename == "fw.bin"
    check_true_report(agent)
