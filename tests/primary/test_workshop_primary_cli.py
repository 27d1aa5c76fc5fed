"""Issue 18 at the Primary's command line: ``run --once --quiet`` prints a failed cycle's
reason; ``import-bundle`` installs an offline bundle, exports the manifest, and refuses a
stick with no bundle for this vehicle (exit 1, named)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from cycle_support import VIN, backend_and_vehicle

from director.offline import build_bundle
from primary.cli import main as cli_main

BRAKES = "brakes/fw-2.bin"


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def test_quiet_run_prints_the_reason_of_a_failed_cycle(tmp_path, now, capsys) -> None:
    with backend_and_vehicle(tmp_path, now, secondaries={}) as (backend, car):
        reason = "the inventory is down for maintenance"
        backend.director_proxy.rules.post_answer = (403, json.dumps({"detail": reason}).encode())
        assert cli_main(["run", "--once", "--quiet", "--config", str(car.config_path)]) == 1
        out = capsys.readouterr()
        assert out.out == ""  # quiet: no steps
        assert "cycle failed" in out.err and reason in out.err


def test_import_bundle_installs_exports_and_refuses_a_stick_for_another_car(
    tmp_path, now, capsys
) -> None:
    with backend_and_vehicle(tmp_path, now) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        stick = tmp_path / "stick"
        empty = tmp_path / "empty-stick"
        empty.mkdir()
        rc = cli_main(["import-bundle", "--config", str(car.config_path), "--bundle", str(empty)])
        assert rc == 1 and "no offline bundle for " + VIN in capsys.readouterr().err
        build_bundle(backend.director, [VIN], stick / "car.uptane.tar", days=0.5)
        args = ["import-bundle", "--config", str(car.config_path), "--bundle", str(stick)]
        assert cli_main([*args, "--export", str(stick)]) == 0, capsys.readouterr()
        out = capsys.readouterr().out
        assert f"brk-1: installed {BRAKES}" in out and "manifest in " in out
        assert len(list(stick.glob(f"{VIN}-*.manifest.*"))) == 1
        # the same bundle again: nothing new, nothing refused
        assert cli_main([*args, "--quiet"]) == 0
