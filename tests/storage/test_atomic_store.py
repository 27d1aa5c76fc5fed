"""The storage layer's atomic store and atomic files: round trips, safe names, modes, and a
power cut at every write point (through storage.faults.FaultyFileSystem)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardware.flash import Flash
from storage import AtomicStore, atomic_copy, atomic_write, read_capped, read_json, write_json
from storage.faults import FaultyFileSystem, PowerCut, PowerLoss, WritePointCounter
from uptane.errors import EndlessDataAttack, MalformedInput


def test_round_trip_and_missing_names(tmp_path: Path) -> None:
    s = AtomicStore(tmp_path)
    assert s.read("root") is None
    s.write("root", b"v1")
    s.write("root", b"v2")
    assert s.read("root") == b"v2"
    assert AtomicStore(tmp_path).read("root") == b"v2"
    s.write_json("state", {"counter": 7, "names": ["a"]})
    assert s.read_json("state") == {"counter": 7, "names": ["a"]}
    assert s.read_json("nothing") is None
    s.delete("root")
    assert s.read("root") is None
    assert s.names() == ["state"]


def test_atomic_write_replaces_one_file_with_its_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "ecu.pem"
    atomic_write(key, b"old", mode=0o600)
    atomic_write(key, b"new", mode=0o600)
    assert key.read_bytes() == b"new"
    assert key.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in key.parent.iterdir()] == ["ecu.pem"]


def test_atomic_write_that_fails_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "cfg.toml"
    atomic_write(path, b"old", mode=0o644)
    with pytest.raises(TypeError):
        atomic_write(path, "not bytes", mode=0o644)  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["cfg.toml"]


def test_names_never_leave_the_directory(tmp_path: Path) -> None:
    d = tmp_path / "store"
    s = AtomicStore(d)
    for name in ("../escape", "/etc/passwd", "..", ".", "a/b", "x\x00y"):
        s.write(name, b"data")
        assert s.read(name) == b"data"
    assert not (tmp_path / "escape").exists()
    assert all(p.parent == d for p in d.iterdir())
    assert len(s.names()) == 6
    with pytest.raises(MalformedInput):
        s.write("n" * 300, b"x")


def test_oversize_blobs_are_refused(tmp_path: Path) -> None:
    s = AtomicStore(tmp_path, max_bytes=10)
    with pytest.raises(EndlessDataAttack):
        s.write("big", b"x" * 11)
    (tmp_path / "big").write_bytes(b"x" * 100)  # planted behind the store's back
    with pytest.raises(EndlessDataAttack):
        s.read("big")


def test_json_is_read_with_the_bounded_decoder(tmp_path: Path) -> None:
    s = AtomicStore(tmp_path)
    s.write("deep", b"[" * 100 + b"]" * 100)
    with pytest.raises(MalformedInput):
        s.read_json("deep")


def test_a_write_has_four_write_points(tmp_path: Path) -> None:
    hook = WritePointCounter()
    AtomicStore(tmp_path / "st", fs=FaultyFileSystem(hook)).write("x", b"1")
    assert hook.points == [
        "write store x",
        "fsync store x",
        "rename st/x",
        "fsync-dir st",
    ]


MODES = [
    pytest.param(0.5, False, id="torn-half"),
    pytest.param(0.0, False, id="torn-none"),
    pytest.param(0.5, True, id="lose-unsynced"),
]


@pytest.mark.parametrize(("torn", "lose"), MODES)
@pytest.mark.parametrize("first", [False, True], ids=["replace", "first-write"])
def test_power_cut_at_every_write_point_leaves_old_or_new(
    tmp_path: Path, torn: float, lose: bool, first: bool
) -> None:
    old, new = b"old-" + b"o" * 5000, b"new-" + b"n" * 7000
    hook = WritePointCounter()
    AtomicStore(tmp_path / "count", fs=FaultyFileSystem(hook)).write("state", new)
    seen = set()
    for n in range(1, hook.count + 1):
        d = tmp_path / f"cut{n}"
        if not first:
            AtomicStore(d).write("state", old)
        s = AtomicStore(d, fs=FaultyFileSystem(PowerCut(n, torn=torn, lose_unsynced=lose)))
        with pytest.raises(PowerLoss):
            s.write("state", new)
        with pytest.raises(PowerLoss):
            s.read("state")  # the device is off until it reboots
        after = AtomicStore(d)  # reboot
        got = after.read("state")
        assert got in ({None, new} if first else {old, new}), f"cut at {n}"
        seen.add(got)
        assert after.names() == ["state"] if got is not None else after.names() == []
        assert sorted(p.name for p in d.iterdir()) == after.names()  # no temp left over
        after.write("state", b"after")  # and the store still works
        assert after.read("state") == b"after"
    # raw order: the rename at the last point already took effect; with a volatile cache
    # nothing is durable before the directory fsync returns, so every cut leaves the old
    assert len(seen) == (1 if lose else 2)


def test_walk_over_several_names_keeps_each_whole(tmp_path: Path) -> None:
    """Cut during a sequence of updates: every name holds one of its own versions."""
    versions = {name: [f"{name}-{v}".encode() * (v + 1) for v in range(3)] for name in "abc"}

    def run(store: AtomicStore) -> None:
        for v in range(3):
            for name in "abc":
                store.write(name, versions[name][v])

    hook = WritePointCounter()
    run(AtomicStore(tmp_path / "count", fs=FaultyFileSystem(hook)))
    for n in range(1, hook.count + 1):
        d = tmp_path / f"cut{n}"
        with pytest.raises(PowerLoss):
            run(AtomicStore(d, fs=FaultyFileSystem(PowerCut(n, lose_unsynced=n % 2 == 0))))
        after = AtomicStore(d)
        for name in "abc":
            got = after.read(name)
            assert got is None or got in versions[name]


def test_one_power_supply_for_flash_and_store(tmp_path: Path) -> None:
    """One FaultyFileSystem counts across devices and kills both at once."""
    fs = FaultyFileSystem(PowerCut(at_write=3))
    flash = Flash(tmp_path / "flash", 4096, fs=fs)
    store = AtomicStore(tmp_path / "store", fs=fs)
    flash.write("A", 0, b"x")  # 1
    flash.commit("A")  # 2
    with pytest.raises(PowerLoss):
        store.write("k", b"v")  # 3: the store's temp write
    with pytest.raises(PowerLoss):
        flash.read("A", 0, 1)
    assert AtomicStore(tmp_path / "store").read("k") is None


def test_atomic_write_needs_a_mode_and_keeps_it_whatever_the_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "pub" / "root.json", b"{}", mode=0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "pub" / "root.json").stat().st_mode & 0o777 == 0o644
    with pytest.raises(TypeError):
        atomic_write(tmp_path / "x", b"1")  # type: ignore[call-arg]


def test_atomic_copy_streams_and_write_json_reads_back(tmp_path: Path) -> None:
    src = tmp_path / "image.bin"
    src.write_bytes(bytes(range(256)) * 9000)  # > 1 MiB: more than one chunk
    atomic_copy(src, tmp_path / "out" / "image.bin", mode=0o644)
    assert (tmp_path / "out" / "image.bin").read_bytes() == src.read_bytes()
    write_json(tmp_path / "cfg.json", {"b": [1, 2], "a": "x"}, mode=0o600)
    assert read_json(tmp_path / "cfg.json") == {"a": "x", "b": [1, 2]}
    assert read_json(tmp_path / "missing.json", default={}) == {}
    with pytest.raises(EndlessDataAttack):
        read_json(tmp_path / "cfg.json", cap=4)


def test_read_capped_refuses_past_the_cap(tmp_path: Path) -> None:
    p = tmp_path / "key.pem"
    p.write_bytes(b"k" * 100)
    assert read_capped(p, 100) == b"k" * 100
    with pytest.raises(EndlessDataAttack):
        read_capped(p, 99)
