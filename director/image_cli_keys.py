"""``uptane-image-repo`` commands for keys: ceremonies (start, publish), rotation of every
role, delegations (suppliers' public keys, thresholds, TAP 3 multi-role, hash bins,
revocation) and lifetimes. See docs/key-custody.md."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from director import image_delegations as delegations
from director import image_keys
from director.ceremony import Pending
from director.ceremony_cli import (
    add_signer_parsers,
    load_public_key,
    parse_role_keys,
    parse_role_values,
)
from director.image_config import ImageRepoConfig, check_expiry
from director.image_keys import Outcome, RootChange
from director.image_repo import ImageRepository
from uptane.keys import SCHEMES, Key

Opener = Callable[..., ImageRepository]


def report(outs: list[Outcome]) -> int:
    """Print what each change came to: published, or the pending file to pass on."""
    for out in outs:
        if out.published:
            print(f"published {out.role} version {out.version}")
        else:
            print(f"{out.role} version {out.version} waits for signatures: {out.pending}")
            for line in out.status:
                print(line)
            print("  each key holder: uptane-image-repo ceremony sign PENDING --key KEY")
    return 0


def cmd_ceremony_start(args: argparse.Namespace, open_repo: Opener, now: Any) -> int:
    repo = open_repo(args)
    if args.role == "root":
        change = RootChange(
            parse_role_keys(args.add_key),
            parse_role_values(args.remove_key, str),
            parse_role_values(args.threshold, int),
        )
        pending = image_keys.start_root(repo, now(), change)
    else:
        under = Pending.load(Path(args.under)) if args.under else None
        pending = image_keys.start_targets(repo, now(), under=under)
    path = (
        Path(args.out)
        if args.out
        else image_keys.pending_path(repo.paths.root, args.role, pending.model().version)
    )
    pending.save(path)
    print(f"pending {args.role} version {pending.model().version}: {path}")
    for line in pending.status_lines():
        print(line)
    return 0


def cmd_ceremony_publish(args: argparse.Namespace, open_repo: Opener, now: Any) -> int:
    repo = open_repo(args)
    found: dict[str, Pending] = {}
    for p in args.pending:
        pending = Pending.load(Path(p))
        found[pending.role] = pending
    image_keys.publish(repo, now(), root=found.get("root"), targets=found.get("targets"))
    for role, pending in sorted(found.items()):
        print(f"published {role} version {pending.model().version}")
    return 0


def cmd_rotate(args: argparse.Namespace, open_repo: Opener, now: Any) -> int:
    repo = open_repo(args, offline=True)
    keys = [load_public_key(k) for k in args.key or []]
    if args.role in image_keys.ONLINE_ROLES:
        outs = [
            image_keys.rotate_online(
                repo, now(), args.role, args.scheme, count=args.count, threshold=args.threshold
            )
        ]
    elif args.role == delegations.BINS_KEY:
        outs = [delegations.rotate_bins(repo, now(), args.scheme)]
    else:
        outs = image_keys.rotate_offline(
            repo, now(), args.role, keys, threshold=args.threshold, scheme=args.scheme
        )
    return report(outs)


def _members(items: list[str] | None) -> list[tuple[str, list[Key], int]]:
    """``ROLE=KEYFILE[,KEYFILE...][@THRESHOLD]`` -> TAP 3 member roles."""
    out = []
    for item in items or []:
        name, sep, rest = item.partition("=")
        if not sep:
            raise ValueError(f"bad --member {item!r}: use ROLE=KEYFILE[,KEYFILE][@T]")
        files, _, t = rest.partition("@")
        out.append((name, [load_public_key(f) for f in files.split(",")], int(t or 1)))
    return out


def cmd_delegate(args: argparse.Namespace, open_repo: Opener, now: Any) -> int:
    repo = open_repo(args, offline=True)
    out, tokens = repo.delegate(
        args.role,
        args.path,
        args.hardware_id or [],
        now(),
        keys=[load_public_key(k) for k in args.key or []],
        threshold=args.threshold,
        terminating=not args.non_terminating,
        members=_members(args.member),
        agree=args.agree,
    )
    report([out])
    for role, token in tokens.items():
        print(f"upload token for {role} (shown once; give it to the supplier):")
        print(token)
    return 0


def cmd_revoke(args: argparse.Namespace, open_repo: Opener, now: Any) -> int:
    repo = open_repo(args, offline=True)
    if args.remove_key or args.add_key or args.threshold:
        out = delegations.change_keys(
            repo,
            now(),
            args.role,
            add=[load_public_key(k) for k in args.add_key or []],
            remove=args.remove_key or [],
            threshold=args.threshold,
        )
    else:
        out = delegations.revoke(repo, now(), args.role)
    return report([out])


def cmd_bins(args: argparse.Namespace, open_repo: Opener, now: Any) -> int:
    repo = open_repo(args, offline=True)
    return report([delegations.delegate_bins(repo, now(), args.bits, args.prefix)])


def cmd_lifetimes(args: argparse.Namespace, open_repo: Opener, now: Any) -> int:
    """Show or set each role's lifetime (``ROLE=DAYS``); online roles take it at their
    next re-signing, offline ones at their next ceremony."""
    cfg = ImageRepoConfig.load(Path(args.dir))
    for item in args.set or []:
        role, sep, days = item.partition("=")
        if not sep:
            raise ValueError(f"bad {item!r}: use ROLE=DAYS")
        cfg.expiry_days.update(check_expiry({role: float(days)}))
    if args.set:
        cfg.save(Path(args.dir))
    for role, days in sorted(cfg.expiry_days.items()):
        print(f"{role}: {days:g} days")
    return 0


def add_parsers(sub: Any, add: Callable[..., argparse.ArgumentParser], wrap: Callable) -> None:
    """Register the key commands; ``add`` makes a command taking DIR, ``wrap`` binds a
    handler to the repository opener and the clock."""
    sp = add("delegate", wrap(cmd_delegate), "delegate paths to a supplier's key(s)", offline=True)
    sp.add_argument("role")
    sp.add_argument("--path", action="append", required=True, help="path pattern")
    sp.add_argument("--key", action="append", help="the supplier's public key file (repeat)")
    sp.add_argument("--threshold", type=int, default=1, help="keys needed to sign")
    sp.add_argument("--hardware-id", action="append")
    sp.add_argument("--non-terminating", action="store_true")
    sp.add_argument("--member", action="append", help="TAP 3: ROLE=KEYFILE[,KEYFILE][@T]")
    sp.add_argument("--agree", type=int, help="TAP 3: member roles that must agree")
    sp = add("revoke", wrap(cmd_revoke), "revoke a delegation, or change its keys", offline=True)
    sp.add_argument("role")
    sp.add_argument("--remove-key", action="append", help="key id (or its first digits)")
    sp.add_argument("--add-key", action="append", help="public key file")
    sp.add_argument("--threshold", type=int)
    sp = add("delegate-bins", wrap(cmd_bins), "succinct hash-bin delegation", offline=True)
    sp.add_argument("--bits", type=int, default=8, help="2**BITS bins (default 256)")
    sp.add_argument("--prefix", default="bin")
    sp = add("rotate", wrap(cmd_rotate), "new keys for a role", offline=True)
    sp.add_argument("role", choices=["root", "targets", "snapshot", "timestamp", "bins"])
    sp.add_argument("--key", action="append", help="new holder's public key file (repeat)")
    sp.add_argument("--threshold", type=int)
    sp.add_argument("--count", type=int, default=1, help="online keys to make")
    sp.add_argument("--scheme", choices=SCHEMES, default="ed25519")
    sp = add("lifetimes", wrap(cmd_lifetimes), "show or set each role's lifetime")
    sp.add_argument("--set", action="append", help="ROLE=DAYS (repeat)")
    ceremony = sub.add_parser("ceremony", help="threshold signing").add_subparsers(
        dest="ceremony_command", required=True
    )
    sp = ceremony.add_parser("start", help="write the next root or targets, to be signed")
    sp.add_argument("dir", help="repository directory")
    sp.add_argument("role", choices=["root", "targets"])
    sp.add_argument("--add-key", action="append", help="root: ROLE:PUBLIC_KEY_FILE")
    sp.add_argument("--remove-key", action="append", help="root: ROLE:KEYID")
    sp.add_argument("--threshold", action="append", help="root: ROLE:T")
    sp.add_argument("--under", help="targets: the pending root it is published with")
    sp.add_argument("--out", help="where to write the pending file")
    sp.set_defaults(func=wrap(cmd_ceremony_start))
    add_signer_parsers(ceremony)
    sp = ceremony.add_parser("publish", help="publish pending file(s) that met threshold")
    sp.add_argument("dir", help="repository directory")
    sp.add_argument("pending", nargs="+", help="a pending root and/or targets")
    sp.set_defaults(func=wrap(cmd_ceremony_publish))
