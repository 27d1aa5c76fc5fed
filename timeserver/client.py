"""Ask one or several Roughtime servers for the time, over UDP, with a caller's nonce.

:func:`fetch_responses` returns the raw response packets; verifying them is
:func:`uptane.roughtime.verify_response` (a Primary for itself) or
:func:`uptane.roughtime.accept_token` (an ECU, from what its Primary forwards). A Primary
that serves ECUs sends the root of its ECUs' nonces (:func:`uptane.roughtime.commit_nonces`)
as the nonce; see docs/secure-time.md.

Every server gets its request at once; a server that has not answered after ``timeout``
seconds is asked again, ``retries`` times, so the whole call takes at most
``timeout * (retries + 1)`` seconds. Of the datagrams a server's socket receives, the first
whose NONC is this request's is kept (a cheap filter, not a verification: stray or stale
datagrams do not displace the answer).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from uptane import roughtime as rt
from uptane.errors import UptaneError

_RECV = 65_535


@dataclass(frozen=True)
class TimeServerAddress:
    """Where a time server listens, and its long-term key when known (sent as SRV)."""

    host: str
    port: int
    public_key: bytes | None = None

    @classmethod
    def parse(cls, text: str, public_key: bytes | None = None) -> TimeServerAddress:
        """``HOST:PORT`` (``[V6ADDR]:PORT`` for IPv6)."""
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"a time server address is HOST:PORT, not {text!r}")
        return cls(host.strip("[]"), int(port), public_key)


def _answers(data: bytes, nonce: bytes, limits: rt.TimeLimits) -> bool:
    try:
        return rt.parse_response(data, limits).nonce == nonce
    except UptaneError:
        return False


def _open(server: TimeServerAddress) -> socket.socket:
    family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    # connected: the kernel drops datagrams from any other address
    sock.connect((server.host, server.port))
    return sock


def _send_round(
    sel: selectors.BaseSelector,
    socks: list[socket.socket],
    pending: list[int],
    requests: list[bytes],
    results: list[bytes | None],
    nonce: bytes,
    timeout: float,
    limits: rt.TimeLimits,
) -> None:
    """Send to every pending server, then read answers until all came or ``timeout``."""
    for i in pending:
        # an OSError here is e.g. an ICMP port unreachable from the last round: retry later
        with contextlib.suppress(OSError):
            socks[i].send(requests[i])
    deadline = time.monotonic() + timeout
    while any(results[i] is None for i in pending):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        for key, _ in sel.select(remaining):
            try:
                data = socks[key.data].recv(_RECV)
            except OSError:
                continue
            if results[key.data] is None and _answers(data, nonce, limits):
                results[key.data] = data


def fetch_responses(
    servers: Sequence[TimeServerAddress],
    nonce: bytes,
    *,
    timeout: float = 1.0,
    retries: int = 2,
    limits: rt.TimeLimits = rt.PRIMARY_LIMITS,
) -> list[bytes | None]:
    """One request carrying ``nonce`` to each server; each server's response packet, in
    the order of ``servers`` (None where a server never answered)."""
    requests = [rt.build_request(nonce, server_key=s.public_key) for s in servers]
    results: list[bytes | None] = [None] * len(servers)
    socks = [_open(s) for s in servers]
    try:
        with selectors.DefaultSelector() as sel:
            for i, sock in enumerate(socks):
                sel.register(sock, selectors.EVENT_READ, i)
            for _ in range(retries + 1):
                pending = [i for i, r in enumerate(results) if r is None]
                if not pending:
                    break
                _send_round(sel, socks, pending, requests, results, nonce, timeout, limits)
    finally:
        for sock in socks:
            sock.close()
    return results
