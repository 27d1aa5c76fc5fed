"""The file-backed flash simulator: regions, write points, power cuts, the boot-control area."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardware.flash import BOOT, BootRecord, Flash, other_slot
from storage.faults import FaultyFileSystem, PowerCut, PowerLoss, WritePointCounter
from uptane.errors import UptaneError

SLOT = 4096


def test_write_read_and_reopen(tmp_path: Path) -> None:
    f = Flash(tmp_path, SLOT)
    f.write("A", 100, b"hello")
    f.commit("A")
    assert f.read("A", 100, 5) == b"hello"
    g = f.reopen()
    assert g.read("A", 100, 5) == b"hello"
    assert g.slot_size == SLOT and g.size("B") == SLOT
    assert g.size(BOOT) == 2 * g.boot_copy_size


def test_writes_outside_a_region_are_refused(tmp_path: Path) -> None:
    f = Flash(tmp_path, SLOT)
    with pytest.raises(ValueError):
        f.write("A", SLOT - 2, b"abc")
    with pytest.raises(ValueError):
        f.read("B", -1, 2)
    with pytest.raises(ValueError):
        f.write("C", 0, b"x")


def test_geometry_is_kept_and_checked(tmp_path: Path) -> None:
    Flash(tmp_path, SLOT)
    assert Flash(tmp_path).slot_size == SLOT
    with pytest.raises(ValueError):
        Flash(tmp_path, SLOT * 2)
    with pytest.raises(ValueError):
        Flash(tmp_path / "new")  # a new device needs a size


def test_power_loss_is_hardware_not_an_uptane_error() -> None:
    assert not issubclass(PowerLoss, UptaneError)
    assert other_slot("A") == "B" and other_slot("B") == "A"


def test_every_write_and_commit_is_a_counted_write_point(tmp_path: Path) -> None:
    hook = WritePointCounter()
    f = Flash(tmp_path, SLOT, fs=FaultyFileSystem(hook))
    f.write("A", 0, b"x")
    f.commit("A")
    f.write_boot(BootRecord())
    assert f.write_points == 4 == hook.count
    assert hook.points == ["write A@0+1", "fsync A", "write boot@0+91", "fsync boot"]


def test_torn_write_applies_a_prefix_and_kills_the_device(tmp_path: Path) -> None:
    f = Flash(tmp_path, SLOT)
    f.write("A", 0, b"\x00" * 100)
    f.commit("A")
    f = f.reopen(fs=FaultyFileSystem(PowerCut(at_write=1, torn=0.5)))
    with pytest.raises(PowerLoss):
        f.write("A", 0, b"\x11" * 100)
    assert not f.alive
    with pytest.raises(PowerLoss):
        f.read("A", 0, 1)
    g = f.reopen()
    assert g.read("A", 0, 100) == b"\x11" * 50 + b"\x00" * 50


def test_lose_unsynced_drops_uncommitted_writes_only(tmp_path: Path) -> None:
    f = Flash(tmp_path, SLOT, fs=FaultyFileSystem(PowerCut(at_write=4, lose_unsynced=True)))
    f.write("A", 0, b"committed")  # 1
    f.commit("A")  # 2
    f.write("A", 0, b"overwrite")  # 3: never committed
    with pytest.raises(PowerLoss):
        f.write("B", 0, b"cut")  # 4
    g = f.reopen()
    assert g.read("A", 0, 9) == b"committed"
    assert g.read("B", 0, 3) == b"\x00\x00\x00"


def test_cut_at_commit_keeps_programmed_data_on_raw_flash(tmp_path: Path) -> None:
    f = Flash(tmp_path, SLOT, fs=FaultyFileSystem(PowerCut(at_write=2)))
    f.write("A", 0, b"data")
    with pytest.raises(PowerLoss):
        f.commit("A")
    assert f.reopen().read("A", 0, 4) == b"data"


def test_blank_device_has_no_boot_record(tmp_path: Path) -> None:
    assert Flash(tmp_path, SLOT).read_boot() is None


def test_boot_records_alternate_copies_with_rising_sequence(tmp_path: Path) -> None:
    f = Flash(tmp_path, SLOT)
    seqs = []
    for i in range(5):
        rec = f.write_boot(BootRecord(active="A", trial="B", attempts=i, data={"i": i}))
        seqs.append(rec.sequence)
        back = f.reopen().read_boot()
        assert back is not None and back.attempts == i and back.data == {"i": i}
        assert back.sequence == rec.sequence
    assert seqs == [1, 2, 3, 4, 5]


def test_a_garbled_copy_falls_back_to_the_other(tmp_path: Path) -> None:
    f = Flash(tmp_path, SLOT)
    f.write_boot(BootRecord(data={"v": 1}))
    f.write_boot(BootRecord(data={"v": 2}))  # lands in copy 1
    f.write(BOOT, f.boot_copy_size + 30, b"\x00garbage")
    f.commit(BOOT)
    rec = f.reopen().read_boot()
    assert rec is not None and rec.data == {"v": 1}


def test_a_record_naming_an_unknown_slot_is_not_valid(tmp_path: Path) -> None:
    f = Flash(tmp_path, SLOT)
    f.write_boot(BootRecord(data={"v": 1}))
    with pytest.raises(ValueError):
        BootRecord.from_payload(b'{"active":"C","attempts":0,"confirmed":true,"data":{}}', 1)
    assert f.read_boot() is not None


@pytest.mark.parametrize("lose_unsynced", [False, True])
@pytest.mark.parametrize("torn", [0.0, 0.01, 0.5, 0.99, 1.0])
def test_boot_control_is_never_torn(tmp_path: Path, torn: float, lose_unsynced: bool) -> None:
    """A cut at either write point of a boot-record update leaves the old or the new record."""
    for at in (1, 2):
        d = tmp_path / f"cut{at}"
        f = Flash(d, SLOT)
        for v in range(3):  # both copies hold valid records
            f.write_boot(BootRecord(data={"v": v, "pad": "x" * 200}))
        f = f.reopen(fs=FaultyFileSystem(PowerCut(at, torn=torn, lose_unsynced=lose_unsynced)))
        with pytest.raises(PowerLoss):
            f.write_boot(BootRecord(active="B", data={"v": 3, "pad": "y" * 10}))
        rec = f.reopen().read_boot()
        assert rec is not None
        assert (rec.active, rec.data["v"]) in {("A", 2), ("B", 3)}
        if at == 1 and torn < 1.0:
            assert rec.data["v"] == 2  # an incomplete write never validates
