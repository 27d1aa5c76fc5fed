"""The Director process killed (SIGKILL) at random moments under load (issue 15): a
bounded run of ``load/killrun.py`` (``make load`` runs 100 vehicles and 20 kills per
database). After every restart: every manifest that got a 2xx is stored, no acknowledged
manifest can be replayed, no vehicle saw a metadata version go back, and at the end every
vehicle completes a cycle."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:  # load/ is a tool beside the packages, not installed
    sys.path.insert(0, ROOT)

from load import killrun, pgcluster  # noqa: E402


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_director_killed_at_random_moments_keeps_every_invariant(tmp_path: Path, kind: str):
    if kind == "postgresql" and pgcluster.pg_bin() is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    with killrun.database(kind, tmp_path) as url:
        r = killrun.kill_run(url, tmp_path, vehicles=24, kills=3, seed=7)
    assert r["kills"] == 3 and r["manifests_acknowledged"] > 50, r
    assert r["lost_manifests"] == 0, r
    assert r["replays_accepted"] == 0, r
    assert r["rollbacks"] == 0, r
    assert r["vehicles_recovered"] == 24, r
    assert r["error_count"] == 0, r["errors"]
    assert killrun.passed(r)
