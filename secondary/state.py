"""What a Secondary keeps across reboots besides its slots: the records of its atomic store.

Every part of the agent reads and writes its records through :class:`AgentState`, which
also keeps in RAM the two small ones everything consults: the latest time (§5.4.4.1 step 1:
every expiry is checked against it, and it never goes backwards) and the last refusal
(the attack indicator of the next version report). The trusted metadata is one atomic
record, so a root and the targets it signs change together.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from storage import AtomicStore
from uptane.encoding import cbor
from uptane.errors import (
    ExpiredTimeDelegation,
    LinkError,
    MalformedInput,
    ProtocolViolation,
    TimeJumpRefused,
    TimeQuorumNotMet,
    UnauthenticatedPeer,
    UnsignedTime,
    UptaneError,
)
from uptane.limits import Limits
from uptane.manifest import attack_indicator

log = logging.getLogger(__name__)

#: names of the agent's records in its AtomicStore
TRUSTED = "trusted"  # CBOR {"director": {role: bytes}, "image": {role: bytes}, "map": bytes}
#: JSON {"latest": seconds since the epoch, "source": "provisioned", "signed" (a verified
#: time token) or "unsigned" (an ECU without time keys)}
TIME = "time"
LAST_ERROR = "last-error"  # JSON {"code", "attack", "indicator"} or {} after a success
#: an image transfer to resume after a reboot: TRANSFER (CBOR) is written at its first
#: checkpoint: {"id", "filename", "total", "slot", "hashes", "files", "roots"}, where files
#: [[repository, role, bytes]] and roots [[repository, version, bytes]] are the metadata
#: it was verified from; TRANSFER_AT (JSON {"id", "offset"}) at every checkpoint. Only
#: matching ids count, so a cut between the two writes leaves nothing to resume.
TRANSFER = "transfer"
TRANSFER_AT = "transfer-at"
#: partial verification: the exact bytes of verified Director targets that name a new image
#: for this ECU, written when they verify, so that nothing holds the message while the image
#: streams; they join TRUSTED when the image installs. A partial-mode TRANSFER record names
#: no files: its resume verifies this record again.
PENDING_TARGETS = "pending-targets"

#: errors about the conversation itself, not about what was sent, and time-policy
#: refusals (a server's clock, an operator's delegation, a Primary without time servers):
#: not an attack indicator
_NOT_ATTACKS = (
    ProtocolViolation,
    LinkError,
    UnsignedTime,
    TimeJumpRefused,
    TimeQuorumNotMet,
    ExpiredTimeDelegation,
)


def provision_state(
    store: AtomicStore,
    director_root: bytes,
    *,
    targets: bytes | None = None,
    image_root: bytes | None = None,
    map_file: bytes | None = None,
    time: int | None = None,
) -> None:
    """Write the initial trusted state (§5.4.1): the Director root (and its initial
    targets), for full verification the Image repository root and the map file, and the
    provisioned time. The caller checks them first (see secondary.cli)."""
    director = {"root": director_root}
    if targets is not None:
        director["targets"] = targets
    record: dict[str, Any] = {"director": director}
    if image_root is not None:
        record["image"] = {"root": image_root}
    if map_file is not None:
        record["map"] = map_file
    store.write(TRUSTED, cbor.dumps(record))
    if time is not None:
        store.write_json(TIME, {"latest": int(time), "source": "provisioned"})


class AgentState:
    """The agent's store, and the latest time and last error it holds in RAM."""

    def __init__(self, store: AtomicStore, limits: Limits) -> None:
        self.store = store
        self.limits = limits
        self.latest, self.time_source = self._load_time()
        self.last_error: dict[str, Any] = self.load_json(LAST_ERROR) or {}

    # --- records --------------------------------------------------------------------------

    def load_json(self, name: str) -> Any:
        """A JSON record, or None when it is missing or unreadable (logged)."""
        try:
            return self.store.read_json(name, self.limits)
        except UptaneError as e:
            log.error("stored %s is unreadable (%s); ignored", name, e)
            return None

    def _load_time(self) -> tuple[int, str]:
        d = self.load_json(TIME)
        latest = d.get("latest") if isinstance(d, dict) else None
        source = d.get("source") if isinstance(d, dict) else None
        if not isinstance(latest, int) or isinstance(latest, bool):
            return 0, "none"
        return latest, source if isinstance(source, str) else "provisioned"

    def _trusted_cap(self) -> int:
        return 4 * sum(self.limits.role_bytes.values()) + 4 * self.limits.map_file_bytes

    def read_trusted(self) -> dict[str, Any]:
        """The trusted-metadata record; raises MalformedInput when there is none."""
        cap = self._trusted_cap()
        data = self.store.read(TRUSTED, max_bytes=cap)
        if data is None:
            raise MalformedInput("this ECU is not provisioned: no trusted Director root")
        rec = cbor.loads(data, self.limits, cap=cap, max_items=64, max_total=256)
        if not isinstance(rec, dict) or not isinstance(rec.get("director"), dict):
            raise MalformedInput("the trusted-metadata record is damaged")
        return rec

    def write_trusted(self, rec: dict[str, Any]) -> None:
        self.store.write(TRUSTED, cbor.dumps(rec))

    def pending_targets(self) -> bytes | None:
        """Partial mode: the verified Director targets waiting for their image."""
        return self.store.read(PENDING_TARGETS, max_bytes=self.limits.bytes_for_role("targets"))

    # --- time -----------------------------------------------------------------------------

    @property
    def latest_time(self) -> datetime:
        """The latest time this ECU was given (or provisioned with)."""
        return datetime.fromtimestamp(self.latest, UTC)

    def set_time(self, latest: int, *, source: str) -> None:
        """Store the latest time (``source``: "signed" or "unsigned"); a time that did
        not move is not written again."""
        if latest != self.latest:
            self.store.write_json(TIME, {"latest": latest, "source": source})
            self.latest, self.time_source = latest, source

    # --- the last error -------------------------------------------------------------------

    def note_error(self, error: UptaneError, *, authenticated: bool = True) -> None:
        """Remember ``error`` as the attack indicator of the next report (persisted).

        An error the input of an unauthenticated link peer caused (a Secondary without a
        link key) is reported as an :class:`~uptane.errors.UnauthenticatedPeer` event:
        ``"unauthenticated-peer: <attack>: <message>"``, which the Director must not take
        as a verdict on an update (anyone on the bus could have sent that input)."""
        if isinstance(error, _NOT_ATTACKS):
            return
        if not authenticated:
            error = UnauthenticatedPeer(f"{error.attack}: {error.message}")
        self.last_error = {
            "code": error.code,
            "attack": error.attack,
            "indicator": attack_indicator(error)[: self.limits.max_string // 2],
        }
        try:
            self.store.write_json(LAST_ERROR, self.last_error)
        except UptaneError as e:  # pragma: no cover - the store refuses nothing this small
            log.error("cannot store the last error: %s", e)

    def clear_error(self) -> None:
        if self.last_error:
            self.last_error = {}
            self.store.write_json(LAST_ERROR, {})

    def restore_error(self, kept: dict[str, Any]) -> None:
        """Put back ``kept`` (a verdict reached again is no new verdict)."""
        if kept and self.last_error != kept:
            self.last_error = kept
            self.store.write_json(LAST_ERROR, kept)
