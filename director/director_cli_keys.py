"""``uptane-director`` commands for keys: rotating each role (several online keys with a
threshold, new root holders), the root ceremony (start, sign, status, publish), making a
key pair on a holder's side, and the roles' lifetimes. See docs/key-custody.md."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from director import keyrotation
from director.ceremony import Outcome, Pending, RootChange
from director.ceremony_cli import (
    add_keygen_parser,
    add_signer_parsers,
    load_public_key,
    parse_role_keys,
    parse_role_values,
)
from director.config import Config, default_offline_dir
from director.director import Director
from uptane.keys import SCHEMES


def _offline(args: argparse.Namespace) -> Any:
    off = Path(args.offline_keys) if args.offline_keys else default_offline_dir(Path(args.dir))
    return keyrotation.offline_source(off, args.passphrase_env)


def report(out: Outcome) -> int:
    if out.published:
        print(f"Director root version {out.version} published; vehicles re-signed")
        return 0
    print(f"Director root version {out.version} waits for signatures: {out.pending}")
    for line in out.status:
        print(line)
    print("  each root key holder: uptane-director ceremony sign PENDING --key KEY")
    print(f"  then: uptane-director ceremony publish DIR {out.pending}")
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    d = Director(Path(args.dir))
    try:
        out = keyrotation.rotate_key(
            d.publisher,
            args.role,
            _offline(args),
            d.clock(),
            scheme=args.scheme,
            keys=[load_public_key(k) for k in args.key or []],
            count=args.count,
            threshold=args.threshold,
        )
    finally:
        d.dispose()
    return report(out)


def cmd_ceremony_start(args: argparse.Namespace) -> int:
    d = Director(Path(args.dir))
    try:
        change = RootChange(
            parse_role_keys(args.add_key),
            parse_role_values(args.remove_key, str),
            parse_role_values(args.threshold, int),
        )
        pending = keyrotation.start_root(d.publisher, d.clock(), change)
    finally:
        d.dispose()
    path = (
        Path(args.out)
        if args.out
        else keyrotation.pending_path(Path(args.dir), pending.model().version)
    )
    pending.save(path)
    print(f"pending Director root version {pending.model().version}: {path}")
    for line in pending.status_lines():
        print(line)
    return 0


def cmd_ceremony_publish(args: argparse.Namespace) -> int:
    d = Director(Path(args.dir))
    try:
        version = keyrotation.publish_root(d.publisher, Pending.load(Path(args.pending)))
    finally:
        d.dispose()
    print(f"Director root version {version} published; vehicles re-signed")
    return 0


def cmd_lifetimes(args: argparse.Namespace) -> int:
    """Show or set each role's lifetime in days (``ROLE=DAYS``): the running service takes
    it within a second; targets, snapshot and timestamp are re-signed before half of it is
    gone, root at its next rotation or ceremony."""
    path = Path(args.dir) / "director.json"
    cfg = Config.load(path)
    from director.image_config import check_expiry

    for item in args.set or []:
        role, sep, days = item.partition("=")
        if not sep or role not in keyrotation.ROLES:
            raise ValueError(f"bad {item!r}: use ROLE=DAYS with ROLE one of {keyrotation.ROLES}")
        cfg.expiry_days.update(check_expiry({role: float(days)}))
    if args.set:
        cfg.save(path)
    for role, days in sorted(cfg.expiry_days.items()):
        print(f"{role}: {days:g} days")
    return 0


def add_parsers(sub: Any, add: Any) -> None:
    """Register the key commands (``add`` makes a command taking DIR)."""

    def offline(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--offline-keys", help="root key directory (default DIR.offline-keys)")
        sp.add_argument("--passphrase-env", help="variable holding those keys' passphrase")

    sp = add(sub, "rotate-key", cmd_rotate_key, "new key(s) for a role; next root signed offline")
    sp.add_argument("role", choices=list(keyrotation.ROLES))
    offline(sp)
    sp.add_argument("--scheme", choices=SCHEMES, default="ed25519")
    sp.add_argument("--key", action="append", help="root: a new holder's public key (repeat)")
    sp.add_argument("--count", type=int, default=1, help="online roles: keys to make")
    sp.add_argument("--threshold", type=int, help="signatures needed from the new keys")
    sp = add(sub, "lifetimes", cmd_lifetimes, "show or set each role's lifetime")
    sp.add_argument("--set", action="append", help="ROLE=DAYS (repeat)")
    add_keygen_parser(sub)
    ceremony = sub.add_parser("ceremony", help="threshold signing of the Director root")
    cer = ceremony.add_subparsers(dest="ceremony_command", required=True)
    sp = add(cer, "start", cmd_ceremony_start, "write the next root, to be signed")
    sp.add_argument("--add-key", action="append", help="ROLE:PUBLIC_KEY_FILE")
    sp.add_argument("--remove-key", action="append", help="ROLE:KEYID")
    sp.add_argument("--threshold", action="append", help="ROLE:T")
    sp.add_argument("--out", help="where to write the pending file")
    add_signer_parsers(cer)
    sp = add(cer, "publish", cmd_ceremony_publish, "publish a root that met its thresholds")
    sp.add_argument("pending")
