"""Issue 14, "Done when", first item, with real processes on SQLite and PostgreSQL: the
Image repository and the Director run as ``uptane-image-repo serve`` and
``uptane-director serve``; a vehicle with three ECUs, one of them dead. The other two
update; the dead one's bundle fails by the deadline (the service's own background sweep);
the vehicle gets its next bundle; the attack indicators of the live ECUs are recorded.

The vehicle's manifests are built here with ``uptane.manifest`` as the Primary builds them:
the live ECUs' signed reports, and the dead ECU named in ``unreachable_ecus`` inside the
Primary's signed manifest (the Primary's own change is the coordinator's; this is the
representation it produces, docs/oem-api.md "Unreachable ECUs").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fleet_support import image, vvm
from oem import IMAGES, MULTI_HW_IMAGE, make_image_repo, make_vehicle
from services import Service, within

from director.director import Director
from director.image_repo import ImageRepository, default_offline_dir

pytestmark = pytest.mark.slow

#: seconds an ECU may stay unreachable with its assignment in flight (director.json)
DEADLINE = 2
NEW_BRAKE = ("brakes/fw-3.0.bin", b"brakes three" * 70, ["brk-v1"], 3)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for s in started:
        s.stop()


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _status(admin: httpx.Client, vin: str) -> dict:
    return admin.get(f"/api/vehicles/{vin}").json()


def test_5_3_2_1_three_ecus_one_dead_real_services(tmp_path: Path, db_url: str, services):
    image_dir = make_image_repo(tmp_path, _now())
    images = Service("director.image_cli", image_dir, tmp_path / "image.log")
    services.append(images)
    ddir = tmp_path / "director"
    token = Director.init(
        ddir, images.url, (image_dir / "metadata" / "1.root.json").read_bytes(), db_url=db_url
    )
    cfg = json.loads((ddir / "director.json").read_text())
    cfg["unreachable_deadline_seconds"] = DEADLINE
    (ddir / "director.json").write_text(json.dumps(cfg))
    director = Service("director.director_cli", ddir, tmp_path / "director.log")
    services.append(director)
    # serve says where it is, what it runs on, and its version
    banner = director.text()
    assert f"serving http://127.0.0.1:{director.port}" in banner
    assert "database: " + ("sqlite" if db_url.startswith("sqlite") else "postgresql") in banner
    assert "keys: PEM files in" in banner and "uptane-director " in banner
    admin = httpx.Client(
        base_url=director.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    v = make_vehicle("VIN-DEAD-1", {"gw-1": "gw-a", "brk-1": "brk-v1", "tcu-1": "tcu-v5"})
    assert admin.post("/api/vehicles", json=v.api_body()).status_code == 201
    r = admin.post(
        f"/api/vehicles/{v.vin}/assignments",
        json={
            "assignments": [
                {"ecu": "gw-1", "target": MULTI_HW_IMAGE[0]},
                {"ecu": "brk-1", "target": "brakes/fw-2.0.bin"},
                {"ecu": "tcu-1", "target": "tcu/tcu-5.bin"},
            ]
        },
    )
    assert r.status_code == 201, r.text

    # the two live ECUs install; brk-1 reports an attack indicator; tcu-1 is dead
    runs = {
        "gw-1": (image(MULTI_HW_IMAGE[0], MULTI_HW_IMAGE[1]), MULTI_HW_IMAGE[3]),
        "brk-1": (image("brakes/fw-2.0.bin", IMAGES["brakes/fw-2.0.bin"][0]), 2),
    }
    dead = {"tcu-1": "timeout: no answer on CAN after 3 tries"}
    slow = "slow-retrieval: image download below 100 B/s"

    def send(**kw) -> httpx.Response:
        return httpx.post(
            f"{director.url}/vehicles/{v.vin}/manifest",
            content=vvm(v, _now(), runs, dead=dead, **kw),
            headers={"Content-Type": "application/json"},
            timeout=60,
        )

    r = send(attacks={"brk-1": slow})
    assert r.status_code == 200, r.text
    assert r.json()["unreachable"] == ["tcu-1"] and r.json()["bundle"]["state"] == "in_flight"
    states = {a["ecu"]: a["state"] for a in _status(admin, v.vin)["assignments"]}
    assert states == {"gw-1": "installed", "brk-1": "installed", "tcu-1": "in_flight"}
    status = _status(admin, v.vin)
    assert [(a["ecu"], a["attack"]) for a in status["attacks"]] == [("brk-1", slow)]
    tcu = next(e for e in status["ecus"] if e["serial"] == "tcu-1")
    assert tcu["installed"] is None and tcu["unreachable"]["reason"] == dead["tcu-1"]

    # a new brake release, signed offline while both services run: assigned at once
    repo = ImageRepository(image_dir, _now())
    path, data, hw, rc = NEW_BRAKE
    repo.stage_target(path, data, hw, rc)
    ImageRepository(image_dir, _now(), offline_dir=default_offline_dir(image_dir)).sign(_now())

    def assign_next() -> httpx.Response | None:
        r = admin.post(
            f"/api/vehicles/{v.vin}/assignments",
            json={"assignments": [{"ecu": "brk-1", "target": path}]},
        )
        if r.status_code == 422:
            assert "not published in the Image repository (yet)" in r.json()["detail"]
            assert "arbitrary-software" not in r.text
            return None
        return r

    r, took = within(1.0, assign_next)
    assert r is not None and r.status_code == 201 and took < 1.0, (r and r.text, took)
    assert r.json()[0]["state"] == "pending"  # behind the bundle in flight

    # no manifest needed: the service's sweep fails the dead ECU's assignment by deadline
    def next_bundle() -> bool:
        got = {a["target"]: a for a in _status(admin, v.vin)["assignments"]}
        return got[path]["state"] == "in_flight"

    ok, took = within(DEADLINE + 8, next_bundle, every=0.25)
    assert ok, _status(admin, v.vin)
    got = {a["target"]: a for a in _status(admin, v.vin)["assignments"]}
    assert got["tcu/tcu-5.bin"]["state"] == "failed"
    assert got["tcu/tcu-5.bin"]["reason"].startswith("unreachable: the Primary has named ECU")
    assert [b["state"] for b in _status(admin, v.vin)["bundles"]] == ["failed", "in_flight"]
    targets = json.loads(
        httpx.get(f"{director.url}/vehicles/{v.vin}/metadata/targets.json").content
    )
    assert list(targets["signed"]["targets"]) == [path]

    # the live brake ECU installs it while tcu-1 is still dead; its new indicator recorded
    runs["brk-1"] = (image(path, data), rc)
    r = send(attacks={"brk-1": "freeze: director timestamp expired"})
    assert r.status_code == 200 and r.json()["bundle"]["state"] == "installed"
    attacks = [a["attack"] for a in _status(admin, v.vin)["attacks"]]
    assert attacks == [slow, "freeze: director timestamp expired"]
    admin.close()
    # one log line per admin change, no token in the log
    log = director.text()
    assert "Director admin change done: POST /api/vehicles -> 201" in log
    assert f"POST /api/vehicles/{v.vin}/assignments -> 201" in log
    assert token not in log
