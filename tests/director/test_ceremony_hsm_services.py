"""Both services' online keys in SoftHSM2 tokens, with the services as real processes
(``uptane-image-repo serve``, ``uptane-director serve``) set up by their own ``init
--online-token``; a Primary completes an update through them, and a vehicle whose ECU
keys are in a token has its signed manifest accepted (issue 16). Nothing private is in
either service's directory."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from cycle_support import IMAGES, VIN, Vehicle
from keys_support import PIN_ENV, fresh_token, private_key_markers, token_uri
from oem import make_vehicle, manifest
from services import Service

from director import director_cli, image_cli
from director.director import EcuSpec
from director.image_repo import ImageRepository, default_offline_dir
from keystore import Pkcs11KeySource, Secret, generate_in_token

pytestmark = pytest.mark.slow


class Remote:
    """The two service processes as the Vehicle of tests/primary/cycle_support.py sees a
    backend: their URLs, their first roots, registration and assignment by the API."""

    def __init__(self, images: Service, director: Service, image_dir: Path, ddir: Path, token: str):
        self.image_proxy = SimpleNamespace(url=images.url)
        self.director_proxy = SimpleNamespace(url=director.url)
        self.image_dir, self.ddir = image_dir, ddir
        self.api = httpx.Client(
            base_url=director.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def image_root(self, encoding: str = "json") -> bytes:
        return (self.image_dir / "metadata" / f"1.root.{encoding}").read_bytes()

    def director_root(self, encoding: str = "json") -> bytes:
        return (self.ddir / "root" / f"1.root.{encoding}").read_bytes()

    def register(self, vin: str, ecus: list[EcuSpec]) -> None:
        body = {
            "vin": vin,
            "ecus": [
                {"serial": e.serial, "hardware_id": e.hardware_id,
                 "public_key": e.public_key.to_dict(), "primary": e.primary}
                for e in ecus
            ],
        }  # fmt: skip
        r = self.api.post("/api/vehicles", json=body)
        assert r.status_code == 201, r.text

    def assign(self, vin: str, items: list[tuple[str, str]]) -> Any:
        body = {"assignments": [{"ecu": e, "target": t} for e, t in items]}
        return self.api.post(f"/api/vehicles/{vin}/assignments", json=body)


def test_16_both_services_sign_with_keys_in_tokens_and_a_primary_updates(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    image_tok, director_tok, ecu_tok = fresh_token(), fresh_token(), fresh_token()
    image_dir, ddir = tmp_path / "image-repo", tmp_path / "director"
    hsm = ["--pin-env", PIN_ENV]
    assert (
        image_cli.main(["init", str(image_dir), "--online-token", token_uri(image_tok), *hsm]) == 0
    )
    repo = ImageRepository(image_dir, now, offline_dir=default_offline_dir(image_dir))
    repo.stage_targets([(p, d, hw, rc) for p, (d, hw, rc) in IMAGES.items()])
    repo.sign(now)
    images = Service("director.image_cli", image_dir, tmp_path / "image.log")
    director = None
    car = None
    try:
        argv = ["init", str(ddir), "--image-repo", images.url, "--online-token"]
        argv += [token_uri(director_tok), *hsm, "--image-root"]
        argv += [str(image_dir / "metadata" / "1.root.json")]
        capsys.readouterr()
        assert director_cli.main(argv) == 0
        token = capsys.readouterr().out.strip().splitlines()[-1]
        director = Service("director.director_cli", ddir, tmp_path / "director.log")
        assert "PKCS#11 token" in images.text() and "PKCS#11 token" in director.text()
        assert private_key_markers(image_dir) == [] and private_key_markers(ddir) == []
        remote = Remote(images, director, image_dir, ddir, token)

        car = Vehicle(tmp_path / "car", remote, now, secondaries={"brk-1": "brk-v1"})
        assert remote.assign(VIN, [("brk-1", "brakes/fw-2.bin")]).status_code == 201
        result = car.cycle()
        assert result.error is None, result.error
        assert result.installed == {"brk-1": "brakes/fw-2.bin"}

        # a vehicle whose ECU keys are made in (and never leave) a token: the Director
        # accepts the manifest its Primary signs there
        v = make_vehicle("VIN-HSM-0002", {"gw-hsm": "gw-v1", "brk-hsm": "brk-v1"})
        src = Pkcs11KeySource(token_uri(ecu_tok), pin=Secret("pin", PIN_ENV))
        for serial in v.keys:
            generate_in_token(token_uri(ecu_tok, serial), "ecdsa-sha2-nistp256", pin_env=PIN_ENV)
            v.keys[serial] = src.signers(serial)[0]  # type: ignore[assignment]
        assert remote.api.post("/api/vehicles", json=v.api_body()).status_code == 201
        r = remote.api.post(
            f"/vehicles/{v.vin}/manifest",
            content=manifest(v, datetime.now(UTC).replace(microsecond=0)),
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 200 and r.json()["accepted"], r.text
    finally:
        if car is not None:
            car.close()
        if director is not None:
            director.stop()
        images.stop()
