"""``kill -9`` of the whole vehicle (a Primary subprocess with its Secondary agents) at each
step of the cycle, then a restart: the cycle completes, nothing is lost, and nothing is
installed twice (each ECU's A/B record shows exactly one install).

The vehicle runs in ``crash_harness.py``, every durable write of it (the Primary's state,
downloads and own flash, the Secondaries' stores and flash) through one
:class:`storage.faults.FaultyFileSystem`: the process SIGKILLs itself at a chosen write
point (:class:`storage.faults.KillAt`). The agents carry no crash hook. The points are
chosen from a clean run's list of write points (:func:`count_points`, the same vehicle and
assignment), one per step of the cycle, each rule below naming where the kill lands. The
ten steps of the earlier environment-variable hook are all here, plus two more (mid the
Primary's own install, and the prune of delivered images): twelve.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cycle_support import IMAGES, PRIMARY_ID, VIN, Vehicle, backend_and_vehicle
from ecu_support import boot_agent

from hardware.flash import Flash
from hardware.slots import SlotManager
from primary.state import PrimaryState

HARNESS = Path(__file__).with_name("crash_harness.py")
ASSIGNED = {"brk-1": "brakes/fw-2.bin", PRIMARY_ID: "gw/gw-2.bin", "tcu-1": "tcu/tcu-5.bin"}
#: the brakes image: its first download is cut short by the proxy in the mid-download step
BRAKES = "brakes/fw-2.bin"

Points = list[str]


def _first(points: Points, prefix: str, after: int = -1) -> int:
    """The index of the first point after ``after`` that starts with ``prefix``."""
    return next(i for i in range(after + 1, len(points)) if points[i].startswith(prefix))


def _all(points: Points, prefix: str) -> list[int]:
    return [i for i, p in enumerate(points) if p.startswith(prefix)]


def _write_of(points: Points, i: int) -> int:
    """The index of the temp-file write of the store write that renamed at ``i``."""
    return max(j for j in range(i) if points[j].startswith("write store "))


def _cycle_save(points: Points, after: int) -> int:
    """The first write of the Primary's cycle record after ``after``."""
    return _first(points, "write store cycle", after)


def _sent(points: Points) -> int:
    # the record's save after the first image went to a Secondary (step "sent")
    return _cycle_save(points, _first(points, "write B@"))


def _answered(points: Points) -> int:
    # the record's save after that Secondary answered INSTALL ("installed" recorded)
    return _cycle_save(points, _sent(points))


#: step -> where the kill lands, as an index into a clean run's write points
RULES: dict[str, Callable[[Points], int]] = {
    # the manifest was accepted; the record's first save
    "manifest": lambda pts: _cycle_save(pts, -1),
    # the approved work is recorded; the Director's first metadata file not yet in place
    "approved": lambda pts: _write_of(pts, _first(pts, "rename director/")),
    # the Director's metadata is stored; the Image repository's not yet
    "director-saved": lambda pts: _write_of(pts, _first(pts, "rename image/")),
    # verified and stored; the first byte of the first image not yet on disk
    "verified": lambda pts: _first(pts, "write download "),
    # mid-download: the retry of a body cut short, its part half there (see BRAKES)
    "download-progress": lambda pts: _first(pts, "write download "),
    # every image downloaded; the DER targets for the partial Secondaries not yet stored
    "downloaded": lambda pts: _first(pts, "write store director.targets"),
    # mid-transfer to the first Secondary (its flash has two chunks of the image)
    "send-progress": lambda pts: _all(pts, "write B@")[2],
    # the image is on the Secondary; "sent" not yet recorded
    "sent": _sent,
    # INSTALL answered; "installed" not yet recorded
    "install-answered": _answered,
    # "installed" recorded (its save ends with the state directory's fsync): the next write
    "installed": lambda pts: _first(pts, "fsync-dir state", _answered(pts)) + 1,
    # mid the Primary's own install (it comes last): its last flash write of the image
    "own-install": lambda pts: _all(pts, "write B@")[-1],
    # the delivered images' prune
    "prune": lambda pts: _first(pts, "unlink images/"),
}


def spec_at(points: Points, i: int, *, nth_extra: int = 0) -> str:
    """The KillAt spec of point ``i``: its words and which of the points containing them
    it is (``#n``); ``nth_extra`` counts that many more (a point the clean run lacks)."""
    words = points[i]
    nth = sum(1 for p in points[: i + 1] if words in p) + nth_extra
    return f"{words}#{nth}"


def run_vehicle(car_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HARNESS), str(car_root), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def assign(backend: object, car: Vehicle) -> None:
    backend.assign(VIN, list(ASSIGNED.items()))  # type: ignore[attr-defined]
    car.close()  # the vehicle runs in the subprocess from here on


@pytest.fixture(scope="module")
def clean_points(tmp_path_factory: pytest.TempPathFactory) -> Points:
    """The write points of one clean cycle of the same vehicle and assignment."""
    root = tmp_path_factory.mktemp("count")
    now = datetime.now(UTC).replace(microsecond=0)
    with backend_and_vehicle(root, now) as (backend, car):
        assign(backend, car)
        out = root / "points.json"
        done = run_vehicle(car.root, "--count", str(out))
        assert done.returncode == 0, done.stdout + done.stderr
        points: Points = json.loads(out.read_text())
    print(f"{len(points)} write points in one cycle of the vehicle")
    return points


def test_rules_name_distinct_points(clean_points: Points) -> None:
    """Every step's kill lands on its own point of the clean run, in the cycle's order."""
    where = {step: rule(clean_points) for step, rule in RULES.items()}
    steps = [s for s in RULES if s != "download-progress"]
    assert len({where[s] for s in steps}) == len(steps) >= 11
    assert [where[s] for s in steps] == sorted(where[s] for s in steps)


@pytest.mark.slow
@pytest.mark.parametrize("step", list(RULES))
def test_5_4_2_kill_9_at_each_step_then_restart_completes_the_cycle(
    tmp_path: Path, step: str, clean_points: Points
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with backend_and_vehicle(tmp_path, now) as (backend, car):
        assign(backend, car)
        spec = spec_at(clean_points, RULES[step](clean_points))
        if step == "download-progress":
            # the first answer for the brakes image stops halfway: the fetcher's retry
            # opens the part again, its second first-write, and the kill lands there
            backend.image_proxy.rules.cut[BRAKES.rsplit("/", 1)[1]] = [
                len(IMAGES[BRAKES][0]) // 2,
                1,
            ]
            spec = spec_at(clean_points, RULES[step](clean_points), nth_extra=1)

        crashed = run_vehicle(car.root, "--kill-at", spec)
        assert crashed.returncode == -signal.SIGKILL, f"{spec}: " + crashed.stdout + crashed.stderr
        backend.image_proxy.reset()

        done = run_vehicle(car.root)
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
