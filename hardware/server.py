"""The Secondary's side of a link: a loop that feeds a transport's messages to a
:class:`hardware.protocol.SecondaryEndpoint` and sends back its replies.

A port that fails (a :class:`~uptane.errors.LinkError`: an OS error such as EIO from an
unplugged USB-serial adapter or a pty whose other end closed) is retried with a growing
delay; one that keeps failing makes :func:`serve` give up with a LinkError instead of
spinning and logging in a tight loop."""

from __future__ import annotations

import logging
import threading

from hardware.protocol import SecondaryEndpoint
from hardware.transport import MessageTransport
from uptane.errors import LinkError, UptaneError

log = logging.getLogger(__name__)


def _exchange(
    transport: MessageTransport,
    endpoint: SecondaryEndpoint,
    timeout: float,
    send_timeout: float | None,
) -> bool:
    """Wait up to ``timeout`` for one request and answer it; returns whether one came.

    A port that fails to receive (:class:`LinkError`) raises: the port is read on every
    poll, so a port that is gone shows there. Any other receive error (an over-long
    message) and every send error are logged: the Primary retries. A send error may be
    the peer's doing (an ISO-TP flow control it botched), so it never stops the loop.
    """
    try:
        request = transport.recv(timeout)
    except LinkError:
        raise
    except UptaneError as e:
        log.warning("link receive failed: %s", e)
        return False
    if request is None:
        return False
    before = endpoint.frame_size
    reply = endpoint.receive(request)
    if reply is None:  # dropped by the envelope (forged, replayed): no answer
        log.debug("link request dropped (%d so far)", endpoint.dropped)
        return True
    try:
        transport.send(reply, send_timeout)
    except UptaneError as e:
        log.warning("link send failed: %s", e)
    if endpoint.frame_size is not None and endpoint.frame_size != before:
        transport.negotiate(endpoint.frame_size)
    return True


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
        return _exchange(transport, endpoint, timeout, send_timeout)
    except LinkError as e:
        log.warning("link failed: %s", e)
        return False


def serve(
    transport: MessageTransport,
    endpoint: SecondaryEndpoint,
    stop: threading.Event | None = None,
    *,
    poll: float = 0.1,
    max_requests: int | None = None,
    max_failures: int = 8,
    retry_delay: float = 0.1,
    max_retry_delay: float = 5.0,
) -> int:
    """Answer requests until ``stop`` is set (or ``max_requests`` were answered); returns
    how many were answered. ``poll`` bounds how long a stop request waits.

    When the port fails to receive (:class:`LinkError`), the next attempt waits
    ``retry_delay`` seconds, doubling up to ``max_retry_delay``, and the failure is logged
    once per attempt; any good receive resets this. After ``max_failures`` failures in a
    row the port is taken as gone for good: :class:`LinkError` is raised, naming the last
    error.
    """
    if max_failures < 0 or retry_delay < 0 or max_retry_delay < retry_delay:
        raise ValueError("bad retry settings")
    stop = stop or threading.Event()
    served = 0
    failures = 0
    delay = retry_delay
    while not stop.is_set():
        try:
            answered = _exchange(transport, endpoint, poll, 10.0)
        except LinkError as e:
            failures += 1
            if failures > max_failures:
                raise LinkError(
                    f"the link failed {failures} times in a row, giving up: {e.message}"
                ) from e
            log.warning(
                "link failed (%d of %d): %s; retrying in %.2f s", failures, max_failures, e, delay
            )
            # a capped doubling by hand, not urllib3's Retry: the wait is on ``stop`` (a
            # stop request cuts it short), and the Secondary's link code does not depend
            # on urllib3, an HTTP client
            stop.wait(delay)
            delay = min(2 * delay, max_retry_delay)
            continue
        if failures:
            log.info("link recovered after %d failure(s)", failures)
            failures = 0
            delay = retry_delay
        if answered:
            served += 1
            if max_requests is not None and served >= max_requests:
                break
    return served
