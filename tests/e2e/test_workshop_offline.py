"""Offline updates end to end (issue 18), every part a real process: the OEM builds a
bundle for the demo vehicle with ``uptane-director workshop bundle``; then the services
are stopped (the vehicle has no network: nothing answers at the addresses its Primary is
configured with) and the bundle is "carried" to it; ``uptane-primary import-bundle``
verifies it against the roots the vehicle trusts, installs on the serial Secondary
(``uptane-secondary run`` on a pty) and the CAN Secondary, and exports its manifest to the
stick; the dealer uploads it with ``uptane-director workshop upload`` and the Director
shows the bundle installed. Before the trip, the bench tool flashes the serial ECU from
the same bundle (``uptane-flash install --bundle``), twice: the second time it already
runs the image."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from e2e_support import images, running_stack, slot_bytes

from demo.stack import CAN_ECU, SERIAL_ECU, VIN

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent


def director_cli(stack: Any, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "director.director_cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=stack.procs.env(),
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_bundle_carried_to_a_vehicle_without_network_installs_and_is_confirmed(
    tmp_path: Path,
) -> None:
    with running_stack(tmp_path) as car:
        stack = car.stack
        release = images("3.0", 3, 120 * 1024, 40 * 1024)
        brake = release[SERIAL_ECU[0]]
        stack.release(list(release.values()), how="upload")
        stack.assign({serial: img.path for serial, img in release.items()})
        stick = tmp_path / "usb-stick"
        d = str(stack.director_dir)
        made = director_cli(
            stack,
            "workshop",
            "bundle",
            d,
            VIN,
            "--out",
            str(stick / "car.uptane.tar"),
            "--days",
            "0.5",
        )
        assert made["vehicles"][0]["vin"] == VIN
        # on the bench first: the serial ECU flashed from the same bundle, twice (the
        # second time it already runs the image: nothing is sent, no attack)
        bundle = str(stick / "car.uptane.tar")
        for again in (False, True):
            flashed = stack.flash_serial(["install", "--bundle", bundle])
            assert flashed.returncode == 0, flashed.stderr
            out = json.loads(flashed.stdout)
            assert (out["status"] == "already installed") is again, out
            assert out["installed"] == brake.path and "attack" not in out["signed"], out
        # no network from here on: the services the Primary is configured with are gone
        for child in (stack.director_server, stack.image_server):
            assert child is not None
            stack.procs.stop(child)
        for m in (stack.director_mitm, stack.image_mitm):
            assert m is not None
            m.close()
        stack.director_mitm = stack.image_mitm = None
        vehicle = subprocess.run(
            [
                sys.executable,
                str(HERE / "offline_vehicle.py"),
                str(stack.ecu_dir(CAN_ECU[0]) / "secondary.toml"),
                "import-bundle",
                "--config",
                str(stack.primary_config_path),
                "--bundle",
                str(stick),
                "--export",
                str(stick),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=stack.procs.env(),
        )
        assert vehicle.returncode == 0, vehicle.stdout + vehicle.stderr
        door = release[CAN_ECU[0]]
        assert f"{CAN_ECU[0]}: installed {door.path}" in vehicle.stdout
        assert f"{SERIAL_ECU[0]}: report received (runs {brake.path})" in vehicle.stdout
        info, data = slot_bytes(stack, SERIAL_ECU[0])
        assert (info.filename, data) == (brake.path, brake.data)
        [manifest] = sorted(stick.glob(f"{VIN}-*.manifest.*"))
        # at the dealer: the manifest goes up, and the Director confirms the bundle
        [answer] = director_cli(stack, "workshop", "upload", d, str(manifest))
        assert answer["bundle"]["state"] == "installed", answer
        shown = director_cli(stack, "vehicle", "show", d, VIN)
        assert [b["state"] for b in shown["bundles"]] == ["installed"]
        wanted = {img.path for img in release.values()}
        assert {a["target"]: a["state"] for a in shown["assignments"]} == dict.fromkeys(
            wanted, "installed"
        )
        [row] = director_cli(stack, "workshop", "list", d, VIN)
        assert row["bundle_state"] == "installed" and row["sha256"] == made["sha256"]
