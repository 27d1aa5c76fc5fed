"""A UDP Roughtime server (draft-ietf-ntp-roughtime-11) for the OEM's vehicles.

One thread reads datagrams. After the first request of a batch it keeps reading for
``batch_window`` seconds (or until ``max_batch`` requests): every request of the batch is
answered from one Merkle tree and one Ed25519 signature (:func:`uptane.roughtime.sign_batch`),
so signing costs once per batch, not once per vehicle.

Requests are ignored, never answered with an error, when the draft says so: shorter than
1024 bytes (no amplification), naming another server's key (SRV), without this draft's
version; and when the server's own clock is outside its delegation's window (the operator
must run ``uptane-time-server delegate``; it is logged). A response is never longer than
its request.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

from timeserver.keys import OnlineIdentity
from uptane import roughtime as rt
from uptane.errors import UptaneError

log = logging.getLogger("uptane.timeserver")

_RECV = 65_535
#: how often serve_forever looks at its stop event while no request arrives
_IDLE = 0.5


class TimeServer:
    """Answers Roughtime requests on one UDP socket with one delegation."""

    def __init__(
        self,
        identity: OnlineIdentity,
        host: str = "127.0.0.1",
        port: int = 2002,
        *,
        radius: int = rt.MIN_RADIUS,
        batch_window: float = 0.005,
        max_batch: int = 64,
        limits: rt.TimeLimits = rt.PRIMARY_LIMITS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` is the server's clock (POSIX seconds): the system's by default; a
        simulation of a vehicle parked for months gives another (tests/primary)."""
        if radius < rt.MIN_RADIUS:
            raise ValueError(f"draft 11 §6.2.5: RADI is at least {rt.MIN_RADIUS} seconds")
        self.identity = identity
        self.radius = radius
        self.batch_window = batch_window
        self.max_batch = max(1, max_batch)
        self.limits = limits
        self.clock = clock
        self._srv = rt.server_id(identity.long_term_public)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self._warned = 0.0

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def serve_forever(self, stop: threading.Event) -> None:
        """Answer batches until ``stop`` is set."""
        while not stop.is_set():
            batch = self._collect()
            if batch:
                self._answer(batch)

    def close(self) -> None:
        self.sock.close()

    def _collect(self) -> list[tuple[bytes, tuple[str, int]]]:
        """The requests of one batch: the first one (waiting at most ``_IDLE``), then all
        that arrive within ``batch_window`` of it."""
        self.sock.settimeout(_IDLE)
        try:
            batch = [self.sock.recvfrom(_RECV)]
        except (TimeoutError, BlockingIOError, InterruptedError):
            return []
        deadline = time.monotonic() + self.batch_window
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(remaining)
            try:
                batch.append(self.sock.recvfrom(_RECV))
            except (TimeoutError, BlockingIOError, InterruptedError):
                break
        return batch

    def _accept(self, data: bytes) -> rt.Request | None:
        try:
            request = rt.parse_request(data, self.limits)
        except UptaneError as e:
            log.debug("ignored a request: %s", e)
            return None
        if request.server is not None and request.server != self._srv:
            log.debug("ignored a request for another server key")
            return None
        return request

    def _answer(self, batch: list[tuple[bytes, tuple[str, int]]]) -> None:
        """One tree and one signature for every acceptable request of ``batch``."""
        accepted = [(r, data, peer) for data, peer in batch if (r := self._accept(data))]
        if not accepted:
            return
        now = int(self.clock())
        if not self.identity.mint <= now <= self.identity.maxt:
            self._warn_window(now)
            return
        responses = rt.sign_batch(
            [r.nonce for r, _, _ in accepted],
            midpoint=now,
            radius=self.radius,
            certificate=self.identity.certificate,
            online_key=self.identity.online_key,
        )
        for (_, data, peer), response in zip(accepted, responses, strict=True):
            if len(response) > len(data):  # §6.1: never larger than the request
                continue
            try:
                self.sock.sendto(response, peer)
            except OSError as e:
                log.debug("could not answer %s: %s", peer, e)

    def _warn_window(self, now: int) -> None:
        if time.monotonic() - self._warned > 60 or not self._warned:
            self._warned = time.monotonic()
            log.error(
                "not answering: the time %d is outside the delegation's window %d..%d; "
                "run `uptane-time-server delegate` with the offline long-term key",
                now,
                self.identity.mint,
                self.identity.maxt,
            )
