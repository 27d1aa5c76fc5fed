"""The Primary's update cycle (§5.4.2) against the real Director and Image repository
services on 127.0.0.1, with Secondary agents on in-process links: a full cycle, the next
one with nothing new, an interrupted download that resumes, an unreachable Secondary,
metadata that expired during a long offline period, slow retrieval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cycle_support import (
    IMAGES,
    PRIMARY_ID,
    SUPPLIED_PATH,
    SUPPLIER,
    VIN,
    backend_and_vehicle,
    sha256,
)

from primary.agent import Primary
from primary.cli import main as cli_main
from primary.state import PrimaryState
from uptane.errors import (
    DropRequestAttack,
    ExpiredMetadata,
    FreezeAttack,
    SlowRetrievalAttack,
)
from uptane.limits import Limits
from uptane.manifest import decode_vehicle_manifest
from uptane.metadata import DER, JSON

BRAKES = "brakes/fw-2.bin"


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def last_manifest(backend):
    """The last vehicle version manifest the Primary posted, and the Director's status."""
    path, status, body, _answer = backend.director_proxy.posts[-1]
    assert path == f"/vehicles/{VIN}/manifest"
    enc = JSON if body[:1] == b"{" else DER
    return decode_vehicle_manifest(body, Limits.primary(), enc).signed, status


def record(car):
    return PrimaryState(car.config.storage_dir, car.config.limits).load_cycle()


def test_5_4_2_full_cycle_two_secondaries_and_the_primary(tmp_path, now, capsys):
    with backend_and_vehicle(tmp_path, now) as (backend, car):
        backend.assign(
            VIN,
            [("brk-1", BRAKES), ("tcu-1", "tcu/tcu-5.bin"), (PRIMARY_ID, "gw/gw-2.bin")],
        )
        result = car.cycle()
        assert result.error is None, result.error
        assert result.manifest_sent
        assert result.installed == {
            "brk-1": BRAKES,
            "tcu-1": "tcu/tcu-5.bin",
            PRIMARY_ID: "gw/gw-2.bin",
        }
        # each Secondary runs the image, as its own boot record says, and it is exact
        assert car.installed("brk-1") == BRAKES
        assert car.installed("tcu-1") == "tcu/tcu-5.bin"
        brk = car.ecus["brk-1"].agent.slots.status().installed
        assert brk.hashes["sha256"] == sha256(IMAGES[BRAKES][0])
        # the human-readable steps, in the Standard's order
        text = "\n".join(car.lines)
        order = [
            "report received",
            "manifest sent",
            "Director metadata verified",
            "Image repository metadata verified",
            "downloaded brakes/fw-2.bin",
            "brk-1: sending 1 metadata file(s)",
            "installing gw/gw-2.bin",
            "brk-1: installed",
        ]
        assert "brk-1: report returned (runs brakes/fw-2.bin)" in text
        positions = [text.index(s) for s in order]
        assert positions == sorted(positions)
        assert "send brakes/fw-2.bin to brk-1: 100%" in text

        # §5.4.2 step 7: the next manifest carries every ECU's signed report of what it runs
        car.lines.clear()
        again = car.cycle()
        assert again.error is None and again.installed == {} and again.downloaded == []
        vvm, status = last_manifest(backend)
        assert status == 200
        runs = {r.signed.ecu_id: r.signed.installed.filename for r in vvm.reports}
        assert runs == {"brk-1": BRAKES, "tcu-1": "tcu/tcu-5.bin", PRIMARY_ID: "gw/gw-2.bin"}
        assert vvm.attack is None

        # status: trusted versions per repository, installed image per ECU, nothing pending
        assert cli_main(["status", "--config", str(car.config_path)]) == 0
        out = capsys.readouterr().out
        assert "director: root v1" in out and "image: root v1" in out
        assert f"ECU brk-1: {BRAKES}" in out and "pending: none" in out
        assert "last error: none" in out
        assert "latest verified time: none (no [time] configured" in out


def test_5_4_2_interrupted_download_resumes_next_cycle(tmp_path, now):
    with backend_and_vehicle(tmp_path, now, secondaries={"brk-1": "brk-v1"}) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        # the connection drops after 70000 bytes, on every attempt of this cycle
        backend.image_proxy.rules.cut["fw-2.bin"] = [70000, 2]
        first = car.cycle()
        assert isinstance(first.error, DropRequestAttack)
        assert first.installed == {} and car.installed("brk-1") is None
        rec = record(car)
        assert rec.pending["brk-1"].step == "approved"
        part = car.primary().state.image_path(rec.pending["brk-1"].target)
        part = part.with_name(part.name + ".part")
        assert part.stat().st_size >= 70000

        second = car.cycle()
        assert second.error is None, second.error
        assert second.installed == {"brk-1": BRAKES}
        ranges = [r for m, p, r in backend.image_proxy.requests if p.endswith("fw-2.bin") and r]
        assert ranges and int(ranges[-1][6:-1]) >= 70000  # resumed, not restarted
        assert car.installed("brk-1") == BRAKES


def test_5_4_2_unreachable_secondary_is_reported_and_does_not_stall_the_others(
    tmp_path, now, capsys
):
    """Issue 14: a dead Secondary is represented inside the Primary's signed manifest (an
    ``unreachable_ecus`` entry with the reason and the last time it answered), never as an
    attack; the real Director accepts every manifest, records it unreachable, and the
    other ECUs update."""
    with backend_and_vehicle(tmp_path, now) as (backend, car):
        assert car.cycle().error is None  # every ECU answers once: last seen now
        backend.assign(
            VIN,
            [("brk-1", BRAKES), ("tcu-1", "tcu/tcu-5.bin"), (PRIMARY_ID, "gw/gw-2.bin")],
        )
        car.unplug("tcu-1")
        car.time.advance(timedelta(minutes=5))
        result = car.cycle()
        assert result.error is None, result.error
        assert result.manifest_sent and result.manifest_error is None
        assert result.unreachable == ["tcu-1"]
        assert result.installed == {"brk-1": BRAKES, PRIMARY_ID: "gw/gw-2.bin"}
        vvm, status = last_manifest(backend)
        assert status == 200
        assert vvm.attack is None  # an unplugged ECU is not an attack
        assert {r.signed.ecu_id for r in vvm.reports} == {"brk-1", PRIMARY_ID}
        [entry] = vvm.unreachable
        assert entry.ecu_id == "tcu-1" and entry.reason.startswith("unreachable: ")
        assert "drop-request" not in entry.reason
        assert entry.last_seen == now
        rec = record(car)
        assert rec.results["tcu-1"]["outcome"] == "unreachable"
        assert "tcu-1" in rec.pending  # its update waits, downloaded already
        assert rec.pending["tcu-1"].step == "downloaded"
        # the Director took every manifest, and says the ECU is unreachable
        assert all(st == 200 for _p, st, _b, _a in backend.director_proxy.posts)
        ecus = {e["serial"]: e for e in backend.director.vehicle_status(VIN)["ecus"]}
        assert ecus["tcu-1"]["unreachable"]["reason"] == entry.reason
        assert ecus["tcu-1"]["unreachable"]["last_seen"] == now.isoformat()
        assert ecus["brk-1"]["unreachable"] is None
        assert cli_main(["status", "--config", str(car.config_path)]) == 0
        out = capsys.readouterr().out
        assert "pending: tcu-1 <- tcu/tcu-5.bin (downloaded)" in out
        assert "last result: tcu-1 unreachable" in out

        car.boot("tcu-1")  # the Secondary is back
        later = car.cycle()
        assert later.unreachable == []
        assert later.installed == {"tcu-1": "tcu/tcu-5.bin"}
        assert car.installed("tcu-1") == "tcu/tcu-5.bin"
        vvm, status = last_manifest(backend)
        assert status == 200 and vvm.unreachable == []
        ecus = {e["serial"]: e for e in backend.director.vehicle_status(VIN)["ecus"]}
        assert ecus["tcu-1"]["unreachable"] is None
        # what the others installed while tcu-1 was away was reported and taken
        assert ecus["brk-1"]["installed"]["path"] == BRAKES
        assert ecus[PRIMARY_ID]["installed"]["path"] == "gw/gw-2.bin"


def test_5_3_2_1_a_secondary_that_never_answered_has_no_last_seen(tmp_path, now):
    """An ECU the Primary never heard from is represented without ``last_seen``; with every
    ECU answering, the manifest has no ``unreachable_ecus`` at all."""
    with backend_and_vehicle(tmp_path, now) as (backend, car):
        car.unplug("brk-1")
        first = car.cycle()
        assert first.error is None and first.unreachable == ["brk-1"]
        vvm, status = last_manifest(backend)
        assert status == 200
        assert [(u.ecu_id, u.last_seen) for u in vvm.unreachable] == [("brk-1", None)]
        car.boot("brk-1")
        assert car.cycle().error is None
        vvm, status = last_manifest(backend)
        assert status == 200 and vvm.unreachable == []


def test_5_4_4_2_expired_metadata_after_months_offline_is_refreshed_never_trusted(tmp_path, now):
    with backend_and_vehicle(tmp_path, now, secondaries={"brk-1": "brk-v1"}) as (backend, car):
        assert car.cycle().error is None  # trusted, fresh metadata, nothing to install
        # the vehicle was parked for 40 days; the repositories it meets first are stale
        # (a man in the middle replays what was current when it parked)
        car.time.advance(timedelta(days=40))
        backend.assign(VIN, [("brk-1", BRAKES)])
        frozen = car.cycle()
        assert isinstance(frozen.error, FreezeAttack), frozen.error
        assert frozen.installed == {} and car.installed("brk-1") is None
        assert record(car).attacks and record(car).attacks[-1]["attack"] == "freeze"

        # the backend's clock catches up: it re-signs, and the next cycle just works
        backend.advance(timedelta(days=40))
        fresh = car.cycle()
        assert fresh.error is None, fresh.error
        assert fresh.installed == {"brk-1": BRAKES}
        # the freeze seen on the way is in the manifest that went out first
        vvm, _ = backend_manifests_with_attack(backend)
        assert "freeze" in vvm.attack


def backend_manifests_with_attack(backend):
    for _path, status, body, _ in reversed(backend.director_proxy.posts):
        enc = JSON if body[:1] == b"{" else DER
        vvm = decode_vehicle_manifest(body, Limits.primary(), enc).signed
        if vvm.attack:
            return vvm, status
    raise AssertionError("no manifest carried an attack indicator")


def test_5_4_2_expired_trusted_state_alone_is_not_used_for_an_install(tmp_path, now):
    """Stored metadata that expired is kept only as the rollback floor."""
    with backend_and_vehicle(tmp_path, now, secondaries={"brk-1": "brk-v1"}) as (backend, car):
        assert car.cycle().error is None
        car.time.advance(timedelta(days=400))  # past every role's expiry, roots included
        backend.assign(VIN, [("brk-1", BRAKES)])
        result = car.cycle()
        assert isinstance(result.error, ExpiredMetadata)
        assert car.installed("brk-1") is None and record(car).installed == {}


def test_5_4_slow_retrieval_is_aborted_reported_and_resumed(tmp_path, now):
    with backend_and_vehicle(
        tmp_path, now, secondaries={"brk-1": "brk-v1"}, min_speed=20000.0, read_timeout=2.0
    ) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        backend.image_proxy.rules.drip["fw-2.bin"] = 4000.0
        slow = car.cycle()
        assert isinstance(slow.error, SlowRetrievalAttack), slow.error
        assert slow.installed == {} and car.installed("brk-1") is None
        assert record(car).attacks[-1]["attack"] == "slow-retrieval"

        backend.image_proxy.reset()
        done = car.cycle()
        assert done.installed == {"brk-1": BRAKES}
        # the manifest of that cycle told the Director about the slow retrieval
        vvm, _ = backend_manifests_with_attack(backend)
        assert "slow-retrieval" in vvm.attack
        primary_report = next(r for r in vvm.reports if r.signed.ecu_id == PRIMARY_ID)
        assert "slow-retrieval" in (primary_report.signed.attack or "")


def test_5_4_2_full_verification_secondary_gets_every_file_partial_gets_director_targets(
    tmp_path, now
):
    """§5.4.2 step 6: a partial Secondary gets at least the Director targets, a full one
    every role of both repositories (in the DER it reads), the delegated role that lists
    its image included, and the map file; both install."""
    modes = {"brk-1": "partial", "tcu-1": "full"}
    with backend_and_vehicle(tmp_path, now, modes=modes) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES), ("tcu-1", SUPPLIED_PATH)])
        result = car.cycle()
        assert result.error is None, result.error
        assert result.installed == {"brk-1": BRAKES, "tcu-1": SUPPLIED_PATH}, "\n".join(car.lines)
        text = "\n".join(car.lines)
        assert "brk-1: sending 1 metadata file(s)" in text
        # the map; the Image repository's timestamp, snapshot, the supplier's delegated
        # role and targets; the Director's timestamp, snapshot and targets
        assert "tcu-1: sending 8 metadata file(s)" in text
        # the full Secondary now trusts both repositories' metadata, which it verified
        # itself, down to the supplier's delegation that lists its image
        trusted = car.ecus["tcu-1"].agent._trusted
        assert set(trusted["image"]) >= {"root", "timestamp", "snapshot", "targets", SUPPLIER}
        assert car.installed("tcu-1") == SUPPLIED_PATH


def test_5_4_2_link_dropped_mid_transfer_resumes_at_the_acknowledged_offset(tmp_path, now):
    with backend_and_vehicle(tmp_path, now, secondaries={"brk-1": "brk-v1"}) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        link = car.ecus["brk-1"].served.primary_end

        def say(line: str) -> None:
            car.lines.append(line)
            if "send brakes/fw-2.bin to brk-1" in line and "100%" not in line:
                link.cut = True  # the wire goes dead after the first chunks

        first = Primary(car.config, time_source=car.time, say=say).run_cycle()
        assert first.unreachable == ["brk-1"] and first.installed == {}
        assert car.installed("brk-1") is None

        link.cut = False
        car.lines.clear()
        second = car.cycle()
        assert second.installed == {"brk-1": BRAKES}, "\n".join(car.lines)
        text = "\n".join(car.lines)
        assert "brk-1: continuing the transfer at byte" in text
        assert "resumed the image transfer at byte" in text
        assert "metadata file(s)" not in text  # the verified metadata was still there
        assert car.installed("brk-1") == BRAKES


def test_5_4_2_pending_update_survives_new_director_timestamp_and_snapshot(tmp_path, now):
    with backend_and_vehicle(tmp_path, now) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES), ("tcu-1", "tcu/tcu-5.bin")])
        car.unplug("tcu-1")
        assert car.cycle().installed == {"brk-1": BRAKES}
        # days pass: the Director re-signs its timestamp and snapshot, the ECU is still away
        # (within the Director's unreachable deadline, 7 days: past it the bundle fails)
        for _ in range(2):
            backend.advance(timedelta(days=3))
            car.time.advance(timedelta(days=3))
            waiting = car.cycle()
            assert waiting.error is None and waiting.unreachable == ["tcu-1"]
            assert record(car).pending["tcu-1"].step == "downloaded"
        car.boot("tcu-1")
        done = car.cycle()
        assert done.installed == {"tcu-1": "tcu/tcu-5.bin"}
        assert done.downloaded == []  # the image downloaded days ago was kept
