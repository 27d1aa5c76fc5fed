"""The Primary's (and the bench tool's) side of a link: one call per operation, over any
:class:`hardware.transport.MessageTransport` (serial or CAN).

Every call is bounded: a request is retransmitted after ``timeout * backoff**n`` seconds
at most ``retries`` times, then :class:`uptane.errors.LinkTimeout` (a
``DropRequestAttack``) is raised. An ERROR reply is raised as the :mod:`uptane.errors`
error it names. The HELLO handshake runs automatically before the first request, and
again once if the Secondary says it lost the session (it restarted). With ``link_key``
every message is authenticated (docs/link-protocol.md, "The envelope").
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from typing import BinaryIO, TypeVar

from hardware.messages import (
    Ack,
    Error,
    GetReport,
    GetStatus,
    GetTimeNonce,
    HelloInfo,
    Install,
    Message,
    PutImage,
    PutMetadata,
    PutTime,
    Report,
    Status,
    TimeNonce,
)
from hardware.protocol import PrimaryEndpoint
from hardware.secure_link import LinkKey
from hardware.transport import MessageTransport
from uptane.errors import (
    BadLength,
    LinkError,
    LinkTimeout,
    ProtocolViolation,
    SessionRequired,
)
from uptane.limits import PRIMARY, Limits

Progress = Callable[[int, int], None]
M = TypeVar("M", bound=Message)


class NoAnswer(LinkError):
    """Nothing answered the handshake on the port within the time allowed: a cable not
    plugged in, the wrong port or speed, an ECU not running its agent. A configuration or
    wiring problem, never an attack (:meth:`LinkClient.probe`)."""


class LinkClient:
    """Talks to one Secondary over ``transport``."""

    def __init__(
        self,
        transport: MessageTransport,
        limits: Limits = PRIMARY,
        *,
        timeout: float = 2.0,
        retries: int = 3,
        backoff: float = 2.0,
        send_timeout: float | None = 30.0,
        clock: Callable[[], float] = time.monotonic,
        link_key: LinkKey | None = None,
    ) -> None:
        self.transport = transport
        self.limits = limits
        self.send_timeout = send_timeout
        self.clock = clock
        self.endpoint = PrimaryEndpoint(
            limits,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_frame=transport.max_frame,
            link_key=link_key,
        )

    def __enter__(self) -> LinkClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the transport."""
        self.transport.close()

    # --- the operations -------------------------------------------------------------------

    @property
    def peer(self) -> HelloInfo | None:
        """What the Secondary said in the last handshake."""
        return self.endpoint.peer

    def hello(self) -> HelloInfo:
        """Run the handshake: negotiate the version and frame size; returns the ECU's info."""
        info = self._call(self.endpoint.hello(), HelloInfo, session=False)
        self.transport.negotiate(info.max_frame)
        return info

    def probe(self, budget: float) -> HelloInfo:
        """The handshake, with at most about ``budget`` seconds for an answer (three
        attempts). A port with nothing behind it raises :class:`NoAnswer` then, instead
        of a ``LinkTimeout`` after the full retries (about 45 s on serial)."""
        ep = self.endpoint
        saved = (ep.timeout, ep.retries, ep.backoff, self.send_timeout)
        attempts = 3
        share = budget / attempts / 2  # per attempt: the send, then the wait for the reply
        ep.timeout, ep.retries, ep.backoff, self.send_timeout = share, attempts - 1, 1.0, share
        try:
            return self.hello()
        except LinkTimeout:
            raise NoAnswer(f"no answer to HELLO in {budget:.0f} s") from None
        finally:
            ep.timeout, ep.retries, ep.backoff, self.send_timeout = saved

    def get_report(self, nonce: bytes) -> bytes:
        """The Secondary's signed ECU version report for ``nonce``."""
        return self._call(GetReport(nonce=nonce), Report).report

    def time_nonce(self) -> bytes:
        """A fresh nonce of the Secondary's, for the next signed time token."""
        return self._call(GetTimeNonce(), TimeNonce).nonce

    def put_time(self, time_value: int | bytes, token: bytes | None = None) -> None:
        """Send the current time (and a signed time token, if there is one)."""
        self._call(PutTime(time=time_value, token=token), Ack)

    def put_metadata(
        self,
        role: str,
        encoding: str,
        data: bytes,
        *,
        repository: str = "director",
        progress: Progress | None = None,
    ) -> None:
        """Send one metadata file in chunks; ``progress(sent, total)`` after each."""
        self._ensure_session()
        step = self.endpoint.chunk_size()
        total = len(data)
        offset = 0
        while True:
            chunk = data[offset : offset + step]
            msg = PutMetadata(
                repository=repository,
                role=role,
                encoding=encoding,
                total=total,
                offset=offset,
                chunk=chunk,
            )
            self._call(msg, Ack)
            offset += len(chunk)
            if progress is not None:
                progress(offset, total)
            if offset >= total:
                return

    def put_image(
        self,
        filename: str,
        stream: BinaryIO | bytes,
        length: int,
        *,
        progress: Progress | None = None,
        resume: bool = True,
    ) -> int:
        """Send ``length`` bytes of an image from ``stream`` (a binary file or bytes).

        With ``resume``, first ask the Secondary how much of this same ``filename`` and
        ``length`` it already acknowledged and continue from there (the stream is then
        sought, or read past, to that offset). Returns the offset the transfer started at.
        """
        self._ensure_session()
        if isinstance(stream, (bytes, bytearray, memoryview)):
            stream = io.BytesIO(bytes(stream))
        base = stream.tell() if stream.seekable() else None
        pos = 0  # bytes consumed from the stream, relative to where it started
        offset = 0
        if resume:
            st = self.status()
            if st.image_filename == filename and st.image_total == length:
                offset = min(st.image_offset, length)
        start = offset
        step = self.endpoint.chunk_size()
        while True:
            pos = self._seek(stream, base, pos, offset)
            want = min(step, length - offset)
            chunk = _read_exactly(stream, want)
            pos += len(chunk)
            if len(chunk) != want:
                raise BadLength(f"image {filename!r}: the stream ended at {offset + len(chunk)}")
            ack = self._call(
                PutImage(filename=filename, total=length, offset=offset, chunk=chunk), Ack
            )
            assert ack.offset is not None  # checked by PrimaryEndpoint
            if ack.offset < offset + len(chunk):
                raise ProtocolViolation(f"image {filename!r}: acknowledged only {ack.offset}")
            offset = ack.offset
            if progress is not None:
                progress(offset, length)
            if offset >= length:
                return start

    def install(self, filename: str | None = None) -> Status:
        """Ask the Secondary to install what it received; returns its status after."""
        return self._call(Install(filename=filename), Status)

    def status(self) -> Status:
        """The Secondary's status (including the acknowledged image offset)."""
        return self._call(GetStatus(), Status)

    # --- internals ------------------------------------------------------------------------

    def _ensure_session(self) -> None:
        if self.endpoint.peer is None:
            self.hello()

    def _call(self, msg: Message, expect: type[M], *, session: bool = True) -> M:
        if session:
            self._ensure_session()
        try:
            reply = self._exchange(msg)
        except SessionRequired:
            if not session:
                raise
            self.endpoint.peer = None  # the Secondary restarted: handshake again, once
            self.hello()
            reply = self._exchange(msg)
        assert isinstance(reply, expect)
        return reply

    def _exchange(self, msg: Message) -> Message:
        ep = self.endpoint
        data = ep.request(msg, self.clock())
        try:
            self._send(data)
            ep.restart_timer(self.clock())
            while True:
                deadline = ep.next_deadline()
                assert deadline is not None
                reply = self.transport.recv(max(0.0, deadline - self.clock()))
                now = self.clock()
                if reply is not None:
                    got = ep.receive(reply, now)
                    if got is not None:
                        break
                again = ep.poll(now)  # raises LinkTimeout when the retries are spent
                if again is not None:
                    self._send(again)
                    ep.restart_timer(self.clock())
        finally:
            ep.cancel()
        if isinstance(got, Error):
            raise got.to_exception()
        return got

    def _send(self, data: bytes) -> None:
        # a send that times out counts as an unanswered attempt: poll() retransmits or gives up
        with contextlib.suppress(LinkTimeout):
            self.transport.send(data, self.send_timeout)

    @staticmethod
    def _seek(stream: BinaryIO, base: int | None, pos: int, offset: int) -> int:
        if pos == offset:
            return pos
        if base is not None:
            stream.seek(base + offset)
            return offset
        if offset < pos:
            raise ProtocolViolation("cannot rewind a stream that is not seekable")
        skipped = _read_exactly(stream, offset - pos)
        return pos + len(skipped)


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    parts: list[bytes] = []
    left = n
    while left > 0:
        part = stream.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)
