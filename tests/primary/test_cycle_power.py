"""Power loss at every write point of one whole Primary update cycle (§5.4.2; issue 7,
"Faults"), then a reboot: the update completes, each ECU installs its image once, and the
Primary's state is whole.

The Primary writes through the :class:`storage.FileSystem` it is given; the test gives it
a :class:`storage.faults.FaultyFileSystem`, the only place a fault is injected (the agent
has no fault parameter). The walk: one clean cycle under a
:class:`~storage.faults.WritePointCounter` counts the write points of a complete update of
two Secondaries (in-process links, the real Director and Image repository services on
127.0.0.1): the cycle record, both repositories' trusted metadata, the forwarded DER
targets, the two image downloads (part, fsync, rename, fsync of the directory) and the
prune of the delivered images (unlinks, fsync of the directory). There are 91 (90 before
the storage package: the prune's directory fsync is new). The walk takes every one, not a
spread: each point costs about one second (a fresh backend and vehicle, the cut cycle, two
or three cycles after it), some 90 s in all, and the write points of the cycle record
differ only by the step they record. For each write point N (each cut is checked to fall
on the point the clean run named), a fresh vehicle and backend get the same assignment,
the Primary loses power at write N (:class:`~storage.faults.PowerLoss` leaves
``run_cycle``; the Secondaries keep theirs), and a fresh ``Primary`` over the same storage
directory (the real file system: the reboot) runs at most three cycles. The checks after
the cut and at the end:

- every state file the Primary keeps decodes (the cycle record, each trusted metadata file
  in JSON, each forwarded file in DER), and every downloaded image holds exactly the
  image its name hashes: a cut leaves the old value or the new, never a torn one;
- each Secondary runs its assigned image, byte for byte, installed once (a blank device
  boots slot A and its first install goes to B; a second install would move it back);
- the Director shows both assignments installed, and the Primary has nothing pending.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from cycle_support import IMAGES, LIMITS, VIN, Vehicle, backend_and_vehicle

from primary.agent import CycleResult, Primary
from primary.state import PrimaryState
from storage import AtomicStore
from storage.faults import FaultyFileSystem, PowerCut, PowerLoss, WritePointCounter
from uptane.metadata import DER, JSON, decode

ASSIGNED = {"brk-1": "brakes/fw-2.bin", "tcu-1": "tcu/tcu-5.bin"}
#: cycles after the reboot: one to finish the install, one whose manifest reports it
MAX_CYCLES = 3
#: the whole walk may never hang: the test fails after this many seconds
WALK_DEADLINE = 600
#: write points of the clean cycle (90 before the storage package; at least as many now)
MIN_POINTS = 90


class Overran(BaseException):
    """The walk ran past its deadline (a BaseException: no cycle may swallow it)."""


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def expired(signum: int, frame: Any) -> None:
        raise Overran(f"the power walk still ran after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def primary(car: Vehicle, trigger: PowerCut | None = None) -> Primary:
    """The vehicle's Primary; with ``trigger``, on a file system that obeys it."""
    kw = {} if trigger is None else {"fs": FaultyFileSystem(trigger)}
    return Primary(car.config, time_source=car.time, say=car.lines.append, **kw)


def check_state_whole(storage: Path) -> None:
    """Every file of the Primary's state decodes, and every finished image is whole."""
    PrimaryState(storage, LIMITS).load_cycle()  # raises on a record that does not decode
    for repo in ("director", "image"):
        store = AtomicStore(storage / "metadata" / repo)  # opening drops a temp file left
        for name in store.names():
            data = store.read(unquote(name))
            assert data is not None
            decode(data, LIMITS, encoding=JSON)
    forward = AtomicStore(storage / "forward")
    for name in forward.names():
        data = forward.read(unquote(name))
        assert data is not None and name.endswith(f".{DER}")
        decode(data, LIMITS, encoding=DER)
    for image in (storage / "images").iterdir():
        if not image.name.endswith(".part"):
            digest = image.name.split(".", 1)[0]
            assert hashlib.sha256(image.read_bytes()).hexdigest() == digest, image.name


def check_done(backend: Any, car: Vehicle) -> None:
    rec = PrimaryState(car.config.storage_dir, LIMITS).load_cycle()
    assert rec.pending == {}
    for serial, path in ASSIGNED.items():
        agent = car.ecus[serial].agent
        assert agent is not None
        st = agent.slots.status()
        assert st.installed is not None and st.installed.filename == path
        assert agent.flash.read(st.booted, 0, st.installed.length) == IMAGES[path][0]
        # one install: a blank device starts on slot A, its first install goes to B
        assert st.active == "B" and st.booted == "B", f"{serial} installed more than once"
        assert rec.installed[serial].path == path
    states = {a["ecu"]: a["state"] for a in backend.director.list_assignments(vin=VIN)}
    assert states == dict.fromkeys(ASSIGNED, "installed")


def _kind(point: str) -> str:
    """``write store``, ``rename images``, ...: a write point without its file name."""
    op, _, where = point.partition(" ")
    if op in ("write", "fsync"):
        return f"{op} {where.split(' ', 1)[0]}"
    return f"{op} {where.split('/', 1)[0]}"


def director_done(backend: Any) -> bool:
    states = [a["state"] for a in backend.director.list_assignments(vin=VIN)]
    return bool(states) and all(s == "installed" for s in states)


def count_write_points(root: Path, now: datetime) -> list[str]:
    with backend_and_vehicle(root, now) as (backend, car):
        backend.assign(VIN, list(ASSIGNED.items()))
        counter = WritePointCounter()
        result = primary(car, counter).run_cycle()
        assert result.error is None and result.installed == ASSIGNED, "\n".join(car.lines)
        return counter.points


def cut_then_reboot(root: Path, now: datetime, n: int, expected: str) -> None:
    with backend_and_vehicle(root, now) as (backend, car):
        backend.assign(VIN, list(ASSIGNED.items()))
        cut = PowerCut(n)
        with pytest.raises(PowerLoss):
            primary(car, cut).run_cycle()
        assert cut.fired_at == expected, f"write {n}: cut at {cut.fired_at}, not {expected}"
        check_state_whole(car.config.storage_dir)

        results: list[CycleResult] = []
        while not director_done(backend) and len(results) < MAX_CYCLES:
            results.append(primary(car).run_cycle())  # the reboot: fresh object, no fault
            assert results[-1].error is None, f"write {n} ({expected}): " + "\n".join(car.lines)
            check_state_whole(car.config.storage_dir)
        check_done(backend, car)


@pytest.mark.slow
def test_5_4_2_power_cut_at_every_write_point_of_a_primary_cycle(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    with deadline(WALK_DEADLINE):
        points = count_write_points(tmp_path / "count", now)
        print(f"{len(points)} write points in one cycle")
        assert len(points) >= MIN_POINTS
        # every kind of write the cycle makes is among them: each store's files (temp
        # file written and fsynced, renamed, directory fsynced), the downloads, the prune
        ops = {_kind(p) for p in points}
        dirs = ("state", "director", "image", "forward")
        assert ops == {
            "write store",
            "fsync store",
            *(f"rename {d}" for d in (*dirs, "images")),
            *(f"fsync-dir {d}" for d in (*dirs, "images")),
            "write download",
            "fsync download",
            "unlink images",
        }
        stored = {p.split(" ", 2)[2] for p in points if p.startswith("write store ")}
        assert {"cycle", "timestamp", "snapshot", "targets", "director.targets.2.der"} <= stored
        for n, expected in enumerate(points, start=1):
            cut_then_reboot(tmp_path / f"cut-{n}", now, n, expected)
