"""The interface every link transport offers to :mod:`hardware.client` and
:mod:`hardware.server`: whole messages out and in, with bounded waits."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class MessageTransport(Protocol):
    """Moves whole link messages (bytes) to and from one peer.

    Implemented by :class:`hardware.serial_link.SerialTransport` and
    :class:`hardware.can_link.CanTransport`. Errors are :mod:`uptane.errors` errors
    (``LinkTimeout``, ``LinkError``, ``EndlessDataAttack``).
    """

    @property
    def max_frame(self) -> int:
        """The largest frame this end accepts, offered in the HELLO."""
        ...

    def negotiate(self, frame_size: int) -> None:
        """Switch to the frame size agreed in the HELLO exchange (may be a no-op)."""
        ...

    def send(self, message: bytes, timeout: float | None = None) -> None:
        """Send one message; returns when the transport handed it over (or raises)."""
        ...

    def recv(self, timeout: float) -> bytes | None:
        """The next message, or ``None`` if none arrived within ``timeout`` seconds."""
        ...

    def close(self) -> None:
        """Release the port or bus stack."""
        ...
