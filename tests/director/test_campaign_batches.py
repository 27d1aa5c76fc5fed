"""Campaigns at fleet scale in bounded transactions (issue 20, director/campaignbatches.py),
on SQLite and PostgreSQL: a campaign over 3,000 vehicles records its members and sends its
wave in batches (counted with engine events, never timed), a manifest of another vehicle
commits between two of them, a real ``uptane-director serve`` killed mid-wave finishes the
wave after its restart with every member assigned exactly once, a half-created or
half-released campaign is finished by the next tick, and ``cancel`` runs as many
statements in a fleet of 400 vehicles as in one of 20."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from oem import Clock, make_director, make_image_repo, make_vehicle, manifest
from services import Service

from director import inventory as inv
from director.campaigns import CampaignSpec, wave_sizes
from director.director import Director
from director.lifecycle import ASSIGNED, CANCELLED, CREATING, LAUNCHING, RUNNING, WAITING
from uptane.keys import PrivateKey

TARGET, HW = "brakes/fw-2.0.bin", "brk-v1"


def insert_fleet(engine: sa.Engine, n: int, prefix: str = "BATCH") -> list[str]:
    """``n`` vehicles, each a gateway (primary) and a brake ECU, written straight into the
    inventory (registration through the API costs milliseconds a vehicle; the campaign
    reads only these rows, and signs each vehicle's first metadata as it sends it)."""
    key = PrivateKey.generate().key
    text = json.dumps(key.to_dict(), sort_keys=True)
    vins = [f"{prefix}{i:06d}" for i in range(n)]
    with engine.begin() as conn:
        conn.execute(inv.vehicles.insert(), [{"vin": v, "created_at": 0} for v in vins])
        ids = dict(
            conn.execute(
                sa.select(inv.vehicles.c.vin, inv.vehicles.c.id).where(inv.vehicles.c.vin.in_(vins))
            ).all()
        )
        conn.execute(
            inv.ecus.insert(),
            [
                {
                    "vehicle_id": ids[v],
                    "serial": f"{v}-{part}",
                    "hardware_id": hw,
                    "public_key": text,
                    "key_id": key.keyid,
                    "is_primary": part == "gw",
                }
                for v in vins
                for part, hw in (("gw", "gw-v1"), ("brk", HW))
            ],
        )
    return vins


class Transactions:
    """Per transaction of an engine (by connection, begin to commit): the campaign members
    and assignments it inserted."""

    def __init__(self, engine: sa.Engine) -> None:
        self.done: list[Counter[str]] = []
        self._open: dict[int, Counter[str]] = {}
        sa.event.listen(engine, "begin", self._begin)
        sa.event.listen(engine, "commit", self._commit)
        sa.event.listen(engine, "after_cursor_execute", self._execute)

    def _begin(self, conn: sa.Connection) -> None:
        self._open[id(conn)] = Counter()

    def _commit(self, conn: sa.Connection) -> None:
        self.done.append(self._open.pop(id(conn), Counter()))

    def _execute(self, conn, cursor, statement, params, context, executemany) -> None:
        head = statement.lstrip()[:40].upper()
        for table in ("CAMPAIGN_MEMBERS", "ASSIGNMENTS"):
            if head.startswith(f"INSERT INTO {table}"):  # rows inserted, however batched
                self._open.setdefault(id(conn), Counter())[table.lower()] += cursor.rowcount

    def most(self, table: str) -> int:
        return max((t[table] for t in self.done), default=0)

    def with_rows(self, table: str) -> int:
        return sum(1 for t in self.done if t[table])


@pytest.fixture
def big(tmp_path: Path, db_url: str, now):
    clock = Clock(now)
    director, _ = make_director(tmp_path, make_image_repo(tmp_path, now), db_url, clock)
    yield director, clock
    director.dispose()


def _states(director: Director, cid: int) -> Counter[str]:
    m = inv.campaign_members
    with director.engine.connect() as conn:
        rows = conn.execute(
            sa.select(m.c.state, sa.func.count()).where(m.c.campaign_id == cid).group_by(m.c.state)
        ).all()
    return Counter({s: int(n) for s, n in rows})


def test_3000_vehicles_commit_in_batches_and_a_manifest_commits_between_two(big):
    director, clock = big
    insert_fleet(director.engine, 3000)
    other = make_vehicle("OTHER-CAR-1", {"OTHER-CAR-1-tcu": "tcu-v5"})  # not selected
    director.register_vehicle(other.vin, other.specs())
    cfg = director.config
    tx = Transactions(director.engine)

    # the campaign's worker stops after its 8th transaction, as it gives its connection
    # back (it holds no lock then), until the other vehicle's manifest has committed
    worker: dict[str, threading.Thread] = {}
    paused, go = threading.Event(), threading.Event()
    done = Counter[str]()

    def hold(dbapi_conn: object, record: object) -> None:
        if threading.current_thread() is worker.get("t"):
            done["n"] += 1
            if done["n"] == 8:
                paused.set()
                assert go.wait(60)

    sa.event.listen(director.engine, "checkin", hold)
    spec = CampaignSpec(target=TARGET, hardware_id=HW, waves=[{"count": 60}, {"percent": 100}])
    out: dict[str, dict] = {}
    worker["t"] = threading.Thread(target=lambda: out.update(c=director.campaign(spec)))
    worker["t"].start()
    assert paused.wait(120)
    [cid] = [c["id"] for c in director.campaigns.list_campaigns()]
    between = _states(director, cid)
    answer = director.process_manifest(other.vin, manifest(other, clock()))
    go.set()
    worker["t"].join(120)

    assert answer["accepted"]
    # committed while the wave was half sent: some members assigned, the rest waiting
    assert between[ASSIGNED] >= 1 and between[WAITING] >= 3000 - 60
    created = out["c"]
    assert created["state"] == RUNNING and len(created["created"]) == 60
    assert [w["planned"] for w in created["waves"]] == [60, 2940]
    # members recorded in batches of at most campaign_batch_members, sent at most
    # campaign_batch_vehicles vehicles (one brake ECU each) a transaction
    assert tx.most("campaign_members") <= cfg.campaign_batch_members
    assert tx.with_rows("campaign_members") >= 3000 // cfg.campaign_batch_members
    assert tx.most("assignments") <= cfg.campaign_batch_vehicles
    assert tx.with_rows("assignments") >= 60 // cfg.campaign_batch_vehicles
    assert _states(director, cid) == Counter({ASSIGNED: 60, WAITING: 2940})


def test_a_half_created_or_half_released_campaign_is_finished_by_the_next_tick(big):
    """What a SIGKILL between two batches leaves, finished by the next tick: members
    recorded once, the wave sent once, and an ended campaign's ECUs freed."""
    director, clock = big
    cfg = director.config
    cfg.campaign_batch_members = 7
    insert_fleet(director.engine, 40)
    spec = CampaignSpec(target=TARGET, hardware_id=HW, waves=[{"count": 10}, {"percent": 100}])
    c = director.campaigns
    with director.engine.connect() as conn:
        sel = c._select(conn, spec)
    with director.engine.begin() as conn:
        cid = c._insert(conn, spec, wave_sizes(spec.waves, 40), clock())
    for _ in range(3):  # three batches of members, then the process stops
        assert c.batches._record_batch(cid, sel)
    assert c.get(cid)["state"] == CREATING and sum(_states(director, cid).values()) == 21
    assert director.tick() == [f"campaign {cid}: wave 1 sent to 10 ECU(s)"]
    camp = c.get(cid)
    assert camp["state"] == RUNNING and [w["planned"] for w in camp["waves"]] == [10, 30]
    assert _states(director, cid) == Counter({ASSIGNED: 10, WAITING: 30})
    a = inv.assignments
    with director.engine.connect() as conn:
        per_ecu = conn.execute(
            sa.select(a.c.ecu_id, sa.func.count())
            .where(a.c.campaign_id == cid)
            .group_by(a.c.ecu_id)
        ).all()
    assert len(per_ecu) == 10 and {n for _, n in per_ecu} == {1}

    # cancelled, and the process stopped before any member was released
    with director.engine.begin() as conn:
        c._end(conn, cid, CANCELLED, "cancelled by the OEM", clock())
    assert _states(director, cid)[WAITING] == 30
    director.tick()
    m = inv.campaign_members
    with director.engine.connect() as conn:
        held = conn.execute(
            sa.select(sa.func.count()).where(m.c.campaign_id == cid, m.c.active_ecu.is_not(None))
        ).scalar_one()
        released = conn.execute(
            sa.select(inv.campaigns.c.released_at).where(inv.campaigns.c.id == cid)
        ).scalar_one()
    assert held == 0 and released is not None
    assert _states(director, cid) == Counter({ASSIGNED: 10, CANCELLED: 30})
    # its ECUs are free: a new campaign takes all 40
    again = director.campaign(CampaignSpec(target=TARGET, hardware_id=HW))
    assert len(again["created"]) == 40 and again["skipped"] == []


def _statements(engine: sa.Engine) -> list[str]:
    seen: list[str] = []
    sa.event.listen(
        engine, "before_cursor_execute", lambda *a: seen.append(a[2].lstrip()[:60]), named=False
    )
    return seen


def _cancel_statements(director: Director, vins: list[str]) -> tuple[int, int]:
    """Statements run to cancel a pending assignment of ``vins[0]``, and a campaign over
    ``vins[1:11]`` whose ten assignments are in flight."""
    director.assign(vins[0], [(f"{vins[0]}-brk", TARGET)])  # goes out: in flight
    [one] = director.assign(vins[0], [(f"{vins[0]}-brk", "brakes/fw-1.0.bin")])  # pending
    camp = director.campaign(CampaignSpec(target=TARGET, vins=vins[1:11]))
    seen = _statements(director.engine)
    director.cancel(one["id"])
    assignment = len(seen)
    director.campaigns.cancel(camp["id"])
    return assignment, len(seen) - assignment


def test_cancel_runs_the_same_statements_in_a_fleet_of_20_or_400(big):
    """Cancelling an assignment looks at that assignment only; cancelling a campaign at
    its members only (in batches), never at the rest of the fleet."""
    director, _ = big
    small = _cancel_statements(director, insert_fleet(director.engine, 20, "SMALL"))
    large = _cancel_statements(director, insert_fleet(director.engine, 400, "LARGE"))
    assert small == large
    assignment, campaign = small
    assert assignment <= 8 and campaign <= 20 * 10  # a few, and a bounded few per member


def test_a_campaign_over_a_few_vehicles_reads_nothing_by_a_full_scan(big, db_url):
    """O(affected rows): every statement of a campaign over 6 VINs of a 400-vehicle fleet
    (recording, the assignment checks on ``assignments.ecu_id`` of migration 0011, the
    bundles, the signing) reads by an index (SQLite's query plans)."""
    if not db_url.startswith("sqlite"):
        pytest.skip("query plans are read on SQLite")
    director, _ = big
    vins = insert_fleet(director.engine, 400)
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, params, context, executemany) -> None:
        if not executemany and statement.lstrip()[:6].upper() in ("SELECT", "UPDATE", "DELETE"):
            seen.append((statement, params))

    sa.event.listen(director.engine, "before_cursor_execute", record)
    director.campaign(CampaignSpec(target=TARGET, vins=vins[:6]))
    sa.event.remove(director.engine, "before_cursor_execute", record)
    plain = sa.create_engine(db_url)
    with plain.connect() as conn:
        plans = [
            (row[-1], statement[:100])
            for statement, params in seen
            for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).all()
        ]
    plain.dispose()
    assert len(seen) > 50
    assert [p for p in plans if p[0].startswith("SCAN")] == []


# --- a real service killed mid-wave --------------------------------------------------------


@pytest.fixture
def serving() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for s in started:
        s.kill()


def test_sigkill_mid_wave_start_then_restart_assigns_every_member_exactly_once(
    tmp_path: Path, db_url: str, now, serving
):
    image_dir = make_image_repo(tmp_path, now)
    ddir = tmp_path / "director"
    token = Director.init(
        ddir,
        str(image_dir / "metadata"),
        (image_dir / "metadata" / "1.root.json").read_bytes(),
        db_url=db_url,
    )
    # plain transactions: reads that never take SQLite's write lock (the Director's own
    # engine begins every transaction IMMEDIATE, and would wait behind the batches)
    engine = sa.create_engine(db_url)
    insert_fleet(engine, 300)
    serving.append(Service("director.director_cli", ddir, tmp_path / "first.log"))
    first = serving[-1]
    auth = {"Authorization": f"Bearer {token}"}

    def create() -> None:
        with contextlib.suppress(httpx.TransportError):  # killed mid-request
            httpx.post(
                f"{first.url}/api/v1/campaigns",
                json={"target": TARGET, "hardware_id": HW},
                headers=auth,
                timeout=300,
            )

    threading.Thread(target=create, daemon=True).start()
    m, c = inv.campaign_members, inv.campaigns

    def counts() -> Counter[str]:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(m.c.state, sa.func.count()).group_by(m.c.state)).all()
        return Counter({s: int(n) for s, n in rows})

    deadline = time.monotonic() + 120
    while counts()[ASSIGNED] == 0:  # the first batch of the wave is committed
        assert time.monotonic() < deadline, "the wave never started"
        time.sleep(0.01)
    first.kill()
    at_kill = counts()
    with engine.connect() as conn:
        state = conn.execute(sa.select(c.c.state)).scalar_one()
    assert state == LAUNCHING and at_kill[WAITING] > 0, at_kill  # killed half way

    # its tick finishes the wave
    serving.append(Service("director.director_cli", ddir, tmp_path / "second.log"))

    def launching() -> bool:
        with engine.connect() as conn:
            return conn.execute(sa.select(c.c.state)).scalar_one() == LAUNCHING

    # the wave is sent once no member waits and the batch after the last one has moved the
    # campaign on (a transaction of its own, after the pause that follows every batch)
    while (final := counts())[WAITING] or launching():
        assert time.monotonic() < deadline + 300, final
        time.sleep(0.2)
    camp = httpx.get(f"{serving[-1].url}/api/v1/campaigns/1", headers=auth, timeout=30).json()
    assert camp["state"] == RUNNING and camp["waves"][0]["states"]["in_flight"] == 300
    a = inv.assignments
    with engine.connect() as conn:
        per_ecu = conn.execute(sa.select(a.c.ecu_id, sa.func.count()).group_by(a.c.ecu_id)).all()
        members = conn.execute(sa.select(m.c.ecu_id, m.c.assignment_id)).all()
    assert final == Counter({ASSIGNED: 300})
    assert len(per_ecu) == 300 and {n for _, n in per_ecu} == {1}  # each assigned once
    assert len({aid for _, aid in members}) == 300 and None not in {aid for _, aid in members}
    engine.dispose()
