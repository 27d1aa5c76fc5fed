"""The Image repository service keeps its static layout in an S3-compatible bucket
(``repo.json`` ``object_store``, issue 19), tested against moto's server mode started by
the test: at start every image and metadata file is written; an offline release picked up
by the service reaches the bucket within seconds, and only what changed is sent; what the
bucket holds is a TUF repository a vehicle's trust refreshes from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from oem import IMAGES, make_image_repo
from s3_support import s3  # noqa: F401  (the fixture)
from services import within

from director.image_config import ImageRepoConfig
from director.image_repo import ImageRepository, default_offline_dir
from director.image_server import create_app
from storage.objects import open_objects
from uptane.limits import Limits
from uptane.trust import RepositoryTrust


class _Bucket:
    def __init__(self, base: str) -> None:
        self.base = base

    def fetch_metadata(self, role: str, version: int | None, max_bytes: int) -> bytes | None:
        name = f"{role}.json" if version is None else f"{version}.{role}.json"
        r = httpx.get(f"{self.base}/metadata/{name}", timeout=10)
        return None if r.status_code == 404 else r.content[:max_bytes]


def test_the_service_keeps_its_bucket_up_to_date(tmp_path: Path, now, s3, serve_app):  # noqa: F811
    image_dir = make_image_repo(tmp_path, now)
    spec = {"url": "s3://images/fleet", "endpoint_url": s3, "public_read": True}
    cfg = ImageRepoConfig.load(image_dir)
    cfg.object_store = spec
    cfg.save(image_dir)
    store = open_objects(spec)
    app = create_app(image_dir)
    url = serve_app(app)
    # the timestamp goes last: once it is there, so is everything it names
    within(10, lambda: store.size("metadata/timestamp.der"))
    keys = {k for k, _ in store.listing()}
    assert keys and any(k.startswith("targets/brakes/") for k in keys)
    assert {"metadata/1.root.json", "metadata/timestamp.json", "metadata/timestamp.der"} <= keys
    bucket = store.public_url()  # type: ignore[attr-defined]
    trust = RepositoryTrust("image", (image_dir / "metadata/1.root.json").read_bytes(), Limits())
    trust.refresh(_Bucket(bucket), datetime.now(UTC))
    assert set(IMAGES) <= set(trust.targets.signed.targets)
    # an offline release: picked up by the service, in the bucket within seconds
    repo = ImageRepository(image_dir, now)
    repo.stage_target("brakes/fw-3.0.bin", b"brakes three" * 90, ["brk-v1"], 3)
    later = now + timedelta(seconds=1)
    ImageRepository(image_dir, later, offline_dir=default_offline_dir(image_dir)).sign(later)
    new = RepositoryTrust("image", (image_dir / "metadata/1.root.json").read_bytes(), Limits())

    def released() -> bool:
        new.refresh(_Bucket(bucket), datetime.now(UTC))
        return "brakes/fw-3.0.bin" in new.targets.signed.targets

    ok, _ = within(10, released, every=0.2)
    assert ok, "the release never reached the bucket"
    assert [k for k, _ in store.listing("targets/brakes/") if "fw-3.0" in k]
    # only what changed was sent: the new objects, and the unversioned names of what
    # changed (targets, snapshot, timestamp, in both encodings)
    after = {k for k, _ in store.listing()}
    assert app.state.serving.mirror.last_written == len(after - keys) + 6, after - keys
    assert httpx.get(f"{url}/metrics", timeout=10).status_code == 200
