"""``kill -9`` of the whole vehicle (a Primary subprocess with its Secondary agents) at each
step of the cycle, then a restart: the cycle completes, nothing is lost, and nothing is
installed twice (each ECU's A/B record shows exactly one install)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cycle_support import PRIMARY_ID, VIN, backend_and_vehicle
from ecu_support import boot_agent

from hardware.flash import Flash
from hardware.slots import SlotManager
from primary.agent import CRASH_ENV
from primary.state import PrimaryState

HARNESS = Path(__file__).with_name("crash_harness.py")
ASSIGNED = {"brk-1": "brakes/fw-2.bin", "tcu-1": "tcu/tcu-5.bin", PRIMARY_ID: "gw/gw-2.bin"}

STEPS = [
    "manifest",
    "approved",
    "director-saved",
    "verified",
    "download-progress",
    "downloaded",
    "send-progress",
    "sent",
    "install-answered",
    "installed",
]


def run_vehicle(car_root: Path, crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop(CRASH_ENV, None)
    if crash_at is not None:
        env[CRASH_ENV] = crash_at
    return subprocess.run(
        [sys.executable, str(HARNESS), str(car_root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_5_4_2_kill_9_at_each_step_then_restart_completes_the_cycle(tmp_path, step):
    now = datetime.now(UTC).replace(microsecond=0)
    with backend_and_vehicle(tmp_path, now) as (backend, car):
        backend.assign(VIN, list(ASSIGNED.items()))
        car.close()  # the vehicle runs in the subprocess from here on

        crashed = run_vehicle(car.root, step)
        assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr

        done = run_vehicle(car.root, None)
        assert done.returncode == 0, done.stdout + done.stderr

        rec = PrimaryState(car.config.storage_dir, car.config.limits).load_cycle()
        assert rec.pending == {}
        assert {e: t.path for e, t in rec.installed.items()} == ASSIGNED
        for serial, path in ASSIGNED.items():
            if serial == PRIMARY_ID:
                slots = SlotManager(Flash(car.config.flash_dir))
            else:
                agent, served = boot_agent(
                    serial, car.ecus[serial].hardware_id, car.ecus[serial].directory
                )
                served.close()
                slots = agent.slots
            st = slots.status()
            assert st.installed is not None and st.installed.filename == path
            # one install: a blank device starts on slot A, its first install goes to B
            assert st.active == "B", f"{serial} was installed more than once"
