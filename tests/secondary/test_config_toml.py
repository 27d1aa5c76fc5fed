"""secondary.toml is written by tomli-w (SecondaryConfig.to_toml) and read by tomllib:
whatever a configuration holds comes back the same, including strings that need
escaping."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from secondary.config import LinkConfig, SecondaryConfig

AWKWARD = [
    'quote " inside',
    "back\\slash and \\u0041 not an escape",
    "non-ASCII: Bremssteuergerät ß 制动 🚗",
    "control: tab\t newline\n cr\r nul-free",
    "'single' and ''' triple",
    "# not a comment = [not a table]",
    "DEL \x7f: the hand-written writer left it raw, and tomllib refused the file",
]


def _config(base: Path, text: str, **changes: object) -> SecondaryConfig:
    cfg = SecondaryConfig(
        ecu_serial=text,
        hardware_id=text[::-1],
        key_file=base / "keys" / "ecu key.pem",
        state_dir=base / "state",
        flash_dir=Path("/var/lib/elsewhere") / text.replace("/", "_")[:20],
        slot_size=1 << 20,
        vehicle_id=f"VIN {text}",
        director_name=f"dir {text}",
        link=LinkConfig(type="can", port=text, channel=text, rxid=0x7E0, txid=0x7E8),
        path=base / "secondary.toml",
    )
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


@pytest.mark.parametrize("text", AWKWARD)
def test_to_toml_round_trips_through_tomllib(tmp_path: Path, text: str) -> None:
    base = tmp_path.resolve()
    cfg = _config(base, text)
    cfg.link.min_bytes_per_second = 512.5
    cfg.link.speed_window = 2.0
    cfg.checkpoint_bytes = 12_288
    doc = tomllib.loads(cfg.to_toml())
    assert SecondaryConfig.from_dict(doc, base=base, path=cfg.path) == cfg
    assert doc["ecu"]["serial"] == text and doc["link"]["port"] == text
    assert doc["ecu"]["key"] == "keys/ecu key.pem"  # inside the directory: relative
    assert Path(doc["storage"]["flash_dir"]).is_absolute()  # outside it: as it is


def test_settings_left_unset_are_left_out_and_come_back_as_defaults(tmp_path: Path) -> None:
    base = tmp_path.resolve()
    cfg = _config(base, "plain", vehicle_id=None)
    text = cfg.to_toml()
    doc = tomllib.loads(text)
    assert "vehicle_id" not in doc["ecu"] and "checkpoint_bytes" not in doc["install"]
    assert "bitrate" not in doc["link"] and "speed_window" not in doc["link"]
    assert SecondaryConfig.from_dict(doc, base=base, path=cfg.path) == cfg
    path = base / "secondary.toml"
    path.write_text(text, encoding="utf-8")
    assert SecondaryConfig.load(path) == cfg
