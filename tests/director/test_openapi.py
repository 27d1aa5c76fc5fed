"""The versioned API (issue 19): the OpenAPI documents committed in ``docs/openapi/`` are
exactly what the code declares (a change of a route, a body or a scope is a visible change
of a committed file: run ``python -m director.openapi``), every admin route sits under
``/api/v1`` with its scope, and both services answer errors in one shape."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from director import openapi

ROOT = Path(__file__).resolve().parents[2]
ERROR_KEYS = {"status", "error", "detail", "attack", "code", "request_id"}


def test_committed_openapi_documents_match_the_code():
    wrong = openapi.stale(ROOT / "docs" / "openapi")
    assert not wrong, (
        f"{wrong} differ from the code: run `python -m director.openapi` and commit the result"
    )


def test_every_admin_route_is_versioned_and_names_its_scope():
    doc = json.loads((ROOT / "docs" / "openapi" / "director.json").read_text())
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            if path.startswith("/api/"):
                assert path.startswith("/api/v1/"), path
                assert op.get("x-required-scope") in openapi_scopes(), (method, path)
            else:  # vehicles (signed) and the service's own routes
                assert path.startswith(("/vehicles/", "/healthz", "/metrics")), path
                assert "x-required-scope" not in op


def openapi_scopes() -> set[str]:
    from director.tokens import SCOPES

    return set(SCOPES)


def test_old_paths_answer_as_deprecated_aliases(env):
    r = env["c"].get("/api/vehicles")
    assert r.status_code == 200
    assert r.headers["deprecation"] == "true"
    assert r.headers["link"] == "</api/v1/vehicles>; rel=successor-version"
    r = env["c"].get("/api/v1/vehicles")
    assert r.status_code == 200 and "deprecation" not in r.headers


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_both_services_answer_errors_in_one_shape(env, serve_app):
    from director.image_server import create_app as image_app

    c, raw = env["c"], httpx.Client(base_url=env["url"], timeout=30)
    answers = [
        raw.get("/api/v1/vehicles"),  # 401
        c.get("/api/v1/vehicles/NOPE"),  # 404
        c.post("/api/v1/vehicles", content=b"{", headers={"content-type": "application/json"}),
        c.post("/api/v1/vehicles", json={"vin": "V", "ecus": "x"}),  # 400
        c.post("/api/v1/vehicles", content=b"x" * (2 * 1024 * 1024)),  # 413
        c.get("/no/such/path"),  # 404
        c.put("/api/v1/vehicles"),  # 405
        raw.post("/vehicles/NOPE/manifest", content=b"{}"),  # 400 (the core's error)
        raw.get("/vehicles/NOPE/metadata/timestamp.json"),  # 404
    ]
    images = httpx.Client(base_url=serve_app(image_app(env["image_dir"])), timeout=30)
    answers += [
        images.put("/api/images/x.bin", content=b"x"),  # 401
        images.put("/api/images/x.bin", content=b"x", headers={"Authorization": "Bearer no"}),
        images.get("/metadata/nope.json"),  # 404
        images.get("/targets/../etc/passwd"),  # 400 or 404
    ]
    for r in answers:
        assert r.status_code >= 400, r
        body = r.json()
        assert set(body) == ERROR_KEYS, (r.request.url, body)
        assert body["status"] == r.status_code and body["detail"]
        assert body["request_id"] == r.headers["x-request-id"], (r.request.url, body)
