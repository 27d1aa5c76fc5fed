"""Issue 14 at the Director, in process over HTTP, on SQLite and PostgreSQL:

- unreachable ECUs (§5.3.2.1, "Each ECU recorded in the inventory database is also
  represented in the manifest"): the Primary names a dead ECU inside its signed manifest;
  the Director records it with no version claim, processes every other report and attack
  indicator, fails the dead ECU's bundle past the deadline and sends the next one;
- dependencies and conflicts between images (§5.3.2.1 step 5), and downgrades (refused
  unless forced; forcing cannot beat the ECU's own rollback check, §5.4.4.2).

The manifests are built here through ``uptane.manifest`` exactly as the Primary builds
them (``build_vehicle_manifest(..., unreachable=[UnreachableEcu(...)])``).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from fleet_support import (
    RULED,
    assign,
    image,
    post,
    register,
    stage,
    states,
    targets_of,
    vvm,
)
from oem import IMAGES, MULTI_HW_IMAGE, make_vehicle

from uptane.errors import RollbackAttack
from uptane.limits import Limits
from uptane.manifest import attack_indicator
from uptane.metadata import MapFile
from uptane.trust import RepositoryTrust
from uptane.verify import VehicleContext, full_verification


def _three_ecus(vin: str):
    return make_vehicle(vin, {f"{vin}-gw": "gw-a", f"{vin}-brk": "brk-v1", f"{vin}-tcu": "tcu-v5"})


def _runs(path: str) -> tuple:
    if path in IMAGES:
        data, _, rc = IMAGES[path]
    elif path == MULTI_HW_IMAGE[0]:
        data, rc = MULTI_HW_IMAGE[1], MULTI_HW_IMAGE[3]
    else:
        data, _, rc, _ = RULED[path]
    return image(path, data), rc


def test_5_3_2_1_a_dead_ecu_is_represented_its_bundle_fails_by_deadline_and_the_next_goes_out(
    env,
):
    d, clock = env["director"], env["clock"]
    d.config.unreachable_deadline_seconds = 3600
    v = _three_ecus("VIN0100")
    gw, brk, tcu = (f"{v.vin}-{s}" for s in ("gw", "brk", "tcu"))
    register(env, v)
    r = assign(env, v.vin, {brk: "brakes/fw-2.0.bin", tcu: "tcu/tcu-5.bin"})
    assert r.status_code == 201, r.text
    dead = {tcu: "timeout: no answer on CAN after 3 tries"}
    # brk installs and reports an attack indicator; tcu is named unreachable
    slow = "slow-retrieval: director targets at 12 B/s"
    runs = {brk: _runs("brakes/fw-2.0.bin")}
    r = post(env, v.vin, vvm(v, clock(), runs, dead=dead, attacks={brk: slow}))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["unreachable"] == [tcu] and body["bundle"]["state"] == "in_flight"
    assert body["attacks"] == [f"{brk}: {slow}"]
    status = env["c"].get(f"/api/vehicles/{v.vin}").json()
    ecus = {e["serial"]: e for e in status["ecus"]}
    assert ecus[tcu]["installed"] is None  # no version claim for the dead ECU
    assert ecus[tcu]["unreachable"]["reason"] == dead[tcu]
    assert (
        ecus[brk]["installed"]["path"] == "brakes/fw-2.0.bin" and ecus[brk]["unreachable"] is None
    )
    assert [(a["ecu"], a["attack"]) for a in status["attacks"]] == [(brk, slow)]
    # a later assignment waits behind the bundle in flight
    [nxt] = assign(env, v.vin, {gw: MULTI_HW_IMAGE[0]}).json()
    assert nxt["state"] == "pending"
    clock.advance(timedelta(seconds=3599))
    assert post(env, v.vin, vvm(v, clock(), runs, dead=dead)).json()["bundle"]["state"] == (
        "in_flight"
    )
    clock.advance(timedelta(seconds=2))
    r = post(env, v.vin, vvm(v, clock(), runs, dead=dead))
    assert r.json()["bundle"]["state"] == "failed"
    by_target = {t: (s, a) for a, (t, s) in states(env, v.vin).items()}
    assert by_target["brakes/fw-2.0.bin"][0] == "installed"  # the live ECU updated
    assert by_target["tcu/tcu-5.bin"][0] == "failed"
    failed = [
        a
        for a in env["c"].get(f"/api/assignments?vin={v.vin}").json()
        if a["target"] == "tcu/tcu-5.bin"
    ]
    assert failed[0]["reason"].startswith(f"unreachable: the Primary has named ECU {tcu}")
    # the vehicle got its next bundle
    assert by_target[MULTI_HW_IMAGE[0]][0] == "in_flight"
    assert set(targets_of(env, v.vin)) == {MULTI_HW_IMAGE[0]}


def test_5_3_2_1_the_deadline_is_swept_without_a_manifest_and_a_report_ends_unreachability(env):
    d, clock = env["director"], env["clock"]
    d.config.unreachable_deadline_seconds = 60
    v = _three_ecus("VIN0101")
    brk, tcu = f"{v.vin}-brk", f"{v.vin}-tcu"
    register(env, v)
    assert assign(env, v.vin, {tcu: "tcu/tcu-5.bin"}).status_code == 201
    dead = {tcu: "asleep"}
    assert post(env, v.vin, vvm(v, clock(), dead=dead)).status_code == 200
    assert d.tick() == []  # not yet
    clock.advance(timedelta(seconds=61))
    assert any("unreachable past the deadline" in e for e in d.tick())
    assert [s for _, s in states(env, v.vin).values()] == ["failed"]
    assert targets_of(env, v.vin) == {}  # empty targets, still naming the VIN
    # the ECU answers again: its report is taken, and it is no longer unreachable
    assert assign(env, v.vin, {brk: "brakes/fw-1.0.bin"}).status_code == 201
    assert post(env, v.vin, vvm(v, clock())).status_code == 200
    ecu = next(
        e for e in env["c"].get(f"/api/vehicles/{v.vin}").json()["ecus"] if e["serial"] == tcu
    )
    assert ecu["unreachable"] is None and ecu["installed"]["path"] == "factory.bin"


def test_5_3_2_1_a_manifest_missing_an_ecu_is_still_refused_and_changes_nothing(env):
    v = _three_ecus("VIN0102")
    register(env, v)
    from fleet_support import ecu_report

    from uptane.manifest import UnreachableEcu, build_vehicle_manifest

    now = env["clock"]()
    reports = [ecu_report(v, s, now) for s in list(v.keys)[:2]]
    silent = build_vehicle_manifest(v.vin, v.primary, reports, v.keys[v.primary]).to_bytes()
    r = post(env, v.vin, silent)
    assert r.status_code == 403 and r.json()["attack"] == "arbitrary-software"
    ghost = build_vehicle_manifest(
        v.vin, v.primary, reports, v.keys[v.primary], unreachable=[UnreachableEcu("ghost", "x")]
    ).to_bytes()
    assert post(env, v.vin, ghost).status_code == 403
    # the Primary's signature covers the entry: one signed by another key is refused
    forged = build_vehicle_manifest(
        v.vin,
        v.primary,
        reports,
        v.keys[f"{v.vin}-brk"],
        unreachable=[UnreachableEcu(f"{v.vin}-tcu", "x")],
    ).to_bytes()
    assert post(env, v.vin, forged).status_code == 403
    assert env["c"].get(f"/api/vehicles/{v.vin}").json()["manifests_accepted"] == 0


# --- dependencies, conflicts, downgrades ------------------------------------------------------


def test_5_3_2_1_a_brake_image_that_needs_the_gateway_goes_out_after_it(env):
    stage(env["image_dir"], env["clock"](), RULED)
    v = _three_ecus("VIN0200")
    gw, brk = f"{v.vin}-gw", f"{v.vin}-brk"
    register(env, v)
    now = env["clock"]
    runs = {gw: _runs("gateway/gw-1.bin")}
    assert post(env, v.vin, vvm(v, now(), runs)).status_code == 200
    # alone, the brake image is refused: the gateway runs release counter 1
    r = assign(env, v.vin, {brk: "brakes/fw-3.0.bin"})
    assert r.status_code == 409
    assert "requires hardware 'gw-a' with release counter >= 2" in r.json()["detail"]
    assert f"{gw} runs 'gateway/gw-1.bin', release counter 1" in r.json()["detail"]
    # with the gateway image in the same request: gateway first, brake once it is installed
    r = assign(env, v.vin, {brk: "brakes/fw-3.0.bin", gw: MULTI_HW_IMAGE[0]})
    assert r.status_code == 201, r.text
    by_ecu = {a["ecu"]: a for a in r.json()}
    assert by_ecu[gw]["state"] == "in_flight" and by_ecu[brk]["state"] == "pending"
    assert set(targets_of(env, v.vin)) == {MULTI_HW_IMAGE[0]}
    runs[gw] = _runs(MULTI_HW_IMAGE[0])
    r = post(env, v.vin, vvm(v, now(), runs))
    assert r.json()["bundle"]["state"] == "installed"
    assert set(targets_of(env, v.vin)) == {"brakes/fw-3.0.bin"}
    runs[brk] = _runs("brakes/fw-3.0.bin")
    assert post(env, v.vin, vvm(v, now(), runs)).json()["bundle"]["state"] == "installed"
    assert {s for _, s in states(env, v.vin).values()} == {"installed"}


def test_5_3_2_1_a_dependency_whose_prerequisite_fails_is_cancelled_with_its_reason(env):
    stage(env["image_dir"], env["clock"](), RULED)
    v = _three_ecus("VIN0201")
    gw, brk = f"{v.vin}-gw", f"{v.vin}-brk"
    register(env, v)
    now = env["clock"]
    assert assign(env, v.vin, {brk: "brakes/fw-3.0.bin", gw: MULTI_HW_IMAGE[0]}).status_code == 201
    r = post(env, v.vin, vvm(v, now(), attacks={gw: "arbitrary-software: hash mismatch"}))
    assert r.json()["bundle"]["state"] == "failed"
    brake = next(a for a in env["c"].get(f"/api/assignments?vin={v.vin}").json() if a["ecu"] == brk)
    assert brake["state"] == "cancelled" and "had to be installed first" in brake["reason"]
    assert targets_of(env, v.vin) == {}


def test_5_3_2_1_a_conflicting_assignment_is_refused_with_its_reason(env):
    stage(env["image_dir"], env["clock"](), RULED)
    v = make_vehicle("VIN0300", {"VIN0300-tcu": "tcu-v5", "VIN0300-ivi": "ivi-v3"})
    register(env, v)
    runs = {"VIN0300-tcu": _runs("tcu/tcu-5.bin")}
    assert post(env, v.vin, vvm(v, env["clock"](), runs)).status_code == 200
    before = env["c"].get(f"/api/vehicles/{v.vin}").json()["metadata"]
    r = assign(env, v.vin, {"VIN0300-ivi": "infotainment/ivi-4.bin"})
    assert r.status_code == 409
    assert r.json()["detail"] == (
        "'infotainment/ivi-4.bin' for VIN0300-ivi conflicts with 'tcu/tcu-5.bin': ECU"
        " VIN0300-tcu runs 'tcu/tcu-5.bin'"
    )
    assert env["c"].get(f"/api/vehicles/{v.vin}").json()["metadata"] == before
    assert states(env, v.vin) == {}
    # the other way round: the conflicting image assigned first refuses telematics 5
    w = make_vehicle("VIN0301", {"VIN0301-tcu": "tcu-v5", "VIN0301-ivi": "ivi-v3"})
    register(env, w)
    assert assign(env, w.vin, {"VIN0301-ivi": "infotainment/ivi-4.bin"}).status_code == 201
    r = assign(env, w.vin, {"VIN0301-tcu": "tcu/tcu-5.bin"})
    assert r.status_code == 409 and "conflicts with 'tcu/tcu-5.bin'" in r.json()["detail"]


def test_5_4_4_2_a_downgrade_is_refused_and_forcing_cannot_beat_the_ecus_rollback_check(env):
    v = make_vehicle("VIN0400")
    brk = f"{v.vin}-brk"
    register(env, v)
    runs = {brk: _runs("brakes/fw-2.0.bin")}  # release counter 2
    assert post(env, v.vin, vvm(v, env["clock"](), runs)).status_code == 200
    r = assign(env, v.vin, {brk: "brakes/fw-1.0.bin"})
    assert r.status_code == 409
    assert r.json()["detail"].startswith(
        f"downgrade refused: ECU {brk} runs release counter 2, 'brakes/fw-1.0.bin' has 1"
    )
    assert states(env, v.vin) == {}
    r = assign(env, v.vin, {brk: "brakes/fw-1.0.bin"}, force=True)
    assert r.status_code == 201 and r.json()[0]["state"] == "in_flight"
    # the vehicle's full verification (the core, as the Primary runs it) still refuses it
    err = _verify(env, v, installed_counters={brk: 2})
    assert isinstance(err, RollbackAttack), err
    r = post(env, v.vin, vvm(v, env["clock"](), runs, attacks={brk: attack_indicator(err)}))
    assert r.json()["bundle"]["state"] == "failed"
    [a] = env["c"].get(f"/api/assignments?vin={v.vin}").json()
    assert a["state"] == "failed" and a["reason"].startswith("ECU reported: rollback:")


def _verify(env, v, installed_counters):
    """Full verification of the vehicle's Director and Image metadata (§5.4.4.2); the
    error, or None."""
    from director.imageview import DirectorySource, HttpSource

    limits = Limits()
    vsrc = HttpSource(f"{env['url']}/vehicles/{v.vin}")
    isrc = DirectorySource(env["image_dir"] / "metadata")
    dtrust = RepositoryTrust(
        "director",
        vsrc.fetch_metadata("root", 1, 1 << 20),
        limits,
        vehicle_id=v.vin,
        ecu_ids=list(v.keys),
    )
    itrust = RepositoryTrust("image", isrc.fetch_metadata("root", 1, 1 << 20), limits)
    ctx = VehicleContext(v.vin, v.primary, dict(v.hardware), installed_counters)
    try:
        full_verification(
            dtrust,
            itrust,
            MapFile.default("director", "image"),
            {"director": vsrc, "image": isrc},
            env["clock"](),
            ctx,
            limits,
        )
    except Exception as e:  # the error is the result
        return e
    return None


def test_dependency_rules_that_are_malformed_refuse_the_assignment_not_the_service(env):
    bad = {"gateway/gw-9.bin": (b"x" * 10, ["gw-a"], 9, {"requires": [{"image": "../etc"}]})}
    stage(env["image_dir"], env["clock"](), bad)
    v = _three_ecus("VIN0500")
    register(env, v)
    r = assign(env, v.vin, {f"{v.vin}-gw": "gateway/gw-9.bin"})
    assert r.status_code == 422 and "custom.requires" in r.json()["detail"]


@pytest.mark.parametrize("force", [False, True])
def test_assignment_body_takes_force_only_as_a_boolean(env, force):
    v = make_vehicle(f"VIN06{int(force)}")
    register(env, v)
    r = assign(env, v.vin, {f"{v.vin}-brk": "brakes/fw-1.0.bin"}, force=force)
    assert r.status_code == 201
    r = env["c"].post(
        f"/api/vehicles/{v.vin}/assignments",
        json={"assignments": [{"ecu": f"{v.vin}-tcu", "target": "tcu/tcu-5.bin"}], "force": "x"},
    )
    assert r.status_code == 400
