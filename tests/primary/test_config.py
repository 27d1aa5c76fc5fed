"""The Primary's TOML configuration and ``uptane-primary provision``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from primary.cli import main as cli_main
from primary.config import ConfigError, load_config
from primary.state import PrimaryState
from uptane.errors import UptaneError
from uptane.keys import ECDSA, PrivateKey
from uptane.limits import Limits
from uptane.metadata import MapFile
from uptane.repository import RepositoryBuilder

BASE = """
[vehicle]
vin = "VIN1"

[primary]
ecu_serial = "gw-1"
hardware_id = "gw-v1"
key_file = "keys/gw.pem"

[director]
url = "http://127.0.0.1:8001/"

[image_repository]
url = "http://127.0.0.1:8002"

[storage]
dir = "state"
poll_interval = 60
limits = "primary"
"""

SERIAL = """
[[secondaries]]
serial = "brk-1"
hardware_id = "brk-v1"
public_key = "keys/brk.pub"
link = { type = "serial", port = "/dev/ttyUSB0", baudrate = 57600 }
"""

CAN = """
[[secondaries]]
serial = "tcu-1"
hardware_id = "tcu-v5"
public_key = "keys/tcu.pub"
mode = "full"
encoding = "json"
link = { type = "can", channel = "vcan0", interface = "virtual", tx_id = 0x7E0, rx_id = 0x7E8 }
timeout = 0.5
retries = 4
"""


def write(tmp: Path, text: str) -> Path:
    keys = tmp / "keys"
    keys.mkdir(exist_ok=True)
    k = PrivateKey.generate()
    (keys / "brk.pub").write_text(json.dumps(k.key.to_dict()))
    ec = PrivateKey.generate(ECDSA)
    from cryptography.hazmat.primitives import serialization

    pem = serialization.load_pem_private_key(ec.to_pem(), None).public_key()
    (keys / "tcu.pub").write_bytes(
        pem.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    p = tmp / "primary.toml"
    p.write_text(text)
    return p


def test_config_reads_every_field_and_derives_the_service_urls(tmp_path):
    cfg = load_config(write(tmp_path, BASE + SERIAL + CAN))
    assert cfg.vin == "VIN1" and cfg.ecu_serial == "gw-1" and cfg.hardware_id == "gw-v1"
    assert cfg.key_file == tmp_path / "keys" / "gw.pem"
    assert cfg.storage_dir == tmp_path / "state" and cfg.poll_interval == 60.0
    assert cfg.director_metadata_url == "http://127.0.0.1:8001/vehicles/VIN1/metadata"
    assert cfg.manifest_url == "http://127.0.0.1:8001/vehicles/VIN1/manifest"
    assert cfg.image_metadata_url == "http://127.0.0.1:8002/metadata"
    assert cfg.image_targets_url == "http://127.0.0.1:8002/targets"
    assert cfg.limits == Limits.primary()
    assert cfg.ecus == {"gw-1": "gw-v1", "brk-1": "brk-v1", "tcu-1": "tcu-v5"}
    brk, tcu = cfg.secondaries
    assert brk.link.type == "serial" and brk.link.port == "/dev/ttyUSB0"
    assert brk.link.baudrate == 57600 and brk.mode == "partial" and brk.encoding == "der"
    assert tcu.link.type == "can" and (tcu.link.tx_id, tcu.link.rx_id) == (0x7E0, 0x7E8)
    assert tcu.mode == "full" and tcu.encoding == "json"
    assert tcu.timeout == 0.5 and tcu.retries == 4
    assert tcu.public_key.scheme == ECDSA
    # TAP 4: without a map file, every image needs both repositories
    m = cfg.load_map_file()
    assert m.mapping[0].repositories == ["director", "image"] and m.mapping[0].threshold == 2


def test_config_map_file_and_inprocess_link(tmp_path):
    mf = MapFile.default("http://d", "http://i")
    (tmp_path / "map.json").write_bytes(mf.to_json())
    text = BASE.replace('limits = "primary"', 'limits = "constrained"\nmap_file = "map.json"')
    text += SERIAL.replace(
        'link = { type = "serial", port = "/dev/ttyUSB0", baudrate = 57600 }',
        'link = { type = "inprocess", name = "brk" }',
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.limits == Limits.constrained()
    assert cfg.load_map_file().to_dict() == mf.to_dict()
    assert cfg.secondaries[0].link.name == "brk"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace('vin = "VIN1"', ""), "vehicle.vin"),
        (lambda t: t.replace('vin = "VIN1"', 'vin = "../x"'), "vehicle.vin"),
        (lambda t: t + "\n[extra]\n", "unknown key"),
        (lambda t: t.replace('url = "http://127.0.0.1:8002"', 'url = "ftp://x"'), "http"),
        (lambda t: t.replace('limits = "primary"', 'limits = "huge"'), "storage.limits"),
        (lambda t: t.replace("poll_interval = 60", "poll_interval = -1"), "poll_interval"),
        (lambda t: t + SERIAL + SERIAL, "used twice"),
        (lambda t: t + SERIAL.replace("/dev/ttyUSB0", ""), "non-empty"),
        (lambda t: t + SERIAL.replace('type = "serial"', 'type = "usb"'), "link.type"),
        (lambda t: t + CAN.replace("tx_id = 0x7E0, ", ""), "tx_id"),
        (lambda t: t + CAN.replace('mode = "full"', 'mode = "half"'), "mode"),
        (lambda t: t + SERIAL.replace("keys/brk.pub", "keys/none.pub"), "public key"),
        (lambda t: t + "[[secondaries]\n", "cannot read"),
    ],
)
def test_config_refuses_what_it_cannot_use(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(write(tmp_path, change(BASE)))


def test_config_public_key_that_is_not_a_key(tmp_path):
    p = write(tmp_path, BASE + SERIAL)
    (tmp_path / "keys" / "brk.pub").write_text("not a key")
    with pytest.raises(ConfigError, match="public key"):
        load_config(p)


def _roots() -> tuple[bytes, bytes]:
    now = datetime.now(UTC)
    d = RepositoryBuilder("director", {r: [PrivateKey.generate()] for r in ("root",)}, now)
    i = RepositoryBuilder("image", {r: [PrivateKey.generate()] for r in ("root",)}, now)
    return d.trusted_root(), i.trusted_root()


def test_provision_writes_both_roots_and_the_ecu_key_once(tmp_path, capsys):
    p = write(tmp_path, BASE)
    director, image = _roots()
    (tmp_path / "d.json").write_bytes(director)
    (tmp_path / "i.json").write_bytes(image)
    args = ["provision", "--config", str(p), "--director-root", str(tmp_path / "d.json")]
    args += ["--image-root", str(tmp_path / "i.json")]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    key = PrivateKey.from_pem((tmp_path / "keys" / "gw.pem").read_bytes())
    assert key.keyid in out and json.loads(out.strip().splitlines()[-1]) == key.key.to_dict()
    assert (tmp_path / "keys" / "gw.pem").stat().st_mode & 0o077 == 0
    state = PrimaryState(tmp_path / "state", Limits.primary())
    assert state.read_metadata("director") == {"root": director}
    assert state.read_metadata("image") == {"root": image}
    # a second provision would throw trusted state away: only with --force
    assert cli_main(args) == 2
    assert "already provisioned" in capsys.readouterr().err
    assert cli_main([*args, "--force"]) == 0
    # the key is kept, not replaced
    assert PrivateKey.from_pem((tmp_path / "keys" / "gw.pem").read_bytes()).keyid == key.keyid


def test_provision_refuses_a_root_not_signed_by_its_own_keys(tmp_path):
    from primary.cli import provision

    cfg = load_config(write(tmp_path, BASE))
    director, image = _roots()
    doc = json.loads(director)
    doc["signed"]["version"] = 7
    with pytest.raises(UptaneError):
        provision(cfg, json.dumps(doc).encode(), image)
    assert not PrimaryState(cfg.storage_dir, cfg.limits).has_root("image")


def test_status_before_any_cycle(tmp_path, capsys):
    p = write(tmp_path, BASE)
    assert cli_main(["status", "--config", str(p)]) == 0
    out = capsys.readouterr().out
    assert "director: not provisioned" in out and "last error: none" in out
    assert cli_main(["status", "--config", str(p), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["pending"] == {} and st["installed"] == {"gw-1": None}


SUPPLIER = """
[[repositories]]
name = "supplier"
url = "http://127.0.0.1:8003/"

[[repositories]]
name = "tier2"
url = "http://127.0.0.1:8004"
metadata_url = "http://mirror.example/tier2/meta"
"""

WITH_MAP = BASE.replace('limits = "primary"', 'limits = "primary"\nmap_file = "map.json"')


def test_config_more_than_two_repositories(tmp_path):
    """TAP 4: ``[[repositories]]`` after the Director and the Image repository, each
    with its URLs; a map file names them."""
    cfg = load_config(write(tmp_path, WITH_MAP + SUPPLIER))
    assert cfg.repository_names == ("director", "image", "supplier", "tier2")
    repos = cfg.image_repositories
    assert repos["image"].metadata_url == "http://127.0.0.1:8002/metadata"
    assert repos["supplier"].metadata_url == "http://127.0.0.1:8003/metadata"
    assert repos["supplier"].targets_url == "http://127.0.0.1:8003/targets"
    assert repos["tier2"].metadata_url == "http://mirror.example/tier2/meta"
    assert repos["tier2"].targets_url == "http://127.0.0.1:8004/targets"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + SUPPLIER, "need a map file"),
        (WITH_MAP + SUPPLIER.replace('"tier2"', '"supplier"'), "used twice"),
        (WITH_MAP + SUPPLIER.replace('"tier2"', '"image"'), "reserved"),
        (WITH_MAP + SUPPLIER.replace('"tier2"', '"../up"'), "use a-z"),
        (WITH_MAP + SUPPLIER.replace("http://127.0.0.1:8004", "ftp://x"), "http(s) URL"),
        (WITH_MAP + SUPPLIER + CAN, "full-verification Secondary"),
        ("repositories = 3\n" + WITH_MAP, "array of tables"),
    ],
)
def test_config_refuses_repositories_it_cannot_use(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(write(tmp_path, text))


def test_provision_writes_a_root_for_every_repository(tmp_path, capsys):
    p = write(tmp_path, WITH_MAP + SUPPLIER)
    director, image = _roots()
    supplier, tier2 = _roots()
    for name, data in (("d", director), ("i", image), ("s", supplier), ("t", tier2)):
        (tmp_path / f"{name}.json").write_bytes(data)
    args = ["provision", "--config", str(p), "--director-root", str(tmp_path / "d.json")]
    args += ["--image-root", str(tmp_path / "i.json"), "--root", f"supplier={tmp_path}/s.json"]
    assert cli_main(args) == 2  # tier2 has no root
    assert "missing ['tier2']" in capsys.readouterr().err
    assert cli_main([*args, "--root", f"other={tmp_path}/t.json"]) == 2
    assert "not configured ['other']" in capsys.readouterr().err
    assert cli_main([*args, "--root", f"tier2={tmp_path}/t.json"]) == 0
    state = PrimaryState(tmp_path / "state", Limits.primary())
    assert state.read_metadata("supplier") == {"root": supplier}
    assert state.read_metadata("tier2") == {"root": tier2}
    assert cli_main(["status", "--config", str(p)]) == 0
    out = capsys.readouterr().out
    assert "supplier: root v1" in out and "tier2: root v1" in out
