"""Image identity across the parts (issue 12): the Director, the Primary and a Secondary
agree on a report that differs from the Director's targets entry only in the case of a
hash (:func:`uptane.identity.same_image`: hex compared without regard to case).

A Secondary keeps its installed image's sha256 in upper case (its boot record says so,
so its own signed reports carry it); the Primary's record is lost (a damaged record
starts afresh, so what the Primary believes comes from that report alone). Then:

- the Director marks the assignment installed on that report;
- the Primary does not approve, send or install the image again;
- the Secondary, handed the Director's metadata anyway, does not wait for the image
  (it runs it already), and INSTALL changes nothing: one install in its A/B record.
"""

from __future__ import annotations

import dataclasses
import secrets
from datetime import UTC, datetime
from typing import Any

import pytest
from cycle_support import LIMITS, VIN, Vehicle, backend_and_vehicle

from primary.config import DIRECTOR, IMAGE
from primary.forward import Forwarder
from primary.secondaries import SecondaryPort, status_has
from primary.state import PrimaryState
from primary.verify import load_trust
from secondary.agent import SecondaryAgent
from uptane.errors import UptaneError
from uptane.manifest import check_report, decode_report
from uptane.metadata import JSON

BRAKES = "brakes/fw-2.bin"
ECU = "brk-1"


def shout_hashes(agent: SecondaryAgent) -> None:
    """Rewrite the Secondary's boot record with every image hash in upper case (a
    Secondary that keeps hex digests that way)."""
    record = agent.flash.read_boot()
    assert record is not None
    data: dict[str, Any] = dict(record.data)
    images = {
        slot: {**info, "hashes": {a: h.upper() for a, h in info["hashes"].items()}}
        for slot, info in data["images"].items()
    }
    agent.flash.write_boot(dataclasses.replace(record, data={**data, "images": images}))


def signed_installed_hash(car: Vehicle) -> str:
    """The sha256 of the installed image in the Secondary's own signed report."""
    agent = car.ecus[ECU].agent
    assert agent is not None
    nonce = secrets.token_bytes(16)
    signed = decode_report(agent.report(nonce), LIMITS, JSON)
    body = check_report(signed, car.ecus[ECU].key.key, expected_ecu_id=ECU, expected_nonce=nonce)
    assert body.installed.filename == BRAKES
    return body.installed.hashes["sha256"]


def test_director_primary_and_secondary_agree_on_a_report_differing_only_in_hash_case(
    tmp_path,
):
    now = datetime.now(UTC).replace(microsecond=0)
    with backend_and_vehicle(tmp_path, now, secondaries={ECU: "brk-v1"}, encodings={ECU: JSON}) as (
        backend,
        car,
    ):
        backend.assign(VIN, [(ECU, BRAKES)])
        first = car.cycle()
        assert first.error is None and first.installed == {ECU: BRAKES}, "\n".join(car.lines)
        lower = car.primary().state.load_cycle().installed[ECU].hashes["sha256"]
        assert lower == lower.lower()

        shout_hashes(car.ecus[ECU].agent)  # type: ignore[arg-type]
        car.boot(ECU)  # the Secondary restarts from its files
        assert signed_installed_hash(car) == lower.upper()
        # the Primary forgets what it knew: a damaged record starts afresh
        (car.config.storage_dir / "state" / "cycle").write_bytes(b"damaged")

        car.lines.clear()
        second = car.cycle()
        text = "\n".join(car.lines)
        assert second.error is None and second.manifest_sent, text
        # the Director: installed, on a report whose hash is upper case
        states = {a["ecu"]: a["state"] for a in backend.director.list_assignments(vin=VIN)}
        assert states == {ECU: "installed"}
        # the Primary: believes the report, approves and sends nothing
        record = PrimaryState(car.config.storage_dir, LIMITS).load_cycle()
        assert record.installed[ECU].hashes["sha256"] == lower.upper()
        assert record.pending == {}
        assert second.installed == {} and second.downloaded == []
        assert "approved" not in text and "metadata file(s)" not in text, text

        # the Secondary: handed the Director's verified metadata all the same (as a
        # Primary would that thought it needed the image), it does not wait for it
        primary = car.primary()
        trusts = load_trust(car.config, primary.state)
        files = Forwarder(car.config, primary.state, primary.fetcher, trusts, car.time)
        port = SecondaryPort(car.config.secondaries[0], LIMITS)
        try:
            port.put_time(int(now.timestamp()))
            port.send_metadata(files.files_for(port.cfg))
            status = port.status()
            assert status_has(status, BRAKES)
            assert status.state == "idle", status  # not "verified": no image awaited
            with pytest.raises(UptaneError):
                port.install(BRAKES)  # nothing received, nothing to install
        finally:
            port.close()
        agent = car.ecus[ECU].agent
        assert agent is not None
        st = agent.slots.status()
        # one install: a blank device starts on slot A, its first install goes to B
        assert st.active == "B" and st.trial is None
        assert st.installed is not None and st.installed.filename == BRAKES
        assert {DIRECTOR, IMAGE} == set(trusts)
