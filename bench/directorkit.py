"""A real Director (``director.director.Director``, SQLite inventory) set up for the
Director benchmarks: one or more vehicles of three ECUs each (the first is the Primary),
every ECU with its own ed25519 key, and signed vehicle version manifests built the way a
Primary builds them (:func:`uptane.manifest.build_vehicle_manifest`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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


def make_director(work: Path, vehicles: int = 1, ecus: int = 3) -> tuple[Path, list[BenchVehicle]]:
    """Create a Director in ``work/director`` with ``vehicles`` registered vehicles."""
    from director.director import Director, EcuSpec

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
        now=now(),
    )
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
