"""The Primary's time (§5.4.2 steps 2 and 5): verified from the OEM's time servers and
forwarded to every Secondary as a token each one checks itself (issue 21).

With ``[time]`` configured, :meth:`Timekeeper.sync` at the start of a cycle:

1. asks every Secondary for a fresh nonce (``GET_TIME_NONCE``) and draws one of its own;
2. commits them all into one Roughtime nonce (:func:`uptane.roughtime.commit_nonces`) and
   asks every configured server once (:func:`timeserver.client.fetch_responses`);
3. verifies each response for itself (§6.4 of draft 11) and applies its clock policy
   against its own last verified time (kept in the state): that is the cycle's ``now``;
4. forwards each Secondary its token (``PUT_TIME``): the verified responses and the path
   from that ECU's nonce to the signed root. The Secondary's clock moves only if its own
   checks pass.

:meth:`Timekeeper.refresh` does the same for one Secondary right before INSTALL, so an
approval that expired while a long transfer ran is refused there (docs/secure-time.md).

When no time server answers or verifies, the cycle goes on with the system clock (never
before the last verified time) and no ECU's clock moves. Without ``[time]`` the Primary
keeps the older rule: its :class:`~primary.timesource.TimeSource` is the time and each
Secondary gets it unsigned. Nothing here decides what is trustworthy: :mod:`uptane` does.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime

from primary.config import TimeConfig
from primary.secondaries import SecondaryPort, is_unreachable
from primary.state import PrimaryState
from primary.timesource import TimeSource
from timeserver.client import TimeServerAddress, fetch_responses
from uptane import roughtime as rt
from uptane.errors import (
    BadSignature,
    MalformedInput,
    ReplayAttack,
    UnsignedTime,
    UptaneError,
)

#: errors in a time response that name an attack on the way to the Primary (the others
#: are an operator's or a server clock's problem)
_ATTACKS = (BadSignature, ReplayAttack, MalformedInput)


def time_source(decision: rt.TimeDecision) -> str:
    """Where a verified time came from, for the state and ``status``: the server whose
    interval the others agreed with, and how many servers agreed."""
    more = f" ({decision.servers} servers agreed)" if decision.servers > 1 else ""
    return f"time server {decision.agreed.server}{more}"


class Timekeeper:
    """The cycle's time (a :class:`~primary.timesource.TimeSource`: :meth:`now` is the
    time the cycle verified, or the fallback) and the tokens forwarded to Secondaries."""

    def __init__(
        self,
        config: TimeConfig | None,
        source: TimeSource,
        state: PrimaryState,
    ) -> None:
        self.config = config
        self.source = source
        self.state = state
        self._now: datetime | None = None
        #: what the last sync or refresh did, for the cycle's lines and tests
        self.notes: list[str] = []
        #: attacks seen in time responses (the cycle records them)
        self.attacks: list[UptaneError] = []

    @property
    def signed(self) -> bool:
        return self.config is not None

    def now(self) -> datetime:
        return self._now if self._now is not None else self.source.now()

    # --- a cycle's start, and before an INSTALL -----------------------------------------

    def sync(self, ports: Mapping[str, SecondaryPort]) -> tuple[datetime, dict[str, UptaneError]]:
        """The cycle's time, given to every Secondary; returns it and the Secondaries that
        did not answer (by serial, with the link error)."""
        self.notes.clear()
        if self.config is None:
            self._now = self.source.now()
            return self._now, self._unsigned(ports)
        nonces: dict[str, bytes] = {}
        lost: dict[str, UptaneError] = {}
        for serial, port in ports.items():
            try:
                nonces[serial] = port.time_nonce()
            except UptaneError as e:
                if is_unreachable(e):
                    lost[serial] = e
                else:
                    self.notes.append(f"{serial}: no time nonce ({e})")
        self._signed_round(self.config, {s: ports[s] for s in nonces}, nonces)
        return self.now(), lost

    def refresh(self, port: SecondaryPort) -> None:
        """Fresh signed time for one Secondary (before INSTALL); without ``[time]`` or
        when its nonce cannot be had, nothing (its clock stays as it is)."""
        self.notes.clear()
        if self.config is None:
            return
        try:
            nonce = port.time_nonce()
        except UptaneError as e:
            self.notes.append(f"{port.serial}: no time nonce before INSTALL ({e})")
            return
        self._signed_round(self.config, {port.serial: port}, {port.serial: nonce})

    def refresh_own(self) -> None:
        """Fresh verified time for the Primary itself (before its own install)."""
        self.notes.clear()
        if self.config is not None:
            self._signed_round(self.config, {}, {})

    # --- internals ----------------------------------------------------------------------

    def _unsigned(self, ports: Mapping[str, SecondaryPort]) -> dict[str, UptaneError]:
        """The older rule: each Secondary gets the TimeSource's time, unsigned."""
        seconds = int(self.now().timestamp())
        lost: dict[str, UptaneError] = {}
        for serial, port in ports.items():
            try:
                port.put_time(seconds)
            except UnsignedTime as e:
                self.notes.append(f"{serial}: {e.message} (configure [time])")
            except UptaneError as e:
                if is_unreachable(e):
                    lost[serial] = e
                else:
                    self.notes.append(f"{serial}: time refused ({e})")
        return lost

    def _signed_round(
        self, config: TimeConfig, ports: Mapping[str, SecondaryPort], nonces: dict[str, bytes]
    ) -> None:
        """One request to every server carrying every nonce (the Primary's own last), the
        responses verified here, the new time kept, each Secondary its token."""
        serials = list(nonces)
        commitment = rt.commit_nonces([*nonces.values(), secrets.token_bytes(rt.NONCE_BYTES)])
        got = self._verified_responses(config, commitment.nonce)
        if not got:
            self._fallback("no time server gave a verified time")
            return
        try:
            decision = rt.decide_time(self.state.load_time(), [v for _, v in got], config.policy)
        except UptaneError as e:
            self._fallback(str(e))
            return
        self.state.save_time(decision.latest, time_source(decision))
        self._now = datetime.fromtimestamp(decision.latest, UTC)
        self.notes.append(
            f"verified time {self._now:%Y-%m-%dT%H:%M:%SZ} from {decision.agreed.server}"
        )
        packets = [raw for raw, _ in got]
        for i, serial in enumerate(serials):
            token = commitment.token(i, packets).to_bytes()
            self._forward(ports[serial], decision.latest, token)

    def _verified_responses(
        self, config: TimeConfig, nonce: bytes
    ) -> list[tuple[bytes, rt.VerifiedTime]]:
        servers = [TimeServerAddress(s.host, s.port, s.key.public_key) for s in config.servers]
        try:
            raw = fetch_responses(servers, nonce, timeout=config.timeout, retries=config.retries)
        except OSError as e:  # no route, a name that does not resolve
            self.notes.append(f"time servers unreachable: {e}")
            return []
        out = []
        for server, data in zip(config.servers, raw, strict=True):
            if data is None:
                self.notes.append(f"time server {server.key.name} did not answer")
                continue
            try:
                out.append((data, rt.verify_response(data, nonce, config.keys, rt.PRIMARY_LIMITS)))
            except UptaneError as e:
                self.notes.append(f"time from {server.key.name} refused: {e}")
                if isinstance(e, _ATTACKS):
                    self.attacks.append(e)
        return out

    def _forward(self, port: SecondaryPort, latest: int, token: bytes) -> None:
        try:
            port.put_time(latest, token)
        except UptaneError as e:  # its verdict (its report names it), or it went away
            self.notes.append(f"{port.serial}: signed time refused ({e})")

    def _fallback(self, why: str) -> None:
        """No verified time this cycle: the system clock, never before the last verified
        time; no Secondary's clock moves."""
        self.notes.append(f"no verified time ({why})")
        if self._now is not None:
            return  # verified earlier in this cycle: that stays the cycle's time
        last = self.state.load_time()
        now = self.source.now()
        if last is not None and now.timestamp() < last:
            now = datetime.fromtimestamp(last, UTC)
        self._now = now
        self.notes.append("the system clock is the time this cycle; no ECU's clock moves")
