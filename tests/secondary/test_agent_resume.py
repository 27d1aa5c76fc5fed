"""An image transfer survives a reboot of the Secondary: the agent commits the slot and
stores the transfer's identity and offset every ``checkpoint_bytes``; after a power cut it
verifies the stored metadata again, rebuilds the hash states from the slot's bytes, and
reports the offset in STATUS, so the client resumes there. Whatever it resumes is still
verified as a whole at install: a partial changed while the power was off ends in BadHash
with nothing installed, and a partial that the trusted metadata no longer names restarts
at 0."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tracemalloc
from pathlib import Path

import pytest
from test_agent_full import ImageRepo, write_repo
from test_agent_support import (
    ECU,
    HW,
    NOW,
    VIN,
    Director,
    client_for,
    image_bytes,
    later,
    provision_ecu,
    snapshot,
)

from hardware import bench
from hardware.flash import Flash, FlashModel
from secondary.agent import TRANSFER_AT, SecondaryAgent
from secondary.cli import provision
from secondary.config import ConfigError, SecondaryConfig
from storage import LOCAL, FileSystem
from storage.faults import FaultyFileSystem, PowerCut, PowerLoss, WritePointCounter
from uptane.errors import BadHash, UptaneError
from uptane.limits import PRIMARY
from uptane.manifest import decode_report
from uptane.metadata import DER

V1 = image_bytes("resume-v1", 9_000)
V2 = image_bytes("resume-v2", 40_000)
V3 = image_bytes("resume-v3", 40_000)
CHECKPOINT = 8192  # a few slot buffers at most: checkpoints come often


def boot(directory: Path, *, fault: PowerCut | None = None) -> SecondaryAgent:
    """Power on the ECU in ``directory`` (bootloader, then any resume); with ``fault``,
    its store and flash share one file system that cuts the power where it says."""
    fs: FileSystem = LOCAL if fault is None else FaultyFileSystem(fault)
    agent = SecondaryAgent.from_config(SecondaryConfig.load(directory / "secondary.toml"), fs=fs)
    agent.checkpoint_bytes = CHECKPOINT
    agent.start()
    return agent


def update(agent: SecondaryAgent, targets: bytes, image: bytes, path: str, days: int) -> int:
    """A whole update through LinkClient; returns the offset the image started at."""
    with client_for(agent) as link:
        link.put_time(int(later(days).timestamp()))
        link.put_metadata("targets", DER, targets)
        start = link.put_image(path, image, len(image))
        link.install(path)
    return start


@pytest.fixture
def ecu(tmp_path: Path) -> tuple[Path, Director]:
    """A provisioned ECU running V1; the Director now names V2 for it."""
    director = Director()
    cfg = provision_ecu(tmp_path, director)
    director.assign(V1, "fw/v1.bin", release_counter=1)
    update(boot(cfg.path.parent), director.targets, V1, "fw/v1.bin", days=1)
    director.assign(V2, "fw/v2.bin", release_counter=2)
    return cfg.path.parent, director


def cut_mid_transfer(
    directory: Path, targets: bytes, image: bytes, path: str, *, after: int = 13
) -> None:
    """Send metadata and start the image, then cut the power (volatile write cache: what
    no commit made durable is lost) at the ``after``-th write point of the transfer."""
    fault = PowerCut(1 << 30, lose_unsynced=True)
    agent = boot(directory, fault=fault)
    with client_for(agent) as link:
        link.put_time(int(later(2).timestamp()))
        link.put_metadata("targets", DER, targets)
        fault.at_write = fault.count + after
        with pytest.raises(UptaneError):  # the handler died: an error reply, code 1
            link.put_image(path, image, len(image))
    assert fault.fired and fault.fired_at is not None


def running(agent: SecondaryAgent) -> bytes:
    st = agent.slots.status()
    assert st.booted is not None and st.installed is not None
    return agent.flash.read(st.booted, 0, st.installed.length)


def test_power_cut_mid_transfer_resumes_after_reboot(ecu: tuple[Path, Director]) -> None:
    directory, director = ecu
    cut_mid_transfer(directory, director.targets, V2, "fw/v2.bin")
    agent = boot(directory)
    st = agent.status()
    assert st.image_filename == "fw/v2.bin" and st.image_total == len(V2)
    assert 0 < st.image_offset < len(V2)
    # a checkpoint (whole slot buffers), not the last acknowledged offset
    assert st.image_offset % agent.limits.chunk_size == 0
    assert running(agent) == V1  # nothing switched
    # the client resumes where the ECU says, without resending the metadata
    with client_for(agent) as link:
        start = link.put_image("fw/v2.bin", V2, len(V2))
        link.install("fw/v2.bin")
    assert start == st.image_offset
    after = boot(directory)
    assert running(after) == V2
    body = decode_report(after.report(b"resumed"), PRIMARY, DER).signed
    assert body.installed.filename == "fw/v2.bin"
    assert body.installed.hashes["sha256"] == hashlib.sha256(V2).hexdigest()
    assert body.release_counter == 2
    assert after.status().image_offset == 0  # the checkpoint went with the install
    assert after.store.read(TRANSFER_AT) is None


def test_tampered_partial_slot_is_refused_at_install(ecu: tuple[Path, Director]) -> None:
    directory, director = ecu
    cut_mid_transfer(directory, director.targets, V2, "fw/v2.bin")
    # while the power is off, the partial image in the inactive slot is changed
    probe = boot(directory)
    held = probe.status().image_offset
    slot = probe.slots.inactive_slot()
    assert held > 0
    with open(directory / "flash" / f"{slot}.bin", "r+b") as f:
        f.seek(held // 2)
        byte = f.read(1)
        f.seek(held // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    agent = boot(directory)
    before = snapshot(agent)
    with client_for(agent) as link:
        assert link.put_image("fw/v2.bin", V2, len(V2)) == held  # resumed over the change
        with pytest.raises(BadHash):
            link.install("fw/v2.bin")
    assert snapshot(agent) == before  # nothing installed, the metadata not trusted
    assert agent.last_error["attack"] == BadHash.attack
    after = boot(directory)
    assert running(after) == V1
    assert after.status().image_offset == 0  # a refused partial is never resumed again
    # and the update then goes through from the start
    assert update(after, director.targets, V2, "fw/v2.bin", days=3) == 0
    assert running(boot(directory)) == V2


def test_stale_partial_for_another_image_restarts_at_zero(ecu: tuple[Path, Director]) -> None:
    directory, director = ecu
    cut_mid_transfer(directory, director.targets, V2, "fw/v2.bin")
    # while the ECU is off, the Director assigns another image
    director.assign(V3, "fw/v3.bin", release_counter=3)
    agent = boot(directory)
    assert agent.status().image_filename == "fw/v2.bin"
    # the new metadata no longer names the partial image: it is dropped, V3 starts at 0
    assert update(agent, director.targets, V3, "fw/v3.bin", days=3) == 0
    assert running(boot(directory)) == V3


def test_partial_whose_metadata_expired_restarts_at_zero(ecu: tuple[Path, Director]) -> None:
    directory, director = ecu
    fault = PowerCut(1 << 30, lose_unsynced=True)
    agent = boot(directory, fault=fault)
    with client_for(agent) as link:
        link.put_time(int(later(2).timestamp()))
        link.put_metadata("targets", DER, director.targets)
        link.put_image("fw/v2.bin", V2[:20_000] + bytes(20_000), len(V2), resume=False)
        # the latest time moves past the targets' expiry before the power dies
        link.put_time(int(later(120).timestamp()))  # targets: 90 days
    fault.at_write = fault.count + 1
    with pytest.raises(PowerLoss):
        agent.flash.commit("boot")
    rebooted = boot(directory)
    # the stored metadata does not verify any more (a freeze): nothing to resume
    st = rebooted.status()
    assert st.image_filename is None and st.image_offset == 0
    assert rebooted.store.read(TRANSFER_AT) is None
    assert running(rebooted) == V1


def test_partial_for_another_ecu_slot_is_not_resumed(ecu: tuple[Path, Director]) -> None:
    """A checkpoint names the slot it wrote; once that slot is the running one (another
    image was installed meanwhile), the record is stale and dropped."""
    directory, director = ecu
    cut_mid_transfer(directory, director.targets, V2, "fw/v2.bin")
    saved = {p.name: p.read_bytes() for p in (directory / "state").iterdir()}
    agent = boot(directory)
    with client_for(agent) as link:
        link.put_image("fw/v2.bin", V2, len(V2))
        link.install("fw/v2.bin")
    # put the old checkpoint back, as a cut before its deletion would have left it
    for name, data in saved.items():
        if name.startswith("transfer"):
            (directory / "state" / name).write_bytes(data)
    after = boot(directory)
    assert after.status().image_offset == 0
    assert after.store.read(TRANSFER_AT) is None
    assert running(after) == V2
    assert decode_report(after.report(b"n"), PRIMARY, DER).signed.ecu_id == ECU


@pytest.mark.parametrize(
    ("torn", "lose_unsynced"),
    [(0.5, False), (0.5, True)],
    ids=["raw-torn-half", "volatile-cache"],
)
def test_power_cut_at_every_write_point_of_a_checkpointed_transfer(
    ecu: tuple[Path, Director], tmp_path: Path, torn: float, lose_unsynced: bool
) -> None:
    """Every write point of an update with checkpoints (slot writes, slot commits, the
    transfer records, the switch): after the cut and a reboot the ECU runs V1 or V2,
    whole; the client then resumes wherever the ECU says and V2 ends up installed
    byte-exact. Some cuts resume past 0."""
    src, director = ecu
    targets = director.targets
    counter = WritePointCounter()
    clean = tmp_path / "clean"
    shutil.copytree(src, clean)
    agent = boot(clean, fault=counter)
    first = counter.count
    update(agent, targets, V2, "fw/v2.bin", days=2)
    points = counter.points[first:]
    assert "write store transfer-at" in points
    resumed = 0
    for n in range(1, len(points) + 1):
        work = tmp_path / f"cut-{n}"
        shutil.copytree(src, work)
        fault = PowerCut(1 << 30, torn=torn, lose_unsynced=lose_unsynced)
        agent = boot(work, fault=fault)
        fault.at_write = fault.count + n
        with pytest.raises((PowerLoss, UptaneError)):
            update(agent, targets, V2, "fw/v2.bin", days=2)
        assert fault.fired_at == points[n - 1]
        after = boot(work)
        assert running(after) in (V1, V2)
        st = after.status()
        if running(after) == V1:
            if st.image_offset:
                resumed += 1
            with client_for(after) as link:
                link.put_time(int(later(2).timestamp()))
                if not st.image_offset:
                    link.put_metadata("targets", DER, targets)
                assert link.put_image("fw/v2.bin", V2, len(V2)) == st.image_offset
                link.install("fw/v2.bin")
        assert running(boot(work)) == V2
        shutil.rmtree(work)
    assert resumed > 0


def test_resume_rebuilds_the_hashes_in_bounded_memory(tmp_path: Path) -> None:
    """Rebuilding the hash states re-reads the slot one chunk at a time: resuming 4 MiB
    into an image costs about one chunk of memory, not the image."""
    director = Director()
    size = 4 * 1024 * 1024 + 1000
    big = image_bytes("resume-big", size)
    cfg = provision_ecu(tmp_path, director, slot_size=size)
    directory = cfg.path.parent
    director.assign(big, "fw/big.bin", release_counter=1)
    agent = boot(directory)
    agent.checkpoint_bytes = 1024 * 1024
    with client_for(agent) as link:
        link.put_time(int(later(1).timestamp()))
        link.put_metadata("targets", DER, director.targets)
        link.put_image("fw/big.bin", big[: size - 1000] + bytes(1000), size)
    del agent, link
    tracemalloc.start()
    try:
        rebooted = boot(directory)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    st = rebooted.status()
    assert st.image_offset >= 4 * 1024 * 1024 - 1024 * 1024
    assert peak < 512 * 1024, peak
    with client_for(rebooted) as link:
        assert link.put_image("fw/big.bin", big, size) == st.image_offset
        link.install("fw/big.bin")
    assert running(boot(directory)) == big


def test_full_verification_transfer_resumes_after_reboot(tmp_path: Path) -> None:
    """In full-verification mode the stored metadata is every file of both repositories;
    after the reboot §5.4.4.2 runs on them again and the transfer continues."""
    director, image_repo = Director(), ImageRepo()
    directory = tmp_path / "ecu"
    provision(
        directory,
        ecu_serial=ECU,
        hardware_id=HW,
        director_root=director.root,
        vehicle_id=VIN,
        mode="full",
        image_root=image_repo.builder.trusted_root(DER),
        slot_size=64 * 1024,
        now=NOW.timestamp(),
    )
    image_repo.add(V2, "fw/v2.bin", 2)
    director.assign(V2, "fw/v2.bin", release_counter=2)
    write_repo(director.builder, tmp_path / "meta" / "director")
    write_repo(image_repo.builder, tmp_path / "meta" / "image")
    files = bench.load_metadata(tmp_path / "meta")
    fault = PowerCut(1 << 30, lose_unsynced=True)
    agent = boot(directory, fault=fault)
    with client_for(agent) as link:
        link.put_time(int(NOW.timestamp()) + 3600)  # the timestamp lasts a day
        for f in files:
            link.put_metadata(f.role, f.encoding, f.data, repository=f.repository)
        fault.at_write = fault.count + 13
        with pytest.raises(UptaneError):
            link.put_image("fw/v2.bin", V2, len(V2))
    agent = boot(directory)
    held = agent.status().image_offset
    assert 0 < held < len(V2)
    with client_for(agent) as link:
        assert link.put_image("fw/v2.bin", V2, len(V2)) == held
        link.install("fw/v2.bin")
    assert running(boot(directory)) == V2


def test_checkpoint_interval_comes_from_the_config(tmp_path: Path) -> None:
    cfg = provision_ecu(tmp_path, Director())
    assert SecondaryAgent.from_config(cfg).checkpoint_bytes == 16 * cfg.limits.chunk_size
    cfg.checkpoint_bytes = 12_288
    cfg.path.write_text(cfg.to_toml())
    again = SecondaryConfig.load(cfg.path)
    assert again.checkpoint_bytes == 12_288
    assert SecondaryAgent.from_config(again).checkpoint_bytes == 12_288
    cfg.path.write_text(cfg.to_toml().replace("12288", "0"))
    with pytest.raises(ConfigError):
        SecondaryConfig.load(cfg.path)


def test_nor_flash_with_blocks_larger_than_checkpoints_resumes_at_block_boundaries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """16 KiB erase blocks, 8 KiB checkpoints (issue 15): a checkpoint records only a
    block boundary past the last one, never offset 0 (which a resume refuses as a damaged
    record). A power cut at every write point of the transfer: after the reboot the ECU
    resumes at a whole block (or starts again at 0 with nothing recorded), discards
    nothing as damaged, and the image then installs."""
    model = FlashModel(erase_block=16384, page=2048)
    director = Director()
    cfg = provision_ecu(tmp_path / "template", director, flash_model=model)
    directory = cfg.path.parent
    assert boot(directory).flash.model == model
    director.assign(V1, "fw/v1.bin", release_counter=1)
    update(boot(directory), director.targets, V1, "fw/v1.bin", days=1)
    director.assign(V2, "fw/v2.bin", release_counter=2)
    offsets = []
    after = 1
    while True:
        run = tmp_path / f"cut-{after}" / "ecu"
        shutil.copytree(directory, run)
        fault = PowerCut(1 << 30, lose_unsynced=True)
        agent = boot(run, fault=fault)
        with client_for(agent) as link:
            link.put_time(int(later(2).timestamp()))
            link.put_metadata("targets", DER, director.targets)
            fault.at_write = fault.count + after
            with contextlib.suppress(UptaneError):
                link.put_image("fw/v2.bin", V2, len(V2))
        if not fault.fired:
            break  # every write point of the transfer walked
        caplog.clear()
        rebooted = boot(run)
        assert "discarded" not in caplog.text, caplog.text
        held = rebooted.status().image_offset
        assert held % model.erase_block == 0
        offsets.append(held)
        with client_for(rebooted) as link:
            if held == 0:  # nothing was recorded: the whole update again
                link.put_time(int(later(2).timestamp()))
                link.put_metadata("targets", DER, director.targets)
            assert link.put_image("fw/v2.bin", V2, len(V2)) == held
            link.install("fw/v2.bin")
        assert running(boot(run)) == V2
        after += 1
    assert after > 5 and 16384 in offsets and 0 in offsets


def test_provision_erase_block_and_page_make_a_nor_device(tmp_path: Path) -> None:
    from secondary.cli import main

    director = Director()
    root = tmp_path / "root.der"
    root.write_bytes(director.root)
    args = ["provision", "--ecu-serial", "e1", "--hardware-id", "hw", "--director-root"]
    args += [str(root), "--slot-size", str(64 * 1024)]
    assert main([*args, "--dir", str(tmp_path / "nor"), "--erase-block", "16384"]) == 0
    assert Flash(tmp_path / "nor" / "flash").model == FlashModel(16384, 256)
    assert main([*args, "--dir", str(tmp_path / "pg"), "--page", "512"]) == 0
    assert Flash(tmp_path / "pg" / "flash").model == FlashModel(4096, 512)
    assert main([*args, "--dir", str(tmp_path / "ideal")]) == 0
    assert Flash(tmp_path / "ideal" / "flash").model is None
    # a page that does not divide the block, a slot that is not whole blocks: refused
    assert (
        main([*args, "--dir", str(tmp_path / "bad"), "--erase-block", "4096", "--page", "3000"])
        == 2
    )
    odd = ["--slot-size", str(40 * 1024), "--erase-block", "16384"]
    assert main([*args, "--dir", str(tmp_path / "odd"), *odd]) == 2
