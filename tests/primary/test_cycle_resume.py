"""A Secondary that loses power in the middle of an image transfer: after it reboots, the
Primary's next cycle continues at the offset the ECU reports (its last checkpoint), without
sending the metadata again, and the image installs byte-exact (§5.4.2 step 7)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from cycle_support import IMAGES, VIN, backend_and_vehicle

from primary.agent import Primary
from secondary.agent import TRANSFER_AT

BRAKES = "brakes/fw-2.bin"


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def test_5_4_2_secondary_rebooted_mid_transfer_resumes_at_its_checkpoint(tmp_path, now):
    with backend_and_vehicle(tmp_path, now, secondaries={"brk-1": "brk-v1"}) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        ecu = car.ecus["brk-1"]
        assert ecu.served is not None and ecu.agent is not None
        link = ecu.served.primary_end
        total = len(IMAGES[BRAKES][0])
        assert total * 3 // 4 > ecu.agent.checkpoint_bytes  # the cut comes after one

        def say(line: str) -> None:
            car.lines.append(line)
            sent = re.search(rf"send {BRAKES} to brk-1: +\d+% \((\d+)/", line)
            if sent and int(sent.group(1)) > total * 3 // 4:
                link.cut = True  # the ECU loses power: nothing more arrives

        first = Primary(car.config, time_source=car.time, say=say).run_cycle()
        assert first.unreachable == ["brk-1"] and first.installed == {}
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
        assert "sending time and" not in text  # the ECU verified its stored metadata again
        assert car.installed("brk-1") == BRAKES
        st = car.ecus["brk-1"].agent.slots.status()
        assert st.installed is not None and st.installed.filename == BRAKES
        image = car.ecus["brk-1"].agent.flash.read(st.booted, 0, st.installed.length)
        assert image == IMAGES[BRAKES][0]
