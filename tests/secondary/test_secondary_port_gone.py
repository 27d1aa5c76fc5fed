"""``uptane-secondary run`` whose serial port goes away for good (the pty's other end
closes and its device node disappears, as when a USB-serial adapter is unplugged): the
process logs a bounded number of retries with a growing delay, then exits 2 naming the
error, for a supervisor to restart it, instead of spinning on EIO."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_agent_support import Director, provision_ecu

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.mark.slow
def test_run_exits_2_when_its_serial_port_is_gone(tmp_path: Path) -> None:
    master, slave = os.openpty()
    device = os.ttyname(slave)
    cfg = provision_ecu(tmp_path, Director(), port=device)
    os.close(slave)
    proc = subprocess.Popen(
        [sys.executable, "-m", "secondary", "run", "--config", str(cfg.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("ready ")
        os.close(master)  # hang up: the slave reads EIO and its /dev/pts node goes away
        assert not os.path.exists(device)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("uptane-secondary: link-failure: the link failed 9 times in a row")
    assert "giving up" in last and "Input/output error" in last
    assert err.count("retrying in") == 8  # one line per retry, not a tight loop
