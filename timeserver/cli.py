"""``uptane-time-server``: the OEM's Roughtime server (draft-ietf-ntp-roughtime-11).

    uptane-time-server init     --keys OFFLINE_DIR --online ONLINE_DIR [--days 30]
    uptane-time-server delegate --keys OFFLINE_DIR --online ONLINE_DIR [--days 30] [--not-before T]
    uptane-time-server serve    --online ONLINE_DIR [--host 127.0.0.1] [--port 2002]
    uptane-time-server query    HOST:PORT --key longterm.pub

``init`` creates the long-term key (keep OFFLINE_DIR offline) and a first delegation;
``delegate`` renews it with a new online key; ``serve`` loads only the delegation and
prints its address, key and draft; ``query`` asks a server for the time and verifies it.
See docs/secure-time.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from storage import logs as storage_logs
from timeserver.client import TimeServerAddress, fetch_responses
from timeserver.keys import KeyFileError, OnlineIdentity, delegate, init, load_online, read_public
from timeserver.server import TimeServer
from uptane import roughtime as rt
from uptane.errors import DropRequestAttack, UptaneError


def _describe(identity: OnlineIdentity) -> str:
    return (
        f"long-term key {identity.public_b64} (key id {identity.key_id}); "
        f"delegation valid {identity.mint}..{identity.maxt}"
    )


def cmd_init(args: argparse.Namespace) -> int:
    identity = init(Path(args.keys), Path(args.online), now=int(time.time()), days=args.days)
    print(f"created the long-term key in {args.keys} (keep it offline)")
    print(f"delegation in {args.online}: {_describe(identity)}")
    print(f"provision ECUs and Primaries with {Path(args.keys) / 'longterm.pub'}")
    return 0


def cmd_delegate(args: argparse.Namespace) -> int:
    start = int(time.time()) if args.not_before is None else args.not_before
    identity = delegate(Path(args.keys), Path(args.online), not_before=start, days=args.days)
    print(f"renewed the delegation in {args.online}: {_describe(identity)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    identity = load_online(Path(args.online))
    now = int(time.time())
    if not identity.mint <= now <= identity.maxt:
        print(
            f"uptane-time-server: the delegation is valid {identity.mint}..{identity.maxt}, "
            f"not now ({now}); run `uptane-time-server delegate` with the offline key",
            file=sys.stderr,
        )
        return 2
    server = TimeServer(
        identity,
        args.host,
        args.port,
        radius=args.radius,
        batch_window=args.batch_window,
        max_batch=args.max_batch,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    host, port = server.address
    print(
        f"uptane-time-server: serving {rt.DRAFT} (version {rt.VERSION:#x}) on udp {host}:{port}; "
        f"{_describe(identity)}",
        flush=True,
    )
    try:
        server.serve_forever(stop)
    finally:
        server.close()
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    public = read_public(Path(args.key))
    nonce = os.urandom(rt.NONCE_BYTES)
    address = TimeServerAddress.parse(args.server, public)
    (response,) = fetch_responses([address], nonce, timeout=args.timeout, retries=args.retries)
    if response is None:
        raise DropRequestAttack(f"no answer from {args.server}: is the server running there?")
    key = rt.TimeServerKey(args.server, public)
    verified = rt.verify_response(response, nonce, [key], rt.PRIMARY_LIMITS)
    out = {"midpoint": verified.midpoint, "radius": verified.radius, "server": verified.server}
    print(json.dumps(out))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uptane-time-server", description=__doc__.split("\n")[0])
    p.add_argument("-v", "--verbose", action="store_true")
    storage_logs.add_argument(p)
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn in (("init", cmd_init), ("delegate", cmd_delegate)):
        c = sub.add_parser(name, help=f"{name}: see the module help")
        c.add_argument("--keys", required=True, help="the offline directory of the long-term key")
        c.add_argument("--online", required=True, help="the directory `serve` loads")
        c.add_argument("--days", type=int, default=30, help="delegation length (default 30)")
        if name == "delegate":
            c.add_argument("--not-before", type=int, help="window start, POSIX seconds (now)")
        c.set_defaults(fn=fn)
    s = sub.add_parser("serve", help="answer Roughtime requests over UDP")
    s.add_argument("--online", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=2002, help="UDP port (0: any free port)")
    s.add_argument("--radius", type=int, default=rt.MIN_RADIUS, help="RADI, seconds (>= 3)")
    s.add_argument("--batch-window", type=float, default=0.005, help="seconds to batch for")
    s.add_argument("--max-batch", type=int, default=64)
    s.set_defaults(fn=cmd_serve)
    q = sub.add_parser("query", help="ask a server for the time and verify the answer")
    q.add_argument("server", help="HOST:PORT")
    q.add_argument("--key", required=True, help="the server's longterm.pub")
    q.add_argument("--timeout", type=float, default=1.0)
    q.add_argument("--retries", type=int, default=2)
    q.set_defaults(fn=cmd_query)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    storage_logs.setup_agent(args.log_format, verbose=args.verbose)  # issue 19
    try:
        return int(args.fn(args))
    except (KeyFileError, UptaneError, OSError, ValueError) as e:
        print(f"uptane-time-server: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
