"""``uptane-director``: set up, run and administer a Director. See docs/oem-api.md."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from director.director import (
    Conflict,
    Director,
    EcuSpec,
    Invalid,
    NotFound,
    Unavailable,
    default_offline_dir,
)
from director.lifecycle import ASSIGNMENT
from uptane.errors import UptaneError
from uptane.keys import MAX_KEY_FILE, SCHEMES, Key, PrivateKey
from uptane.limits import Limits


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def load_public_key(path: Path) -> Key:
    """A public key file: TUF JSON (keytype/scheme/keyval), or PEM (public or private)."""
    with open(path, "rb") as f:
        data = f.read(MAX_KEY_FILE + 1)
    if b"PRIVATE KEY" in data[:MAX_KEY_FILE]:
        return PrivateKey.from_pem(data).key
    return Key.from_bytes(data, Limits.primary())


def parse_ecu(spec: str) -> EcuSpec:
    """``SERIAL:HARDWARE_ID:KEYFILE[:primary]``."""
    parts = spec.split(":")
    if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] != "primary"):
        raise Invalid(f"bad --ecu {spec!r}: use SERIAL:HARDWARE_ID:KEYFILE[:primary]")
    return EcuSpec(parts[0], parts[1], load_public_key(Path(parts[2])), len(parts) == 4)


def cmd_init(args: argparse.Namespace) -> int:
    off = Path(args.offline_keys) if args.offline_keys else default_offline_dir(Path(args.dir))
    token = Director.init(
        Path(args.dir),
        args.image_repo,
        Path(args.image_root).read_bytes(),
        offline_dir=off,
        db_url=args.db,
        scheme=args.scheme,
        expiry_days={
            "targets": args.targets_days,
            "snapshot": args.snapshot_days,
            "timestamp": args.timestamp_days,
        },
    )
    print(f"created Director in {args.dir}; root key in {off}")
    print("admin API token (shown once, store it safely):")
    print(token)
    return 0


def cmd_token_add(args: argparse.Namespace) -> int:
    token = _director(args).add_token(args.role)
    print(f"{args.role} API token (shown once, store it safely):")
    print(token)
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    off = Path(args.offline_keys) if args.offline_keys else default_offline_dir(Path(args.dir))
    version = _director(args).rotate_key(args.role, off, scheme=args.scheme)
    print(f"Director root version {version}: new {args.role} key; vehicles re-signed")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from director.director_server import create_app

    app = create_app(Path(args.dir), refresh_interval=args.refresh_interval)
    # access logs are off: URLs carry VINs, and nothing here may log a token
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _director(args: argparse.Namespace) -> Director:
    return Director(Path(args.dir), db_url=getattr(args, "db", None))


def cmd_vehicle_add(args: argparse.Namespace) -> int:
    _print(_director(args).register_vehicle(args.vin, [parse_ecu(e) for e in args.ecu]))
    return 0


def cmd_vehicle_show(args: argparse.Namespace) -> int:
    _print(_director(args).vehicle_status(args.vin))
    return 0


def cmd_vehicle_list(args: argparse.Namespace) -> int:
    _print(_director(args).list_vehicles())
    return 0


def cmd_assign(args: argparse.Namespace) -> int:
    items = []
    for pair in args.ecu_target:
        ecu, sep, target = pair.partition("=")
        if not sep:
            raise Invalid(f"bad {pair!r}: use ECU=TARGET")
        items.append((ecu, target))
    _print(_director(args).assign(args.vin, items))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    _print(_director(args).cancel(args.id))
    return 0


def cmd_campaign(args: argparse.Namespace) -> int:
    _print(_director(args).campaign(args.hardware_id, args.target))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    d = _director(args)
    if args.vin:
        _print(d.vehicle_status(args.vin))
    else:
        _print(
            {
                "vehicles": d.list_vehicles(),
                "assignments": d.list_assignments(state=args.state),
                "attacks": d.list_attacks(),
            }
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uptane-director", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def add(parent: Any, name: str, func: Any, help_: str) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help_)
        sp.add_argument("dir", help="Director directory")
        sp.set_defaults(func=func)
        return sp

    sp = add(sub, "init", cmd_init, "create keys, root, configuration and database")
    sp.add_argument("--image-repo", required=True, help="Image repository URL or directory")
    sp.add_argument("--image-root", required=True, help="trusted Image repository root file")
    sp.add_argument("--db", help="database URL (default: sqlite file DIR/inventory.db)")
    sp.add_argument("--offline-keys", help="root key directory (default DIR.offline-keys)")
    sp.add_argument("--scheme", choices=SCHEMES, default="ed25519")
    sp.add_argument("--targets-days", type=float, default=30.0, help="targets expiry policy")
    sp.add_argument("--snapshot-days", type=float, default=7.0, help="snapshot expiry policy")
    sp.add_argument("--timestamp-days", type=float, default=1.0, help="timestamp expiry policy")
    sp = add(sub, "serve", cmd_serve, "run the HTTP service")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8000)
    sp.add_argument("--refresh-interval", type=float, default=60.0)

    vehicle = sub.add_parser("vehicle", help="vehicles and their ECUs").add_subparsers(
        dest="vehicle_command", required=True
    )
    sp = add(vehicle, "add", cmd_vehicle_add, "register a vehicle")
    sp.add_argument("vin")
    sp.add_argument(
        "--ecu", action="append", required=True, help="SERIAL:HARDWARE_ID:KEYFILE[:primary]"
    )
    sp = add(vehicle, "show", cmd_vehicle_show, "show one vehicle")
    sp.add_argument("vin")
    add(vehicle, "list", cmd_vehicle_list, "list vehicles")

    sp = add(sub, "assign", cmd_assign, "assign images to ECUs of one vehicle (one bundle)")
    sp.add_argument("vin")
    sp.add_argument("ecu_target", nargs="+", metavar="ECU=TARGET")
    sp = add(sub, "cancel", cmd_cancel, "cancel a pending assignment")
    sp.add_argument("id", type=int)
    sp = add(sub, "campaign", cmd_campaign, "assign an image to every ECU of a hardware id")
    sp.add_argument("hardware_id")
    sp.add_argument("target")
    sp = add(sub, "rotate-key", cmd_rotate_key, "new key for a role; next root signed offline")
    sp.add_argument("role", choices=["root", "targets", "snapshot", "timestamp"])
    sp.add_argument("--offline-keys", help="root key directory (default DIR.offline-keys)")
    sp.add_argument("--scheme", choices=SCHEMES, default="ed25519")

    token = sub.add_parser("token", help="API tokens").add_subparsers(
        dest="token_command", required=True
    )
    sp = add(token, "add", cmd_token_add, "create an API token (admin, or read-only viewer)")
    sp.add_argument("--role", choices=["admin", "viewer"], default="viewer")

    sp = add(sub, "status", cmd_status, "fleet or vehicle status")
    sp.add_argument("vin", nargs="?")
    sp.add_argument("--state", choices=list(ASSIGNMENT.states))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (
        UptaneError,
        Conflict,
        Invalid,
        NotFound,
        Unavailable,
        PermissionError,
        FileExistsError,
        FileNotFoundError,
        ValueError,
    ) as e:
        print(f"uptane-director: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
