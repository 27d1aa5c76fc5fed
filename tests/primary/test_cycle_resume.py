"""A Secondary that loses power in the middle of an image transfer: after it reboots, the
Primary's next cycle continues at the offset the ECU reports (its last checkpoint), without
sending the metadata again, and the image installs byte-exact (§5.4.2 step 7)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from cycle_support import IMAGES, VIN, Vehicle, backend_and_vehicle

from director.image_repo import ImageRepository, default_offline_dir
from primary.agent import Primary
from primary.secondaries import QueueTransport
from secondary.agent import TRANSFER_AT

BRAKES = "brakes/fw-2.bin"


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def cut_three_quarters_into_the_transfer(car: Vehicle) -> QueueTransport:
    """One cycle whose link to brk-1 goes dead once three quarters of the brakes image
    are sent (the ECU loses power: nothing more arrives); returns that link."""
    ecu = car.ecus["brk-1"]
    assert ecu.served is not None
    link = ecu.served.primary_end
    total = len(IMAGES[BRAKES][0])

    def say(line: str) -> None:
        car.lines.append(line)
        sent = re.search(rf"send {BRAKES} to brk-1: +\d+% \((\d+)/", line)
        if sent and int(sent.group(1)) > total * 3 // 4:
            link.cut = True

    first = Primary(car.config, time_source=car.time, say=say).run_cycle()
    assert first.unreachable == ["brk-1"] and first.installed == {}
    return link


def test_5_4_2_secondary_rebooted_mid_transfer_resumes_at_its_checkpoint(tmp_path, now):
    with backend_and_vehicle(tmp_path, now, secondaries={"brk-1": "brk-v1"}) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        ecu = car.ecus["brk-1"]
        assert ecu.served is not None and ecu.agent is not None
        link = ecu.served.primary_end
        total = len(IMAGES[BRAKES][0])
        assert total * 3 // 4 > ecu.agent.checkpoint_bytes  # the cut comes after one
        cut_three_quarters_into_the_transfer(car)
        assert ecu.agent.store.read(TRANSFER_AT) is not None  # a checkpoint was stored

        link.cut = False
        rebooted = car.boot("brk-1")  # power on: RAM is gone, the slot and store are not
        held = rebooted.status().image_offset
        assert 0 < held < total
        car.lines.clear()
        second = car.cycle()
        assert second.installed == {"brk-1": BRAKES}, "\n".join(car.lines)
        text = "\n".join(car.lines)
        assert f"brk-1: continuing the transfer at byte {held}" in text
        assert "metadata file(s)" not in text  # the ECU verified its stored metadata again
        assert car.installed("brk-1") == BRAKES
        st = car.ecus["brk-1"].agent.slots.status()
        assert st.installed is not None and st.installed.filename == BRAKES
        image = car.ecus["brk-1"].agent.flash.read(st.booted, 0, st.installed.length)
        assert image == IMAGES[BRAKES][0]


def test_5_4_slow_secondary_keeps_its_partial_and_a_new_image_of_the_same_name_is_not_resumed(
    tmp_path, now
):
    """§5.4 at a Secondary, through the whole cycle: the ECU finds the link too slow and
    refuses the transfer (slow-retrieval), keeping its partial; its report names the attack
    and the Director fails the assignment. The OEM then publishes different content under
    the same file name and length and assigns it again. STATUS names only the file and its
    length, so the Primary must not continue the stale partial (that would end in BadHash):
    it sends the metadata again and the new image from byte 0, which installs exactly."""
    with backend_and_vehicle(tmp_path, now, secondaries={"brk-1": "brk-v1"}) as (backend, car):
        old, hw, counter = IMAGES[BRAKES]
        new = bytes(reversed(old))
        assert len(new) == len(old) and new != old
        backend.assign(VIN, [("brk-1", BRAKES)])
        ecu = car.ecus["brk-1"]
        assert ecu.agent is not None
        # the ECU's monotonic clock: 9 s between two chunks of about 7 KiB, under its
        # constrained floor of 1 KiB/s over 10 s (the test steps the clock, no sleeping)
        ticks = [0.0]

        def slow_link() -> float:
            ticks[0] += 9.0
            return ticks[0]

        ecu.agent.clock = slow_link
        first = car.cycle()
        assert "slow-retrieval" in first.failed.get("brk-1", ""), "\n".join(car.lines)
        held = ecu.agent.status().image_offset
        assert 0 < held < len(old)  # the partial is kept
        ecu.agent.clock = time.monotonic

        # meanwhile the same name and length, other content, is released and assigned;
        # it goes out once the Director has ended the first bundle
        when = backend.clock()
        ImageRepository(backend.image_dir, when).stage_target(BRAKES, new, hw, counter)
        offline = default_offline_dir(backend.image_dir)
        ImageRepository(backend.image_dir, when, offline_dir=offline).sign(when)
        backend.advance(timedelta(seconds=1))
        backend.director.image_view.refresh(force=True)
        backend.assign(VIN, [("brk-1", BRAKES)])

        car.lines.clear()
        second = car.cycle()
        text = "\n".join(car.lines)
        # the next manifest carried the ECU's attack indicator: the Director failed the
        # first assignment, and its next bundle names the new image
        states = {a["id"]: a for a in backend.director.list_assignments(vin=VIN)}
        assert states[1]["state"] == "failed", states
        assert "slow-retrieval" in (states[1]["reason"] or "")
        assert second.failed == {} and second.installed == {"brk-1": BRAKES}, text
        assert f"brk-1: its partial {BRAKES} is of another image: starting again" in text
        assert "brk-1: sending 1 metadata file(s)" in text
        assert "resumed the image transfer" not in text
        st = ecu.agent.slots.status()
        assert st.installed is not None and st.installed.filename == BRAKES
        assert ecu.agent.flash.read(st.booted, 0, st.installed.length) == new


def test_a_transfer_recorded_by_an_earlier_primary_restarts_at_byte_0(tmp_path, now):
    """An upgraded Primary finds the image it was sending named by the old string key
    (path, length, hashes joined): it reads as "unknown image", so the Secondary's partial
    is not continued (the safe side): the metadata goes again, the image from byte 0."""
    with backend_and_vehicle(tmp_path, now, secondaries={"brk-1": "brk-v1"}) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        link = cut_three_quarters_into_the_transfer(car)
        total = len(IMAGES[BRAKES][0])
        state = car.primary().state
        record = state.load_cycle()
        target = record.pending["brk-1"].target
        hashes = ",".join(f"{k}:{v.lower()}" for k, v in sorted(target.hashes.items()))
        record.results["brk-1"]["sending"] = f"{target.path}|{target.length}|{hashes}"
        state.save_cycle(record)

        link.cut = False
        assert car.boot("brk-1").status().image_offset > 0  # the ECU kept a partial
        car.lines.clear()
        second = car.cycle()
        text = "\n".join(car.lines)
        assert second.installed == {"brk-1": BRAKES}, text
        assert f"brk-1: its partial {BRAKES} is of another image: starting again" in text
        assert "brk-1: sending 1 metadata file(s)" in text
        assert "resumed the image transfer" not in text
        st = car.ecus["brk-1"].agent.slots.status()
        assert st.installed is not None
        assert car.ecus["brk-1"].agent.flash.read(st.booted, 0, total) == IMAGES[BRAKES][0]
