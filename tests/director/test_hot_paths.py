"""The Director's hot requests at fleet scale (issue 20), counted and planned, never timed:
the SQL statements a request makes and the query plan of each (SQLite ``EXPLAIN QUERY
PLAN``, PostgreSQL ``EXPLAIN`` with sequential scans priced out, so that a plan without a
usable index shows as one).

- an unchanged timestamp poll of a vehicle the cache misses: at most one statement, an
  index search, nothing signed; a hit: none;
- many misses at once: at most one statement each (they share lookups);
- a manifest upload: the same statements with 10 vehicles registered as with 200, none of
  them a scan of a fleet-sized table.

Statements are counted as the driver runs them, in every thread of the running service:
sqlite3's trace callback, a psycopg2 cursor that notes each ``execute``. The manifest path
runs SQL text on the DBAPI cursor (director/manifests.py), where SQLAlchemy's
``before_cursor_execute`` event does not see it; what that event sees (the poll path) is
recorded too and must be among the driver's statements. Performance itself is bench
figure 8's (``docs/scale.md``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from oem import Clock, make_director, make_image_repo, make_vehicle, manifest

from director import publishing
from director.director_server import create_app

#: the tables a fleet grows: a statement that scans one of them costs O(fleet)
FLEET_TABLES = ("vehicles", "ecus", "vehicle_metadata", "nonces", "assignments")
NAMES = ("timestamp.json", "timestamp.der", "timestamp.cder")


class Statements:
    """Every statement the database driver runs for ``engine`` (any thread) while
    :meth:`counting`, with its parameters (see the module docstring). Installed before the
    engine makes the connections it counts on."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.active = False
        self.seen: list[tuple[str, Any]] = []
        self.via_sqlalchemy: list[str] = []
        sa.event.listen(engine, "connect", self._hook)
        sa.event.listen(engine, "before_cursor_execute", self._event)
        engine.dispose()  # connections made before are not hooked: none is kept

    def _note(self, statement: str, parameters: Any = None) -> None:
        if self.active:
            self.seen.append((statement, parameters))

    def _hook(self, dbapi_conn: Any, _record: Any) -> None:
        if self.engine.dialect.name == "sqlite":
            dbapi_conn.set_trace_callback(self._note)  # the SQL as run, values expanded
            return
        import psycopg2.extensions

        note = self._note

        class Noting(psycopg2.extensions.cursor):  # type: ignore[misc]
            def execute(self, query: Any, params: Any = None) -> Any:
                note(query, params)
                return super().execute(query, params)

            def executemany(self, query: Any, params_seq: Any) -> Any:
                params_seq = list(params_seq)
                for params in params_seq:  # one statement run per parameter set
                    note(query, params)
                return super().executemany(query, params_seq)

        dbapi_conn.cursor_factory = Noting

    def _event(self, conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if self.active:
            self.via_sqlalchemy.append(statement)

    @contextlib.contextmanager
    def counting(self) -> Iterator[list[tuple[str, Any]]]:
        self.seen, self.via_sqlalchemy = [], []
        self.active = True
        try:
            yield self.seen
        finally:
            self.active = False
        # what SQLAlchemy's event saw, the driver ran (not the converse: manifests)
        assert len(self.via_sqlalchemy) <= len(self.seen)
        if self.engine.dialect.name == "postgresql":  # (SQLite's trace has values in)
            ran = {_shape(s) for s, _ in self.seen}
            missed = [s for s in self.via_sqlalchemy if _shape(s) not in ran]
            assert not missed, f"statements the driver hook did not see: {missed}"


@pytest.fixture
def hot(tmp_path: Path, db_url: str, now, serve_app, monkeypatch):
    """A Director on ``db_url`` served over HTTP with its background jobs far apart (no
    statement of theirs in a count), a statement counter and a count of signings."""
    clock = Clock(now)
    director, _ = make_director(tmp_path, make_image_repo(tmp_path, now), db_url, clock)
    stmts = Statements(director.engine)
    url = serve_app(create_app(director=director, refresh_interval=3600.0, tick_interval=3600.0))
    signed: list[str] = []
    real = publishing.RepositoryBuilder

    def builder(*args: Any, **kw: Any) -> Any:  # every signing builds one
        signed.append(str(kw.get("vehicle_id")))
        return real(*args, **kw)

    monkeypatch.setattr(publishing, "RepositoryBuilder", builder)
    client = httpx.Client(base_url=url, timeout=60)
    yield {"d": director, "c": client, "stmts": stmts, "signed": signed}
    client.close()
    director.dispose()


def _register(d: Any, first: int, count: int) -> list[Any]:
    vehicles = [make_vehicle(f"HOT{i:05d}") for i in range(first, first + count)]
    for v in vehicles:
        d.register_vehicle(v.vin, v.specs())
    return vehicles


def _open_lookups(d: Any, c: httpx.Client, vin: str) -> None:
    """One miss first: the service opens its lookups' connection (a SQLite one gets its
    busy timeout then, once: no poll's statement)."""
    d.publisher.invalidate(None)
    assert c.get(f"/vehicles/{vin}/metadata/timestamp.json").status_code == 200


def _selects(seen: list[tuple[str, Any]]) -> list[str]:
    return [s for s, _ in seen if s.lstrip().upper().startswith("SELECT")]


def test_an_unchanged_poll_missed_by_the_cache_is_one_indexed_lookup_and_signs_nothing(hot):
    d, c, stmts = hot["d"], hot["c"], hot["stmts"]
    vehicles = _register(d, 0, 3)
    stored = {v.vin: {n: d.metadata_file(v.vin, n) for n in NAMES} for v in vehicles}
    _open_lookups(d, c, vehicles[0].vin)
    hot["signed"].clear()
    for v in vehicles[1:]:
        for name in NAMES:
            d.publisher.invalidate(v.vin)  # a vehicle the cache does not hold
            with stmts.counting() as seen:
                r = c.get(f"/vehicles/{v.vin}/metadata/{name}")
            assert r.status_code == 200 and r.content == stored[v.vin][name]
            assert len(seen) <= 1, seen
            assert len(_selects(seen)) == 1 and "vehicle_metadata" in seen[0][0]
            _assert_indexed(d.engine, seen)
            # then a hit: no statement
            with stmts.counting() as seen:
                r = c.get(f"/vehicles/{v.vin}/metadata/{name}")
            assert r.status_code == 200 and r.content == stored[v.vin][name]
            assert seen == []
    assert hot["signed"] == []


def test_the_rest_of_a_vehicle_after_a_timestamp_lookup_comes_whole(hot):
    """The timestamp lookup caches only the timestamps: a snapshot or targets request
    next reads the whole row (one statement) and gets the same bytes as ever."""
    d, c, stmts = hot["d"], hot["c"], hot["stmts"]
    (v,) = _register(d, 0, 1)
    names = ["1.snapshot.json", "snapshot.der", "1.targets.cder", "targets.json", "1.root.json"]
    stored = {n: d.metadata_file(v.vin, n) for n in names}
    d.publisher.invalidate(v.vin)
    assert c.get(f"/vehicles/{v.vin}/metadata/timestamp.json").status_code == 200
    for n in names:
        with stmts.counting() as seen:
            r = c.get(f"/vehicles/{v.vin}/metadata/{n}")
        assert r.status_code == 200 and r.content == stored[n], n
        assert len(_selects(seen)) <= 1
    assert c.get(f"/vehicles/{v.vin}/metadata/2.snapshot.json").status_code == 404
    assert c.get("/vehicles/NOSUCHVIN/metadata/timestamp.json").status_code == 404


def test_misses_that_arrive_together_cost_at_most_one_statement_each(hot):
    d, c, stmts = hot["d"], hot["c"], hot["stmts"]
    vehicles = _register(d, 0, 40)
    _open_lookups(d, c, vehicles[0].vin)
    expected = {v.vin: d.metadata_file(v.vin, "timestamp.json") for v in vehicles}
    d.publisher.invalidate(None)
    hot["signed"].clear()

    def poll(vin: str) -> bytes:
        with httpx.Client(base_url=str(c.base_url), timeout=60) as own:
            r = own.get(f"/vehicles/{vin}/metadata/timestamp.json")
        assert r.status_code == 200
        return r.content

    with stmts.counting() as seen, concurrent.futures.ThreadPoolExecutor(10) as pool:
        got = dict(zip(expected, pool.map(poll, expected), strict=True))
    assert got == expected
    assert 1 <= len(seen) <= len(vehicles)
    assert all("vehicle_metadata" in s for s in _selects(seen)) and len(_selects(seen)) == len(seen)
    _assert_indexed(d.engine, seen)
    assert hot["signed"] == []


def test_a_manifest_costs_the_same_statements_at_10_and_at_200_vehicles(hot, now):
    d, c, stmts = hot["d"], hot["c"], hot["stmts"]
    (v, *_) = _register(d, 0, 10)

    def upload() -> list[tuple[str, Any]]:
        body = manifest(v, now)
        with stmts.counting() as seen:
            r = c.post(
                f"/vehicles/{v.vin}/manifest",
                content=body,
                headers={"content-type": "application/json"},
            )
        assert r.status_code == 200, r.text
        return list(seen)

    upload()  # the first fills the caches a running service holds (the ECUs' keys)
    at_10 = upload()
    _register(d, 10, 190)
    at_200 = upload()
    assert [_shape(s) for s, _ in at_200] == [_shape(s) for s, _ in at_10]
    assert len(at_10) <= 40, [s for s, _ in at_10]
    _assert_indexed(d.engine, at_200)


def test_the_plan_check_sees_a_table_read_whole(hot):
    """The check itself: a lookup no index serves shows as a scan of its table."""
    assert _scans(hot["d"].engine, "SELECT id FROM vehicles WHERE length(vin) = 3", None) == [
        "vehicles"
    ]


def _shape(statement: str) -> str:
    """A statement without its values (SQLite's trace expands them) and numbers."""
    text = re.sub(r"[xX]'[0-9a-fA-F]*'|'(?:[^']|'')*'", "?", " ".join(statement.split()))
    return re.sub(r"\b\d+\b", "N", text)


def _assert_indexed(engine: sa.Engine, seen: list[tuple[str, Any]]) -> None:
    """No statement of ``seen`` scans a table of :data:`FLEET_TABLES`."""
    for statement, parameters in seen:
        verb = statement.lstrip().split(None, 1)[0].upper()
        if verb not in ("SELECT", "UPDATE", "DELETE", "INSERT", "WITH"):
            continue
        scans = _scans(engine, statement, parameters)
        assert not scans, f"{statement}\n scans {scans}"


def _scans(engine: sa.Engine, statement: str, parameters: Any) -> list[str]:
    """The fleet tables ``statement`` reads whole, by its query plan."""
    with engine.connect() as conn:
        cur = conn.connection.driver_connection.cursor()
        if engine.dialect.name == "sqlite":  # the traced text has its values in it
            cur.execute(f"EXPLAIN QUERY PLAN {statement}")
            found = [m[1] for r in cur.fetchall() if (m := re.match(r"SCAN (\w+)", r[-1]))]
        else:
            # a small table is cheaper to read whole: price that out, so that a plan
            # reading a table whole is one that has no index to use
            cur.execute("SET LOCAL enable_seqscan = off")
            cur.execute(f"EXPLAIN {statement}", parameters)
            found = [m[1] for r in cur.fetchall() if (m := re.search(r"Seq Scan on (\w+)", r[0]))]
        cur.close()
        conn.rollback()
    return [t for t in found if t in FLEET_TABLES]
