"""``uptane-primary``: provision, run and inspect the Primary agent.

    uptane-primary provision --config F --director-root ROOT.json --image-root ROOT.json
    uptane-primary run --config F [--once]
    uptane-primary import-bundle --config F --bundle PATH [--export DIR]
    uptane-primary status --config F

Exit status: 0 on success, 1 when a cycle (``--once``) ended with an error, 2 for a usage
or configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from hardware.progress import progress_bar
from keystore import KeyConfigError, SecretUnavailable, TokenError, generate_in_token, is_uri
from primary.agent import Primary
from primary.config import DIRECTOR, IMAGE, ConfigError, PrimaryConfig, load_config
from primary.cycle import TIME_FORMAT, ProgressFactory
from primary.own import encryption_key_path, load_encryption_key
from primary.state import PrimaryState
from storage import atomic_write
from storage import logs as storage_logs
from uptane.encryption import EncryptionPrivateKey
from uptane.errors import UptaneError
from uptane.keys import ED25519, SCHEMES, PrivateKey, Signer
from uptane.trust import RepositoryTrust

PROG = "uptane-primary"


#: with ``--log-format json``: every step line is a JSON log record on stdout (issue 19)
_json_log: logging.Logger | None = None


def _say(msg: str) -> None:
    if _json_log is not None:
        _json_log.info(msg, extra={"fields": {"event": "step"}})
        return
    print(msg, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="The Uptane Primary ECU agent.")
    storage_logs.add_argument(p)
    sub = p.add_subparsers(dest="command", required=True)

    prov = sub.add_parser("provision", help="write the trusted roots and the ECU key")
    prov.add_argument("--config", required=True, type=Path)
    prov.add_argument("--director-root", required=True, type=Path, help="Director root (JSON)")
    prov.add_argument("--image-root", required=True, type=Path, help="Image repo root (JSON)")
    prov.add_argument(
        "--root",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="the root (JSON) of a repository of [[repositories]]; once for each",
    )
    prov.add_argument(
        "--key-scheme", default=ED25519, choices=SCHEMES, help="scheme of a new ECU key"
    )
    prov.add_argument(
        "--force", action="store_true", help="replace trusted metadata already provisioned"
    )

    run = sub.add_parser("run", help="run update cycles on the poll interval")
    run.add_argument("--config", required=True, type=Path)
    run.add_argument("--once", action="store_true", help="run one cycle and exit")
    run.add_argument(
        "--quiet", action="store_true", help="no step output; a failed cycle's reason only"
    )

    imp = sub.add_parser(
        "import-bundle", help="install an offline update bundle (a file, or a USB stick)"
    )
    imp.add_argument("--config", required=True, type=Path)
    imp.add_argument(
        "--bundle", required=True, type=Path, help="a *.uptane.tar file, or a directory of them"
    )
    imp.add_argument(
        "--export", type=Path, help="write the vehicle's manifest here for the dealer to upload"
    )
    imp.add_argument("--quiet", action="store_true", help="no step output")

    st = sub.add_parser("status", help="trusted versions, installed images, pending work")
    st.add_argument("--config", required=True, type=Path)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    return p


# --- provision -------------------------------------------------------------------------------


def provision(
    cfg: PrimaryConfig,
    director_root: bytes,
    image_root: bytes,
    *,
    key_scheme: str = ED25519,
    force: bool = False,
    roots: Mapping[str, bytes] | None = None,
) -> Signer:
    """Write every repository's initial trusted root (each must be signed by a threshold
    of its own keys): the Director's, the Image repository's, and ``roots`` by name for
    each of ``[[repositories]]``; and, if the key file does not exist yet, a new ECU key.
    Returns the ECU key; its public half is what the Director's inventory registers."""
    limits = cfg.limits
    extra = dict(roots or {})
    wanted = {r.name for r in cfg.repositories}
    if set(extra) != wanted:
        missing, unknown = sorted(wanted - set(extra)), sorted(set(extra) - wanted)
        raise ConfigError(
            f"give a root for each of [[repositories]] (--root NAME=FILE): missing {missing}, "
            f"not configured {unknown}"
        )
    every = {DIRECTOR: director_root, IMAGE: image_root, **extra}
    state = PrimaryState(cfg.storage_dir, limits)
    for name, data in every.items():
        RepositoryTrust(name, data, limits)  # refuses a root that does not verify
        if state.has_root(name) and not force:
            raise ConfigError(f"{name} trust is already provisioned (use --force to replace)")
    for name, data in every.items():
        state.write_root(name, data)
    _encryption_key(cfg)
    return _ecu_key(cfg, key_scheme)


def _encryption_key(cfg: PrimaryConfig) -> None:
    """The Primary's encryption key, when ``[primary] encryption_key`` names one that does
    not exist yet (issue 17: for images encrypted for it; separate from its ECU key)."""
    path = encryption_key_path(cfg)
    if path is not None and not path.exists():
        atomic_write(path, EncryptionPrivateKey.generate().to_pem(), mode=0o600)


def _ecu_key(cfg: PrimaryConfig, scheme: str) -> Signer:
    """The ECU key ``primary.key`` (or ``key_file``) names, made if it does not exist yet:
    a new key file (mode 0600), or a key generated inside the PKCS#11 token, which it
    never leaves."""
    if cfg.key is not None and is_uri(cfg.key):
        try:
            return cfg.open_key()
        except ConfigError:
            pass  # no such key yet (any other token trouble, generating names it too)
        try:
            generate_in_token(cfg.key, scheme, pin_env=cfg.key_pin_env)
        except (KeyConfigError, SecretUnavailable, TokenError) as e:
            raise ConfigError(f"primary.key {cfg.key}: {e}") from None
        return cfg.open_key()
    path = Path(cfg.key_spec)
    if not path.exists():
        atomic_write(path, PrivateKey.generate(scheme).to_pem(), mode=0o600)
    return cfg.open_key()


def cmd_provision(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    key = provision(
        cfg,
        args.director_root.read_bytes(),
        args.image_root.read_bytes(),
        key_scheme=args.key_scheme,
        force=args.force,
        roots=_named_roots(args.root),
    )
    _say(f"provisioned {cfg.ecu_serial} of {cfg.vin} in {cfg.storage_dir}")
    _say(f"ECU key id {key.key.keyid}; public key (register it with the Director):")
    _say(json.dumps(key.key.to_dict(), sort_keys=True))
    enc = load_encryption_key(cfg)
    if enc is not None:
        _say("encryption key (register it with the Director as its encryption_key):")
        _say(json.dumps(enc.public_key().to_dict(), sort_keys=True))
    return 0


def _named_roots(values: list[str]) -> dict[str, bytes]:
    """``--root NAME=FILE`` arguments: each repository's root file, read."""
    out: dict[str, bytes] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path or name in out:
            raise ConfigError(f"--root {value!r}: give NAME=FILE, once per repository")
        out[name] = Path(path).read_bytes()
    return out


# --- run -------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    say = (lambda m: None) if args.quiet else _say
    primary = Primary(cfg, say=say, progress=_bars(args.quiet))
    while True:
        say(f"--- update cycle for {cfg.vin} ---")
        try:
            result = primary.run_cycle()
        except Exception as e:  # e.g. the state directory became unwritable: try again later
            if args.once:
                raise
            print(f"{PROG}: cycle failed: {e}", file=sys.stderr, flush=True)
        else:
            if result.error is not None:
                say(f"cycle ended with an error: {result.error}")
                if args.quiet:  # the reason, even when the steps are not shown
                    print(f"{PROG}: cycle failed: {result.error}", file=sys.stderr, flush=True)
            else:
                say("cycle complete")
            if args.once:
                return 0 if result.error is None else 1
        time.sleep(cfg.poll_interval)


def _bars(quiet: bool) -> ProgressFactory | None:
    """Transfers drawn as progress bars (:mod:`hardware.progress`, tqdm) when standard
    error is a terminal; else (a log, a pipe) the Primary's step lines every 25 percent;
    nothing with ``--quiet``."""
    if quiet or not sys.stderr.isatty():
        return None
    return lambda what: progress_bar(what, stream=sys.stderr, log_steps=0)


# --- import-bundle ---------------------------------------------------------------------------


def cmd_import(args: argparse.Namespace) -> int:
    """One cycle from the offline bundle for this vehicle (primary/offline.py): exit 0 when
    it ended without error, 1 when the bundle (or an ECU) refused, 2 for a local problem."""
    from primary.offline import OfflinePrimary, open_bundle

    cfg = load_config(args.config)
    say = (lambda m: None) if args.quiet else _say
    try:
        bundle = open_bundle(args.bundle, cfg.vin)
    except UptaneError as e:  # none for this vehicle, or a damaged file
        print(f"{PROG}: bundle refused: {e}", file=sys.stderr, flush=True)
        return 1
    with bundle:
        primary = OfflinePrimary(
            cfg, bundle, export=args.export, say=say, progress=_bars(args.quiet)
        )
        result = primary.run_cycle()
    if result.error is not None:
        print(f"{PROG}: bundle refused: {result.error}", file=sys.stderr, flush=True)
        return 1
    say("bundle imported" + (f"; manifest in {primary.exported}" if primary.exported else ""))
    return 0


# --- status ----------------------------------------------------------------------------------


def status_dict(cfg: PrimaryConfig) -> dict[str, object]:
    """What ``status`` prints: trusted versions per repository, installed image per ECU,
    pending work, results and the last error."""
    state = PrimaryState(cfg.storage_dir, cfg.limits)
    repos: dict[str, object] = {}
    for name in cfg.repository_names:
        files = state.read_metadata(name)
        if "root" not in files:
            repos[name] = "not provisioned"
            continue
        try:
            trust = RepositoryTrust.load(name, files, cfg.limits, director=name == DIRECTOR)
            repos[name] = trust.state()
        except UptaneError as e:
            repos[name] = f"unusable: {e}"
    record = state.load_cycle()
    ecus = [cfg.ecu_serial, *(s.serial for s in cfg.secondaries)]
    return {
        "vin": cfg.vin,
        "time": _time_status(cfg, state),
        "repositories": repos,
        "installed": {
            e: (record.installed[e].path if e in record.installed else None) for e in ecus
        },
        "pending": {
            e: {"image": p.target.path, "step": p.step.value}
            for e, p in sorted(record.pending.items())
        },
        "results": record.results,
        "attacks_to_report": record.attacks,
        "last_cycle": record.last_cycle,
        "cycles": record.cycles,
        "last_error": record.last_error,
    }


def _time_status(cfg: PrimaryConfig, state: PrimaryState) -> dict[str, object]:
    """The latest verified time and its source; without ``[time]``, the system clock."""
    latest, source = state.time_record()
    return {
        "signed": cfg.time is not None,
        "latest_verified": None
        if latest is None
        else datetime.fromtimestamp(latest, UTC).strftime(TIME_FORMAT),
        "source": source,
    }


def _time_line(t: dict[str, object]) -> str:
    if t["latest_verified"] is not None:
        source = f" from {t['source']}" if t["source"] else ""
        line = f"latest verified time: {t['latest_verified']}{source}"
        return line if t["signed"] else line + " (no [time] configured now: the system clock)"
    if t["signed"]:
        return "latest verified time: none yet (the system clock until a time server verifies)"
    return "latest verified time: none (no [time] configured: the system clock, unsigned)"


def cmd_status(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    st = status_dict(cfg)
    if args.json:
        _say(json.dumps(st, indent=2, sort_keys=True))
        return 0
    _say(f"vehicle {st['vin']}, {st['cycles']} cycle(s), last {st['last_cycle'] or 'never'}")
    _say(_time_line(st["time"]))  # type: ignore[arg-type]
    for name, info in st["repositories"].items():  # type: ignore[attr-defined]
        if isinstance(info, dict):
            roles = ", ".join(
                f"{r} v{info[r]}" for r in ("root", "timestamp", "snapshot", "targets")
            )
            _say(f"{name}: {roles}")
        else:
            _say(f"{name}: {info}")
    for ecu, path in st["installed"].items():  # type: ignore[attr-defined]
        _say(f"ECU {ecu}: {path or 'nothing installed by this Primary'}")
    pending = st["pending"]
    if pending:
        for ecu, p in pending.items():  # type: ignore[attr-defined]
            _say(f"pending: {ecu} <- {p['image']} ({p['step']})")
    else:
        _say("pending: none")
    for ecu, r in st["results"].items():  # type: ignore[attr-defined]
        if r.get("outcome") != "installed":
            why = f": {r['reason']}" if r.get("reason") else ""
            _say(f"last result: {ecu} {r.get('outcome')}{why}")
    for a in st["attacks_to_report"]:  # type: ignore[attr-defined]
        _say(f"attack seen, not yet reported: {a['attack']} at {a['where']}")
    _say(f"last error: {st['last_error'] or 'none'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    global _json_log
    args = build_parser().parse_args(argv)
    _json_log = None
    if storage_logs.choose(args.log_format, sys.stdout) == "json":
        storage_logs.configure("uptane.primary", "json", stream=sys.stdout)
        _json_log = logging.getLogger("uptane.primary")
    try:
        if args.command == "provision":
            return cmd_provision(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "import-bundle":
            return cmd_import(args)
        return cmd_status(args)
    except (ConfigError, UptaneError, OSError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
