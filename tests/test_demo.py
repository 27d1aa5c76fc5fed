"""`make demo` runs `python -m demo`: it must exit 0, show the before/after table and show
the man-in-the-middle attack being refused with its named error, and leave no process
behind. `python -m demo.inprocess`, the no-network walkthrough, is checked the same way."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_demo_updates_both_secondaries_and_refuses_the_swapped_image():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "Traceback" not in proc.stderr and not proc.stderr.strip(), proc.stderr
    # each step of the cycle, in order
    steps = [
        "uptane-image-repo serve",
        "uptane-director serve",
        "uptane-time-server serve: udp 127.0.0.1:",
        "vehicle and its 3 ECU keys registered, with each Secondary's encryption key",
        "delta 1.0 -> 2.0 for door-1",
        "brake-1 gets brake 2.0 encrypted",
        "time: verified time",
        "manifest sent",
        "Director metadata verified",
        "Image repository metadata verified",
        "download brake/brake-fw-2.0.bin",
        "downloaded brake/brake-fw-2.0.bin encrypted for brake-1",
        "send to brake-1",
        "send to door-1 (door/door-fw-2.0.bin.from-",
        "brake-1: report returned (runs brake/brake-fw-2.0.bin)",
        "brake-1: installed brake/brake-fw-2.0.bin",
        "signed report verifies",
        "The eavesdropper's view",
        "brake/brake-fw-2.0.bin's plaintext in any of them",
        "brake-1: clock ",
        "Before and after",
        "REFUSED by the Primary: BadHash (arbitrary-software)",
    ]
    positions = [out.index(s) for s in steps]
    assert positions == sorted(positions)
    # the before/after table: both Secondaries moved from release 1 to release 2
    for ecu, link, name in (("brake-1", "serial", "brake"), ("door-1", "CAN", "door")):
        row = re.search(rf"^\s+{ecu}\s+{link}\s+(.*)$", out, re.M)
        assert row, out
        cells = re.split(r"\s{2,}", row.group(1).strip())
        assert cells == [
            f"{name}/{name}-fw-1.0.bin (r1)",
            f"{name}/{name}-fw-2.0.bin (r2)",
            "verified, installed, confirmed",
        ], row.group(0)
    assert out.count("<- ") >= 3 and ": installed" in out
    # issue 17: the CAN Secondary got a delta and installed the full image; no sample of
    # the encrypted image's plaintext was heard on the serial line or at the Primary
    assert "door-1: installed door/door-fw-2.0.bin\n" in out
    assert re.search(r"none of \d+ samples of brake/brake-fw-2.0.bin's plaintext", out)
    # the Secondary refuses the swapped image by itself too, and nothing changed: the old
    # images stay, as the ECUs' signed reports say
    assert "REFUSED by brake-1 itself: BadHash (arbitrary-software)" in out
    # signed time set each Secondary's clock; a peer without the link key got nowhere
    assert out.count("(verified time token: ") == 2
    assert "a peer without brake-1's link key: LinkAuthentication" in out
    assert "brake-1 keeps brake/brake-fw-2.0.bin (r2)" in out
    assert "door-1 keeps door/door-fw-2.0.bin (r2)" in out
    assert "every process stopped" in out
    work = re.search(r"work directory (\S+)", out).group(1)
    assert not Path(work).exists()  # removed after a successful run
    assert not processes_naming(work), "the demo left processes running"


def processes_naming(text: str) -> list[str]:
    """Command lines of running processes that mention ``text``."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                found.append(cmd)
    return found


def test_inprocess_demo_runs_and_shows_table_and_refused_attack():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "demo.inprocess"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "Full verification" in out
    # the before/after table, with both Secondaries updated and the Primary untouched
    assert "before" in out and "after" in out and "result" in out
    assert "brake/fw-1.0.bin (r1)" in out and "brake/fw-2.0.bin (r2)" in out
    assert "engine/fw-3.2.bin (r8)" in out
    assert out.count("installed") >= 2 and "up to date" in out
    # the attack: swapped bytes refused by name, the old image kept
    assert "REFUSED: BadHash" in out and "BadHash (arbitrary-software)" in out
    assert "keeps brake/fw-2.0.bin" in out
    # a compromised Director alone is refused by full verification
    assert "full verification: TargetNotFound (arbitrary-software)" in out
    assert "Traceback" not in proc.stderr
