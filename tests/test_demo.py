"""`make demo` runs `python -m demo`: it must exit 0, show the before/after table and show
the man-in-the-middle attack being refused with its named error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_and_shows_table_and_refused_attack():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "demo"],
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
