"""Several Director nodes over one PostgreSQL database (issue 19).

    python -m load.nodes [--vehicles 500] [--nodes 3] [--seconds 60] [--no-kill]
                         [--out load/out]

``--nodes`` real ``uptane-director serve`` processes share one Director directory and one
private PostgreSQL cluster (load/pgcluster.py). A round-robin client sends each request
to the next node (and on to the one after when a node does not answer). ``--vehicles``
simulated vehicles (load/killrun.py's: a Primary and a brake ECU, real signed reports,
each with a :class:`~uptane.trust.RepositoryTrust` that verifies every role and refuses a
version that goes back) cycle through a pool of worker threads: manifest, then metadata.
An admin thread assigns the other image to each vehicle whose ECU installed its last one.
A probe assigns through one node and times how long until each other node serves the new
targets. Halfway through, one node is SIGKILLed (not with ``--no-kill``); the others carry
on.

Checks, recorded in ``OUT/nodes-N.json``:

- ``lost_manifests``: manifests a vehicle saw acknowledged that are not stored;
- ``replays_accepted``: acknowledged manifests accepted again;
- ``rollbacks``: versions that went back at a vehicle;
- ``signed_twice`` / ``skipped``: every committed version of every vehicle's metadata, as a
  trigger this tool adds to the database records it (only committed rows stay): a
  timestamp version committed twice, or one missing between two; a targets or snapshot
  version whose content changed without a new version, or a version step other than 0 or 1;
- ``propagation_max_seconds``: the slowest probe (an assignment made through one node
  served by every other): must be under one second;
- ``errors``: 5xx answers or broken invariants during the run.

``tests/director/test_nodes.py`` runs a bounded variant (3 nodes, a kill) in the suite;
``bench/fig12_nodes.py`` measures cycles per second with 1 and 3 nodes.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from load import pgcluster
from load.killrun import IMAGES, Car, DirectorProcess, _trust, setup

HISTORY = """
CREATE TABLE metadata_history (
    id bigserial PRIMARY KEY, vin text NOT NULL, targets_version bigint NOT NULL,
    snapshot_version bigint NOT NULL, timestamp_version bigint NOT NULL,
    targets_sha text NOT NULL, snapshot_sha text NOT NULL);
CREATE FUNCTION record_metadata() RETURNS trigger AS $$
BEGIN
    INSERT INTO metadata_history (vin, targets_version, snapshot_version, timestamp_version,
                                  targets_sha, snapshot_sha)
    VALUES (NEW.vin, NEW.targets_version, NEW.snapshot_version, NEW.timestamp_version,
            md5(NEW.targets_json), md5(NEW.snapshot_json));
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER record_metadata AFTER INSERT OR UPDATE ON vehicle_metadata
    FOR EACH ROW EXECUTE FUNCTION record_metadata();
"""


class RoundRobin:
    """Each request to the next node; a node that does not answer is skipped for that
    request (the next one is asked)."""

    def __init__(self, urls: list[str]) -> None:
        self.clients = [httpx.Client(base_url=u, timeout=30) for u in urls]
        self._next = itertools.count()
        self._lock = threading.Lock()
        self.failovers = 0

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        for _ in range(len(self.clients)):
            with self._lock:
                i = next(self._next) % len(self.clients)
            try:
                return self.clients[i].request(method, path, **kw)
            except httpx.TransportError:
                with self._lock:
                    self.failovers += 1
        raise httpx.ConnectError("no node answered")

    def close(self) -> None:
        for c in self.clients:
            c.close()


class _Source:
    """A vehicle's Director metadata through the round-robin client."""

    def __init__(self, rr: RoundRobin, vin: str) -> None:
        self.rr, self.base = rr, f"/vehicles/{vin}/metadata/"

    def fetch_metadata(self, role: str, version: int | None, max_bytes: int) -> bytes | None:
        name = f"{role}.json" if version is None else f"{version}.{role}.json"
        r = self.rr.request("GET", self.base + name)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise httpx.TransportError(f"{name}: HTTP {r.status_code}")
        return r.content[:max_bytes]


@dataclass
class Run:
    """What the threads of one run share."""

    rr: RoundRobin
    token: str
    cars: list[Car]
    probes: list[Car]
    nodes: list[DirectorProcess]
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    cycles: int = 0
    propagation: list[float] = field(default_factory=list)
    #: probes some live node still did not serve after ten seconds (a lost notice)
    unserved: int = 0
    assigned: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text[:400])


def cycle(run: Run, car: Car) -> bool:
    """One manifest and one metadata refresh through the round-robin client."""
    from uptane.errors import RollbackAttack, UptaneError

    body = car.manifest()
    try:
        r = run.rr.request("POST", f"/vehicles/{car.vin}/manifest", content=body)
    except httpx.TransportError:
        car.gaps += 1
        return False
    if 200 <= r.status_code < 300:
        car.acked.append(body)
    elif r.status_code >= 500:
        run.error(f"{car.vin}: manifest answered {r.status_code}: {r.text[:200]}")
    try:
        car.trust.refresh(_Source(run.rr, car.vin), datetime.now(UTC))
    except RollbackAttack as e:
        car.rollbacks.append(str(e))
        return False
    except (UptaneError, httpx.TransportError):
        car.gaps += 1
        return False
    car._saw()
    with run.lock:
        run.cycles += 1
    return True


def _worker(run: Run, queue: deque[Car]) -> None:
    while not run.stop.is_set():
        try:
            car = queue.popleft()
        except IndexError:
            return
        try:
            cycle(run, car)
        except Exception as e:  # a broken invariant: recorded, the run goes on
            run.error(f"{car.vin}: {type(e).__name__}: {e}")
        queue.append(car)


def _next_image(car: Car) -> str:
    return "brk/fw-2.bin" if car.runs == "brk/fw-1.bin" else "brk/fw-1.bin"


def _assign(run: Run, car: Car, via: httpx.Client | RoundRobin) -> httpx.Response | None:
    target = _next_image(car)
    body = {"assignments": [{"ecu": f"{car.vin}-brk", "target": target}], "force": True}
    auth = {"Authorization": f"Bearer {run.token}"}
    try:
        r = via.request("POST", f"/api/v1/vehicles/{car.vin}/assignments", json=body, headers=auth)
    except httpx.TransportError:
        return None
    if r.status_code >= 500:
        run.error(f"assign answered {r.status_code}: {r.text[:200]}")
    elif r.status_code == 201:
        run.assigned[car.vin] = target
    return r


def _admin(run: Run) -> None:
    """Assign the other image to each vehicle whose ECU runs the one assigned last."""
    while not run.stop.is_set():
        for car in run.cars:
            if run.stop.is_set():
                return
            if run.assigned.get(car.vin, car.runs) == car.runs:
                _assign(run, car, run.rr)
        run.stop.wait(0.5)


def _versions(c: httpx.Client, vin: str, token: str) -> int | None:
    r = c.get(f"/api/v1/vehicles/{vin}", headers={"Authorization": f"Bearer {token}"})
    return int(r.json()["metadata"]["targets"]) if r.status_code == 200 else None


def _served(c: httpx.Client, vin: str) -> int:
    r = c.get(f"/vehicles/{vin}/metadata/targets.json")
    return int(json.loads(r.content)["signed"]["version"]) if r.status_code == 200 else 0


def _probe(run: Run) -> None:
    """Assign through one node; time until every other live node serves that targets."""
    rng = random.Random(19)
    while not run.stop.wait(0.7):
        live = [n for n in run.nodes if n.proc is not None and n.proc.poll() is None]
        if len(live) < 2:
            continue
        node = rng.choice(live)
        car = rng.choice(run.probes)
        with (
            contextlib.suppress(httpx.TransportError),
            httpx.Client(base_url=node.url, timeout=30) as c,
        ):
            before = _versions(c, car.vin, run.token)
            r = _assign(run, car, c)
            done = time.monotonic()
            after = _versions(c, car.vin, run.token)
            if r is None or r.status_code != 201 or before is None or after is None:
                continue
            if after <= before:
                continue  # queued behind a bundle in flight: nothing was published yet
            others = [n for n in live if n is not node]
            seconds, served = _until_served(others, car.vin, after, done)
            run.propagation.append(seconds)
            run.unserved += 0 if served else 1


def _until_served(
    nodes: list[DirectorProcess], vin: str, version: int, since: float
) -> tuple[float, bool]:
    """Seconds from ``since`` until every node serves targets ``version`` (or newer), and
    whether they all did within ten seconds."""
    waiting = {n.url: httpx.Client(base_url=n.url, timeout=5) for n in nodes}
    try:
        while waiting and time.monotonic() - since < 10:
            for url, c in list(waiting.items()):
                with contextlib.suppress(httpx.TransportError, ValueError, KeyError):
                    if _served(c, vin) >= version:
                        waiting.pop(url).close()
            time.sleep(0.01)
        return time.monotonic() - since, not waiting
    finally:
        for c in waiting.values():
            c.close()


# --- checks -------------------------------------------------------------------------------------


def history_check(db_url: str) -> dict[str, int]:
    """Every committed version of every vehicle's metadata, in commit order per vehicle."""
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT vin, targets_version, snapshot_version, timestamp_version,"
                " targets_sha, snapshot_sha FROM metadata_history ORDER BY vin, id"
            ).all()
    finally:
        engine.dispose()
    twice = skipped = 0
    for _, group in itertools.groupby(rows, key=lambda r: r[0]):
        prev = None  # the history starts with the trigger (vehicles registered before)
        for r in group:
            if prev is not None:
                twice += r[3] <= prev[3]
                skipped += r[3] > prev[3] + 1
                for v, sha in ((1, 4), (2, 5)):  # targets, snapshot
                    step = r[v] - prev[v]
                    twice += step == 0 and r[sha] != prev[sha]
                    skipped += step not in (0, 1)
            prev = r
    return {"signed_twice": twice, "skipped": skipped, "versions_committed": len(rows)}


def manifest_check(run: Run, db_url: str) -> dict[str, int]:
    """Acknowledged manifests stored; none accepted twice."""
    import hashlib

    import sqlalchemy as sa

    acked = [b for car in run.cars + run.probes for b in list(car.acked)]
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            stored = {
                hashlib.sha256(bytes(r[0])).digest()
                for r in conn.exec_driver_sql("SELECT raw FROM manifests")
            }
    finally:
        engine.dispose()
    replayed = 0
    for car in random.sample(run.cars, min(20, len(run.cars))):
        if car.acked:
            with contextlib.suppress(httpx.TransportError):
                r = run.rr.request("POST", f"/vehicles/{car.vin}/manifest", content=car.acked[-1])
                replayed += 200 <= r.status_code < 300
    return {
        "acknowledged": len(acked),
        "lost_manifests": sum(hashlib.sha256(b).digest() not in stored for b in acked),
        "replays_accepted": replayed,
    }


# --- the run ------------------------------------------------------------------------------------


@contextlib.contextmanager
def cluster_db(root: Path) -> Iterator[str]:
    with pgcluster.cluster("uptane-nodes-pg-", max_connections=400) as pg:
        yield pg.create_database("director_nodes")


def _install_history(db_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(HISTORY)
    finally:
        engine.dispose()


def run_nodes(
    db_url: str,
    root: Path,
    *,
    vehicles: int,
    nodes: int,
    seconds: float,
    kill: bool,
    workers: int = 32,
    probes: int = 10,
) -> dict[str, Any]:
    """One run on ``db_url``; its record."""
    ddir, token, fleet = setup(root, db_url, vehicles + probes)
    _install_history(db_url)
    procs = [DirectorProcess(ddir, root / f"node-{i}.log") for i in range(nodes)]
    for p in procs:
        p.start()
    cars = [Car(vin, keys, _trust(ddir, vin, keys)) for vin, keys in fleet.items()]
    run = Run(RoundRobin([p.url for p in procs]), token, cars[probes:], cars[:probes], procs)
    queue: deque[Car] = deque(cars)
    threads = [
        threading.Thread(target=_worker, args=(run, queue), daemon=True) for _ in range(workers)
    ]
    threads += [threading.Thread(target=f, args=(run,), daemon=True) for f in (_admin, _probe)]
    t0 = time.monotonic()
    killed = None
    try:
        for t in threads:
            t.start()
        if kill and nodes > 1:
            run.stop.wait(seconds / 2)
            killed = procs[-1].url
            procs[-1].kill()
        run.stop.wait(max(0.0, seconds - (time.monotonic() - t0)))
        run.stop.set()
        for t in threads:
            t.join(timeout=60)
        wall = time.monotonic() - t0
        record = _record(run, db_url, nodes, vehicles, wall, killed)
    finally:
        run.stop.set()
        run.rr.close()
        for p in procs:
            p.kill()
    return record


def _record(
    run: Run, db_url: str, nodes: int, vehicles: int, wall: float, killed: str | None
) -> dict[str, Any]:
    prop = sorted(run.propagation)
    return {
        "nodes": nodes,
        "vehicles": vehicles,
        "seconds": round(wall, 1),
        "cycles": run.cycles,
        "cycles_per_second": round(run.cycles / wall, 1),
        "killed": killed,
        "failovers": run.rr.failovers,
        "propagation_samples": len(prop),
        "propagation_median_seconds": round(prop[len(prop) // 2], 3) if prop else None,
        "propagation_max_seconds": round(prop[-1], 3) if prop else None,
        "propagation_unserved": run.unserved,
        "rollbacks": sum(len(c.rollbacks) for c in run.cars + run.probes),
        **manifest_check(run, db_url),
        **history_check(db_url),
        "errors": run.errors[:20],
        "error_count": len(run.errors),
    }


def correct(r: dict[str, Any]) -> bool:
    """Every invariant of the run that is not a timing: nothing lost, replayed, rolled
    back, signed twice or skipped, no 5xx, and every probe served by every other node."""
    return (
        r["lost_manifests"] == 0
        and r["replays_accepted"] == 0
        and r["rollbacks"] == 0
        and r["signed_twice"] == 0
        and r["skipped"] == 0
        and r["error_count"] == 0
        and r["propagation_unserved"] == 0
        and (r["nodes"] < 2 or r["propagation_samples"] > 0)
    )


def passed(r: dict[str, Any]) -> bool:
    """:func:`correct`, and the goal of ``make load``: every probe served by every other
    node within one second."""
    return correct(r) and (r["propagation_max_seconds"] or 0) < 1.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vehicles", type=int, default=500)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--no-kill", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("load/out"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="uptane-nodes-"))
    try:
        with cluster_db(root) as url:
            r = run_nodes(
                url,
                root,
                vehicles=args.vehicles,
                nodes=args.nodes,
                seconds=args.seconds,
                kill=not args.no_kill,
                workers=args.workers,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    (args.out / f"nodes-{args.nodes}.json").write_text(json.dumps(r, indent=2) + "\n")
    print(json.dumps(r), flush=True)
    return 0 if passed(r) else 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["IMAGES", "RoundRobin", "history_check", "passed", "run_nodes"]
