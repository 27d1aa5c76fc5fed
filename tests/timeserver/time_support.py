"""Real ``uptane-time-server`` processes for the time server's tests (``python -m
timeserver``, since the console script is not installed until pyproject names it)."""

from __future__ import annotations

import contextlib
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from timeserver.client import TimeServerAddress
from timeserver.keys import read_public
from uptane import roughtime as rt

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m timeserver ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "timeserver", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class Keys:
    """One time server's directories, made by ``init``."""

    offline: Path
    online: Path

    @property
    def public(self) -> bytes:
        return read_public(self.offline / "longterm.pub")

    def key(self, name: str = "oem-time") -> rt.TimeServerKey:
        return rt.TimeServerKey(name, self.public)


@dataclass
class Running:
    """A serving process, its first line and its address."""

    proc: subprocess.Popen[str]
    banner: str
    address: TimeServerAddress


def make_keys(base: Path, name: str = "time") -> Keys:
    keys = Keys(base / f"{name}-offline", base / f"{name}-online")
    done = cli("init", "--keys", str(keys.offline), "--online", str(keys.online), "--days", "2")
    assert done.returncode == 0, done.stderr
    return keys


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path)


def _first_line(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if select.select([proc.stdout], [], [], 0.1)[0]:
            return proc.stdout.readline()
        if proc.poll() is not None:
            break
    raise AssertionError(f"the time server printed nothing (rc={proc.poll()})")


@contextlib.contextmanager
def serving(keys: Keys, *extra: str) -> Iterator[Running]:
    """``serve --online ... --port 0 EXTRA`` until the block ends."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "timeserver",
            "serve",
            "--online",
            str(keys.online),
            "--port",
            "0",
            *extra,
        ],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = _first_line(proc)
        found = re.search(r"udp ([0-9.]+):(\d+);", banner)
        assert found, banner
        address = TimeServerAddress(found[1], int(found[2]), keys.public)
        yield Running(proc, banner, address)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()


@pytest.fixture
def server(keys: Keys) -> Iterator[Running]:
    with serving(keys) as running:
        yield running
