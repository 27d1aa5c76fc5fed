"""storage.faults: the file-system wrappers that inject power cuts and crashes in tests.

The simulation itself must be right, or every power walk built on it proves nothing: a
volatile cache loses exactly what no fsync made durable, raw flash keeps every completed
operation, only the first write on a handle is a point, and a crash is a real SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from storage import AtomicStore
from storage.faults import FaultyFileSystem, KillAt, PowerCut, PowerLoss, WritePointCounter


def test_only_the_first_write_on_a_handle_is_a_point(tmp_path: Path) -> None:
    hook = WritePointCounter()
    fs = FaultyFileSystem(hook)
    with fs.open(tmp_path / "img.part", label="download img") as f:
        for _ in range(10):
            f.write(b"x" * 100)
        f.sync()
    fs.replace(tmp_path / "img.part", tmp_path / "img")
    fs.sync_dir(tmp_path)
    assert hook.points == [
        "write download img",
        "fsync download img",
        f"rename {tmp_path.name}/img",
        f"fsync-dir {tmp_path.name}",
    ]
    assert (tmp_path / "img").read_bytes() == b"x" * 1000


def test_volatile_cache_loses_unsynced_writes_renames_and_unlinks(tmp_path: Path) -> None:
    (tmp_path / "kept").write_bytes(b"kept")
    (tmp_path / "old").write_bytes(b"old")
    fs = FaultyFileSystem(PowerCut(at_write=5, lose_unsynced=True))
    with fs.open(tmp_path / "new", label="new") as f:
        f.write(b"new bytes")  # 1
        f.sync()  # 2: durable
    fs.replace(tmp_path / "new", tmp_path / "old")  # 3: not durable (no fsync-dir)
    fs.unlink(tmp_path / "kept")  # 4: not durable either
    with pytest.raises(PowerLoss):
        fs.sync_dir(tmp_path)  # 5: the cut
    assert (tmp_path / "old").read_bytes() == b"old"
    assert (tmp_path / "kept").read_bytes() == b"kept"
    assert (tmp_path / "new").read_bytes() == b"new bytes"  # the rename never happened
    with pytest.raises(PowerLoss):
        fs.open(tmp_path / "x")  # dead until the reboot


def test_raw_flash_keeps_completed_operations(tmp_path: Path) -> None:
    (tmp_path / "old").write_bytes(b"old")
    fs = FaultyFileSystem(PowerCut(at_write=3, torn=0.25))
    with fs.open(tmp_path / "new") as f:
        f.write(b"n" * 8)  # 1
    fs.replace(tmp_path / "new", tmp_path / "old")  # 2
    with pytest.raises(PowerLoss), fs.open(tmp_path / "third") as f:
        f.write(b"t" * 8)  # 3: torn, a quarter reaches the disk
    assert (tmp_path / "old").read_bytes() == b"n" * 8
    assert (tmp_path / "third").read_bytes() == b"tt"


def test_unsynced_writes_inside_a_file_are_undone_to_the_last_fsync(tmp_path: Path) -> None:
    p = tmp_path / "region.bin"
    p.write_bytes(b"\x00" * 16)
    fs = FaultyFileSystem(PowerCut(at_write=4, lose_unsynced=True))
    with fs.open(p) as f:
        f.pwrite(b"AAAA", 0)  # 1
    with fs.open(p) as f:
        f.sync()  # 2
    with fs.open(p) as f:
        f.pwrite(b"BBBBBBBBBBBBBBBBBBBB", 2)  # 3: grows the file, never synced
    with pytest.raises(PowerLoss), fs.open(p) as f:
        f.pwrite(b"C", 0)  # 4
    assert p.read_bytes() == b"AAAA" + b"\x00" * 12


def test_kill_at_parses_what_a_test_passes_to_a_child() -> None:
    assert KillAt.parse("17").at_write == 17
    k = KillAt.parse("rename state/cycle#2")
    assert (k.match, k.nth) == ("rename state/cycle", 2)
    assert KillAt.parse("fsync-dir images").match == "fsync-dir images"
    with pytest.raises(ValueError):
        KillAt()


def test_kill_at_is_a_real_sigkill_and_the_store_survives_it(tmp_path: Path) -> None:
    """A child process writes a store through KillAt; it dies by SIGKILL at the second
    rename, and the store holds the first value and the old second one."""
    store = AtomicStore(tmp_path / "st")
    store.write("a", b"a-old")
    store.write("b", b"b-old")
    child = textwrap.dedent(
        f"""
        from storage import AtomicStore
        from storage.faults import FaultyFileSystem, KillAt
        s = AtomicStore({str(tmp_path / "st")!r}, fs=FaultyFileSystem(KillAt.parse("rename st/b")))
        s.write("a", b"a-new")
        print("a written", flush=True)
        s.write("b", b"b-new")
        print("never printed", flush=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout == "a written\n"
    after = AtomicStore(tmp_path / "st")
    assert (after.read("a"), after.read("b")) == (b"a-new", b"b-old")
    assert after.names() == ["a", "b"]  # the temp file left by the crash is gone
