"""A campaign on the load tool's fleet (issue 14): simulated vehicles sending real signed
manifests to the real Director service.

    python -m load.campaign [--vehicles 500] [--db sqlite|postgresql|both] [--out load/out]

The Director runs as its FastAPI app under uvicorn on 127.0.0.1 (SQLite, or a private
PostgreSQL cluster), with a settable clock so that soak times and the unreachable deadline
pass without waiting; the Image repository is a directory it reads. Each vehicle has a
Primary (``gw``) and a brake Secondary (``brk``) with their own keys. One cycle of a
vehicle is what a Primary does: finish the install it began last cycle (2% of the brake
ECUs fail it and report an indicator), send a manifest with every report signed by its ECU
and the whole signed by the Primary (1% of the brake ECUs never answer: the Primary names
them in ``unreachable_ecus``), then fetch its Director targets, check their signature, and
begin installing the image they list.

The scenario: one campaign for every brake ECU, three waves by percentage (10/30/60), a
5% failure threshold, a soak time. Wave 1 carries more failures than the threshold: the
campaign halts by itself; the OEM resumes it; wave 2 goes out after the soak; wave 3 goes
out, and the campaign is cancelled mid-wave, with a third of wave 3 installed, a third
installing (their bundles in flight, fetched) and a third not yet fetched. Checked at the
end (``checks``, each must be 0): every vehicle's recorded state matches what its ECUs
report, every outcome is the one the fleet produced, no vehicle is locked out (every
manifest accepted, no bundle left in flight, no ECU left in an active campaign).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from load.loadgen import Server, databases, workspace
from uptane.manifest import InstalledImage

TARGET = "brakes/fw-2.0.bin"
TARGET_DATA = b"brakes two " * 400
BRAKE_HW, GW_HW = "brk-v1", "gw-v1"
WAVES = [{"percent": 10}, {"percent": 30}, {"percent": 60}]
THRESHOLD = 0.05
SOAK = 600
DEADLINE = 3600
#: what every Primary runs (not part of the campaign)
GW_IMAGE = InstalledImage("gw/gw-1.bin", 9, {"sha256": hashlib.sha256(b"gw").hexdigest()})


class Clock:
    """The Director's settable clock (real time plus an offset)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC).replace(microsecond=0) + self.offset

    def advance(self, seconds: int) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass
class Car:
    """One simulated vehicle: its ECU keys, what its brake ECU runs, and its fate
    (``ok``, ``fails`` its install, or ``dead``: never answers)."""

    index: int
    fate: str
    keys: dict[str, Any] = field(default_factory=dict)
    runs: Any = None
    release_counter: int = 0
    installing: Any = None
    indicator: str | None = None
    accepted: int = 0
    last_status: int = 0

    @property
    def vin(self) -> str:
        return f"CAMP-{self.index:05d}"

    @property
    def gw(self) -> str:
        return f"{self.vin}-gw"

    @property
    def brk(self) -> str:
        return f"{self.vin}-brk"


def _fates(n: int, sizes: list[int], seed: int = 14) -> dict[int, str]:
    """2% of the brake ECUs fail their install and 1% never answer, placed so that wave 1
    passes the failure threshold and wave 2 does not: waves 1 and 2 get 30% of the
    failures and 20% of the silent ones (wave 1 at least one), wave 3 the rest, at seeded
    random positions."""
    rng = random.Random(seed)
    fails, dead = round(0.02 * n), max(1, round(0.01 * n))
    out: dict[int, str] = {}
    start = 0
    for i, size in enumerate(sizes):
        last = i == len(sizes) - 1
        f = fails - sum(v == "fails" for v in out.values()) if last else round(0.3 * fails)
        d = dead - sum(v == "dead" for v in out.values()) if last else round(0.2 * dead)
        if i == 0:
            d = min(dead, max(1, d))  # wave 1 always has one that never answers
        picks = rng.sample(range(start, start + size), min(size, max(0, f) + max(0, d)))
        for k, idx in enumerate(picks):
            out[idx] = "fails" if k < f else "dead"
        start += size
    return out


class Fleet:
    """The Director service, the Image repository it reads, and the cars."""

    def __init__(self, root: Path, db_url: str, n: int) -> None:
        from director.director import Director
        from director.director_server import create_app
        from director.image_repo import ImageRepository, default_offline_dir
        from uptane.keys import PrivateKey

        now = datetime.now(UTC).replace(microsecond=0)
        image_dir = root / "image-repo"
        offline = default_offline_dir(image_dir)
        ImageRepository.init(image_dir, offline, now)
        ImageRepository(image_dir, now).stage_target(TARGET, TARGET_DATA, [BRAKE_HW], 2)
        ImageRepository(image_dir, now, offline_dir=offline).sign(now)
        ddir = root / "director"
        token = Director.init(
            ddir,
            str(image_dir / "metadata"),
            (image_dir / "metadata" / "1.root.json").read_bytes(),
            db_url=db_url,
            now=now,
        )
        self.clock = Clock()
        self.director = Director(ddir, clock=self.clock)
        self.director.config.unreachable_deadline_seconds = DEADLINE
        # the background tick (every second in `serve`) is driven here, with the clock
        self.server = Server(create_app(director=self.director, tick_interval=3600))
        self.http = httpx.Client(
            base_url=self.server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120
        )
        self.root = (ddir / "root" / "1.root.json").read_bytes()
        #: the Director root's targets keys and role entry, read once
        self.targets_keys: Any = None
        sizes = _wave_sizes(n)
        fates = _fates(n, sizes)
        self.factory = InstalledImage(
            "factory.bin", 7, {"sha256": hashlib.sha256(b"f").hexdigest()}
        )
        self.cars = [Car(i, fates.get(i, "ok")) for i in range(n)]
        for car in self.cars:
            car.keys = {car.gw: PrivateKey.generate(), car.brk: PrivateKey.generate()}
            car.runs = self.factory
        self._register()

    def _register(self) -> None:
        from director.director import EcuSpec

        for car in self.cars:
            self.director.register_vehicle(
                car.vin,
                [
                    EcuSpec(car.gw, GW_HW, car.keys[car.gw].key, True),
                    EcuSpec(car.brk, BRAKE_HW, car.keys[car.brk].key),
                ],
            )

    def stop(self) -> None:
        self.http.close()
        self.server.stop()
        self.director.dispose()


def _wave_sizes(n: int) -> list[int]:
    from director.campaigns import wave_sizes

    return wave_sizes(WAVES, n)


# --- one vehicle's cycle ---------------------------------------------------------------------


def _manifest(car: Car, now: datetime) -> bytes:
    """The Primary's vehicle version manifest: each report signed by its ECU; a dead brake
    ECU named unreachable inside the Primary's signature."""
    from uptane.manifest import (
        EcuVersionReport,
        SignedManifest,
        UnreachableEcu,
        build_vehicle_manifest,
    )

    def report(serial: str, image: Any, rc: int, attack: str | None) -> Any:
        body = EcuVersionReport(
            serial, image, now, nonce=os.urandom(16), release_counter=rc, attack=attack
        )
        signed = SignedManifest(body)
        signed.sign(car.keys[serial])
        return signed

    reports = [report(car.gw, GW_IMAGE, 1, None)]
    unreachable = []
    if car.fate == "dead":
        unreachable.append(UnreachableEcu(car.brk, "timeout: no answer on CAN after 3 tries"))
    else:
        reports.append(report(car.brk, car.runs, car.release_counter, car.indicator))
    vvm = build_vehicle_manifest(
        car.vin, car.gw, reports, car.keys[car.gw], unreachable=unreachable
    )
    return vvm.to_bytes()


def _targets(fleet: Fleet, car: Car) -> Any:
    """The vehicle's Director targets, their signature checked with the root's keys."""
    from uptane.limits import Limits
    from uptane.metadata import Root, decode
    from uptane.signatures import check_threshold

    limits = Limits.primary()
    if fleet.targets_keys is None:
        root = decode(fleet.root, limits, role_type="root").signed
        assert isinstance(root, Root)
        fleet.targets_keys = root.role_keys("targets")
    keys, entry = fleet.targets_keys
    data = fleet.http.get(f"/vehicles/{car.vin}/metadata/targets.json").content
    md = decode(data, limits, role_type="targets")
    assert md.signed_bytes is not None
    check_threshold(md.signed_bytes, md.signatures, keys, entry.keyids, entry.threshold, limits)
    if md.signed.vehicle_id not in (None, car.vin):
        raise RuntimeError(f"{car.vin} got another vehicle's targets")
    return md.signed


def cycle(fleet: Fleet, car: Car) -> None:
    """One Primary cycle of ``car`` (see the module docstring)."""
    if car.installing is not None:  # the install begun last cycle ends now
        tf = car.installing
        car.installing = None
        if car.fate == "fails":
            car.indicator = f"error: install of {tf.path} failed: flash write error at block 7"
        else:
            car.runs = InstalledImage.from_target(tf)
            car.release_counter = tf.release_counter or 0
            car.indicator = None
    r = fleet.http.post(
        f"/vehicles/{car.vin}/manifest",
        content=_manifest(car, fleet.clock()),
        headers={"Content-Type": "application/json"},
    )
    car.last_status = r.status_code
    if r.status_code != 200:
        return
    car.accepted += 1
    if car.fate == "dead":
        return
    for tf in _targets(fleet, car).targets.values():
        if car.brk in tf.ecu_ids and tf.path != car.runs.filename and car.indicator is None:
            car.installing = tf  # verified and downloaded; installed by the next cycle


def _drive(fleet: Fleet, cars: list[Car], concurrency: int) -> None:
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(lambda c: cycle(fleet, c), cars))


# --- the scenario ------------------------------------------------------------------------------


def _api(fleet: Fleet, method: str, path: str, body: Any = None) -> Any:
    r = fleet.http.request(method, path, json=body)
    if r.status_code >= 400:
        raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
    return r.json()


def _waves(fleet: Fleet, cid: int) -> list[dict[str, Any]]:
    return [
        {k: w[k] for k in ("wave", "size", "states", "unreachable", "failure_rate")}
        for w in _api(fleet, "GET", f"/api/campaigns/{cid}")["waves"]
    ]


def scenario(fleet: Fleet, concurrency: int) -> dict[str, Any]:
    """Halt, resume, soak, cancel mid-wave (module docstring); returns what was seen. Every
    vehicle sends a manifest first and twice at the end; in between, the vehicles of the
    waves sent so far call in (a parked car calls in less often; that changes nothing
    here)."""
    d, cars, seen = fleet.director, fleet.cars, {}
    sizes = _wave_sizes(len(cars))
    wave1, wave2 = cars[: sizes[0]], cars[sizes[0] : sizes[0] + sizes[1]]
    wave3 = cars[sizes[0] + sizes[1] :]
    _drive(fleet, cars, concurrency)  # everyone reports what it runs
    body = {"target": TARGET, "hardware_id": BRAKE_HW, "waves": WAVES}
    body |= {"soak_seconds": SOAK, "failure_threshold": THRESHOLD}
    c = _api(fleet, "POST", "/api/campaigns", body)
    cid = c["id"]
    seen["planned"] = [w["planned"] for w in c["waves"]]
    for _ in range(2):
        _drive(fleet, wave1, concurrency)
    seen["halt"] = d.tick()
    seen["halted_state"] = _api(fleet, "GET", f"/api/campaigns/{cid}")["state"]
    fleet.clock.advance(DEADLINE + 1)  # the dead ECUs of wave 1 fail by the deadline
    _drive(fleet, wave1, concurrency)
    seen["still_halted"] = d.tick() == []
    seen["resumed_state"] = _api(fleet, "POST", f"/api/campaigns/{cid}/resume")["state"]
    seen["during_soak"] = d.tick()  # wave 1 done: the soak starts
    fleet.clock.advance(SOAK)
    seen["wave2"] = d.tick()
    for _ in range(2):
        _drive(fleet, wave2, concurrency)
    fleet.clock.advance(DEADLINE + 1)
    _drive(fleet, wave2, concurrency)
    seen["wave2_done"] = d.tick()
    fleet.clock.advance(SOAK)
    seen["wave3"] = d.tick()
    third = len(wave3) // 3
    _drive(fleet, wave3[: 2 * third], concurrency)  # two thirds fetch and begin installing
    _drive(fleet, wave3[:third], concurrency)  # the first third reports it installed
    seen["before_cancel"] = _waves(fleet, cid)
    seen["cancelled_state"] = _api(fleet, "POST", f"/api/campaigns/{cid}/cancel")["state"]
    for _ in range(2):
        _drive(fleet, cars, concurrency)  # the second third finishes; the last never starts
    seen["final"] = _waves(fleet, cid)
    seen["checks"] = _checks(fleet, cid, wave3, third)
    return seen


def _checks(fleet: Fleet, cid: int, wave3: list[Car], third: int) -> dict[str, int]:
    """The end state: each must be 0."""
    members = {m["vin"]: m for m in _api(fleet, "GET", f"/api/campaigns/{cid}/vehicles")}
    bad: Counter[str] = Counter(
        dict.fromkeys(
            ("manifest_refused", "bundle_left_in_flight", "recorded_image_differs_from_report"),
            0,
        )
    )
    installing = {c.vin for c in wave3[third : 2 * third] if c.fate == "ok"}
    for car in fleet.cars:
        status = _api(fleet, "GET", f"/api/vehicles/{car.vin}")
        brk = next(e for e in status["ecus"] if e["serial"] == car.brk)
        m = members[car.vin]
        if car.last_status != 200:
            bad["manifest_refused"] += 1
        if any(b["state"] == "in_flight" for b in status["bundles"]):
            bad["bundle_left_in_flight"] += 1
        if car.fate == "dead":
            bad["dead_ecu_with_a_version_claim"] += brk["installed"] is not None
            bad["dead_ecu_not_unreachable"] += brk["unreachable"] is None
        elif brk["installed"]["path"] != car.runs.filename:
            bad["recorded_image_differs_from_report"] += 1
        runs_target = car.runs.filename == TARGET
        bad["member_runs_target_wrong"] += m["runs_target"] != runs_target
        if m["state"] == "installed":
            bad["installed_but_not_running"] += not runs_target
        elif m["state"] == "failed":
            bad["failed_without_a_cause"] += car.fate == "ok"
        elif m["state"] == "cancelled":
            bad["cancelled_but_running_unexpectedly"] += runs_target != (car.vin in installing)
        else:
            bad[f"member_left_{m['state']}"] += 1
    camp = _api(fleet, "GET", f"/api/campaigns/{cid}")
    bad["campaign_not_cancelled"] += camp["state"] != "cancelled"
    from director import inventory as inv

    with fleet.director.engine.connect() as conn:
        active = conn.execute(
            inv.campaign_members.select().where(inv.campaign_members.c.active_ecu.is_not(None))
        ).all()
    bad["ecu_left_in_an_active_campaign"] += len(active)
    return {k: v for k, v in sorted(bad.items())}


def run(
    vehicles: int, db_url: str, *, workdir: Path | None = None, concurrency: int = 8
) -> dict[str, Any]:
    """The scenario on fresh services on ``db_url``; returns what it measured."""
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="uptane-campaign-")) if own else workdir
    assert root is not None
    t0 = time.perf_counter()
    fleet = Fleet(root, db_url, vehicles)
    try:
        setup = time.perf_counter() - t0
        t1 = time.perf_counter()
        seen = scenario(fleet, concurrency)
        return {
            "vehicles": vehicles,
            "database": db_url.split(":", 1)[0].split("+", 1)[0],
            "fates": dict(Counter(c.fate for c in fleet.cars)),
            "setup_seconds": round(setup, 2),
            "scenario_seconds": round(time.perf_counter() - t1, 2),
            "manifests_accepted": sum(c.accepted for c in fleet.cars),
            **seen,
        }
    finally:
        fleet.stop()
        if own:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vehicles", type=int, default=500)
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="sqlite")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("load/out"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = False
    for db in databases(args.db):
        with workspace(db) as (work, url):
            result = run(args.vehicles, url, workdir=work, concurrency=args.concurrency)
        (args.out / f"campaign-{db}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2), flush=True)
        failed |= any(result["checks"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["Car", "Clock", "Fleet", "cycle", "run", "scenario"]
