"""The README's bench walkthrough, run as written (issue 18): every command of its
``sh`` blocks, in order, as a real process, from an empty directory; the ECU runs
``uptane-secondary run`` on one end of a pty "cable" and ``uptane-flash`` opens the other.

Only what a machine needs is changed: the cable's two device names (``/dev/ttyS1`` on the
ECU, ``/dev/ttyUSB0`` on the laptop) become the pty's ends, and the services' ports 8000
and 8001 free ones. Lines ending with ``&`` start a service in the background (waited for
until it answers). The walkthrough flashes the bench vehicle twice (two releases) and
then a third time with the image it already runs; the Director must show both bundles
installed, and the ECU must report no attack. Then the dead-port and bench-bundle checks
run against the same setup."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import bounded

from demo.stack import PtyWire, firmware, free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent


def walkthrough() -> list[str]:
    """The commands of the README's bench section, continuation lines joined, comments
    dropped."""
    text = README.read_text()
    start = text.index("## Provision a real ECU on the bench")
    section = text[start : text.index("\n## ", start + 5)]
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line.strip())
            if line:
                commands.append(line)
    return commands


class Runner:
    """Runs the README's commands in ``work`` with the venv's console scripts first on
    PATH; background services are stopped (by process group) at the end."""

    def __init__(self, work: Path, wire: PtyWire) -> None:
        self.work = work
        self.subst = {
            "/dev/ttyS1": wire.secondary_end,
            "/dev/ttyUSB0": wire.primary_end,
            "8000": str(free_port()),
            "8001": str(free_port()),
        }
        self.env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        self.env.pop("UPTANE_DEMO_NETNS", None)
        self.background: list[subprocess.Popen[bytes]] = []
        self.outputs: list[tuple[str, subprocess.CompletedProcess[str]]] = []

    def argv(self, command: str) -> list[str]:
        for old, new in self.subst.items():
            command = re.sub(rf"(?<![\w/]){re.escape(old)}(?![\w])", new, command)
        return shlex.split(command)

    def run(self, command: str) -> subprocess.CompletedProcess[str] | None:
        if command.endswith("&"):
            self.start(self.argv(command[:-1]))
            return None
        done = subprocess.run(
            self.argv(command),
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        self.outputs.append((command, done))
        assert done.returncode == 0, self.transcript()
        return done

    def transcript(self) -> str:
        """Every command run so far with its output, and the services' logs."""
        out = [f"$ {c}\n{d.stdout}{d.stderr}" for c, d in self.outputs]
        out += [
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.work.glob("bg-*.log"))
        ]
        return "\n".join(out)

    def start(self, argv: list[str]) -> None:
        log = open(self.work / f"bg-{len(self.background)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            argv, cwd=self.work, env=self.env, stdout=log, stderr=log, start_new_session=True
        )
        self.background.append(proc)
        if "serve" in argv:
            port = argv[argv.index("--port") + 1]
            self.wait(proc, lambda: _answers(f"http://127.0.0.1:{port}/healthz"))
        else:  # the ECU: ready once it says so
            self.wait(proc, lambda: b"ready " in Path(log.name).read_bytes())

    @staticmethod
    def wait(proc: subprocess.Popen[bytes], ok: object, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if ok():  # type: ignore[operator]
                return
            assert proc.poll() is None, f"{proc.args} exited {proc.returncode}"
            time.sleep(0.1)
        raise AssertionError(f"{proc.args} not ready")

    def stop(self) -> None:
        for proc in reversed(self.background):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def bench(tmp_path: Path) -> Iterator[Runner]:
    work = tmp_path / "empty"
    work.mkdir()
    (work / "fw-1.2.bin").write_bytes(firmware("brake", "1.2", 96 * 1024))
    (work / "fw-1.3.bin").write_bytes(firmware("brake", "1.3", 80 * 1024))
    wire = PtyWire()
    runner = Runner(work, wire)
    try:
        yield runner
    finally:
        runner.stop()
        wire.close()


@pytest.mark.slow
def test_the_readme_bench_walkthrough_as_written(tmp_path: Path) -> None:
    commands = walkthrough()
    flashes = [c for c in commands if c.startswith("uptane-flash") and " install " in c]
    assert len(flashes) == 3, commands
    with bounded(240), bench(tmp_path) as r:
        outputs = [r.run(c) for c in commands]
        results = [
            json.loads(o.stdout)
            for c, o in zip(commands, outputs, strict=True)
            if o is not None and c in flashes
        ]
        assert [x["installed"] for x in results] == [
            "brakes/fw-1.2.bin",
            "brakes/fw-1.3.bin",
            "brakes/fw-1.3.bin",
        ]
        assert results[2]["status"] == "already installed"
        for x in results:
            assert x["director"]["uploaded"] is True, x
            assert "attack" not in x["signed"], x  # the ECU reports no attack
        shown = json.loads(outputs[-1].stdout)  # type: ignore[union-attr]
        assert [b["state"] for b in shown["bundles"]] == ["installed", "installed"], shown
        assert all(a["state"] == "installed" for a in shown["assignments"]), shown
        brake = next(e for e in shown["ecus"] if e["serial"] == "brake-7-0001")
        assert brake["last_attack"] is None
        dead_port(r, tmp_path)


def dead_port(r: Runner, tmp_path: Path) -> None:
    """A port with nothing behind it: the clear error, with the port and settings, in
    under 10 s, and no attack name (exit 3)."""
    import pty

    master, slave = pty.openpty()
    try:
        port = os.ttyname(slave)
        t0 = time.monotonic()
        done = subprocess.run(
            r.argv(f"uptane-flash --port {port} --link-key ecu/link.key info"),
            cwd=r.work,
            env=r.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - t0
    finally:
        os.close(master)
        os.close(slave)
    assert done.returncode == 3, done.stderr
    assert took < 10, took
    assert f"no ECU answered on {port}" in done.stderr
    assert "115200 baud" in done.stderr and "link key ecu/link.key" in done.stderr
    assert "attack" not in done.stderr and "drop-request" not in done.stderr
