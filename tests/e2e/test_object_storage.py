"""Images and signed metadata in S3-compatible object storage, end to end (issue 19).

moto's server mode runs as a real process; the Image repository's static layout is kept
in its bucket (:class:`director.objectmirror.Mirror`); the Director (a real
``uptane-director serve`` process) reads the Image repository from the bucket over HTTP;
a real Primary reads the Image repository's metadata and downloads its images from the
bucket. The repository's own image files are removed before the download, so the bytes
the vehicle installs can only have come from object storage. A second release sends only
what changed.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from oem import make_image_repo
from s3_support import s3  # noqa: F401  (the fixture)
from services import Service
from tls_support import PRIMARY_TOML

from director.director import Director
from director.image_repo import ImageRepository, default_offline_dir
from director.objectmirror import Mirror
from primary.agent import Primary
from primary.cli import provision
from primary.config import load_config
from storage.objects import open_objects
from uptane.keys import PrivateKey

pytestmark = pytest.mark.slow

VIN, HW = "S3CAR-1", "tcu-v5"
SERIAL = f"{VIN}-tcu"


def _installs(cfg, target: str) -> bool:
    for _ in range(4):
        result = Primary(cfg).run_cycle()
        assert result.error is None, result.error
        installed = Primary(cfg).state.load_cycle().installed.get(SERIAL)
        if installed is not None and installed.path == target:
            return True
    return False


def test_a_vehicle_updates_from_images_in_object_storage(tmp_path: Path, s3):  # noqa: F811
    now = datetime.now(UTC).replace(microsecond=0)
    image_dir = make_image_repo(tmp_path, now)
    store = open_objects({"url": "s3://images/repo", "endpoint_url": s3, "public_read": True})
    mirror = Mirror(store)
    first = mirror.sync(ImageRepository(image_dir, now))
    assert first > 8  # every image, every metadata file
    bucket = store.public_url()  # type: ignore[attr-defined]
    assert httpx.get(f"{bucket}/metadata/timestamp.json", timeout=10).status_code == 200
    # the Director reads the Image repository from the bucket
    ddir = tmp_path / "director"
    token = Director.init(ddir, bucket, (image_dir / "metadata" / "1.root.json").read_bytes())
    director = Service("director.director_cli", ddir, tmp_path / "director.log")
    admin = httpx.Client(
        base_url=director.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    try:
        # a vehicle whose Image repository is the bucket
        root = tmp_path / "car"
        (root / "keys").mkdir(parents=True)
        key = PrivateKey.generate()
        (root / "keys" / "primary.pem").write_bytes(key.to_pem())
        toml = PRIMARY_TOML.format(
            vin=VIN, serial=SERIAL, hw=HW, director=director.url, image=bucket, tls=""
        )
        (root / "primary.toml").write_text(toml)
        cfg = load_config(root / "primary.toml")
        provision(
            cfg,
            (ddir / "root" / "1.root.json").read_bytes(),
            (image_dir / "metadata" / "1.root.json").read_bytes(),
        )
        body = {
            "vin": VIN,
            "ecus": [
                {
                    "serial": SERIAL,
                    "hardware_id": HW,
                    "public_key": key.key.to_dict(),
                    "primary": True,
                }
            ],
        }
        assert admin.post("/api/v1/vehicles", json=body).status_code == 201
        # the images exist only in the bucket from now on
        shutil.rmtree(image_dir / "images")
        r = admin.post(
            f"/api/v1/vehicles/{VIN}/assignments",
            json={"assignments": [{"ecu": SERIAL, "target": "tcu/tcu-5.bin"}]},
        )
        assert r.status_code == 201, r.text
        assert _installs(cfg, "tcu/tcu-5.bin")
        # a second release: staged, signed, and only what changed goes to the bucket
        (image_dir / "images").mkdir()
        repo = ImageRepository(image_dir, now)
        repo.stage_target("tcu/tcu-6.bin", b"telematics six" * 100, [HW], 6)
        ImageRepository(image_dir, now, offline_dir=default_offline_dir(image_dir)).sign(now)
        second = mirror.sync(ImageRepository(image_dir, now))
        assert 0 < second < first
        assert mirror.sync(ImageRepository(image_dir, now)) == 0
        shutil.rmtree(image_dir / "images")
        r = admin.post(
            f"/api/v1/vehicles/{VIN}/assignments",
            json={"assignments": [{"ecu": SERIAL, "target": "tcu/tcu-6.bin"}]},
        )
        assert r.status_code == 201, r.text
        assert _installs(cfg, "tcu/tcu-6.bin")
    finally:
        admin.close()
        director.stop()
    # what the vehicle fetched came from the bucket
    served = (tmp_path / "moto.log").read_text(errors="replace")
    assert "GET /images/repo/targets/tcu/" in served
