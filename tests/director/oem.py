"""Builders for Director tests: an Image repository with images, a Director on a given
database, vehicles with real ECU keys."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from director.director import Director, EcuSpec
from director.image_repo import ImageRepository, default_offline_dir
from uptane.keys import PrivateKey
from uptane.manifest import (
    EcuVersionReport,
    InstalledImage,
    SignedManifest,
    VehicleVersionManifest,
)
from uptane.metadata import JSON

IMAGES = {
    "brakes/fw-1.0.bin": (b"brakes one" * 100, ["brk-v1"], 1),
    "brakes/fw-2.0.bin": (b"brakes two" * 120, ["brk-v1"], 2),
    "tcu/tcu-5.bin": (b"telematics five" * 90, ["tcu-v5"], 5),
    "infotainment/ivi-3.bin": (b"infotainment" * 80, ["ivi-v3"], 3),
}


#: an image for two kinds of hardware, with a SHALL-match section
MULTI_HW_IMAGE = (
    "gateway/gw-2.bin",
    b"gateway two" * 50,
    ["gw-a", "gw-b"],
    2,
    {"bootloader": "3.x"},
)


class Clock:
    """A settable clock the services read instead of the system time."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now = self.now + delta


def make_image_repo(root: Path, now: datetime) -> Path:
    d = root / "image-repo"
    ImageRepository.init(d, default_offline_dir(d), now)
    repo = ImageRepository(d, now)
    for path, (data, hw, rc) in IMAGES.items():
        repo.stage_target(path, data, hw, rc)
    path, data, hw, rc, shall = MULTI_HW_IMAGE
    repo.stage_target(path, data, hw, rc, shall_match=shall)
    ImageRepository(d, now, offline_dir=default_offline_dir(d)).sign(now)
    return d


def make_director(root: Path, image_dir: Path, db_url: str, clock: Clock) -> tuple[Director, str]:
    d = root / "director"
    token = Director.init(
        d,
        str(image_dir / "metadata"),
        (image_dir / "metadata" / "1.root.json").read_bytes(),
        db_url=db_url,
        now=clock(),
    )
    return Director(d, clock=clock), token


@dataclass
class Vehicle:
    vin: str
    keys: dict[str, PrivateKey] = field(default_factory=dict)
    hardware: dict[str, str] = field(default_factory=dict)
    primary: str = ""

    def specs(self) -> list[EcuSpec]:
        return [
            EcuSpec(s, self.hardware[s], self.keys[s].key, s == self.primary) for s in self.keys
        ]

    def api_body(self) -> dict:
        return {
            "vin": self.vin,
            "ecus": [
                {
                    "serial": s,
                    "hardware_id": self.hardware[s],
                    "public_key": self.keys[s].key.to_dict(),
                    "primary": s == self.primary,
                }
                for s in self.keys
            ],
        }


def make_vehicle(vin: str, ecus: dict[str, str] | None = None) -> Vehicle:
    """A vehicle whose first ECU is the primary; ``ecus`` maps serial -> hardware id."""
    ecus = ecus or {f"{vin}-tcu": "tcu-v5", f"{vin}-brk": "brk-v1"}
    v = Vehicle(vin)
    for serial, hw in ecus.items():
        v.keys[serial] = PrivateKey.generate()
        v.hardware[serial] = hw
    v.primary = next(iter(ecus))
    return v


FACTORY = InstalledImage("factory.bin", 4, {"sha256": "ab" * 32})


def image_of(path: str) -> InstalledImage:
    """What an ECU reports after installing ``path`` from :data:`IMAGES`."""
    data = IMAGES[path][0]
    return InstalledImage(path, len(data), {"sha256": hashlib.sha256(data).hexdigest()})


def report(
    v: Vehicle,
    serial: str,
    now: datetime,
    *,
    installed: InstalledImage = FACTORY,
    nonce: bytes | None = None,
    counter: int | None = None,
    attack: str | None = None,
    encoding: str = JSON,
    key: PrivateKey | None = None,
) -> SignedManifest:
    """A signed ECU version report (a fresh random nonce unless ``nonce``/``counter``)."""
    if nonce is None and counter is None:
        nonce = os.urandom(16)
    body = EcuVersionReport(serial, installed, now, nonce, counter, None, attack)
    signed = SignedManifest(body, encoding=encoding)
    signed.sign(key or v.keys[serial])
    return signed


def manifest(
    v: Vehicle,
    now: datetime,
    *,
    installed: dict[str, InstalledImage] | None = None,
    reports: list[SignedManifest] | None = None,
    encoding: str = JSON,
    key: PrivateKey | None = None,
    vin: str | None = None,
    primary: str | None = None,
    attack: str | None = None,
) -> bytes:
    """A signed vehicle version manifest with a fresh report from every ECU."""
    installed = installed or {}
    if reports is None:
        reports = [
            report(v, s, now, installed=installed.get(s, FACTORY), encoding=encoding)
            for s in v.keys
        ]
    vvm = SignedManifest(
        VehicleVersionManifest(vin or v.vin, primary or v.primary, reports, attack),
        encoding=encoding,
    )
    vvm.sign(key or v.keys[v.primary])
    return vvm.to_bytes()


SUPPLIER_IMAGE = ("acme/gateway-7.bin", b"acme gateway seven" * 40, ["acme-gw"], 7)


def add_supplier(image_dir: Path, now: datetime) -> None:
    """Delegate ``acme/*`` (hardware ``acme-gw``) to supplier ``acme``, who uploads one
    image and its own signed metadata in every encoding."""
    from uptane.metadata import Metadata, Targets

    key = PrivateKey.generate()  # the supplier's own key: the OEM gets its public half
    offline = ImageRepository(image_dir, now, offline_dir=default_offline_dir(image_dir))
    offline.delegate("acme", ["acme/*"], ["acme-gw"], now, keys=[key.key])
    repo = ImageRepository(image_dir, now)
    path, data, hw, rc = SUPPLIER_IMAGE
    tf = repo.upload_image("acme", path, data)
    tf.hardware_ids, tf.release_counter = hw, rc
    t = Targets(version=1, expires=now + timedelta(days=30))
    t.targets[path] = tf
    for enc in repo.builder.encodings:
        md = Metadata(t, encoding=enc)
        md.sign(key)
        repo.upload_metadata("acme", "acme", md.to_bytes(), enc, now)
