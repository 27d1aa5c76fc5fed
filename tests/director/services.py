"""The OEM services as real processes (``uptane-director serve``, ``uptane-image-repo
serve``) for the issue-14 tests: each on a free port, its output in a log file the test
reads (start-up lines, one line per admin change), stopped at teardown."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """``python -m MODULE serve DIR ...`` on 127.0.0.1, logging to ``log``."""

    def __init__(self, module: str, directory: Path, log: Path, *extra: str) -> None:
        self.log = log
        for _ in range(3):
            self.port = _free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            with open(log, "ab") as out:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", module, "serve", str(directory), *extra, *self._at()],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if self._wait():
                return
        raise RuntimeError(f"{module} did not start: {self.text()[-2000:]}")

    def _at(self) -> list[str]:
        return ["--host", "127.0.0.1", "--port", str(self.port)]

    def _wait(self) -> bool:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return True
            if self.proc.poll() is not None:
                return False  # the port was taken meanwhile: try another
            time.sleep(0.1)
        return False

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a power loss or the OOM killer would: no shutdown runs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def within(seconds: float, attempt: Callable[[], Any], *, every: float = 0.05) -> tuple[Any, float]:
    """Call ``attempt`` until it returns something true, at most ``seconds``; returns the
    last result and the seconds it took (the caller asserts on both)."""
    t0 = time.monotonic()
    while True:
        out = attempt()
        took = time.monotonic() - t0
        if out or took >= seconds:
            return out, took
        time.sleep(every)
