"""What every part of the Director shares: its errors (each one HTTP status, the same in
the CLI), the patterns of its identifiers, and time as the inventory stores it (integer
seconds since the epoch, UTC)."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

#: the services' log: one line per admin change, per offline change picked up, per
#: background event (never a token); ``serve`` sends it to stderr
log = logging.getLogger("uptane.service")

#: ``\Z``, not ``$``: ``$`` also matches before a final newline ("VIN1\n")
VIN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
ECU_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}\Z")
HWID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}\Z")


class NotFound(Exception):
    """A vehicle, ECU or assignment that does not exist (HTTP 404)."""


class Conflict(Exception):
    """A request that contradicts the current state (HTTP 409)."""


class Invalid(Exception):
    """A well-formed request with values the Director refuses (HTTP 422)."""


class Unavailable(Exception):
    """A service the Director depends on cannot be reached (HTTP 503)."""


def utcnow() -> datetime:
    """Now, in whole seconds (UTC): the Director's default clock."""
    return datetime.now(UTC).replace(microsecond=0)


def epoch(t: datetime) -> int:
    """``t`` as the inventory stores times."""
    return int(t.timestamp())


def iso(t: int | None) -> str | None:
    """A stored time as the API shows it (ISO 8601, UTC), or None."""
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


__all__ = [
    "ECU_RE",
    "HWID_RE",
    "VIN_RE",
    "Conflict",
    "Invalid",
    "NotFound",
    "Unavailable",
    "epoch",
    "iso",
    "log",
    "utcnow",
]
