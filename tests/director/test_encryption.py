"""The Director's side of encrypted images and deltas (issue 17), on SQLite and PostgreSQL:
ECU encryption keys in the inventory, the OEM's choice per assignment, per image and per
hardware id, each image encrypted once and served by the Director, the content key wrapped
to each ECU that uses encryption (bound to it), plain and encrypted ECUs in one vehicle,
and a delta only for an ECU whose reported image is its base."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from oem import IMAGES, Clock, image_of, make_director, make_image_repo, make_vehicle, manifest

from director import director_cli
from director.director import Director, Invalid
from director.image_repo import ImageRepository, default_offline_dir
from director.supplier import make_delta
from uptane.encryption import EncryptionPrivateKey, decrypt_image, transport_target
from uptane.limits import Limits
from uptane.manifest import InstalledImage
from uptane.metadata import JSON, TargetFile, decode

BRK = "brakes/fw-2.0.bin"
BRK_DATA = IMAGES[BRK][0]
TCU = "tcu/tcu-5.bin"


def _setup(tmp_path: Path, db_url: str, now, *, vins=("VIN0001",)):
    clock = Clock(now)
    image_dir = make_image_repo(tmp_path, now)
    director, token = make_director(tmp_path, image_dir, db_url, clock)
    cars, keys = {}, {}
    for vin in vins:
        v = make_vehicle(vin)
        specs = v.specs()
        for s in specs:
            keys[(vin, s.serial)] = EncryptionPrivateKey.generate()
            s.encryption_key = keys[(vin, s.serial)].public_key()
        director.register_vehicle(vin, specs)
        cars[vin] = v
    return director, image_dir, cars, keys, token


def _targets(d: Director, vin: str) -> dict[str, TargetFile]:
    data = d.metadata_file(vin, "targets.json")
    assert data is not None
    return decode(data, Limits.primary(), encoding=JSON, role_type="targets").signed.targets


def test_5_4_1_encryption_keys_are_registered_and_shown(tmp_path, db_url, now):
    d, _, _, keys, _ = _setup(tmp_path, db_url, now)
    try:
        brk = next(e for e in d.vehicle_status("VIN0001")["ecus"] if e["serial"].endswith("brk"))
        assert brk["encryption_key"] == keys[("VIN0001", "VIN0001-brk")].public_key().to_dict()
        new = EncryptionPrivateKey.generate().public_key()
        d.set_encryption_key("VIN0001", "VIN0001-brk", new)
        brk = next(e for e in d.vehicle_status("VIN0001")["ecus"] if e["serial"].endswith("brk"))
        assert brk["encryption_key"] == new.to_dict()
    finally:
        d.dispose()


def test_4_3_an_encrypted_entry_carries_both_lengths_and_hashes_and_opens_only_there(
    tmp_path, db_url, now
):
    d, _, _, keys, _ = _setup(tmp_path, db_url, now)
    try:
        vin = "VIN0001"
        d.assign(vin, [("VIN0001-brk", BRK), ("VIN0001-tcu", TCU)], encrypt={"VIN0001-brk": True})
        t = _targets(d, vin)
        brk, tcu = t[BRK], t[TCU]
        # the entry's own length and hashes are the plaintext's (the Image repository's)
        assert brk.length == len(BRK_DATA)
        assert brk.hashes["sha256"] == hashlib.sha256(BRK_DATA).hexdigest()
        assert brk.encrypted is not None and tcu.encrypted is None  # plain beside encrypted
        assert set(brk.encrypted.wrapped_keys) == {"VIN0001-brk"}
        # the ciphertext's, which the Director serves
        wire = transport_target(brk, "VIN0001-brk")
        path = d.ciphertext(wire.path)
        assert path is not None
        ct = path.read_bytes()
        assert len(ct) == wire.length and hashlib.sha256(ct).hexdigest() == wire.hashes["sha256"]
        assert BRK_DATA[:40] not in ct
        key = keys[(vin, "VIN0001-brk")]
        assert decrypt_image(brk, "VIN0001-brk", key, ct, Limits.primary()) == BRK_DATA
        assert d.ciphertext("../inventory.db") is None and d.ciphertext("x.enc") is None
    finally:
        d.dispose()


def test_each_image_is_encrypted_once_for_every_vehicle(tmp_path, db_url, now):
    d, _, _, keys, _ = _setup(tmp_path, db_url, now, vins=("VIN0001", "VIN0002"))
    try:
        for vin in ("VIN0001", "VIN0002"):
            d.assign(vin, [(f"{vin}-brk", BRK)], encrypt={f"{vin}-brk": True})
        one, two = _targets(d, "VIN0001")[BRK], _targets(d, "VIN0002")[BRK]
        assert one.encrypted and two.encrypted
        assert one.encrypted.filename == two.encrypted.filename
        assert len(list((d.dir / "ciphertexts").glob("*.enc"))) == 1
        # each vehicle's key wraps the one content key, for its own ECU only
        ct = d.ciphertext(one.encrypted.filename).read_bytes()  # type: ignore[union-attr]
        for vin, entry in (("VIN0001", one), ("VIN0002", two)):
            got = decrypt_image(entry, f"{vin}-brk", keys[(vin, f"{vin}-brk")], ct, Limits())
            assert got == BRK_DATA
    finally:
        d.dispose()


def test_rules_choose_encryption_per_image_and_per_hardware_id(tmp_path, db_url, now):
    d, _, _, _, _ = _setup(tmp_path, db_url, now, vins=("VIN0001", "VIN0002", "VIN0003"))
    try:
        d.set_encryption_rule("hardware", "brk-v1", True)
        d.assign("VIN0001", [("VIN0001-brk", BRK), ("VIN0001-tcu", TCU)])
        t = _targets(d, "VIN0001")
        assert t[BRK].encrypted is not None and t[TCU].encrypted is None
        d.set_encryption_rule("image", BRK, False)  # the image's rule comes first
        d.assign("VIN0002", [("VIN0002-brk", BRK)])
        assert _targets(d, "VIN0002")[BRK].encrypted is None
        # an assignment's own choice comes before both
        d.assign("VIN0003", [("VIN0003-brk", BRK)], encrypt={"VIN0003-brk": True})
        assert _targets(d, "VIN0003")[BRK].encrypted is not None
        assert {(r["scope"], r["value"], r["encrypt"]) for r in d.encryption_rules()} == {
            ("hardware", "brk-v1", True),
            ("image", BRK, False),
        }
        d.set_encryption_rule("image", BRK, None)
        assert [r["scope"] for r in d.encryption_rules()] == ["hardware"]
        with pytest.raises(Invalid):
            d.set_encryption_rule("planet", "x", True)
    finally:
        d.dispose()


def test_encryption_needs_the_ecus_key(tmp_path, db_url, now):
    d, _, _, _, _ = _setup(tmp_path, db_url, now, vins=())
    try:
        v = make_vehicle("VIN0009")
        d.register_vehicle("VIN0009", v.specs())  # no encryption keys
        with pytest.raises(Invalid, match="no encryption key registered"):
            d.assign("VIN0009", [("VIN0009-brk", BRK)], encrypt={"VIN0009-brk": True})
        assert d.list_assignments(vin="VIN0009") == []
    finally:
        d.dispose()


def _release_delta(image_dir: Path, now, base: str, new_path: str, new: bytes) -> str:
    repo = ImageRepository(image_dir, now)
    repo.stage_target(new_path, new, ["brk-v1"], 3)
    path, patch, section = make_delta(IMAGES[base][0], base, new, new_path)
    repo.stage_target(path, patch, ["brk-v1"], 3, custom={"delta": section.to_dict()})
    ImageRepository(image_dir, now, offline_dir=default_offline_dir(image_dir)).sign(now)
    return path


def test_a_delta_goes_only_to_an_ecu_whose_report_names_its_base(tmp_path, db_url, now):
    d, image_dir, cars, _, _ = _setup(tmp_path, db_url, now, vins=("VIN0001", "VIN0002"))
    try:
        new = BRK_DATA[:500] + b"brakes three" + BRK_DATA[512:]
        delta = _release_delta(image_dir, now, BRK, "brakes/fw-3.0.bin", new)
        d.image_view.refresh(force=True)
        # VIN0001's brake controller reports fw-2.0 (the delta's base); VIN0002's fw-1.0
        for vin, runs in (("VIN0001", BRK), ("VIN0002", "brakes/fw-1.0.bin")):
            v = cars[vin]
            d.process_manifest(vin, manifest(v, now, installed={f"{vin}-brk": image_of(runs)}))
        for vin in ("VIN0001", "VIN0002"):
            d.assign(vin, [(f"{vin}-brk", "brakes/fw-3.0.bin")], encrypt={f"{vin}-brk": True})
        one, two = _targets(d, "VIN0001"), _targets(d, "VIN0002")
        assert set(one) == {delta} and set(two) == {"brakes/fw-3.0.bin"}
        assert one[delta].delta is not None and one[delta].encrypted is not None
        assert one[delta].delta.target.hashes["sha256"] == hashlib.sha256(new).hexdigest()
        # once VIN0001 reports the full image, its assignment is installed
        v = cars["VIN0001"]
        digest = hashlib.sha256(new).hexdigest()
        full = InstalledImage("brakes/fw-3.0.bin", len(new), {"sha256": digest})
        d.process_manifest("VIN0001", manifest(v, now, installed={"VIN0001-brk": full}))
        states = {a["ecu"]: a["state"] for a in d.list_assignments(vin="VIN0001")}
        assert states["VIN0001-brk"] == "installed"
    finally:
        d.dispose()


def test_the_api_registers_keys_serves_ciphertexts_and_sets_rules(env, tmp_path):
    c, d = env["c"], env["director"]
    v = make_vehicle("VIN0001")
    body = v.api_body()
    key = EncryptionPrivateKey.generate()
    body["ecus"][1]["encryption_key"] = key.public_key().to_dict()
    assert c.post("/api/v1/vehicles", json=body).status_code == 201
    # a signing key is not an encryption key
    bad = v.api_body()
    bad["vin"] = "VIN0002"
    bad["ecus"][1]["encryption_key"] = v.keys["VIN0001-tcu"].key.to_dict()
    assert c.post("/api/v1/vehicles", json=bad).status_code == 422
    r = c.put(
        "/api/v1/encryption/rules", json={"scope": "hardware", "value": "brk-v1", "encrypt": True}
    )
    assert r.status_code == 200, r.text
    assert c.get("/api/v1/encryption/rules").json()[0]["value"] == "brk-v1"
    r = c.post(
        "/api/v1/vehicles/VIN0001/assignments",
        json={"assignments": [{"ecu": "VIN0001-brk", "target": BRK}]},
    )
    assert r.status_code == 201, r.text
    brk = _targets(d, "VIN0001")[BRK]
    assert brk.encrypted is not None
    raw = httpx.get(f"{env['url']}/vehicles/VIN0001/images/{brk.encrypted.filename}")
    assert raw.status_code == 200
    assert hashlib.sha256(raw.content).hexdigest() == brk.encrypted.hashes["sha256"]
    assert httpx.get(f"{env['url']}/vehicles/VIN0001/images/{'0' * 64}.enc").status_code == 404
    new = EncryptionPrivateKey.generate().public_key().to_dict()
    r = c.put("/api/v1/vehicles/VIN0001/ecus/VIN0001-brk/encryption-key", json=new)
    assert r.status_code == 200, r.text
    assert json.dumps(new, sort_keys=True) in json.dumps(r.json(), sort_keys=True)


def test_the_cli_registers_the_provisioning_output_and_assigns_encrypted(tmp_path, now):
    from secondary.cli import provision
    from uptane.keys import PrivateKey

    clock = Clock(now)
    image_dir = make_image_repo(tmp_path, now)
    d, _ = make_director(tmp_path, image_dir, f"sqlite:///{tmp_path / 'inv.db'}", clock)
    d.dispose()
    ddir = tmp_path / "director"
    public = provision(
        tmp_path / "ecu",
        ecu_serial="brk-9",
        hardware_id="brk-v1",
        director_root=(ddir / "root" / "1.root.der").read_bytes(),
        vehicle_id="VIN0042",
    )
    assert "encryption_key" in public
    gw = tmp_path / "gw.pem"
    gw.write_bytes(PrivateKey.generate().to_pem())
    ecus = [
        "--ecu",
        f"gw-9:gw-a:{gw}:primary",
        "--ecu",
        f"brk-9:brk-v1:{tmp_path / 'ecu' / 'ecu_key.pub.json'}",
    ]
    assert director_cli.main(["vehicle", "add", str(ddir), "VIN0042", *ecus]) == 0
    assert (
        director_cli.main(["assign", str(ddir), "VIN0042", f"brk-9={BRK}", "--encrypt", "brk-9"])
        == 0
    )
    d = Director(ddir)
    try:
        brk = next(e for e in d.vehicle_status("VIN0042")["ecus"] if e["serial"] == "brk-9")
        assert brk["encryption_key"] == public["encryption_key"]
        assert _targets(d, "VIN0042")[BRK].encrypted is not None
    finally:
        d.dispose()
