"""Suppliers hold their own keys, and revocation works at the vehicle (issue 16):
removing a key from a supplier's delegation, or the whole delegation, makes the Primary
and a full-verification Secondary refuse that supplier's next metadata (signed by the
revoked key, or from the revoked role), while the repository refuses its uploads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import cycle_support
import pytest
from cycle_support import Vehicle
from keys_support import custody_backend
from test_agent_support import ECU, HW, NOW, VIN, Director, client_for, snapshot

from director import image_delegations as delegations
from director.image_repo import Forbidden, ImageRepository, default_offline_dir
from director.supplier import release
from hardware import bench
from secondary.agent import SecondaryAgent
from secondary.cli import provision
from secondary.config import SecondaryConfig
from uptane.errors import TargetNotFound, ThresholdNotMet, UptaneError
from uptane.keys import PrivateKey
from uptane.metadata import DER, Metadata, TargetFile, Targets

#: two vehicles see a key revoked, two others the whole role; one of each pair verifies
#: in full on its Secondary
FLEET = [
    ("VIN-REV-1", "brk-1", "partial"),
    ("VIN-REV-2", "brk-2", "full"),
    ("VIN-REV-3", "brk-3", "partial"),
    ("VIN-REV-4", "brk-4", "full"),
]


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _fw(n: int) -> tuple[str, bytes]:
    return f"acme/brk-{n}.bin", bytes([n]) * 2500 + b"acme brakes"


def test_16_revoked_supplier_key_and_role_are_refused_at_the_primary(
    tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = custody_backend(tmp_path / "oem", now)
    k1, k2 = PrivateKey.generate(), PrivateKey.generate()  # the supplier's, on its side
    oem = ImageRepository(
        backend.image_dir, now, offline_dir=default_offline_dir(backend.image_dir)
    )
    _out, tokens = oem.delegate("acme", ["acme/*"], ["brk-v1"], now, keys=[k1.key, k2.key])
    url, token = backend.image_server.url, tokens["acme"]

    def supplier(key: PrivateKey, n: int) -> None:
        path, data = _fw(n)
        release(url, token, "acme", key, path, data, ["brk-v1"], n, now)

    cars = []
    try:
        for i, (vin, serial, mode) in enumerate(FLEET):
            monkeypatch.setattr(cycle_support, "VIN", vin)
            car = Vehicle(
                tmp_path / f"car{i}", backend, now, secondaries={serial: "brk-v1"},
                modes={serial: mode},
            )  # fmt: skip
            cars.append((vin, serial, car))

        def cycle_all(
            fleet: list, path: str, *, installs: bool, assign: bool = True
        ) -> list[UptaneError | None]:
            errors = []
            for vin, serial, car in fleet:
                if assign:
                    backend.assign(vin, [(serial, path)])
                result = car.cycle()
                if installs:
                    assert result.error is None, (vin, result.error)
                    assert car.installed(serial) == path
                else:
                    assert result.error is not None and car.installed(serial) != path, vin
                errors.append(result.error)
            return errors

        first, second = cars[:2], cars[2:]
        supplier(k1, 20)
        cycle_all(cars, _fw(20)[0], installs=True)
        # the supplier releases with k1 and the Director assigns it; then k1 is revoked
        supplier(k1, 21)
        for vin, serial, _car in first:
            backend.assign(vin, [(serial, _fw(21)[0])])
        delegations.change_keys(
            ImageRepository(
                backend.image_dir, now, offline_dir=default_offline_dir(backend.image_dir)
            ),
            now,
            "acme",
            remove=[k1.key.keyid],
        )
        for err in cycle_all(first, _fw(21)[0], installs=False, assign=False):
            assert "acme" in str(err) and "signature" in str(err).lower(), err
        # the repository refuses the supplier's next upload signed by k1, takes k2's
        with pytest.raises(ValueError, match="403"):
            supplier(k1, 22)
        supplier(k2, 23)
        cycle_all(second, _fw(23)[0], installs=True)
        # a release signed with k2 is assigned, then the whole delegation is revoked
        supplier(k2, 24)
        for vin, serial, _car in second:
            backend.assign(vin, [(serial, _fw(24)[0])])
        delegations.revoke(
            ImageRepository(
                backend.image_dir, now, offline_dir=default_offline_dir(backend.image_dir)
            ),
            now,
            "acme",
        )
        for err in cycle_all(second, _fw(24)[0], installs=False, assign=False):
            assert isinstance(err, TargetNotFound), err
        with pytest.raises(ValueError, match="not delegated"):
            supplier(k2, 25)
    finally:
        for _vin, _serial, car in cars:
            car.close()
        backend.stop()


# --- at a full-verification Secondary (the bench tool's delivery, tests/secondary) --------


def _send(tmp: Path, director: Director, repo: ImageRepository, agent, path: str, data: bytes):  # type: ignore[no-untyped-def]
    """Deliver both repositories' metadata (as the repository publishes it now) and the
    image to the Secondary, as a Primary does."""
    meta = tmp / f"meta-{path.replace('/', '_')}-{repo.builder.targets.version}"
    for name, builder in (("director", director.builder), ("image", repo.builder)):
        (meta / name).mkdir(parents=True)
        for fname, content in builder.versioned_files(DER).items():
            (meta / name / fname).write_bytes(content)
    (tmp / "img.bin").write_bytes(data)
    return bench.install(
        client_for(agent),
        bench.load_metadata(meta),
        tmp / "img.bin",
        now=int((NOW + timedelta(hours=1)).timestamp()),
        filename=path,
    )


def _compromised_install(repo: ImageRepository, key: PrivateKey, n: int, version: int) -> None:
    """A repository whose online keys an attacker holds publishes the supplier's next
    metadata, signed with the revoked key, without the service's checks."""
    path, data = _fw(n)
    tf = TargetFile.from_data(
        path, data, ("sha256", "sha512"), hardware_ids=[HW], release_counter=n
    )
    repo.store_image(data)
    model = Targets(version=version, expires=NOW + timedelta(days=30))
    model.targets[path] = tf
    files = {}
    for enc in repo.builder.encodings:
        md = Metadata(model, encoding=enc)
        md.sign(key)
        files[enc] = md.to_bytes()
    with repo.mutation(NOW) as b:
        b.install_signed("acme", model, files, parent="targets")
        b.publish(NOW)


def test_16_revocation_is_refused_at_a_full_verification_secondary(tmp_path: Path) -> None:
    image_dir = tmp_path / "image-repo"
    ImageRepository.init(image_dir, default_offline_dir(image_dir), NOW)
    repo = ImageRepository(image_dir, NOW, offline_dir=default_offline_dir(image_dir))
    k1, k2 = PrivateKey.generate(), PrivateKey.generate()
    repo.delegate("acme", ["acme/*"], [HW], NOW, keys=[k1.key, k2.key])
    director = Director()
    provision(
        tmp_path / "ecu",
        ecu_serial=ECU,
        hardware_id=HW,
        director_root=director.root,
        vehicle_id=VIN,
        mode="full",
        image_root=repo.builder.trusted_root(DER),
        slot_size=64 * 1024,
        now=NOW.timestamp(),
    )
    agent = SecondaryAgent.from_config(SecondaryConfig.load(tmp_path / "ecu" / "secondary.toml"))
    agent.start()

    def supplier_upload(key: PrivateKey, n: int, version: int) -> None:
        path, data = _fw(n)
        tf = repo.upload_image("acme", path, data)
        tf.hardware_ids, tf.release_counter = [HW], n
        model = Targets(version=version, expires=NOW + timedelta(days=30))
        model.targets[path] = tf
        for enc in repo.builder.encodings:
            md = Metadata(model, encoding=enc)
            md.sign(key)
            repo.upload_metadata("acme", "acme", md.to_bytes(), enc, NOW)

    supplier_upload(k1, 20, 1)
    director.assign(_fw(20)[1], _fw(20)[0], ecu=ECU, hw=HW, release_counter=20)
    assert _send(tmp_path, director, repo, agent, *_fw(20))["installed"] == _fw(20)[0]

    # k1 revoked: the repository refuses its next upload; a compromised repository that
    # serves it anyway is refused by the ECU itself
    delegations.change_keys(repo, NOW, "acme", remove=[k1.key.keyid])
    with pytest.raises(Forbidden):
        supplier_upload(k1, 21, 2)
    _compromised_install(repo, k1, 21, 2)
    director.assign(_fw(21)[1], _fw(21)[0], ecu=ECU, hw=HW, release_counter=21)
    before = snapshot(agent)
    with pytest.raises(ThresholdNotMet, match="valid signature"):
        _send(tmp_path, director, repo, agent, *_fw(21))
    assert snapshot(agent) == before

    # the whole role revoked: its metadata, signed by a key it still lists, finds nothing
    supplier_upload(k2, 22, 3)
    delegations.revoke(repo, NOW, "acme")
    director.assign(_fw(22)[1], _fw(22)[0], ecu=ECU, hw=HW, release_counter=22)
    with pytest.raises(TargetNotFound):
        _send(tmp_path, director, repo, agent, *_fw(22))
    assert snapshot(agent) == before
