"""The Director through its HTTP API, on SQLite and on PostgreSQL: inventory, assignments
and bundles, per-vehicle metadata (§5.3.2), admin auth and bad input."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
from oem import IMAGES, make_vehicle

from director.imageview import HttpSource
from uptane.limits import Limits
from uptane.metadata import DER, decode
from uptane.trust import RepositoryTrust


def _register(env, vin: str = "VIN0001", ecus=None):
    v = make_vehicle(vin, ecus)
    r = env["c"].post("/api/vehicles", json=v.api_body())
    assert r.status_code == 201, r.text
    return v


def _trust(env, vin: str) -> tuple[RepositoryTrust, HttpSource]:
    src = HttpSource(f"{env['url']}/vehicles/{vin}")
    root = src.fetch_metadata("root", 1, 1 << 20)
    assert root is not None
    return RepositoryTrust("director", root, Limits(), vehicle_id=vin), src


def test_5_3_2_admin_api_needs_the_token_and_documents_itself(env):
    raw = httpx.Client(base_url=env["url"])
    assert raw.get("/api/vehicles").status_code == 401
    r = raw.get("/api/vehicles", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    spec = raw.get("/openapi.json").json()
    assert "/api/v1/vehicles" in spec["paths"] and "/vehicles/{vin}/manifest" in spec["paths"]
    assert env["c"].get("/api/vehicles").json() == []


def test_5_2_3_1_new_vehicle_gets_signed_metadata_naming_it_even_with_no_images(env):
    _register(env, "VIN0001")
    trust, src = _trust(env, "VIN0001")
    trust.refresh(src, env["clock"]())
    assert trust.targets is not None
    assert trust.targets.signed.vehicle_id == "VIN0001"
    assert trust.targets.signed.targets == {}
    # DER is served too and decodes to the same vehicle id
    der = env["c"].get("/vehicles/VIN0001/metadata/timestamp.der")
    assert der.status_code == 200
    ts = decode(der.content, Limits(), encoding=DER, role_type="timestamp")
    v = ts.signed.snapshot_meta.version
    snap = env["c"].get(f"/vehicles/VIN0001/metadata/{v}.snapshot.der").content
    assert decode(snap, Limits(), encoding=DER, role_type="snapshot").signed.version == v
    assert env["c"].get("/vehicles/NOPE/metadata/timestamp.json").status_code == 404


def test_5_3_2_assignment_copies_the_image_repository_entry_with_ecu_ids(env):
    v = _register(env, "VIN0001")
    brk = f"{v.vin}-brk"
    r = env["c"].post(
        "/api/vehicles/VIN0001/assignments",
        json={"assignments": [{"ecu": brk, "target": "brakes/fw-2.0.bin"}]},
    )
    assert r.status_code == 201, r.text
    [a] = r.json()
    assert a["state"] == "in_flight" and a["bundle"] is not None
    trust, src = _trust(env, "VIN0001")
    trust.refresh(src, env["clock"]())
    tf = trust.targets.signed.targets["brakes/fw-2.0.bin"]
    image = json.loads((env["image_dir"] / "metadata" / "2.targets.json").read_bytes())["signed"][
        "targets"
    ]["brakes/fw-2.0.bin"]
    assert tf.length == image["length"] and tf.hashes == image["hashes"]
    assert tf.release_counter == IMAGES["brakes/fw-2.0.bin"][2]
    assert tf.ecu_ids == {brk: "brk-v1"} and tf.hardware_ids == ["brk-v1"]
    assert trust.targets.signed.vehicle_id == "VIN0001"


def test_5_3_2_refuses_images_missing_from_the_image_repository_or_for_other_hardware(env):
    v = _register(env, "VIN0001")
    before = env["c"].get("/api/vehicles/VIN0001").json()["metadata"]
    for target, ecu, why in (
        ("brakes/fw-9.9.bin", f"{v.vin}-brk", "not published in the Image repository (yet)"),
        ("tcu/tcu-5.bin", f"{v.vin}-brk", "is for hardware"),  # a telematics image, brake ECU
    ):
        r = env["c"].post(
            "/api/vehicles/VIN0001/assignments",
            json={"assignments": [{"ecu": ecu, "target": target}]},
        )
        assert r.status_code == 422, r.text
        assert why in r.json()["detail"]
        assert "arbitrary-software" not in r.text  # a missing image is not named an attack
    r = env["c"].post(
        "/api/vehicles/VIN0001/assignments",
        json={"assignments": [{"ecu": "no-such-ecu", "target": "tcu/tcu-5.bin"}]},
    )
    assert r.status_code == 404
    assert env["c"].get("/api/assignments").json() == []
    assert env["c"].get("/api/vehicles/VIN0001").json()["metadata"] == before


def test_4_3_partial_bundle_no_new_bundle_while_one_is_in_flight(env):
    v = _register(env, "VIN0001")
    tcu, brk = f"{v.vin}-tcu", f"{v.vin}-brk"
    c = env["c"]
    r = c.post(
        "/api/vehicles/VIN0001/assignments",
        json={
            "assignments": [
                {"ecu": tcu, "target": "tcu/tcu-5.bin"},
                {"ecu": brk, "target": "brakes/fw-1.0.bin"},
            ]
        },
    )
    first = r.json()
    assert {a["bundle"] for a in first} == {first[0]["bundle"]}  # one bundle
    meta = c.get("/api/vehicles/VIN0001").json()["metadata"]
    trust, src = _trust(env, "VIN0001")
    trust.refresh(src, env["clock"]())
    assert set(trust.targets.signed.targets) == {"tcu/tcu-5.bin", "brakes/fw-1.0.bin"}
    # a second request waits: pending, not sent, metadata unchanged
    r = c.post(
        "/api/vehicles/VIN0001/assignments",
        json={"assignments": [{"ecu": brk, "target": "brakes/fw-2.0.bin"}]},
    )
    assert r.status_code == 201
    [second] = r.json()
    assert second["state"] == "pending" and second["bundle"] is None
    assert c.get("/api/vehicles/VIN0001").json()["metadata"]["targets"] == meta["targets"]
    # only one pending assignment per ECU
    r = c.post(
        "/api/vehicles/VIN0001/assignments",
        json={"assignments": [{"ecu": brk, "target": "brakes/fw-1.0.bin"}]},
    )
    assert r.status_code == 409
    # an in-flight assignment cannot be cancelled (409, saying what to do); a pending one
    # can, once
    r = c.delete(f"/api/assignments/{first[0]['id']}")
    assert r.status_code == 409
    assert r.json()["detail"].startswith(f"assignment {first[0]['id']} is in_flight: only a")
    r = c.delete(f"/api/assignments/{second['id']}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    r = c.delete(f"/api/assignments/{second['id']}")
    assert r.status_code == 409 and "is cancelled: only a pending" in r.json()["detail"]
    assert [a["state"] for a in c.get("/api/assignments?vin=VIN0001").json()] == [
        "in_flight",
        "in_flight",
        "cancelled",
    ]


def test_campaign_by_hardware_id_reaches_every_matching_ecu(env):
    _register(env, "VIN0001")
    _register(env, "VIN0002")
    _register(env, "VIN0003", {"VIN0003-ivi": "ivi-v3"})
    r = env["c"].post("/api/campaigns", json={"hardware_id": "tcu-v5", "target": "tcu/tcu-5.bin"})
    assert r.status_code == 201, r.text
    assert len(r.json()["created"]) == 2 and r.json()["skipped"] == []
    states = {(a["vin"], a["ecu"], a["state"]) for a in env["c"].get("/api/assignments").json()}
    assert states == {
        ("VIN0001", "VIN0001-tcu", "in_flight"),
        ("VIN0002", "VIN0002-tcu", "in_flight"),
    }
    r = env["c"].post("/api/campaigns", json={"hardware_id": "ivi-v3", "target": "tcu/tcu-5.bin"})
    assert r.status_code == 422


def test_versions_only_grow_and_timestamps_are_resigned_before_expiry(env):
    _register(env, "VIN0001")
    c, clock = env["c"], env["clock"]
    ts1 = decode(c.get("/vehicles/VIN0001/metadata/timestamp.json").content, Limits()).signed
    # an unchanged poll returns the same bytes
    assert (
        c.get("/vehicles/VIN0001/metadata/timestamp.json").content
        == c.get("/vehicles/VIN0001/metadata/timestamp.json").content
    )
    clock.advance(timedelta(hours=13))  # past half the one-day timestamp lifetime
    env["director"].invalidate("VIN0001")
    ts2 = decode(c.get("/vehicles/VIN0001/metadata/timestamp.json").content, Limits()).signed
    assert ts2.version > ts1.version and ts2.expires > ts1.expires
    assert ts2.snapshot_meta.version == ts1.snapshot_meta.version
    clock.advance(timedelta(days=4))  # snapshot past half its week
    assert env["director"].refresh_expiring() == 1
    ts3 = decode(c.get("/vehicles/VIN0001/metadata/timestamp.json").content, Limits()).signed
    assert ts3.version > ts2.version and ts3.snapshot_meta.version > ts2.snapshot_meta.version
    trust, src = _trust(env, "VIN0001")
    trust.refresh(src, clock())


def test_bad_input_400_413_and_traversal(env):
    c = env["c"]
    r = c.post("/api/vehicles", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "malformed" in r.json()["detail"]
    r = c.post("/api/vehicles", json={"vin": "VIN1"})
    assert r.status_code == 400
    big = {"vin": "V" * 10, "ecus": [], "pad": "x" * (2 * 1024 * 1024)}
    assert c.post("/api/vehicles", json=big).status_code == 413
    v = make_vehicle("VIN0001")
    body = v.api_body()
    body["ecus"][0]["public_key"] = {"keytype": "ed25519", "scheme": "ed25519", "keyval": {}}
    assert c.post("/api/vehicles", json=body).status_code in (400, 422)
    body = v.api_body()
    body["vin"] = "../etc"
    assert c.post("/api/vehicles", json=body).status_code == 422
    _register(env, "VIN0001")
    for bad in ("../secret.bin", "/etc/passwd", "brakes/../../x", "a\x00b"):
        r = c.post(
            "/api/vehicles/VIN0001/assignments",
            json={"assignments": [{"ecu": "VIN0001-brk", "target": bad}]},
        )
        assert r.status_code == 400, bad
    assert c.get("/api/assignments").json() == []


def test_5_4_4_7_director_finds_supplier_images_through_delegations(env):
    from oem import SUPPLIER_IMAGE, add_supplier

    add_supplier(env["image_dir"], env["clock"]())
    _register(env, "VIN0001", {"VIN0001-tcu": "tcu-v5", "VIN0001-gw": "acme-gw"})
    env["director"].image_view.refresh(force=True)
    path = SUPPLIER_IMAGE[0]
    r = env["c"].post(
        "/api/vehicles/VIN0001/assignments",
        json={"assignments": [{"ecu": "VIN0001-tcu", "target": path}]},
    )
    assert r.status_code == 422  # the delegation is for acme-gw hardware only
    r = env["c"].post(
        "/api/vehicles/VIN0001/assignments",
        json={"assignments": [{"ecu": "VIN0001-gw", "target": path}]},
    )
    assert r.status_code == 201, r.text
    [a] = r.json()
    assert a["release_counter"] == SUPPLIER_IMAGE[3] and a["length"] == len(SUPPLIER_IMAGE[1])


def test_read_only_token_gets_403_on_every_change(env):
    v = _register(env, "VIN0001")
    viewer = httpx.Client(
        base_url=env["url"],
        headers={"Authorization": f"Bearer {env['director'].add_token('viewer')}"},
    )
    assert viewer.get("/api/vehicles").status_code == 200
    assert viewer.get("/api/vehicles/VIN0001").status_code == 200
    assert viewer.get("/api/attacks").status_code == 200
    before = env["c"].get("/api/vehicles/VIN0001").json()
    other = make_vehicle("VIN0002")
    changes = [
        viewer.post("/api/vehicles", json=other.api_body()),
        viewer.post(
            "/api/vehicles/VIN0001/assignments",
            json={"assignments": [{"ecu": f"{v.vin}-brk", "target": "brakes/fw-1.0.bin"}]},
        ),
        viewer.post(
            "/api/campaigns", json={"hardware_id": "brk-v1", "target": "brakes/fw-1.0.bin"}
        ),
        viewer.delete("/api/assignments/1"),
    ]
    assert [r.status_code for r in changes] == [403, 403, 403, 403]
    assert env["c"].get("/api/vehicles/VIN0001").json() == before
    assert [x["vin"] for x in env["c"].get("/api/vehicles").json()] == ["VIN0001"]
    viewer.close()


def test_5_4_4_3_director_key_rotation_is_followed_by_vehicles(env):
    from director.director import default_offline_dir

    v = _register(env, "VIN0001")
    trust, src = _trust(env, "VIN0001")
    trust.refresh(src, env["clock"]())
    d = env["director"]
    offline = default_offline_dir(d.dir)
    assert d.rotate_key("root", offline) == 2
    assert d.rotate_key("targets", offline) == 3
    r = env["c"].post(
        "/api/vehicles/VIN0001/assignments",
        json={"assignments": [{"ecu": f"{v.vin}-brk", "target": "brakes/fw-1.0.bin"}]},
    )
    assert r.status_code == 201
    result = trust.refresh(src, env["clock"]())
    assert result.root_rotations == 2 and trust.root.signed.version == 3
    assert "brakes/fw-1.0.bin" in trust.targets.signed.targets
    new_targets_key = d.keys.signers("targets")[0].key.keyid
    assert trust.root.signed.roles["targets"].keyids == [new_targets_key]
    assert [s.keyid for s in trust.targets.signatures] == [new_targets_key]


def test_5_4_4_2_director_entry_matches_the_image_entry_including_shall_match(env):
    from oem import MULTI_HW_IMAGE

    from uptane.verify import check_director_image_match

    _register(env, "VIN0001", {"VIN0001-tcu": "tcu-v5", "VIN0001-gw": "gw-b"})
    path = MULTI_HW_IMAGE[0]
    r = env["c"].post(
        "/api/vehicles/VIN0001/assignments",
        json={"assignments": [{"ecu": "VIN0001-gw", "target": path}]},
    )
    assert r.status_code == 201, r.text
    trust, src = _trust(env, "VIN0001")
    trust.refresh(src, env["clock"]())
    director_tf = trust.targets.signed.targets[path]
    image_tf = env["director"].image_view.lookup(path, "gw-b")
    check_director_image_match(director_tf, image_tf)
    assert director_tf.hardware_ids == ["gw-a", "gw-b"]
    assert director_tf.shall_match == {"bootloader": "3.x"}
    assert director_tf.ecu_ids == {"VIN0001-gw": "gw-b"}


def test_5_3_2_cached_poll_answers_exactly_as_the_route_and_never_stale(env):
    """A cache hit is answered before the framework (MetadataFastPath): same status,
    headers and bytes as the route that filled the cache; an assignment changes what the
    next poll gets at once; unknown names and vehicles still get the route's 404."""
    _register(env, "VIN0001")
    raw = httpx.Client(base_url=env["url"])
    d = env["director"]
    for name in ("timestamp.json", "timestamp.der", "targets.json", "1.root.json", "root.der"):
        d.invalidate("VIN0001")
        miss = raw.get(f"/vehicles/VIN0001/metadata/{name}")  # the route, from the database
        assert d.cached_file("VIN0001", name) == miss.content  # now a hit
        hit = raw.get(f"/vehicles/VIN0001/metadata/{name}")
        assert (
            (hit.status_code, hit.content) == (miss.status_code, miss.content) == (200, hit.content)
        )
        same = ("content-type", "content-length")
        assert {k: hit.headers[k] for k in same} == {k: miss.headers[k] for k in same}
        assert [k for k in hit.headers if k not in ("date", "server")] == [
            k for k in miss.headers if k not in ("date", "server")
        ]
    for path in ("VIN0001/metadata/9.root.json", "VIN0001/metadata/nope.json", "NOPE/metadata/x"):
        r = raw.get(f"/vehicles/{path}")
        assert r.status_code == 404 and r.json()["detail"] == "no such metadata file"
    before = raw.get("/vehicles/VIN0001/metadata/targets.json").content
    assert d.cached_file("VIN0001", "targets.json") == before
    r = env["c"].post(
        "/api/vehicles/VIN0001/assignments",
        json={"assignments": [{"ecu": "VIN0001-brk", "target": "brakes/fw-2.0.bin"}]},
    )
    assert r.status_code == 201, r.text
    after = raw.get("/vehicles/VIN0001/metadata/targets.json").content
    assert after != before and b"brakes/fw-2.0.bin" in after
    # a GET with a body over the cap is still refused by the body cap, hit or not
    big = b"x" * (d.config.max_body_bytes + 1)
    r = raw.request("GET", "/vehicles/VIN0001/metadata/timestamp.json", content=big)
    assert r.status_code == 413
