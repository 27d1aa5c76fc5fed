"""Helpers for the fleet-operation tests (issue 14): vehicles whose reports carry release
counters, manifests with unreachable ECUs (built through ``uptane.manifest`` as the Primary
builds them), and images with dependency rules staged into the test's Image repository."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from oem import Vehicle

from director.image_repo import ImageRepository, default_offline_dir
from uptane.manifest import (
    EcuVersionReport,
    InstalledImage,
    SignedManifest,
    UnreachableEcu,
    build_vehicle_manifest,
)

#: what an ECU runs before any update: (image, release counter)
FACTORY = (InstalledImage("factory.bin", 4, {"sha256": "ab" * 32}), 0)

#: images with dependency rules: path -> (bytes, hardware ids, release counter, custom)
RULED = {
    "gateway/gw-1.bin": (b"gateway one" * 40, ["gw-a"], 1, None),
    # the brake image needs a gateway at release counter 2 or more on another ECU
    "brakes/fw-3.0.bin": (
        b"brakes three" * 60,
        ["brk-v1"],
        3,
        {"requires": [{"hardware_id": "gw-a", "min_release_counter": 2}]},
    ),
    # an infotainment image that cannot run beside telematics 5
    "infotainment/ivi-4.bin": (
        b"infotainment four" * 30,
        ["ivi-v3"],
        4,
        {"conflicts": [{"image": "tcu/tcu-5.bin"}]},
    ),
}


def stage(image_dir: Path, now: datetime, images: dict[str, tuple[Any, ...]]) -> None:
    """Add ``images`` to the Image repository and sign them with the offline key."""
    repo = ImageRepository(image_dir, now)
    for path, (data, hw, rc, custom) in images.items():
        repo.stage_target(path, data, hw, rc, custom=custom)
    ImageRepository(image_dir, now, offline_dir=default_offline_dir(image_dir)).sign(now)


def image(path: str, data: bytes) -> InstalledImage:
    return InstalledImage(path, len(data), {"sha256": hashlib.sha256(data).hexdigest()})


def ecu_report(
    v: Vehicle,
    serial: str,
    now: datetime,
    runs: tuple[InstalledImage, int | None] = FACTORY,
    attack: str | None = None,
) -> SignedManifest[EcuVersionReport]:
    """A signed report of ``serial``: what it runs, with its release counter."""
    installed, rc = runs
    body = EcuVersionReport(
        serial, installed, now, nonce=os.urandom(16), release_counter=rc, attack=attack
    )
    signed = SignedManifest(body)
    signed.sign(v.keys[serial])
    return signed


def vvm(
    v: Vehicle,
    now: datetime,
    runs: dict[str, tuple[InstalledImage, int | None]] | None = None,
    *,
    dead: dict[str, str] | None = None,
    attacks: dict[str, str] | None = None,
    last_seen: datetime | None = None,
) -> bytes:
    """A vehicle version manifest: a report from every ECU but those in ``dead`` (ECU ->
    reason), which the Primary names unreachable inside its signed manifest."""
    runs, dead, attacks = runs or {}, dead or {}, attacks or {}
    reports = [
        ecu_report(v, s, now, runs.get(s, FACTORY), attacks.get(s)) for s in v.keys if s not in dead
    ]
    seen = last_seen or now - timedelta(hours=1)
    unreachable = [UnreachableEcu(s, why, seen) for s, why in dead.items()]
    signed = build_vehicle_manifest(
        v.vin, v.primary, reports, v.keys[v.primary], unreachable=unreachable
    )
    return signed.to_bytes()


def post(env: dict[str, Any], vin: str, data: bytes) -> Any:
    return env["c"].post(
        f"/vehicles/{vin}/manifest", content=data, headers={"Content-Type": "application/json"}
    )


def register(env: dict[str, Any], v: Vehicle) -> None:
    r = env["c"].post("/api/vehicles", json=v.api_body())
    assert r.status_code == 201, r.text


def assign(env: dict[str, Any], vin: str, items: dict[str, str], **kw: Any) -> Any:
    return env["c"].post(
        f"/api/vehicles/{vin}/assignments",
        json={"assignments": [{"ecu": e, "target": t} for e, t in items.items()], **kw},
    )


def states(env: dict[str, Any], vin: str) -> dict[str, tuple[str, str]]:
    """Assignment id -> (target, state) of one vehicle."""
    return {
        a["id"]: (a["target"], a["state"])
        for a in env["c"].get(f"/api/assignments?vin={vin}").json()
    }


def targets_of(env: dict[str, Any], vin: str) -> dict[str, dict[str, str]]:
    """The vehicle's current Director targets: path -> ECU ids."""
    import json

    doc = json.loads(env["c"].get(f"/vehicles/{vin}/metadata/targets.json").content)
    return {
        path: dict(t.get("custom", {}).get("ecuIdentifiers", {}))
        for path, t in doc["signed"]["targets"].items()
    }
