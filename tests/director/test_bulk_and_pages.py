"""Fleet-scale admin operations (issue 20): bulk vehicle registration in bounded
transactions (counted, never timed), all or nothing, capped, and harmless to run twice;
listings in pages whose cursors stay stable while rows come and go."""

from __future__ import annotations

import base64
import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from director import director_cli
from director import inventory as inv
from director.audit import Audit
from director.bulk import BATCH
from director.paging import encode
from uptane.keys import PrivateKey

#: ECU keys shared by the vehicles of these tests (registration does not need them unique)
KEYS = [PrivateKey.generate().key.to_dict() for _ in range(8)]
ERROR_KEYS = {"status", "error", "detail", "attack", "code", "request_id"}


def vehicle(i: int, key: int = 0, prefix: str = "B") -> dict:
    """A vehicle as the API takes it: a Primary and a brake controller."""
    vin = f"{prefix}{i:05d}"
    return {
        "vin": vin,
        "ecus": [
            {
                "serial": f"{vin}-t",
                "hardware_id": "tcu-v5",
                "public_key": KEYS[(i + key) % len(KEYS)],
                "primary": True,
            },
            {"serial": f"{vin}-b", "hardware_id": "brk-v1", "public_key": KEYS[(i + 1) % 8]},
        ],
    }


def vehicle_count(env) -> int:
    with env["director"].engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(inv.vehicles)).scalar_one()


class Writes:
    """Counts, on the Director's engine, the INSERT statements into the registration's
    tables and the transactions that committed any of them."""

    TABLES = ("vehicles", "ecus", "vehicle_metadata")

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.inserts: Counter[str] = Counter()
        self.commits = 0

    def _statement(self, conn, cursor, statement, params, context, executemany) -> None:  # type: ignore[no-untyped-def]
        m = re.match(r"\s*INSERT INTO (\w+)", statement)
        if m and m.group(1) in self.TABLES:
            self.inserts[m.group(1)] += 1
            conn.info["bulk-writes"] = True

    def _commit(self, conn) -> None:  # type: ignore[no-untyped-def]
        if conn.info.pop("bulk-writes", False):
            self.commits += 1

    def __enter__(self) -> Writes:
        sa.event.listen(self.engine, "before_cursor_execute", self._statement)
        sa.event.listen(self.engine, "commit", self._commit)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._statement)
        sa.event.remove(self.engine, "commit", self._commit)


# --- bulk registration ------------------------------------------------------------------------


def test_bulk_registration_of_2000_vehicles_in_bounded_transactions(env):
    c, d = env["c"], env["director"]
    body = [vehicle(i) for i in range(2000)]
    assert len(json.dumps(body)) < d.config.max_body_bytes  # one request, under the body cap
    with Writes(d.engine) as w:
        r = c.post("/api/v1/vehicles/bulk", json=body)
    assert r.status_code == 201, r.text
    batches = math.ceil(2000 / BATCH)
    assert r.json() == {
        "requested": 2000,
        "registered": 2000,
        "skipped": [],
        "transactions": batches,
    }
    # a few statements per transaction, not one per vehicle (executemany; a driver may
    # split one into pages of rows, never into rows)
    assert w.commits == batches
    for table in Writes.TABLES:
        assert 1 <= w.inserts[table] <= 2 * batches, (table, w.inserts)
    assert vehicle_count(env) == 2000
    # every vehicle's first metadata is there, signed in JSON at registration; the other
    # encodings are signed at its first poll (Publisher.incomplete), versions going on
    raw = c.get("/vehicles/B01999/metadata/timestamp.json")
    assert raw.status_code == 200 and b'"_type":"timestamp"' in raw.content.replace(b" ", b"")
    for name in ("timestamp.der", "timestamp.cder", "2.targets.der", "2.snapshot.cder"):
        assert c.get(f"/vehicles/B00007/metadata/{name}").status_code == 200, name
    status = c.get("/api/v1/vehicles/B00007").json()
    assert [e["serial"] for e in status["ecus"]] == ["B00007-t", "B00007-b"]
    assert status["metadata"]["targets"] == 2 and status["metadata"]["timestamp"] == 2
    # a vehicle registered in bulk takes assignments like any other
    r = c.post(
        "/api/v1/vehicles/B00008/assignments",
        json={"assignments": [{"ecu": "B00008-b", "target": "brakes/fw-2.0.bin"}]},
    )
    assert r.status_code == 201, r.text
    # one audit row for the request, with its counts
    [row] = c.get("/api/v1/audit", params={"limit": 2}).json()["items"][1:]
    assert row["action"] == "POST /api/v1/vehicles/bulk" and row["status"] == 201
    assert row["detail"] == {
        "requested": 2000,
        "registered": 2000,
        "skipped": 0,
        "transactions": batches,
    }


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_one_bad_vehicle_refuses_the_request_naming_each_by_index(env):
    c = env["c"]
    body = [vehicle(i) for i in range(50)]
    body[7]["ecus"][1]["serial"] = "bad serial!"
    body[30]["vin"] = body[3]["vin"]  # twice in one request
    body[41]["ecus"][1]["primary"] = True  # two primaries
    body[44]["ecus"][0]["public_key"] = {
        "keytype": "ed25519",
        "scheme": "ed25519",
        "keyval": {"public": "00"},
    }
    r = c.post("/api/v1/vehicles/bulk", json=body)
    assert r.status_code == 422, r.text
    err = r.json()
    assert set(err) == ERROR_KEYS
    detail = err["detail"]
    assert detail.startswith("4 of 50 vehicles refused, none registered")
    assert "#7 (B00007): bad ECU serial" in detail
    assert "#30 (B00003): the same VIN as #3" in detail
    assert "#41 (B00041): a vehicle needs exactly one primary ECU" in detail
    assert "#44 (B00044): ECU B00044-t: malformed-input: bad ed25519 public key" in detail
    assert vehicle_count(env) == 0  # nothing written, not even the good ones
    # a client certificate is bound afterwards, never in bulk
    one = vehicle(1)
    one["client_certificate"] = {"csr": "-----BEGIN CERTIFICATE REQUEST-----"}
    r = c.post("/api/v1/vehicles/bulk", json=[vehicle(0), one])
    assert r.status_code == 422 and "#1 (B00001): client_certificate" in r.json()["detail"]
    assert vehicle_count(env) == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_more_vehicles_than_the_cap_is_refused_before_anything_is_read(env):
    c, d = env["c"], env["director"]
    d.config.bulk_max_vehicles = 10
    r = c.post("/api/v1/vehicles/bulk", json=[vehicle(i) for i in range(11)])
    assert r.status_code == 413, r.text
    assert set(r.json()) == ERROR_KEYS
    assert "at most 10 (bulk_max_vehicles in director.json)" in r.json()["detail"]
    assert vehicle_count(env) == 0
    assert c.post("/api/v1/vehicles/bulk", json=[vehicle(i) for i in range(10)]).status_code == 201
    # the body itself stays under the service's byte cap, whatever the count
    assert (
        c.post(
            "/api/v1/vehicles/bulk",
            content=b"[" + b" " * (2 << 20) + b"]",
            headers={"content-type": "application/json"},
        ).status_code
        == 413
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_rerun_skips_identical_vehicles_and_names_a_vin_with_other_keys(env):
    c = env["c"]
    first = [vehicle(i) for i in range(20)]
    assert c.post("/api/v1/vehicles/bulk", json=first).status_code == 201
    r = c.post("/api/v1/vehicles/bulk", json=first)  # the same again: nothing new
    assert r.status_code == 200, r.text
    assert r.json()["registered"] == 0 and r.json()["skipped"] == [v["vin"] for v in first]
    more = first + [vehicle(i) for i in range(20, 25)]
    r = c.post("/api/v1/vehicles/bulk", json=more)
    assert r.status_code == 201 and r.json()["registered"] == 5 and len(r.json()["skipped"]) == 20
    assert vehicle_count(env) == 25
    # a registered VIN with another key, or another ECU: refused by name, nothing written
    changed = [vehicle(i) for i in range(25, 28)] + [vehicle(4, key=3), vehicle(9)]
    changed[4]["ecus"].append(
        {"serial": "B00009-x", "hardware_id": "ivi-v3", "public_key": KEYS[0]}
    )
    r = c.post("/api/v1/vehicles/bulk", json=changed)
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "#3 (B00004): already registered with another public key for ECU B00004-t" in detail
    assert "#4 (B00009): already registered without ECU B00009-x" in detail
    assert vehicle_count(env) == 25


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cli_add_many_reads_json_lines_or_a_list_and_runs_twice_harmlessly(env, capsys):
    ddir = env["tmp"] / "director"
    lines = env["tmp"] / "fleet.jsonl"
    lines.write_text("\n".join(json.dumps(vehicle(i, prefix="C")) for i in range(30)) + "\n\n")
    assert director_cli.main(["vehicle", "add-many", str(ddir), str(lines)]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == {
        "requested": 30,
        "registered": 30,
        "skipped": 0,
        "transactions": 1,
    }
    listed = env["tmp"] / "fleet.json"
    listed.write_text(json.dumps([vehicle(i, prefix="C") for i in range(35)]))
    assert director_cli.main(["vehicle", "add-many", str(ddir), str(listed)]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["registered"] == 5 and json.loads(out.out)["skipped"] == 30
    assert "skipped 30 already registered as in the file: C00000, C00001" in out.err
    # a bad line: each refused vehicle on its own line, exit 2, nothing registered
    bad = [vehicle(i, prefix="D") for i in range(5)]
    bad[2]["ecus"][0]["primary"] = False
    listed.write_text(json.dumps(bad))
    assert director_cli.main(["vehicle", "add-many", str(ddir), str(listed)]) == 2
    err = capsys.readouterr().err
    assert "uptane-director: vehicle #2 (D00002): a vehicle needs exactly one primary" in err
    assert vehicle_count(env) == 35
    lines.write_text(json.dumps(vehicle(0)) + "\n{not json\n")
    assert director_cli.main(["vehicle", "add-many", str(ddir), str(lines)]) == 2
    assert "fleet.jsonl:2: not JSON" in capsys.readouterr().err
    # the audit log has one row for each command that changed something
    rows = Audit(env["director"].engine, env["clock"], "t").entries(actor=None)
    assert sum(r["action"] == "cli vehicle add-many" for r in rows) == 4


# --- pages ------------------------------------------------------------------------------------


def walk(c, path: str, limit: int, between=None, **query: str) -> list[dict]:
    """Every item of a listing, page by page; ``between(n, seen)`` runs after page ``n``
    with the items seen so far."""
    seen: list[dict] = []
    params: dict = {"limit": limit, **query}
    n = 0
    while True:
        r = c.get(path, params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert set(page) == {"items", "next"} and len(page["items"]) <= limit
        seen += page["items"]
        if page["next"] is None:
            return seen
        n += 1
        if between is not None:
            between(n, seen)
        params = {**params, "after": page["next"]}


def delete_vehicles(env, vins: list[str]) -> None:
    with env["director"].engine.begin() as conn:
        ids = select_ids(conn, vins)
        conn.execute(inv.vehicle_metadata.delete().where(inv.vehicle_metadata.c.vin.in_(vins)))
        conn.execute(inv.ecus.delete().where(inv.ecus.c.vehicle_id.in_(ids)))
        conn.execute(inv.vehicles.delete().where(inv.vehicles.c.id.in_(ids)))


def select_ids(conn, vins: list[str]) -> list[int]:
    return list(
        conn.execute(sa.select(inv.vehicles.c.id).where(inv.vehicles.c.vin.in_(vins))).scalars()
    )


def test_a_page_walk_sees_every_remaining_row_once_while_rows_come_and_go(env):
    c = env["c"]
    assert c.post("/api/v1/vehicles/bulk", json=[vehicle(i) for i in range(40)]).status_code == 201
    start = [f"B{i:05d}" for i in range(40)]
    deleted: list[str] = []
    unseen_deleted: list[str] = []
    added: list[str] = []

    def churn(n: int, seen: list[dict]) -> None:
        # after each page: delete the page's last row (the cursor's own row) and a row not
        # yet seen, and register new vehicles
        done = {v["vin"] for v in seen}
        ahead = [v for v in start if v not in done and v not in deleted]
        gone = [seen[-1]["vin"], *ahead[n % 3 : n % 3 + 1]]
        gone = [v for v in gone if v not in deleted]
        delete_vehicles(env, gone)
        deleted.extend(gone)
        unseen_deleted.extend(v for v in gone if v not in done)
        new = [vehicle(100 + 3 * n + k) for k in range(3)]
        assert c.post("/api/v1/vehicles/bulk", json=new).status_code == 201
        added.extend(v["vin"] for v in new)

    seen = [v["vin"] for v in walk(c, "/api/v1/vehicles", 7, churn)]
    assert len(seen) == len(set(seen)), "a row was repeated"
    remaining = [v for v in start if v not in deleted]
    assert not [v for v in remaining if v not in seen], "a row that stayed was skipped"
    assert unseen_deleted and not [v for v in unseen_deleted if v in seen]
    # rows inserted meanwhile come after every row that was there (keys only grow)
    assert set(added) <= set(seen)
    last_old = max(i for i, v in enumerate(seen) if v in start)
    assert all(v in added for v in seen[last_old + 1 :])
    # the audit log pages newest first, with rows written and pruned in between
    d = env["director"]
    audit = Audit(d.engine, env["clock"], "test")
    for i in range(25):
        audit.record("tester", f"act {i}")
    before = [r["id"] for r in walk(c, "/api/v1/audit", 1000)]
    pruned: list[int] = []

    def prune(n: int, seen: list[dict]) -> None:
        audit.record("tester", f"later {n}")
        for victim in (seen[-1]["id"], before[min(n * 4 + 2, len(before) - 1)]):
            with d.engine.begin() as conn:
                conn.execute(inv.audit_log.delete().where(inv.audit_log.c.id == victim))
            pruned.append(victim)

    ids = [r["id"] for r in walk(c, "/api/v1/audit", 4, prune)]
    assert ids == sorted(ids, reverse=True) and len(ids) == len(set(ids))
    assert [i for i in before if i not in pruned] == [
        i for i in ids if i in before and i not in pruned
    ]
    assert not [i for i in ids if i not in before]  # newer rows come before the first page


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_fleet_listing_pages_and_old_paths_keep_their_list(env):
    c = env["c"]
    c.post("/api/v1/vehicles/bulk", json=[vehicle(i) for i in range(12)])
    for i in range(5):
        r = c.post(
            f"/api/v1/vehicles/B{i:05d}/assignments",
            json={"assignments": [{"ecu": f"B{i:05d}-b", "target": "brakes/fw-2.0.bin"}]},
        )
        assert r.status_code == 201, r.text
    assert [v["vin"] for v in walk(c, "/api/v1/vehicles", 5)] == [f"B{i:05d}" for i in range(12)]
    assert len(walk(c, "/api/v1/assignments", 2)) == 5
    assert len(walk(c, "/api/v1/assignments", 2, vin="B00003")) == 1
    assert walk(c, "/api/v1/attacks", 3) == []
    assert walk(c, "/api/v1/certificates", 3) == []
    default = c.get("/api/v1/vehicles").json()
    assert len(default["items"]) == 12 and default["next"] is None
    # the deprecated paths answer the bare list they always did (unless paged)
    old = c.get("/api/vehicles")
    assert old.headers["deprecation"] == "true"
    assert [v["vin"] for v in old.json()] == [f"B{i:05d}" for i in range(12)]
    assert isinstance(c.get("/api/assignments").json(), list)
    assert isinstance(c.get("/api/audit").json(), list)
    assert set(c.get("/api/vehicles", params={"limit": 2}).json()) == {"items", "next"}
    # the CLI follows the cursors, a page of page_limit_max at a time
    ddir = env["tmp"] / "director"
    cfg = json.loads((ddir / "director.json").read_text())
    (ddir / "director.json").write_text(json.dumps({**cfg, "page_limit_max": 5}))
    listed = cli_json(["vehicle", "list", str(ddir)])
    assert [v["vin"] for v in listed] == [f"B{i:05d}" for i in range(12)]
    fleet = cli_json(["status", str(ddir)])
    assert len(fleet["vehicles"]) == 12 and len(fleet["assignments"]) == 5
    assert fleet["attacks"] == []


def cli_json(argv: list[str]) -> object:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert director_cli.main(argv) == 0
    return json.loads(out.getvalue())


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_bad_cursor_or_limit_is_a_400_never_a_500(env):
    c = env["c"]
    c.post("/api/v1/vehicles/bulk", json=[vehicle(i) for i in range(3)])
    good = c.get("/api/v1/vehicles", params={"limit": 1}).json()["next"]
    assert good is not None

    def raw(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    bad = {
        "not base64": "!!!",
        "empty": "",
        "too long": "A" * 500,
        "another listing's": encode("attacks", 1),
        "not a key": raw("vehicles.x"),
        "negative": raw("vehicles.-1"),
        "huge": encode("vehicles", 2**70),
        "no name": raw("17"),
        "not ascii": "_w",
    }
    for what, cursor in bad.items():
        r = c.get("/api/v1/vehicles", params={"after": cursor})
        assert r.status_code == 400, (what, r.status_code, r.text)
        assert set(r.json()) == ERROR_KEYS and "cursor" in r.json()["detail"], what
    r = c.get("/api/v1/attacks", params={"after": good})
    assert r.status_code == 400 and "not one of attacks" in r.json()["detail"]
    for limit in (0, -1, 5001):
        r = c.get("/api/v1/assignments", params={"limit": limit})
        assert r.status_code == 400 and "limit must be 1 to 5000" in r.json()["detail"], limit
    assert c.get("/api/v1/audit", params={"after": "%%%"}).status_code == 400
    assert c.get("/api/v1/certificates", params={"after": good}).status_code == 400
    assert c.get("/api/v1/vehicles", params={"limit": "x"}).status_code == 400


def test_paging_module_round_trips(tmp_path: Path):
    from director.paging import BadPage, Page, decode

    assert decode("vehicles", encode("vehicles", 12345)) == 12345
    page = Page.ask("vehicles", None, None, default=500, maximum=5000)
    assert page.limit == 500 and page.after is None
    with pytest.raises(BadPage):
        Page.ask("vehicles", 6000, None, default=500, maximum=5000)


def test_a_page_is_an_indexed_range_never_a_sort_of_the_table():
    """SQLite's query plan of each listing's page: the rows come by the primary key (or the
    vehicle's index with it), from the cursor on, already in order; no table is sorted, so
    a page deep in a large fleet costs what the first does."""
    from director import paging, vehicles

    engine = inv.make_engine("sqlite://")
    inv.metadata.create_all(engine)
    queries = {
        "vehicles": (vehicles._vehicles_query(), inv.vehicles.c.id, False),
        "assignments": (vehicles._assignments_query(None, "pending"), inv.assignments.c.id, False),
        "assignments of a VIN": (
            vehicles._assignments_query("V1", None),
            inv.assignments.c.id,
            False,
        ),
        "attacks of a VIN": (vehicles._attacks_query("V1"), inv.attacks.c.id, False),
        "audit": (sa.select(inv.audit_log), inv.audit_log.c.id, True),
    }
    try:
        with engine.connect() as conn:
            for what, (q, key, descending) in queries.items():
                page = paging.Page("k", 500, 12345, descending)
                sql = str(
                    paging.keyset(q, key, page).compile(
                        engine, compile_kwargs={"literal_binds": True}
                    )
                )
                plan = [r[3] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]
                assert not [p for p in plan if "TEMP B-TREE" in p or p.startswith("SCAN")], (
                    what,
                    plan,
                )
                [row] = [p for p in plan if p.startswith(f"SEARCH {key.table.name} ")]
                assert ("rowid<?" if descending else "rowid>?") in row, (what, plan)
    finally:
        engine.dispose()
