"""The Primary's state directory: exact trusted files per repository, pruned images, and a
damaged cycle record that does not stop the vehicle."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from cycle_support import VIN, backend_and_vehicle

from primary.cycle import Cycle, CycleResult
from primary.lifecycle import Step
from primary.state import CycleRecord, PrimaryState, image_of
from primary.timesource import SystemTime
from uptane.errors import UptaneError
from uptane.limits import Limits
from uptane.metadata import TargetFile


def test_write_metadata_keeps_exactly_the_trusted_files(tmp_path):
    st = PrimaryState(tmp_path, Limits.primary())
    st.write_metadata("image", {"root": b"r1", "targets": b"t", "../x": b"d"})
    assert st.read_metadata("image") == {"root": b"r1", "targets": b"t", "../x": b"d"}
    assert not (tmp_path / "x").exists()  # a hostile role name stays inside its directory
    st.write_metadata("image", {"root": b"r2"})
    assert st.read_metadata("image") == {"root": b"r2"}
    assert st.read_metadata("director") == {}


def test_prune_keeps_only_images_still_needed(tmp_path):
    st = PrimaryState(tmp_path, Limits.primary())
    keep = TargetFile("a/b.bin", 3, {"sha256": "ab" * 32})
    drop = TargetFile("c.bin", 3, {"sha256": "cd" * 32})
    for t in (keep, drop):
        st.image_path(t).write_bytes(b"abc")
    part = st.image_path(keep).with_name(st.image_path(keep).name + ".part")
    part.write_bytes(b"a")
    st.prune_images([keep])
    assert st.image_path(keep).exists() and part.exists()
    assert not st.image_path(drop).exists()
    assert "/" not in st.image_path(keep).name


def test_cycle_record_round_trip(tmp_path):
    st = PrimaryState(tmp_path, Limits.primary())
    assert st.load_cycle() == CycleRecord()
    rec = CycleRecord(last_error="x", cycles=3)
    rec.installed["e"] = TargetFile("p", 1, {"sha256": "00" * 32}, release_counter=4)
    st.save_cycle(rec)
    back = st.load_cycle()
    assert back.cycles == 3 and back.installed["e"].release_counter == 4


def test_a_damaged_cycle_record_does_not_stop_the_vehicle(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    with backend_and_vehicle(tmp_path, now, secondaries={"brk-1": "brk-v1"}) as (backend, car):
        assert car.cycle().error is None
        (car.config.storage_dir / "state" / "cycle").write_bytes(b'{"installed": [1, 2')
        backend.assign(VIN, [("brk-1", "brakes/fw-3.bin")])
        result = car.cycle()
        assert "unusable" in "\n".join(car.lines), "\n".join(car.lines)
        assert result.installed == {"brk-1": "brakes/fw-3.bin"}


def _old_image_key(t: TargetFile) -> str:
    """The string an earlier Primary stored for an image (its ``_image_key``)."""
    hashes = ",".join(f"{k}:{v.lower()}" for k, v in sorted(t.hashes.items()))
    return f"{t.path}|{t.length}|{hashes}"


def test_a_record_written_by_an_earlier_primary_still_loads(tmp_path):
    """A Primary upgraded in a car keeps its state: steps stored as strings map onto the
    lifecycle table, and an image named by the old string key reads as "unknown image"
    (a transfer to that ECU restarts at byte 0; a refusal count starts again)."""
    limits = Limits.primary()
    t = TargetFile("brakes/fw-2.bin", 3, {"sha256": "ab" * 32})
    entry = {"path": t.path, "entry": t.to_dict()}
    old = {
        "installed": {},
        "pending": {
            "brk-1": {
                "ecu_id": "brk-1",
                "target": entry,
                "step": "downloaded",
                "director_version": 2,
                "attempts": 1,
                "url": "http://i/targets/brakes/fw-2.bin",
            },
            "tcu-1": {"ecu_id": "tcu-1", "target": entry, "step": "sent", "director_version": 2},
        },
        "results": {
            "brk-1": {"outcome": "unreachable", "reason": "x", "sending": _old_image_key(t)},
            "tcu-1": {
                "outcome": "failed",
                "filename": t.path,
                "image": _old_image_key(t),
                "refusals": 2,
                "sending": _old_image_key(t),
            },
        },
        "attacks": [],
        "last_error": None,
        "last_cycle": "2026-01-01T00:00:00Z",
        "cycles": 7,
    }
    st = PrimaryState(tmp_path, limits)
    st._state.write_json("cycle", old)
    rec = st.load_cycle()
    assert rec.cycles == 7
    assert rec.pending["brk-1"].step is Step.DOWNLOADED and rec.pending["brk-1"].attempts == 1
    assert rec.pending["tcu-1"].step is Step.SENT
    assert image_of(rec.results["brk-1"], "sending") is None
    # the bookkeeping below reads the record and writes the state only
    nothing: Any = None
    cy = Cycle(nothing, st, rec, CycleResult(), SystemTime(), nothing, nothing, print, nothing)
    assert cy.sending("brk-1") is None and cy.sending("tcu-1") is None
    assert cy.refusals("tcu-1", t) == 0
    # written back in the new form, it names the image
    cy.set_sending("brk-1", t)
    again = st.load_cycle()
    assert again.pending["brk-1"].to_dict()["step"] == "downloaded"
    assert t.same_image(image_of(again.results["brk-1"], "sending"))


def test_an_unknown_step_makes_the_record_unusable(tmp_path):
    st = PrimaryState(tmp_path, Limits.primary())
    t = TargetFile("p", 1, {"sha256": "00" * 32})
    bad = {"ecu_id": "e", "target": {"path": "p", "entry": t.to_dict()}, "step": "flying"}
    st._state.write_json("cycle", {"pending": {"e": {**bad, "director_version": 1}}})
    with pytest.raises(UptaneError, match="unusable"):
        st.load_cycle()
