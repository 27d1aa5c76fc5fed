"""A pyserial-like port over a raw file descriptor, typically the master side of a pty.

:class:`hardware.serial_link.SerialTransport` takes any object with pyserial's
``read``/``write``/``in_waiting``/``timeout``; this is that object for a bare fd, so a
pty can stand in for a serial line (tests, the bench figures) without opening the
master end through pyserial.
"""

from __future__ import annotations

import contextlib
import os
import select
import tty


class FdPort:
    """pyserial's port surface over ``fd`` (put into raw mode): reads wait up to
    ``timeout`` seconds and return what is there; writes go out whole."""

    def __init__(self, fd: int, timeout: float | None = 0.01) -> None:
        tty.setraw(fd)
        self.fd = fd
        self.timeout = timeout
        self.is_open = True

    @property
    def in_waiting(self) -> int:
        """1 when a read would return bytes now, else 0 (a pty does not say how many)."""
        return 1 if select.select([self.fd], [], [], 0)[0] else 0

    def read(self, size: int = 1) -> bytes:
        """What the fd holds (up to ``max(size, 4096)`` bytes), b"" after ``timeout``."""
        if not select.select([self.fd], [], [], self.timeout or 0)[0]:
            return b""
        try:
            return os.read(self.fd, max(size, 4096))
        except OSError:  # the other end hung up: nothing to read, as pyserial would say
            return b""

    def write(self, data: bytes) -> int:
        """Write all of ``data``; returns its length."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered here."""

    def close(self) -> None:
        """Close the fd once; later calls do nothing."""
        if self.is_open:
            self.is_open = False
            with contextlib.suppress(OSError):
                os.close(self.fd)
