"""``uptane-secondary run`` killed with SIGKILL at random points of installs over a real
serial pty (issue 15), at least 50 times: during the metadata and the image transfer,
right after the INSTALL request goes out, right after its reply came back (the reply the
Primary would lose), and during the first boot after a kill.

After each kill, while no process runs, the flash is read as a bootloader would; then the
ECU is started again and asked for a fresh report. The invariants:

- the ECU boots a whole verified image, old or new: the image its report names is, byte
  for byte, in the slot the boot record boots, and it is the image before the install or
  the one being installed, nothing else;
- the report is true and signed by the ECU for the fresh nonce;
- the install then completes (resumed or started again), so the next round starts from
  the new image.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_agent_support import ECU, Director, image_bytes, provision_ecu

from hardware import bench
from hardware.client import LinkClient
from hardware.fdport import FdPort
from hardware.flash import Flash
from hardware.serial_link import SerialTransport
from secondary.config import SecondaryConfig
from uptane.errors import UptaneError
from uptane.keys import Key
from uptane.limits import PRIMARY
from uptane.manifest import EcuVersionReport, check_report, decode_report
from uptane.metadata import DER

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
#: kills in one run (the issue asks for at least 50); UPTANE_SECONDARY_KILLS for more
KILLS = max(50, int(os.environ.get("UPTANE_SECONDARY_KILLS", "50")))
IMAGE_SIZE = 48 * 1024
POINTS = ("transfer", "transfer-late", "after-install-request", "after-install-reply", "boot")


class Ecu:
    """One provisioned ECU whose ``uptane-secondary run`` process is started and killed."""

    def __init__(self, tmp: Path, master: int, slave: str) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.director = Director(self.now - timedelta(hours=1))
        self.cfg: SecondaryConfig = provision_ecu(
            tmp, self.director, port=slave, slot_size=128 * 1024, now=self.now
        )
        self.tmp, self.master = tmp, master
        self.proc: subprocess.Popen[str] | None = None
        self.transports: list[SerialTransport] = []
        doc = json.loads((self.cfg.key_file.parent / "ecu_key.pub.json").read_text())
        self.key = Key.from_dict(doc["public_key"], PRIMARY)

    def start(self, wait: bool = True) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "secondary", "run", "--config", str(self.cfg.path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=ENV,
            text=True,
        )
        if wait:
            line = _line(self.proc)
            assert line.startswith(f"ready {ECU}"), line

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=20)
            if self.proc.stdout:
                self.proc.stdout.close()
        while self.transports:  # a client waiting on a dead ECU gives up now, not after
            with contextlib.suppress(Exception):  # its timeouts and retries
                self.transports.pop().close()
        _drain(self.master)

    @contextlib.contextmanager
    def client(self) -> Iterator[LinkClient]:
        transport = SerialTransport(FdPort(os.dup(self.master)), ack_timeout=0.05, retries=20)
        self.transports.append(transport)
        with LinkClient(transport, PRIMARY, timeout=2.0, link_key=self.cfg.load_link_key()) as c:
            yield c

    def report(self) -> EcuVersionReport:
        with self.client() as c:
            c.hello()
            nonce = os.urandom(16)
            signed = decode_report(c.get_report(nonce), PRIMARY, DER)
        return check_report(signed, self.key, expected_ecu_id=ECU, expected_nonce=nonce)


def _line(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if select.select([proc.stdout], [], [], 0.1)[0]:
            return proc.stdout.readline()
        if proc.poll() is not None:
            break
    raise AssertionError(f"no line from uptane-secondary run (rc={proc.poll()})")


def _drain(fd: int) -> None:
    """Throw away what a dead process left in the pty."""
    while select.select([fd], [], [], 0.05)[0]:
        try:
            if not os.read(fd, 65536):
                return
        except OSError:
            return


@pytest.fixture
def ecu(tmp_path: Path) -> Iterator[Ecu]:
    master, slave = os.openpty()
    e = Ecu(tmp_path, master, os.ttyname(slave))
    try:
        yield e
    finally:
        e.kill()
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def _install(ecu: Ecu, path: Path, name: str, hook: Callable[[str], None]) -> None:
    """bench.install with ``hook("install")`` before the INSTALL request and
    ``hook("installed")`` after its reply; a link error (the process died) ends it."""
    with ecu.client() as client:
        real = client.install

        def install(filename: str | None = None):  # type: ignore[no-untyped-def]
            hook("install")
            status = real(filename)
            hook("installed")
            return status

        client.install = install  # type: ignore[method-assign]
        with contextlib.suppress(UptaneError, OSError, ValueError):
            bench.install(client, bench.load_metadata(ecu.tmp / "meta"), path, filename=name)


def _kill_during(ecu: Ecu, point: str, rng: random.Random, path: Path, name: str) -> None:
    """One install of ``name``, the process killed at ``point``."""
    fired = threading.Event()

    def hook(stage: str) -> None:
        if point == "after-install-request" and stage == "install":
            threading.Timer(rng.uniform(0.0, 0.03), ecu.kill).start()
            fired.set()
        elif point == "after-install-reply" and stage == "installed":
            ecu.kill()  # the reply arrived; the Primary would have lost it
            fired.set()

    worker = threading.Thread(target=_install, args=(ecu, path, name, hook), daemon=True)
    worker.start()
    if point in ("transfer", "transfer-late"):
        lo, hi = (0.05, 0.6) if point == "transfer" else (0.5, 2.0)
        worker.join(rng.uniform(lo, hi))
        ecu.kill()
    worker.join(60)
    assert not worker.is_alive(), "the install did not end after the kill"
    ecu.kill()


def _boots_whole(ecu: Ecu, allowed: dict[str, bytes]) -> None:
    """With no process running: the boot record names a slot holding one of the allowed
    images whole (what a bootloader would boot)."""
    flash = Flash(ecu.cfg.flash_dir)
    record = flash.read_boot()
    if record is None:  # nothing installed yet: only the factory state may be empty
        assert "" in allowed
        return
    slots = [s for s in (record.trial, record.active) if s]
    assert any(
        flash.read(s, 0, len(img)) == img for s in slots for img in allowed.values() if img
    ), (record, list(allowed))


def _report_is_true(body: EcuVersionReport, allowed: dict[str, bytes]) -> str:
    name = body.installed.filename
    assert name in allowed, (name, list(allowed))
    if name:
        img = allowed[name]
        assert body.installed.length == len(img)
        assert body.installed.hashes["sha256"] == hashlib.sha256(img).hexdigest()
    return name


def test_secondary_killed_at_random_points_of_installs_over_a_pty(ecu: Ecu) -> None:
    rng = random.Random(15)
    ecu.start()
    running: dict[str, bytes] = {"": b""}  # the factory state: nothing installed
    current = ""
    version = 0
    kills = 0
    points: dict[str, int] = dict.fromkeys(POINTS, 0)
    while kills < KILLS:
        version += 1
        name, image = f"brake/v{version}.bin", image_bytes(f"kill-{version}", IMAGE_SIZE)
        (ecu.tmp / "image.bin").write_bytes(image)
        ecu.director.assign(image, name, release_counter=version, now=ecu.now)
        ecu.director.write_dir(ecu.tmp / "meta")
        allowed = {current: running[current], name: image}
        for attempt in range(4):  # killed, then resumed until it completes
            point = POINTS[(kills + attempt) % len(POINTS)] if attempt < 2 else None
            if point is None:
                _install(ecu, ecu.tmp / "image.bin", name, lambda _s: None)
            elif point == "boot":
                _install(ecu, ecu.tmp / "image.bin", name, lambda _s: None)
                ecu.kill()
                ecu.start(wait=False)  # killed again during the first boot
                time.sleep(rng.uniform(0.0, 0.4))
            else:
                _kill_during(ecu, point, rng, ecu.tmp / "image.bin", name)
            if point is not None:
                ecu.kill()
                kills += 1
                points[point] += 1
                _boots_whole(ecu, allowed)
                ecu.start()
            current = _report_is_true(ecu.report(), allowed)
            if current == name:
                break
        assert current == name, f"{name} never completed after {attempt + 1} attempts"
        running = {name: image}
    assert kills >= 50 and all(points.values()), points
