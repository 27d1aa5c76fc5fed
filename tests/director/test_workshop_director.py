"""Issue 18 at the Director: a bench vehicle's bundle in flight can be cancelled (it is
withdrawn), a road vehicle's cannot; `uptane-director vehicle add` takes the public key
file `uptane-secondary provision` writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from oem import Clock, make_director, make_image_repo, make_vehicle

from director import director_cli
from director.director import Conflict


@pytest.fixture
def director(tmp_path: Path, now):
    clock = Clock(now)
    images = make_image_repo(tmp_path, now)
    d, _token = make_director(tmp_path, images, f"sqlite:///{tmp_path / 'db.sqlite'}", clock)
    yield d
    d.dispose()


def test_a_bench_bundle_in_flight_is_withdrawn_by_cancel_and_a_road_one_is_not(director) -> None:
    bench = make_vehicle("BENCH-0001", {"bench": "uptane-bench", "brk": "brk-v1"})
    road = make_vehicle("VIN-ROAD-1", {"gw": "tcu-v5", "brk": "brk-v1"})
    director.register_vehicle(bench.vin, bench.specs())
    director.register_vehicle(road.vin, road.specs())
    [a] = director.assign(bench.vin, [("brk", "brakes/fw-1.0.bin")])
    [r] = director.assign(road.vin, [("brk", "brakes/fw-1.0.bin")])
    assert a["state"] == r["state"] == "in_flight"
    before = director.vehicle_status(bench.vin)["metadata"]["targets"]
    out = director.cancel(a["id"])
    assert out["state"] == "cancelled" and "bench" in out["reason"]
    status = director.vehicle_status(bench.vin)
    assert status["bundles"][0]["state"] == "cancelled"
    assert status["metadata"]["targets"] > before  # signed again, without the image
    targets = json.loads(director.metadata_file(bench.vin, "targets.json") or b"{}")
    assert targets["signed"]["targets"] == {}
    # the next bench bundle goes out at once
    [again] = director.assign(bench.vin, [("brk", "brakes/fw-2.0.bin")])
    assert again["state"] == "in_flight"
    # a vehicle on the road keeps the rule: what was sent ends with its reports
    with pytest.raises(Conflict, match="only a pending assignment can be cancelled"):
        director.cancel(r["id"])


def test_vehicle_add_takes_the_ecu_key_file_of_provision(tmp_path: Path, director, capsys) -> None:
    bench = make_vehicle("BENCH-0002", {"bench": "uptane-bench", "brk": "brk-v1"})
    (tmp_path / "bench.pub.json").write_text(json.dumps(bench.keys["bench"].key.to_dict()))
    record = {
        "ecu_serial": "brk",
        "hardware_id": "brk-v1",
        "keyid": bench.keys["brk"].keyid,
        "public_key": bench.keys["brk"].key.to_dict(),
    }
    (tmp_path / "ecu_key.pub.json").write_text(json.dumps(record))
    rc = director_cli.main(
        [
            "vehicle",
            "add",
            str(director.dir),
            bench.vin,
            "--ecu",
            f"bench:uptane-bench:{tmp_path / 'bench.pub.json'}:primary",
            "--ecu",
            f"brk:brk-v1:{tmp_path / 'ecu_key.pub.json'}",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    ecus = {e["serial"]: e for e in director.vehicle_status(bench.vin)["ecus"]}
    assert ecus["brk"]["key_id"] == bench.keys["brk"].keyid


def test_a_carried_manifest_may_be_older_than_the_skew_down_to_earliest(director, now) -> None:
    from datetime import timedelta

    from oem import manifest

    from uptane.errors import ReplayAttack, ReportTimeSkew

    car = make_vehicle("VIN-OFFLINE-1")
    director.register_vehicle(car.vin, car.specs())
    signed_then = now - timedelta(hours=5)
    old = manifest(car, signed_then)
    # outside the window, but its nonces unseen: a clock or a delay, not a replay
    with pytest.raises(ReportTimeSkew, match="outside"):
        director.manifests.process(car.vin, old)
    with pytest.raises(ReportTimeSkew, match="outside"):  # older than the earliest allowed
        director.manifests.process(car.vin, old, earliest=now - timedelta(hours=4))
    out = director.manifests.process(car.vin, old, earliest=now - timedelta(days=1))
    assert out["accepted"]
    with pytest.raises(ReplayAttack, match="reused a nonce"):  # still one use per nonce
        director.manifests.process(car.vin, old, earliest=now - timedelta(days=1))
