"""Issue 14, "Done when", the campaign on the load tool's fleet (``load/campaign.py``): 500
simulated vehicles sending real signed manifests to the Director service, three waves by
percentage, 2% of the brake ECUs failing their install and 1% never answering. The
campaign halts by itself over wave 1's failure threshold, resumes by command, and is
cancelled mid-wave 3 with bundles in flight; at the end every vehicle's recorded state
matches what its ECUs report and none is locked out. About 40 s on SQLite; the same
scenario runs on PostgreSQL with 100 vehicles (``python -m load.campaign --db both`` runs
500 on both)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:  # load/ is a tool beside the packages, not installed
    sys.path.insert(0, ROOT)

from load import campaign  # noqa: E402

pytestmark = pytest.mark.slow


def _check(result: dict, vehicles: int) -> None:
    assert result["fates"] == {
        "ok": vehicles - round(0.02 * vehicles) - max(1, round(0.01 * vehicles)),
        "fails": round(0.02 * vehicles),
        "dead": max(1, round(0.01 * vehicles)),
    }
    n1, n2, n3 = result["planned"]
    assert (n1, n2, n3) == (vehicles // 10, 3 * vehicles // 10, 6 * vehicles // 10)
    # halted by itself over the threshold, not moving until resumed, then the soak
    [halt] = result["halt"]
    assert "halted: wave 1:" in halt and "over the 5.0% threshold" in halt
    assert result["halted_state"] == "halted" and result["still_halted"]
    assert result["resumed_state"] == "running" and result["during_soak"] == []
    assert result["wave2"] == [f"campaign 1: wave 2 sent to {n2} ECU(s)"]
    assert result["wave2_done"] == []  # under the threshold: no halt, the soak runs
    assert result["wave3"] == [f"campaign 1: wave 3 sent to {n3} ECU(s)"]
    # cancelled mid-wave with bundles in flight
    before = result["before_cancel"][2]["states"]
    assert before["in_flight"] >= n3 // 3 * 2 - 2 and before["installed"] >= 1
    assert result["cancelled_state"] == "cancelled"
    final = {w["wave"]: w for w in result["final"]}
    assert final[3]["states"]["in_flight"] == 0 and final[3]["states"]["cancelled"] >= n3 // 3
    for w in final.values():
        assert w["states"]["waiting"] == w["states"]["pending"] == 0
    failed = sum(w["states"]["failed"] for w in final.values())
    assert failed >= 1 and sum(w["unreachable"] for w in final.values()) >= 1
    assert result["checks"] and not any(result["checks"].values()), result["checks"]


def test_campaign_on_500_simulated_vehicles_halts_resumes_and_cancels(tmp_path: Path):
    result = campaign.run(500, f"sqlite:///{tmp_path / 'inventory.db'}", workdir=tmp_path)
    _check(result, 500)


@pytest.mark.postgres
def test_campaign_on_postgresql(tmp_path: Path, pg_cluster):
    result = campaign.run(100, pg_cluster["create"](), workdir=tmp_path)
    _check(result, 100)
