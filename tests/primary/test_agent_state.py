"""The Primary's state directory: exact trusted files per repository, pruned images, and a
damaged cycle record that does not stop the vehicle."""

from __future__ import annotations

from datetime import UTC, datetime

from cycle_support import VIN, backend_and_vehicle

from primary.state import CycleRecord, PrimaryState
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
