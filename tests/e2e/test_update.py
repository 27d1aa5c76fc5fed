"""End to end (issue 6): the scenario of `make demo`, with assertions. The Image repository
and the Director run as uvicorn processes, the serial Secondary as ``uptane-secondary run``
on a pty wire, the Primary as its own process; firmware is signed with the offline key and
assigned through the admin API.

- an update of both Secondaries completes: the Director's status shows the assignments
  installed, each Secondary's active slot holds the exact bytes, and each ECU report in the
  next manifest verifies with the key that ECU was registered with;
- the Primary is SIGKILLed in the middle of the image transfer to the serial Secondary,
  restarted, and the update still completes (the transfer resumes).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import images, installed, running_stack, slot_bytes

from demo.stack import CAN_ECU, PRIMARY, PROGRESS, SERIAL_ECU, VIN
from uptane.keys import Key
from uptane.limits import Limits
from uptane.manifest import check_vehicle_manifest

pytestmark = pytest.mark.slow

ECUS = (SERIAL_ECU[0], CAN_ECU[0])


def states(stack, paths: set[str]) -> dict[str, str]:
    """Assignment state by ECU, for the given target paths (the Director's admin API)."""
    status = stack.status()
    return {a["ecu"]: a["state"] for a in status["assignments"] if a["target"] in paths}


def check_installed(stack, keys, release) -> None:
    """The three checks of issue 6, once a manifest reported the installed images."""
    paths = {img.path for img in release.values()}
    # 1. the Director's status: every assignment of the bundle installed, through the
    # admin API and through `uptane-director status DIR VIN` on the inventory itself
    assert states(stack, paths) == dict.fromkeys(ECUS, "installed"), stack.status()
    cli = subprocess.run(
        [sys.executable, "-m", "director.director_cli", "status", str(stack.director_dir), VIN],
        capture_output=True,
        text=True,
        timeout=60,
        env=stack.procs.env(),
    )
    assert cli.returncode == 0, cli.stderr
    shown = {a["ecu"]: a["state"] for a in json.loads(cli.stdout)["assignments"]}
    assert {e: shown[e] for e in ECUS} == dict.fromkeys(ECUS, "installed")
    status = stack.status()
    for ecu in status["ecus"]:
        if ecu["serial"] in release:
            img = release[ecu["serial"]]
            assert ecu["installed"]["path"] == img.path
            assert ecu["installed"]["hashes"]["sha256"] == hashlib.sha256(img.data).hexdigest()
    # 2. each Secondary's active slot holds exactly the image
    for serial, img in release.items():
        info, data = slot_bytes(stack, serial)
        assert info.filename == img.path
        assert data == img.data
    # 3. the last manifest: the Primary's signature, and each ECU's report with its key
    http_status, vvm = stack.manifests()[-1]
    assert http_status == 200, stack.director_mitm.posts[-1]
    limits = Limits.primary()
    check_vehicle_manifest(
        vvm,
        Key.from_dict(keys[PRIMARY[0]], limits),
        expected_vehicle_id=VIN,
        expected_primary_id=PRIMARY[0],
    )
    reports = stack.checked_reports(keys)
    assert set(reports) == {PRIMARY[0], *ECUS}
    for serial, img in release.items():
        body = reports[serial]
        assert body.installed.filename == img.path
        assert body.installed.length == len(img.data)
        assert body.installed.hashes["sha256"] == hashlib.sha256(img.data).hexdigest()
        assert body.release_counter == img.release_counter
        assert body.attack is None


def test_update_of_both_secondaries_completes_end_to_end(tmp_path: Path) -> None:
    with running_stack(tmp_path) as car:
        stack = car.stack
        release = images("2.0", 2, 200 * 1024, 48 * 1024)
        # uploaded to the service, targets signed with the offline key on this side
        stack.release(list(release.values()), how="upload")
        stack.assign({serial: img.path for serial, img in release.items()})
        assert states(stack, {i.path for i in release.values()}) == dict.fromkeys(ECUS, "in_flight")

        cycle = stack.run_primary()
        assert cycle.returncode == 0, cycle.text
        for serial, img in release.items():
            assert f"{serial}: installed {img.path}" in cycle.text
        # the next cycle's manifest carries the ECUs' reports of what they now run
        confirm = stack.run_primary()
        assert confirm.returncode == 0, confirm.text
        check_installed(stack, car.keys, release)


def test_primary_killed_mid_transfer_then_restarted_completes_the_update(
    tmp_path: Path,
) -> None:
    # a paced serial line, so that the transfer is still going when the kill lands
    with running_stack(tmp_path, serial_rate=60_000) as car:
        stack = car.stack
        release = images("3.0", 3, 240 * 1024, 32 * 1024)
        # this time the documented offline flow: add-target and sign on the directory,
        # picked up by the running service
        stack.release(list(release.values()), how="offline-dir")
        stack.assign({serial: img.path for serial, img in release.items()})
        brake = release[SERIAL_ECU[0]]
        seen: list[tuple[int, int]] = []

        def mid_transfer(line: str) -> bool:
            m = PROGRESS.match(line)
            if not m or m.group(1) != "send" or m.group(3) != SERIAL_ECU[0]:
                return False
            done, total = int(m.group(5)), int(m.group(6))
            seen.append((done, total))
            return 0.2 * total <= done < 0.6 * total

        killed = stack.run_primary(kill_when=mid_transfer)
        assert killed.killed, killed.text
        assert killed.returncode == -9  # SIGKILL, not an orderly exit
        assert seen and seen[-1][0] < seen[-1][1]
        assert f"{SERIAL_ECU[0]}: installed" not in killed.text
        # the Secondary, still powered, holds no new image: it runs what it ran (nothing)
        assert stack.secondaries[SERIAL_ECU[0]].alive
        assert installed(stack, SERIAL_ECU[0]) is None

        restarted = stack.run_primary()
        assert restarted.returncode == 0, restarted.text
        assert f"{SERIAL_ECU[0]}: resumed the image transfer at byte" in restarted.text
        assert f"{SERIAL_ECU[0]}: installed {brake.path}" in restarted.text
        confirm = stack.run_primary()
        assert confirm.returncode == 0, confirm.text
        check_installed(stack, car.keys, release)
