"""API security of the OEM backend (issue 7), on the real Director and Image repository
services (uvicorn on 127.0.0.1, ``tests/primary/cycle_support.Backend``):

- every admin route, enumerated from each app's OpenAPI document, refuses a request with
  no token, with an unknown token, and (for changes) with a read-only token;
- path traversal in vehicle ids, role names and target paths never reaches a file;
- malformed and oversize manifests are refused;
- one vehicle's genuine manifest, sent for another vehicle, changes neither.

Supplier uploads outside their delegation: ``tests/director/test_image_server.py``
(``test_5_3_1_uploads_outside_the_delegation_get_403_and_change_nothing``); oversize and
malformed admin bodies: ``tests/director/test_director_api.py``
(``test_bad_input_400_413_and_traversal``)."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

import httpx
import pytest
from cycle_support import VIN, backend_and_vehicle

from director.director import EcuSpec
from uptane.keys import PrivateKey

ONE = {"brk-1": "brk-v1"}


@pytest.fixture
def world(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        yield backend, car


def _routes(base: str, skip_tags: set[str]) -> list[tuple[str, str]]:
    doc = httpx.get(f"{base}/openapi.json").json()
    out = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if set(op.get("tags", [])) & skip_tags:
                continue
            out.append((method.upper(), re.sub(r"\{[^}]+\}", "x", path)))
    return out


def _call(base: str, method: str, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, base + path, headers=headers, json={}, timeout=30)


def _director_state(backend, token: str) -> dict[str, object]:
    """Every vehicle's record (ECUs, installed images, manifests accepted, assignments),
    without its metadata (a timestamp may be re-signed; that is not a change of state)."""
    base, auth = backend.director_server.url, {"Authorization": f"Bearer {token}"}
    listing = httpx.get(f"{base}/api/vehicles", headers=auth)
    assert listing.status_code == 200
    vins = [v if isinstance(v, str) else v["vin"] for v in listing.json()]
    out: dict[str, object] = {}
    for vin in vins:
        detail = httpx.get(f"{base}/api/vehicles/{vin}", headers=auth).json()
        detail.pop("metadata", None)
        out[vin] = detail
    out["assignments"] = httpx.get(f"{base}/api/assignments", headers=auth).json()
    return out


def test_every_director_admin_route_refuses_missing_wrong_and_read_only_tokens(world):
    backend, _ = world
    base = backend.director_server.url
    admin = backend.director.add_token("admin")
    viewer = backend.director.add_token("viewer")
    before = _director_state(backend, admin)
    routes = [r for r in _routes(base, {"vehicle"}) if r[1].startswith("/api/")]
    assert len(routes) >= 8, routes  # the whole admin API, not a handful
    for method, path in routes:
        for token in (None, "not-a-token", admin[::-1]):
            r = _call(base, method, path, token)
            assert r.status_code == 401, (method, path, token, r.status_code)
        if method != "GET":
            r = _call(base, method, path, viewer)
            assert r.status_code == 403, (method, path, "viewer", r.status_code)
    assert _director_state(backend, admin) == before


def test_every_image_repository_api_route_refuses_missing_and_wrong_tokens(world):
    backend, _ = world
    base = backend.image_server.url
    routes = [r for r in _routes(base, set()) if r[1].startswith("/api/")]
    assert {p for _, p in routes} >= {"/api/v1/images/x", "/api/v1/metadata/x", "/api/v1/status"}
    # the deprecated unversioned aliases (not in the document) are guarded the same way
    routes += [(m, p.replace("/api/v1/", "/api/", 1)) for m, p in routes]
    status_before = httpx.get(f"{base}/metadata/timestamp.json").content
    for method, path in routes:
        for token in (None, "not-a-token"):
            r = _call(base, method, path, token)
            assert r.status_code == 401, (method, path, token, r.status_code)
    assert httpx.get(f"{base}/metadata/timestamp.json").content == status_before


TRAVERSAL = ["..%2F..%2Fdirector.json", "..%2Fkeys%2Ftimestamp.pem", "%2Fetc%2Fpasswd", ".."]


def test_path_traversal_in_vehicle_ids_role_names_and_target_paths_is_refused(world):
    backend, _ = world
    d, i = backend.director_server.url, backend.image_server.url
    for bad in TRAVERSAL:
        for url in (
            f"{d}/vehicles/{VIN}/metadata/{bad}",
            f"{d}/vehicles/{bad}/metadata/root.json",
            f"{i}/metadata/{bad}",
            f"{i}/targets/{bad}",
            f"{i}/targets/brakes/..%2F..%2F..%2Fconfig.json",
        ):
            r = httpx.get(url)
            assert r.status_code in (400, 404, 422), (url, r.status_code)
            assert b"PRIVATE KEY" not in r.content and b"admin_token" not in r.content
    admin = _image_admin(backend)
    for bad in ("../escape.bin", "brakes/../../escape.bin", "/abs.bin", "a\\..\\b.bin"):
        r = httpx.put(f"{i}/api/images/{bad}", content=b"x", headers=_auth(admin))
        assert r.status_code in (400, 403, 404, 422), (bad, r.status_code)
    for bad in ("..%2Ftargets.json", "..%2F..%2Fx.json", "targets%2F..%2Froot.json"):
        r = httpx.put(f"{i}/api/metadata/{bad}", content=b"{}", headers=_auth(admin))
        assert r.status_code in (400, 403, 404, 422), (bad, r.status_code)
    assert not any(p.name.startswith("escape") for p in backend.image_dir.rglob("*"))


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _image_admin(backend) -> str:
    from director.image_repo import ImageRepository

    return ImageRepository(backend.image_dir, datetime.now(UTC)).add_token("admin")


def test_malformed_and_oversize_manifests_are_refused(world):
    backend, _ = world
    admin = backend.director.add_token("admin")
    before = _director_state(backend, admin)
    url = f"{backend.director_server.url}/vehicles/{VIN}/manifest"
    for body, ctype in (
        (b"{not json", "application/json"),
        (b'{"signed": {}, "signatures": []}', "application/json"),
        (b'{"signatures": [], "signed": {"_type": []}}', "application/json"),  # fuzz finding
        (b"\x30\x82\xff\xff" + os.urandom(64), "application/octet-stream"),
        (os.urandom(300), "application/octet-stream"),
        (b"[" * 10_000, "application/json"),
    ):
        r = httpx.post(url, content=body, headers={"Content-Type": ctype})
        assert r.status_code == 400, (body[:20], r.status_code, r.text[:200])
    r = httpx.post(url, content=b" " * (2 << 20), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert _director_state(backend, admin) == before


def test_one_vehicles_manifest_cannot_touch_another_vehicles_state(world):
    backend, car = world
    other = "VIN-OTHER-7"
    k = PrivateKey.generate()
    backend.register(other, [EcuSpec("o-gw", "gw-v1", k.key, True)])
    admin = backend.director.add_token("admin")
    assert car.cycle().error is None
    genuine = backend.director_proxy.posts[-1][2]
    before = _director_state(backend, admin)
    assert {VIN, other} <= set(before)
    r = httpx.post(
        f"{backend.director_server.url}/vehicles/{other}/manifest",
        content=genuine,
        headers={"Content-Type": "application/json"},
    )
    assert 400 <= r.status_code < 500, r.status_code
    assert _director_state(backend, admin) == before
