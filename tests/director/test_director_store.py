"""The inventory store and the CLI: Alembic builds exactly the schema the code uses (on
SQLite and PostgreSQL), an unchanged poll costs at most one indexed lookup, and the
``uptane-director`` subcommands work on the same database as the service."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from oem import Clock, make_director, make_image_repo, make_vehicle

from director import director_cli
from director import inventory as inv
from director.director import Director
from uptane.keys import PrivateKey


def _single_head() -> str:
    """The one head of the migration chain (two heads: two helpers chained to one parent)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(inv.MIGRATIONS))
    heads = ScriptDirectory.from_config(cfg).get_heads()
    assert len(heads) == 1, f"more than one migration head: {heads}"
    return heads[0]


def test_5_3_2_2_migrations_build_the_schema_the_code_uses(tmp_path: Path, db_url: str, now):
    inv.migrate(db_url)
    inv.migrate(db_url)  # idempotent: already at head
    engine = inv.make_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), inv.metadata)
            version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        assert diff == []
        # one head, and the database is at it
        assert version == _single_head()
    finally:
        engine.dispose()


def test_unchanged_poll_costs_at_most_one_indexed_lookup(tmp_path: Path, db_url: str, now):
    clock = Clock(now)
    director, _ = make_director(tmp_path, make_image_repo(tmp_path, now), db_url, clock)
    try:
        v = make_vehicle("VIN0001")
        director.register_vehicle(v.vin, v.specs())
        statements: list[str] = []

        @sa.event.listens_for(director.engine, "before_cursor_execute")
        def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
            if statement.lstrip().upper().startswith("SELECT"):
                statements.append(statement)

        first = director.metadata_file(v.vin, "timestamp.json")
        assert len(statements) <= 1
        statements.clear()
        for _ in range(5):
            assert director.metadata_file(v.vin, "timestamp.json") == first
        assert statements == []  # served from memory
        director.config.cache_seconds = 0  # cache too old: one lookup by primary key
        assert director.metadata_file(v.vin, "timestamp.json") == first
        assert len(statements) == 1 and "vehicle_metadata" in statements[0]
        # the cache is bounded: least recently used vehicles are dropped
        director.config.cache_seconds, director.config.cache_vehicles = 2.0, 1
        w = make_vehicle("VIN0002")
        director.register_vehicle(w.vin, w.specs())
        assert director.metadata_file(w.vin, "timestamp.json") is not None
        assert list(director.publisher._cache) == ["VIN0002"]
    finally:
        director.dispose()


def _run(capsys, *args: str) -> dict | list | str:
    code = director_cli.main([str(a) for a in args])
    out = capsys.readouterr()
    assert code == 0, out.err
    try:
        return json.loads(out.out)
    except json.JSONDecodeError:
        return out.out


def test_cli_init_vehicle_assign_status(tmp_path: Path, capsys, now):
    image_dir = make_image_repo(tmp_path, now)
    d = tmp_path / "director"
    out = _run(
        capsys,
        "init",
        d,
        "--image-repo",
        image_dir / "metadata",
        "--image-root",
        image_dir / "metadata" / "1.root.json",
        "--timestamp-days",
        "0.5",
    )
    token = out.strip().splitlines()[-1]
    cfg = json.loads((d / "director.json").read_text())
    assert token not in json.dumps(cfg) and cfg["admin_token_sha256"]
    assert cfg["expiry_days"] == {"targets": 30.0, "snapshot": 7.0, "timestamp": 0.5}
    viewer = _run(capsys, "token", "add", d, "--role", "viewer").strip().splitlines()[-1]
    probe = Director(d)
    try:
        assert probe.token_role(viewer) == "viewer" and probe.token_role(token) == "admin"
        assert viewer not in (d / "director.json").read_text()
    finally:
        probe.dispose()
    assert (tmp_path / "director.offline-keys" / "root.pem").exists()
    assert not (d / "online-keys" / "root.pem").exists()
    keys = {}
    for serial in ("tcu1", "brk1"):
        k = PrivateKey.generate()
        keys[serial] = k
        (tmp_path / f"{serial}.pub.json").write_text(json.dumps(k.key.to_dict()))
    status = _run(
        capsys,
        "vehicle",
        "add",
        d,
        "VIN42",
        "--ecu",
        f"tcu1:tcu-v5:{tmp_path / 'tcu1.pub.json'}:primary",
        "--ecu",
        f"brk1:brk-v1:{tmp_path / 'brk1.pub.json'}",
    )
    assert [e["serial"] for e in status["ecus"]] == ["tcu1", "brk1"]
    assigned = _run(capsys, "assign", d, "VIN42", "brk1=brakes/fw-2.0.bin")
    assert assigned[0]["state"] == "in_flight"
    shown = _run(capsys, "vehicle", "show", d, "VIN42")
    assert shown["metadata"]["targets"] == 2 and shown["bundles"][0]["state"] == "in_flight"
    fleet = _run(capsys, "status", d)
    assert fleet["vehicles"][0]["vin"] == "VIN42"
    assert director_cli.main(["assign", str(d), "VIN42", "brk1=tcu/tcu-5.bin"]) == 2
    assert "hardware" in capsys.readouterr().err
    # an assignment in flight cannot be cancelled: exit 2 and what to do, no traceback
    assert director_cli.main(["cancel", str(d), str(assigned[0]["id"])]) == 2
    err = capsys.readouterr().err
    assert f"assignment {assigned[0]['id']} is in_flight" in err
    assert "only a pending assignment can be cancelled" in err and "Traceback" not in err
    # the service sees what the CLI did
    svc = Director(d)
    try:
        assert svc.metadata_file("VIN42", "2.targets.json") is not None
    finally:
        svc.dispose()


def test_upgrading_an_existing_database_keeps_its_rows(db_url: str):
    inv.migrate(db_url, "0001")
    engine = inv.make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(inv.vehicles.insert().values(vin="OLD1", created_at=1))
        inv.migrate(db_url)
        with engine.connect() as conn:
            assert conn.execute(sa.select(inv.vehicles.c.vin)).scalars().all() == ["OLD1"]
            cols = {c["name"] for c in sa.inspect(conn).get_columns("assignments")}
        assert "image_custom" in cols
    finally:
        engine.dispose()
