"""Succinct hash-bin delegations (issue 16): an Image repository of 10,000 images in 256
bins signed by online keys is served, and a Primary fetches only the bins holding the
images it installs (the requests are counted at the proxy in front of the service); the
service re-signs the bins before they expire."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cycle_support import PRIMARY_ID, VIN, Vehicle
from keys_support import custody_backend

from director.image_repo import ImageRepository

pytestmark = pytest.mark.slow

MANY = 10_000
BIN_FILE = re.compile(r"/metadata/(\d+)\.(bin-[0-9a-f]{2})\.(json|der)$")


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def test_16_hash_bins_10000_images_in_256_bins_and_the_primary_fetches_only_its_bins(
    tmp_path: Path, now: datetime
) -> None:
    extra = [
        (f"pkg/{i // 100:03d}/part-{i:05d}.bin", b"part %05d" % i, ["other-hw"], 1)
        for i in range(MANY)
    ]
    backend = custody_backend(tmp_path / "oem", now, bits=8, extra=extra, expiry_days={"bin": 2})
    car = None
    try:
        repo = ImageRepository(backend.image_dir, now)
        b = repo.builder
        sr = b.targets.delegations.succinct_roles
        assert sr is not None and sr.bit_length == 8 and not b.targets.targets
        bins = [r for r in b.delegated if sr.is_bin_name(r)]
        assert len(bins) == 256
        listed = sum(len(b.role(r).targets) for r in bins)
        assert listed == MANY + 4
        assert len(b.snapshot.meta) == 257  # targets and every bin

        car = Vehicle(tmp_path / "car", backend, now, secondaries={"brk-1": "brk-v1"})
        backend.image_proxy.requests.clear()
        wanted = {"brk-1": "brakes/fw-2.bin", PRIMARY_ID: "gw/gw-2.bin"}
        backend.assign(VIN, list(wanted.items()))
        result = car.cycle()
        assert result.error is None, result.error
        assert result.installed == wanted
        fetched = {
            m.group(2)
            for _method, path, _range in backend.image_proxy.requests
            if (m := BIN_FILE.search(path.split("?")[0]))
        }
        assert fetched == {repo.bin_for(p) for p in wanted.values()}
        print(f"bins fetched by the Primary: {sorted(fetched)} of 256")

        # the bins are online roles: the service re-signs them before they expire
        version = b.role(bins[0]).version
        backend.advance(timedelta(days=1, hours=1))
        fresh = ImageRepository(backend.image_dir, backend.clock())
        assert fresh.builder.role(bins[0]).version > version
        assert fresh.builder.role(bins[0]).expires > backend.clock() + timedelta(hours=12)
    finally:
        if car is not None:
            car.close()
        backend.stop()
