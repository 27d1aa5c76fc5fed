"""Accountable admin access (issue 19): named tokens with scopes and an expiry.

- every admin route of the committed OpenAPI document refuses (403) each token without its
  scope and lets each token with it through; no token is 401 everywhere;
- a token expires; a token revoked at run time (API or CLI) is refused from the next
  request, without a restart;
- every change through the API or the CLI is a row of the audit log (who, what, when,
  outcome, request id), readable through the API;
- tokens from before (``director.json``) keep working, as named tokens.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from services import within

from director import director_cli
from director.tokens import SCOPES

ROOT = Path(__file__).resolve().parents[2]
#: what a path parameter is filled with: values that exist nowhere, so nothing changes
PARAMS = {
    "vin": "NOVIN",
    "aid": "999",
    "cid": "999",
    "name": "nope",
    "serial": "nope",
    "fingerprint": "0" * 64,
}


def _operations() -> list[tuple[str, str, str]]:
    doc = json.loads((ROOT / "docs" / "openapi" / "director.json").read_text())
    ops = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            if "x-required-scope" in op:
                filled = path.format(**PARAMS)
                ops.append((method.upper(), filled, op["x-required-scope"]))
    return ops


def _token(c: httpx.Client, name: str, scopes: list[str], **kw) -> str:
    r = c.post("/api/v1/tokens", json={"name": name, "scopes": scopes, **kw})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_route_enforces_its_scope_as_the_openapi_says(env):
    c = env["c"]
    tokens = {scope: _token(c, f"t-{scope}", [scope]) for scope in SCOPES}
    ops = _operations()
    assert len(ops) >= 30
    raw = httpx.Client(base_url=env["url"], timeout=30)
    for method, path, needed in ops:
        body = {} if method in ("POST", "PUT") else None
        assert raw.request(method, path, json=body).status_code == 401, (method, path)
        for scope, token in tokens.items():
            auth = {"Authorization": f"Bearer {token}"}
            r = raw.request(method, path, json=body, headers=auth)
            allowed = scope in (needed, "admin")
            assert (r.status_code == 403) != allowed, (method, path, scope, r.status_code, r.text)
            if not allowed:
                assert f"lacks the {needed!r} scope" in r.json()["detail"]
            assert r.status_code < 500, (method, path, scope, r.text)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_token_expires_and_a_revoked_one_is_refused_at_once(env, capsys):
    c, clock = env["c"], env["clock"]
    raw = httpx.Client(base_url=env["url"], timeout=30)
    short = _token(c, "ci-bot", ["read"], expires_in_seconds=60)
    auth = {"Authorization": f"Bearer {short}"}
    assert raw.get("/api/v1/vehicles", headers=auth).status_code == 200
    clock.advance(timedelta(seconds=61))
    r = raw.get("/api/v1/vehicles", headers=auth)
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    # revoked through the API: the next request is refused, no restart
    ops = _token(c, "ops", ["assign", "read"])
    auth = {"Authorization": f"Bearer {ops}"}
    assert raw.get("/api/v1/assignments", headers=auth).status_code == 200
    r = c.delete("/api/v1/tokens/ops")
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    r = raw.get("/api/v1/assignments", headers=auth)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    # revoked through the CLI, on the same database
    other = _token(c, "other", ["read"])
    auth = {"Authorization": f"Bearer {other}"}
    assert raw.get("/api/v1/vehicles", headers=auth).status_code == 200
    ddir = env["tmp"] / "director"
    assert director_cli.main(["token", "revoke", str(ddir), "other"]) == 0
    assert raw.get("/api/v1/vehicles", headers=auth).status_code == 401
    states = {t["name"]: t["state"] for t in c.get("/api/v1/tokens").json()}
    assert states["ci-bot"] == "expired" and states["ops"] == states["other"] == "revoked"
    assert all(t.get("token") is None for t in c.get("/api/v1/tokens").json())


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_change_is_in_the_audit_log(env, capsys):
    c = env["c"]
    from oem import make_vehicle

    assigner = _token(c, "assigner", ["assign", "read"])
    v = make_vehicle("AUDIT01")
    changes = [
        (c, "POST", "/api/v1/vehicles", v.api_body(), 201),
        (c, "POST", "/api/v1/groups", {"name": "g1", "vins": ["AUDIT01"]}, 201),
        (c, "POST", "/api/groups/g1/vehicles", {"vins": ["AUDIT01"]}, 200),  # old path
        (c, "DELETE", "/api/v1/groups/g1", None, 200),
    ]
    other = httpx.Client(
        base_url=env["url"], timeout=30, headers={"Authorization": f"Bearer {assigner}"}
    )
    changes += [
        (other, "POST", "/api/v1/groups", {"name": "g2", "vins": []}, 403),  # refused: scope
        (
            other,
            "POST",
            f"/api/v1/vehicles/{v.vin}/assignments",
            {"assignments": [{"ecu": v.primary, "target": "tcu/tcu-5.bin"}]},
            201,
        ),
    ]
    for i, (client, method, path, body, status) in enumerate(changes):
        r = client.request(method, path, json=body, headers={"X-Request-ID": f"req-{i}"})
        assert r.status_code == status, (path, r.text)
        assert r.headers["x-request-id"] == f"req-{i}"
    ddir = env["tmp"] / "director"
    assert director_cli.main(["group", "create", str(ddir), "cli-group"]) == 0
    rows = c.get("/api/v1/audit", params={"limit": 50}).json()["items"]
    by_request = {r["request_id"]: r for r in rows if r["request_id"]}
    for i, (client, method, path, _, status) in enumerate(changes):
        row = by_request[f"req-{i}"]
        assert row["action"] == f"{method} {path}" and row["status"] == status, row
        assert row["actor"] == ("assigner" if client is other else "admin"), row
        assert row["at"] and row["node"]
    assert rows[0]["action"] == "cli group create" and rows[0]["actor"].startswith("cli:")
    assert rows[0]["status"] == 0 and rows[0]["detail"]["name"] == "cli-group"
    # only an authenticated caller leaves a row; a read leaves none
    assert not [r for r in rows if r["action"].startswith("GET")]
    found = c.get("/api/v1/audit", params={"request_id": "req-5"}).json()["items"]
    assert found[0]["actor"] == "assigner"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_tokens_from_before_keep_working_as_named_tokens(env):
    ddir = env["tmp"] / "director"
    from director.config import hash_token

    cfg = json.loads((ddir / "director.json").read_text())
    cfg["tokens"] = {hash_token("an-old-viewer-token"): "viewer"}
    (ddir / "director.json").write_text(json.dumps(cfg))
    raw = httpx.Client(base_url=env["url"], timeout=30)
    viewer = {"Authorization": "Bearer an-old-viewer-token"}
    # the service takes director.json's changes within a second (its watch)
    ok, _ = within(3, lambda: raw.get("/api/v1/vehicles", headers=viewer).status_code == 200)
    assert ok
    assert raw.post("/api/v1/groups", json={"name": "x"}, headers=viewer).status_code == 403
    listed = {t["name"]: t["scopes"] for t in env["c"].get("/api/v1/tokens").json()}
    assert listed["admin"] == ["admin"]  # the admin token of init, the token env uses
    legacy = [n for n in listed if n.startswith("legacy-viewer-")]
    assert legacy and listed[legacy[0]] == ["read"]


def test_an_older_database_is_upgraded_once_and_its_tokens_kept(tmp_path: Path, now, capsys):
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from oem import make_image_repo

    from director import inventory as inv
    from director.director import Director
    from director.director_cli_admin import schema_behind

    image_dir = make_image_repo(tmp_path, now)
    ddir = tmp_path / "director"
    token = Director.init(
        ddir, str(image_dir / "metadata"), (image_dir / "metadata/1.root.json").read_bytes()
    )
    url = json.loads((ddir / "director.json").read_text())["db_url"]
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(inv.MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    command.downgrade(cfg, "0009")  # a Director from before issue 19
    assert "uptane-director upgrade" in (schema_behind(url) or "")
    # a node does not start on an old schema, and says what to run
    assert director_cli.main(["serve", str(ddir), "--port", "1"]) == 2
    assert "run `uptane-director upgrade DIR`" in capsys.readouterr().err
    assert director_cli.main(["upgrade", str(ddir)]) == 0
    assert "1 token(s) from director.json copied in" in capsys.readouterr().out
    assert schema_behind(url) is None
    d = Director(ddir)
    try:
        assert d.token_role(token) == "admin"  # the old admin token, now named "admin"
    finally:
        d.dispose()
