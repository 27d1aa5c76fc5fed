"""The realistic flash model: erase blocks, NOR programming, page-granular tears at any byte,
a cache that loses any subset of unsynced pages, and boot records that survive all of it.

The simulation must be right, or the power walks built on it (tests/hardware/
test_power_walks.py) prove nothing: these tests check the model itself."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import pytest
from test_slots import LIMITS, T1, T2, V1, V2, booted_bytes, install

from hardware.flash import BOOT, BootRecord, Flash, FlashModel
from hardware.slots import ImageInfo, SlotManager
from storage import AtomicStore
from storage.faults import FaultyFileSystem, FlashCut, PowerLoss, WritePointCounter
from uptane.errors import InstallFailed, MalformedInput
from uptane.verify import ImageVerifier

NOR = FlashModel(erase_block=4096, page=256)
SLOT = 16 * 1024


# --- the device: erase blocks and NOR programming ---------------------------------------------


def test_a_model_needs_a_page_that_divides_its_erase_block() -> None:
    for eb, page in ((4096, 0), (4096, 3000), (256, 512), (0, 0)):
        with pytest.raises(ValueError):
            FlashModel(eb, page)
    assert FlashModel().erase_block == 4096 and FlashModel().page == 256


def test_a_new_device_is_erased_and_keeps_its_model(tmp_path: Path) -> None:
    f = Flash(tmp_path, SLOT, model=NOR)
    assert f.read("A", 0, 8) == b"\xff" * 8 and f.read("B", SLOT - 8, 8) == b"\xff" * 8
    g = Flash(tmp_path)  # the model is the device's: read back from its geometry
    assert g.model == NOR and g.erase_block == 4096 and g.reopen().model == NOR
    with pytest.raises(ValueError):
        Flash(tmp_path, model=FlashModel(8192, 256))  # another chip
    with pytest.raises(ValueError):
        Flash(tmp_path / "odd", 5000, model=NOR)  # slots of whole blocks only


def test_boot_copies_never_share_an_erase_block(tmp_path: Path) -> None:
    """With blocks larger than a copy, each copy grows to whole blocks: erasing one copy
    can never erase the other (two copies in one block would both die in one erase)."""
    big = FlashModel(erase_block=16384, page=2048)
    f = Flash(tmp_path, 32768, boot_copy_size=4096, model=big)
    assert f.boot_copy_size == 16384 and f.size(BOOT) == 2 * 16384
    f.write_boot(BootRecord(data={"v": 1}))  # copy 0
    f.erase(BOOT, f.boot_copy_size, f.boot_copy_size)  # the other copy's block
    rec = f.read_boot()
    assert rec is not None and rec.data == {"v": 1}


def test_programming_only_clears_bits_and_erase_sets_them(tmp_path: Path) -> None:
    f = Flash(tmp_path, SLOT, model=NOR)
    f.write("A", 0, b"\xf0\x0f")
    assert f.read("A", 0, 2) == b"\xf0\x0f" and f.overprograms == 0
    f.write("A", 0, b"\x0f\x0f")  # over bytes that were not erased: NOR ANDs them
    assert f.read("A", 0, 2) == b"\x00\x0f" and f.overprograms == 1
    f.erase("A", 0, 4096)
    assert f.read("A", 0, 2) == b"\xff\xff"
    for offset, length in ((0, 100), (100, 4096), (4096, 4000)):
        with pytest.raises(ValueError):
            f.erase("A", offset, length)  # whole blocks only


def test_the_ideal_device_is_unchanged(tmp_path: Path) -> None:
    """No model: writes overwrite, erase is nothing (no write point), the geometry file and
    the write points are those of before the model existed."""
    hook = WritePointCounter()
    f = Flash(tmp_path, SLOT, fs=FaultyFileSystem(hook))
    f.write("A", 0, b"\xf0")
    f.write("A", 0, b"\x0f")
    f.erase("A", 0, 4096)
    assert f.read("A", 0, 1) == b"\x0f" and f.model is None and f.erase_block == 0
    f.write_boot(BootRecord())
    assert hook.points == ["write A@0+1", "write A@0+1", "write boot@0+91", "fsync boot"]
    assert (tmp_path / "geometry.json").read_bytes() == (
        b'{"boot_copy_size":4096,"slot_size":16384}'
    )


def test_a_boot_record_update_erases_its_copy_first(tmp_path: Path) -> None:
    hook = WritePointCounter()
    f = Flash(tmp_path, SLOT, model=NOR, fs=FaultyFileSystem(hook))
    f.write_boot(BootRecord())
    f.write_boot(BootRecord(active="B"))
    assert hook.points == [
        "write erase boot@0+4096",
        "write boot@0+91",
        "fsync boot",
        "write erase boot@4096+4096",
        "write boot@4096+91",
        "fsync boot",
    ]
    assert f.overprograms == 0


# --- a device in the field: the layout of before ----------------------------------------------


def old_layout_device(directory: Path, records: list[tuple[int, bytes]]) -> None:
    """A flash directory as the code before the model wrote it: a two-key geometry file and
    format-1 records (magic, format, sequence, length, payload, CRC-32) at 0 and 4096."""
    directory.mkdir(parents=True)
    (directory / "geometry.json").write_bytes(b'{"boot_copy_size":4096,"slot_size":16384}')
    boot = bytearray(b"\xff" * 8192)
    for index, (seq, payload) in enumerate(records):
        body = struct.pack(">4sIQI", b"UPBC", 1, seq, len(payload)) + payload
        blob = body + struct.pack(">I", zlib.crc32(body))
        boot[index * 4096 : index * 4096 + len(blob)] = blob
    (directory / "boot.bin").write_bytes(bytes(boot))
    for slot, data in (("A", V2), ("B", V1)):
        (directory / f"{slot}.bin").write_bytes(data + bytes(SLOT - len(data)))


def old_records() -> list[tuple[int, bytes]]:
    """V1 confirmed in B (sequence 8), and an older record (sequence 7) in copy 0."""
    images = {"A": None, "B": ImageInfo.from_target(T1).to_dict()}
    newer = BootRecord("B", None, 0, True, {"images": images, "last": None})
    older = BootRecord("A", "B", 1, False, {"images": images, "last": None})
    return [(7, older.to_payload()), (8, newer.to_payload())]


@pytest.mark.parametrize("model", [None, NOR], ids=["ideal", "nor-4k"])
def test_a_device_written_by_the_old_layout_boots_and_updates(
    tmp_path: Path, model: FlashModel | None
) -> None:
    old_layout_device(tmp_path / "dev", old_records())
    sm = SlotManager(Flash(tmp_path / "dev", model=model), max_trial_boots=2, limits=LIMITS)
    assert sm.boot() == "B" and booted_bytes(sm) == V1
    assert sm.status().installed == ImageInfo.from_target(T1)
    install(sm, V2, T2)  # over the old layout, with the model's erases
    sm = SlotManager(sm.flash.reopen(), max_trial_boots=2, limits=LIMITS)
    assert sm.boot() == "A" and booted_bytes(sm) == V2
    sm.confirm()
    assert sm.flash.overprograms == 0
    rec = Flash(tmp_path / "dev").read_boot()  # copies stay at 0 and 4096, format 1
    assert rec is not None and rec.active == "A" and rec.sequence == 11


def test_an_old_layout_whose_copies_share_a_block_refuses_that_model(tmp_path: Path) -> None:
    old_layout_device(tmp_path / "dev", old_records())
    with pytest.raises(ValueError, match="open it without a model"):
        Flash(tmp_path / "dev", model=FlashModel(erase_block=8192, page=256))


@pytest.mark.parametrize(
    "geometry",
    [
        b'{"boot_copy_size":4096,"slot_size":16384,"erase_block":4096}',
        b'{"boot_copy_size":4096,"slot_size":16384,"erase_block":"4k","page":256}',
        b'{"boot_copy_size":4096,"slot_size":16384,"erase_block":8192,"page":256}',
    ],
)
def test_a_damaged_model_in_the_geometry_is_a_named_error(tmp_path: Path, geometry: bytes) -> None:
    Flash(tmp_path, SLOT, model=NOR)
    (tmp_path / "geometry.json").write_bytes(geometry)
    with pytest.raises(MalformedInput, match="geometry"):
        Flash(tmp_path)


# --- the fault layer: tears at any byte, a cache that loses any pages -------------------------


def _torn(tmp_path: Path, seed: int, old: bytes, new: bytes, offset: int = 0) -> bytes:
    p = tmp_path / f"t{seed}.bin"
    p.write_bytes(old)
    fs = FaultyFileSystem(FlashCut(1, seed=seed, page=256))
    with pytest.raises(PowerLoss), fs.open(p) as f:
        f.pwrite(new, offset)
    return p.read_bytes()


def test_a_torn_program_stops_at_any_byte_inside_a_page(tmp_path: Path) -> None:
    old, new = b"\xff" * 2048, bytes(range(256)) * 8
    cuts, mixed = set(), 0
    for seed in range(60):
        out = _torn(tmp_path, seed, old, new)
        assert out == _torn(tmp_path, seed, old, new), "a seed cuts the same way every time"
        first = next((i for i in range(2048) if out[i] != new[i]), 2048)
        cuts.add(first)
        page_end = min(2048, (first // 256 + 1) * 256)
        assert out[page_end:] == old[page_end:], "pages after the cut page are untouched"
        for i in range(first, page_end):  # each bit is the old one or the new one
            assert out[i] & ~(old[i] | new[i]) == 0 and (old[i] & new[i]) & ~out[i] == 0
            mixed += out[i] not in (old[i], new[i])
    assert len(cuts) > 40 and min(cuts) < 256 and max(cuts) > 1792, sorted(cuts)
    assert any(c % 256 for c in cuts) and mixed > 0


def test_a_torn_write_at_an_offset_tears_by_the_files_pages(tmp_path: Path) -> None:
    old, new = b"\x00" * 1024, b"\x11" * 600
    for seed in range(20):
        out = _torn(tmp_path, seed, old, new, offset=100)
        assert out[:100] == old[:100] and out[700:] == old[700:]
        first = next((i for i in range(100, 700) if out[i] != 0x11), 700)
        end = min(700, (first // 256 + 1) * 256)  # the cut page ends on the file's page
        assert out[end:700] == old[end:700]


def test_the_cache_loses_any_subset_of_unsynced_pages_in_any_order(tmp_path: Path) -> None:
    """Eight pages written twice since the last fsync: after a cut each page holds one of
    its three versions (or a mix of two), independently of the others."""
    page = 256
    v0, v1, v2 = b"\x00" * 2048, b"\x11" * 2048, b"\x22" * 2048
    seen: set[tuple[int, ...]] = set()
    intermediate = later_kept_earlier_lost = False
    for seed in range(40):
        p = tmp_path / f"c{seed}.bin"
        p.write_bytes(v0)
        fs = FaultyFileSystem(FlashCut(4, seed=seed, page=page, lose_unsynced=True))
        with fs.open(p) as f:
            f.pwrite(v1, 0)  # 1
        with fs.open(p) as f:
            f.pwrite(v2, 0)  # 2
        with fs.open(p) as f:
            f.pwrite(b"", 0)  # 3 (nothing)
        with pytest.raises(PowerLoss):
            fs.sync_dir(tmp_path)  # 4: the cut, before any fsync of the file
        out = p.read_bytes()
        assert len(out) == 2048
        state = tuple(out[i * page] for i in range(8))
        seen.add(state)
        intermediate |= 0x11 in state
        later_kept_earlier_lost |= any(
            state[i] == 0 and state[j] == 0x22 for i in range(8) for j in range(i)
        )
    assert (0,) * 8 in seen and (0x22,) * 8 in seen  # all lost, all kept
    assert intermediate and later_kept_earlier_lost and len(seen) > 20


def test_the_cache_never_loses_what_an_fsync_made_durable(tmp_path: Path) -> None:
    for seed in range(20):
        p = tmp_path / f"s{seed}.bin"
        p.write_bytes(b"\x00" * 1024)
        fs = FaultyFileSystem(FlashCut(4, seed=seed, page=256, lose_unsynced=True))
        with fs.open(p) as f:
            f.pwrite(b"\x11" * 512, 0)  # 1
            f.sync()  # 2
        with fs.open(p) as f:
            f.pwrite(b"\x22" * 512, 512)  # 3
        with pytest.raises(PowerLoss), fs.open(p) as f:
            f.sync()  # 4: the cut
        out = p.read_bytes()
        assert out[:512] == b"\x11" * 512 and len(out) == 1024
        assert all(b & ~0x22 == 0 for b in out[512:])  # each bit old (0) or new


def test_the_directory_keeps_a_prefix_of_its_unsynced_operations(tmp_path: Path) -> None:
    kept = set()
    for seed in range(30):
        d = tmp_path / f"d{seed}"
        store = AtomicStore(d)
        for name in "abc":
            store.write(name, b"old")
        fs = FaultyFileSystem(FlashCut(7, seed=seed, lose_unsynced=True))
        for name in "abc":
            (d / f"{name}.new").write_bytes(b"new")
        fs.replace(d / "a.new", d / "a")  # 1
        fs.replace(d / "b.new", d / "b")  # 2
        fs.replace(d / "c.new", d / "c")  # 3
        fs.unlink(d / "a")  # 4
        fs.unlink(d / "b")  # 5
        fs.unlink(d / "c")  # 6
        with pytest.raises(PowerLoss):
            fs.sync_dir(d)  # 7
        # in order: a later operation stays only if every earlier one stayed
        state = [(d / n).read_bytes() if (d / n).exists() else b"" for n in "abc"]
        prefixes = {
            k: [b"" if i < k - 3 else b"new" if i < k else b"old" for i in range(3)]
            for k in range(7)
        }
        k = next((k for k, want in prefixes.items() if state == want), None)
        assert k is not None, state
        kept.add(k)
    assert len(kept) >= 4 and {0, 6} <= kept, kept


# --- the boot record under every kind of cut --------------------------------------------------


@pytest.mark.parametrize("lose_unsynced", [False, True], ids=["raw", "cache"])
@pytest.mark.parametrize(
    "model", [NOR, FlashModel(erase_block=16384, page=2048)], ids=["nor-4k", "block-16k"]
)
def test_boot_control_survives_realistic_cuts(
    tmp_path: Path, model: FlashModel, lose_unsynced: bool
) -> None:
    """A cut at each of the three points of a boot-record update (erase, program, commit),
    40 seeds each: the old record or the new one, never neither."""
    base = tmp_path / "base"
    f = Flash(base, 65536, model=model)
    for v in range(3):
        f.write_boot(BootRecord(data={"v": v, "pad": "x" * 900}))
    outcomes = set()
    for at in (1, 2, 3):
        for seed in range(40):
            d = tmp_path / f"cut{at}-{seed}"
            _copy(base, d)
            cut = FlashCut(at, seed=seed, page=model.page, lose_unsynced=lose_unsynced)
            g = Flash(d, fs=FaultyFileSystem(cut))
            with pytest.raises(PowerLoss):
                g.write_boot(BootRecord(active="B", data={"v": 3, "pad": "y" * 700}))
            rec = Flash(d).read_boot()
            assert rec is not None, f"{cut}: {cut.what}"
            assert (rec.active, rec.data["v"]) in {("A", 2), ("B", 3)}, cut
            outcomes.add((at, rec.data["v"]))
    assert (1, 2) in outcomes and (2, 2) in outcomes
    assert (3, 3) in outcomes or lose_unsynced


def _copy(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())


# --- the A/B install on the model -------------------------------------------------------------


def test_an_install_erases_each_block_before_programming_it(tmp_path: Path) -> None:
    hook = WritePointCounter()
    sm = SlotManager(Flash(tmp_path, SLOT, model=NOR, fs=FaultyFileSystem(hook)), limits=LIMITS)
    install(sm, V2, T2)
    slot_points = [p for p in hook.points if " B@" in p or p.startswith("write B@")]
    assert slot_points[:2] == ["write erase B@0+4096", "write B@0+1024"]
    assert "write erase B@4096+4096" in slot_points  # the second block, when reached
    assert sm.flash.overprograms == 0
    assert sm.boot() == "B" and booted_bytes(sm) == V2


def test_checkpoints_name_block_boundaries_and_a_resume_reerases(tmp_path: Path) -> None:
    """A checkpoint at 5 KiB names 4 KiB; bytes past it were programmed before the cut, and
    the resume erases their block again before programming it."""
    sm = SlotManager(Flash(tmp_path, SLOT, model=NOR), limits=LIMITS)
    writer = sm.begin_install(T2.length, T2)
    writer.write(V2[: 5 * 1024 + 300])
    assert writer.flushed == 5 * 1024 and writer.sync() == 4096
    sm = SlotManager(sm.flash.reopen(), limits=LIMITS)  # the reboot
    sm.boot()
    with pytest.raises(InstallFailed, match="erase block"):
        sm.resume_install(T2, 5 * 1024)
    writer = sm.resume_install(T2, 4096)
    verifier = ImageVerifier(T2, LIMITS)
    verifier.update(sm.flash.read(writer.slot, 0, 4096))
    verifier.update(V2[4096:])
    writer.write(V2[4096:])
    sm.finish_install(writer, verifier)
    assert sm.flash.overprograms == 0
    assert sm.boot() == writer.slot and hashlib.sha256(booted_bytes(sm)).digest() == (
        hashlib.sha256(V2).digest()
    )
