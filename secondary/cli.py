"""``uptane-secondary``: provision a Secondary ECU, and run it on a serial port or CAN bus.

    uptane-secondary provision --dir DIR --ecu-serial S --hardware-id H \\
        --director-root FILE [--targets FILE] [--vehicle-id V] [--key-type ed25519] \\
        [--time-key longterm.pub ...] [--no-link-key] ...
    uptane-secondary run --config DIR/secondary.toml

See docs/secondary.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hardware.bench import open_can
from hardware.flash import Flash, FlashModel
from hardware.secure_link import LinkKey
from hardware.server import serve
from keystore import KeyConfigError, SecretUnavailable, TokenError, generate_in_token
from secondary.agent import SecondaryAgent
from secondary.config import ConfigError, LinkConfig, SecondaryConfig
from secondary.state import provision_state
from secondary.verification import STRATEGIES, strategy
from storage import AtomicStore, atomic_write
from storage import logs as storage_logs
from uptane import roughtime as rt
from uptane.codec import codecs, sniff
from uptane.encryption import EncryptionPrivateKey
from uptane.errors import UptaneError
from uptane.keys import SCHEMES, Key, PrivateKey
from uptane.metadata import MapFile, decode
from uptane.partial import PartialVerifier
from uptane.trust import verify_trusted_root

log = logging.getLogger("uptane-secondary")

CONFIG_NAME = "secondary.toml"
KEY_NAME = "ecu_key.pem"
PUBLIC_NAME = "ecu_key.pub.json"
LINK_KEY_NAME = "link.key"
#: the ECU's encryption key (X25519, issue 17), separate from its signing key (§5.4.1)
ENCRYPTION_KEY_NAME = "encryption_key.pem"
TIME_KEYS_DIR = "time-keys"


def detect_encoding(data: bytes) -> str:
    """The encoding of a metadata file, from its first byte (:func:`uptane.codec.sniff`);
    MalformedInput when no codec starts that way."""
    return sniff(data).name


def provision(
    directory: Path,
    *,
    ecu_serial: str,
    hardware_id: str,
    director_root: bytes,
    targets: bytes | None = None,
    vehicle_id: str | None = None,
    key_type: str = "ed25519",
    slot_size: int = 1 << 20,
    mode: str = "partial",
    image_root: bytes | None = None,
    map_file: bytes | None = None,
    limits_profile: str = "constrained",
    link: LinkConfig | None = None,
    force: bool = False,
    now: float | None = None,
    time_keys: dict[str, bytes] | None = None,
    time_min_servers: int = 1,
    link_key: bool = True,
    flash_model: FlashModel | None = None,
    encoding: str | None = None,
    key_uri: str | None = None,
    key_pin_env: str | None = None,
) -> dict[str, Any]:
    """Write everything a Secondary needs (§5.4.1) into ``directory``; returns what to
    register with the Director (ECU id, hardware id, public key) and, under
    ``link_key_file``, where the new link key is (for the Primary, never the Director).
    The keyword arguments are the ``provision`` command's options (docs/secondary.md);
    ``encoding`` defaults to the Director root's (``compact-der`` is never guessed)."""
    directory = Path(directory)
    cfg = SecondaryConfig(
        ecu_serial=ecu_serial,
        hardware_id=hardware_id,
        key_file=directory / KEY_NAME,
        encryption_key_file=directory / ENCRYPTION_KEY_NAME,
        state_dir=directory / "state",
        flash_dir=directory / "flash",
        slot_size=slot_size,
        vehicle_id=vehicle_id,
        mode=mode,
        encoding=encoding or detect_encoding(director_root),
        limits_profile=limits_profile,
        link=link or LinkConfig(),
        path=directory / CONFIG_NAME,
        link_key_file=directory / LINK_KEY_NAME if link_key else None,
        time_key_files=tuple(directory / TIME_KEYS_DIR / f"{n}.pub" for n in time_keys or {}),
        time_min_servers=time_min_servers,
        key_uri=key_uri,
        key_pin_env=key_pin_env,
    )
    cfg.check()
    _check_new(cfg, force, flash_model)
    _check_trusted(cfg, director_root, targets, image_root, map_file)
    directory.mkdir(parents=True, exist_ok=True)
    public = _new_key(cfg, key_type)
    public.update(_new_link_secrets(cfg, time_keys or {}))
    _write_state(cfg, director_root, targets, image_root, map_file, now)
    _new_flash(cfg, flash_model)
    atomic_write(directory / CONFIG_NAME, cfg.to_toml().encode("utf-8"), mode=0o644)
    return public


def _check_new(cfg: SecondaryConfig, force: bool, model: FlashModel | None) -> None:
    """Refuse to provision an ECU twice (unless ``force``), and a NOR model whose erase
    blocks do not tile the slots."""
    assert cfg.path is not None
    if cfg.path.exists() and not force:
        raise ConfigError(f"{cfg.path} exists: this ECU is already provisioned (use --force)")
    if model is not None and cfg.slot_size % model.erase_block:
        raise ConfigError(
            f"slot size {cfg.slot_size} is not whole {model.erase_block}-byte erase blocks"
        )


def _write_state(
    cfg: SecondaryConfig,
    director_root: bytes,
    targets: bytes | None,
    image_root: bytes | None,
    map_file: bytes | None,
    now: float | None,
) -> None:
    """The trusted state: the roots, the initial targets and map file, the time now."""
    provision_state(
        AtomicStore(cfg.state_dir),
        director_root,
        targets=targets,
        image_root=image_root,
        map_file=map_file,
        time=int(time.time() if now is None else now),
    )


def _new_flash(cfg: SecondaryConfig, model: FlashModel | None) -> None:
    """The simulated flash: ideal, or a NOR device with ``model``'s erase blocks and
    pages (:class:`hardware.flash.FlashModel`, kept in its geometry file)."""
    try:
        Flash(cfg.flash_dir, cfg.slot_size, model=model)
    except ValueError as e:  # an existing device of another geometry or chip
        raise ConfigError(f"flash {cfg.flash_dir}: {e}") from None


def _new_link_secrets(cfg: SecondaryConfig, time_keys: dict[str, bytes]) -> dict[str, str]:
    """The time server keys, and a new link key (its path is returned, for the Primary)."""
    _write_time_keys(cfg, time_keys)
    if cfg.link_key_file is None:
        return {}
    LinkKey.generate().save(cfg.link_key_file)
    return {"link_key_file": str(cfg.link_key_file)}


def _write_time_keys(cfg: SecondaryConfig, keys: dict[str, bytes]) -> None:
    """The time servers' public keys, each checked (32 bytes of base64) before use."""
    for path, (name, text) in zip(cfg.time_key_files, keys.items(), strict=True):
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except ValueError:
            raise ConfigError(f"time key {name}: not base64") from None
        if len(raw) != rt.KEY_BYTES:
            raise ConfigError(f"time key {name}: {len(raw)} bytes, not {rt.KEY_BYTES}")
        atomic_write(path, base64.b64encode(raw) + b"\n", mode=0o644)
    cfg.load_time_keys()


def _check_trusted(
    cfg: SecondaryConfig,
    director_root: bytes,
    targets: bytes | None,
    image_root: bytes | None,
    map_file: bytes | None,
) -> None:
    """Check what will be trusted before anything is written: the root is signed by its
    own keys, the initial targets by the root's targets keys; for full verification the
    Image repository's root and the map file."""
    limits, encoding = cfg.limits, cfg.encoding
    pv = PartialVerifier(
        director_root,
        cfg.ecu_serial,
        cfg.hardware_id,
        limits,
        encoding=encoding,
        previous_targets=targets,
        vehicle_id=cfg.vehicle_id,
    )
    if pv.dropped:
        raise ConfigError("the initial targets are not signed by the Director root's keys")
    if strategy(cfg.mode).needs_image_repository:
        if image_root is None or cfg.vehicle_id is None:
            raise ConfigError(f"{cfg.mode} verification needs --image-root and --vehicle-id")
        verify_trusted_root(image_root, limits, encoding=encoding, repository="image")
        if map_file is not None:
            MapFile.from_json(map_file, limits)
    if targets is not None:
        decode(targets, limits, encoding=encoding, role_type="targets")


def _file_key(cfg: SecondaryConfig, key_type: str) -> Key:
    """A new key file (mode 0600); its public key."""
    key = PrivateKey.generate(key_type)
    atomic_write(cfg.key_file, key.to_pem(), mode=0o600)
    return key.key


def _token_key(cfg: SecondaryConfig, key_type: str) -> Key:
    """The key the PKCS#11 URI names, generated inside the token if it is not there yet
    (it never leaves the token); its public key."""
    assert cfg.key_uri is not None
    try:
        return cfg.open_key().key
    except ConfigError:
        pass  # no such key yet (any other token trouble, generating names it too)
    try:
        return generate_in_token(cfg.key_uri, key_type, pin_env=cfg.key_pin_env)
    except (KeyConfigError, SecretUnavailable, TokenError) as e:
        raise ConfigError(f"ecu.key {cfg.key_uri}: {e}") from None


def _new_key(cfg: SecondaryConfig, key_type: str) -> dict[str, Any]:
    """Generate the ECU key (private key 0600) and write its public half; returns what to
    register with the Director."""
    directory = cfg.key_file.parent
    key = _token_key(cfg, key_type) if cfg.key_uri else _file_key(cfg, key_type)
    public = {
        "ecu_serial": cfg.ecu_serial,
        "hardware_id": cfg.hardware_id,
        "keyid": key.keyid,
        "public_key": key.to_dict(),
    }
    if cfg.encryption_key_file is not None:  # issue 17: its own key pair (§5.4.1)
        enc = EncryptionPrivateKey.generate()
        atomic_write(cfg.encryption_key_file, enc.to_pem(), mode=0o600)
        public["encryption_key"] = enc.public_key().to_dict()
    atomic_write(
        directory / PUBLIC_NAME, (json.dumps(public, indent=2) + "\n").encode(), mode=0o644
    )
    return public


def open_transport(cfg: SecondaryConfig) -> Any:
    """The transport the ``[link]`` table describes."""
    lk = cfg.link
    if lk.type == "serial":
        from hardware.serial_link import SerialTransport

        if not lk.port:
            raise ConfigError("link.port is required for a serial link")
        return SerialTransport(
            lk.port, baudrate=lk.baudrate, max_frame=lk.max_frame, limits=cfg.limits
        )
    return open_can(
        lk.interface,
        lk.channel,
        txid=lk.txid,
        rxid=lk.rxid,
        fd=lk.fd,
        bitrate=lk.bitrate,
        limits=cfg.limits,
    )


def run(cfg: SecondaryConfig, stop: threading.Event | None = None) -> int:
    """Boot the ECU and serve its link until ``stop`` is set (SIGTERM/SIGINT in main)."""
    stop = stop or threading.Event()
    agent = SecondaryAgent.from_config(cfg)
    booted = agent.start()
    st = agent.slots.status()
    log.info(
        "ECU %s (%s) booted slot %s running %s",
        cfg.ecu_serial,
        cfg.hardware_id,
        booted,
        st.installed.filename if st.installed else "nothing",
    )
    transport = open_transport(cfg)
    endpoint = agent.endpoint(max_frame=transport.max_frame)
    print(f"ready {cfg.ecu_serial} slot={booted}", flush=True)
    try:
        serve(transport, endpoint, stop)
    finally:
        transport.close()
    log.info("stopped")
    return 0


def _read(path: str | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uptane-secondary", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    storage_logs.add_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    _provision_arguments(
        sub.add_parser("provision", help="create the ECU key, trusted state and config")
    )
    r = sub.add_parser("run", help="serve the link")
    r.add_argument("--config", required=True)
    return parser


def _provision_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", required=True, help="directory for the ECU's files")
    p.add_argument("--ecu-serial", required=True)
    p.add_argument("--hardware-id", required=True)
    p.add_argument(
        "--director-root",
        required=True,
        help="Director root metadata (JSON, DER; compact-der with --encoding compact-der)",
    )
    p.add_argument("--targets", help="initial Director targets metadata")
    p.add_argument("--vehicle-id")
    p.add_argument("--key-type", default="ed25519", choices=SCHEMES)
    p.add_argument(
        "--key",
        dest="key_uri",
        metavar="PKCS11_URI",
        help="make (or take) the ECU key inside a PKCS#11 token: pkcs11:token=...;object=...",
    )
    p.add_argument("--key-pin-env", help="environment variable holding the token's PIN")
    p.add_argument("--slot-size", type=int, default=1 << 20, help="bytes per A/B slot")
    p.add_argument("--mode", default="partial", choices=sorted(STRATEGIES))
    p.add_argument("--image-root", help="Image repository root (full verification)")
    p.add_argument("--map", help="map file JSON (full verification; default: both repos)")
    p.add_argument("--limits", default="constrained", choices=("constrained", "primary"))
    p.add_argument(
        "--encoding",
        choices=tuple(c.name for c in codecs()),
        help="the metadata encoding the ECU reads and reports in (default: the root's; "
        "compact-der is never guessed from the bytes)",
    )
    _link_arguments(p)
    _flash_arguments(p)
    p.add_argument(
        "--time-key",
        action="append",
        default=[],
        help="a time server's long-term public key (longterm.pub); repeat for several. "
        "The ECU then takes only signed time",
    )
    p.add_argument("--time-min-servers", type=int, default=1, help="k of the time keys")
    p.add_argument(
        "--no-link-key",
        action="store_true",
        help="make no link key: the link stays unauthenticated (bench setups only)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing provisioning")


def _link_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", default="", help="serial port for `run`")
    p.add_argument("--baudrate", type=int, default=115200)
    p.add_argument("--can-interface", help="serve on CAN with this python-can interface")
    p.add_argument("--can-channel", default="vcan0")
    p.add_argument("--can-rxid", type=lambda s: int(s, 0), default=0x7E0)
    p.add_argument("--can-txid", type=lambda s: int(s, 0), default=0x7E8)


def _flash_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--erase-block",
        type=int,
        help="simulate NOR flash with erase blocks of this many bytes (default: an ideal "
        "flash; with --page only: 4096)",
    )
    p.add_argument("--page", type=int, help="the NOR flash's program page in bytes (default 256)")


def _flash_model(args: argparse.Namespace) -> FlashModel | None:
    """The NOR model ``--erase-block``/``--page`` ask for (None: the ideal flash)."""
    if args.erase_block is None and args.page is None:
        return None
    try:
        return FlashModel(args.erase_block or 4096, args.page or 256)
    except ValueError as e:
        raise ConfigError(f"--erase-block/--page: {e}") from None


def _provision(args: argparse.Namespace) -> int:
    """``uptane-secondary provision``: prints what to register with the Director."""
    link = LinkConfig(port=args.port, baudrate=args.baudrate)
    if args.can_interface:
        link = LinkConfig(
            type="can",
            interface=args.can_interface,
            channel=args.can_channel,
            rxid=args.can_rxid,
            txid=args.can_txid,
        )
    public = provision(
        Path(args.dir),
        ecu_serial=args.ecu_serial,
        hardware_id=args.hardware_id,
        director_root=Path(args.director_root).read_bytes(),
        targets=_read(args.targets),
        vehicle_id=args.vehicle_id,
        key_type=args.key_type,
        slot_size=args.slot_size,
        mode=args.mode,
        image_root=_read(args.image_root),
        map_file=_read(args.map),
        limits_profile=args.limits,
        link=link,
        force=args.force,
        time_keys={f"time-{i + 1}": Path(k).read_bytes() for i, k in enumerate(args.time_key)},
        time_min_servers=args.time_min_servers,
        link_key=not args.no_link_key,
        flash_model=_flash_model(args),
        encoding=args.encoding,
        key_uri=args.key_uri,
        key_pin_env=args.key_pin_env,
    )
    print(json.dumps(public, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    storage_logs.setup_agent(args.log_format, verbose=args.verbose)  # issue 19
    try:
        if args.command == "provision":
            return _provision(args)
        cfg = SecondaryConfig.load(args.config)
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        return run(cfg, stop)
    except (ConfigError, UptaneError, OSError) as e:
        print(f"uptane-secondary: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
