"""The Director's root in a threshold ceremony and its top-level targets signed by a
threshold of online keys (issue 16), through ``uptane-director``: a 2-of-3 root held by
three people, then targets 2-of-2 from the key source; a vehicle's trust follows both."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from oem import make_image_repo, make_vehicle

from director import director_cli
from director.director import Director, default_offline_dir
from uptane.limits import Limits
from uptane.metadata import JSON
from uptane.trust import RepositoryTrust

PASS_ENV = "DIRECTOR_CEREMONY_PASSPHRASE"


class VehicleSource:
    """A vehicle's view of the Director's metadata, through the service layer."""

    def __init__(self, d: Director, vin: str) -> None:
        self.d, self.vin = d, vin

    def fetch_metadata(self, role: str, version: int | None, max_bytes: int) -> bytes | None:
        name = f"{role}.{JSON}" if version is None else f"{version}.{role}.{JSON}"
        return self.d.metadata_file(self.vin, name)


def cli(*args: object) -> int:
    return director_cli.main([str(a) for a in args])


def test_16_director_root_2_of_3_in_a_ceremony_and_targets_2_of_2_online(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(PASS_ENV, "root holder")
    now = datetime.now(UTC).replace(microsecond=0)
    image_dir = make_image_repo(tmp_path, now)
    ddir = tmp_path / "director"
    root1 = (image_dir / "metadata" / "1.root.json").read_bytes()
    Director.init(ddir, str(image_dir / "metadata"), root1)
    d = Director(ddir)
    v = make_vehicle("VIN-CER-0001")
    d.register_vehicle(v.vin, v.specs())
    trust = RepositoryTrust(
        "director", (ddir / "root" / "1.root.json").read_bytes(), Limits(), vehicle_id=v.vin
    )
    src = VehicleSource(d, v.vin)
    trust.refresh(src, now)
    holders = {}
    for name in ("ana", "ben", "cem"):
        key = tmp_path / name / f"{name}.pem"
        assert cli("keygen", key, "--passphrase-env", PASS_ENV) == 0
        holders[name] = key
    old = json.loads((ddir / "root" / "1.root.json").read_bytes())["signed"]["roles"]["root"]
    pending = tmp_path / "root-2.json"
    argv = ["ceremony", "start", ddir, "--out", pending, "--threshold", "root:2"]
    argv += ["--remove-key", f"root:{old['keyids'][0]}"]
    for key in holders.values():
        argv += ["--add-key", f"root:{key.with_name(key.stem + '.pub.json')}"]
    assert cli(*argv) == 0

    def sign(key: Path) -> None:
        assert cli("ceremony", "sign", pending, "--key", key, "--passphrase-env", PASS_ENV) == 0

    sign(default_offline_dir(ddir) / "root.pem")
    sign(holders["ana"])
    assert cli("ceremony", "status", pending) == 3
    assert cli("ceremony", "publish", ddir, pending) == 2
    assert "below threshold" in capsys.readouterr().err
    sign(holders["cem"])
    assert cli("ceremony", "publish", ddir, pending) == 0
    d.watch()  # what the running service does twice a second
    trust.refresh(src, datetime.now(UTC))
    assert trust.root.signed.version == 2
    assert trust.root.signed.roles["root"].threshold == 2

    # the OEM no longer holds a root key: rotating the online targets keys to two keys
    # signing together needs two of the three holders
    capsys.readouterr()
    assert cli("rotate-key", ddir, "targets", "--count", "2", "--threshold", "2") == 0
    out = capsys.readouterr().out
    assert "waits for signatures" in out
    pending = ddir / "ceremony" / "root-v3.pending.json"
    sign(holders["ben"])
    sign(holders["cem"])
    assert cli("ceremony", "publish", ddir, pending) == 0
    d.watch()
    trust.refresh(src, datetime.now(UTC))
    root = trust.root.signed
    assert root.version == 3 and root.roles["targets"].threshold == 2
    assert len(root.roles["targets"].keyids) == 2
    assert {s.keyid for s in trust.targets.signatures} == set(root.roles["targets"].keyids)
    d.dispose()
