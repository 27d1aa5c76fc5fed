"""The slow-retrieval check (§5.4: every ECU SHALL monitor its download speed), sans-I/O.

One :class:`SpeedMonitor` watches one transfer. The caller feeds it the bytes as they
arrive together with ``now`` (a monotonic clock reading, in seconds, that the caller takes:
this module reads no clock), and the monitor raises
:class:`~uptane.errors.SlowRetrievalAttack` when the average speed over a window of
``window`` seconds is below ``min_bytes_per_second``.

The rule:

- time is cut into consecutive windows; a window starts at :meth:`reset` (or at the first
  :meth:`update` or :meth:`check` of a monitor made without ``start``);
- nothing is judged before a window is ``window`` seconds old, so a slow start (TCP
  slow-start, a link handshake) is not an attack;
- once it is, its bytes divided by its age must reach the floor, or the monitor raises;
  otherwise the next window starts at ``now``;
- after a refusal the window is *not* restarted: a transfer that stays slow keeps being
  refused;
- with ``idle`` set, a pause longer than ``idle`` seconds between two updates is not
  measured: the window starts again at the update that ends the pause (the transfer was
  stopped, not slowed: a link between two update cycles, handled by the link's own
  timeouts). Without ``idle`` every second since the window start counts (HTTP
  downloads, where a silent server is exactly what the check is for).

A floor or window of zero (or less) turns the check off.
"""

from __future__ import annotations

from uptane.errors import SlowRetrievalAttack


class SpeedMonitor:
    """§5.4 slow retrieval: the average speed over each ``window`` seconds must reach
    ``min_bytes_per_second``; ``what`` names the transfer in the error."""

    def __init__(
        self,
        min_bytes_per_second: float,
        window: float,
        *,
        what: str = "the transfer",
        start: float | None = None,
        idle: float | None = None,
    ) -> None:
        self.floor = float(min_bytes_per_second)
        self.window = float(window)
        self.what = what
        self.idle = idle
        #: when the current window started (None: not started yet)
        self.window_start: float | None = start
        #: bytes received in the current window
        self.window_bytes = 0
        #: when the last update or check happened (for ``idle``)
        self.last: float | None = start

    @property
    def enabled(self) -> bool:
        return self.floor > 0 and self.window > 0

    def reset(self, now: float) -> None:
        """Start a new window at ``now`` (a new transfer, or one resumed after a pause)."""
        self.window_start = now
        self.window_bytes = 0
        self.last = now

    def update(self, nbytes: int, now: float) -> None:
        """``nbytes`` more arrived at ``now``; raises SlowRetrievalAttack if the window
        that just completed averaged less than the floor (§5.4)."""
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        self._start_or_resume(now)
        self.window_bytes += nbytes
        self._judge(now)

    def check(self, now: float) -> None:
        """Judge the window at ``now`` without new bytes (a read that timed out)."""
        self._start_or_resume(now)
        self._judge(now)

    # --- internals ----------------------------------------------------------------------

    def _start_or_resume(self, now: float) -> None:
        if self.window_start is None:
            self.reset(now)
        elif self.idle is not None and self.last is not None and now - self.last > self.idle:
            self.reset(now)  # a pause, not a slow transfer: measure afresh from here
        self.last = now

    def _judge(self, now: float) -> None:
        # §5.4: monitor download speed (slow-retrieval attack, §4.3)
        if not self.enabled:
            return
        assert self.window_start is not None
        elapsed = now - self.window_start
        if elapsed < self.window:
            return
        rate = self.window_bytes / elapsed
        if rate < self.floor:
            raise SlowRetrievalAttack(
                f"{self.what}: {rate:.0f} B/s over the last {elapsed:.1f} s, "
                f"below the minimum of {self.floor:.0f} B/s"
            )
        self.window_start = now
        self.window_bytes = 0


__all__ = ["SpeedMonitor"]
