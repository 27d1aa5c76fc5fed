"""``uptane-primary run`` and ``status`` as a user runs them (subprocesses), against the
real services: the step output the demo shows, and a loop that keeps cycling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from cycle_support import PRIMARY_ID, VIN, backend_and_vehicle

CLI = Path(sys.executable).with_name("uptane-primary")


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
    )


def test_run_once_shows_each_step_and_status_shows_the_result(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    with backend_and_vehicle(tmp_path, now, secondaries={}) as (backend, car):
        backend.assign(VIN, [(PRIMARY_ID, "gw/gw-2.bin")])
        run = cli("run", "--once", "--config", str(car.config_path))
        assert run.returncode == 0, run.stdout + run.stderr
        out = run.stdout
        for step in (
            "manifest sent",
            "Director metadata verified",
            "Image repository metadata verified",
            "download gw/gw-2.bin: 100%",
            "installing gw/gw-2.bin into slot B",
            "gw-1: installed gw/gw-2.bin",
            "cycle complete",
        ):
            assert step in out, out

        st = cli("status", "--config", str(car.config_path))
        assert st.returncode == 0
        assert "ECU gw-1: gw/gw-2.bin" in st.stdout and "pending: none" in st.stdout
        js = json.loads(cli("status", "--json", "--config", str(car.config_path)).stdout)
        assert js["installed"] == {PRIMARY_ID: "gw/gw-2.bin"}
        assert js["repositories"]["director"]["targets"] >= 1
        assert js["last_error"] is None and js["cycles"] == 1


def test_run_loops_on_the_poll_interval_until_interrupted(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    with backend_and_vehicle(tmp_path, now, secondaries={}) as (_backend, car):
        proc = subprocess.Popen(
            [str(CLI), "run", "--config", str(car.config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            cycles = 0
            while cycles < 2:
                assert time.monotonic() < deadline, "the loop did not run two cycles"
                time.sleep(0.2)
                st = cli("status", "--json", "--config", str(car.config_path))
                cycles = json.loads(st.stdout)["cycles"] if st.returncode == 0 else 0
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert out.count("--- update cycle for") >= 2


def test_run_with_a_bad_config_is_a_usage_error(tmp_path):
    (tmp_path / "p.toml").write_text("[vehicle]\n")
    r = cli("run", "--once", "--config", str(tmp_path / "p.toml"))
    assert r.returncode == 2 and "vehicle.vin" in r.stderr
