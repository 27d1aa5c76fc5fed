"""ECU keys inside a PKCS#11 token (issue 16): the Primary and a Secondary sign their
version reports and manifests inside a real SoftHSM2 token, and the key never leaves it.

- ``uptane-primary provision`` with ``primary.key = "pkcs11:..."`` makes the key in the
  token (no key file is written), prints its public key, and the Primary's manifest
  signature verifies against it;
- ``uptane-secondary provision --key pkcs11:...`` does the same for a Secondary, and the
  agent's signed version report verifies with the registered public key;
- an encrypted key file works the same way, its passphrase from the environment.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from keys_support import PIN_ENV, fresh_token, holding, private_key_markers, token_uri
from test_agent_support import Director, provision_ecu

from keystore import encrypt_pkcs8
from primary.agent import Primary
from primary.cli import main as cli_main
from primary.config import load_config
from secondary.agent import SecondaryAgent
from secondary.cli import provision
from secondary.config import SecondaryConfig
from uptane.keys import Key, PrivateKey
from uptane.limits import PRIMARY
from uptane.manifest import build_vehicle_manifest, decode_report
from uptane.metadata import DER
from uptane.repository import RepositoryBuilder

PRIMARY_TOML = """
[vehicle]
vin = "VIN-TOKEN"

[primary]
ecu_serial = "gw-1"
hardware_id = "gw-v1"
key_file = "keys/unused.pem"
{key}

[director]
url = "http://127.0.0.1:8001/"

[image_repository]
url = "http://127.0.0.1:8002"

[storage]
dir = "state"
"""


def _roots(tmp: Path) -> list[str]:
    now = datetime.now(UTC)
    out = []
    for name in ("director", "image"):
        b = RepositoryBuilder(name, {"root": [PrivateKey.generate()]}, now)
        (tmp / f"{name}.json").write_bytes(b.trusted_root())
        out += [f"--{name}-root", str(tmp / f"{name}.json")]
    return out


def test_16_the_primary_signs_inside_the_token(tmp_path: Path, capsys) -> None:
    uri = token_uri(fresh_token(), "primary-ecu")
    cfg_path = tmp_path / "primary.toml"
    key_lines = f'key = "{uri}"\nkey_pin_env = "{PIN_ENV}"'
    cfg_path.write_text(PRIMARY_TOML.format(key=key_lines))
    assert cli_main(["provision", "--config", str(cfg_path), *_roots(tmp_path)]) == 0
    public = Key.from_dict(json.loads(capsys.readouterr().out.strip().splitlines()[-1]), PRIMARY)
    assert not (tmp_path / "keys").exists()  # no key file: the key is in the token
    assert private_key_markers(tmp_path) == []
    # provisioning again keeps the same key
    assert cli_main(["provision", "--config", str(cfg_path), *_roots(tmp_path), "--force"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again == public.to_dict()
    primary = Primary(load_config(cfg_path))
    assert primary.key.key.keyid == public.keyid
    vvm = build_vehicle_manifest("VIN-TOKEN", "gw-1", [], primary.key)
    vvm.verify(public)  # the token's signature, checked with the registered public key


def test_16_a_secondary_signs_its_reports_inside_the_token(tmp_path: Path) -> None:
    uri = token_uri(fresh_token(), "brake-ecu")
    director = Director(datetime.now(UTC))
    public = provision(
        tmp_path / "ecu",
        ecu_serial="brk-1",
        hardware_id="brk-v1",
        director_root=director.root,
        vehicle_id="VIN-TOKEN",
        key_uri=uri,
        key_pin_env=PIN_ENV,
    )
    assert not (tmp_path / "ecu" / "ecu_key.pem").exists()
    registered = Key.from_dict(public["public_key"], PRIMARY)
    cfg = SecondaryConfig.load(tmp_path / "ecu" / "secondary.toml")
    assert cfg.key_uri == uri and cfg.key_pin_env == PIN_ENV
    agent = SecondaryAgent.from_config(cfg)
    agent.start()
    report = decode_report(agent.report(b"n" * 16), PRIMARY, DER)
    report.verify(registered)
    # the only private key on disk is the ECU's separate encryption key (issue 17)
    assert private_key_markers(tmp_path) == ["ecu/encryption_key.pem"]


def test_16_an_encrypted_key_file_opens_with_its_passphrase_from_the_environment(
    tmp_path: Path, monkeypatch
) -> None:
    director = Director(datetime.now(UTC))
    cfg = provision_ecu(tmp_path, director)
    key = PrivateKey.from_pem(cfg.key_file.read_bytes())
    cfg.key_file.write_bytes(encrypt_pkcs8(key, b"correct horse"))
    cfg.key_passphrase_env = "ECU_KEY_PASSPHRASE"
    monkeypatch.setenv("ECU_KEY_PASSPHRASE", "correct horse")
    agent = SecondaryAgent.from_config(cfg)
    agent.start()
    decode_report(agent.report(b"n" * 16), PRIMARY, DER).verify(key.key)
    # the signing key is on disk only encrypted
    assert b"ENCRYPTED PRIVATE KEY" in cfg.key_file.read_bytes()
    assert holding(tmp_path, [key.to_pem()]) == []
