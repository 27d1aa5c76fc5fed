"""Link messages between a Primary (or the bench tool) and a Secondary, as typed dataclasses.

Every message travels as one canonical CBOR map (:mod:`uptane.encoding.cbor`) with small
integer keys: key 0 is the message type, key 1 the request id (echoed in the reply, so
a retransmitted request is answered once and a late reply is recognised), keys 2 and up
are the message's fields in the order of :attr:`Message.FIELDS`. Unknown keys, missing
required fields, wrong types and values over their caps are refused with
:mod:`uptane.errors` errors. See ``docs/link-protocol.md`` for the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from uptane.encoding import cbor
from uptane.errors import (
    LimitExceeded,
    MalformedInput,
    ProtocolViolation,
    UptaneError,
    error_classes,
    error_from_code,
)
from uptane.limits import Limits

#: protocol versions this implementation speaks (inclusive range). Version 2 puts every
#: message in the envelope of :mod:`hardware.secure_link` (sessions, freshness, the link
#: key's MAC) and adds GET_TIME_NONCE / TIME_NONCE (signed time, docs/secure-time.md).
MIN_VERSION = 2
MAX_VERSION = 2

#: bytes a message envelope and the fields next to a chunk can take, at most; a chunk may
#: be up to ``max_message - CHUNK_OVERHEAD`` bytes long
CHUNK_OVERHEAD = 1024

NONCE_MAX = 64
#: the most names a list field carries (the codecs a side supports)
MAX_NAMES = 8
MAX_UINT = 2**63 - 1
MODES = ("partial", "full")
RID_MAX = 2**32 - 1

_TYPE_KEY = 0
_RID_KEY = 1
_FIRST_FIELD_KEY = 2


@dataclass(frozen=True)
class Field:
    """One message field: attribute name, accepted kinds, optional or not, cap kind."""

    name: str
    kinds: tuple[type, ...]
    optional: bool = False
    #: "id" (Limits.max_identifier), "str" (max_string), "nonce", "blob" (whole message),
    #: "names" (a list of at most MAX_NAMES identifiers)
    cap: str = "str"


class Message:
    """Base of every link message; subclasses are frozen dataclasses."""

    TYPE: ClassVar[int] = 0
    FIELDS: ClassVar[tuple[Field, ...]] = ()

    def to_map(self) -> dict[int, Any]:
        """The message's fields as an integer-keyed map (without type and request id)."""
        out: dict[int, Any] = {}
        for i, f in enumerate(self.FIELDS):
            value = getattr(self, f.name)
            if value is not None:
                out[_FIRST_FIELD_KEY + i] = value
        return out

    @classmethod
    def from_map(cls, m: dict[Any, Any], limits: Limits) -> Message:
        """Build the message from its decoded map, checking every field."""
        known = {_TYPE_KEY, _RID_KEY} | {_FIRST_FIELD_KEY + i for i in range(len(cls.FIELDS))}
        for key in m:
            if key not in known:
                raise MalformedInput(f"{cls.__name__}: unknown key {key!r}")
        values: dict[str, Any] = {}
        for i, f in enumerate(cls.FIELDS):
            value = m.get(_FIRST_FIELD_KEY + i)
            if value is None:
                if not f.optional:
                    raise MalformedInput(f"{cls.__name__}: missing field {f.name!r}")
                values[f.name] = None
                continue
            values[f.name] = _check_field(cls.__name__, f, value, limits)
        msg = cls(**values)
        msg.validate(limits)
        return msg

    def validate(self, limits: Limits) -> None:
        """Cross-field checks; raise an :mod:`uptane.errors` error. Default: none."""


def _check_names(where: str, f: Field, value: Any, limits: Limits) -> tuple[str, ...]:
    """A list of short names (codec names): at most MAX_NAMES, each an identifier."""
    if len(value) > MAX_NAMES:
        raise LimitExceeded(f"{where}.{f.name}: {len(value)} names, at most {MAX_NAMES}")
    for name in value:
        if not isinstance(name, str) or not name:
            raise MalformedInput(f"{where}.{f.name}: every entry must be a non-empty string")
        if len(name) > limits.max_identifier:
            raise LimitExceeded(f"{where}.{f.name}: a name of {len(name)} characters")
    return tuple(value)


def _check_field(where: str, f: Field, value: Any, limits: Limits) -> Any:
    if f.cap == "names":
        if not isinstance(value, (list, tuple)):
            raise MalformedInput(f"{where}.{f.name}: unexpected {type(value).__name__}")
        return _check_names(where, f, value, limits)
    if isinstance(value, bool) and bool not in f.kinds:
        raise MalformedInput(f"{where}.{f.name}: unexpected boolean")
    if not isinstance(value, f.kinds):
        raise MalformedInput(f"{where}.{f.name}: unexpected {type(value).__name__}")
    if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= MAX_UINT:
        raise MalformedInput(f"{where}.{f.name}: {value} is out of range")
    if isinstance(value, (str, bytes)):
        cap = {
            "id": limits.max_identifier,
            "str": limits.max_string,
            "nonce": NONCE_MAX,
            "blob": limits.link_message_bytes,
        }[f.cap]
        if len(value) > cap:
            raise LimitExceeded(f"{where}.{f.name}: length {len(value)} exceeds {cap}")
    return value


_I = (int,)
_S = (str,)
_B = (bytes,)
_L = (list, tuple)


@dataclass(frozen=True)
class Hello(Message):
    """Primary -> Secondary, first message of a session: the versions and frame size the
    Primary supports, the largest message it accepts, and the metadata codecs it can
    forward (:mod:`uptane.codec` names; absent: ``json`` and ``der``)."""

    min_version: int
    max_version: int
    max_frame: int
    max_message: int
    codecs: tuple[str, ...] | None = None

    TYPE: ClassVar[int] = 1
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("min_version", _I),
        Field("max_version", _I),
        Field("max_frame", _I),
        Field("max_message", _I),
        Field("codecs", _L, optional=True, cap="names"),
    )

    def validate(self, limits: Limits) -> None:
        if self.min_version > self.max_version or self.min_version < 1:
            raise MalformedInput("Hello: bad version range")


@dataclass(frozen=True)
class HelloInfo(Message):
    """Secondary -> Primary, reply to :class:`Hello`: the chosen version, who the ECU is, how
    it verifies, the agreed frame size, its message cap, the size of its install slot, and
    the metadata codecs it reads (:mod:`uptane.codec` names; absent: what the Primary is
    configured to send it)."""

    version: int
    ecu_serial: str
    hardware_id: str
    mode: str
    max_frame: int
    max_message: int
    slot_size: int
    codecs: tuple[str, ...] | None = None

    TYPE: ClassVar[int] = 2
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("version", _I),
        Field("ecu_serial", _S, cap="id"),
        Field("hardware_id", _S, cap="id"),
        Field("mode", _S, cap="id"),
        Field("max_frame", _I),
        Field("max_message", _I),
        Field("slot_size", _I),
        Field("codecs", _L, optional=True, cap="names"),
    )

    def validate(self, limits: Limits) -> None:
        if self.mode not in MODES:
            raise MalformedInput(f"HelloInfo: verification mode {self.mode!r} is unknown")
        if self.max_message <= CHUNK_OVERHEAD:
            raise MalformedInput(f"HelloInfo: max_message {self.max_message} is too small")


@dataclass(frozen=True)
class GetReport(Message):
    """Primary -> Secondary: ask for a signed ECU version report carrying ``nonce``."""

    nonce: bytes

    TYPE: ClassVar[int] = 3
    FIELDS: ClassVar[tuple[Field, ...]] = (Field("nonce", _B, cap="nonce"),)


@dataclass(frozen=True)
class Report(Message):
    """Secondary -> Primary: the signed ECU version report (opaque bytes here)."""

    report: bytes

    TYPE: ClassVar[int] = 4
    FIELDS: ClassVar[tuple[Field, ...]] = (Field("report", _B, cap="blob"),)


@dataclass(frozen=True)
class PutTime(Message):
    """Primary -> Secondary: the current time (seconds since the epoch, or an encoded time)
    and, optionally, a signed time token that vouches for it (§5.4.2 step 5)."""

    time: int | bytes
    token: bytes | None = None

    TYPE: ClassVar[int] = 5
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("time", (int, bytes)),
        Field("token", _B, optional=True, cap="blob"),
    )


@dataclass(frozen=True)
class PutMetadata(Message):
    """Primary -> Secondary: one chunk of a metadata file; chunks go in order from 0."""

    repository: str
    role: str
    encoding: str
    total: int
    offset: int
    chunk: bytes

    TYPE: ClassVar[int] = 6
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("repository", _S, cap="id"),
        Field("role", _S, cap="id"),
        Field("encoding", _S, cap="id"),
        Field("total", _I),
        Field("offset", _I),
        Field("chunk", _B, cap="blob"),
    )

    def validate(self, limits: Limits) -> None:
        if self.offset + len(self.chunk) > self.total:
            raise MalformedInput("PutMetadata: chunk runs past the total length")


@dataclass(frozen=True)
class PutImage(Message):
    """Primary -> Secondary: one chunk of an image at ``offset``; offset 0 starts a new
    transfer, any other offset must be the one the Secondary last acknowledged."""

    filename: str
    total: int
    offset: int
    chunk: bytes

    TYPE: ClassVar[int] = 7
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("filename", _S),
        Field("total", _I),
        Field("offset", _I),
        Field("chunk", _B, cap="blob"),
    )

    def validate(self, limits: Limits) -> None:
        if self.offset + len(self.chunk) > self.total:
            raise MalformedInput("PutImage: chunk runs past the total length")


@dataclass(frozen=True)
class Install(Message):
    """Primary -> Secondary: install the image received (optionally: only if it is this
    ``filename``); the reply is the :class:`Status` afterwards."""

    filename: str | None = None

    TYPE: ClassVar[int] = 8
    FIELDS: ClassVar[tuple[Field, ...]] = (Field("filename", _S, optional=True),)


@dataclass(frozen=True)
class GetStatus(Message):
    """Primary -> Secondary: ask for :class:`Status`."""

    TYPE: ClassVar[int] = 9


@dataclass(frozen=True)
class Status(Message):
    """Secondary -> Primary: what the Secondary is doing.

    ``image_filename``/``image_total``/``image_offset`` describe the image transfer in
    progress (or last completed): ``image_offset`` is the acknowledged byte count a resumed
    PUT_IMAGE starts from. ``installed`` names the running image, ``attack`` is the code of
    the last error (:mod:`uptane.errors`), if any.
    """

    state: str
    image_filename: str | None = None
    image_total: int | None = None
    image_offset: int = 0
    installed: str | None = None
    attack: int | None = None

    TYPE: ClassVar[int] = 10
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("state", _S, cap="id"),
        Field("image_filename", _S, optional=True),
        Field("image_total", _I, optional=True),
        Field("image_offset", _I),
        Field("installed", _S, optional=True),
        Field("attack", _I, optional=True),
    )

    def validate(self, limits: Limits) -> None:
        if self.image_total is not None and (self.image_offset or 0) > self.image_total:
            raise MalformedInput("Status: image_offset is past image_total")


@dataclass(frozen=True)
class GetTimeNonce(Message):
    """Primary -> Secondary: ask for a fresh nonce to bind the next signed time to."""

    TYPE: ClassVar[int] = 13


@dataclass(frozen=True)
class TimeNonce(Message):
    """Secondary -> Primary: a fresh random nonce (at least 16 bytes); the time token in
    the next PUT_TIME must prove a time server signed after it (docs/secure-time.md)."""

    nonce: bytes

    TYPE: ClassVar[int] = 14
    FIELDS: ClassVar[tuple[Field, ...]] = (Field("nonce", _B, cap="nonce"),)

    def validate(self, limits: Limits) -> None:
        if len(self.nonce) < 16:
            raise MalformedInput("TimeNonce: a nonce has at least 16 bytes")


@dataclass(frozen=True)
class Ack(Message):
    """Secondary -> Primary: done. For chunked transfers, ``offset`` is the number of bytes
    now acknowledged (where the next chunk starts)."""

    offset: int | None = None

    TYPE: ClassVar[int] = 11
    FIELDS: ClassVar[tuple[Field, ...]] = (Field("offset", _I, optional=True),)


@dataclass(frozen=True)
class Error(Message):
    """Secondary -> Primary: the request failed; ``code`` and ``attack`` are those of an
    :mod:`uptane.errors` class (§5.4.4.2 'an error code naming the attack')."""

    code: int
    attack: str
    message: str

    TYPE: ClassVar[int] = 12
    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("code", _I),
        Field("attack", _S, cap="id"),
        Field("message", _S),
    )

    @classmethod
    def from_exception(cls, exc: BaseException, limits: Limits | None = None) -> Error:
        """The ERROR message for ``exc``; anything not an UptaneError is a plain error."""
        cap = (limits.max_string if limits is not None else 1024) // 4
        if isinstance(exc, UptaneError):
            return cls(code=exc.code, attack=exc.attack, message=str(exc.message)[:cap])
        return cls(
            code=UptaneError.code, attack=UptaneError.attack, message=type(exc).__name__[:cap]
        )

    def to_exception(self) -> UptaneError:
        """The :mod:`uptane.errors` error this message names (plain UptaneError if unknown)."""
        return error_from_code(self.code, self.message)

    @property
    def known(self) -> bool:
        """Whether ``code`` is a code of this build's error hierarchy."""
        return self.code in error_classes()


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        HelloInfo,
        GetReport,
        Report,
        PutTime,
        PutMetadata,
        PutImage,
        Install,
        GetStatus,
        Status,
        Ack,
        Error,
        GetTimeNonce,
        TimeNonce,
    )
}

#: the reply each request expects (an :class:`Error` may always come instead)
REPLY_TYPES: dict[type[Message], type[Message]] = {
    Hello: HelloInfo,
    GetReport: Report,
    PutTime: Ack,
    PutMetadata: Ack,
    PutImage: Ack,
    Install: Status,
    GetStatus: Status,
    GetTimeNonce: TimeNonce,
}


@dataclass(frozen=True)
class Envelope:
    """A decoded message with its request id."""

    rid: int
    message: Message


def encode(message: Message, rid: int) -> bytes:
    """The canonical CBOR bytes of ``message`` with request id ``rid``."""
    if not 0 <= rid <= RID_MAX:
        raise ProtocolViolation(f"request id {rid} out of range")
    m: dict[int, Any] = {_TYPE_KEY: message.TYPE, _RID_KEY: rid}
    m.update(message.to_map())
    return cbor.dumps(m)


def peek_rid(data: bytes, limits: Limits) -> int | None:
    """The request id of an encoded message, if it has a readable one (for error replies)."""
    try:
        m = cbor.loads(data, limits, cap=limits.link_message_bytes)
    except UptaneError:
        return None
    rid = m.get(_RID_KEY) if isinstance(m, dict) else None
    if isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid <= RID_MAX:
        return rid
    return None


def decode(data: bytes | bytearray | memoryview, limits: Limits) -> Envelope:
    """Decode and check one message; raises :mod:`uptane.errors` errors only."""
    m = cbor.loads(data, limits, cap=limits.link_message_bytes, max_items=32, max_total=64)
    if not isinstance(m, dict):
        raise MalformedInput("link message: not a map")
    mtype = m.get(_TYPE_KEY)
    rid = m.get(_RID_KEY)
    if not isinstance(mtype, int) or isinstance(mtype, bool) or mtype not in MESSAGE_TYPES:
        raise MalformedInput(f"link message: unknown type {mtype!r}")
    if not isinstance(rid, int) or isinstance(rid, bool) or not 0 <= rid <= RID_MAX:
        raise MalformedInput("link message: missing or bad request id")
    return Envelope(rid, MESSAGE_TYPES[mtype].from_map(m, limits))
