"""Group commit at the Director (director/groupcommit.py), on SQLite and on PostgreSQL:
manifests that arrive together share one transaction and one durable commit, each with
the outcome it would have had alone. What arrives together is made deterministic by
holding the writer inside a unit while the manifests queue behind it (no timing is
asserted)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from oem import Clock, make_director, make_image_repo, make_vehicle, manifest, report

from director import inventory as inv
from director.director import Director, NotFound
from uptane.errors import BadSignature, ReplayAttack
from uptane.keys import PrivateKey
from uptane.metadata import JSON


@pytest.fixture
def director(tmp_path: Path, db_url: str, now) -> Iterator[Director]:
    clock = Clock(now)
    image_dir = make_image_repo(tmp_path, now)
    d, _token = make_director(tmp_path, image_dir, db_url, clock)
    yield d
    d.dispose()


def _fleet(d: Director, n: int) -> list[Any]:
    out = []
    for i in range(n):
        v = make_vehicle(f"VIN-GC-{i:03d}")
        d.register_vehicle(v.vin, v.specs())
        out.append(v)
    return out


class Held:
    """Hold the writer inside a unit of its own until :meth:`release`; everything
    submitted meanwhile queues and goes into the next batch together."""

    def __init__(self, d: Director) -> None:
        self.d = d
        self.gate = threading.Event()
        inside = threading.Event()

        def hold(conn: Any) -> str:
            inside.set()
            self.gate.wait(60)
            return "held"

        self.thread = threading.Thread(target=lambda: d.writer.run(hold), daemon=True)
        self.thread.start()
        assert inside.wait(60)

    def release_when_queued(self, n: int) -> None:
        deadline = time.monotonic() + 60
        while self.d.writer.pending < n:
            assert time.monotonic() < deadline, f"only {self.d.writer.pending} of {n} queued"
            time.sleep(0.005)
        self.gate.set()
        self.thread.join(60)


def _together(d: Director, calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` (each submits one unit) from their own threads, all in one batch;
    returns each call's result or exception, in order."""
    held = Held(d)
    out: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            out[i] = calls[i]()
        except BaseException as e:
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    held.release_when_queued(len(calls))
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a caller was never answered"
    return out


def _around(d: Director, a: Any, b: Any, now: Any, middle: Callable[[], Any]) -> list[Any]:
    """One batch of vehicle ``a``'s manifest, ``middle`` (a unit of its own), then vehicle
    ``b``'s manifest: the three outcomes, in order."""
    return _together(
        d,
        [
            lambda: d.process_manifest(a.vin, manifest(a, now), JSON),
            middle,
            lambda: d.process_manifest(b.vin, manifest(b, now), JSON),
        ],
    )


def _count(db_url: str, table: sa.Table, **where: Any) -> int:
    """Rows in ``table`` as a fresh connection (not the Director's) sees them."""
    engine = inv.make_engine(db_url)
    try:
        with engine.connect() as conn:
            q = sa.select(sa.func.count()).select_from(table)
            for col, value in where.items():
                q = q.where(table.c[col] == value)
            return int(conn.execute(q).scalar_one())
    finally:
        engine.dispose()


def test_group_commit_manifests_of_many_vehicles_sent_together_are_all_recorded(director, db_url):
    d = director
    fleet = _fleet(d, 12)
    now = d.clock()
    bodies = [(v.vin, manifest(v, now)) for v in fleet for _ in range(2)]
    d.writer.batch_sizes.clear()
    results = _together(d, [lambda b=b: d.process_manifest(b[0], b[1], JSON) for b in bodies])
    assert all(isinstance(r, dict) and r["accepted"] for r in results), results
    assert d.writer.batch_sizes[len(bodies)] == 1  # one transaction, one commit for all 24
    assert len({r["manifest"] for r in results}) == len(bodies)
    assert _count(db_url, inv.manifests) == len(bodies)
    assert _count(db_url, inv.nonces) == 2 * 2 * len(fleet)  # two ECUs, two manifests each
    for v in fleet:
        assert d.vehicle_status(v.vin)["manifests_accepted"] == 2


def test_group_commit_caller_is_answered_only_once_its_manifest_is_committed(director, db_url):
    d = director
    fleet = _fleet(d, 8)
    now = d.clock()
    seen: dict[str, int] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(fleet))

    def send(v: Any) -> None:
        try:
            start.wait(60)
            for _ in range(3):
                r = d.process_manifest(v.vin, manifest(v, now), JSON)
                # a fresh connection sees the manifest the moment the caller has its answer
                seen[v.vin] = _count(db_url, inv.manifests, id=r["manifest"])
                assert seen[v.vin] == 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=send, args=(v,), daemon=True) for v in fleet]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert seen == {v.vin: 1 for v in fleet}
    assert _count(db_url, inv.manifests) == 3 * len(fleet)


def test_group_commit_a_bad_manifest_fails_alone_and_changes_nothing(director, db_url):
    d = director
    a, b, c = _fleet(d, 3)
    now = d.clock()
    forged = manifest(b, now, key=PrivateKey.generate())  # not the Primary's key
    d.writer.batch_sizes.clear()
    results = _together(
        d,
        [
            lambda: d.process_manifest(a.vin, manifest(a, now), JSON),
            lambda: d.process_manifest(b.vin, forged, JSON),
            lambda: d.process_manifest("VIN-NOT-REGISTERED", manifest(c, now), JSON),
            lambda: d.process_manifest(c.vin, manifest(c, now), JSON),
        ],
    )
    assert d.writer.batch_sizes[4] == 1
    assert results[0]["accepted"] and results[3]["accepted"]
    assert isinstance(results[1], BadSignature)
    assert isinstance(results[2], NotFound)
    assert d.vehicle_status(b.vin)["manifests_accepted"] == 0
    assert [d.vehicle_status(v.vin)["manifests_accepted"] for v in (a, c)] == [1, 1]
    assert _count(db_url, inv.manifests) == 2


def test_group_commit_a_unit_that_fails_after_writing_is_rolled_back_to_its_savepoint(
    director, db_url
):
    d = director
    a, b = _fleet(d, 2)
    now = d.clock()
    vid_b = d.vehicle_status(b.vin)
    marker = 4_000_000_000

    def writes_then_fails(conn: Any) -> None:
        conn.execute(inv.vehicles.update().values(last_manifest_at=marker))
        changed = sa.select(sa.func.count()).where(inv.vehicles.c.last_manifest_at == marker)
        assert conn.execute(changed).scalar_one() == 2  # written, inside the transaction
        raise ValueError("fails after its writes")

    results = _around(d, a, b, now, lambda: d.writer.run(writes_then_fails))
    assert isinstance(results[1], ValueError)
    assert results[0]["accepted"] and results[2]["accepted"]
    assert _count(db_url, inv.vehicles, last_manifest_at=marker) == 0
    assert d.vehicle_status(b.vin)["last_manifest_at"] != vid_b["last_manifest_at"]
    assert _count(db_url, inv.manifests) == 2


def test_group_commit_a_failing_check_needs_no_second_run(director, db_url):
    """A checked unit's check reads only: when it raises, the batch commits the others in
    its first run (no savepoints, each check run once)."""
    d = director
    a, b = _fleet(d, 2)
    now = d.clock()
    checks: list[str] = []

    def check(conn: Any) -> Callable[[Any], str]:
        checks.append("bad")
        conn.execute(sa.select(sa.func.count()).select_from(inv.vehicles))
        raise NotFound("refused by its check")

    results = _around(d, a, b, now, lambda: d.writer.run_checked(check))
    assert isinstance(results[1], NotFound)
    assert results[0]["accepted"] and results[2]["accepted"]
    assert checks == ["bad"]
    assert _count(db_url, inv.manifests) == 2


def test_group_commit_a_failing_write_runs_the_batch_again_with_savepoints(director, db_url):
    """A write that raises after writing rolls the first run back; the batch runs again,
    each unit in a savepoint: the failing unit changes nothing, every other unit is stored
    exactly once."""
    d = director
    a, b = _fleet(d, 2)
    now = d.clock()
    marker = 4_000_000_001
    checks: list[str] = []

    def check(conn: Any) -> Callable[[Any], None]:
        checks.append("checked")

        def write(conn: Any) -> None:
            conn.execute(inv.vehicles.update().values(last_manifest_at=marker))
            raise ValueError("fails after its writes")

        return write

    results = _around(d, a, b, now, lambda: d.writer.run_checked(check))
    assert isinstance(results[1], ValueError)
    assert results[0]["accepted"] and results[2]["accepted"]
    assert checks == ["checked", "checked"]  # the first run, then the one with savepoints
    assert _count(db_url, inv.vehicles, last_manifest_at=marker) == 0
    assert _count(db_url, inv.manifests) == 2
    assert _count(db_url, inv.nonces) == 4  # two ECUs each, stored once
    assert [d.vehicle_status(v.vin)["manifests_accepted"] for v in (a, b)] == [1, 1]


def test_5_3_2_1_a_nonce_reused_within_one_batch_is_refused(director, db_url):
    """Two manifests of one vehicle in the same batch: the second sees the first's nonces
    (units run one after another in the transaction), so the replay is refused."""
    d = director
    (v,) = _fleet(d, 1)
    now = d.clock()
    tcu, brk = f"{v.vin}-tcu", f"{v.vin}-brk"
    nonce = os.urandom(16)
    first = manifest(v, now, reports=[report(v, tcu, now, nonce=nonce), report(v, brk, now)])
    again = manifest(v, now, reports=[report(v, tcu, now, nonce=nonce), report(v, brk, now)])
    d.writer.batch_sizes.clear()
    results = _together(
        d,
        [
            lambda: d.process_manifest(v.vin, first, JSON),
            lambda: d.process_manifest(v.vin, again, JSON),
        ],
    )
    assert d.writer.batch_sizes[2] == 1
    # arrival order decides which one is first; exactly one is accepted
    accepted = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, ReplayAttack)]
    assert len(accepted) == 1 and len(refused) == 1, results
    assert d.vehicle_status(v.vin)["manifests_accepted"] == 1
    assert _count(db_url, inv.nonces, nonce=nonce.hex()) == 1


def test_5_3_2_1_a_counter_repeated_within_one_batch_is_refused(director):
    d = director
    (v,) = _fleet(d, 1)
    now = d.clock()
    tcu, brk = f"{v.vin}-tcu", f"{v.vin}-brk"

    def m(c: int) -> bytes:
        return manifest(v, now, reports=[report(v, tcu, now, counter=c), report(v, brk, now)])

    results = _together(d, [lambda: d.process_manifest(v.vin, m(7), JSON) for _ in range(3)])
    assert sum(isinstance(r, dict) for r in results) == 1
    assert sum(isinstance(r, ReplayAttack) for r in results) == 2
    assert d.vehicle_status(v.vin)["manifests_accepted"] == 1


class Crash(BaseException):
    """Not an Exception: escapes the unit's savepoint handling and fails the batch."""


def test_group_commit_a_failing_batch_answers_every_caller_and_stores_nothing(director, db_url):
    d = director
    a, b = _fleet(d, 2)
    now = d.clock()

    def crash(conn: Any) -> None:
        raise Crash("the writer's transaction cannot go on")

    results = _around(d, a, b, now, lambda: d.writer.run(crash))
    # nobody hangs, everybody gets the batch's error, and nothing of it was committed
    assert all(isinstance(r, Crash) for r in results), results
    assert _count(db_url, inv.manifests) == 0
    # the writer goes on with the next batch
    assert d.process_manifest(a.vin, manifest(a, now), JSON)["accepted"]
    assert _count(db_url, inv.manifests) == 1


def test_group_commit_a_lost_connection_fails_its_batch_and_the_next_one_commits(director, db_url):
    d = director
    a, b = _fleet(d, 2)
    now = d.clock()

    def lose_connection(conn: Any) -> None:
        conn.connection.dbapi_connection.close()  # as if the database went away

    results = _around(d, a, b, now, lambda: d.writer.run(lose_connection))
    assert all(isinstance(r, Exception) for r in results), results
    assert _count(db_url, inv.manifests) == 0
    assert d.process_manifest(b.vin, manifest(b, now), JSON)["accepted"]
    assert _count(db_url, inv.manifests) == 1


def test_group_commit_dispose_finishes_queued_manifests_and_a_later_one_restarts_it(
    director, db_url
):
    d = director
    fleet = _fleet(d, 4)
    now = d.clock()
    held = Held(d)
    out: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda v=v: out.append(d.process_manifest(v.vin, manifest(v, now), JSON)),
            daemon=True,
        )
        for v in fleet
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while d.writer.pending < len(fleet):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    closer = threading.Thread(target=d.dispose, daemon=True)
    closer.start()
    held.release_when_queued(len(fleet))
    closer.join(60)
    for t in threads:
        t.join(60)
    assert len(out) == len(fleet) and all(r["accepted"] for r in out)
    assert _count(db_url, inv.manifests) == len(fleet)
    # a disposed Director still answers: the next manifest starts a new writer
    assert d.process_manifest(fleet[0].vin, manifest(fleet[0], now), JSON)["accepted"]


def test_group_commit_an_idle_writer_gives_its_connection_back_to_the_pool(director):
    d = director
    fleet = _fleet(d, 3)
    now = d.clock()
    held = Held(d)
    out: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda v=v: out.append(d.process_manifest(v.vin, manifest(v, now), JSON)),
            daemon=True,
        )
        for v in fleet
    ]
    for t in threads:
        t.start()
    held.release_when_queued(len(fleet))
    for t in threads:
        t.join(60)
    assert len(out) == len(fleet) and all(r["accepted"] for r in out)
    # nothing queued: the writer (on SQLite it keeps its connection from one batch to the
    # next) holds no connection while it waits
    deadline = time.monotonic() + 60
    while d.engine.pool.checkedout():
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert d.process_manifest(fleet[0].vin, manifest(fleet[0], now), JSON)["accepted"]
