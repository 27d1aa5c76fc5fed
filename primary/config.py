"""The Primary's configuration: one TOML file (``uptane-primary --config FILE``).

Relative paths in the file are taken relative to the file's own directory. See
``docs/primary.md`` for the full reference; in short::

    [vehicle]
    vin = "VIN0001"

    [primary]
    ecu_serial = "primary-1"
    hardware_id = "gateway-v1"
    key_file = "keys/primary.pem"        # PKCS#8 PEM, written by `uptane-primary provision`
    encryption_key = "keys/encryption.pem"  # optional: X25519, for images encrypted for it
    # key = "pkcs11:token=ecu;object=primary?module-path=/usr/lib/softhsm/libsofthsm2.so"
    #                                    # instead: a key in a PKCS#11 token (or a PEM path)
    # key_pin_env = "PRIMARY_TOKEN_PIN"  # where the token's PIN comes from
    # key_passphrase_env = "PRIMARY_KEY_PASSPHRASE"  # for an encrypted PEM key
    # flash_dir = "flash"                # the Primary's own A/B slots (optional)
    # slot_size = 16777216

    [director]
    url = "http://127.0.0.1:8001"        # metadata: URL/vehicles/VIN/metadata/, manifest: POST
    [image_repository]
    url = "http://127.0.0.1:8002"        # metadata: URL/metadata/, images: URL/targets/

    [[repositories]]                     # TAP 4: any further repository (optional)
    name = "supplier"                    # its name in the map file and under state/metadata
    url = "http://127.0.0.1:8003"        # metadata_url and targets_url override, as above

    [storage]
    dir = "state"
    poll_interval = 300                  # seconds between cycles for `run`
    limits = "primary"                   # Limits profile: "primary" or "constrained"
    # map_file = "map.json"              # TAP 4 map file; default: Director AND Image repo
                                         # (required with [[repositories]])

    [[secondaries]]
    serial = "ecu-brake"
    hardware_id = "brake-v2"
    public_key = "keys/ecu-brake.pub"    # PEM public key or TUF JSON key
    mode = "partial"                     # or "full"
    encoding = "der"                     # metadata encoding the Secondary reads
    link = { type = "serial", port = "/dev/ttyUSB0", baudrate = 115200 }
    # link = { type = "can", channel = "vcan0", interface = "socketcan",
    #          tx_id = 0x7E0, rx_id = 0x7E8 }
    # link = { type = "inprocess", name = "ecu-brake" }
    link_key = "keys/ecu-brake.link"     # its link key (none: an unauthenticated link)
    timeout = 2.0                        # per link request, before its retries
    retries = 2

    [time]                               # signed time (Roughtime); without it: the system clock
    servers = [{ address = "time.oem.example:2002", key = "keys/time-1.pub" }]
    # min_servers = 1, max_step_days = 366, jump_servers = 2, timeout = 1.0, retries = 2

Nothing here verifies anything: values are checked for shape only.
"""

from __future__ import annotations

import base64
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hardware.secure_link import LinkKey
from keystore import KeyConfigError, SecretUnavailable, TokenError, is_uri, open_signer
from primary.state import REPOSITORY_NAME
from primary.tls import TlsConfig, TlsConfigError, parse_tls
from storage import read_capped
from uptane import roughtime as rt
from uptane.errors import UptaneError
from uptane.keys import MAX_KEY_FILE, Key, Signer
from uptane.limits import Limits
from uptane.metadata import MapFile

DIRECTOR = "director"
IMAGE = "image"
LINK_TYPES = ("serial", "can", "inprocess")
MODES = ("partial", "full")
#: the metadata encodings a Secondary may be configured to read; "der" is the DER family:
#: the link may negotiate compact-der (docs/link-protocol.md, "Codecs")
ENCODINGS = ("der", "json", "compact-der")
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_MAX_CONFIG = 1024 * 1024


class ConfigError(ValueError):
    """The configuration file is missing, malformed, or names something unusable."""


@dataclass(frozen=True)
class LinkConfig:
    """How to reach one Secondary: ``type`` is serial, can or inprocess."""

    type: str
    port: str | None = None
    baudrate: int = 115200
    channel: str | None = None
    interface: str = "socketcan"
    tx_id: int | None = None
    rx_id: int | None = None
    name: str | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str) -> LinkConfig:
        d = _table(d, where)
        kind = _str(d, "type", where)
        if kind not in LINK_TYPES:
            raise ConfigError(f"{where}.type must be one of {', '.join(LINK_TYPES)}")
        known = {"type", "port", "baudrate", "channel", "interface", "tx_id", "rx_id", "name"}
        _no_unknown(d, known, where)
        link = cls(
            type=kind,
            port=_opt_str(d, "port", where),
            baudrate=_int(d, "baudrate", where, 115200, low=1),
            channel=_opt_str(d, "channel", where),
            interface=_opt_str(d, "interface", where) or "socketcan",
            tx_id=_opt_int(d, "tx_id", where),
            rx_id=_opt_int(d, "rx_id", where),
            name=_opt_str(d, "name", where),
        )
        if kind == "serial" and not link.port:
            raise ConfigError(f"{where}: a serial link needs 'port'")
        if kind == "can" and (link.channel is None or link.tx_id is None or link.rx_id is None):
            raise ConfigError(f"{where}: a CAN link needs 'channel', 'tx_id' and 'rx_id'")
        if kind == "inprocess" and not link.name:
            raise ConfigError(f"{where}: an in-process link needs 'name'")
        return link

    def describe(self) -> str:
        if self.type == "serial":
            return f"serial {self.port}"
        if self.type == "can":
            return f"CAN {self.channel} tx=0x{self.tx_id or 0:X} rx=0x{self.rx_id or 0:X}"
        return f"in-process {self.name}"


@dataclass(frozen=True)
class SecondaryConfig:
    """One Secondary ECU this Primary serves."""

    serial: str
    hardware_id: str
    public_key: Key
    link: LinkConfig
    mode: str = "partial"
    #: the metadata encoding the Secondary reads ("der", "json" or "compact-der"); with
    #: "der", the link negotiates the DER flavour (compact-der when both ends have it)
    encoding: str = "der"
    timeout: float = 2.0
    retries: int = 2
    #: the Secondary's link key (made by its ``uptane-secondary provision``); None: the
    #: link is unauthenticated
    link_key: LinkKey | None = None


@dataclass(frozen=True)
class TimeServerConfig:
    """One time server: where it answers, and its long-term public key."""

    host: str
    port: int
    key: rt.TimeServerKey


@dataclass(frozen=True)
class TimeConfig:
    """Signed time (docs/secure-time.md): the OEM's time servers and the clock policy."""

    servers: tuple[TimeServerConfig, ...]
    policy: rt.TimePolicy = field(default_factory=rt.TimePolicy)
    timeout: float = 1.0
    retries: int = 2

    @property
    def keys(self) -> list[rt.TimeServerKey]:
        return [s.key for s in self.servers]


@dataclass(frozen=True)
class FetcherConfig:
    """Transport settings for :class:`primary.fetcher.Fetcher`."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    min_bytes_per_second: float | None = None
    speed_window: float | None = None


@dataclass(frozen=True)
class RepositoryConfig:
    """A repository other than the Director (TAP 4): its name in the map file, where its
    metadata and its images are."""

    name: str
    metadata_url: str
    targets_url: str


@dataclass(frozen=True)
class PrimaryConfig:
    """Everything ``uptane-primary`` reads from its TOML file."""

    path: Path
    vin: str
    ecu_serial: str
    hardware_id: str
    key_file: Path
    director_url: str
    director_metadata_url: str
    manifest_url: str
    image_metadata_url: str
    image_targets_url: str
    storage_dir: Path
    poll_interval: float = 300.0
    limits_profile: str = "primary"
    map_file: Path | None = None
    flash_dir: Path | None = None
    slot_size: int = 16 * 1024 * 1024
    secondaries: tuple[SecondaryConfig, ...] = field(default_factory=tuple)
    fetcher: FetcherConfig = field(default_factory=FetcherConfig)
    #: signed time; None: the system clock (TimeSource) and unsigned PUT_TIME
    time: TimeConfig | None = None
    #: TAP 4: the repositories after the Director and the Image repository
    repositories: tuple[RepositoryConfig, ...] = ()
    #: CA, client certificate and key for every repository (mutual TLS; primary/tls.py)
    tls: TlsConfig | None = None
    #: the ECU key as a PEM path or a PKCS#11 URI (keystore.open_signer); None: key_file
    key: str | None = None
    key_pin_env: str | None = None
    key_passphrase_env: str | None = None
    #: [primary] encryption_key: its X25519 key (PEM) for images encrypted for it, as
    #: written (relative to this file); primary.own.encryption_key_path (issue 17)
    encryption_key: str | None = None

    @property
    def key_spec(self) -> str:
        """Where the ECU's signing key is: ``key`` (a path or a PKCS#11 URI), else
        ``key_file``."""
        return self.key if self.key is not None else str(self.key_file)

    def open_key(self) -> Signer:
        """The ECU's signer; a key in a token never leaves it (docs/key-custody.md)."""
        try:
            return open_signer(
                self.key_spec, passphrase_env=self.key_passphrase_env, pin_env=self.key_pin_env
            )
        except (KeyConfigError, SecretUnavailable, TokenError, OSError, ValueError) as e:
            raise ConfigError(f"primary.key {self.key_spec}: {e}") from None

    @property
    def image_repositories(self) -> dict[str, RepositoryConfig]:
        """Every repository but the Director by name: the Image repository first."""
        image = RepositoryConfig(IMAGE, self.image_metadata_url, self.image_targets_url)
        return {IMAGE: image, **{r.name: r for r in self.repositories}}

    @property
    def repository_names(self) -> tuple[str, ...]:
        """Every repository the Primary trusts: the Director first."""
        return (DIRECTOR, *self.image_repositories)

    @property
    def limits(self) -> Limits:
        return Limits.named(self.limits_profile)

    @property
    def ecus(self) -> dict[str, str]:
        """Every ECU of the vehicle (the Primary included) with its hardware id."""
        out = {self.ecu_serial: self.hardware_id}
        out.update({s.serial: s.hardware_id for s in self.secondaries})
        return out

    def secondary(self, serial: str) -> SecondaryConfig:
        for s in self.secondaries:
            if s.serial == serial:
                return s
        raise KeyError(serial)

    def load_map_file(self) -> MapFile:
        """The TAP 4 map file, or the Uptane default (every path needs both repositories)."""
        if self.map_file is None:
            if self.repositories:
                raise ConfigError("storage.map_file: name the map file that uses [[repositories]]")
            return MapFile.default(self.director_metadata_url, self.image_metadata_url)
        try:
            data = read_capped(self.map_file, self.limits.map_file_bytes)
            return MapFile.from_json(data, self.limits)
        except (OSError, UptaneError) as e:
            raise ConfigError(f"map file {self.map_file}: {e}") from None


def load_config(path: str | Path) -> PrimaryConfig:
    """Read and check the TOML file at ``path``; raises ConfigError."""
    p = Path(path)
    try:
        raw = read_capped(p, _MAX_CONFIG)
        doc = tomllib.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read configuration {p}: {e}") from None
    except UptaneError as e:
        raise ConfigError(f"configuration {p}: {e}") from None
    return parse_config(doc, p)


_TABLES = {
    "vehicle": None,
    "primary": {
        "ecu_serial",
        "hardware_id",
        "key_file",
        "key",
        "key_pin_env",
        "key_passphrase_env",
        "flash_dir",
        "slot_size",
        "encryption_key",
    },
    "director": {"url", "metadata_url", "manifest_url"},
    "image_repository": {"url", "metadata_url", "targets_url"},
    "storage": {"dir", "poll_interval", "limits", "map_file"},
    "fetcher": {
        "connect_timeout",
        "read_timeout",
        "retries",
        "backoff",
        "min_bytes_per_second",
        "speed_window",
    },
}
_SECONDARY_KEYS = {
    "link_key",
    "serial",
    "hardware_id",
    "public_key",
    "mode",
    "encoding",
    "link",
    "timeout",
    "retries",
}


def parse_config(doc: dict[str, Any], path: Path) -> PrimaryConfig:
    """Build a :class:`PrimaryConfig` from a parsed TOML document found at ``path``."""
    base = path.parent
    _no_unknown(doc, {*_TABLES, "secondaries", "time", "repositories", "tls"}, "config")
    t: dict[str, dict[str, Any]] = {}
    for name, keys in _TABLES.items():  # in order: the first problem is the one named
        optional = name in ("storage", "fetcher")
        t[name] = _table(doc.get(name, {}) if optional else doc.get(name), name)
        if keys is not None:
            _no_unknown(t[name], keys, name)
        if name == "vehicle":
            vin = _ident(t[name], "vin", "vehicle")
    prim, director, image, storage = (
        t["primary"],
        t["director"],
        t["image_repository"],
        t["storage"],
    )
    d_url = _url(director, "url", "director")
    i_url = _url(image, "url", "image_repository")
    limits_profile = _opt_str(storage, "limits", "storage") or "primary"
    try:
        limits = Limits.named(limits_profile)
    except ValueError as e:
        raise ConfigError(f"storage.limits: {e}") from None
    ecu_serial = _ident(prim, "ecu_serial", "primary")
    flash = _opt_str(prim, "flash_dir", "primary")
    map_file = _opt_str(storage, "map_file", "storage")
    secondaries = _secondaries(doc.get("secondaries", []), base, limits, ecu_serial)
    repositories = _repositories(doc.get("repositories", []), map_file, secondaries)
    return PrimaryConfig(
        path=path,
        vin=vin,
        ecu_serial=ecu_serial,
        hardware_id=_ident(prim, "hardware_id", "primary"),
        key_file=base / _str(prim, "key_file", "primary"),
        key=_key_spec(prim, base),
        key_pin_env=_opt_str(prim, "key_pin_env", "primary"),
        key_passphrase_env=_opt_str(prim, "key_passphrase_env", "primary"),
        director_url=d_url,
        director_metadata_url=_opt_url(director, "metadata_url", "director")
        or f"{d_url}/vehicles/{vin}/metadata",
        manifest_url=_opt_url(director, "manifest_url", "director")
        or f"{d_url}/vehicles/{vin}/manifest",
        image_metadata_url=_opt_url(image, "metadata_url", "image_repository")
        or f"{i_url}/metadata",
        image_targets_url=_opt_url(image, "targets_url", "image_repository") or f"{i_url}/targets",
        storage_dir=base / (_opt_str(storage, "dir", "storage") or "state"),
        poll_interval=_float(storage, "poll_interval", "storage", 300.0, low=0.0),
        limits_profile=limits_profile,
        map_file=None if map_file is None else base / map_file,
        flash_dir=None if flash is None else base / flash,
        slot_size=_int(prim, "slot_size", "primary", 16 * 1024 * 1024, low=1),
        encryption_key=_opt_str(prim, "encryption_key", "primary"),
        secondaries=secondaries,
        fetcher=_fetcher(t["fetcher"]),
        time=_time(doc.get("time"), base),
        repositories=repositories,
        tls=_tls(doc.get("tls"), base),
    )


def _tls(value: Any, base: Path) -> TlsConfig | None:
    try:
        return parse_tls(value, base)
    except TlsConfigError as e:
        raise ConfigError(str(e)) from None


def _repositories(
    entries: Any, map_file: str | None, secondaries: tuple[SecondaryConfig, ...]
) -> tuple[RepositoryConfig, ...]:
    """The ``[[repositories]]`` tables (TAP 4): each a name (not the Director's or the
    Image repository's, used once) and its URLs. They need a map file that names them,
    and no full-verification Secondary (it verifies two repositories)."""
    if not isinstance(entries, list):
        raise ConfigError("repositories must be an array of tables ([[repositories]])")
    if entries and map_file is None:
        raise ConfigError("storage.map_file: [[repositories]] need a map file naming them")
    full = [s.serial for s in secondaries if s.mode == "full"]
    if entries and full:
        raise ConfigError(
            f"secondaries {full}: a full-verification Secondary verifies the Director and "
            "the Image repository only; with [[repositories]] configure it 'partial'"
        )
    seen = {DIRECTOR, IMAGE}
    out = []
    for i, entry in enumerate(entries):
        where = f"repositories[{i}]"
        r = _table(entry, where)
        _no_unknown(r, {"name", "url", "metadata_url", "targets_url"}, where)
        name = _str(r, "name", where)
        if not REPOSITORY_NAME.match(name):
            raise ConfigError(f"{where}.name {name!r}: use a-z, 0-9, _ and - (at most 64)")
        if name in seen:
            raise ConfigError(f"{where}.name {name!r} is used twice (or is a reserved name)")
        seen.add(name)
        url = _url(r, "url", where)
        out.append(
            RepositoryConfig(
                name,
                _opt_url(r, "metadata_url", where) or f"{url}/metadata",
                _opt_url(r, "targets_url", where) or f"{url}/targets",
            )
        )
    return tuple(out)


def _fetcher(fetch: dict[str, Any]) -> FetcherConfig:
    return FetcherConfig(
        connect_timeout=_float(fetch, "connect_timeout", "fetcher", 10.0, low=0.001),
        read_timeout=_float(fetch, "read_timeout", "fetcher", 30.0, low=0.001),
        retries=_int(fetch, "retries", "fetcher", 3, low=0),
        backoff=_float(fetch, "backoff", "fetcher", 0.5, low=0.0),
        min_bytes_per_second=_opt_float(fetch, "min_bytes_per_second", "fetcher"),
        speed_window=_opt_float(fetch, "speed_window", "fetcher"),
    )


def _secondaries(
    entries: Any, base: Path, limits: Limits, primary_serial: str
) -> tuple[SecondaryConfig, ...]:
    """The ``[[secondaries]]`` tables, each ECU serial used once (the Primary's included)."""
    if not isinstance(entries, list):
        raise ConfigError("secondaries must be an array of tables ([[secondaries]])")
    seen = {primary_serial}
    out = []
    for i, entry in enumerate(entries):
        cfg = _secondary(_table(entry, f"secondaries[{i}]"), f"secondaries[{i}]", base, limits)
        if cfg.serial in seen:
            raise ConfigError(f"secondaries[{i}]: ECU serial {cfg.serial!r} is used twice")
        seen.add(cfg.serial)
        out.append(cfg)
    return tuple(out)


def _secondary(s: dict[str, Any], where: str, base: Path, limits: Limits) -> SecondaryConfig:
    _no_unknown(s, _SECONDARY_KEYS, where)
    serial = _ident(s, "serial", where)
    mode = _opt_str(s, "mode", where) or "partial"
    if mode not in MODES:
        raise ConfigError(f"{where}.mode must be 'partial' or 'full'")
    encoding = _opt_str(s, "encoding", where) or "der"
    if encoding not in ENCODINGS:
        raise ConfigError(f"{where}.encoding must be one of {', '.join(ENCODINGS)}")
    return SecondaryConfig(
        serial=serial,
        hardware_id=_ident(s, "hardware_id", where),
        public_key=load_public_key(base / _str(s, "public_key", where), limits),
        link=LinkConfig.from_dict(s.get("link"), f"{where}.link"),
        mode=mode,
        encoding=encoding,
        timeout=_float(s, "timeout", where, 2.0, low=0.001),
        retries=_int(s, "retries", where, 2, low=0),
        link_key=_link_key(s, where, base),
    )


def _link_key(s: dict[str, Any], where: str, base: Path) -> LinkKey | None:
    name = _opt_str(s, "link_key", where)
    if name is None:
        return None
    try:
        return LinkKey.load(base / name)
    except (OSError, UptaneError) as e:
        raise ConfigError(f"{where}.link_key {base / name}: {e}") from None


_TIME_KEYS = {"servers", "min_servers", "max_step_days", "jump_servers", "timeout", "retries"}


def _time(value: Any, base: Path) -> TimeConfig | None:
    """The ``[time]`` table: ``servers`` (each ``address = "HOST:PORT"`` and ``key``, a
    ``longterm.pub`` file) and the clock policy."""
    if value is None:
        return None
    t = _table(value, "time")
    _no_unknown(t, _TIME_KEYS, "time")
    entries = t.get("servers")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("time.servers must be a non-empty array of tables")
    if len(entries) > rt.PRIMARY_LIMITS.max_servers:
        raise ConfigError(f"time.servers: at most {rt.PRIMARY_LIMITS.max_servers}")
    servers = tuple(_time_server(e, f"time.servers[{i}]", base) for i, e in enumerate(entries))
    policy = rt.TimePolicy(
        min_servers=_int(t, "min_servers", "time", 1, low=1),
        max_step=int(_float(t, "max_step_days", "time", 366.0, low=0.001) * rt.DAY),
        jump_servers=_int(t, "jump_servers", "time", 2, low=1),
    )
    if policy.min_servers > len(servers):
        raise ConfigError("time.min_servers is more than the servers configured")
    return TimeConfig(
        servers,
        policy,
        timeout=_float(t, "timeout", "time", 1.0, low=0.001),
        retries=_int(t, "retries", "time", 2, low=0),
    )


def _time_server(value: Any, where: str, base: Path) -> TimeServerConfig:
    d = _table(value, where)
    _no_unknown(d, {"address", "key", "name"}, where)
    address = _str(d, "address", where)
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}.address must be HOST:PORT, not {address!r}")
    path = base / _str(d, "key", where)
    try:
        raw = base64.b64decode(read_capped(path, 1024).strip(), validate=True)
    except (OSError, ValueError, UptaneError) as e:
        raise ConfigError(f"{where}.key {path}: {e}") from None
    if len(raw) != rt.KEY_BYTES:
        raise ConfigError(f"{where}.key {path}: {len(raw)} bytes, not {rt.KEY_BYTES}")
    name = _opt_str(d, "name", where) or address
    return TimeServerConfig(host.strip("[]"), int(port), rt.TimeServerKey(name, raw))


def load_public_key(path: Path, limits: Limits) -> Key:
    """A Secondary's public key: a PEM SubjectPublicKeyInfo or a TUF JSON key."""
    try:
        return Key.from_bytes(read_capped(path, MAX_KEY_FILE), limits)
    except (OSError, UptaneError) as e:
        raise ConfigError(f"public key {path}: {e}") from None


# --- small typed accessors ------------------------------------------------------------------


def _table(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        raise ConfigError(f"missing table [{where}]")
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    return value


def _no_unknown(d: dict[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(d) - known)
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)}")


def _str(d: dict[str, Any], key: str, where: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{where}.{key} must be a non-empty string")
    return v


def _key_spec(prim: dict[str, Any], base: Path) -> str | None:
    """``primary.key``: a PKCS#11 URI as written, a path relative to the file."""
    spec = _opt_str(prim, "key", "primary")
    if spec is None or is_uri(spec):
        return spec
    return str(base / spec)


def _opt_str(d: dict[str, Any], key: str, where: str) -> str | None:
    return None if d.get(key) is None else _str(d, key, where)


def _ident(d: dict[str, Any], key: str, where: str) -> str:
    v = _str(d, key, where)
    if not _ID.match(v):
        raise ConfigError(f"{where}.{key} {v!r}: use letters, digits and _ . : - (at most 128)")
    return v


def _url(d: dict[str, Any], key: str, where: str) -> str:
    v = _str(d, key, where)
    if not v.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.{key} must be an http(s) URL")
    return v.rstrip("/")


def _opt_url(d: dict[str, Any], key: str, where: str) -> str | None:
    return None if d.get(key) is None else _url(d, key, where)


def _int(d: dict[str, Any], key: str, where: str, default: int, *, low: int) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"{where}.{key} must be an integer >= {low}")
    return v


def _opt_int(d: dict[str, Any], key: str, where: str) -> int | None:
    return None if d.get(key) is None else _int(d, key, where, 0, low=0)


def _float(d: dict[str, Any], key: str, where: str, default: float, *, low: float) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < low:
        raise ConfigError(f"{where}.{key} must be a number >= {low}")
    return float(v)


def _opt_float(d: dict[str, Any], key: str, where: str) -> float | None:
    return None if d.get(key) is None else _float(d, key, where, 0.0, low=0.0)
