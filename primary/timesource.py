"""Where the Primary gets the current time (§5.4.2 step 2), until secure time exists.

Verification in :mod:`uptane` never reads a clock: callers pass ``now``. Agents take a
:class:`TimeSource` so tests can set the time and a device can plug in a secure source
later (NTS or Roughtime, per the Best Practices).

- :class:`SystemTime` reads the standard library clock (``datetime.now(UTC)``), so
  libfaketime shifts it as it shifts every other program's clock.
- :class:`FixedTime` is a settable clock for tests.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class TimeSource(Protocol):
    """Gives the current time as an aware UTC ``datetime``."""

    def now(self) -> datetime: ...


class SystemTime:
    """The system clock through the standard library (libfaketime-compatible)."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedTime:
    """A clock that only moves when told to (tests, simulated offline periods)."""

    def __init__(self, when: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._now = _aware(when if when is not None else datetime.now(UTC))

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (naive values are taken as UTC)."""
        with self._lock:
            self._now = _aware(when)

    def advance(self, delta: timedelta) -> datetime:
        """Move forward (or back, with a negative delta); returns the new time."""
        with self._lock:
            self._now = self._now + delta
            return self._now


def _aware(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
