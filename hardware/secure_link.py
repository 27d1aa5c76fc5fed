"""The link's envelope (protocol version 2): a session per peer, a freshness counter per
direction, and, with a link key, a MAC on every message in the manner of AUTOSAR SecOC.
Sans-I/O: bytes in, bytes out; :mod:`hardware.protocol` puts every link message in one.

Every PDU on the wire is ``0xD5 | kind | flags | header | payload | tag``:

====== ========= ================================ =====================================
kind   direction header                           meaning
====== ========= ================================ =====================================
HELLO  P -> S    Np (16 bytes, random)            opens a session; carries the HELLO
WELCOME S -> P   Np, Ns (16 bytes each)           answers that HELLO (HELLO_INFO)
DATA   both      session id (8), counter (8, BE)  every other message of the session
REFUSAL S -> P   session id (8, zeros if none)    an unauthenticated notice: no such
                                                  session, or the ends disagree on the key
====== ========= ================================ =====================================

``flags`` bit 0 says a tag follows the payload. The session id is the first 8 bytes of
SHA-256 over both nonces; a request whose session id the Secondary does not hold never
reaches its handler (SessionRequired), so a new peer must say HELLO first, and a HELLO
opens a *new* session beside the others instead of resetting the one in use.

**With a link key** (16 random bytes made by ``uptane-secondary provision``, given to the
Primary and to workshop tools the OEM authorises):

- the tag is CMAC-AES-128 truncated to 8 bytes (64 bits). CMAC-AES-128 is what SecOC's
  profiles and an automotive HSM (SHE: AES-128 key slots, CMAC in hardware) provide, so a
  Secondary's MCU can compute it where HMAC-SHA256 would be software; its 128-bit key is
  the link key as provisioned. 64 bits: a forger's chance per message is 2^-64 and every
  guess costs a round trip on the bus (SecOC allows fewer bits on 8-byte CAN frames;
  our PDUs are whole ISO-TP messages, so there is room);
- a HELLO is tagged with a key derived from the link key (NIST SP 800-108 counter-mode
  KDF with CMAC, ``cryptography``'s KBKDFCMAC) for HELLOs only; a WELCOME and every DATA
  PDU with a session key derived from the link key and *both* nonces, over
  ``direction | kind | flags | session id | counter | payload``. Fresh nonces on both
  sides make every session's key new, so nothing from an earlier session (or before a
  reboot of either end) verifies again: the freshness needs no counter kept on flash;
- the counter of each direction starts at 0 (the WELCOME) and a receiver takes a PDU only
  when its counter is above the last one it took: a replayed, reordered or duplicated
  PDU is dropped. A retransmission is sealed again with the next counter (the
  Secondary's reply cache answers it without running the request twice);
- a PDU whose tag does not verify, or whose counter is stale, is **dropped** without a
  reply (SecOC: no oracle, no amplification); a HELLO whose tag does not verify gets a
  REFUSAL naming :class:`~uptane.errors.LinkAuthentication`, so that two ends with
  different keys learn it at once (no state changes either way).

**Without a link key** (bench setups that choose so) the envelope is the same without
tags: sessions and counters still hold (no request without a HELLO on its session), but
anyone on the bus can speak; the Secondary marks the refusals such input causes in its
report (docs/link-protocol.md, "Without a link key").

A REFUSAL is unauthenticated: the Primary believes only the few link errors it may carry
(:data:`REFUSAL_CODES`: come back with a HELLO, or fix the key), never a verdict on an
update. Every decoder here is bounded and raises nothing but drops or named errors.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.constant_time import bytes_eq
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFCMAC, CounterLocation, Mode

from storage import atomic_write, read_capped
from uptane.errors import (
    LinkAuthentication,
    MalformedInput,
    ProtocolVersionMismatch,
    SessionRequired,
)

MARKER = 0xD5
KIND_HELLO, KIND_WELCOME, KIND_DATA, KIND_REFUSAL = 1, 2, 3, 4
FLAG_TAG = 0x01
NONCE_BYTES = 16
SID_BYTES = 8
TAG_BYTES = 8
KEY_BYTES = 16
#: the largest envelope around a payload (a WELCOME: 3 + 16 + 16 + tag)
ENVELOPE_BYTES = 3 + 2 * NONCE_BYTES + TAG_BYTES
#: the link errors a REFUSAL may carry (anything else in one is dropped)
REFUSAL_CODES = frozenset(
    {SessionRequired.code, LinkAuthentication.code, ProtocolVersionMismatch.code}
)
#: sessions a Secondary holds at once (a new HELLO beyond it evicts the oldest one that
#: never carried a request, else the oldest)
MAX_SESSIONS = 4

_P2S, _S2P = b"P", b"S"
_NO_SID = bytes(SID_BYTES)
_HEX_KEY = re.compile(rb"^\s*([0-9a-fA-F]{32})\s*$")


# --- the link key ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkKey:
    """A Secondary's link key: 16 bytes, the AES-128 key of its CMACs; kept on disk as 32
    hex digits (mode 0600) by ``uptane-secondary provision``."""

    raw: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.raw) != KEY_BYTES:
            raise ValueError(f"a link key is {KEY_BYTES} bytes")

    @classmethod
    def generate(cls) -> LinkKey:
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_text(cls, text: bytes) -> LinkKey:
        m = _HEX_KEY.match(text)
        if m is None:
            raise MalformedInput(f"a link key file holds {2 * KEY_BYTES} hex digits")
        return cls(bytes.fromhex(m.group(1).decode()))

    @classmethod
    def load(cls, path: Path) -> LinkKey:
        return cls.from_text(read_capped(path, 256))

    def save(self, path: Path) -> None:
        atomic_write(path, self.raw.hex().encode() + b"\n", mode=0o600)

    def derive(self, label: bytes, context: bytes) -> bytes:
        """A 16-byte key for ``label`` and ``context`` (SP 800-108 counter mode, CMAC)."""
        kdf = KBKDFCMAC(
            algorithms.AES,
            Mode.CounterMode,
            KEY_BYTES,
            4,
            4,
            CounterLocation.BeforeFixed,
            label,
            context,
            None,
        )
        return kdf.derive(self.raw)


def _tag(key: bytes, *parts: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    for p in parts:
        mac.update(p)
    return mac.finalize()[:TAG_BYTES]


def session_id(np: bytes, ns: bytes) -> bytes:
    return hashlib.sha256(b"uptane-link session id" + np + ns).digest()[:SID_BYTES]


# --- decoding a PDU --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pdu:
    """One decoded envelope (nothing verified yet)."""

    kind: int
    flags: int
    head: bytes  # the kind's header fields, as on the wire
    payload: bytes
    tag: bytes

    @property
    def tagged(self) -> bool:
        return bool(self.flags & FLAG_TAG)

    @property
    def signed_part(self) -> bytes:
        return bytes([self.kind, self.flags]) + self.head


_HEAD = {
    KIND_HELLO: NONCE_BYTES,
    KIND_WELCOME: 2 * NONCE_BYTES,
    KIND_DATA: SID_BYTES + 8,
    KIND_REFUSAL: SID_BYTES,
}


def is_envelope(data: bytes) -> bool:
    """Whether ``data`` starts like an envelope (a plain link message is a CBOR map)."""
    return len(data) > 0 and data[0] == MARKER


def decode_pdu(data: bytes, max_bytes: int) -> Pdu:
    """Split an envelope; MalformedInput for anything that is not one, bounded by
    ``max_bytes`` (the payload cap plus :data:`ENVELOPE_BYTES`)."""
    if len(data) > max_bytes:
        raise MalformedInput(f"link PDU of {len(data)} bytes exceeds {max_bytes}")
    if len(data) < 3 or data[0] != MARKER:
        raise MalformedInput("not a link envelope")
    kind, flags = data[1], data[2]
    head_len = _HEAD.get(kind)
    if head_len is None or flags & ~FLAG_TAG or (kind == KIND_REFUSAL and flags):
        raise MalformedInput(f"link envelope: kind {kind} flags {flags:#x}")
    tag_len = TAG_BYTES if flags & FLAG_TAG else 0
    if len(data) < 3 + head_len + tag_len:
        raise MalformedInput("link envelope cut short")
    end = len(data) - tag_len
    return Pdu(kind, flags, data[3 : 3 + head_len], data[3 + head_len : end], data[end:])


def _pdu(kind: int, flags: int, head: bytes, payload: bytes, tag: bytes = b"") -> bytes:
    return bytes([MARKER, kind, flags]) + head + payload + tag


def refusal(payload: bytes, sid: bytes = _NO_SID) -> bytes:
    """A REFUSAL carrying ``payload`` (a plain ERROR message)."""
    return _pdu(KIND_REFUSAL, 0, sid, payload)


# --- sessions --------------------------------------------------------------------------------


@dataclass
class Session:
    """One session's keys and counters, at either end."""

    sid: bytes
    np: bytes
    ns: bytes
    key: bytes | None  # the session key (None without a link key)
    sent: int = 0  # the last counter sent (the WELCOME is 0)
    received: int = 0  # the last counter taken
    used: bool = False  # a request arrived in it (Secondary)

    def seal(self, direction: bytes, payload: bytes) -> bytes:
        self.sent += 1
        head = self.sid + struct.pack(">Q", self.sent)
        return _seal(self.key, direction, KIND_DATA, head, payload)

    def open_data(self, direction: bytes, pdu: Pdu) -> bytes | None:
        """The payload of a DATA PDU of this session, or None (dropped): a tag that does
        not verify, a missing or unexpected tag, a counter not above the last one."""
        if not _authentic(self.key, direction, pdu):
            return None
        (counter,) = struct.unpack(">Q", pdu.head[SID_BYTES:])
        if counter <= self.received:
            return None  # replayed, reordered or duplicated
        self.received = counter
        return pdu.payload


def _seal(key: bytes | None, direction: bytes, kind: int, head: bytes, payload: bytes) -> bytes:
    if key is None:
        return _pdu(kind, 0, head, payload)
    tag = _tag(key, direction, bytes([kind, FLAG_TAG]), head, payload)
    return _pdu(kind, FLAG_TAG, head, payload, tag)


def _authentic(key: bytes | None, direction: bytes, pdu: Pdu) -> bool:
    if key is None:
        return not pdu.tagged
    if not pdu.tagged:
        return False
    return bytes_eq(_tag(key, direction, pdu.signed_part, pdu.payload), pdu.tag)


def _session_key(key: LinkKey | None, np: bytes, ns: bytes) -> bytes | None:
    return None if key is None else key.derive(b"uptane-link v2 session", np + ns)


def _hello_key(key: LinkKey) -> bytes:
    return key.derive(b"uptane-link v2 hello", b"")


class ClientChannel:
    """The Primary's (or bench tool's) end: ``hello`` opens a session, ``seal`` every
    later request, ``open`` every reply (None: dropped)."""

    def __init__(self, key: LinkKey | None, *, random: Callable[[int], bytes] = os.urandom):
        self.key = key
        self.random = random
        self.session: Session | None = None
        self._np: bytes | None = None

    @property
    def authenticated(self) -> bool:
        return self.key is not None

    def hello(self, payload: bytes) -> bytes:
        """A HELLO PDU with a fresh nonce; the session in use ends."""
        self.session = None
        self._np = np = self.random(NONCE_BYTES)
        if self.key is None:
            return _pdu(KIND_HELLO, 0, np, payload)
        tag = _tag(_hello_key(self.key), bytes([KIND_HELLO, FLAG_TAG]), np, payload)
        return _pdu(KIND_HELLO, FLAG_TAG, np, payload, tag)

    def seal(self, payload: bytes) -> bytes:
        """A DATA PDU in the session (outside one, with no session id: the Secondary
        answers SessionRequired)."""
        if self.session is None:
            return _seal(None, _P2S, KIND_DATA, _NO_SID + bytes(8), payload)
        return self.session.seal(_P2S, payload)

    def open(self, data: bytes, max_bytes: int) -> tuple[int, bytes] | None:
        """``(kind, payload)`` of a reply that is this session's (or the WELCOME that
        opens it, or a REFUSAL), else None."""
        try:
            pdu = decode_pdu(data, max_bytes)
        except MalformedInput:
            return None
        if pdu.kind == KIND_WELCOME:
            return self._welcome(pdu)
        if pdu.kind == KIND_REFUSAL:
            return KIND_REFUSAL, pdu.payload
        s = self.session
        if pdu.kind != KIND_DATA or s is None or pdu.head[:SID_BYTES] != s.sid:
            return None
        payload = s.open_data(_S2P, pdu)
        return None if payload is None else (KIND_DATA, payload)

    def _welcome(self, pdu: Pdu) -> tuple[int, bytes] | None:
        np, ns = pdu.head[:NONCE_BYTES], pdu.head[NONCE_BYTES:]
        if self._np is None or not bytes_eq(np, self._np) or self.session is not None:
            return None  # not the answer to our HELLO, or a duplicate of it
        s = Session(session_id(np, ns), np, ns, _session_key(self.key, np, ns))
        if not _authentic(s.key, _S2P, pdu):
            return None
        self.session = s
        return KIND_WELCOME, pdu.payload


@dataclass(frozen=True)
class Incoming:
    """A request that passed the envelope: its session and payload."""

    session: Session
    payload: bytes
    hello: bool = False


@dataclass(frozen=True)
class Refused:
    """An envelope refused with a notice (``error``: a plain link error to send back)."""

    error: SessionRequired | LinkAuthentication | ProtocolVersionMismatch
    sid: bytes = _NO_SID


class ServerChannel:
    """The Secondary's end: ``open`` each request PDU (an :class:`Incoming`, a
    :class:`Refused`, or None: dropped), ``seal`` its reply in the request's session."""

    def __init__(
        self,
        key: LinkKey | None,
        *,
        max_sessions: int = MAX_SESSIONS,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.key = key
        self.random = random
        self.max_sessions = max(1, max_sessions)
        self.sessions: OrderedDict[bytes, Session] = OrderedDict()
        self._hello_key = None if key is None else _hello_key(key)
        #: PDUs dropped: forged, replayed, reordered, or not envelopes of ours
        self.dropped = 0

    @property
    def authenticated(self) -> bool:
        return self.key is not None

    def open(self, pdu: Pdu) -> Incoming | Refused | None:
        if pdu.kind == KIND_HELLO:
            return self._hello(pdu)
        if pdu.kind != KIND_DATA:
            return self._drop()
        sid = pdu.head[:SID_BYTES]
        s = self.sessions.get(sid)
        if s is None:
            if self.key is not None and not pdu.tagged:
                return self._drop()  # not from anyone holding the key
            return Refused(SessionRequired("no such session: send HELLO first"), sid)
        payload = s.open_data(_P2S, pdu)
        if payload is None:
            return self._drop()
        s.used = True
        self.sessions.move_to_end(sid)
        return Incoming(s, payload)

    def _drop(self) -> Incoming | None:
        self.dropped += 1
        return None

    def _hello(self, pdu: Pdu) -> Incoming | Refused | None:
        np = pdu.head
        problem = self._hello_problem(pdu)
        if problem is not None:
            self.dropped += 1
            return Refused(LinkAuthentication(problem))
        for s in self.sessions.values():
            if s.np == np:
                if s.used:  # a HELLO of a session already in use: replayed, dropped
                    return self._drop()
                return Incoming(s, pdu.payload, hello=True)  # a retransmission
        ns = self.random(NONCE_BYTES)
        s = Session(session_id(np, ns), np, ns, _session_key(self.key, np, ns))
        self._admit(s)
        return Incoming(s, pdu.payload, hello=True)

    def _hello_problem(self, pdu: Pdu) -> str | None:
        """Why this HELLO cannot open a session here (the ends disagree on the key)."""
        if self._hello_key is None:
            return "this ECU has no link key, the peer uses one" if pdu.tagged else None
        if not pdu.tagged:
            return "this ECU authenticates its link: give the peer its link key"
        if not bytes_eq(_tag(self._hello_key, pdu.signed_part, pdu.payload), pdu.tag):
            return "the HELLO's MAC does not verify with this ECU's link key"
        return None

    def _admit(self, s: Session) -> None:
        while len(self.sessions) >= self.max_sessions:
            idle = next((k for k, v in self.sessions.items() if not v.used), None)
            self.sessions.pop(idle if idle is not None else next(iter(self.sessions)))
        self.sessions[s.sid] = s

    def seal(self, incoming: Incoming, payload: bytes) -> bytes:
        """The reply to ``incoming``: a WELCOME for a HELLO, else a DATA PDU."""
        s = incoming.session
        if incoming.hello:
            return _seal(s.key, _S2P, KIND_WELCOME, s.np + s.ns, payload)
        return s.seal(_S2P, payload)

    def forget(self) -> None:
        """Drop every session (the ECU restarted its link)."""
        self.sessions.clear()


__all__ = [
    "ENVELOPE_BYTES",
    "KIND_DATA",
    "KIND_HELLO",
    "KIND_REFUSAL",
    "KIND_WELCOME",
    "MARKER",
    "REFUSAL_CODES",
    "ClientChannel",
    "Incoming",
    "LinkKey",
    "Pdu",
    "Refused",
    "ServerChannel",
    "Session",
    "decode_pdu",
    "is_envelope",
    "refusal",
    "session_id",
]
