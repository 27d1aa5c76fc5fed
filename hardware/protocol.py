"""Sans-I/O state machines for the two ends of the link message layer.

Every message travels in the envelope of :mod:`hardware.secure_link` (protocol version 2):
a session per peer, a freshness counter per direction and, with a link key, a MAC.

- :class:`SecondaryEndpoint` (server side): request bytes in, reply bytes out. It checks the
  envelope and the session (HELLO first, per peer session), negotiates the version,
  reassembles chunked metadata under its role cap, enforces image offsets (resume at the
  acknowledged offset), answers a retransmitted request from a cache instead of running
  it twice, and dispatches to a :class:`SecondaryHandler`, which the Secondary agent
  implements.
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
    GetTimeNonce,
    Hello,
    HelloInfo,
    Install,
    Message,
    PutImage,
    PutMetadata,
    PutTime,
    Report,
    Status,
    TimeNonce,
    decode,
    encode,
    peek_rid,
)
from hardware.secure_link import (
    ENVELOPE_BYTES,
    KIND_REFUSAL,
    KIND_WELCOME,
    REFUSAL_CODES,
    ClientChannel,
    Incoming,
    LinkKey,
    Refused,
    ServerChannel,
    decode_pdu,
    is_envelope,
    refusal,
)
from uptane.codec import COMPACT_DER, DER, codecs
from uptane.errors import (
    EndlessDataAttack,
    LinkError,
    LinkTimeout,
    MalformedInput,
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
    #: the metadata codecs it reads (:mod:`uptane.codec` names), listed in WELCOME
    codecs: tuple[str, ...] = ()


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

    def time_nonce(self) -> bytes:
        """A fresh random nonce (16 to 64 bytes) the next time token must be bound to."""
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


#: the DER flavours, most compact first: a Primary configured to send a Secondary "der"
#: sends the first of these that both ends list (docs/link-protocol.md, "Codecs")
DER_FLAVOURS = (COMPACT_DER, DER)


def our_codecs() -> tuple[str, ...]:
    """Every codec this end can forward or read (the registered ones)."""
    return tuple(c.name for c in codecs())


def negotiate_codec(
    configured: str, theirs: tuple[str, ...] | None, ours: tuple[str, ...] | None = None
) -> str:
    """The metadata codec to send a Secondary the Primary is ``configured`` to send, given
    what it listed in WELCOME (``theirs``; None or empty: it did not say, so the
    configuration stands). For a DER Secondary: ``compact-der`` when both ends have it,
    else ``der``; otherwise the configured codec when the Secondary reads it, else the
    first it lists that this end has (the Secondary's word on what it reads wins: nothing
    else can be verified there). :class:`LinkError` when the ends share none (this link
    cannot serve that Secondary: a configuration problem, not an attack)."""
    ours = our_codecs() if ours is None else ours
    if not theirs:
        return configured
    shared = [c for c in theirs if c in ours]
    if configured in DER_FLAVOURS:
        for flavour in DER_FLAVOURS:
            if flavour in shared:
                return flavour
    if configured in shared:
        return configured
    if shared:
        return shared[0]
    raise LinkError(
        f"no common metadata codec: the Secondary reads {', '.join(theirs)[:120]}, "
        f"this end sends {', '.join(ours)}"
    )


@dataclass
class _MetaTransfer:
    repository: str
    role: str
    encoding: str
    total: int
    data: bytearray


@dataclass
class _Peer:
    """What the Secondary holds for one session: the negotiated version and sizes, a
    metadata file being reassembled, and the last request's id, digest and reply."""

    version: int | None = None
    frame_size: int | None = None
    peer_max_message: int | None = None
    meta: _MetaTransfer | None = None
    last: tuple[int, bytes, bytes] | None = None


class SecondaryEndpoint:
    """Server side of the message layer: ``receive(request_pdu) -> reply_pdu`` (None: the
    request was dropped, send nothing back).

    Every request arrives in the envelope of :mod:`hardware.secure_link`: a session per
    peer (each HELLO opens one; up to four are held), a counter per direction, and with
    ``link_key`` a MAC; what fails it never reaches the handler. ``max_frame`` is the
    largest link frame this end accepts (serial); after a HELLO, :attr:`frame_size` is
    the agreed one, which the transport should switch to.
    """

    def __init__(
        self,
        handler: SecondaryHandler,
        limits: Limits,
        *,
        max_frame: int = 1024,
        min_version: int = MIN_VERSION,
        max_version: int = MAX_VERSION,
        link_key: LinkKey | None = None,
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.max_frame = max_frame
        self.min_version = min_version
        self.max_version = max_version
        self.channel = ServerChannel(link_key)
        self._peers: dict[bytes, _Peer] = {}
        self._peer = _Peer()  # the session of the request being (or last) served

    @property
    def authenticated(self) -> bool:
        """Whether requests must carry the link key's MAC."""
        return self.channel.authenticated

    @property
    def dropped(self) -> int:
        """Request PDUs dropped: forged, replayed, reordered or not envelopes."""
        return self.channel.dropped

    @property
    def in_session(self) -> bool:
        """Whether the session last served is set up by a HELLO."""
        return self._peer.version is not None

    @property
    def version(self) -> int | None:
        return self._peer.version

    @property
    def frame_size(self) -> int | None:
        return self._peer.frame_size

    @property
    def peer_max_message(self) -> int | None:
        return self._peer.peer_max_message

    def reset(self) -> None:
        """Forget every session (a new HELLO is needed) and any partial metadata."""
        self.channel.forget()
        self._peers.clear()
        self._peer = _Peer()

    def receive(self, data: bytes) -> bytes | None:
        """Handle one request PDU; the reply PDU, or None when it is dropped."""
        if not is_envelope(data):
            return self._plain(data)
        try:
            pdu = decode_pdu(data, self.limits.link_message_bytes)
        except MalformedInput:
            self.channel.dropped += 1
            return None
        got = self.channel.open(pdu)
        if got is None:
            return None
        if isinstance(got, Refused):
            rid = peek_rid(pdu.payload, self.limits) or 0
            return refusal(encode(Error.from_exception(got.error, self.limits), rid), got.sid)
        self._peer = self._session(got)
        return self.channel.seal(got, self._answer(got.payload))

    def _session(self, got: Incoming) -> _Peer:
        live = self.channel.sessions
        self._peers = {sid: p for sid, p in self._peers.items() if sid in live}
        return self._peers.setdefault(got.session.sid, _Peer())

    def _plain(self, data: bytes) -> bytes:
        """A message outside any envelope (a version 1 peer, or anyone): refused in plain
        CBOR without touching state, so an old peer reads why."""
        try:
            msg: Message | None = decode(data, self.limits).message
        except UptaneError:
            msg = None
        error: UptaneError = SessionRequired(
            "no session: send HELLO in the link envelope first (docs/link-protocol.md)"
        )
        if isinstance(msg, Hello):
            error = ProtocolVersionMismatch(
                f"this ECU speaks link protocol {self.min_version}..{self.max_version} "
                f"(messages in the envelope of docs/link-protocol.md), the peer "
                f"{msg.min_version}..{msg.max_version}: update the peer"
            )
        rid = peek_rid(data, self.limits) or 0
        return encode(Error.from_exception(error, self.limits), rid)

    def _answer(self, payload: bytes) -> bytes:
        """The reply payload to one request payload of the current session (an ERROR on
        failure); a retransmission is answered from the session's cache, not run again."""
        peer = self._peer
        digest = hashlib.sha256(payload).digest()
        try:
            env = decode(payload, self.limits)
        except UptaneError as e:
            rid = peek_rid(payload, self.limits)
            return self._encode_reply(Error.from_exception(e, self.limits), rid or 0)
        if peer.last is not None and peer.last[0] == env.rid and peer.last[1] == digest:
            return peer.last[2]  # a retransmission: answer again, do not run it twice
        try:
            reply = self.handle(env.message)
        except UptaneError as e:
            reply = Error.from_exception(e, self.limits)
        except Exception as e:  # the handler's bug must not stop the link
            reply = Error.from_exception(e, self.limits)
        out = self._encode_reply(reply, env.rid)
        self._peer.last = (env.rid, digest, out)
        return out

    def _encode_reply(self, reply: Message, rid: int) -> bytes:
        out = encode(reply, rid)
        cap = (self._peer.peer_max_message or self.limits.link_message_bytes) - ENVELOPE_BYTES
        if len(out) > cap:
            out = encode(Error.from_exception(EndlessDataAttack(f"reply of {len(out)} bytes")), rid)
        return out

    def handle(self, msg: Message) -> Message:
        """Dispatch one decoded request of the current session to the handler; returns
        the reply message."""
        if isinstance(msg, Hello):
            return self._hello(msg)
        if not self.in_session:
            raise SessionRequired("no session: send HELLO first")
        if isinstance(msg, GetReport):
            return Report(report=self.handler.report(msg.nonce))
        if isinstance(msg, GetTimeNonce):
            return TimeNonce(nonce=self.handler.time_nonce())
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
        peer = self._peer
        peer.version = peer.frame_size = peer.peer_max_message = None
        peer.meta = None
        version = negotiate_version(
            msg.min_version, msg.max_version, self.min_version, self.max_version
        )
        if msg.max_message <= CHUNK_OVERHEAD:
            raise ProtocolViolation(f"max_message {msg.max_message} is too small")
        info = self.handler.hello_info()
        peer.version = version
        peer.frame_size = max(1, min(self.max_frame, msg.max_frame))
        peer.peer_max_message = min(msg.max_message, self.limits.link_message_bytes)
        return HelloInfo(
            version=version,
            ecu_serial=info.ecu_serial,
            hardware_id=info.hardware_id,
            mode=info.mode,
            max_frame=peer.frame_size,
            max_message=self.limits.link_message_bytes,
            slot_size=info.slot_size,
            codecs=info.codecs or None,
        )

    def _put_metadata(self, msg: PutMetadata) -> Ack:
        # §4.3 endless data: refuse a file over its role's cap before buffering any of it
        self.limits.check_role_size(msg.role, msg.total, repository=msg.repository)
        key = (msg.repository, msg.role, msg.encoding, msg.total)
        peer = self._peer
        cur = peer.meta
        if msg.offset == 0:
            cur = peer.meta = _MetaTransfer(*key, bytearray())
        elif cur is None or (cur.repository, cur.role, cur.encoding, cur.total) != key:
            raise ProtocolViolation("metadata chunk for a transfer that was not started")
        elif msg.offset != len(cur.data):
            raise ProtocolViolation(f"metadata offset {msg.offset}, expected {len(cur.data)}")
        cur.data += msg.chunk
        done = len(cur.data)
        if done == cur.total:
            peer.meta = None
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
    now)``, which returns the reply message once it arrives (``None`` for a stale or
    dropped one); call ``poll(now)`` when :meth:`next_deadline` passes: it returns the
    bytes to send again or raises :class:`LinkTimeout` once ``retries`` retransmissions
    went unanswered. The n-th attempt waits ``timeout * backoff**n``.

    Requests go in the envelope of :mod:`hardware.secure_link` (with ``link_key``,
    authenticated); a retransmission is sealed again with the next counter, except a
    HELLO, which goes again as it was (the same session nonce). A reply that fails the
    envelope is dropped, and an unauthenticated REFUSAL is believed only for the link
    errors it may carry (come back with a HELLO; the keys disagree).
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
        link_key: LinkKey | None = None,
    ) -> None:
        self.limits = limits
        self.channel = ClientChannel(link_key)
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
        self._pending_pdu = b""
        self._attempt = 0
        self._deadline = 0.0
        self.stale_replies = 0
        #: reply PDUs dropped by the envelope (forged, replayed, not of this session)
        self.dropped = 0

    @property
    def authenticated(self) -> bool:
        """Whether this end seals its requests with a link key."""
        return self.channel.authenticated

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
            codecs=our_codecs(),
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
        cap = self.peer.max_message if self.peer else self.limits.link_message_bytes
        if len(data) + ENVELOPE_BYTES > cap:
            raise EndlessDataAttack(f"request of {len(data)} bytes exceeds the peer's cap")
        if isinstance(msg, Hello):
            self.peer = None
            pdu = self.channel.hello(data)
        else:
            pdu = self.channel.seal(data)
        self._pending = msg
        self._pending_rid = self._rid
        self._pending_bytes = data
        self._pending_pdu = pdu
        self._attempt = 0
        self._deadline = now + self.timeout
        return pdu

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
        if isinstance(self._pending, Hello):
            return self._pending_pdu  # the same session nonce: the same session
        return self.channel.seal(self._pending_bytes)  # the next counter

    def cancel(self) -> None:
        """Give up on the outstanding request (a late reply is then ignored as stale)."""
        self._pending = None
        self._pending_bytes = self._pending_pdu = b""

    def receive(self, data: bytes, now: float) -> Message | None:
        """A reply arrived: returns it (an :class:`Error` included) or ``None`` if stale.

        Raises on a malformed reply, a reply of the wrong type, or a HELLO reply whose
        version is not in our range.
        """
        opened = self.channel.open(data, self.limits.link_message_bytes)
        if opened is None:
            self.dropped += 1
            return None
        kind, payload = opened
        if kind == KIND_REFUSAL:
            return self._refusal(payload)
        env = decode(payload, self.limits)
        if self._pending is None or env.rid != self._pending_rid:
            self.stale_replies += 1
            return None
        request = self._pending
        msg = env.message
        self.cancel()
        if isinstance(msg, Error):
            return msg
        if isinstance(msg, HelloInfo) != (kind == KIND_WELCOME):
            raise ProtocolViolation(f"{type(msg).__name__} in a PDU of kind {kind}")
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

    def _refusal(self, payload: bytes) -> Error | None:
        """An unauthenticated REFUSAL: believed only for a link error of
        :data:`~hardware.secure_link.REFUSAL_CODES` answering the pending request."""
        try:
            env = decode(payload, self.limits)
        except UptaneError:
            env = None
        msg = env.message if env is not None else None
        if (
            env is None
            or self._pending is None
            or env.rid != self._pending_rid
            or not isinstance(msg, Error)
            or msg.code not in REFUSAL_CODES
        ):
            self.dropped += 1
            return None
        self.cancel()
        return msg
