"""Both services over HTTP, used the way a vehicle uses them: the Director reads the Image
repository service; a vehicle runs full verification (§5.4.4.2) against both, downloads
and checks the image, and its next manifest confirms the bundle. python-tuf's ngclient
also reads a vehicle's Director repository."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
from oem import IMAGES, Clock, make_vehicle, manifest
from tuf.ngclient import Updater

from director.director import Director
from director.director_server import create_app as director_app
from director.image_repo import ImageRepository, default_offline_dir
from director.image_server import create_app as image_app
from director.imageview import HttpSource
from uptane.limits import Limits
from uptane.manifest import InstalledImage
from uptane.metadata import MapFile
from uptane.trust import RepositoryTrust
from uptane.verify import VehicleContext, full_verification


def test_5_4_4_2_vehicle_fully_verifies_what_the_director_assigns(
    tmp_path: Path, db_url: str, now, serve_app
):
    clock = Clock(now)
    image_dir = tmp_path / "image-repo"
    ImageRepository.init(image_dir, default_offline_dir(image_dir), now)
    offline = ImageRepository(image_dir, now, offline_dir=default_offline_dir(image_dir))
    for path, (data, hw, rc) in IMAGES.items():
        offline.stage_target(path, data, hw, rc)
    offline.sign(now)
    image_url = serve_app(image_app(image_dir, clock=clock))
    image_root = httpx.get(f"{image_url}/metadata/1.root.json").content

    ddir = tmp_path / "director"
    token = Director.init(ddir, image_url, image_root, db_url=db_url, now=now)
    director = Director(ddir, clock=clock)
    director_url = serve_app(director_app(director=director))
    admin = httpx.Client(
        base_url=director_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    v = make_vehicle("VIN0042")
    brk = f"{v.vin}-brk"
    assert admin.post("/api/vehicles", json=v.api_body()).status_code == 201
    r = admin.post(
        f"/api/vehicles/{v.vin}/assignments",
        json={"assignments": [{"ecu": brk, "target": "brakes/fw-2.0.bin"}]},
    )
    assert r.status_code == 201, r.text

    # the vehicle: full verification of both repositories
    vsrc = HttpSource(f"{director_url}/vehicles/{v.vin}")
    isrc = HttpSource(image_url)
    limits = Limits()
    dtrust = RepositoryTrust(
        "director",
        vsrc.fetch_metadata("root", 1, 1 << 20),
        limits,
        vehicle_id=v.vin,
        ecu_ids=list(v.keys),
    )
    itrust = RepositoryTrust("image", image_root, limits)
    ctx = VehicleContext(v.vin, v.primary, dict(v.hardware))
    result = full_verification(
        dtrust,
        itrust,
        MapFile.default(director_url, image_url),
        {"director": vsrc, "image": isrc},
        clock(),
        ctx,
        limits,
    )
    [approved] = result.images
    assert approved.ecu_id == brk and approved.path == "brakes/fw-2.0.bin"
    digest = approved.hashes["sha256"]
    data = httpx.get(f"{image_url}/targets/brakes/{digest}.fw-2.0.bin").content
    verifier = approved.verifier(limits)
    verifier.update(data)
    verifier.finish()
    assert hashlib.sha256(data).hexdigest() == digest

    # python-tuf reads the vehicle's Director repository too
    mdir = tmp_path / "ng"
    mdir.mkdir()
    root = vsrc.fetch_metadata("root", 1, 1 << 20)
    updater = Updater(
        metadata_dir=str(mdir),
        metadata_base_url=f"{director_url}/vehicles/{v.vin}/metadata/",
        target_base_url=f"{image_url}/targets/",
        target_dir=str(tmp_path),
        bootstrap=root,
    )
    updater.refresh()
    info = updater.get_targetinfo("brakes/fw-2.0.bin")
    assert info is not None and info.custom["ecuIdentifiers"] == {brk: {"hardwareId": "brk-v1"}}

    # the next manifest reports the install and the bundle is confirmed
    installed = {brk: InstalledImage(approved.path, approved.length, approved.hashes)}
    r = httpx.post(
        f"{director_url}/vehicles/{v.vin}/manifest",
        content=manifest(v, clock(), installed=installed),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["bundle"]["state"] == "installed"
    admin.close()
    director.dispose()
