"""Rotation of every role of both repositories (issue 16), in turn, with a fleet cycling:
after each rotation every vehicle completes its next cycle with no manual step, trusting
the new root and the roles re-signed with the new keys (§5.4.4.3: root first, then each
role checked against the keys the new root lists). One vehicle's Secondary verifies in
full, so it follows the Image repository's rotations itself too."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import cycle_support
import pytest
from cycle_support import Vehicle
from keys_support import custody_backend, fresh_token, key_source_spec

from director import director_cli, image_cli
from director.image_repo import ImageRepository, default_offline_dir
from uptane.metadata import KEYID_HINT_HEX

pytestmark = pytest.mark.slow

FLEET = [("VIN-ROT-1", "brk-1", "partial"), ("VIN-ROT-2", "brk-2", "full")]


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _signed_by(md, keyids: list[str]) -> bool:  # type: ignore[no-untyped-def]
    """Every signature of ``md`` is by one of ``keyids`` (a DER hint names a prefix)."""
    return all(any(k.startswith(s.keyid[:KEYID_HINT_HEX]) for k in keyids) for s in md.signatures)


def _check(car, repo: str, role: str) -> int:  # type: ignore[no-untyped-def]
    """The vehicle trusts ``role`` of ``repo`` as signed by the keys its trusted root
    lists now; returns that root's version."""
    director, image = car.primary().load_trust()
    trust = director if repo == "director" else image
    root = trust.root.signed
    md = trust.root if role == "root" else getattr(trust, role)
    assert md is not None, (repo, role)
    if role == "root":  # signed by the old root keys and the new ones (§5.4.4.3)
        new = root.roles["root"].keyids
        assert any(k.startswith(s.keyid[:KEYID_HINT_HEX]) for s in md.signatures for k in new)
    else:
        assert _signed_by(md, root.roles[role].keyids), (repo, role)
    return int(root.version)


def test_16_every_role_of_both_repositories_rotated_in_turn_while_the_fleet_cycles(
    tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = custody_backend(tmp_path / "oem", now, image_keys=key_source_spec(fresh_token()))
    cars = []
    releases = [(f"brakes/fw-{n}.bin", bytes([n]) * 3000 + b"brakes", n) for n in range(10, 19)]
    repo = ImageRepository(
        backend.image_dir, now, offline_dir=default_offline_dir(backend.image_dir)
    )
    for path, data, counter in releases:
        repo.stage_target(path, data, ["brk-v1"], counter)
    repo.sign(now)
    try:
        for i, (vin, serial, mode) in enumerate(FLEET):
            monkeypatch.setattr(cycle_support, "VIN", vin)
            car = Vehicle(
                tmp_path / f"car{i}", backend, now, secondaries={serial: "brk-v1"},
                modes={serial: mode},
            )  # fmt: skip
            cars.append((vin, serial, car))
        roots = {"image": 1, "director": 1}
        for step, (repo, role) in enumerate(
            [
                ("image", "timestamp"),
                ("image", "snapshot"),
                ("image", "targets"),
                ("image", "root"),
                ("director", "timestamp"),
                ("director", "snapshot"),
                ("director", "targets"),
                ("director", "root"),
            ]
        ):
            if repo == "image":
                assert image_cli.main(["rotate", str(backend.image_dir), role]) == 0
            else:
                argv = ["rotate-key", str(backend.director_dir), role]
                assert director_cli.main(argv) == 0
                backend.director.watch()  # what the service does twice a second
            roots[repo] += 1
            # each cycle installs a new release, so both repositories are verified in full
            path = releases[step][0]
            for vin, serial, car in cars:
                backend.assign(vin, [(serial, path)])
                result = car.cycle()
                assert result.error is None, (repo, role, vin, result.error)
                assert result.installed == {serial: path}, (repo, role, vin)
                assert _check(car, repo, role) == roots[repo], (repo, role, vin)
                assert car.installed(serial) == path
    finally:
        for _vin, _serial, car in cars:
            car.close()
        backend.stop()
