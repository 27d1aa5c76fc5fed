"""Link messages over CAN: one message is one ISO-TP (ISO 15765-2) PDU, through can-isotp
on any python-can bus.

ISO-TP segments and reassembles (flow control with a block size of 8 to 16 frames), CAN's
own CRC drops damaged frames, and a lost frame makes ISO-TP give up on that PDU; the
message layer (request ids, retransmission, :class:`uptane.errors.LinkTimeout`) recovers
from that, as on serial. Classic CAN (8-byte frames) and CAN FD (64-byte frames) are both
supported; ``max_frame_size`` is raised to the message cap, so PDUs over 4095 bytes use
the ISO 15765-2:2016 escape sequence (32-bit length).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import isotp

from uptane.errors import EndlessDataAttack, LinkError, LinkTimeout
from uptane.limits import PRIMARY, Limits

log = logging.getLogger(__name__)

MIN_BLOCK_SIZE = 8
MAX_BLOCK_SIZE = 16


class CanTransport:
    """Messages to and from one peer over ISO-TP on ``bus``.

    ``txid``/``rxid`` are the arbitration ids this end sends on and listens to (the peer
    uses them swapped); ``extended_id`` selects 29-bit ids. ``fd`` sends 64-byte CAN FD
    frames (the bus must be opened with ``fd=True``). With a ``notifier``
    (``can.Notifier``) the bus is shared with other listeners
    (``isotp.NotifierBasedCanStack``); without one, the stack reads the bus itself.
    ``fc_timeout``/``cf_timeout`` bound the wait for a flow-control or consecutive frame.
    """

    def __init__(
        self,
        bus: Any,
        *,
        txid: int,
        rxid: int,
        fd: bool = False,
        extended_id: bool = False,
        block_size: int = 8,
        stmin: int = 0,
        limits: Limits = PRIMARY,
        notifier: Any = None,
        fc_timeout: float = 1.0,
        cf_timeout: float = 1.0,
        padding: int | None = None,
    ) -> None:
        if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"block_size must be in {MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE}")
        mode = (
            isotp.AddressingMode.Normal_29bits
            if extended_id
            else isotp.AddressingMode.Normal_11bits
        )
        self.address = isotp.Address(mode, txid=txid, rxid=rxid)
        self.max_message = limits.link_message_bytes
        self.fd = fd
        params: dict[str, Any] = {
            "tx_data_length": 64 if fd else 8,
            "can_fd": fd,
            "blocksize": block_size,
            "stmin": stmin,
            "max_frame_size": self.max_message,
            "blocking_send": True,
            "rx_flowcontrol_timeout": int(fc_timeout * 1000),
            "rx_consecutive_frame_timeout": int(cf_timeout * 1000),
            "tx_padding": padding,
        }
        self.errors: deque[str] = deque(maxlen=32)
        self._last_error: Exception | None = None
        if notifier is not None:
            self.stack: Any = isotp.NotifierBasedCanStack(
                bus, notifier, address=self.address, params=params, error_handler=self._on_error
            )
        else:
            self.stack = isotp.CanStack(
                bus, address=self.address, params=params, error_handler=self._on_error
            )
        self.stack.start()

    def _on_error(self, error: Exception) -> None:
        self._last_error = error
        self.errors.append(f"{type(error).__name__}: {error}")
        log.debug("ISO-TP: %s", error)

    @property
    def max_frame(self) -> int:
        """The largest PDU this end accepts (the whole message: ISO-TP fragments it)."""
        return self.max_message

    def negotiate(self, frame_size: int) -> None:
        """Nothing to switch: ISO-TP's frame size is fixed by the bus (8 or 64 bytes)."""

    def send(self, message: bytes, timeout: float | None = None) -> None:
        """Send one message as an ISO-TP PDU; returns when the last frame went out."""
        if len(message) > self.max_message:
            raise EndlessDataAttack(f"CAN: message of {len(message)} bytes over the cap")
        self._last_error = None
        try:
            self.stack.send(message, send_timeout=timeout)
        except isotp.BlockingSendTimeout:
            raise LinkTimeout("CAN: ISO-TP send did not complete in time") from None
        except isotp.BlockingSendFailure:
            err = self._last_error
            if err is None or isinstance(err, isotp.FlowControlTimeoutError):
                raise LinkTimeout("CAN: the peer did not answer ISO-TP flow control") from None
            raise LinkError(f"CAN: ISO-TP send failed: {type(err).__name__}") from None

    def recv(self, timeout: float) -> bytes | None:
        """The next complete PDU, or ``None`` after ``timeout`` seconds."""
        data = self.stack.recv(block=True, timeout=timeout)
        return bytes(data) if data is not None else None

    def close(self) -> None:
        """Stop the ISO-TP stack's threads (the bus stays open: its owner shuts it down)."""
        self.stack.stop()
