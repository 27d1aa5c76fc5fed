"""Retention (issue 20, docs/retention.md): manifests and nonces past ``retention_days``
are pruned in bounded batches, by ``uptane-director prune`` and the serving Director's
tick, on SQLite and PostgreSQL, and replay protection stays whole: a report whose nonce
was pruned is refused all the same (the replay horizon of §5.3.2.1,
``uptane.manifest.check_report_freshness``). A wrong clock is no attack: it gets
``ReportTimeSkew``."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from oem import Clock, make_director, make_image_repo, make_vehicle, manifest, report

from director import director_cli
from director import inventory as inv
from director.config import Config
from director.retention import replay_horizon
from uptane.errors import ReplayAttack, ReportTimeSkew
from uptane.manifest import check_report_freshness

DAY = timedelta(days=1)


@pytest.fixture
def fleet(tmp_path, db_url, now):
    """A Director on ``db_url`` keeping one day, pruning 3 rows a transaction, with one
    registered vehicle (two ECUs: a manifest stores 1 manifest row and 2 nonces)."""
    clock = Clock(now)
    director, _ = make_director(tmp_path, make_image_repo(tmp_path, now), db_url, clock)
    director.config.retention_days = 1
    director.config.retention_batch_rows = 3
    car = make_vehicle("VIN-RETAIN-1")
    director.register_vehicle(car.vin, car.specs())
    yield director, clock, car
    director.dispose()


def _rows(director) -> dict[str, int]:
    with director.engine.connect() as conn:
        return {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in (inv.manifests, inv.nonces, inv.attacks)
        }


def _deletes(director) -> list[int]:
    """Records the rows each DELETE of the engine removes."""
    seen: list[int] = []

    @sa.event.listens_for(director.engine, "after_cursor_execute")
    def _after(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("DELETE"):
            seen.append(cursor.rowcount)

    return seen


def test_prune_removes_old_rows_in_batches_and_keeps_attack_evidence(fleet):
    director, clock, car = fleet
    for _ in range(4):  # old: 4 manifests, 8 nonces
        director.process_manifest(car.vin, manifest(car, clock()))
    director.process_manifest(car.vin, manifest(car, clock(), attack="replay: evidence"))
    clock.advance(2 * DAY)
    director.process_manifest(car.vin, manifest(car, clock()))  # recent: kept
    assert _rows(director) == {"manifests": 6, "nonces": 12, "attacks": 1}

    deletes = _deletes(director)
    done = director.retention.prune()
    assert (done.manifests, done.nonces, done.kept_for_attacks) == (4, 10, 1)
    # bounded: at most retention_batch_rows rows a transaction, one DELETE each
    assert deletes and max(deletes) <= 3 and sum(deletes) == 14
    assert done.batches == len(deletes) == 2 + 4  # 4 manifests, then 10 nonces, by 3
    assert _rows(director) == {"manifests": 2, "nonces": 2, "attacks": 1}
    # the next run finds nothing to do
    again = director.retention.prune()
    assert (again.manifests, again.nonces, again.batches) == (0, 0, 0)


def test_a_dry_run_counts_and_changes_nothing(fleet):
    director, clock, car = fleet
    for _ in range(3):
        director.process_manifest(car.vin, manifest(car, clock()))
    clock.advance(2 * DAY)
    before = _rows(director)
    counted = director.retention.prune(dry_run=True)
    assert counted.dry_run and (counted.manifests, counted.nonces, counted.batches) == (3, 6, 0)
    assert _rows(director) == before
    done = director.retention.prune()
    assert (done.manifests, done.nonces) == (counted.manifests, counted.nonces)


def test_5_3_2_1_a_replayed_report_whose_nonce_was_pruned_is_refused(fleet):
    """The rule that keeps replay protection: nonce reports older than the replay horizon
    (``now - retention + 2 * skew``) are refused, so a pruned nonce never counts again."""
    director, clock, car = fleet
    first = manifest(car, clock())
    director.process_manifest(car.vin, first)
    clock.advance(timedelta(hours=1))
    director.process_manifest(car.vin, manifest(car, clock()))
    clock.advance(2 * DAY)
    assert director.retention.prune().nonces == 4
    with director.engine.connect() as conn:
        assert conn.execute(sa.select(inv.nonces)).all() == []  # nothing remembers them
    before = _rows(director)
    # sent again online: older than a report already accepted from these ECUs
    with pytest.raises(ReplayAttack, match="stale report"):
        director.process_manifest(car.vin, first)
    # carried back on a stick (reports may be 30 days old there): the horizon still holds
    with pytest.raises(ReplayAttack, match="stale report"):
        director.manifests.process(car.vin, first, earliest=clock() - 30 * DAY)
    assert _rows(director) == before


def test_5_3_2_1_the_replay_horizon_covers_every_pruned_nonce(fleet):
    """A report is accepted at most ``skew`` ahead of the clock, and its nonce is pruned
    only once stored before ``now - retention``: its time is then older than the horizon,
    by one more skew (the margin for a Director's nodes' clocks)."""
    director, clock, car = fleet
    cfg = director.config
    skew = timedelta(seconds=cfg.report_skew_seconds)
    accepted_at = clock()
    newest_time = accepted_at + skew  # the newest report time accepted then
    pruned_at = accepted_at + DAY + timedelta(seconds=1)  # first prune that drops it
    horizon = replay_horizon(cfg, pruned_at)
    assert horizon is not None and newest_time < horizon - skew
    body = report(car, f"{car.vin}-tcu", newest_time).signed
    # even where old reports are taken (a manifest carried back: 30 days)
    kw = {"earliest": pruned_at - 30 * DAY, "horizon": horizon}
    check_report_freshness(body, set(), pruned_at, skew, earliest=pruned_at - 30 * DAY)
    with pytest.raises(ReportTimeSkew, match="retention"):
        check_report_freshness(body, set(), pruned_at, skew, **kw)
    with pytest.raises(ReplayAttack):  # older than the last report accepted from it
        check_report_freshness(body, set(), pruned_at, skew, **kw, last_time=pruned_at)
    # keep forever: no horizon
    cfg.retention_days = 0
    assert replay_horizon(cfg, pruned_at) is None and director.retention.prune().batches == 0


def test_a_wrong_clock_is_report_time_skew_not_an_attack(fleet):
    director, clock, car = fleet
    behind = manifest(car, clock() - timedelta(hours=3))  # fresh nonces, an old clock
    with pytest.raises(ReportTimeSkew, match="fresh signed time"):
        director.process_manifest(car.vin, behind)
    ahead = manifest(car, clock() + timedelta(hours=3))
    with pytest.raises(ReportTimeSkew):
        director.process_manifest(car.vin, ahead)
    assert _rows(director)["manifests"] == 0


def test_the_serving_tick_prunes_once_an_interval(fleet):
    director, clock, car = fleet
    director.config.retention_interval_seconds = int((3 * DAY).total_seconds())
    director.process_manifest(car.vin, manifest(car, clock()))
    clock.advance(2 * DAY)
    lines = director.tick()
    assert any("retention: pruned 1 manifest(s) and 2 nonce(s)" in x for x in lines), lines
    director.process_manifest(car.vin, manifest(car, clock()))
    clock.advance(2 * DAY)
    assert not any("retention" in x for x in director.tick())  # not due yet
    clock.advance(DAY)
    assert any("retention: pruned 1 manifest(s)" in x for x in director.tick())


def test_cli_prune_and_dry_run(tmp_path, db_url, now, capsys):
    clock = Clock(now - 10 * DAY)  # the manifests were stored ten days ago
    director, _ = make_director(tmp_path, make_image_repo(tmp_path, clock()), db_url, clock)
    car = make_vehicle("VIN-RETAIN-2")
    director.register_vehicle(car.vin, car.specs())
    for _ in range(2):
        director.process_manifest(car.vin, manifest(car, clock()))
    director.dispose()
    ddir = str(tmp_path / "director")
    cfg = Config.load(tmp_path / "director" / "director.json")
    cfg.retention_days = 7
    cfg.save(tmp_path / "director" / "director.json")

    assert director_cli.main(["prune", ddir, "--dry-run"]) == 0
    counted = json.loads(capsys.readouterr().out)
    assert counted["dry_run"] and (counted["manifests"], counted["nonces"]) == (2, 4)
    assert director_cli.main(["prune", ddir]) == 0
    done = json.loads(capsys.readouterr().out)
    assert (done["manifests"], done["nonces"], done["dry_run"]) == (2, 4, False)
    assert director_cli.main(["prune", ddir]) == 0
    assert json.loads(capsys.readouterr().out)["manifests"] == 0


def test_a_retention_window_shorter_than_the_report_window_is_refused(tmp_path):
    path = tmp_path / "director.json"
    Config("sqlite://", "x", "0" * 64, retention_days=0.001).save(path)  # 86 s < 4 * 300 s
    with pytest.raises(ValueError, match="retention_days"):
        Config.load(path)
    Config("sqlite://", "x", "0" * 64, retention_batch_rows=0).save(path)
    with pytest.raises(ValueError, match="retention_batch_rows"):
        Config.load(path)
    Config("sqlite://", "x", "0" * 64, retention_days=None).save(path)
    assert Config.load(path).retention_days is None  # kept forever
