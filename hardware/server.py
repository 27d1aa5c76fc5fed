"""The Secondary's side of a link: a loop that feeds a transport's messages to a
:class:`hardware.protocol.SecondaryEndpoint` and sends back its replies."""

from __future__ import annotations

import logging
import threading

from hardware.protocol import SecondaryEndpoint
from hardware.transport import MessageTransport
from uptane.errors import UptaneError

log = logging.getLogger(__name__)


def serve_one(
    transport: MessageTransport,
    endpoint: SecondaryEndpoint,
    *,
    timeout: float = 0.1,
    send_timeout: float | None = 10.0,
) -> bool:
    """Wait up to ``timeout`` for one request and answer it; returns whether one came.

    Link errors are logged and swallowed: the Primary retries, the Secondary keeps serving.
    """
    try:
        request = transport.recv(timeout)
    except UptaneError as e:
        log.warning("link receive failed: %s", e)
        return False
    if request is None:
        return False
    before = endpoint.frame_size
    reply = endpoint.receive(request)
    try:
        transport.send(reply, send_timeout)
    except UptaneError as e:
        log.warning("link send failed: %s", e)
    if endpoint.frame_size is not None and endpoint.frame_size != before:
        transport.negotiate(endpoint.frame_size)
    return True


def serve(
    transport: MessageTransport,
    endpoint: SecondaryEndpoint,
    stop: threading.Event | None = None,
    *,
    poll: float = 0.1,
    max_requests: int | None = None,
) -> int:
    """Answer requests until ``stop`` is set (or ``max_requests`` were answered); returns
    how many were answered. ``poll`` bounds how long a stop request waits."""
    served = 0
    while stop is None or not stop.is_set():
        if serve_one(transport, endpoint, timeout=poll):
            served += 1
            if max_requests is not None and served >= max_requests:
                break
    return served
