"""Fan-out from the Primary to its Secondaries, over serial, CAN or an in-process link.

- :func:`open_link` turns a :class:`primary.config.SecondaryConfig` into a
  :class:`hardware.client.LinkClient` whose every request is bounded by the Secondary's
  ``timeout`` and ``retries`` (a silent Secondary costs at most
  ``timeout * (1 + 2 + ... + 2**retries)`` seconds per request, then
  :class:`~uptane.errors.LinkTimeout`).
- :func:`loopback_pair` and :func:`register_inprocess`: an in-memory transport, for a
  Secondary that runs in the Primary's process (tests, the demo, a simulated vehicle).
- :class:`SecondaryPort`: the operations of one update cycle on one Secondary, made
  idempotent: before resending an image it asks the Secondary what it already has.

Nothing here verifies metadata or images: Secondaries do, with the core.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hardware.client import LinkClient
from hardware.messages import Status
from hardware.protocol import SecondaryEndpoint, SecondaryHandler, negotiate_codec, our_codecs
from hardware.server import serve
from hardware.transport import MessageTransport
from primary.config import SecondaryConfig
from uptane.codec import sniff
from uptane.errors import LinkError, LinkTimeout, SessionRequired
from uptane.limits import Limits

Progress = Callable[[int, int], None]

#: Status.state values that mean "the image was installed" (possibly awaiting a trial boot)
INSTALLED_STATES = ("installed", "trial", "confirmed", "pending-reboot", "booted")


# --- the in-process link ------------------------------------------------------------------


class QueueTransport:
    """One end of an in-memory link: whole messages through two queues."""

    def __init__(self, inbox: queue.Queue[bytes], outbox: queue.Queue[bytes]) -> None:
        self._in = inbox
        self._out = outbox
        self.closed = False
        #: when set, messages sent from this end are silently dropped (a dead wire)
        self.cut = False

    @property
    def max_frame(self) -> int:
        return 1 << 16

    def negotiate(self, frame_size: int) -> None:
        pass

    def send(self, message: bytes, timeout: float | None = None) -> None:
        if self.closed:
            raise LinkError("in-process link is closed")
        if not self.cut:
            self._out.put(bytes(message))

    def recv(self, timeout: float) -> bytes | None:
        try:
            return self._in.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def close(self) -> None:
        self.closed = True


def loopback_pair() -> tuple[QueueTransport, QueueTransport]:
    """Two connected in-memory transports: (Primary end, Secondary end)."""
    a: queue.Queue[bytes] = queue.Queue()
    b: queue.Queue[bytes] = queue.Queue()
    return QueueTransport(a, b), QueueTransport(b, a)


_INPROCESS: dict[str, MessageTransport] = {}
_INPROCESS_LOCK = threading.Lock()


def register_inprocess(name: str, transport: MessageTransport) -> None:
    """Make the Primary end of an in-process link reachable as ``link.name = name``."""
    with _INPROCESS_LOCK:
        _INPROCESS[name] = transport


def unregister_inprocess(name: str) -> None:
    with _INPROCESS_LOCK:
        _INPROCESS.pop(name, None)


@dataclass
class InProcessSecondary:
    """A Secondary handler served on an in-process link in a thread (tests, demo)."""

    name: str
    primary_end: QueueTransport
    secondary_end: QueueTransport
    stop: threading.Event
    thread: threading.Thread

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        unregister_inprocess(self.name)


def serve_inprocess(
    name: str, handler: SecondaryHandler, limits: Limits, *, register: bool = True
) -> InProcessSecondary:
    """Serve ``handler`` on a new loopback link named ``name``; a handler with an
    ``endpoint(max_frame=...)`` method (a :class:`secondary.agent.SecondaryAgent`) serves
    its own endpoint, any other one with its ``link_key`` if it has one."""
    primary_end, secondary_end = loopback_pair()
    make = getattr(handler, "endpoint", None)
    endpoint = (
        make(max_frame=secondary_end.max_frame)
        if callable(make)
        else SecondaryEndpoint(
            handler,
            limits,
            max_frame=secondary_end.max_frame,
            link_key=getattr(handler, "link_key", None),  # an agent's, behind a wrapper
        )
    )
    stop = threading.Event()
    thread = threading.Thread(
        target=serve, args=(secondary_end, endpoint, stop), kwargs={"poll": 0.02}, daemon=True
    )
    thread.start()
    if register:
        register_inprocess(name, primary_end)
    return InProcessSecondary(name, primary_end, secondary_end, stop, thread)


# --- opening links ------------------------------------------------------------------------


def open_transport(cfg: SecondaryConfig, limits: Limits) -> MessageTransport:
    """The transport for ``cfg.link``; raises LinkError when it cannot be opened."""
    link = cfg.link
    try:
        if link.type == "inprocess":
            with _INPROCESS_LOCK:
                t = _INPROCESS.get(link.name or "")
            if t is None:
                raise LinkError(f"no in-process Secondary named {link.name!r}")
            return t
        if link.type == "serial":
            from hardware.serial_link import SerialTransport

            return SerialTransport(link.port or "", baudrate=link.baudrate, limits=limits)
        if link.type == "can":
            import can  # python-can, the optional "can" extra

            from hardware.can_link import CanTransport

            bus = can.Bus(channel=link.channel, interface=link.interface)
            assert link.tx_id is not None and link.rx_id is not None
            try:
                t = CanTransport(bus, txid=link.tx_id, rxid=link.rx_id, limits=limits)
            except Exception:
                bus.shutdown()
                raise
            return _BusOwner(t, bus)
    except LinkError:
        raise
    except Exception as e:  # a missing port, bus or driver: the Secondary is unreachable
        raise LinkError(f"cannot open {link.describe()}: {e}") from None
    raise LinkError(f"unknown link type {link.type!r}")


class _BusOwner:
    """A CAN transport together with the bus it was opened on: closing it closes both."""

    def __init__(self, transport: MessageTransport, bus: Any) -> None:
        self.transport = transport
        self.bus = bus

    @property
    def max_frame(self) -> int:
        return self.transport.max_frame

    def negotiate(self, frame_size: int) -> None:
        self.transport.negotiate(frame_size)

    def send(self, message: bytes, timeout: float | None = None) -> None:
        self.transport.send(message, timeout)

    def recv(self, timeout: float) -> bytes | None:
        return self.transport.recv(timeout)

    def close(self) -> None:
        try:
            self.transport.close()
        finally:
            self.bus.shutdown()


def open_link(cfg: SecondaryConfig, limits: Limits) -> LinkClient:
    """A :class:`LinkClient` with the Secondary's bounded timeout and retries."""
    transport = open_transport(cfg, limits)
    return LinkClient(
        transport,
        limits,
        timeout=cfg.timeout,
        retries=cfg.retries,
        send_timeout=cfg.timeout * 4,
        link_key=cfg.link_key,
    )


# --- one Secondary, one cycle ---------------------------------------------------------------


@dataclass
class MetadataFile:
    """One file to forward: repository, role, encoding and bytes."""

    repository: str
    role: str
    encoding: str
    data: bytes


def transfer_of(status: Status, filename: str, length: int) -> int:
    """How many bytes of ``filename`` the Secondary holds in a transfer in progress (0: no
    such transfer). A transfer in progress means its verified metadata is still there.
    STATUS names only the file and its length, not its hashes: whether that partial is of
    the image the caller means is for the caller to know (the Primary records the image
    it started sending)."""
    if status.image_filename == filename and status.image_total == length:
        return min(status.image_offset, length)
    return 0


def status_has(status: Status, filename: str) -> bool:
    """Whether the Secondary reports ``filename`` as installed (running or on trial)."""
    if status.installed == filename:
        return True
    return status.image_filename == filename and status.state in INSTALLED_STATES


class SecondaryPort:
    """The cycle's operations on one Secondary, each a bounded link exchange.

    The link is opened lazily and kept for the cycle; :meth:`close` releases it. In-process
    links are shared, so closing one only forgets it.
    """

    def __init__(self, cfg: SecondaryConfig, limits: Limits) -> None:
        self.cfg = cfg
        self.limits = limits
        self._client: LinkClient | None = None

    @property
    def serial(self) -> str:
        return self.cfg.serial

    def client(self) -> LinkClient:
        if self._client is None:
            self._client = open_link(self.cfg, self.limits)
        return self._client

    def close(self) -> None:
        if self._client is not None and self.cfg.link.type != "inprocess":
            with contextlib.suppress(Exception):  # best effort at the end of a cycle
                self._client.close()
        self._client = None

    def report(self, nonce: bytes) -> bytes:
        """The Secondary's signed version report for ``nonce``."""
        return self.client().get_report(nonce)

    def report_encoding(self, raw: bytes) -> str:
        """The codec of a report from this Secondary: the first it listed in WELCOME (the
        one it reads and signs in; ``compact-der`` is never sniffed), else the one its
        first byte says."""
        peer = self.client().peer
        if peer is not None and peer.codecs and peer.codecs[0] in our_codecs():
            return peer.codecs[0]
        return sniff(raw).name

    def metadata_encoding(self) -> str:
        """The codec to forward this Secondary's metadata in: its configured one, or the
        DER flavour both ends list (:func:`hardware.protocol.negotiate_codec`). Opens the
        session if none is open; LinkError when the ends share no codec."""
        c = self.client()
        peer = c.peer if c.peer is not None else c.hello()
        return negotiate_codec(self.cfg.encoding, peer.codecs)

    def status(self) -> Status:
        return self.client().status()

    def time_nonce(self) -> bytes:
        """A fresh nonce of the Secondary's for the next signed time token."""
        return self.client().time_nonce()

    def put_time(self, now_seconds: int, token: bytes | None = None) -> None:
        """§5.4.2 step 5: the time, with the token that proves it (signed time)."""
        self.client().put_time(now_seconds, token)

    def send_metadata(self, metadata: Iterable[MetadataFile]) -> None:
        """§5.4.2 step 6 for this Secondary: every metadata file, in order (its time was
        given at the start of the cycle: :mod:`primary.timekeeping`)."""
        c = self.client()
        for m in metadata:
            c.put_metadata(m.role, m.encoding, m.data, repository=m.repository)

    def send_image(
        self,
        image: Path,
        filename: str,
        length: int,
        *,
        progress: Progress | None = None,
        resume: bool = True,
    ) -> int:
        """§5.4.2 step 7: the image, resumed from the offset the Secondary acknowledged
        (``resume``; only when the caller knows the Secondary's partial is this very image:
        STATUS names just the file and length), else from byte 0. Returns the offset the
        transfer started at (non-zero on a resume)."""
        with image.open("rb") as f:
            return self.client().put_image(filename, f, length, progress=progress, resume=resume)

    def install(self, filename: str) -> Status:
        return self.client().install(filename)


def is_unreachable(error: BaseException) -> bool:
    """A link failure that means "the Secondary did not answer" (not an attack it named).
    ``SessionRequired`` counts: it may come in an unauthenticated REFUSAL, which must never
    pass for the ECU's verdict on an update (docs/link-protocol.md)."""
    return isinstance(error, (LinkTimeout, LinkError, SessionRequired))
