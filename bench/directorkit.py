"""A real Director (``director.director.Director``, SQLite inventory) set up for the
Director benchmarks: one or more vehicles of three ECUs each (the first is the Primary),
every ECU with its own ed25519 key, and signed vehicle version manifests built the way a
Primary builds them (:func:`uptane.manifest.build_vehicle_manifest`).

For fleets of 100,000 vehicles (figure 8), :func:`grow_fleet` registers vehicles in bulk:
each vehicle's first Director metadata is signed by the Director's own online keys
(:meth:`director.publishing.Publisher.first_row`, in forked worker processes), and the
inventory rows (vehicles, ECUs, signed metadata) go into one or more databases in batches
with SQLAlchemy Core, the same rows in each.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.repos import now
from uptane.keys import PrivateKey
from uptane.manifest import EcuVersionReport, InstalledImage, SignedManifest, build_vehicle_manifest
from uptane.metadata import JSON
from uptane.repository import RepositoryBuilder

FACTORY = InstalledImage("factory.bin", 4, {"sha256": "ab" * 32})


@dataclass
class BenchVehicle:
    vin: str
    keys: dict[str, PrivateKey] = field(default_factory=dict)
    hardware: dict[str, str] = field(default_factory=dict)

    @property
    def primary(self) -> str:
        return next(iter(self.keys))

    def manifest(self, encoding: str = JSON) -> bytes:
        """A fresh VVM: one report per ECU (a new random nonce each), signed by the Primary."""
        t = now()
        reports = []
        for serial, key in self.keys.items():
            body = EcuVersionReport(serial, FACTORY, t, os.urandom(16), None, None, None)
            signed = SignedManifest(body, encoding=encoding)
            signed.sign(key)
            reports.append(signed)
        vvm = build_vehicle_manifest(
            self.vin, self.primary, reports, self.keys[self.primary], encoding=encoding
        )
        return vvm.to_bytes()


def init_director(work: Path, db_url: str | None = None) -> Path:
    """``Director.init`` in ``work/director`` (no vehicles), over a fresh Image-repository
    root; the Director directory."""
    from director.director import Director

    image = RepositoryBuilder(
        "image",
        {r: [PrivateKey.generate()] for r in ("root", "targets", "snapshot", "timestamp")},  # type: ignore[misc]
        now(),
        encodings=(JSON,),
    )
    (work / "image-metadata").mkdir(parents=True, exist_ok=True)
    ddir = work / "director"
    Director.init(
        ddir,
        str(work / "image-metadata"),
        image.trusted_root(JSON),
        offline_dir=work / "director-offline",
        db_url=db_url,
        now=now(),
    )
    return ddir


def make_director(work: Path, vehicles: int = 1, ecus: int = 3) -> tuple[Path, list[BenchVehicle]]:
    """Create a Director in ``work/director`` with ``vehicles`` registered vehicles."""
    from director.director import Director, EcuSpec

    ddir = init_director(work)
    d = Director(ddir)
    out = []
    try:
        for i in range(vehicles):
            v = BenchVehicle(f"VIN-BENCH-{i:04d}")
            for j, hw in enumerate(("tcu-v5", "brk-v1", "ivi-v3")[:ecus]):
                serial = f"{v.vin}-ecu{j}"
                v.keys[serial] = PrivateKey.generate()
                v.hardware[serial] = hw
            d.register_vehicle(
                v.vin,
                [EcuSpec(s, v.hardware[s], v.keys[s].key, s == v.primary) for s in v.keys],
            )
            out.append(v)
    finally:
        d.dispose()
    return ddir, out


# --- fleets of 100,000 vehicles -------------------------------------------------------------

#: the ECUs of a bulk-registered vehicle: a Primary and a brake controller
FLEET_ECUS = (("tcu-v5", True), ("brk-v1", False))
#: vehicles signed per task of a worker, and inserted per transaction
CHUNK = 2_000
#: distinct ECU public keys shared by a bulk fleet: a poll never reads them, and 200,000
#: key generations would cost ~20 s of the run
KEY_POOL = 16


def fleet_vin(i: int) -> str:
    """The VIN of the ``i``-th vehicle of a bulk fleet."""
    return f"VIN-FLEET-{i:07d}"


def same_keys(ddir: Path, other: Path, db_url: str) -> Path:
    """A copy of the Director directory ``ddir`` (the same root and online keys) whose
    inventory is the database ``db_url`` (migrated here): the same signed rows are valid
    in both."""
    from director import inventory as inv
    from director.config import Config

    shutil.copytree(ddir, other)
    (other / "inventory.db").unlink(missing_ok=True)
    for p in other.glob("inventory.db-*"):
        p.unlink()
    cfg = Config.load(other / "director.json")
    cfg.db_url = db_url
    cfg.save(other / "director.json")
    inv.migrate(db_url)
    return other


#: the Publisher the forked signing workers inherit (set before the pool starts)
_SIGNER: dict[str, Any] = {}


def _sign_chunk(bounds: tuple[int, int]) -> list[dict[str, Any]]:
    pub, when = _SIGNER["publisher"], _SIGNER["now"]
    return [pub.first_row(i + 1, fleet_vin(i), when) for i in range(*bounds)]


def _signed_chunks(
    ddir: Path, start: int, stop: int, workers: int
) -> Iterator[list[dict[str, Any]]]:
    """The ``vehicle_metadata`` rows of vehicles ``start`` to ``stop - 1`` (vehicle id
    ``i + 1``), signed now by the Director's online keys, ``CHUNK`` at a time."""
    from director.director import Director

    d = Director(ddir)
    bounds = [(a, min(a + CHUNK, stop)) for a in range(start, stop, CHUNK)]
    try:
        _SIGNER.update(publisher=d.publisher, now=d.clock())
        if workers <= 1 or len(bounds) <= 1:
            yield from map(_sign_chunk, bounds)
            return
        with mp.get_context("fork").Pool(workers) as pool:
            yield from pool.imap(_sign_chunk, bounds)
    finally:
        _SIGNER.clear()
        d.dispose()


def _inventory_rows(rows: list[dict[str, Any]], keys: list[Any], when: int) -> dict[str, list]:
    """The ``vehicles`` and ``ecus`` rows of the signed metadata ``rows``."""
    import json

    vehicles, ecus = [], []
    for r in rows:
        vid, vin = r["vehicle_id"], r["vin"]
        vehicles.append({"id": vid, "vin": vin, "created_at": when})
        for j, (hw, primary) in enumerate(FLEET_ECUS):
            key = keys[(vid + j) % len(keys)]
            ecus.append(
                {
                    "vehicle_id": vid,
                    "serial": f"{vin}-ecu{j}",
                    "hardware_id": hw,
                    "public_key": json.dumps(key.to_dict(), sort_keys=True),
                    "key_id": key.keyid,
                    "is_primary": primary,
                }
            )
    return {"vehicles": vehicles, "ecus": ecus}


def grow_fleet(ddirs: list[Path], start: int, stop: int, workers: int = 2) -> None:
    """Register vehicles ``start`` to ``stop - 1`` (:func:`fleet_vin`) in the inventory of
    every Director directory of ``ddirs`` (which share their keys: :func:`same_keys`), each
    with two ECUs and its first signed Director metadata, as ``register_vehicle`` leaves
    it."""
    import sqlalchemy as sa

    from director import inventory as inv
    from director.config import Config

    keys = [PrivateKey.generate().key for _ in range(KEY_POOL)]
    engines = [sa.create_engine(Config.load(d / "director.json").db_url) for d in ddirs]
    try:
        for rows in _signed_chunks(ddirs[0], start, stop, workers):
            inventory = _inventory_rows(rows, keys, rows[0]["updated_at"])
            for engine in engines:
                with engine.begin() as conn:
                    conn.execute(inv.vehicles.insert(), inventory["vehicles"])
                    conn.execute(inv.ecus.insert(), inventory["ecus"])
                    conn.execute(inv.vehicle_metadata.insert(), rows)
        for engine in engines:
            if engine.dialect.name == "postgresql":  # explicit ids: the sequence follows
                with engine.begin() as conn:
                    conn.exec_driver_sql(
                        "SELECT setval(pg_get_serial_sequence('vehicles', 'id'),"
                        " (SELECT max(id) FROM vehicles))"
                    )
    finally:
        for engine in engines:
            engine.dispose()
