"""Manifest processing at the Director (§5.3.2.1), on SQLite and on PostgreSQL: what is
accepted and recorded, each check that rejects (4xx, nothing changes), attacks reported,
bundles confirmed or failed by manifests, and a restart in the middle of a series."""

from __future__ import annotations

import os
from datetime import timedelta

import httpx
import pytest

from director.director import Director
from director.director_server import create_app
from uptane.keys import PrivateKey
from uptane.metadata import DER, JSON

from .oem import image_of, make_vehicle, manifest, report

CT = {JSON: "application/json", DER: "application/octet-stream"}


def _register(env, vin: str = "VIN0001", ecus=None):
    v = make_vehicle(vin, ecus)
    assert env["c"].post("/api/vehicles", json=v.api_body()).status_code == 201
    return v


def _post(env, vin: str, body: bytes, encoding: str = JSON) -> httpx.Response:
    return httpx.post(
        f"{env['url']}/vehicles/{vin}/manifest",
        content=body,
        headers={"Content-Type": CT[encoding]},
        timeout=60,
    )


def _state(env, vin: str) -> dict:
    s = env["c"].get(f"/api/vehicles/{vin}").json()
    s.pop("metadata")  # the timestamp may be re-signed; that is not a change of state
    return s


@pytest.mark.parametrize("encoding", [JSON, DER])
def test_5_3_2_1_valid_manifest_is_accepted_and_recorded(env, encoding):
    v = _register(env)
    now = env["clock"]()
    r = _post(env, v.vin, manifest(v, now, encoding=encoding), encoding)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] is True and r.json()["attacks"] == []
    s = _state(env, v.vin)
    assert s["manifests_accepted"] == 1 and s["last_manifest_at"] is not None
    assert {e["serial"]: e["installed"]["path"] for e in s["ecus"]} == {
        s_: "factory.bin" for s_ in v.keys
    }


def _rejections(env, v, now):
    """(name, body, encoding, expected status) for every check of §5.3.2.1."""
    other = PrivateKey.generate()
    tcu, brk = f"{v.vin}-tcu", f"{v.vin}-brk"
    used_nonce = os.urandom(16)
    reused = [
        report(v, tcu, now, nonce=used_nonce),
        report(v, brk, now),
    ]
    return used_nonce, [
        ("malformed JSON", b'{"signed": [', JSON, 400),
        ("malformed DER", b"\x30\x03\x02\x01", DER, 400),
        ("not a manifest", b'{"signed": {"_type": "root"}, "signatures": []}', JSON, 400),
        ("primary signature by another key", manifest(v, now, key=other), JSON, 403),
        ("manifest for another vehicle", manifest(v, now, vin="VIN9999"), JSON, 400),
        (
            "another ECU posing as primary",
            manifest(v, now, primary=brk, key=v.keys[brk]),
            JSON,
            403,
        ),
        (
            "report signed by another key",
            manifest(v, now, reports=[report(v, tcu, now), report(v, brk, now, key=other)]),
            JSON,
            403,
        ),
        (
            "unknown ECU",
            manifest(
                v,
                now,
                reports=[
                    report(v, tcu, now),
                    report(v, brk, now),
                    report(v, "intruder", now, key=other),
                ],
            ),
            JSON,
            403,
        ),
        ("registered ECU missing", manifest(v, now, reports=[report(v, tcu, now)]), JSON, 403),
        (
            "one ECU twice",
            manifest(
                v, now, reports=[report(v, tcu, now), report(v, brk, now), report(v, brk, now)]
            ),
            JSON,
            400,  # the decoder refuses two reports of one ECU
        ),
        ("reused nonce", manifest(v, now, reports=reused), JSON, 409),
        (
            "report time too old",
            manifest(
                v, now, reports=[report(v, tcu, now - timedelta(hours=2)), report(v, brk, now)]
            ),
            JSON,
            409,
        ),
        (
            "report time in the future",
            manifest(
                v, now, reports=[report(v, tcu, now + timedelta(hours=2)), report(v, brk, now)]
            ),
            JSON,
            409,
        ),
    ]


def test_5_3_2_1_each_check_rejects_with_a_reason_and_changes_nothing(env):
    v = _register(env)
    now = env["clock"]()
    used_nonce, cases = _rejections(env, v, now)
    tcu, brk = f"{v.vin}-tcu", f"{v.vin}-brk"
    ok = manifest(v, now, reports=[report(v, tcu, now, nonce=used_nonce), report(v, brk, now)])
    assert _post(env, v.vin, ok).status_code == 200
    before = _state(env, v.vin)
    for name, body, encoding, status in cases:
        r = _post(env, v.vin, body, encoding)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert r.json()["detail"], name
        assert _state(env, v.vin) == before, name
    assert _post(env, "VIN-UNKNOWN", manifest(v, now, vin="VIN-UNKNOWN")).status_code == 404


def test_5_3_2_1_counters_must_increase(env):
    v = _register(env)
    now = env["clock"]()
    tcu, brk = f"{v.vin}-tcu", f"{v.vin}-brk"

    def m(c: int) -> bytes:
        return manifest(v, now, reports=[report(v, tcu, now, counter=c), report(v, brk, now)])

    assert _post(env, v.vin, m(5)).status_code == 200
    assert _post(env, v.vin, m(5)).status_code == 409
    assert _post(env, v.vin, m(4)).status_code == 409
    assert _post(env, v.vin, m(6)).status_code == 200


def test_bad_input_oversize_manifest_gets_413(env):
    v = _register(env)
    body = b" " * (env["director"].config.max_body_bytes + 1)
    assert _post(env, v.vin, body).status_code == 413


def test_5_3_2_1_reported_attacks_are_stored_and_visible(env):
    v = _register(env)
    now = env["clock"]()
    tcu, brk = f"{v.vin}-tcu", f"{v.vin}-brk"
    body = manifest(
        v,
        now,
        reports=[report(v, tcu, now), report(v, brk, now, attack="rollback: version 3 < 4")],
    )
    r = _post(env, v.vin, body)
    assert r.status_code == 200 and r.json()["attacks"] == [f"{brk}: rollback: version 3 < 4"]
    [a] = env["c"].get("/api/attacks?vin=VIN0001").json()
    assert a["ecu"] == brk and a["attack"].startswith("rollback")
    ecu = next(e for e in _state(env, v.vin)["ecus"] if e["serial"] == brk)
    assert ecu["last_attack"].startswith("rollback")


def _assign(env, vin: str, pairs: dict[str, str]) -> list[dict]:
    r = env["c"].post(
        f"/api/vehicles/{vin}/assignments",
        json={"assignments": [{"ecu": e, "target": t} for e, t in pairs.items()]},
    )
    assert r.status_code == 201, r.text
    return r.json()


def _targets(env, vin: str) -> dict:
    import json

    return json.loads(env["c"].get(f"/vehicles/{vin}/metadata/targets.json").content)["signed"]


def test_4_3_bundle_is_confirmed_only_when_every_ecu_reports_its_image(env):
    v = _register(env)
    now = env["clock"]()
    tcu, brk = f"{v.vin}-tcu", f"{v.vin}-brk"
    first = _assign(env, v.vin, {tcu: "tcu/tcu-5.bin", brk: "brakes/fw-1.0.bin"})
    bundle = first[0]["bundle"]
    second = _assign(env, v.vin, {brk: "brakes/fw-2.0.bin"})
    assert second[0]["state"] == "pending"
    # only the telematics unit has installed: the bundle stays in flight
    r = _post(env, v.vin, manifest(v, now, installed={tcu: image_of("tcu/tcu-5.bin")}))
    assert r.json()["bundle"] == {"id": bundle, "state": "in_flight"}
    assert set(_targets(env, v.vin)["targets"]) == {"tcu/tcu-5.bin", "brakes/fw-1.0.bin"}
    # both installed: the bundle is confirmed and the waiting assignment goes out
    both = {tcu: image_of("tcu/tcu-5.bin"), brk: image_of("brakes/fw-1.0.bin")}
    r = _post(env, v.vin, manifest(v, now, installed=both))
    assert r.json()["bundle"] == {"id": bundle, "state": "installed"}
    states = {a["id"]: a["state"] for a in env["c"].get("/api/assignments").json()}
    assert states == {
        first[0]["id"]: "installed",
        first[1]["id"]: "installed",
        second[0]["id"]: "in_flight",
    }
    t = _targets(env, v.vin)
    assert set(t["targets"]) == {"brakes/fw-2.0.bin"} and t["vehicleId"] == v.vin
    # the brake ECU reports an attack instead: the bundle fails, targets are emptied
    r = _post(
        env,
        v.vin,
        manifest(
            v,
            now,
            reports=[
                report(v, tcu, now, installed=image_of("tcu/tcu-5.bin")),
                report(v, brk, now, installed=image_of("brakes/fw-1.0.bin"), attack="bad-hash: x"),
            ],
        ),
    )
    assert r.json()["bundle"]["state"] == "failed"
    failed = env["c"].get("/api/assignments?state=failed").json()
    assert [a["id"] for a in failed] == [second[0]["id"]] and "bad-hash" in failed[0]["reason"]
    t = _targets(env, v.vin)
    assert t["targets"] == {} and t["vehicleId"] == v.vin


def test_restart_mid_series_keeps_every_accepted_manifest_and_assignment(env, serve_app):
    v = _register(env)
    now = env["clock"]()
    tcu, brk = f"{v.vin}-tcu", f"{v.vin}-brk"
    _assign(env, v.vin, {tcu: "tcu/tcu-5.bin"})
    nonces = []
    for i in range(3):
        n = os.urandom(16)
        nonces.append(n)
        body = manifest(v, now, reports=[report(v, tcu, now, nonce=n), report(v, brk, now)])
        assert _post(env, v.vin, body).status_code == 200, i
    before = _state(env, v.vin)
    versions = env["c"].get(f"/api/vehicles/{v.vin}").json()["metadata"]
    # stop the Director and start a new process-equivalent on the same database
    serve_app.stop(env["url"])
    env["director"].dispose()
    d2 = Director(env["director"].dir, clock=env["clock"], db_url=env["db_url"])
    env["director"] = d2
    env["url"] = serve_app(create_app(director=d2))
    env["c"] = httpx.Client(
        base_url=env["url"], headers={"Authorization": f"Bearer {env['token']}"}, timeout=60
    )
    assert _state(env, v.vin) == before
    assert before["manifests_accepted"] == 3
    assert [a["state"] for a in before["assignments"]] == ["in_flight"]
    # a nonce accepted before the restart is still refused
    replay = manifest(v, now, reports=[report(v, tcu, now, nonce=nonces[1]), report(v, brk, now)])
    assert _post(env, v.vin, replay).status_code == 409
    # the series continues, and metadata versions keep growing
    done = manifest(v, now, installed={tcu: image_of("tcu/tcu-5.bin")})
    assert _post(env, v.vin, done).json()["bundle"]["state"] == "installed"
    after = env["c"].get(f"/api/vehicles/{v.vin}").json()["metadata"]
    assert after["targets"] > versions["targets"] and after["timestamp"] > versions["timestamp"]
    assert _state(env, v.vin)["manifests_accepted"] == 4


def test_5_3_2_1_one_manifest_sent_concurrently_is_accepted_once(env):
    from concurrent.futures import ThreadPoolExecutor

    v = _register(env)
    body = manifest(v, env["clock"]())
    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = sorted(pool.map(lambda _: _post(env, v.vin, body).status_code, range(6)))
    assert codes == [200, 409, 409, 409, 409, 409]
    assert _state(env, v.vin)["manifests_accepted"] == 1
