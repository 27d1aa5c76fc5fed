"""Manifest processing at the Director (§5.3.2.1), on SQLite and on PostgreSQL: what is
accepted and recorded, each check that rejects (4xx, nothing changes), attacks reported,
bundles confirmed or failed by manifests, and a restart in the middle of a series."""

from __future__ import annotations

import os
from datetime import timedelta

import httpx
import pytest
from oem import FACTORY, IMAGES, image_of, make_vehicle, manifest, report

from director.director import Director
from director.director_server import create_app
from uptane.keys import PrivateKey
from uptane.metadata import DER, JSON

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


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [
        ("application/der", DER),
        ("Application/Octet-Stream; charset=binary", DER),
        ("application/json; charset=utf-8", JSON),
        ("text/plain", JSON),  # a type no codec takes has always been read as JSON
        (None, JSON),
    ],
)
def test_the_content_type_names_the_manifests_encoding(env, content_type, encoding):
    v = _register(env)
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = manifest(v, env["clock"](), encoding=encoding)
    r = httpx.post(f"{env['url']}/vehicles/{v.vin}/manifest", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] is True


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


# --- attack indicators that persist (a Secondary repeats its last one until a success) ---


def _brk_report(v, now, attack: str | None, installed=None, encoding: str = JSON) -> bytes:
    tcu, brk = f"{v.vin}-tcu", f"{v.vin}-brk"
    return manifest(
        v,
        now,
        reports=[
            report(v, tcu, now, encoding=encoding),
            report(v, brk, now, installed=installed or FACTORY, attack=attack, encoding=encoding),
        ],
        encoding=encoding,
    )


def _attack_rows(env, vin: str) -> list[str]:
    return [a["attack"] for a in env["c"].get(f"/api/attacks?vin={vin}").json()]


def _assignment(env, aid: int) -> dict:
    return next(a for a in env["c"].get("/api/assignments").json() if a["id"] == aid)


def test_4_3_an_old_attack_indicator_does_not_fail_a_bundle_sent_after_it(env):
    v = _register(env)
    now = env["clock"]()
    brk = f"{v.vin}-brk"
    old = "bad-hash: image brakes/fw-1.0.bin: sha256 mismatch"
    [first] = _assign(env, v.vin, {brk: "brakes/fw-1.0.bin"})
    r = _post(env, v.vin, _brk_report(v, now, old))
    assert r.json()["bundle"] == {"id": first["bundle"], "state": "failed"}
    # the OEM assigns again, after the Director acted on that indicator
    [second] = _assign(env, v.vin, {brk: "brakes/fw-2.0.bin"})
    assert second["state"] == "in_flight" and second["bundle"] != first["bundle"]
    for _ in range(2):  # the Secondary still carries its old indicator: not news
        r = _post(env, v.vin, _brk_report(v, now, old))
        assert r.status_code == 200
        assert r.json()["bundle"] == {"id": second["bundle"], "state": "in_flight"}
        assert r.json()["attacks"] == [f"{brk}: {old}"]  # still answered, every time
    assert _assignment(env, second["id"])["state"] == "in_flight"
    assert _attack_rows(env, v.vin) == [old]  # stored once, where it first appeared
    # a genuinely new indicator during the new bundle fails it
    new = "bad-hash: image brakes/fw-2.0.bin: sha256 mismatch"
    r = _post(env, v.vin, _brk_report(v, now, new))
    assert r.json()["bundle"] == {"id": second["bundle"], "state": "failed"}
    a = _assignment(env, second["id"])
    assert a["state"] == "failed" and "fw-2.0" in a["reason"]
    assert _attack_rows(env, v.vin) == [old, new]
    assert _targets(env, v.vin)["targets"] == {}


def test_4_3_a_bundle_sent_by_the_manifest_that_failed_the_last_one_is_not_failed_by_it(env):
    """The pending assignment goes out in the very transaction that fails the bundle in
    flight: the indicator of that manifest is already old to it."""
    v = _register(env)
    now = env["clock"]()
    brk = f"{v.vin}-brk"
    old = "bad-hash: image brakes/fw-1.0.bin: sha256 mismatch"
    [first] = _assign(env, v.vin, {brk: "brakes/fw-1.0.bin"})
    [waiting] = _assign(env, v.vin, {brk: "brakes/fw-2.0.bin"})
    assert waiting["state"] == "pending"
    r = _post(env, v.vin, _brk_report(v, now, old, encoding=DER), DER)
    assert r.json()["bundle"] == {"id": first["bundle"], "state": "failed"}
    assert _assignment(env, waiting["id"])["state"] == "in_flight"
    r = _post(env, v.vin, _brk_report(v, now, old, encoding=DER), DER)
    assert r.json()["bundle"]["state"] == "in_flight"
    # the vehicle can be updated again: the ECU installs the new image
    done = _brk_report(v, now, None, installed=image_of("brakes/fw-2.0.bin"))
    assert _post(env, v.vin, done).json()["bundle"]["state"] == "installed"
    assert _assignment(env, waiting["id"])["state"] == "installed"


def test_4_3_an_old_indicator_that_comes_back_after_a_clean_report_is_new(env):
    v = _register(env)
    now = env["clock"]()
    brk = f"{v.vin}-brk"
    old = "freeze: targets expired"
    assert _post(env, v.vin, _brk_report(v, now, old)).json()["bundle"] is None
    [a] = _assign(env, v.vin, {brk: "brakes/fw-2.0.bin"})
    assert _post(env, v.vin, _brk_report(v, now, old)).json()["bundle"]["state"] == "in_flight"
    # the indicator is cleared, then the same one is seen again after the bundle went out
    assert _post(env, v.vin, _brk_report(v, now, None)).json()["bundle"]["state"] == "in_flight"
    r = _post(env, v.vin, _brk_report(v, now, old))
    assert r.json()["bundle"] == {"id": a["bundle"], "state": "failed"}
    assert _attack_rows(env, v.vin) == [old, old]  # it appeared twice


def test_5_3_2_1_the_primarys_repeated_indicator_is_stored_once(env):
    v = _register(env)
    now = env["clock"]()
    drop = f"drop-request: ECU {v.vin}-brk unreachable"
    for attack in (drop, drop, "freeze: director timestamp", None, drop):
        r = _post(env, v.vin, manifest(v, now, attack=attack))
        assert r.status_code == 200 and r.json()["attacks"] == ([attack] if attack else [])
    assert _attack_rows(env, v.vin) == [drop, "freeze: director timestamp", drop]


class _Loopback:
    """A link transport that hands each request to the Secondary's endpoint in-process."""

    def __init__(self, endpoint) -> None:
        self.endpoint, self.inbox = endpoint, []

    max_frame = 1024

    def negotiate(self, frame_size: int) -> None:
        pass

    def send(self, message: bytes, timeout: float | None = None) -> None:
        self.inbox.append(self.endpoint.receive(message))

    def recv(self, timeout: float) -> bytes | None:
        return self.inbox.pop(0) if self.inbox else None

    def close(self) -> None:
        pass


def test_4_3_a_real_secondary_refusing_the_next_image_with_the_same_attack_fails_it(env, tmp_path):
    """Through the real Secondary agent: it refuses brakes/fw-1.0.bin (bad hash), keeps that
    indicator in its reports, and refuses brakes/fw-2.0.bin with the same attack name.
    Its message names the image, so the second indicator is new and fails the bundle; the
    old one repeated does not; and once the genuine image installs, the bundle is done."""
    from hardware.client import LinkClient
    from secondary.agent import SecondaryAgent
    from secondary.cli import provision
    from secondary.config import SecondaryConfig
    from uptane.errors import BadHash
    from uptane.limits import PRIMARY
    from uptane.manifest import decode_report

    now = env["clock"]()
    v = make_vehicle("VIN0001")
    tcu, brk = f"{v.vin}-tcu", f"{v.vin}-brk"
    director_root = (env["director"].dir / "root" / "1.root.der").read_bytes()
    provision(
        tmp_path / "ecu",
        ecu_serial=brk,
        hardware_id=v.hardware[brk],
        director_root=director_root,
        vehicle_id=v.vin,
        slot_size=64 * 1024,
        now=now.timestamp(),
    )
    cfg = SecondaryConfig.load(tmp_path / "ecu" / "secondary.toml")
    agent = SecondaryAgent.from_config(cfg)
    agent.start()
    v.keys[brk] = agent.key
    assert env["c"].post("/api/vehicles", json=v.api_body()).status_code == 201
    client = LinkClient(
        _Loopback(agent.endpoint()), PRIMARY, timeout=0.5, retries=0, link_key=cfg.load_link_key()
    )

    def deliver(path: str, data: bytes) -> None:
        client.put_time(int(now.timestamp()))
        targets = env["c"].get(f"/vehicles/{v.vin}/metadata/targets.der").content
        client.put_metadata("targets", DER, targets)
        client.put_image(path, data, len(data))
        client.install(path)

    def refuse(path: str) -> str:
        evil = bytearray(IMAGES[path][0])
        evil[7] ^= 0x01
        with pytest.raises(BadHash):
            deliver(path, bytes(evil))
        return agent_indicator()

    def agent_indicator() -> str | None:
        return decode_report(agent.report(os.urandom(16)), PRIMARY, DER).signed.attack

    def post() -> dict:
        theirs = decode_report(agent.report(os.urandom(16)), PRIMARY, DER)
        body = manifest(v, now, reports=[report(v, tcu, now, encoding=DER), theirs], encoding=DER)
        r = _post(env, v.vin, body, DER)
        assert r.status_code == 200, r.text
        return r.json()

    [first] = _assign(env, v.vin, {brk: "brakes/fw-1.0.bin"})
    old = refuse("brakes/fw-1.0.bin")
    assert post()["bundle"] == {"id": first["bundle"], "state": "failed"}
    [second] = _assign(env, v.vin, {brk: "brakes/fw-2.0.bin"})
    assert agent_indicator() == old  # the Secondary still carries it
    assert post()["bundle"] == {"id": second["bundle"], "state": "in_flight"}
    new = refuse("brakes/fw-2.0.bin")
    assert new != old and new.split(":")[0] == old.split(":")[0] == BadHash.attack
    assert post()["bundle"] == {"id": second["bundle"], "state": "failed"}
    assert _attack_rows(env, v.vin) == [old, new]
    # assigned once more, the genuine image installs and the bundle is confirmed
    [third] = _assign(env, v.vin, {brk: "brakes/fw-2.0.bin"})
    deliver("brakes/fw-2.0.bin", IMAGES["brakes/fw-2.0.bin"][0])
    assert agent_indicator() is None
    assert post()["bundle"] == {"id": third["bundle"], "state": "installed"}


def test_migration_0004_marks_the_indicator_an_assignment_in_flight_already_saw(db_url):
    """Upgrading: an assignment in flight cannot have seen its ECU's last indicator arrive
    after its bundle went out (that manifest would have failed it), so that indicator is
    stale to it; a pending one gets its baseline when its bundle goes out."""
    import sqlalchemy as sa

    from director import inventory as inv
    from director.lifecycle import IN_FLIGHT, PENDING

    inv.migrate(db_url, "0003")
    engine = inv.make_engine(db_url)
    try:
        with engine.begin() as conn:
            vid = conn.execute(
                inv.vehicles.insert().values(vin="OLD1", created_at=1)
            ).inserted_primary_key[0]
            ecu = dict(vehicle_id=vid, hardware_id="brk-v1", public_key="{}", key_id="k")
            e1, e2 = (
                conn.execute(
                    inv.ecus.insert().values(
                        **ecu, serial=s, is_primary=s == "a", last_attack=f"bad-hash: {s}"
                    )
                ).inserted_primary_key[0]
                for s in ("a", "b")
            )
            bid = conn.execute(
                inv.bundles.insert().values(vehicle_id=vid, state=IN_FLIGHT, created_at=1)
            ).inserted_primary_key[0]
            common = dict(vehicle_id=vid, target_path="t", length=1, hashes="{}")
            common.update(hardware_id="brk-v1", created_at=1, updated_at=1)
            conn.execute(
                inv.assignments.insert(),
                [
                    {**common, "ecu_id": e1, "bundle_id": bid, "state": IN_FLIGHT},
                    {**common, "ecu_id": e2, "bundle_id": None, "state": PENDING},
                ],
            )
        inv.migrate(db_url)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(inv.assignments.c.state, inv.assignments.c.stale_attack).order_by(
                    inv.assignments.c.id
                )
            ).all()
            assert conn.execute(sa.select(inv.vehicles.c.last_attack)).scalar() is None
        assert [tuple(r) for r in rows] == [(IN_FLIGHT, "bad-hash: a"), (PENDING, None)]
    finally:
        engine.dispose()


def test_4_3_an_unauthenticated_peer_event_is_recorded_but_fails_no_bundle(env):
    """A Secondary without a link key reports what any peer on its bus could have caused
    as an unauthenticated-peer event (docs/link-protocol.md): the Director records it with
    the attacks, and the bundle in flight goes on; a real refusal still fails it."""
    v = _register(env)
    now = env["clock"]()
    brk = f"{v.vin}-brk"
    [a] = _assign(env, v.vin, {brk: "brakes/fw-2.0.bin"})
    event = "unauthenticated-peer: protocol-violation: INSTALL before any image"
    r = _post(env, v.vin, _brk_report(v, now, event))
    assert r.status_code == 200, r.text
    assert r.json()["bundle"] == {"id": a["bundle"], "state": "in_flight"}
    assert _assignment(env, a["id"])["state"] == "in_flight"
    assert _attack_rows(env, v.vin) == [event]
    real = "bad-hash: image brakes/fw-2.0.bin: sha256 mismatch"
    r = _post(env, v.vin, _brk_report(v, now, real))
    assert r.json()["bundle"] == {"id": a["bundle"], "state": "failed"}
