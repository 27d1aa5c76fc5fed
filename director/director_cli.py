"""``uptane-director``: set up, run and administer a Director. See docs/oem-api.md."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any

from director.campaigns import CampaignSpec
from director.campaignview import OUTCOMES
from director.director import (
    Conflict,
    Director,
    EcuSpec,
    Invalid,
    NotFound,
    Unavailable,
    default_offline_dir,
)
from director.director_cli_fleet import cmd_vehicle_add_many, pages, print_lists
from director.lifecycle import ASSIGNMENT
from director.vehicles import encryption_key_from_json, key_from_json
from keystore import KeyConfigError, SecretUnavailable, TokenError
from keystore.sources import spec_from_options
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
    """``SERIAL:HARDWARE_ID:KEYFILE[:primary]``. KEYFILE may be what ``uptane-secondary
    provision`` wrote (``ecu_key.pub.json``): its ``public_key`` and, when it has one, its
    ``encryption_key`` (issue 17) are registered."""
    parts = spec.split(":")
    if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] != "primary"):
        raise Invalid(f"bad --ecu {spec!r}: use SERIAL:HARDWARE_ID:KEYFILE[:primary]")
    path = Path(parts[2])
    provisioned = _provisioned(path)
    if provisioned is None:
        return EcuSpec(parts[0], parts[1], load_public_key(path), len(parts) == 4)
    enc = provisioned.get("encryption_key")
    return EcuSpec(
        parts[0],
        parts[1],
        key_from_json(provisioned.get("public_key")),
        len(parts) == 4,
        None if enc is None else encryption_key_from_json(enc),
    )


def _provisioned(path: Path) -> dict[str, Any] | None:
    """The JSON ``uptane-secondary provision`` writes (a ``public_key`` inside), or None
    for a key file of its own."""
    with open(path, "rb") as f:
        data = f.read(MAX_KEY_FILE + 1)
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and "public_key" in doc else None


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
            **({"root": args.root_days} if args.root_days is not None else {}),
        },
        key_source=_key_source(args),
        passphrase_env=args.passphrase_env,
    )
    print(f"created Director in {args.dir}; root key in {off}")
    print("admin API token (shown once, store it safely):")
    print(token)
    return 0


def _key_source(args: argparse.Namespace) -> dict[str, str] | None:
    """``init``'s online key source: a PKCS#11 token, encrypted files, or plain files."""
    return spec_from_options(args.online_token, args.pin_env, args.online_passphrase_env)


def _key_options(sp: argparse.ArgumentParser) -> None:
    """``init``'s options for where keys are made and how long the root lives."""
    sp.add_argument("--root-days", type=float, help="root lifetime (default 365)")
    sp.add_argument("--online-token", help="PKCS#11 URI of the token for the online keys")
    sp.add_argument("--pin-env", help="variable holding that token's PIN")
    sp.add_argument("--online-passphrase-env", help="encrypt online key files; its variable")
    sp.add_argument("--passphrase-env", help="encrypt the offline root key; its variable")


def package_version() -> str:
    """This stack's version, as installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("uptane-stack")
    except PackageNotFoundError:
        return "unknown (not installed)"


def service_logging(fmt: str = "auto") -> str:
    """The services' own log on stderr (:func:`director.logs.configure`): text on a
    terminal, JSON lines otherwise; returns the format chosen."""
    from director import logs

    return logs.configure(fmt)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from director.audit import node_name
    from director.director_cli_admin import schema_behind
    from director.director_server import create_app

    d = Director(Path(args.dir))
    behind = schema_behind(d.config.db_url)
    if behind is not None:
        d.dispose()
        raise ValueError(behind)
    settings = d.config.tls_settings(d.dir)
    tls_options = settings.uvicorn_kwargs()
    info = d.describe()
    scheme = "https" if settings.serves_tls else "http"
    print(f"uptane-director {package_version()} serving {scheme}://{args.host}:{args.port}")
    for key in ("directory", "database", "keys", "root", "image_repo"):
        print(f"  {key.replace('_', ' ')}: {info[key]}")
    print(f"  vehicles: {_vehicle_auth(settings)}")
    chosen = service_logging(args.log_format or d.config.log_format)
    print(f"  one {chosen} log line per request and per admin change follows on stderr", flush=True)
    app = create_app(director=d, refresh_interval=args.refresh_interval, node=node_name(args.port))
    # uvicorn's own access log stays off: the request lines carry no VIN and no token
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", access_log=False, **tls_options
    )
    return 0


def _vehicle_auth(settings: Any) -> str:
    if settings.vehicle_auth != "mtls":
        return "no client certificate asked (tls.vehicle_auth none)"
    where = []
    if settings.client_ca is not None:
        where.append(f"TLS client certificates from {settings.client_ca}")
    if settings.trusted_proxies:
        nets = ", ".join(str(n) for n in settings.trusted_proxies)
        where.append(f"header {settings.client_cert_header} from {nets}")
    return "a client certificate bound to the VIN (" + "; ".join(where) + ")"


def _director(args: argparse.Namespace) -> Director:
    return Director(Path(args.dir), db_url=getattr(args, "db", None))


def cmd_vehicle_add(args: argparse.Namespace) -> int:
    _print(_director(args).register_vehicle(args.vin, [parse_ecu(e) for e in args.ecu]))
    return 0


def cmd_vehicle_show(args: argparse.Namespace) -> int:
    _print(_director(args).vehicle_status(args.vin))
    return 0


def cmd_vehicle_list(args: argparse.Namespace) -> int:
    """Every vehicle, in registration order, a page at a time (a JSON list)."""
    d = _director(args)
    print_lists({"": pages(d, "vehicles", d.fleet.page_vehicles)})
    return 0


def cmd_assign(args: argparse.Namespace) -> int:
    items = []
    for pair in args.ecu_target:
        ecu, sep, target = pair.partition("=")
        if not sep:
            raise Invalid(f"bad {pair!r}: use ECU=TARGET")
        items.append((ecu, target))
    encrypt: dict[str, bool | None] = dict.fromkeys(args.encrypt or [], True)
    _print(_director(args).assign(args.vin, items, force=args.force, encrypt=encrypt))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    _print(_director(args).cancel(args.id))
    return 0


def parse_wave(text: str) -> dict[str, float]:
    """``10%`` (a share of the selection) or ``50`` (a number of ECUs)."""
    try:
        if text.endswith("%"):
            return {"percent": float(text[:-1])}
        return {"count": int(text)}
    except ValueError:
        raise Invalid(f"bad --wave {text!r}: use a share like 10% or a count like 50") from None


def cmd_campaign_create(args: argparse.Namespace) -> int:
    spec = CampaignSpec(
        target=args.target,
        hardware_id=args.hardware_id,
        vins=args.vin,
        group=args.group,
        waves=[parse_wave(w) for w in args.wave] if args.wave else None,
        soak_seconds=args.soak,
        failure_threshold=args.threshold,
        force=args.force,
        name=args.name,
    )
    _print(_director(args).campaign(spec))
    return 0


def cmd_campaign(args: argparse.Namespace) -> int:
    """list, show, vehicles, pause, resume, cancel."""
    d = _director(args)
    c = d.campaigns
    action = args.campaign_command
    if action == "list":
        _print(c.list_campaigns())
    elif action == "vehicles":
        kind = f"campaign-{args.id}-members"
        get = functools.partial(c.members, args.id, wave=args.wave, state=args.state)
        print_lists({"": pages(d, kind, lambda page: get(page=page))})
    else:
        _print(
            {"show": c.get, "pause": c.pause, "resume": c.resume, "cancel": c.cancel}[action](
                args.id
            )
        )
    return 0


def cmd_group(args: argparse.Namespace) -> int:
    """create, add, remove, show, list, delete."""
    g = _director(args).groups
    action = args.group_command
    if action == "create":
        _print(g.create(args.name, args.vins))
    elif action == "add":
        _print(g.add(args.name, args.vins))
    elif action == "remove":
        _print(g.remove(args.name, args.vin))
    elif action == "list":
        _print(g.list_groups())
    else:
        _print({"show": g.show, "delete": g.delete}[action](args.name))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    d = _director(args)
    if args.vin:
        _print(d.vehicle_status(args.vin))
    else:
        f = d.fleet
        print_lists(
            {
                "vehicles": pages(d, "vehicles", f.page_vehicles),
                "assignments": pages(
                    d, "assignments", lambda p: f.page_assignments(p, state=args.state)
                ),
                "attacks": pages(d, "attacks", f.page_attacks),
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
    _key_options(sp)
    sp = add(sub, "serve", cmd_serve, "run the HTTP service (one node)")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8000)
    sp.add_argument("--refresh-interval", type=float, default=60.0)
    sp.add_argument(
        "--log-format", choices=["auto", "json", "text"], help="default: director.json's"
    )

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
    sp = add(vehicle, "add-many", cmd_vehicle_add_many, "register the vehicles of a file")
    sp.add_argument(
        "file", help="a JSON list of vehicles as POST /api/v1/vehicles takes them, or JSON lines"
    )

    _assign_parsers(sub, add)
    _campaign_parsers(sub, add)
    _group_parsers(sub, add)
    _workshop_parsers(sub, add)
    from director import director_cli_keys

    director_cli_keys.add_parsers(sub, add)

    from director import director_cli_admin

    director_cli_admin.add_parsers(sub, add)
    from director import director_cli_retention

    director_cli_retention.add_parsers(sub, add)

    sp = add(sub, "status", cmd_status, "fleet or vehicle status")
    sp.add_argument("vin", nargs="?")
    sp.add_argument("--state", choices=list(ASSIGNMENT.states))
    return p


def _assign_parsers(sub: Any, add: Any) -> None:
    sp = add(sub, "assign", cmd_assign, "assign images to ECUs of one vehicle (one bundle)")
    sp.add_argument("vin")
    sp.add_argument("ecu_target", nargs="+", metavar="ECU=TARGET")
    sp.add_argument("--force", action="store_true", help="allow a downgrade")
    sp.add_argument(
        "--encrypt",
        action="append",
        metavar="ECU",
        help="send this ECU its image encrypted to its own key (repeat; default: the rules)",
    )
    sp = add(sub, "cancel", cmd_cancel, "cancel a pending assignment")
    sp.add_argument("id", type=int)


def _campaign_parsers(sub: Any, add: Any) -> None:
    campaign = sub.add_parser("campaign", help="campaigns in waves").add_subparsers(
        dest="campaign_command", required=True
    )
    sp = add(campaign, "create", cmd_campaign_create, "select ECUs and send the first wave")
    sp.add_argument("target", help="target path in the Image repository")
    sp.add_argument("--hardware-id", help="select ECUs of this hardware id")
    sp.add_argument("--vin", action="append", help="select this vehicle (repeat)")
    sp.add_argument("--group", help="select the vehicles of a saved group")
    sp.add_argument("--wave", action="append", help="a wave: 10%% or 50 (repeat, in order)")
    sp.add_argument("--soak", type=int, default=0, help="seconds between waves")
    sp.add_argument("--threshold", type=float, default=0.1, help="halt above this failed share")
    sp.add_argument("--force", action="store_true", help="allow downgrades")
    sp.add_argument("--name")
    add(campaign, "list", cmd_campaign, "list campaigns")
    for name, what in (
        ("show", "a campaign with its statistics"),
        ("pause", "send no further wave"),
        ("resume", "carry on after a pause or a halt"),
        ("cancel", "cancel, withdrawing what is in flight"),
        ("vehicles", "each member's outcome and what its ECU runs"),
    ):
        sp = add(campaign, name, cmd_campaign, what)
        sp.add_argument("id", type=int)
        if name == "vehicles":
            sp.add_argument("--wave", type=int)
            sp.add_argument("--state", choices=list(OUTCOMES))


def _group_parsers(sub: Any, add: Any) -> None:
    group = sub.add_parser("group", help="saved groups of vehicles").add_subparsers(
        dest="group_command", required=True
    )
    for name, what in (("create", "a new group of VINs"), ("add", "add VINs to a group")):
        sp = add(group, name, cmd_group, what)
        sp.add_argument("name")
        sp.add_argument("vins", nargs="*" if name == "create" else "+", metavar="VIN")
    sp = add(group, "remove", cmd_group, "remove a VIN from a group")
    sp.add_argument("name")
    sp.add_argument("vin")
    add(group, "list", cmd_group, "list groups")
    for name in ("show", "delete"):
        sp = add(group, name, cmd_group, f"{name} a group")
        sp.add_argument("name")


def cmd_workshop(args: argparse.Namespace) -> int:
    """Offline bundles and carried manifests (director/offline.py, docs/workshop.md)."""
    from director import offline

    d = _director(args)
    action = args.workshop_command
    if action == "bundle":
        _print(offline.build_bundle(d, args.vins, Path(args.out), days=args.days))
    elif action == "upload":
        _print([offline.upload_manifest(d, Path(f).read_bytes()) for f in args.files])
    else:
        _print(offline.list_bundles(d, args.vin))
    return 0


def _workshop_parsers(sub: Any, add: Any) -> None:
    workshop = sub.add_parser(
        "workshop", help="offline update bundles (USB) and manifests carried back"
    ).add_subparsers(dest="workshop_command", required=True)
    sp = add(workshop, "bundle", cmd_workshop, "write an offline bundle for vehicles")
    sp.add_argument("vins", nargs="+", metavar="VIN")
    sp.add_argument("--out", required=True, help="the bundle file to write (NAME.uptane.tar)")
    sp.add_argument("--days", type=float, default=7.0, help="how long the trip may take")
    sp = add(workshop, "upload", cmd_workshop, "take manifests carried back from vehicles")
    sp.add_argument("files", nargs="+", metavar="MANIFEST")
    sp = add(workshop, "list", cmd_workshop, "offline bundles made, with their state")
    sp.add_argument("vin", nargs="?")


def main(argv: list[str] | None = None) -> int:
    """Run a command; every one that changes something leaves a row in the audit log."""
    from director.director_cli_admin import audit_command

    args = build_parser().parse_args(argv)
    status = _run(args)
    try:
        audit_command(args, status)
    except Exception as e:  # the change is made: say its audit row is missing
        print(f"uptane-director: audit log not written: {e}", file=sys.stderr)
    return status


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except (
        UptaneError,
        Conflict,
        KeyConfigError,
        SecretUnavailable,
        TokenError,
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
