"""Power loss at every write point of an install driven through the agent: the flash
(slots and boot record) and the agent's AtomicStore share one power supply (one
storage.faults.FaultyFileSystem, given to ``SecondaryAgent.from_config(cfg, fs=...)``).
After each cut the ECU reboots; it always boots a verified image, old or new, its next
version report is true, a completed switch is never undone, and the same update then
succeeds (§5.4.3: errors SHOULD NOT leave the ECU unrecoverable)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from test_agent_support import Director, image_bytes, later, provision_ecu

from secondary.agent import SecondaryAgent
from secondary.config import SecondaryConfig
from storage.faults import FaultyFileSystem, PowerCut, PowerLoss, WritePointCounter
from uptane.limits import PRIMARY
from uptane.manifest import decode_report
from uptane.metadata import DER

V1 = image_bytes("power-v1", 9_000)
V2 = image_bytes("power-v2", 13_000)


def run_update(
    agent: SecondaryAgent, targets: bytes, image: bytes, path: str, days: int = 2
) -> None:
    agent.put_time(int(later(days).timestamp()), None)
    agent.put_metadata("director", "targets", DER, targets)
    step = 4096
    for off in range(0, len(image), step):
        agent.put_image_chunk(path, len(image), off, image[off : off + step])
    agent.install(path)


def boot(directory: Path) -> SecondaryAgent:
    agent = SecondaryAgent.from_config(SecondaryConfig.load(directory / "secondary.toml"))
    agent.start()
    return agent


def assert_true_state(agent: SecondaryAgent) -> bytes:
    """The booted slot holds exactly the image the boot record names, and the signed
    report says the same; returns the image bytes (V1 or V2)."""
    st = agent.slots.status()
    assert st.booted is not None, "the ECU did not boot"
    data = agent.flash.read(st.booted, 0, st.installed.length)
    assert data in (V1, V2)
    assert hashlib.sha256(data).hexdigest() == st.installed.hashes["sha256"]
    body = decode_report(agent.report(b"after-cut"), PRIMARY, DER).signed
    assert body.installed.filename == st.installed.filename
    assert body.installed.hashes == st.installed.hashes
    assert body.release_counter == (2 if data == V2 else 1)
    return data


@pytest.fixture
def baseline(tmp_path: Path) -> tuple[Path, bytes]:
    """A provisioned ECU running V1, and Director targets naming V2."""
    director = Director()
    cfg = provision_ecu(tmp_path, director)
    agent = boot(cfg.path.parent)
    director.assign(V1, "fw/v1.bin", release_counter=1)
    run_update(agent, director.targets, V1, "fw/v1.bin", days=1)
    director.assign(V2, "fw/v2.bin", release_counter=2)
    return cfg.path.parent, director.targets


def test_write_points_of_an_agent_install_are_counted(
    baseline: tuple[Path, bytes], tmp_path: Path
) -> None:
    src, targets = baseline
    work = tmp_path / "count"
    shutil.copytree(src, work)
    counter = WritePointCounter()
    cfg = SecondaryConfig.load(work / "secondary.toml")
    agent = SecondaryAgent.from_config(cfg, fs=FaultyFileSystem(counter))
    agent.start()
    run_update(agent, targets, V2, "fw/v2.bin")
    points = counter.points
    # the time, the slot writes and commit, the switch, the trusted metadata, the boot
    # counter and the confirm: flash and store together
    assert "write store time" in points and "rename state/time" in points
    assert "write store trusted" in points and "fsync-dir state" in points
    assert points.count("fsync A") == 1 and points.count("fsync boot") >= 3


@pytest.mark.parametrize(
    ("torn", "lose_unsynced"),
    [(0.5, False), (0.0, False), (0.5, True)],
    ids=["raw-torn-half", "raw-torn-none", "volatile-cache"],
)
def test_5_4_3_power_cut_at_every_write_point_of_an_agent_install(
    baseline: tuple[Path, bytes], tmp_path: Path, torn: float, lose_unsynced: bool
) -> None:
    src, targets = baseline
    counter = WritePointCounter()
    clean = tmp_path / "clean"
    shutil.copytree(src, clean)
    agent = SecondaryAgent.from_config(
        SecondaryConfig.load(clean / "secondary.toml"), fs=FaultyFileSystem(counter)
    )
    agent.start()
    start_points = counter.count
    run_update(agent, targets, V2, "fw/v2.bin")
    points = counter.points[start_points:]
    # the switch is durable once the boot record written after the slot commit is committed
    slot_commit = points.index("fsync A")
    switch = points.index("fsync boot", slot_commit) + 1  # 1-based write point
    assert len(points) > 10
    for n in range(1, len(points) + 1):
        work = tmp_path / f"cut-{n}"
        shutil.copytree(src, work)
        fault = PowerCut(at_write=start_points + n, torn=torn, lose_unsynced=lose_unsynced)
        cfg = SecondaryConfig.load(work / "secondary.toml")
        agent = SecondaryAgent.from_config(cfg, fs=FaultyFileSystem(fault))
        agent.start()
        with pytest.raises(PowerLoss):
            run_update(agent, targets, V2, "fw/v2.bin")
        assert fault.fired_at == points[n - 1]
        after = boot(work)
        data = assert_true_state(after)
        if n > switch:
            assert data == V2, f"cut at {points[n - 1]!r} (point {n}) undid a completed switch"
        # reboot a few more times: still whole and truly reported
        for _ in range(3):
            after = boot(work)
            assert_true_state(after)
        # and the update completes after the cut
        if data != V2:
            run_update(after, targets, V2, "fw/v2.bin")
        assert assert_true_state(boot(work)) == V2
        shutil.rmtree(work)
