"""TAP 4 on the Primary with three real repositories (issue 13): the Director, the OEM's
Image repository and a supplier's repository, each a real service on 127.0.0.1 behind a
proxy. The map file needs the supplier AND the Image repository to agree on every brakes
image (a rule that requires two of them), and the Image repository alone for the rest.

Also: a repository that serves its trusted timestamp version with other contents is kept
as trusted, with a warning line and no attack indicator (TUF 5.4.3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cycle_support import (
    IMAGES,
    PRIMARY_ID,
    VIN,
    Backend,
    Clock,
    Proxy,
    Uvicorn,
    Vehicle,
    backend_and_vehicle,
)

from director.image_repo import ImageRepository, default_offline_dir
from director.image_server import create_app as image_app
from primary.cli import main as cli_main
from primary.state import PrimaryState
from uptane.errors import ArbitrarySoftwareAttack
from uptane.limits import Limits
from uptane.metadata import Metadata, decode

BRAKES, BRAKES_3, TCU = "brakes/fw-2.bin", "brakes/fw-3.bin", "tcu/tcu-5.bin"
ONE = {"brk-1": "brk-v1"}

MAP = {
    "repositories": {"director": [], "image": [], "supplier": []},
    "mapping": [
        # brakes images: the supplier and the OEM's Image repository must both agree with
        # the Director (the supplier first: images are downloaded from it)
        {
            "paths": ["brakes/*"],
            "repositories": ["supplier", "image"],
            "threshold": 2,
            "terminating": True,
        },
        {"paths": ["*"], "repositories": ["director", "image"], "threshold": 2},
    ],
}


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Supplier:
    """A supplier's repository: the Image repository service over its own directory."""

    def __init__(self, root: Path, now: datetime, clock: Clock, paths: list[str]) -> None:
        self.dir, self.now = root, now
        self.offline = default_offline_dir(root)
        ImageRepository.init(root, self.offline, now)
        self.publish(paths)
        self.server = Uvicorn(image_app(root, clock=clock, refresh_interval=0.2))
        self.proxy = Proxy(self.server.url)

    def publish(self, paths: list[str]) -> None:
        repo = ImageRepository(self.dir, self.now)
        for path in paths:
            data, hw, rc = IMAGES[path]
            repo.stage_target(path, data, hw, rc)
        ImageRepository(self.dir, self.now, offline_dir=self.offline).sign(self.now)

    def tick(self) -> None:
        self.server.server.config.app.state.service.tick()

    def root(self) -> bytes:
        return (self.dir / "metadata" / "1.root.json").read_bytes()

    def stop(self) -> None:
        self.proxy.stop()
        self.server.stop()


def three_repositories(tmp: Path, now: datetime, backend: Backend, supplier: Supplier) -> Vehicle:
    (tmp / "car").mkdir(parents=True)
    (tmp / "car" / "map.json").write_text(json.dumps(MAP))
    extra = f'\n[[repositories]]\nname = "supplier"\nurl = "{supplier.proxy.url}"\n'
    return Vehicle(
        tmp / "car",
        backend,
        now,
        extra_config=extra,
        roots={"supplier": supplier.root()},
        map_file="map.json",
    )


def test_tap4_three_repositories_a_rule_needs_two_of_them_to_agree(tmp_path, now, capsys):
    backend = Backend(tmp_path / "oem", now)
    supplier = Supplier(tmp_path / "supplier", now, backend.clock, [BRAKES])
    car = None
    try:
        car = three_repositories(tmp_path, now, backend, supplier)
        assert [r.name for r in car.config.repositories] == ["supplier"]
        # both the supplier and the Image repository list the brakes image: installed,
        # downloaded from the supplier; the TCU's image needs the Image repository only
        backend.assign(VIN, [("brk-1", BRAKES), ("tcu-1", TCU)])
        first = car.cycle()
        assert first.error is None, "\n".join(car.lines)
        assert first.installed == {"brk-1": BRAKES, "tcu-1": TCU}
        text = "\n".join(car.lines)
        assert "repository supplier metadata verified" in text
        assert "Image repository metadata verified" in text
        assert any(p.endswith("fw-2.bin") for _m, p, _r in supplier.proxy.requests)
        assert not any(p.endswith("fw-2.bin") for _m, p, _r in backend.image_proxy.requests)
        state = PrimaryState(car.config.storage_dir, car.config.limits)
        assert "timestamp" in state.read_metadata("supplier")  # trusted, stored
        assert cli_main(["status", "--config", str(car.config_path)]) == 0
        assert "supplier: root v1, timestamp v" in capsys.readouterr().out

        # the Image repository lists brakes fw-3, the supplier does not (yet): the rule's
        # two repositories do not agree, nothing is installed, the error is named
        backend.assign(VIN, [("brk-1", BRAKES_3)])
        refused = car.cycle()
        assert isinstance(refused.error, ArbitrarySoftwareAttack), refused.error
        assert refused.installed == {} and car.installed("brk-1") == BRAKES

        # the supplier signs it: the next cycle installs it
        supplier.publish([BRAKES, BRAKES_3])
        supplier.tick()
        later = car.cycle()
        assert later.error is None, "\n".join(car.lines)
        assert later.installed == {"brk-1": BRAKES_3}
    finally:
        if car is not None:
            car.close()
        supplier.stop()
        backend.stop()


def test_a_third_repository_that_is_down_fails_only_the_images_that_need_it(tmp_path, now):
    """The supplier's service is down: the TCU's image (the Image repository's rule) still
    installs in the same cycle; the brakes image waits until the supplier is back."""
    backend = Backend(tmp_path / "oem", now)
    supplier = Supplier(tmp_path / "supplier", now, backend.clock, [BRAKES])
    car = None
    try:
        car = three_repositories(tmp_path, now, backend, supplier)
        supplier.proxy.rules.down = True
        backend.assign(VIN, [("tcu-1", TCU)])
        only_tcu = car.cycle()
        assert only_tcu.error is None, "\n".join(car.lines)
        assert only_tcu.installed == {"tcu-1": TCU}
        assert "repository supplier: refused" in "\n".join(car.lines)
        # an outage is not an attack: nothing to report
        assert PrimaryState(car.config.storage_dir, car.config.limits).load_cycle().attacks == []
        backend.assign(VIN, [("brk-1", BRAKES)])
        assert car.cycle().error is not None and car.installed("brk-1") is None
        supplier.proxy.reset()
        assert car.cycle().installed == {"brk-1": BRAKES}
    finally:
        if car is not None:
            car.close()
        supplier.stop()
        backend.stop()


def test_timestamp_of_the_trusted_version_with_other_contents_is_a_warning(tmp_path, now):
    """TUF 5.4.3: an equal timestamp version is no update; the trusted one is kept, the
    refresh goes on, the cycle logs a warning line and reports no attack."""
    with backend_and_vehicle(tmp_path, now, secondaries=ONE) as (backend, car):
        backend.assign(VIN, [(PRIMARY_ID, "gw/gw-2.bin")])
        assert car.cycle().installed == {PRIMARY_ID: "gw/gw-2.bin"}  # both refreshed
        signer = ImageRepository(backend.image_dir, now)._signers()["timestamp"][0]

        def resign(data: bytes) -> bytes:
            signed = decode(data, Limits.primary(), role_type="timestamp").signed
            signed.expires += timedelta(seconds=1)  # same version, other signed part
            md = Metadata(signed)
            md.sign(signer)
            return md.to_bytes()

        backend.image_proxy.rules.tamper["timestamp.json"] = resign
        # a new Director targets: the Image repository is refreshed again
        backend.assign(VIN, [(PRIMARY_ID, "gw/gw-2.bin"), ("brk-1", BRAKES)])
        car.lines.clear()
        result = car.cycle()
        assert result.error is None, "\n".join(car.lines)
        assert result.installed == {"brk-1": BRAKES}
        warnings = [line for line in car.lines if line.startswith("warning: image:")]
        assert len(warnings) == 1 and "the trusted one is kept" in warnings[0], car.lines
        record = PrimaryState(car.config.storage_dir, car.config.limits).load_cycle()
        assert record.attacks == [] and result.attacks == []
