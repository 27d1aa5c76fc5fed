"""Power-loss walks on the realistic flash model (§5.4.3: errors SHOULD NOT leave the ECU
unrecoverable).

The flash is a NOR chip (:class:`hardware.flash.FlashModel`: erase blocks, programming that
only clears bits) and each cut is a :class:`storage.faults.FlashCut`: the interrupted write
stops at any byte and leaves its page partly programmed; with a cache, any subset of the
unsynced pages is lost, each page ending in any of its versions. Every write point of an
install is cut, and after each cut the first boot is cut again at each of its own write
points (a double fault: the bootloader's trial counter, its revert, the confirm). Random
double faults mix seeds and models. After all of it the ECU boots a whole verified image,
old or new, reports it truly, never goes back to the old image except through a recorded
revert, and the same update then succeeds.

``UPTANE_FLASH_WALK_SEEDS=N`` (read here, never by product code) walks every point with N
seeds and runs N times as many random double faults: the long run. The counts go to
docs/security.md ("Faults")."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_slots import (
    EXPECTED,
    LIMITS,
    SLOT,
    T0,
    T1,
    T2,
    V0,
    V1,
    V2,
    check_boots_a_verified_image,
    install,
    update_cycle,
)

from hardware.flash import Flash, FlashModel
from hardware.slot_lifecycle import Outcome, SlotState
from hardware.slots import ImageInfo, SlotManager
from storage.faults import FaultyFileSystem, FlashCut, PowerLoss, WritePointCounter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "secondary"))
from test_agent_support import (
    Director,
    client_for,
    image_bytes,
    later,
    provision_ecu,
)

from secondary.agent import SecondaryAgent
from secondary.config import SecondaryConfig
from uptane.errors import UptaneError
from uptane.limits import PRIMARY
from uptane.manifest import decode_report
from uptane.metadata import DER

SEEDS = int(os.environ.get("UPTANE_FLASH_WALK_SEEDS", "1"))
NOR = FlashModel(erase_block=4096, page=256)  # SPI NOR: 4 KiB sectors, 256-byte pages
BLOCKS = FlashModel(erase_block=16384, page=2048)  # large blocks: one block per slot
MODELS = [pytest.param(NOR, id="nor-4k"), pytest.param(BLOCKS, id="block-16k")]
MODES = [pytest.param(False, id="raw"), pytest.param(True, id="cache")]

#: what the walks walked, printed at the end of the session (pytest -s) for the docs
TALLY: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _print_tally() -> Iterator[None]:
    yield
    print("\nflash walks:", dict(sorted(TALLY.items())), f"seeds={SEEDS}")


def _cut(n: int, seed: int, model: FlashModel, lose: bool) -> FlashCut:
    return FlashCut(n, seed=seed, page=model.page, lose_unsynced=lose)


# --- the slot manager alone -------------------------------------------------------------------


def provisioned_on(directory: Path, model: FlashModel) -> None:
    """V1 confirmed in one slot, V0 in the other, on a NOR flash."""
    sm = SlotManager(Flash(directory, SLOT, model=model), max_trial_boots=2, limits=LIMITS)
    for data, t in ((V0, T0), (V1, T1)):
        install(sm, data, t)
        sm.boot()
        sm.confirm()


def first_boot(flash: Flash) -> None:
    """The first power-on after a cut, as the agent runs it: the bootloader, then the
    confirm of a trial slot that booted."""
    sm = SlotManager(flash, max_trial_boots=2, limits=LIMITS)
    sm.boot()
    if sm.state is SlotState.TRIAL_BOOTED:
        sm.confirm()


def count_points(directory: Path, scratch: Path, run: Callable[[Flash], object]) -> int:
    """The write points ``run`` makes on a copy of ``directory``."""
    shutil.copytree(directory, scratch)
    counter = WritePointCounter()
    run(Flash(scratch, fs=FaultyFileSystem(counter)))
    shutil.rmtree(scratch)
    return counter.count


def is_new(digest: str) -> bool:
    return EXPECTED[digest].filename == "fw-v2.bin"


def recovers(directory: Path, *, switched: bool, why: str) -> None:
    """After the cuts: a whole image boots and is reported truly, the old image is back
    only through a recorded revert, more boots stay whole, and the update then succeeds."""
    sm, digest = check_boots_a_verified_image(Flash(directory))
    if switched and not is_new(digest):
        last = sm.status().last_result
        assert last is not None and last.outcome is Outcome.REVERTED, f"{why}: went back"
    for _ in range(3):
        sm, _ = check_boots_a_verified_image(sm.flash.reopen())
    if sm.status().trial is not None:
        sm.confirm()
    if sm.status().installed != ImageInfo.from_target(T2):
        install(sm, V2, T2)
        sm.boot()
        sm.confirm()
    assert sm.flash.overprograms == 0, f"{why}: programmed over bytes not erased"
    _, final = check_boots_a_verified_image(sm.flash.reopen())
    assert is_new(final), why


def cut_install(base: Path, d: Path, cut: FlashCut) -> list[str]:
    """``base`` copied to ``d``, the install run on it until ``cut`` fires; returns the
    stages it completed (``finished``: finish_install returned)."""
    shutil.copytree(base, d)
    flash = Flash(d, fs=FaultyFileSystem(cut))
    stage: list[str] = []
    with pytest.raises(PowerLoss):
        update_cycle(flash, stage)
    assert flash.overprograms == 0, cut
    return stage


def switched_after(d: Path, scratch: Path) -> bool:
    """Whether the state in ``d`` boots the new image (checked on a copy: booting writes)."""
    shutil.copytree(d, scratch)
    _, digest = check_boots_a_verified_image(Flash(scratch))
    shutil.rmtree(scratch)
    return is_new(digest)


def double_faults(d: Path, tmp: Path, model: FlashModel, lose: bool, seed: int) -> None:
    """Every write point of the first boot after the cut in ``d``, cut in turn."""
    switched = switched_after(d, tmp / "probe")
    boot_points = count_points(d, tmp / "count-boot", first_boot)
    for m in range(1, boot_points + 1):
        e = tmp / f"double-{m}"
        shutil.copytree(d, e)
        cut = _cut(m, seed * 1000 + m, model, lose)
        with pytest.raises(PowerLoss):
            first_boot(Flash(e, fs=FaultyFileSystem(cut)))
        recovers(e, switched=switched, why=f"double fault {cut} {cut.what}")
        shutil.rmtree(e)
        TALLY["slots: double faults"] += 1


@pytest.mark.parametrize("lose", MODES)
@pytest.mark.parametrize("model", MODELS)
def test_5_4_3_every_write_point_of_an_install_on_nor_flash_with_double_faults(
    tmp_path: Path, model: FlashModel, lose: bool
) -> None:
    base = tmp_path / "base"
    provisioned_on(base, model)
    counter = WritePointCounter()
    shutil.copytree(base, tmp_path / "count")
    update_cycle(Flash(tmp_path / "count", fs=FaultyFileSystem(counter)), [])
    total = counter.count
    assert any(p.startswith("write erase B@") for p in counter.points), counter.points
    erases = [p for p in counter.points if p.startswith("write erase boot@")]
    assert len(erases) == counter.points.count("fsync boot") == 4, counter.points
    for seed in range(SEEDS):
        switched_at = None
        for n in range(1, total + 1):
            d = tmp_path / f"cut-{seed}-{n}"
            cut = _cut(n, seed * 100_000 + n, model, lose)
            stage = cut_install(base, d, cut)
            why = f"cut at {n} ({counter.points[n - 1]}) {cut} {cut.what}"
            switched = switched_after(d, tmp_path / "probe")
            assert switched or not stage, f"{why}: lost a finished install"
            if switched_at is not None:
                assert switched, f"{why}: went back to the old image"
            elif switched:
                switched_at = n
                assert "boot" in counter.points[n - 1], "only the boot record switches"
            double_faults(d, tmp_path, model, lose, seed * 100_000 + n)
            recovers(d, switched=switched, why=why)
            shutil.rmtree(d)
            TALLY["slots: install points"] += 1
        assert switched_at is not None


@pytest.mark.parametrize("model", MODELS)
def test_random_double_faults_on_nor_flash(tmp_path: Path, model: FlashModel) -> None:
    """Random pairs: a cut anywhere in the install (raw or cached), then a cut anywhere in
    the first boot (raw or cached), each with its own seed."""
    base = tmp_path / "base"
    provisioned_on(base, model)
    total = count_points(base, tmp_path / "count", lambda f: update_cycle(f, []))
    for i in range(20 * SEEDS):
        rng = random.Random(f"double-{i}")
        d = tmp_path / f"pair-{i}"
        cut = _cut(rng.randint(1, total), rng.getrandbits(32), model, rng.random() < 0.5)
        stage = cut_install(base, d, cut)
        switched = switched_after(d, tmp_path / "probe")
        assert switched or not stage, f"{cut} {cut.what}: lost a finished install"
        boot_points = count_points(d, tmp_path / "count-boot", first_boot)
        why = f"{cut} {cut.what}"
        if boot_points:
            second = _cut(
                rng.randint(1, boot_points), rng.getrandbits(32), model, rng.random() < 0.5
            )
            with pytest.raises(PowerLoss):
                first_boot(Flash(d, fs=FaultyFileSystem(second)))
            why += f", then {second} {second.what}"
            TALLY["slots: random double faults"] += 1
        recovers(d, switched=switched, why=why)
        shutil.rmtree(d)


# --- the whole agent: flash and state store on one power supply ----------------------------

A1 = image_bytes("walk-v1", 9_000)
A2 = image_bytes("walk-v2", 40_000)  # five 8 KiB link buffers: checkpoints fall inside


def run_update(agent: SecondaryAgent, targets: bytes, image: bytes, path: str, days: int) -> None:
    agent.put_time(int(later(days).timestamp()), None)
    agent.put_metadata("director", "targets", DER, targets)
    for off in range(0, len(image), 4096):
        agent.put_image_chunk(path, len(image), off, image[off : off + 4096])
    agent.install(path)


def power_on(
    directory: Path, fs: FaultyFileSystem | None = None, checkpoint: int | None = None
) -> SecondaryAgent:
    cfg = SecondaryConfig.load(directory / "secondary.toml")
    agent = SecondaryAgent.from_config(cfg, fs=fs) if fs else SecondaryAgent.from_config(cfg)
    if checkpoint:
        agent.checkpoint_bytes = checkpoint
    agent.start()
    return agent


def true_state(agent: SecondaryAgent) -> bytes:
    """The booted slot holds the image the boot record names, the signed report says the
    same, and nothing was programmed over bytes that were not erased."""
    st = agent.slots.status()
    assert st.booted is not None and st.installed is not None, "the ECU did not boot"
    data = agent.flash.read(st.booted, 0, st.installed.length)
    assert data in (A1, A2)
    assert hashlib.sha256(data).hexdigest() == st.installed.hashes["sha256"]
    body = decode_report(agent.report(b"after-cut"), PRIMARY, DER).signed
    assert body.installed.filename == st.installed.filename
    assert body.release_counter == (2 if data == A2 else 1)
    assert agent.flash.overprograms == 0
    return data


def nor_ecu(tmp: Path, model: FlashModel) -> tuple[Path, Director]:
    """A provisioned ECU on a NOR flash running A1; the Director now names A2 for it."""
    director = Director()
    cfg = provision_ecu(tmp, director)
    shutil.rmtree(cfg.flash_dir)
    Flash(cfg.flash_dir, cfg.slot_size, model=model)  # the same device, a NOR chip
    agent = power_on(cfg.path.parent)
    director.assign(A1, "fw/v1.bin", release_counter=1)
    run_update(agent, director.targets, A1, "fw/v1.bin", days=1)
    director.assign(A2, "fw/v2.bin", release_counter=2)
    return cfg.path.parent, director


@pytest.fixture(scope="module")
def agent_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    directory, director = nor_ecu(tmp_path_factory.mktemp("agent"), NOR)
    return directory, director.targets


def agent_recovers(work: Path, targets: bytes, *, switched: bool, why: str) -> None:
    after = power_on(work)
    data = true_state(after)
    if switched and data != A2:
        last = after.slots.status().last_result
        assert last is not None and last.outcome is Outcome.REVERTED, f"{why}: went back"
    for _ in range(2):
        after = power_on(work)
        true_state(after)
    if true_state(after) != A2:
        run_update(after, targets, A2, "fw/v2.bin", days=2)
    assert true_state(power_on(work)) == A2, why


@pytest.mark.parametrize("lose", MODES)
def test_5_4_3_every_write_point_of_an_agent_install_on_nor_flash_with_double_faults(
    agent_base: tuple[Path, bytes], tmp_path: Path, lose: bool
) -> None:
    src, targets = agent_base
    clean = tmp_path / "clean"
    shutil.copytree(src, clean)
    counter = WritePointCounter()
    agent = power_on(clean, FaultyFileSystem(counter))
    start = counter.count
    run_update(agent, targets, A2, "fw/v2.bin", days=2)
    points = counter.points[start:]
    assert any(p.startswith("write erase A@0+") for p in points), points
    assert "fsync-dir state" in points
    switch = points.index("fsync boot", points.index("fsync A")) + 1
    for seed in range(SEEDS):
        for n in range(1, len(points) + 1):
            work = tmp_path / f"cut-{n}"
            shutil.copytree(src, work)
            cut = _cut(start + n, seed * 100_000 + n, NOR, lose)
            agent = power_on(work, FaultyFileSystem(cut))
            with pytest.raises(PowerLoss):
                run_update(agent, targets, A2, "fw/v2.bin", days=2)
            assert cut.fired_at == points[n - 1]
            why = f"cut at {points[n - 1]!r} (point {n}) {cut} {cut.what}"
            probe = tmp_path / "probe"
            shutil.copytree(work, probe)
            switched = true_state(power_on(probe)) == A2
            shutil.rmtree(probe)
            assert switched or n <= switch, f"{why}: undid a completed switch"
            agent_double_faults(work, targets, tmp_path, lose, seed * 100_000 + n, switched)
            agent_recovers(work, targets, switched=switched, why=why)
            shutil.rmtree(work)
            TALLY["agent: install points"] += 1


def agent_double_faults(
    work: Path, targets: bytes, tmp: Path, lose: bool, seed: int, switched: bool
) -> None:
    """Each write point of the power-on after the cut in ``work``, cut in turn."""
    count = tmp / "count-boot"
    shutil.copytree(work, count)
    counter = WritePointCounter()
    power_on(count, FaultyFileSystem(counter))
    shutil.rmtree(count)
    for m in range(1, counter.count + 1):
        e = tmp / f"double-{m}"
        shutil.copytree(work, e)
        cut = _cut(m, seed * 1000 + m, NOR, lose)
        with pytest.raises(PowerLoss):
            power_on(e, FaultyFileSystem(cut))
        why = f"double fault at {counter.points[m - 1]!r} {cut} {cut.what}"
        agent_recovers(e, targets, switched=switched, why=why)
        shutil.rmtree(e)
        TALLY["agent: double faults"] += 1


@pytest.mark.parametrize("lose", MODES)
def test_every_write_point_of_a_checkpointed_transfer_on_16k_blocks(
    tmp_path: Path, lose: bool
) -> None:
    """Checkpoints every 8 KiB on 16 KiB erase blocks: each checkpoint names the last block
    boundary, so a resume erases the block past it again (bytes programmed after the
    checkpoint are not erased) before programming it. Every cut, then a reboot: A1 or A2
    whole, the client resumes where the ECU says, and A2 is installed byte-exact."""
    src, director = nor_ecu(tmp_path / "ecu", BLOCKS)
    targets = director.targets
    counter = WritePointCounter()
    clean = tmp_path / "clean"
    shutil.copytree(src, clean)
    agent = power_on(clean, FaultyFileSystem(counter), checkpoint=8192)
    start = counter.count
    link_update(agent, targets)
    points = counter.points[start:]
    assert points.count("write store transfer-at") >= 2, points
    resumed = set()
    for seed in range(SEEDS):
        for n in range(1, len(points) + 1):
            work = tmp_path / f"cut-{n}"
            shutil.copytree(src, work)
            cut = _cut(start + n, seed * 100_000 + n, BLOCKS, lose)
            agent = power_on(work, FaultyFileSystem(cut), checkpoint=8192)
            with pytest.raises((PowerLoss, UptaneError)):
                link_update(agent, targets)
            assert cut.fired_at == points[n - 1]
            after = power_on(work, checkpoint=8192)
            data = true_state(after)
            offset = after.status().image_offset
            assert offset % BLOCKS.erase_block == 0, f"{cut}: resume inside a block"
            if data == A1:
                resumed.add(offset)
                assert link_update(after, targets, fresh=not offset) == offset
            assert true_state(power_on(work)) == A2, f"{cut} {cut.what}"
            shutil.rmtree(work)
            TALLY["agent: checkpointed transfer points"] += 1
    assert resumed - {0}, "no cut resumed past 0"


def link_update(agent: SecondaryAgent, targets: bytes, *, fresh: bool = True) -> int:
    """An update through LinkClient, resuming where the ECU says; returns where the image
    started."""
    with client_for(agent) as link:
        link.put_time(int(later(2).timestamp()))
        if fresh:
            link.put_metadata("targets", DER, targets)
        begun = link.put_image("fw/v2.bin", A2, len(A2))
        link.install("fw/v2.bin")
    return begun
