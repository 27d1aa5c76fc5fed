"""End to end over a real pty: ``uptane-secondary run`` as a separate process is updated
by the bench code over serial, and ``uptane-flash`` as a separate process updates an agent
served in this process. Real Director metadata (vehicle id, ecuIdentifiers) from
RepositoryBuilder; the ECU verifies everything itself."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_agent_support import ECU, HW, Director, image_bytes, provision_ecu

from hardware import bench
from hardware.client import LinkClient
from hardware.fdport import FdPort
from hardware.flash import Flash
from hardware.serial_link import SerialTransport
from hardware.server import serve
from secondary.agent import SecondaryAgent
from secondary.config import SecondaryConfig
from uptane.errors import BadHash
from uptane.keys import Key
from uptane.limits import PRIMARY
from uptane.manifest import check_report, decode_report
from uptane.metadata import DER

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    for fd in (master, slave):
        with contextlib.suppress(OSError):
            os.close(fd)


def real_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def wait_line(proc: subprocess.Popen, timeout: float = 20.0) -> str:
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if select.select([proc.stdout], [], [], 0.1)[0]:
            return proc.stdout.readline()
        if proc.poll() is not None:
            break
    raise AssertionError(f"no line from the process (rc={proc.poll()})")


def public_key(cfg: SecondaryConfig) -> Key:
    doc = json.loads((cfg.key_file.parent / "ecu_key.pub.json").read_text())
    return Key.from_dict(doc["public_key"], PRIMARY)


def test_secondary_process_on_a_pty_is_updated_over_serial(tmp_path: Path, pty) -> None:
    master, slave_path = pty
    now = real_now()
    director = Director(now - timedelta(hours=1))
    cfg = provision_ecu(tmp_path, director, port=slave_path, slot_size=256 * 1024, now=now)
    image = image_bytes("process-v1", 100_000)
    director.assign(image, "brake/v1.bin", release_counter=2, now=now - timedelta(minutes=5))
    (tmp_path / "v1.bin").write_bytes(image)
    meta = director.write_dir(tmp_path / "meta")
    proc = subprocess.Popen(
        [sys.executable, "-m", "secondary", "run", "--config", str(cfg.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        text=True,
    )
    try:
        assert wait_line(proc).startswith(f"ready {ECU}")
        transport = SerialTransport(FdPort(os.dup(master)), ack_timeout=0.05, retries=20)
        with LinkClient(transport, PRIMARY, timeout=2.0, link_key=cfg.load_link_key()) as client:
            hello = client.hello()
            assert (hello.ecu_serial, hello.hardware_id, hello.mode) == (ECU, HW, "partial")
            assert hello.slot_size == 256 * 1024
            # an image with a flipped byte is refused by the ECU, not by the tool
            files = bench.load_metadata(meta)
            bad = bytearray(image)
            bad[50_000] ^= 0xFF
            (tmp_path / "bad.bin").write_bytes(bytes(bad))
            with pytest.raises(BadHash):
                bench.install(client, files, tmp_path / "bad.bin", filename="brake/v1.bin")
            progress: list[tuple[int, int]] = []
            out = bench.install(
                client,
                files,
                tmp_path / "v1.bin",
                filename="brake/v1.bin",
                progress=lambda d, t: progress.append((d, t)),
            )
            assert out["installed"] == "brake/v1.bin"
            assert progress[-1] == (len(image), len(image))
            nonce = os.urandom(16)
            report = decode_report(client.get_report(nonce), PRIMARY, DER)
            body = check_report(report, public_key(cfg), expected_ecu_id=ECU, expected_nonce=nonce)
            assert body.installed.filename == "brake/v1.bin"
            assert body.installed.length == len(image) and body.release_counter == 2
            assert body.attack is None
            shown = bench.info(client)
            assert shown["installed"] == "brake/v1.bin" and shown["state"] == "idle"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the image is in flash, in the slot the boot record names, confirmed
    flash = Flash(cfg.flash_dir)
    record = flash.read_boot()
    assert record is not None and record.trial is None
    assert flash.read(record.active, 0, len(image)) == image


def test_uptane_flash_process_updates_a_secondary_over_a_pty(tmp_path: Path, pty) -> None:
    master, slave_path = pty
    now = real_now()
    director = Director(now - timedelta(hours=1))
    cfg = provision_ecu(tmp_path, director, now=now)
    agent = SecondaryAgent.from_config(cfg)
    agent.start()
    transport = SerialTransport(FdPort(os.dup(master)), ack_timeout=0.05, retries=20)
    endpoint = agent.endpoint(max_frame=transport.max_frame)
    stop = threading.Event()
    server = threading.Thread(target=serve, args=(transport, endpoint, stop), daemon=True)
    server.start()
    image = image_bytes("bench-v1", 40_000)
    director.assign(image, "fw.bin", release_counter=1, now=now - timedelta(minutes=5))
    (tmp_path / "fw.bin").write_bytes(image)
    meta = director.write_dir(tmp_path / "meta")
    tool = [sys.executable, "-m", "hardware.bench", "--port", slave_path]
    tool += ["--link-key", str(cfg.link_key_file)]
    try:
        done = subprocess.run(
            [*tool, "install", "--metadata", str(meta), "--image", str(tmp_path / "fw.bin")],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["installed"] == "fw.bin"
        assert out["signed"]["installed_image"]["length"] == len(image)
        assert out["signed"]["ecu_id"] == ECU
        bars = [line for line in done.stderr.splitlines() if line.startswith("image ")]
        assert 2 <= len(bars) <= 11  # off a terminal: one plain line per tenth at most
        assert bars[-1].startswith("image 100% [####################] 39.1kB/39.1kB")
        assert re.search(r", \d+(\.\d+)?[kMG]?B/s\]$", bars[-1])
        done = subprocess.run([*tool, "info"], capture_output=True, text=True, env=ENV, timeout=60)
        assert done.returncode == 0, done.stderr
        shown = json.loads(done.stdout)
        assert (shown["ecu_serial"], shown["hardware_id"]) == (ECU, HW)
        assert shown["installed"] == "fw.bin"
        assert shown["report"]["signed"]["release_counter"] == 1
        # a refusal is reported with the attack's name and a non-zero exit
        (tmp_path / "fw2.bin").write_bytes(image[:-1] + b"\x00")
        director.assign(image, "fw2.bin", release_counter=2, now=now - timedelta(minutes=1))
        director.write_dir(meta)
        done = subprocess.run(
            [*tool, "install", "--metadata", str(meta), "--image", str(tmp_path / "fw2.bin")],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
        )
        assert done.returncode == 1
        assert "attack arbitrary-software" in done.stderr and "code 64" in done.stderr
    finally:
        stop.set()
        server.join(10)
        transport.close()
    assert agent.slots.status().installed.filename == "fw.bin"
