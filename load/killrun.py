"""Kill runs (issue 15): SIGKILL the Director process at random moments under load.

    python -m load.killrun [--vehicles 100] [--kills 20] [--db sqlite|postgresql|both]
                           [--seed 1] [--out load/out]

The Director runs as a real process (``uptane-director serve``, uvicorn) on 127.0.0.1, on
SQLite or on a private PostgreSQL cluster (load/pgcluster.py). ``--vehicles`` simulated
vehicles, each its own thread, loop until the end of the run: build and sign a vehicle
version manifest (a fresh report from each of its two ECUs, signed with their keys; a
Secondary reports the image its Director targets assign, once it sees it), upload it, and
poll the Director's metadata through a :class:`~uptane.trust.RepositoryTrust` kept for the
whole run (it verifies every role and refuses any version that goes back). An admin
thread assigns a new image to every vehicle whose bundle is done, so metadata versions
keep moving. The killer waits a random 0.2-2.5 s after the service answers, sends
SIGKILL, and starts the service again on the same port and database, ``--kills`` times.

After every restart, and at the end, the invariants:

- **every manifest that got a 2xx is stored**: its bytes are in the ``manifests`` table;
- **no nonce can be reused**: a replay of an acknowledged manifest is refused (409);
- **no metadata version goes back**: no vehicle's trust ever raised ``RollbackAttack``,
  and the versions each vehicle saw never decreased;
- **every vehicle's cycle recovers**: after the last restart each vehicle completes a
  cycle (manifest accepted, metadata verified).

Recorded in ``OUT/killrun-DB.json``: kills, manifests acknowledged, requests that failed
in a gap, restart times, and each check. ``tests/security/test_killrun.py`` runs a bounded
variant (a few kills) in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from load import pgcluster

BIN = Path(sys.executable).parent
HW = {"pri": "gw-v1", "brk": "brk-v1"}
IMAGES = {"brk/fw-1.bin": b"brakes one" * 60, "brk/fw-2.bin": b"brakes two" * 70}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DirectorProcess:
    """``uptane-director serve DIR`` on a fixed port; killed with SIGKILL, started again."""

    def __init__(self, directory: Path, log: Path) -> None:
        self.directory, self.log = directory, log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait until it answers; the seconds that took."""
        t0 = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *(str(BIN / "uptane-director"), "serve", str(self.directory)),
                    *("--host", "127.0.0.1", "--port", str(self.port)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        while time.monotonic() - t0 < timeout:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return time.monotonic() - t0
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the Director did not start; see {self.log}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


# --- the OEM side: Image repository, Director, fleet ----------------------------------------


def setup(root: Path, db_url: str, vehicles: int) -> tuple[Path, str, dict[str, Any]]:
    """Image repository with :data:`IMAGES`, a Director on ``db_url``, ``vehicles``
    vehicles registered (keys returned); the Director directory and admin token."""
    from director.director import Director, EcuSpec
    from director.image_repo import ImageRepository, default_offline_dir
    from uptane.keys import PrivateKey

    now = datetime.now(UTC).replace(microsecond=0)
    image = root / "image-repo"
    ImageRepository.init(image, default_offline_dir(image), now)
    repo = ImageRepository(image, now)
    for i, (path, data) in enumerate(IMAGES.items(), start=1):
        repo.stage_target(path, data, [HW["brk"]], i)
    ImageRepository(image, now, offline_dir=default_offline_dir(image)).sign(now)
    ddir = root / "director"
    token = Director.init(
        ddir, str(image / "metadata"), (image / "metadata" / "1.root.json").read_bytes(),
        db_url=db_url, now=now,
    )  # fmt: skip
    d = Director(ddir)
    fleet: dict[str, Any] = {}
    try:
        for n in range(vehicles):
            vin = f"KILL{n:05d}"
            keys = {f"{vin}-{k}": PrivateKey.generate() for k in HW}
            specs = [EcuSpec(s, HW[s[-3:]], k.key, s.endswith("pri")) for s, k in keys.items()]
            d.register_vehicle(vin, specs)
            fleet[vin] = keys
    finally:
        d.dispose()
    return ddir, token, fleet


# --- one vehicle ------------------------------------------------------------------------------


@dataclass
class Car:
    """A simulated vehicle: its keys, its Director trust, what it saw acknowledged."""

    vin: str
    keys: dict[str, Any]
    trust: Any
    runs: str = "factory.bin"
    acked: list[bytes] = field(default_factory=list)
    versions: list[tuple[int, int, int]] = field(default_factory=list)
    rollbacks: list[str] = field(default_factory=list)
    gaps: int = 0

    def manifest(self) -> bytes:
        from uptane.manifest import (
            EcuVersionReport,
            InstalledImage,
            SignedManifest,
            build_vehicle_manifest,
        )

        now = datetime.now(UTC).replace(microsecond=0)
        reports = []
        for serial, key in self.keys.items():
            installed = InstalledImage("factory.bin", 4, {"sha256": "ab" * 32})
            if serial.endswith("brk") and self.runs in IMAGES:
                data = IMAGES[self.runs]
                installed = InstalledImage(
                    self.runs, len(data), {"sha256": hashlib.sha256(data).hexdigest()}
                )
            r = SignedManifest(EcuVersionReport(serial, installed, now, nonce=os.urandom(16)))
            r.sign(key)
            reports.append(r)
        primary = f"{self.vin}-pri"
        return build_vehicle_manifest(self.vin, primary, reports, self.keys[primary]).to_bytes()

    def cycle(self, http: httpx.Client, url: str) -> bool:
        """One upload and one metadata refresh; True when both succeeded."""
        from uptane.errors import RollbackAttack, UptaneError

        body = self.manifest()
        try:
            r = http.post(f"{url}/vehicles/{self.vin}/manifest", content=body)
        except httpx.TransportError:
            self.gaps += 1
            return False
        if 200 <= r.status_code < 300:
            self.acked.append(body)
        elif r.status_code >= 500 and r.status_code != 503:
            raise AssertionError(f"{self.vin}: manifest answered {r.status_code}: {r.text[:200]}")
        try:
            self.trust.refresh(_Source(http, url, self.vin), datetime.now(UTC))
        except RollbackAttack as e:
            self.rollbacks.append(str(e))
            return False
        except (UptaneError, httpx.TransportError):
            self.gaps += 1
            return False
        self._saw()
        return 200 <= r.status_code < 300

    def _saw(self) -> None:
        t = self.trust
        seen = tuple(
            m.signed.version if m is not None else 0 for m in (t.timestamp, t.snapshot, t.targets)
        )
        if self.versions and any(a < b for a, b in zip(seen, self.versions[-1], strict=True)):
            self.rollbacks.append(f"versions went back: {self.versions[-1]} -> {seen}")
        self.versions.append(seen)  # type: ignore[arg-type]
        target = next(iter(t.targets.signed.targets), None) if t.targets else None
        if target is not None:
            self.runs = target


class _Source:
    """The Director's per-vehicle metadata over HTTP, for a RepositoryTrust."""

    def __init__(self, http: httpx.Client, url: str, vin: str) -> None:
        self.http, self.base = http, f"{url}/vehicles/{vin}/metadata/"

    def fetch_metadata(self, role: str, version: int | None, max_bytes: int) -> bytes | None:
        name = f"{role}.json" if version is None else f"{version}.{role}.json"
        r = self.http.get(self.base + name)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise httpx.TransportError(f"{name}: HTTP {r.status_code}")
        return r.content[:max_bytes]


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything a kill run shares between its threads."""

    url: str
    token: str
    cars: list[Car]
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)


def _drive(run: Run, car: Car) -> None:
    with httpx.Client(timeout=30) as http:
        while not run.stop.is_set():
            try:
                car.cycle(http, run.url)
            except Exception as e:  # a 500 or a broken invariant: recorded, the run goes on
                run.errors.append(f"{car.vin}: {type(e).__name__}: {e}"[:400])
            time.sleep(random.uniform(0.05, 0.3))


def _admin(run: Run) -> None:
    """Assign the other image to each vehicle whose Secondary runs its last one."""
    auth = {"Authorization": f"Bearer {run.token}"}
    with httpx.Client(timeout=30, headers=auth) as http:
        while not run.stop.is_set():
            for car in run.cars:
                if run.stop.is_set():
                    return
                nxt = "brk/fw-2.bin" if car.runs == "brk/fw-1.bin" else "brk/fw-1.bin"
                body = {"assignments": [{"ecu": f"{car.vin}-brk", "target": nxt}], "force": True}
                with contextlib.suppress(httpx.TransportError):
                    r = http.post(f"{run.url}/api/vehicles/{car.vin}/assignments", json=body)
                    if r.status_code >= 500 and r.status_code != 503:
                        run.errors.append(f"admin assign answered {r.status_code}: {r.text[:200]}")
            time.sleep(0.5)


def _trust(ddir: Path, vin: str, keys: dict[str, Any]) -> Any:
    from uptane.limits import PRIMARY
    from uptane.trust import RepositoryTrust

    root = (ddir / "root" / "1.root.json").read_bytes()
    return RepositoryTrust("director", root, PRIMARY, vehicle_id=vin, ecu_ids=list(keys))


def check(run: Run, db_url: str) -> dict[str, Any]:
    """The invariants, against the database and the running service."""
    import sqlalchemy as sa

    # what was acknowledged before the read (vehicles go on meanwhile: a manifest
    # acknowledged after the read is in the next check)
    acked = [b for car in run.cars for b in list(car.acked)]
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            stored = {
                hashlib.sha256(bytes(r[0])).digest()
                for r in conn.exec_driver_sql("SELECT raw FROM manifests")
            }
    finally:
        engine.dispose()
    lost = sum(hashlib.sha256(b).digest() not in stored for b in acked)
    replayed = 0
    with httpx.Client(timeout=30) as http:
        for car in random.sample(run.cars, min(10, len(run.cars))):
            if car.acked:
                r = http.post(f"{run.url}/vehicles/{car.vin}/manifest", content=car.acked[-1])
                replayed += 200 <= r.status_code < 300
    return {
        "acknowledged": len(acked),
        "lost_manifests": lost,
        "replays_accepted": replayed,
        "rollbacks": sum(len(c.rollbacks) for c in run.cars),
    }


def kill_run(db_url: str, root: Path, vehicles: int, kills: int, seed: int) -> dict[str, Any]:
    """The whole run on ``db_url``; the record of it."""
    rng = random.Random(seed)
    ddir, token, fleet = setup(root, db_url, vehicles)
    service = DirectorProcess(ddir, root / "director.log")
    starts = [service.start()]
    cars = [Car(vin, keys, _trust(ddir, vin, keys)) for vin, keys in fleet.items()]
    run = Run(service.url, token, cars)
    threads = [threading.Thread(target=_drive, args=(run, c), daemon=True) for c in cars]
    threads.append(threading.Thread(target=_admin, args=(run,), daemon=True))
    for t in threads:
        t.start()
    checks: list[dict[str, Any]] = []
    t0 = time.monotonic()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.2, 2.5))
            service.kill()
            starts.append(service.start())
            checks.append(check(run, db_url))
        run.stop.set()
        for t in threads:
            t.join(timeout=60)
        recovered = _recover(run, service.url)
        final = check(run, db_url)
    finally:
        run.stop.set()
        service.kill()
    return _record(run, kills, vehicles, starts, checks, final, recovered, time.monotonic() - t0)


def _recover(run: Run, url: str) -> int:
    """Vehicles that complete a cycle after the last restart (each tried for 60 s)."""
    ok = 0
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=30) as http:
        for car in run.cars:
            while time.monotonic() < deadline:
                if car.cycle(http, url):
                    ok += 1
                    break
                time.sleep(0.2)
    return ok


def _record(
    run: Run,
    kills: int,
    vehicles: int,
    starts: list[float],
    checks: list[dict[str, Any]],
    final: dict[str, Any],
    recovered: int,
    seconds: float,
) -> dict[str, Any]:
    return {
        "vehicles": vehicles,
        "kills": kills,
        "seconds": round(seconds, 1),
        "restart_seconds_median": round(sorted(starts)[len(starts) // 2], 2),
        "restart_seconds_max": round(max(starts), 2),
        "manifests_acknowledged": final["acknowledged"],
        "requests_in_gaps": sum(c.gaps for c in run.cars),
        "lost_manifests": max([final["lost_manifests"], *(c["lost_manifests"] for c in checks)]),
        "lost_at_the_end": final["lost_manifests"],
        "replays_accepted": final["replays_accepted"] + sum(c["replays_accepted"] for c in checks),
        "rollbacks": final["rollbacks"],
        "vehicles_recovered": recovered,
        "errors": run.errors[:20],
        "error_count": len(run.errors),
    }


def passed(r: dict[str, Any]) -> bool:
    return (
        r["lost_manifests"] == 0
        and r["replays_accepted"] == 0
        and r["rollbacks"] == 0
        and r["vehicles_recovered"] == r["vehicles"]
        and r["error_count"] == 0
    )


@contextlib.contextmanager
def database(kind: str, root: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{root / 'inventory.db'}"
        return
    with pgcluster.cluster(max_connections=300) as pg:
        yield pg.create_database("killrun")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vehicles", type=int, default=100)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("load/out"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    ok = True
    for kind in ["sqlite", "postgresql"] if args.db == "both" else [args.db]:
        root = Path(tempfile.mkdtemp(prefix=f"uptane-killrun-{kind}-"))
        try:
            with database(kind, root) as url:
                r = kill_run(url, root, args.vehicles, args.kills, args.seed)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        (args.out / f"killrun-{kind}.json").write_text(json.dumps(r, indent=2) + "\n")
        ok &= passed(r)
        print(kind, json.dumps(r), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
