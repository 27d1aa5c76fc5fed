"""``uptane-director`` commands of accountable access and vehicle identity (issue 19):
API tokens (``token add|list|revoke``), the audit log (``audit``), TLS (``tls init-ca``,
``tls server-cert``) and vehicles' client certificates (``cert issue|add|list|revoke``).
Each works on the database of ``director.json``, as the running nodes do: a token or a
revocation counts on every node from the next request. Every change made here is a row of
the audit log (:func:`audit_command`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from director import inventory as inv
from director import tls
from director.audit import Audit, cli_actor
from director.certs import Certificates
from director.cluster import Cluster
from director.common import utcnow
from director.config import Config
from director.tokens import SCOPES, Tokens
from storage import atomic_write

#: commands that only read (no audit row); the others change something
READS = {
    "vehicle show",
    "vehicle list",
    "status",
    "serve",
    "campaign list",
    "campaign show",
    "campaign vehicles",
    "group list",
    "group show",
    "token list",
    "cert list",
    "audit",
    "workshop list",
    "ceremony status",
    "ceremony sign",
    "keygen",
    "tls server-cert",
}
#: arguments never written to the audit log (secrets live in variables, never argv; this
#: keeps even their names out)
_PRIVATE = ("pass", "pin", "token", "secret")


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def command_name(args: argparse.Namespace) -> str:
    """``vehicle add``, ``token revoke``, ``assign``: the command as typed."""
    subs = [str(v) for k, v in sorted(vars(args).items()) if k.endswith("_command") and v]
    return " ".join([str(args.command), *subs])


def audit_command(args: argparse.Namespace, status: int) -> None:
    """One audit row for a command that changes something (status 0: done, else the
    exit status); nothing for a read, or where there is no Director database yet."""
    name = command_name(args)
    directory = getattr(args, "dir", None)
    if name in READS or not directory:
        return
    config_file = Path(directory) / "director.json"
    if not config_file.exists():
        return
    detail = {
        k: v
        for k, v in vars(args).items()
        if k not in ("func", "dir", "command")
        and not k.endswith("_command")
        and not any(p in k for p in _PRIVATE)
        and isinstance(v, str | int | float | list | type(None))
    }
    cfg = Config.load(config_file)
    engine = inv.make_engine(cfg.db_url)
    try:
        Audit(engine, utcnow, "cli").record(
            cli_actor(), f"cli {name}", target=str(directory), status=status, detail=detail
        )
    finally:
        engine.dispose()


class _Admin:
    """A Director's configuration and database, without its keys (these commands sign
    no metadata)."""

    def __init__(self, directory: str) -> None:
        self.dir = Path(directory)
        self.config = Config.load(self.dir / "director.json")
        self.engine = inv.make_engine(self.config.db_url)
        self.tokens = Tokens(self.engine, self.config, utcnow)
        self.certs = Certificates(
            self.engine,
            self.dir,
            self.config.tls_settings(self.dir),
            clock=utcnow,
            cache_seconds=lambda: 0.0,
        )
        # a revocation reaches every running node at once (PostgreSQL NOTIFY)
        self.certs.on_change = Cluster(self.engine, {}).announce

    def __enter__(self) -> _Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.dispose()


def cmd_token(args: argparse.Namespace) -> int:
    with _Admin(args.dir) as a:
        a.tokens.import_legacy()
        action = args.token_command
        if action == "list":
            _print(a.tokens.list_tokens())
        elif action == "revoke":
            _print(a.tokens.revoke(args.name))
        else:
            scopes = args.scope or (["admin"] if args.role == "admin" else ["read"])
            name = args.name or f"{args.role}-{_short_id()}"
            lifetime = None if args.never_expires else int(args.expires_days * 86400)
            made = a.tokens.create(name, scopes, lifetime=lifetime, created_by=cli_actor())
            print(
                f"token {made['name']} ({' '.join(made['scopes'])}), expires"
                f" {made['expires_at'] or 'never'}; shown once, store it safely:"
            )
            print(made["token"])
    return 0


def _short_id() -> str:
    import secrets

    return secrets.token_hex(4)


def cmd_audit(args: argparse.Namespace) -> int:
    with _Admin(args.dir) as a:
        _print(Audit(a.engine, utcnow, "cli").entries(limit=args.limit, actor=args.actor))
    return 0


def cmd_tls(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    ca_dir = directory / tls.VEHICLE_CA_DIR
    if args.tls_command == "init-ca":
        if (ca_dir / tls.CA_KEY).exists():
            raise FileExistsError(f"{ca_dir} already holds a CA")
        tls.Ca.create(args.name, days=args.days).save(ca_dir)
        print(f"vehicle CA in {ca_dir}: give {ca_dir / tls.CA_CERT} to vehicles (server CA)")
        print("and name it in director.json tls.client_ca to accept the certificates it issues")
        return 0
    ca = tls.Ca.load(ca_dir)
    key = tls.new_key()
    cert = ca.issue(
        args.hosts[0], key.public_key(), days=args.days, client=False, hosts=tuple(args.hosts)
    )
    atomic_write(Path(args.key_out), tls.key_pem(key), mode=0o600)
    atomic_write(Path(args.out), tls.pem(cert).encode(), mode=0o644)
    print(f"server certificate for {', '.join(args.hosts)}: {args.out} (key {args.key_out})")
    return 0


def cmd_cert(args: argparse.Namespace) -> int:
    with _Admin(args.dir) as a:
        action = args.cert_command
        if action == "list":
            _print(a.certs.list_bound(args.vin))
        elif action == "revoke":
            _print(a.certs.revoke(args.fingerprint))
        elif action == "add":
            _print(a.certs.accept(args.vin, Path(args.certificate).read_bytes()))
        else:
            _issue(a, args)
    return 0


def _issue(a: _Admin, args: argparse.Namespace) -> None:
    if args.csr:
        bound = a.certs.issue(args.vin, Path(args.csr).read_bytes(), days=args.days)
    else:
        if not args.key_out:
            raise ValueError("give --csr REQUEST.pem, or --key-out KEY.pem to make the key here")
        bound, key = a.certs.issue_with_key(args.vin, days=args.days)
        atomic_write(Path(args.key_out), key, mode=0o600)
    atomic_write(Path(args.out), bound["certificate"].encode(), mode=0o644)
    print(f"bound {bound['fingerprint']} to {args.vin}; certificate in {args.out}")


def schema_behind(db_url: str) -> str | None:
    """Why the database is not at the newest schema (what to run), or None when it is."""
    from alembic.config import Config as AlembicConfig
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(inv.MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    engine = inv.make_engine(db_url)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    if current == head:
        return None
    return (
        f"the database is at schema {current or 'none'}, this version needs {head}: "
        "run `uptane-director upgrade DIR` once (one node), then start the nodes"
    )


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Bring the database to the newest schema and copy director.json's tokens in."""
    cfg = Config.load(Path(args.dir) / "director.json")
    inv.migrate(cfg.db_url)
    with _Admin(args.dir) as a:
        copied = a.tokens.import_legacy()
    print(f"database at the newest schema; {copied} token(s) from director.json copied in")
    return 0


def add_parsers(sub: Any, add: Any) -> None:
    """Register ``token``, ``audit``, ``tls``, ``cert`` and ``upgrade`` (``add`` makes a
    command taking DIR)."""
    add(sub, "upgrade", cmd_upgrade, "bring the database to this version's schema")
    token = sub.add_parser("token", help="API tokens").add_subparsers(
        dest="token_command", required=True
    )
    sp = add(token, "add", cmd_token, "create a named API token with scopes and an expiry")
    sp.add_argument("--name", help="who holds it (default ROLE-XXXXXXXX)")
    sp.add_argument("--scope", action="append", choices=SCOPES, help="repeat; default: by --role")
    sp.add_argument(
        "--role",
        choices=["admin", "viewer"],
        default="viewer",
        help="before scopes: admin (scope admin) or viewer (scope read)",
    )
    sp.add_argument("--expires-days", type=float, default=90.0, help="lifetime (default 90)")
    sp.add_argument("--never-expires", action="store_true", help="a service account's token")
    add(token, "list", cmd_token, "every token: name, scopes, expiry, state")
    sp = add(token, "revoke", cmd_token, "revoke a token: refused from the next request")
    sp.add_argument("name")
    sp = add(sub, "audit", cmd_audit, "the audit log, newest first")
    sp.add_argument("--limit", type=int, default=50)
    sp.add_argument("--actor", help="only this token name or cli:USER")
    _tls_parsers(sub, add)


def _tls_parsers(sub: Any, add: Any) -> None:
    tls_sub = sub.add_parser(
        "tls", help="TLS: the vehicle CA, a server certificate"
    ).add_subparsers(dest="tls_command", required=True)
    sp = add(tls_sub, "init-ca", cmd_tls, "make the CA vehicles' client certificates come from")
    sp.add_argument("--name", default="Uptane vehicle CA")
    sp.add_argument("--days", type=float, default=3650)
    sp = add(tls_sub, "server-cert", cmd_tls, "a server certificate from that CA (trials)")
    sp.add_argument("--host", dest="hosts", action="append", required=True, help="repeat")
    sp.add_argument("--out", required=True, help="certificate file (PEM)")
    sp.add_argument("--key-out", required=True, help="key file (PEM, mode 0600)")
    sp.add_argument("--days", type=float, default=825)
    cert = sub.add_parser("cert", help="vehicles' client certificates (mutual TLS)")
    csub = cert.add_subparsers(dest="cert_command", required=True)
    sp = add(csub, "issue", cmd_cert, "issue a vehicle's certificate from the vehicle CA, bound")
    sp.add_argument("vin")
    sp.add_argument("--csr", help="the vehicle's certificate request (PEM)")
    sp.add_argument("--key-out", help="or make the key here and write it to this file")
    sp.add_argument("--out", required=True, help="certificate file (PEM)")
    sp.add_argument("--days", type=float, default=825)
    sp = add(csub, "add", cmd_cert, "bind a certificate of the OEM's PKI to a vehicle")
    sp.add_argument("vin")
    sp.add_argument("certificate", help="PEM file")
    sp = add(csub, "list", cmd_cert, "bound certificates")
    sp.add_argument("vin", nargs="?")
    sp = add(csub, "revoke", cmd_cert, "revoke a certificate by its SHA-256 fingerprint")
    sp.add_argument("fingerprint")


__all__ = ["READS", "add_parsers", "audit_command", "command_name"]
