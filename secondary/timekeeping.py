"""A Secondary's clock: the latest verified time, moved only by signed time (issue 21).

An ECU provisioned with time server keys (``uptane-secondary provision --time-key ...``)
takes time only from a token its Primary forwards (:mod:`uptane.roughtime`,
draft-ietf-ntp-roughtime-11): ``GET_TIME_NONCE`` gives the Primary a fresh nonce of this
ECU's, the Primary commits every ECU's nonce into its request to the time server(s), and
``PUT_TIME`` brings back a token that must prove a provisioned server signed the time
*after* that nonce was chosen (the nonce is under the signed Merkle root). The clock
policy (k of n servers, a bounded step forward, never back) decides the new time; only
then is it stored. A time without a token changes nothing
(:class:`~uptane.errors.UnsignedTime`); so a year-9999 ``PUT_TIME`` from anyone on the bus
is harmless.

An ECU without time keys (bench setups, and ECUs provisioned before issue 21) keeps the
older rule: the Primary's unsigned time, moving forward only (docs/secondary.md).

Nonces live in RAM only and each one serves one token: a reboot forgets them, and a
token accepted makes every outstanding nonce stale.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Sequence

from secondary.state import AgentState
from uptane import roughtime as rt
from uptane.errors import MalformedInput, TimeReplay, UnsignedTime, UptaneError
from uptane.securetime import next_latest_time

log = logging.getLogger(__name__)

NONCE_BYTES = rt.NONCE_BYTES
#: nonces handed out and not yet used (a Primary that asks again, a bench tool beside it)
MAX_OUTSTANDING = 4


class EcuClock:
    """The time rules of one Secondary (see the module doc)."""

    def __init__(
        self,
        state: AgentState,
        keys: Sequence[rt.TimeServerKey] = (),
        policy: rt.TimePolicy | None = None,
        limits: rt.TimeLimits = rt.CONSTRAINED_LIMITS,
    ) -> None:
        self.state = state
        self.keys = tuple(keys)
        self.policy = policy or rt.TimePolicy()
        self.limits = limits
        self._nonces: deque[bytes] = deque(maxlen=MAX_OUTSTANDING)

    @property
    def signed(self) -> bool:
        """Whether this ECU takes only signed time (time server keys are provisioned)."""
        return bool(self.keys)

    def nonce(self) -> bytes:
        """A fresh nonce the next time token must be bound to."""
        n = secrets.token_bytes(NONCE_BYTES)
        self._nonces.append(n)
        return n

    def receive(self, time: int | bytes, token: bytes | None) -> None:
        """``PUT_TIME``: with time keys, the token decides (the unsigned ``time`` is only
        the Primary's view); without them, the unsigned time, forward only."""
        if not self.signed:
            try:
                latest = next_latest_time(self.state.latest, time)
            except MalformedInput as e:
                raise MalformedInput(f"PUT_TIME: {e.message}") from None
            self.state.set_time(latest, source="unsigned")
            return
        if token is None:
            raise UnsignedTime(
                "this ECU takes only signed time (it is provisioned with time server keys): "
                "the Primary must forward a time token from the OEM's time server"
            )
        decision = self._accept(token)
        for refused in decision.refused:  # k of n held without them: the operator should know
            log.warning("a time response in the token was refused: %s", refused)
        self._nonces.clear()  # every outstanding nonce is older than this time now
        self.state.set_time(decision.latest, source="signed")
        log.info(
            "verified time %d from %s (%d server(s))",
            decision.latest,
            decision.agreed.server,
            decision.servers,
        )

    def _accept(self, token: bytes) -> rt.TimeDecision:
        """The token checked against the outstanding nonces, newest first (a token for
        an older one is another nonce's replay only if none matches)."""
        if not self._nonces:
            raise TimeReplay("no time nonce is outstanding: ask GET_TIME_NONCE first")
        first: UptaneError | None = None
        for nonce in reversed(self._nonces):
            try:
                return rt.accept_token(
                    token, nonce, self.keys, self.policy, self.state.latest, self.limits
                )
            except TimeReplay as e:
                first = first or e
        assert first is not None
        raise first
