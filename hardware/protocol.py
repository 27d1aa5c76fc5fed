"""Sans-I/O state machines for the two ends of the link message layer.

- :class:`SecondaryEndpoint` (server side): request bytes in, reply bytes out. It checks the
  session (HELLO first), negotiates the version, reassembles chunked metadata under its
  role cap, enforces image offsets (resume at the acknowledged offset), answers a
  retransmitted request from a cache instead of running it twice, and dispatches to a
  :class:`SecondaryHandler`, which the Secondary agent implements.
- :class:`PrimaryEndpoint` (client side, for the Primary and the bench tool): one request
  at a time; it assigns request ids, drops stale replies, checks the reply type, and turns
  the caller's ``now`` into retransmissions with backoff and finally :class:`LinkTimeout`.

Neither touches a port or a clock: transports (``serial_link``, ``can_link``) move the
bytes and :mod:`hardware.client` / :mod:`hardware.server` drive them.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from hardware.messages import (
    CHUNK_OVERHEAD,
    MAX_VERSION,
    MIN_VERSION,
    REPLY_TYPES,
    RID_MAX,
    Ack,
    Error,
    GetReport,
    GetStatus,
    Hello,
    HelloInfo,
    Install,
    Message,
    PutImage,
    PutMetadata,
    PutTime,
    Report,
    Status,
    decode,
    encode,
    peek_rid,
)
from uptane.errors import (
    EndlessDataAttack,
    LinkTimeout,
    ProtocolVersionMismatch,
    ProtocolViolation,
    SessionRequired,
    UptaneError,
)
from uptane.limits import Limits


@dataclass(frozen=True)
class EcuInfo:
    """What a Secondary says about itself in the handshake."""

    ecu_serial: str
    hardware_id: str
    mode: str  # "partial" or "full" verification (§5.4.4.1 / §5.4.4.2)
    slot_size: int  # bytes available for an image in the inactive slot


@runtime_checkable
class SecondaryHandler(Protocol):
    """What the Secondary agent implements; :class:`SecondaryEndpoint` calls it.

    Every method may raise an :mod:`uptane.errors` error, which goes back to the Primary as
    an ERROR message naming the attack. Any other exception goes back as a plain error
    (code 1) and does not stop the endpoint.
    """

    def hello_info(self) -> EcuInfo:
        """Who this ECU is, for the handshake."""
        ...

    def report(self, nonce: bytes) -> bytes:
        """A signed ECU version report that includes ``nonce`` (opaque bytes here)."""
        ...

    def put_time(self, time: int | bytes, token: bytes | None) -> None:
        """The Primary's current time, with a signed time token if it has one."""
        ...

    def put_metadata(self, repository: str, role: str, encoding: str, data: bytes) -> None:
        """One complete metadata file (already reassembled and capped by the role's limit)."""
        ...

    def put_image_chunk(self, filename: str, total: int, offset: int, chunk: bytes) -> None:
        """The next image chunk. ``offset == 0`` starts a new transfer (drop any partial
        one); otherwise ``offset`` equals ``status().image_offset`` for this same
        ``filename`` and ``total``. After it returns, ``status().image_offset`` must be
        ``offset + len(chunk)`` (persisted, if the agent wants resume across a reboot)."""
        ...

    def install(self, filename: str | None) -> None:
        """Install the received image (if ``filename`` is given, only if it is that one)."""
        ...

    def status(self) -> Status:
        """The current status, including the acknowledged offset of the image transfer."""
        ...


def negotiate_version(
    peer_min: int, peer_max: int, our_min: int = MIN_VERSION, our_max: int = MAX_VERSION
) -> int:
    """The highest version both ranges contain; :class:`ProtocolVersionMismatch` if none."""
    low, high = max(peer_min, our_min), min(peer_max, our_max)
    if low > high:
        raise ProtocolVersionMismatch(
            f"peer speaks versions {peer_min}..{peer_max}, we speak {our_min}..{our_max}"
        )
    return high


@dataclass
class _MetaTransfer:
    repository: str
    role: str
    encoding: str
    total: int
    data: bytearray


class SecondaryEndpoint:
    """Server side of the message layer: ``receive(request_bytes) -> reply_bytes``.

    ``max_frame`` is the largest link frame this end accepts (serial); after a HELLO,
    :attr:`frame_size` is the agreed one, which the transport should switch to.
    """

    def __init__(
        self,
        handler: SecondaryHandler,
        limits: Limits,
        *,
        max_frame: int = 1024,
        min_version: int = MIN_VERSION,
        max_version: int = MAX_VERSION,
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.max_frame = max_frame
        self.min_version = min_version
        self.max_version = max_version
        self.version: int | None = None
        self.frame_size: int | None = None
        self.peer_max_message: int | None = None
        self._meta: _MetaTransfer | None = None
        self._last: tuple[int, bytes, bytes] | None = None  # rid, request digest, reply

    @property
    def in_session(self) -> bool:
        """Whether a HELLO has set up a session."""
        return self.version is not None

    def reset(self) -> None:
        """Forget the session (a new HELLO is needed) and any partial metadata."""
        self.version = None
        self.frame_size = None
        self._meta = None
        self._last = None

    def receive(self, data: bytes) -> bytes:
        """Handle one request; always returns the reply bytes (an ERROR on failure)."""
        digest = hashlib.sha256(data).digest()
        try:
            env = decode(data, self.limits)
        except UptaneError as e:
            rid = peek_rid(data, self.limits)
            return self._encode_reply(Error.from_exception(e, self.limits), rid or 0)
        if self._last is not None and self._last[0] == env.rid and self._last[1] == digest:
            return self._last[2]  # a retransmission: answer again, do not run it twice
        try:
            reply = self.handle(env.message)
        except UptaneError as e:
            reply = Error.from_exception(e, self.limits)
        except Exception as e:  # the handler's bug must not stop the link
            reply = Error.from_exception(e, self.limits)
        out = self._encode_reply(reply, env.rid)
        self._last = (env.rid, digest, out)
        return out

    def _encode_reply(self, reply: Message, rid: int) -> bytes:
        out = encode(reply, rid)
        cap = self.peer_max_message or self.limits.link_message_bytes
        if len(out) > cap:
            out = encode(Error.from_exception(EndlessDataAttack(f"reply of {len(out)} bytes")), rid)
        return out

    def handle(self, msg: Message) -> Message:
        """Dispatch one decoded request to the handler; returns the reply message."""
        if isinstance(msg, Hello):
            return self._hello(msg)
        if not self.in_session:
            raise SessionRequired("no session: send HELLO first")
        if isinstance(msg, GetReport):
            return Report(report=self.handler.report(msg.nonce))
        if isinstance(msg, PutTime):
            self.handler.put_time(msg.time, msg.token)
            return Ack()
        if isinstance(msg, PutMetadata):
            return self._put_metadata(msg)
        if isinstance(msg, PutImage):
            return self._put_image(msg)
        if isinstance(msg, Install):
            self.handler.install(msg.filename)
            return self.handler.status()
        if isinstance(msg, GetStatus):
            return self.handler.status()
        raise ProtocolViolation(f"{type(msg).__name__} is not a request")

    def _hello(self, msg: Hello) -> HelloInfo:
        self.reset()
        version = negotiate_version(
            msg.min_version, msg.max_version, self.min_version, self.max_version
        )
        if msg.max_message <= CHUNK_OVERHEAD:
            raise ProtocolViolation(f"max_message {msg.max_message} is too small")
        info = self.handler.hello_info()
        self.version = version
        self.frame_size = max(1, min(self.max_frame, msg.max_frame))
        self.peer_max_message = min(msg.max_message, self.limits.link_message_bytes)
        return HelloInfo(
            version=version,
            ecu_serial=info.ecu_serial,
            hardware_id=info.hardware_id,
            mode=info.mode,
            max_frame=self.frame_size,
            max_message=self.limits.link_message_bytes,
            slot_size=info.slot_size,
        )

    def _put_metadata(self, msg: PutMetadata) -> Ack:
        # §4.3 endless data: refuse a file over its role's cap before buffering any of it
        self.limits.check_role_size(msg.role, msg.total, repository=msg.repository)
        key = (msg.repository, msg.role, msg.encoding, msg.total)
        cur = self._meta
        if msg.offset == 0:
            cur = self._meta = _MetaTransfer(*key, bytearray())
        elif cur is None or (cur.repository, cur.role, cur.encoding, cur.total) != key:
            raise ProtocolViolation("metadata chunk for a transfer that was not started")
        elif msg.offset != len(cur.data):
            raise ProtocolViolation(f"metadata offset {msg.offset}, expected {len(cur.data)}")
        cur.data += msg.chunk
        done = len(cur.data)
        if done == cur.total:
            self._meta = None
            repository, role, encoding = cur.repository, cur.role, cur.encoding
            data = bytes(cur.data)
            del cur  # the receive buffer is freed first: one copy while the handler verifies
            self.handler.put_metadata(repository, role, encoding, data)
        return Ack(offset=done)

    def _put_image(self, msg: PutImage) -> Ack:
        if msg.total > self.limits.image_bytes:
            raise EndlessDataAttack(
                f"image {msg.filename!r} of {msg.total} bytes, the cap is {self.limits.image_bytes}"
            )
        st = self.handler.status()
        same = st.image_filename == msg.filename and st.image_total == msg.total
        acked = st.image_offset if same else 0
        end = msg.offset + len(msg.chunk)
        if msg.offset != 0 and not same:
            raise ProtocolViolation(f"image {msg.filename!r}: no transfer to resume, start at 0")
        if msg.offset != 0 and msg.offset != acked:
            if end <= acked:
                return Ack(offset=acked)  # already have these bytes
            raise ProtocolViolation(f"image offset {msg.offset}, acknowledged is {acked}")
        self.handler.put_image_chunk(msg.filename, msg.total, msg.offset, msg.chunk)
        return Ack(offset=end)


class PrimaryEndpoint:
    """Client side of the message layer, one outstanding request at a time.

    ``request(msg, now)`` gives the bytes to send; feed reply bytes to ``receive(data,
    now)``, which returns the reply message once it arrives (``None`` for a stale one);
    call ``poll(now)`` when :meth:`next_deadline` passes: it returns the bytes to send again
    or raises :class:`LinkTimeout` once ``retries`` retransmissions went unanswered. The
    n-th attempt waits ``timeout * backoff**n``.
    """

    def __init__(
        self,
        limits: Limits,
        *,
        timeout: float = 1.0,
        retries: int = 3,
        backoff: float = 2.0,
        max_frame: int = 1024,
        min_version: int = MIN_VERSION,
        max_version: int = MAX_VERSION,
        first_rid: int | None = None,
    ) -> None:
        self.limits = limits
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_frame = max_frame
        self.min_version = min_version
        self.max_version = max_version
        self.peer: HelloInfo | None = None
        self._rid = secrets.randbelow(RID_MAX) if first_rid is None else first_rid
        self._pending: Message | None = None
        self._pending_rid = 0
        self._pending_bytes = b""
        self._attempt = 0
        self._deadline = 0.0
        self.stale_replies = 0

    @property
    def version(self) -> int | None:
        """The negotiated protocol version, once a HELLO succeeded."""
        return self.peer.version if self.peer is not None else None

    @property
    def pending(self) -> Message | None:
        """The request waiting for its reply, if any."""
        return self._pending

    def hello(self) -> Hello:
        """The HELLO this end sends."""
        return Hello(
            min_version=self.min_version,
            max_version=self.max_version,
            max_frame=self.max_frame,
            max_message=self.limits.link_message_bytes,
        )

    def chunk_size(self) -> int:
        """The largest chunk a PUT_* can carry to this peer (after HELLO)."""
        peer_cap = self.peer.max_message if self.peer is not None else 0
        room = min(self.limits.link_message_bytes, peer_cap) - CHUNK_OVERHEAD
        return max(1, min(self.limits.chunk_size, room))

    def request(self, msg: Message, now: float) -> bytes:
        """Start a request; returns the bytes to send."""
        if type(msg) not in REPLY_TYPES:
            raise ProtocolViolation(f"{type(msg).__name__} is not a request")
        if self._pending is not None:
            raise ProtocolViolation("a request is already outstanding")
        self._rid = (self._rid + 1) % (RID_MAX + 1)
        data = encode(msg, self._rid)
        if len(data) > (self.peer.max_message if self.peer else self.limits.link_message_bytes):
            raise EndlessDataAttack(f"request of {len(data)} bytes exceeds the peer's cap")
        self._pending = msg
        self._pending_rid = self._rid
        self._pending_bytes = data
        self._attempt = 0
        self._deadline = now + self.timeout
        return data

    def restart_timer(self, now: float) -> None:
        """The request bytes finished leaving this end at ``now``: the current attempt's
        timeout counts from here (a long transmission does not eat the reply's time)."""
        if self._pending is not None:
            self._deadline = now + self.timeout * self.backoff**self._attempt

    def next_deadline(self) -> float | None:
        """When :meth:`poll` must be called next, or ``None`` when idle."""
        return self._deadline if self._pending is not None else None

    def poll(self, now: float) -> bytes | None:
        """Bytes to retransmit if the deadline passed; raises LinkTimeout when exhausted."""
        if self._pending is None or now < self._deadline:
            return None
        if self._attempt >= self.retries:
            name = type(self._pending).__name__
            self.cancel()
            raise LinkTimeout(f"no reply to {name} after {self.retries + 1} attempts")
        self._attempt += 1
        # exponential backoff by hand, not urllib3's Retry: this endpoint is sans-I/O and
        # needs a deadline (not a sleep) for a link request, and Retry is an HTTP policy
        # (methods, status codes, redirects) of which only this one product would be used
        self._deadline = now + self.timeout * self.backoff**self._attempt
        return self._pending_bytes

    def cancel(self) -> None:
        """Give up on the outstanding request (a late reply is then ignored as stale)."""
        self._pending = None
        self._pending_bytes = b""

    def receive(self, data: bytes, now: float) -> Message | None:
        """A reply arrived: returns it (an :class:`Error` included) or ``None`` if stale.

        Raises on a malformed reply, a reply of the wrong type, or a HELLO reply whose
        version is not in our range.
        """
        env = decode(data, self.limits)
        if self._pending is None or env.rid != self._pending_rid:
            self.stale_replies += 1
            return None
        request = self._pending
        msg = env.message
        self.cancel()
        if isinstance(msg, Error):
            return msg
        expected = REPLY_TYPES[type(request)]
        if not isinstance(msg, expected):
            raise ProtocolViolation(
                f"{type(request).__name__} answered by {type(msg).__name__}, "
                f"expected {expected.__name__}"
            )
        if isinstance(msg, HelloInfo):
            if not self.min_version <= msg.version <= self.max_version:
                raise ProtocolVersionMismatch(
                    f"peer chose version {msg.version}, we speak "
                    f"{self.min_version}..{self.max_version}"
                )
            if msg.max_frame > self.max_frame:
                raise ProtocolViolation(f"peer chose frame size {msg.max_frame} > ours")
            self.peer = msg
        if isinstance(msg, Ack) and isinstance(request, PutMetadata):
            end = request.offset + len(request.chunk)
            if msg.offset != end:
                raise ProtocolViolation(f"acknowledged offset {msg.offset}, sent up to {end}")
        # for an image the Secondary may already hold more than this chunk (a resume)
        if (
            isinstance(msg, Ack)
            and isinstance(request, PutImage)
            and (msg.offset is None or msg.offset > request.total)
        ):
            raise ProtocolViolation(f"acknowledged offset {msg.offset} is not valid")
        return msg
