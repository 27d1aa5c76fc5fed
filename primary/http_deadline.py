"""The header deadline of the Primary's HTTP requests: the status line and every header
must arrive within one deadline in all, so a server cannot stall a request by dripping
its headers a byte at a time (a per-read timeout cannot stop that).

:func:`watching` arms the deadline for the requests made by the calling thread;
:data:`POOL_CLASSES` are urllib3 pools whose connections enforce it. One daemon thread
(:class:`_Watchdog`) runs the aborts of every request in the process. Past the deadline
the request raises :class:`HeadersTooSlow` (the fetcher reports slow retrieval).
"""

from __future__ import annotations

import contextlib
import heapq
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class HeadersTooSlow(Exception):
    """The response headers did not complete within the header deadline."""


class _HeaderWatch:
    """One request's header deadline, armed by :func:`watching` in the calling thread
    and enforced by the connection while it reads the status line and headers."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.expired = False
        self.done = False
        self.lock = threading.Lock()


_current = threading.local()


class _Watchdog:
    """One daemon thread that runs the header-deadline aborts of every request in the
    process, instead of a ``threading.Timer`` (a new thread) per request. Arming is a
    heap push under a lock; the thread is woken only when the new deadline is earlier
    than the one it sleeps until, and disarmed entries are dropped when they come up (or
    when a new entry is armed)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.heap: list[tuple[float, int, list[Any]]] = []
        self.seq = 0
        self.thread: threading.Thread | None = None
        self.wake_at = float("inf")  # when the thread wakes up next (under cond)

    def arm(self, timeout: float, fn: Callable[[], None]) -> list[Any]:
        entry: list[Any] = [fn]  # [fn], or [None] once disarmed
        with self.cond:
            while self.heap and self.heap[0][2][0] is None:  # disarmed: drop it now
                heapq.heappop(self.heap)
            self.seq += 1
            item = (time.monotonic() + timeout, self.seq, entry)
            heapq.heappush(self.heap, item)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._run, name="fetcher-header-deadlines", daemon=True
                )
                self.thread.start()
            elif item[0] < self.wake_at:
                self.cond.notify()
        return entry

    @staticmethod
    def disarm(entry: list[Any]) -> None:
        entry[0] = None

    def _run(self) -> None:
        while True:
            with self.cond:
                while True:
                    while self.heap and self.heap[0][2][0] is None:
                        heapq.heappop(self.heap)
                    if not self.heap:
                        self.wake_at = float("inf")
                        self.cond.wait()
                        continue
                    wait = self.heap[0][0] - time.monotonic()
                    if wait <= 0:
                        fn = heapq.heappop(self.heap)[2][0]
                        break
                    self.wake_at = self.heap[0][0]
                    self.cond.wait(wait)
            if fn is not None:
                with contextlib.suppress(Exception):
                    fn()


_watchdog = _Watchdog()


def _getresponse_with_deadline(conn: Any, getresponse: Callable[[], Any]) -> Any:
    """Read the headers, shutting the socket down if they take longer than the deadline.

    A per-operation read timeout cannot stop a server that drips its headers a byte at a
    time; this bounds the whole header phase. Past the deadline the fetcher raises
    SlowRetrievalAttack.
    """
    watch: _HeaderWatch | None = getattr(_current, "watch", None)
    if watch is None or watch.timeout <= 0:
        return getresponse()
    sock = conn.sock

    def abort() -> None:
        with watch.lock:
            if watch.done:
                return
            watch.expired = True
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    armed = _watchdog.arm(watch.timeout, abort)
    try:
        resp = getresponse()
    except Exception:
        if watch.expired:
            raise HeadersTooSlow from None
        raise
    finally:
        _watchdog.disarm(armed)
        with watch.lock:
            watch.done = True
    if watch.expired:  # the cut may have ended the headers early rather than failing them
        with contextlib.suppress(Exception):
            resp.close()
        raise HeadersTooSlow
    return resp


class _DeadlineHTTPConnection(HTTPConnection):
    def getresponse(self) -> Any:  # type: ignore[override]
        return _getresponse_with_deadline(self, super().getresponse)


class _DeadlineHTTPSConnection(HTTPSConnection):
    def getresponse(self) -> Any:  # type: ignore[override]
        return _getresponse_with_deadline(self, super().getresponse)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


#: urllib3 pool classes by scheme whose connections enforce the header deadline
POOL_CLASSES: dict[str, type[HTTPConnectionPool]] = {"http": _HTTPPool, "https": _HTTPSPool}


class watching:
    """Requests made by this thread inside the ``with`` block have ``timeout`` seconds
    for their status line and headers (0: no deadline). A class, not a generator
    context manager: it runs on every request."""

    __slots__ = ("timeout",)

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    def __enter__(self) -> None:
        _current.watch = _HeaderWatch(self.timeout)

    def __exit__(self, *exc: object) -> None:
        _current.watch = None


__all__ = ["POOL_CLASSES", "HeadersTooSlow", "watching"]
