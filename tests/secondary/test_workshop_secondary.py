"""Issue 18, on the Secondary's side: provisioning outputs the other tools take as they
are (the public key file, a serial or CAN configuration without the other link's
settings), and logs a bench tester can read (every metadata file, install, refusal with
its attack name, and slot change, at INFO or above)."""

from __future__ import annotations

import json
import logging
import tomllib
from pathlib import Path

import pytest
from test_agent_support import (
    ECU,
    HW,
    NOW,
    VIN,
    Director,
    client_for,
    image_bytes,
    open_agent,
    provision_ecu,
)

from director.director_cli import parse_ecu
from hardware import bench
from primary.config import load_public_key
from secondary.cli import provision
from secondary.config import LinkConfig, SecondaryConfig
from uptane.errors import MalformedInput, TargetNotFound
from uptane.keys import Key
from uptane.limits import PRIMARY


def test_the_public_key_file_provision_writes_is_taken_as_it_is(tmp_path: Path) -> None:
    cfg = provision_ecu(tmp_path, Director())
    pub = cfg.key_file.parent / "ecu_key.pub.json"
    doc = json.loads(pub.read_text())
    want = Key.from_dict(doc["public_key"], PRIMARY)
    # the core, the Primary's configuration and `uptane-director vehicle add` alike
    assert Key.from_bytes(pub.read_bytes(), PRIMARY) == want
    assert load_public_key(pub, PRIMARY) == want
    spec = parse_ecu(f"{ECU}:{HW}:{pub}")
    assert spec.public_key == want and spec.serial == ECU
    # a record whose key id is not its key's is refused, not silently taken
    doc["keyid"] = "00" * 32
    bad = tmp_path / "bad.pub.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(MalformedInput, match="keyid"):
        Key.from_bytes(bad.read_bytes(), PRIMARY)


def _link_table(directory: Path) -> dict[str, object]:
    doc = tomllib.loads((directory / "secondary.toml").read_text())
    table = doc["link"]
    assert isinstance(table, dict)
    return table


def test_a_serial_config_carries_no_can_settings_and_a_can_one_no_serial_ones(
    tmp_path: Path,
) -> None:
    director = Director()
    common = {
        "ecu_serial": ECU,
        "hardware_id": HW,
        "director_root": director.root,
        "vehicle_id": VIN,
        "slot_size": 64 * 1024,
    }
    provision(tmp_path / "s", link=LinkConfig(port="/dev/ttyUSB0"), **common)  # type: ignore[arg-type]
    serial = _link_table(tmp_path / "s")
    assert serial["type"] == "serial" and serial["port"] == "/dev/ttyUSB0"
    assert not {"interface", "channel", "rxid", "txid", "fd"} & set(serial)
    can = LinkConfig(type="can", interface="socketcan", channel="can0", rxid=0x7E0, txid=0x7E8)
    provision(tmp_path / "c", link=can, **common)  # type: ignore[arg-type]
    table = _link_table(tmp_path / "c")
    assert table["interface"] == "socketcan" and table["channel"] == "can0"
    assert not {"port", "baudrate", "max_frame"} & set(table)
    # both load back as they were written
    assert SecondaryConfig.load(tmp_path / "s" / "secondary.toml").link.port == "/dev/ttyUSB0"
    assert SecondaryConfig.load(tmp_path / "c" / "secondary.toml").link.channel == "can0"


def test_the_secondary_logs_metadata_installs_refusals_and_slot_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    director = Director()
    cfg = provision_ecu(tmp_path, director)
    caplog.set_level(logging.INFO, logger="secondary")
    agent = open_agent(cfg)
    image = image_bytes("fw-2", 20_000)
    director.assign(image, "fw-2.bin")
    (tmp_path / "fw-2.bin").write_bytes(image)
    files = bench.load_metadata(director.write_dir(tmp_path / "meta"))
    bench.install(client_for(agent), files, tmp_path / "fw-2.bin", now=int(NOW.timestamp()))
    text = caplog.text
    assert "metadata director/targets received (der," in text
    assert "metadata verified: new image fw-2.bin" in text
    assert "receiving image fw-2.bin (20000 bytes)" in text
    assert "installed fw-2.bin: slot change: slot B on trial" in text
    assert "slot change: trial slot B confirmed" in text
    assert all(r.levelno >= logging.INFO for r in caplog.records)
    # a refusal names its attack
    caplog.clear()
    with pytest.raises(TargetNotFound):
        client_for(agent).put_image("other.bin", b"x" * 10, 10)
    refusals = [r for r in caplog.records if r.getMessage().startswith("refused PutImage")]
    assert refusals and "arbitrary-software: " in refusals[0].getMessage()
    assert refusals[0].levelno == logging.WARNING
