"""Secure time on an ECU without a clock of its own (§5.4 'secure source of time').

The Primary sends the time it verified (§5.4.2 step 5); an ECU keeps the latest verified
time and never lets it move backwards, so replayed old metadata stays expired. Sans-I/O:
callers pass what they received and what they trust.
"""

from __future__ import annotations

from uptane.errors import MalformedInput
from uptane.metadata import parse_expires

#: 9999-12-31T23:59:59Z as POSIX seconds: a later time would make every expiry check fail
MAX_TIME = 253_402_300_799


def decode_time(value: int | bytes) -> int:
    """A time as sent over a link: POSIX seconds, or the TUF expiry text form in ASCII."""
    if isinstance(value, bytes):
        try:
            seconds = int(parse_expires(value[:64].decode("ascii")).timestamp())
        except UnicodeDecodeError as e:
            raise MalformedInput(f"unreadable time: {e.reason}") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        raise MalformedInput("a time must be an integer or text")
    if not 0 <= seconds <= MAX_TIME:
        raise MalformedInput(f"time {seconds} is out of range")
    return seconds


def next_latest_time(latest: int, offered: int | bytes) -> int:
    """§5.4.2 step 5 / §5.4: the latest verified time after ``offered`` arrives: it only
    moves forwards."""
    return max(latest, decode_time(offered))
