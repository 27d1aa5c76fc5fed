"""The Secondary's configuration file (TOML), as ``uptane-secondary provision`` writes it and
``uptane-secondary run`` reads it. See docs/secondary.md for the reference.

Relative paths in the file are resolved against the directory that holds the file, so a
provisioned directory can be moved as a whole.
"""

from __future__ import annotations

import base64
import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from hardware.secure_link import LinkKey
from keystore import KeyConfigError, SecretUnavailable, TokenError, is_uri, open_signer
from secondary.verification import STRATEGIES
from storage import read_capped
from uptane import roughtime as rt
from uptane.codec import DER, codec_for, codecs
from uptane.encryption import EncryptionPrivateKey
from uptane.errors import MalformedInput, UptaneError
from uptane.keys import Signer
from uptane.limits import Limits

#: the largest configuration file read (a TOML file of a few KiB in practice)
MAX_CONFIG_BYTES = 1024 * 1024

#: the verification modes (secondary.verification: one strategy each)
MODES = tuple(STRATEGIES)
LINKS = ("serial", "can")
CONFIRM_POLICIES = ("auto", "manual")


#: the ``[link]`` settings of one type of link only
_SERIAL_SETTINGS = frozenset({"port", "baudrate", "max_frame"})
_CAN_SETTINGS = frozenset({"interface", "channel", "rxid", "txid", "fd", "bitrate"})


class ConfigError(ValueError):
    """The configuration file is missing something or has a bad value."""


@dataclass
class LinkConfig:
    """How the Secondary is reached: a serial port, or a CAN bus with ISO-TP."""

    type: str = "serial"
    # serial
    port: str = ""
    baudrate: int = 115200
    max_frame: int = 1024
    # CAN (python-can + can-isotp)
    interface: str = "virtual"
    channel: str = "vcan0"
    rxid: int = 0x7E0
    txid: int = 0x7E8
    fd: bool = False
    bitrate: int | None = None
    # §5.4 slow retrieval of images over this link (None: the Limits profile's)
    min_bytes_per_second: float | None = None
    speed_window: float | None = None

    def settings(self) -> dict[str, Any]:
        """The ``[link]`` table's settings: those of the other type of link are left out
        while they hold their defaults (a serial link's file names no CAN bus)."""
        other = _CAN_SETTINGS if self.type == "serial" else _SERIAL_SETTINGS
        default = LinkConfig()
        return {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k not in other or v != getattr(default, k)
        }


@dataclass
class SecondaryConfig:
    """Everything ``uptane-secondary run`` needs (see docs/secondary.md)."""

    ecu_serial: str
    hardware_id: str
    key_file: Path
    state_dir: Path
    flash_dir: Path
    slot_size: int
    vehicle_id: str | None = None
    mode: str = "partial"
    encoding: str = DER
    limits_profile: str = "constrained"
    director_name: str = "director"
    image_repo_name: str = "image"
    max_trial_boots: int = 3
    confirm: str = "auto"
    reboot_after_install: bool = True
    checkpoint_bytes: int | None = None  # image bytes between resume checkpoints
    link: LinkConfig = field(default_factory=LinkConfig)
    path: Path | None = None
    #: the link key every link message must carry a MAC of (None: an unauthenticated
    #: link, for bench setups that choose so); [link] key
    link_key_file: Path | None = None
    #: the time servers' long-term public keys (base64 files); none: unsigned time
    time_key_files: tuple[Path, ...] = ()
    #: the ECU's X25519 encryption key (PKCS#8 PEM, §5.4.1: not the signing key); [ecu]
    #: encryption_key. None: this ECU takes no encrypted images (issue 17)
    encryption_key_file: Path | None = None
    #: the ECU's signing key in a PKCS#11 token ([ecu] key = "pkcs11:..."): it signs the
    #: version reports inside the token; None: the key file ``key_file`` (issue 16)
    key_uri: str | None = None
    #: where the token's PIN, or an encrypted key file's passphrase, comes from
    key_pin_env: str | None = None
    key_passphrase_env: str | None = None
    #: the clock policy ([time]: min_servers, max_step_days, jump_servers)
    time_min_servers: int = 1
    time_max_step_days: float = 366.0
    time_jump_servers: int = 2

    @property
    def limits(self) -> Limits:
        """The Limits profile, with the link's slow-retrieval floor and window if set."""
        lim = Limits.named(self.limits_profile)
        changes: dict[str, object] = {}
        if self.link.min_bytes_per_second is not None:
            changes["min_bytes_per_second"] = self.link.min_bytes_per_second
        if self.link.speed_window is not None:
            changes["speed_window"] = self.link.speed_window
        return lim.replace(**changes) if changes else lim

    @property
    def auto_confirm(self) -> bool:
        return self.confirm == "auto"

    @property
    def time_policy(self) -> rt.TimePolicy:
        return rt.TimePolicy(
            min_servers=self.time_min_servers,
            max_step=int(self.time_max_step_days * rt.DAY),
            jump_servers=self.time_jump_servers,
        )

    def load_time_keys(self) -> list[rt.TimeServerKey]:
        """The provisioned time server keys (ConfigError when one is unreadable)."""
        out = []
        for p in self.time_key_files:
            try:
                raw = base64.b64decode(read_capped(p, 1024).strip(), validate=True)
            except (OSError, ValueError, UptaneError) as e:
                raise ConfigError(f"time key {p}: {e}") from None
            if len(raw) != rt.KEY_BYTES:
                raise ConfigError(f"time key {p}: {len(raw)} bytes, not {rt.KEY_BYTES}")
            out.append(rt.TimeServerKey(p.stem, raw))
        return out

    def open_key(self) -> Signer:
        """The ECU's signer: its key file, or its key inside a PKCS#11 token, which never
        leaves the token (docs/key-custody.md)."""
        spec = self.key_uri or str(self.key_file)
        try:
            return open_signer(
                spec, passphrase_env=self.key_passphrase_env, pin_env=self.key_pin_env
            )
        except (KeyConfigError, SecretUnavailable, TokenError, OSError, ValueError) as e:
            raise ConfigError(f"ecu.key {spec}: {e}") from None

    def load_encryption_key(self) -> EncryptionPrivateKey | None:
        """The ECU's encryption key, or None when it has none."""
        if self.encryption_key_file is None:
            return None
        try:
            return EncryptionPrivateKey.from_pem(read_capped(self.encryption_key_file, 4096))
        except (OSError, UptaneError) as e:
            raise ConfigError(f"encryption key {self.encryption_key_file}: {e}") from None

    def load_link_key(self) -> LinkKey | None:
        """The link key, or None when the link is not authenticated."""
        if self.link_key_file is None:
            return None
        try:
            return LinkKey.load(self.link_key_file)
        except (OSError, MalformedInput) as e:
            raise ConfigError(f"link key {self.link_key_file}: {e}") from None

    # --- reading -------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> SecondaryConfig:
        """Read and check a configuration file; raises ConfigError."""
        p = Path(path)
        try:
            doc = tomllib.loads(read_capped(p, MAX_CONFIG_BYTES).decode("utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError, UptaneError) as e:
            raise ConfigError(f"cannot read {p}: {e}") from None
        return cls.from_dict(doc, base=p.resolve().parent, path=p)

    @classmethod
    def from_dict(
        cls, doc: dict[str, Any], *, base: Path, path: Path | None = None
    ) -> SecondaryConfig:
        ecu = _table(doc, "ecu")
        storage = _table(doc, "storage")
        install = _table(doc, "install", required=False)
        link = _table(doc, "link", required=False)
        timing = _table(doc, "time", required=False)

        def resolve(value: str) -> Path:
            q = Path(value)
            return q if q.is_absolute() else base / q

        cfg = cls(
            ecu_serial=_get(ecu, "serial", str),
            hardware_id=_get(ecu, "hardware_id", str),
            key_file=resolve(_key_path(_get(ecu, "key", str, "ecu_key.pem"))),
            key_uri=_key_uri(_get(ecu, "key", str, "ecu_key.pem")),
            key_pin_env=_get(ecu, "key_pin_env", str, None),
            key_passphrase_env=_get(ecu, "key_passphrase_env", str, None),
            vehicle_id=_get(ecu, "vehicle_id", str, None),
            mode=_get(ecu, "mode", str, "partial"),
            encoding=_get(ecu, "encoding", str, DER),
            limits_profile=_get(ecu, "limits", str, "constrained"),
            director_name=_get(ecu, "director_name", str, "director"),
            image_repo_name=_get(ecu, "image_repo_name", str, "image"),
            state_dir=resolve(_get(storage, "state_dir", str, "state")),
            flash_dir=resolve(_get(storage, "flash_dir", str, "flash")),
            slot_size=_get(storage, "slot_size", int),
            max_trial_boots=_get(install, "max_trial_boots", int, 3),
            confirm=_get(install, "confirm", str, "auto"),
            reboot_after_install=_get(install, "reboot_after_install", bool, True),
            checkpoint_bytes=_get(install, "checkpoint_bytes", int, None),
            link=LinkConfig(
                type=_get(link, "type", str, "serial"),
                port=_get(link, "port", str, ""),
                baudrate=_get(link, "baudrate", int, 115200),
                max_frame=_get(link, "max_frame", int, 1024),
                interface=_get(link, "interface", str, "virtual"),
                channel=_get(link, "channel", str, "vcan0"),
                rxid=_get(link, "rxid", int, 0x7E0),
                txid=_get(link, "txid", int, 0x7E8),
                fd=_get(link, "fd", bool, False),
                bitrate=_get(link, "bitrate", int, None),
                min_bytes_per_second=_number(link, "min_bytes_per_second"),
                speed_window=_number(link, "speed_window"),
            ),
            path=path,
            link_key_file=_opt_path(link, "key", resolve),
            time_key_files=tuple(resolve(k) for k in _strings(timing, "keys")),
            time_min_servers=_get(timing, "min_servers", int, 1),
            time_max_step_days=float(_number(timing, "max_step_days") or 366.0),
            time_jump_servers=_get(timing, "jump_servers", int, 2),
            encryption_key_file=_opt_path(ecu, "encryption_key", resolve),
        )
        cfg.check()
        return cfg

    def check(self) -> None:
        """Refuse values the agent cannot run with."""
        if not self.ecu_serial or not self.hardware_id:
            raise ConfigError("ecu.serial and ecu.hardware_id must not be empty")
        if self.mode not in MODES:
            raise ConfigError(f"ecu.mode must be one of {MODES}, not {self.mode!r}")
        try:
            codec_for(self.encoding)
        except UptaneError:
            names = tuple(c.name for c in codecs())
            raise ConfigError(f"ecu.encoding must be one of {names}") from None
        try:
            Limits.named(self.limits_profile)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if self.slot_size <= 0:
            raise ConfigError("storage.slot_size must be positive")
        if self.max_trial_boots < 1:
            raise ConfigError("install.max_trial_boots must be at least 1")
        if self.checkpoint_bytes is not None and self.checkpoint_bytes <= 0:
            raise ConfigError("install.checkpoint_bytes must be positive")
        if self.confirm not in CONFIRM_POLICIES:
            raise ConfigError(f"install.confirm must be one of {CONFIRM_POLICIES}")
        if self.link.type not in LINKS:
            raise ConfigError(f"link.type must be one of {LINKS}")
        for key in ("min_bytes_per_second", "speed_window"):
            value = getattr(self.link, key)
            if value is not None and value < 0:
                raise ConfigError(f"link.{key} must be >= 0 (0 turns the check off)")
        if self.time_min_servers < 1 or self.time_jump_servers < 1:
            raise ConfigError("time.min_servers and time.jump_servers must be at least 1")
        if len(self.time_key_files) > rt.CONSTRAINED_LIMITS.max_servers:
            raise ConfigError(f"at most {rt.CONSTRAINED_LIMITS.max_servers} time keys")
        if self.time_max_step_days <= 0:
            raise ConfigError("time.max_step_days must be positive")

    # --- writing -------------------------------------------------------------------------

    def to_toml(self) -> str:
        """The file text (paths written relative to the file's directory when inside it),
        written by tomli-w; settings that are None are left out (their defaults apply)."""
        base = self.path.resolve().parent if self.path is not None else None

        def rel(p: Path) -> str:
            if base is not None:
                try:
                    return str(p.resolve().relative_to(base))
                except ValueError:
                    pass
            return str(p)

        doc: dict[str, dict[str, Any]] = {
            "ecu": {
                "serial": self.ecu_serial,
                "hardware_id": self.hardware_id,
                "vehicle_id": self.vehicle_id,
                "key": self.key_uri or rel(self.key_file),
                "key_pin_env": self.key_pin_env,
                "key_passphrase_env": self.key_passphrase_env,
                "encryption_key": None
                if self.encryption_key_file is None
                else rel(self.encryption_key_file),
                "mode": self.mode,
                "encoding": self.encoding,
                "limits": self.limits_profile,
                "director_name": self.director_name,
                "image_repo_name": self.image_repo_name,
            },
            "storage": {
                "state_dir": rel(self.state_dir),
                "flash_dir": rel(self.flash_dir),
                "slot_size": self.slot_size,
            },
            "install": {
                "max_trial_boots": self.max_trial_boots,
                "confirm": self.confirm,
                "reboot_after_install": self.reboot_after_install,
                "checkpoint_bytes": self.checkpoint_bytes,
            },
            "link": {
                **self.link.settings(),
                "key": None if self.link_key_file is None else rel(self.link_key_file),
            },
            "time": {
                "keys": [rel(p) for p in self.time_key_files],
                "min_servers": self.time_min_servers,
                "max_step_days": self.time_max_step_days,
                "jump_servers": self.time_jump_servers,
            },
        }
        tables = {name: {k: v for k, v in t.items() if v is not None} for name, t in doc.items()}
        return "# Uptane Secondary configuration (docs/secondary.md)\n" + tomli_w.dumps(tables)


_MISSING: Any = object()


def _table(doc: dict[str, Any], name: str, *, required: bool = True) -> dict[str, Any]:
    t = doc.get(name)
    if t is None:
        if required:
            raise ConfigError(f"missing [{name}] table")
        return {}
    if not isinstance(t, dict):
        raise ConfigError(f"[{name}] must be a table")
    return t


def _opt_path(t: dict[str, Any], key: str, resolve: Any) -> Path | None:
    value = _get(t, key, str, None)
    return None if value is None else Path(resolve(value))


def _strings(t: dict[str, Any], key: str) -> list[str]:
    value = t.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key} must be a list of strings")
    return value


def _number(t: dict[str, Any], key: str) -> float | None:
    """An optional number (integer or float) setting."""
    value = t.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number")
    return float(value)


def _get(t: dict[str, Any], key: str, kind: type, default: Any = _MISSING) -> Any:
    if key not in t:
        if default is _MISSING:
            raise ConfigError(f"missing setting {key!r}")
        return default
    value = t[key]
    if kind is int and isinstance(value, bool):
        raise ConfigError(f"{key} must be an integer")
    if not isinstance(value, kind):
        raise ConfigError(f"{key} must be of type {kind.__name__}")
    return value


def _key_uri(text: str) -> str | None:
    """``[ecu] key`` when it is a PKCS#11 URI."""
    return text if is_uri(text) else None


def _key_path(text: str) -> str:
    """``[ecu] key`` when it is a file (a token's key has none: the default name stands)."""
    return "ecu_key.pem" if is_uri(text) else text
