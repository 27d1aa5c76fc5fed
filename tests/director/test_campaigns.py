"""Campaigns (issue 14) through the admin API, in process, on SQLite and PostgreSQL:
waves by count and percentage with a soak time, pause and resume, the automatic halt over
a wave's failure threshold, cancel with bundles in flight (the vehicles get targets
without the image; what each ECU ends up running is recorded from its reports), one active
campaign per ECU, selection by hardware id, VINs and saved group, statistics per wave and
state, the CLI, and bad input answered 4xx (never 500)."""

from __future__ import annotations

import json
from datetime import timedelta

from fleet_support import image, post, register, targets_of, vvm
from oem import IMAGES, make_vehicle

from director import director_cli

TARGET = "brakes/fw-2.0.bin"
RUNS = (image(TARGET, IMAGES[TARGET][0]), IMAGES[TARGET][2])


def _fleet(env, n: int, prefix: str = "CAMP"):
    cars = [make_vehicle(f"{prefix}{i:03d}") for i in range(n)]
    for v in cars:
        register(env, v)
    return cars


def _create(env, **body):
    r = env["c"].post("/api/campaigns", json={"target": TARGET, "hardware_id": "brk-v1", **body})
    assert r.status_code == 201, r.text
    return r.json()


def _get(env, cid):
    return env["c"].get(f"/api/campaigns/{cid}").json()


def _members(env, cid, **q):
    return env["c"].get(f"/api/campaigns/{cid}/vehicles", params=q).json()


def _cycle(env, v, *, installs=True, attack=None):
    """One manifest: the brake ECU reports what it runs, and installs the image once its
    targets list it (``installs``); it keeps running what it installed."""
    brk = f"{v.vin}-brk"
    running = env.setdefault("running", {})
    if installs and TARGET in targets_of(env, v.vin):
        running[v.vin] = RUNS
    runs = {brk: running[v.vin]} if v.vin in running else {}
    r = post(env, v.vin, vvm(v, env["clock"](), runs, attacks={brk: attack} if attack else None))
    assert r.status_code == 200, r.text
    return r.json()


def _by_vin(cars):
    return {v.vin: v for v in cars}


def test_waves_by_count_and_percent_soak_pause_resume_and_finish(env):
    cars = _fleet(env, 10)
    d, clock = env["director"], env["clock"]
    c = _create(env, waves=[{"count": 2}, {"percent": 50}, {"percent": 30}], soak_seconds=600)
    assert [w["planned"] for w in c["waves"]] == [2, 5, 3]
    assert c["state"] == "running" and c["current_wave"] == 1 and len(c["created"]) == 2
    assert c["waves"][0]["states"]["in_flight"] == 2 and c["waves"][1]["states"]["waiting"] == 5
    first = {m["vin"] for m in _members(env, c["id"], wave=1)}
    for v in cars:
        _cycle(env, v)  # everyone reports; the two of wave 1 install
    assert d.tick() == []  # wave 1 done: the soak starts
    stats = _get(env, c["id"])
    assert stats["waves"][0]["states"]["installed"] == 2 and stats["waves"][0]["done"]
    assert stats["wave_done_at"] is not None and stats["current_wave"] == 1
    clock.advance(timedelta(seconds=599))
    assert d.tick() == [] and _get(env, c["id"])["current_wave"] == 1
    # paused: no further wave, even after the soak
    assert env["c"].post(f"/api/campaigns/{c['id']}/pause").json()["state"] == "paused"
    clock.advance(timedelta(seconds=2))
    assert d.tick() == [] and _get(env, c["id"])["current_wave"] == 1
    assert env["c"].post(f"/api/campaigns/{c['id']}/resume").json()["state"] == "running"
    assert d.tick() == [f"campaign {c['id']}: wave 2 sent to 5 ECU(s)"]
    second = {m["vin"] for m in _members(env, c["id"], wave=2)}
    assert not first & second
    for v in cars:
        _cycle(env, v)
    d.tick()
    clock.advance(timedelta(seconds=600))
    d.tick()
    for v in cars:
        _cycle(env, v)
    assert d.tick() == [f"campaign {c['id']} completed"]  # the last wave: no soak after it
    done = _get(env, c["id"])
    assert done["state"] == "completed" and done["totals"]["installed"] == 10
    assert all(m["runs_target"] for m in _members(env, c["id"]))
    # its ECUs are free again: another campaign may select them
    again = _create(env, target="brakes/fw-1.0.bin", force=True)
    assert len(again["created"]) == 10 and again["skipped"] == []


def test_a_wave_over_its_failure_threshold_halts_resume_goes_on_cancel_withdraws(env):
    cars = _fleet(env, 10, "HALT")
    by_vin = _by_vin(cars)
    d = env["director"]
    c = _create(env, waves=[{"count": 4}, {"count": 6}], failure_threshold=0.2)
    wave1 = [by_vin[m["vin"]] for m in _members(env, c["id"], wave=1)]
    _cycle(env, wave1[0], installs=False, attack="arbitrary-software: hash mismatch")
    for v in wave1[1:]:
        _cycle(env, v)
    [event] = d.tick()
    assert event.startswith(f"campaign {c['id']} halted: wave 1: 1 of 4 failed (25.0%)")
    halted = _get(env, c["id"])
    assert halted["state"] == "halted" and "resume to accept" in halted["reason"]
    assert (
        halted["waves"][0]["states"]["failed"] == 1 and halted["waves"][0]["failure_rate"] == 0.25
    )
    assert d.tick() == []  # halted: nothing moves
    r = env["c"].post(f"/api/campaigns/{c['id']}/resume")
    assert r.status_code == 200 and r.json()["state"] == "running"
    assert d.tick() == [f"campaign {c['id']}: wave 2 sent to 6 ECU(s)"]
    wave2 = [by_vin[m["vin"]] for m in _members(env, c["id"], wave=2)]
    for v in wave2[:2]:
        _cycle(env, v)  # installed and confirmed
    installing = wave2[2]  # has fetched its targets and installs: still in flight
    assert TARGET in targets_of(env, installing.vin)
    r = env["c"].post(f"/api/campaigns/{c['id']}/cancel")
    assert r.status_code == 200, r.text
    cancelled = r.json()
    assert cancelled["state"] == "cancelled"
    assert cancelled["waves"][1]["states"] == {
        "waiting": 0,
        "pending": 0,
        "in_flight": 0,
        "installed": 2,
        "failed": 0,
        "cancelled": 4,
        "skipped": 0,
    }
    # the vehicles not yet installing get targets without the image
    for v in wave2[2:]:
        assert targets_of(env, v.vin) == {}
    # one that was already installing finishes; its report says so, and is recorded
    env["running"][installing.vin] = RUNS
    _cycle(env, installing, installs=False)
    for v in wave2[3:]:
        _cycle(env, v)  # no image listed: nothing installed
    members = {m["vin"]: m for m in _members(env, c["id"], wave=2)}
    assert members[installing.vin]["state"] == "cancelled"
    assert members[installing.vin]["runs_target"] is True
    assert members[installing.vin]["reason"].startswith("withdrawn: campaign")
    assert not any(members[v.vin]["runs_target"] for v in wave2[3:])
    # no vehicle is locked out: none has a bundle in flight, each takes a new assignment
    for v in cars:
        status = env["c"].get(f"/api/vehicles/{v.vin}").json()
        assert all(b["state"] != "in_flight" for b in status["bundles"])
    r = env["c"].post(f"/api/campaigns/{c['id']}/cancel")
    assert r.status_code == 409
    assert r.json()["detail"].startswith(f"campaign {c['id']} is cancelled: a campaign that ended")


def test_one_active_campaign_per_ecu_groups_vins_and_statistics(env):
    cars = _fleet(env, 5, "GRP")
    vins = [v.vin for v in cars]
    r = env["c"].post("/api/groups", json={"name": "fleet-a", "vins": vins[:3]})
    assert r.status_code == 201 and r.json()["vins"] == vins[:3]
    assert env["c"].post("/api/groups", json={"name": "fleet-a"}).status_code == 409
    assert env["c"].get("/api/groups").json() == [
        {"name": "fleet-a", "vehicles": 3, "created_at": r.json()["created_at"]}
    ]
    first = _create(env, group="fleet-a", hardware_id=None, name="group")
    assert len(first["created"]) == 3 and first["selection"]["group"] == "fleet-a"
    # the same ECUs again: skipped, named with the campaign that has them
    second = _create(env)
    assert len(second["created"]) == 2
    assert sorted(s["vin"] for s in second["skipped"]) == vins[:3]
    assert {s["reason"] for s in second["skipped"]} == {f"in active campaign {first['id']}"}
    assert _get(env, second["id"])["totals"]["skipped"] == 3
    # an explicit VIN list and a hardware id must both hold; an unknown VIN is named
    env["c"].post(f"/api/campaigns/{first['id']}/cancel")
    env["c"].post(f"/api/campaigns/{second['id']}/cancel")
    third = _create(env, vins=vins[3:], hardware_id="brk-v1")
    assert sorted(m["vin"] for m in _members(env, third["id"])) == vins[3:]
    r = env["c"].post("/api/campaigns", json={"target": TARGET, "vins": ["NOPE"]})
    assert r.status_code == 404 and "NOPE" in r.json()["detail"]
    listed = env["c"].get("/api/campaigns").json()
    assert [x["state"] for x in listed] == ["cancelled", "cancelled", "running"]
    assert _members(env, third["id"], state="in_flight")[0]["state"] == "in_flight"
    # the group itself
    r = env["c"].post("/api/groups/fleet-a/vehicles", json={"vins": [vins[4]]})
    assert r.json()["vins"] == [*vins[:3], vins[4]]
    assert env["c"].delete(f"/api/groups/fleet-a/vehicles/{vins[0]}").json()["vins"][0] == vins[1]
    assert env["c"].delete("/api/groups/fleet-a").status_code == 200
    assert env["c"].get("/api/groups/fleet-a").status_code == 404


def test_bad_campaign_input_is_4xx_with_a_reason_never_500(env):
    _fleet(env, 2, "BAD")
    c = env["c"]
    cases = [
        ({"target": TARGET}, 422),  # no selection
        ({"target": TARGET, "hardware_id": "brk-v1", "waves": [{"percent": 10, "count": 2}]}, 422),
        ({"target": TARGET, "hardware_id": "brk-v1", "waves": [{}]}, 422),
        ({"target": TARGET, "hardware_id": "brk-v1", "waves": [{"percent": 0}]}, 400),
        ({"target": TARGET, "hardware_id": "brk-v1", "failure_threshold": 2}, 400),
        ({"target": TARGET, "hardware_id": "brk-v1", "soak_seconds": -1}, 400),
        ({"target": "../x", "hardware_id": "brk-v1"}, 400),
        ({"target": "brakes/none.bin", "hardware_id": "brk-v1"}, 422),
        ({"target": TARGET, "hardware_id": "ivi-v3"}, 422),  # no such ECU, wrong hardware
        ({"target": TARGET, "group": "nope"}, 404),
        ({"target": TARGET, "hardware_id": "bad id!"}, 422),
        ([1, 2], 400),
    ]
    for body, status in cases:
        r = c.post("/api/campaigns", json=body)
        assert r.status_code == status, (body, r.status_code, r.text)
        assert r.json()["detail"]
    assert c.get("/api/campaigns/999").status_code == 404
    assert c.get("/api/campaigns/x").status_code == 400
    assert c.post("/api/campaigns/999/pause").status_code == 404
    created = _create(env)
    r = c.post(f"/api/campaigns/{created['id']}/resume")
    assert r.status_code == 409
    assert r.json()["detail"] == (
        f"campaign {created['id']} is running: only a paused or halted campaign can be resumed"
    )
    assert c.get(f"/api/campaigns/{created['id']}/vehicles?state=nope").status_code == 422
    assert c.post("/api/groups", json={"name": "bad name!", "vins": []}).status_code == 422
    assert c.post("/api/groups", json={"name": "g", "vins": ["NOPE"]}).status_code == 404
    paths = c.get("/openapi.json").json()["paths"]
    assert {
        "/api/v1/campaigns",
        "/api/v1/campaigns/{cid}",
        "/api/v1/campaigns/{cid}/vehicles",
        "/api/v1/campaigns/{cid}/pause",
        "/api/v1/campaigns/{cid}/resume",
        "/api/v1/campaigns/{cid}/cancel",
        "/api/v1/groups",
        "/api/v1/groups/{name}",
    } <= set(paths)


def test_campaign_and_group_commands_work_on_the_same_database(env, capsys):
    cars = _fleet(env, 4, "CLI")
    ddir = str(env["tmp"] / "director")

    def run(*argv):
        code = director_cli.main([str(a) for a in argv])
        out = capsys.readouterr()
        assert code == 0, out.err
        return json.loads(out.out)

    def fails(*argv):
        code = director_cli.main([str(a) for a in argv])
        return code, capsys.readouterr().err

    g = run("group", "create", ddir, "cli-fleet", *[v.vin for v in cars[:2]])
    assert g["vins"] == [cars[0].vin, cars[1].vin]
    c = run(
        "campaign", "create", ddir, TARGET, "--group", "cli-fleet", "--wave", "50%", "--wave", "50%"
    )
    assert [w["planned"] for w in c["waves"]] == [1, 1]
    assert run("campaign", "show", ddir, c["id"])["state"] == "running"
    assert run("campaign", "pause", ddir, c["id"])["state"] == "paused"
    assert len(run("campaign", "vehicles", ddir, c["id"], "--state", "waiting")) == 1
    assert [x["id"] for x in run("campaign", "list", ddir)] == [c["id"]]
    assert run("campaign", "cancel", ddir, c["id"])["state"] == "cancelled"
    code, err = fails("campaign", "resume", ddir, c["id"])
    assert code == 2 and "is cancelled: only a paused or halted campaign" in err
    code, err = fails("campaign", "create", ddir, TARGET, "--hardware-id", "brk-v1", "--wave", "x")
    assert code == 2 and "bad --wave 'x'" in err
    assert run("group", "list", ddir)[0]["vehicles"] == 2


def test_a_member_whose_assignment_is_refused_is_skipped_with_the_reason(env):
    cars = _fleet(env, 3, "SKIP")
    busy, downgraded, fine = cars
    # busy: a bundle in flight and a pending assignment already; downgraded: runs fw-2.0
    for path in ("brakes/fw-1.0.bin", TARGET):
        r = env["c"].post(
            f"/api/vehicles/{busy.vin}/assignments",
            json={"assignments": [{"ecu": f"{busy.vin}-brk", "target": path}], "force": True},
        )
        assert r.status_code == 201, r.text
    env.setdefault("running", {})[downgraded.vin] = RUNS
    _cycle(env, downgraded, installs=False)
    c = _create(env, target="brakes/fw-1.0.bin")
    assert len(c["created"]) == 1
    skipped = {s["vin"]: s["reason"] for s in c["skipped"]}
    assert skipped[busy.vin].startswith(f"ECU {busy.vin}-brk already has pending assignment")
    assert skipped[downgraded.vin].startswith("downgrade refused:")
    assert fine.vin not in skipped
    stats = _get(env, c["id"])
    assert stats["totals"]["skipped"] == 2 and stats["waves"][0]["size"] == 1


def test_members_page_with_cursors_filtered_by_outcome_in_sql(env, capsys):
    cars = _fleet(env, 7, prefix="PAGE")
    c = _create(env, waves=[{"count": 3}, {"percent": 100}])
    whole = _members(env, c["id"])  # the deprecated path: the bare list, as before
    assert [m["vin"] for m in whole] == sorted(v.vin for v in cars)
    got, after = [], None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        r = env["c"].get(f"/api/v1/campaigns/{c['id']}/vehicles", params=params)
        assert r.status_code == 200, r.text
        got += r.json()["items"]
        after = r.json()["next"]
        if after is None:
            break
    assert [m["id"] for m in got] == [m["id"] for m in whole]
    # the outcome filter is in the query: a page of waiting members is full, not thinned
    r = (
        env["c"]
        .get(f"/api/v1/campaigns/{c['id']}/vehicles", params={"state": "waiting", "limit": 3})
        .json()
    )
    assert len(r["items"]) == 3 and {m["state"] for m in r["items"]} == {"waiting"}
    assert r["next"] is not None
    # another listing's cursor, or a bad one, is a 400
    other = env["c"].get("/api/v1/vehicles", params={"limit": 1}).json()["next"]
    for bad in (other, "%%%"):
        r = env["c"].get(f"/api/v1/campaigns/{c['id']}/vehicles", params={"after": bad})
        assert r.status_code == 400, r.text
    d = env["director"]
    assert director_cli.main(["campaign", "vehicles", str(d.dir), str(c["id"])]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in printed] == [m["id"] for m in whole]
