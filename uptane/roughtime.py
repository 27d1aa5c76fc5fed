"""Roughtime (draft-ietf-ntp-roughtime-11): signed, nonce-bound time for every ECU, sans-I/O.

A client sends a 32-byte nonce; the server answers with a midpoint time and a radius
(SREP), signed by an online key that the server's long-term key delegated for a window of
time (CERT: DELE with MINT, MAXT, PUBK). Requests that arrive together share one signature:
their nonces are the leaves of a SHA-512 Merkle tree whose root is signed, and each reply
carries the path (PATH, INDX) from its nonce to that root. This module is the whole wire
format of draft 11 (message header, packet framing, tags, contexts, tree), the checks of
§6.4, the Uptane side of it (a Primary's commitment to its ECUs' nonces, the token it
forwards to an ECU) and the clock policy (k of n servers, bounded steps). No sockets, no
clock, no files: bytes and keys come in as arguments (``timeserver/`` does the I/O).

Every decoder here takes a :class:`TimeLimits` and refuses hostile input with
:mod:`uptane.errors` (never IndexError or struct.error). See ``docs/secure-time.md``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from uptane.errors import (
    BadSignature,
    EndlessDataAttack,
    ExpiredTimeDelegation,
    MalformedInput,
    ProtocolVersionMismatch,
    TimeJumpRefused,
    TimeQuorumNotMet,
    TimeReplay,
    UptaneError,
)
from uptane.limits import Limits
from uptane.securetime import MAX_TIME

#: the draft this module follows, and its version number on the wire (§6: 0x80000000 plus
#: the draft number while the memo is a draft)
DRAFT = "draft-ietf-ntp-roughtime-11"
VERSION = 0x8000000B
#: "ROUGHTIM" as a little-endian uint64, the first field of every packet (§6)
MAGIC = 0x4D49544847554F52
NONCE_BYTES = 32
HASH_BYTES = 32
KEY_BYTES = 32
SIGNATURE_BYTES = 64
#: §6.1: a request message is padded (ZZZZ) to at least this many bytes, and a server never
#: answers with more bytes than the request had (no amplification)
MIN_REQUEST_BYTES = 1024
#: §6.2.1, §6.2.6: signature contexts, each with its terminating zero byte
DELEGATION_CONTEXT = b"RoughTime v1 delegation signature--\x00"
RESPONSE_CONTEXT = b"RoughTime v1 response signature\x00"
#: §6.2.5: servers that know nothing of leap seconds keep RADI at least this large
MIN_RADIUS = 3
_MAX_VERSIONS = 32  # a request's VER list (roughtimed uses the same cap)
_HEADER = struct.Struct("<QI")


def tag(name: str) -> int:
    """The uint32 of a tag written as up to four ASCII capitals, zero-padded (§5.1.4)."""
    return int.from_bytes(name.encode("ascii").ljust(4, b"\x00"), "little")


def tag_name(value: int) -> str:
    """The ASCII form of a tag, for messages."""
    return value.to_bytes(4, "little").rstrip(b"\x00").decode("ascii", "replace")


SIG, VER, SRV, NONC, DELE, PATH, RADI, PUBK = map(
    tag, ("SIG", "VER", "SRV", "NONC", "DELE", "PATH", "RADI", "PUBK")
)
MIDP, SREP, MINT, ROOT, CERT, MAXT, INDX, ZZZZ = map(
    tag, ("MIDP", "SREP", "MINT", "ROOT", "CERT", "MAXT", "INDX", "ZZZZ")
)
#: the token a Primary forwards to an ECU (not a draft message: see :class:`TimeToken`)
RESP = tag("RESP")
_TAG_BYTES = frozenset(range(ord("A"), ord("Z") + 1))


@dataclass(frozen=True)
class TimeLimits:
    """Caps for the Roughtime decoders, checked before anything they bound is used."""

    #: one packet (a request, a response); draft 11 responses are 392 + 32*depth bytes
    packet_bytes: int = 4096
    #: (tag, value) pairs in one message; a draft 11 response has 7
    max_tags: int = 16
    #: Merkle path of a server's batch (2**depth requests signed at once)
    max_path_depth: int = 32
    #: time server keys tried, responses in one token
    max_servers: int = 8
    #: Merkle path of a Primary's commitment to its ECUs' nonces (2**depth ECUs)
    max_commitment_depth: int = 10

    @classmethod
    def primary(cls) -> TimeLimits:
        """For a Primary, a server or a bench laptop."""
        return cls()

    @classmethod
    def constrained(cls) -> TimeLimits:
        """For a small Secondary: the packet of one request's answer, shallow trees."""
        return cls(
            packet_bytes=MIN_REQUEST_BYTES + _HEADER.size,
            max_tags=12,
            max_path_depth=16,
            max_servers=4,
            max_commitment_depth=8,
        )


PRIMARY_LIMITS = TimeLimits.primary()
CONSTRAINED_LIMITS = TimeLimits.constrained()


# --- messages and packets (§5, §6) ---------------------------------------------------------


def encode_message(values: Mapping[int, bytes]) -> bytes:
    """A message of ``values`` by tag: the header (count, offsets, sorted tags), then the
    values. Every value must be a multiple of four bytes long (all of draft 11's are)."""
    if not values:
        raise ValueError("a Roughtime message has at least one tag")
    tags = sorted(values)
    offsets, body = [], b""
    for t in tags:
        if len(values[t]) % 4:
            raise ValueError(f"{tag_name(t)}: a value is a multiple of four bytes long")
        offsets.append(len(body))
        body += values[t]
    head = struct.pack(f"<I{len(tags) - 1}I{len(tags)}I", len(tags), *offsets[1:], *tags)
    return head + body


def decode_message(data: bytes, limits: TimeLimits, what: str = "message") -> dict[int, bytes]:
    """The values of a message by tag; every rule of §5.2 is checked (offsets multiples of
    four, in order, inside the message; tags strictly ascending, capitals only)."""
    n = len(data)
    if n < 8 or n % 4:
        raise MalformedInput(f"Roughtime {what}: {n} bytes is not a message")
    (count,) = struct.unpack_from("<I", data, 0)
    if count == 0:
        raise MalformedInput(f"Roughtime {what}: no tags")
    Limits.check_count(f"Roughtime {what} tags", count, limits.max_tags)
    if n < 8 * count:
        raise MalformedInput(f"Roughtime {what}: header of {count} tags is cut short")
    ends = [*struct.unpack_from(f"<{count - 1}I", data, 4), n - 8 * count]
    tags = struct.unpack_from(f"<{count}I", data, 4 * count)
    out: dict[int, bytes] = {}
    start = 0
    for i, (t, end) in enumerate(zip(tags, ends, strict=True)):
        if end % 4 or end < start or end > n - 8 * count:
            raise MalformedInput(f"Roughtime {what}: bad offset {end} of tag {i}")
        if i and t <= tags[i - 1]:
            raise MalformedInput(f"Roughtime {what}: tags not in strictly ascending order")
        if not _valid_tag(t):
            raise MalformedInput(f"Roughtime {what}: tag {t:#010x} is not capitals")
        out[t] = data[8 * count + start : 8 * count + end]
        start = end
    return out


def _valid_tag(t: int) -> bool:
    raw = t.to_bytes(4, "little").rstrip(b"\x00")
    return bool(raw) and all(b in _TAG_BYTES for b in raw)


def encode_packet(message: bytes) -> bytes:
    """A packet: "ROUGHTIM", the message's length, the message (§6, figure 2)."""
    return _HEADER.pack(MAGIC, len(message)) + message


def decode_packet(data: bytes, limits: TimeLimits) -> bytes:
    """The message inside a packet; the length field must match the datagram exactly."""
    if len(data) > limits.packet_bytes:
        raise EndlessDataAttack(
            f"Roughtime packet: {len(data)} bytes exceeds the {limits.packet_bytes}-byte cap"
        )
    if len(data) < _HEADER.size:
        raise MalformedInput(f"Roughtime packet: {len(data)} bytes is shorter than a header")
    magic, length = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise MalformedInput("Roughtime packet: does not start with ROUGHTIM")
    if length != len(data) - _HEADER.size:
        raise MalformedInput(
            f"Roughtime packet: length field {length}, {len(data) - _HEADER.size} bytes follow"
        )
    return data[_HEADER.size :]


def _get(msg: Mapping[int, bytes], t: int, what: str, size: int | None = None) -> bytes:
    value = msg.get(t)
    if value is None:
        raise MalformedInput(f"Roughtime {what}: no {tag_name(t)} tag")
    if size is not None and len(value) != size:
        raise MalformedInput(f"Roughtime {what}: {tag_name(t)} is {len(value)} bytes, not {size}")
    return value


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def _time(msg: Mapping[int, bytes], t: int, what: str) -> int:
    """A timestamp (§5.1.5: uint64 seconds since the epoch), within the stack's range."""
    (value,) = struct.unpack("<Q", _get(msg, t, what, 8))
    if value > MAX_TIME:
        raise MalformedInput(f"Roughtime {what}: {tag_name(t)} {value} is out of range")
    return int(value)


# --- the Merkle tree (§6.3) ------------------------------------------------------------------


def _h(data: bytes) -> bytes:
    """H: the first 32 bytes of SHA-512 (§6.3.1)."""
    return hashlib.sha512(data).digest()[:HASH_BYTES]


def leaf_hash(nonce: bytes) -> bytes:
    """A leaf: H(0x00 || nonce)."""
    return _h(b"\x00" + nonce)


def node_hash(left: bytes, right: bytes) -> bytes:
    """An inner node: H(0x01 || left || right)."""
    return _h(b"\x01" + left + right)


def server_id(public_key: bytes) -> bytes:
    """The SRV value naming a server's long-term key: H(0xff || public key) (§6.1.3)."""
    return _h(b"\xff" + public_key)


def merkle_tree(nonces: Sequence[bytes]) -> tuple[bytes, list[bytes]]:
    """The root over ``nonces`` (leaves left to right, the row padded to a power of two
    with all-zero nodes, as roughtimed does) and each nonce's PATH, siblings leaf first."""
    if not nonces:
        raise ValueError("a Merkle tree needs at least one nonce")
    row = [leaf_hash(n) for n in nonces]
    width = 1 << (len(row) - 1).bit_length()
    row += [bytes(HASH_BYTES)] * (width - len(row))
    paths = [b""] * len(nonces)
    level = 0
    while len(row) > 1:
        for i in range(len(nonces)):
            paths[i] += row[(i >> level) ^ 1]
        row = [node_hash(row[j], row[j + 1]) for j in range(0, len(row), 2)]
        level += 1
    return row[0], paths


def root_from_path(nonce: bytes, index: int, path: bytes, max_depth: int) -> bytes:
    """The root that ``path`` leads to from ``nonce`` at leaf ``index`` (§6.3.1).

    The bit of INDX for each level says which side the current hash is on: 0 means it is
    the left child (``H(0x01 || hash || node)``). Draft 11's prose states the two cases the
    other way round, which contradicts its own "leaves are indexed left to right"; this
    follows the indexing and the implementations we read (roughtimed, Cloudflare's
    roughtime), so that their servers' proofs verify here.
    """
    if len(path) % HASH_BYTES:
        raise MalformedInput(f"Roughtime PATH: {len(path)} bytes is not whole hashes")
    depth = len(path) // HASH_BYTES
    Limits.check_count("Roughtime PATH depth", depth, max_depth)
    if index >> depth:
        raise MalformedInput(f"Roughtime INDX {index} has bits beyond a path of depth {depth}")
    current = leaf_hash(nonce)
    for level in range(depth):
        node = path[level * HASH_BYTES : (level + 1) * HASH_BYTES]
        left, right = (node, current) if (index >> level) & 1 else (current, node)
        current = node_hash(left, right)
    return current


# --- requests (§6.1) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """A parsed request: the client's nonce, the versions it speaks, the key it expects."""

    nonce: bytes
    versions: tuple[int, ...]
    server: bytes | None


def build_request(nonce: bytes, *, server_key: bytes | None = None) -> bytes:
    """A request packet for ``nonce`` (32 bytes, chosen by the caller), naming the expected
    long-term key with SRV when ``server_key`` is given, padded with ZZZZ to 1024 bytes."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"a Roughtime nonce is {NONCE_BYTES} bytes")
    values = {VER: _u32(VERSION), NONC: nonce}
    if server_key is not None:
        values[SRV] = server_id(server_key)
    used = 8 * (len(values) + 1) + sum(len(v) for v in values.values())
    values[ZZZZ] = bytes(MIN_REQUEST_BYTES - used)
    return encode_packet(encode_message(values))


def parse_request(data: bytes, limits: TimeLimits) -> Request:
    """A request as a server reads it: at least 1024 bytes (§6.1; the packet, so clients
    that pad the packet rather than the message are answered too), a VER list that names
    this draft (ProtocolVersionMismatch otherwise), a 32-byte NONC, an optional SRV."""
    msg = decode_message(decode_packet(data, limits), limits, "request")
    # the draft pads the message to 1024 bytes; some clients count the packet: both pass
    if len(data) < MIN_REQUEST_BYTES:
        raise MalformedInput(
            f"Roughtime request: {len(data)} bytes; requests are padded to {MIN_REQUEST_BYTES}"
        )
    raw = _get(msg, VER, "request")
    if not raw or len(raw) > 4 * _MAX_VERSIONS:
        raise MalformedInput(f"Roughtime request: VER of {len(raw)} bytes")
    versions = struct.unpack(f"<{len(raw) // 4}I", raw)
    if len(set(versions)) != len(versions):
        raise MalformedInput("Roughtime request: VER repeats a version")
    if VERSION not in versions:
        raise ProtocolVersionMismatch(
            f"Roughtime request: versions {[hex(v) for v in versions]}; this is {DRAFT}"
        )
    server = _get(msg, SRV, "request", HASH_BYTES) if SRV in msg else None
    return Request(_get(msg, NONC, "request", NONCE_BYTES), versions, server)


# --- responses (§6.2): building them (the server) ----------------------------------------------


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte Ed25519 public key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes_raw()


def make_certificate(
    long_term: Ed25519PrivateKey, online_public: bytes, mint: int, maxt: int
) -> bytes:
    """The CERT value: DELE (MINT, MAXT, PUBK) signed by the long-term key (§6.2.6). Done
    offline, by ``uptane-time-server init`` / ``delegate``."""
    if len(online_public) != KEY_BYTES or not 0 <= mint <= maxt <= MAX_TIME:
        raise ValueError("a delegation needs a 32-byte key and 0 <= MINT <= MAXT")
    dele = encode_message({MINT: _u64(mint), MAXT: _u64(maxt), PUBK: online_public})
    return encode_message({SIG: long_term.sign(DELEGATION_CONTEXT + dele), DELE: dele})


def sign_batch(
    nonces: Sequence[bytes],
    *,
    midpoint: int,
    radius: int,
    certificate: bytes,
    online_key: Ed25519PrivateKey,
) -> list[bytes]:
    """One response packet per nonce, all from one tree and one signature (§6.2, §6.3)."""
    root, paths = merkle_tree(nonces)
    srep = encode_message({ROOT: root, MIDP: _u64(midpoint), RADI: _u32(radius)})
    signature = online_key.sign(RESPONSE_CONTEXT + srep)
    common = {SIG: signature, VER: _u32(VERSION), SREP: srep, CERT: certificate}
    return [
        encode_packet(encode_message({**common, NONC: nonce, PATH: path, INDX: _u32(i)}))
        for i, (nonce, path) in enumerate(zip(nonces, paths, strict=True))
    ]


# --- responses (§6.2, §6.4): reading and verifying them (every client) -------------------------


@dataclass(frozen=True)
class TimeServerKey:
    """A time server an ECU trusts: a name for messages and its long-term public key."""

    name: str
    public_key: bytes

    @property
    def key_id(self) -> str:
        """The key's SRV value in hex, as ``uptane-time-server`` prints it."""
        return server_id(self.public_key).hex()


@dataclass(frozen=True)
class VerifiedTime:
    """A response that passed §6.4: the server promises the true time was within
    ``midpoint`` ± ``radius`` seconds while it signed."""

    midpoint: int
    radius: int
    server: str

    @property
    def earliest(self) -> int:
        return self.midpoint - self.radius

    @property
    def latest(self) -> int:
        return self.midpoint + self.radius


@dataclass(frozen=True)
class Response:
    """A response decoded but not yet verified (every field a draft 11 response has)."""

    signature: bytes
    signed_response: bytes
    nonce: bytes
    index: int
    path: bytes
    root: bytes
    midpoint: int
    radius: int
    delegation_signature: bytes
    delegation: bytes
    mint: int
    maxt: int
    online_key: bytes


def parse_response(data: bytes, limits: TimeLimits) -> Response:
    """Decode a response packet, checking the layout of §6.2 and nothing cryptographic."""
    msg = decode_message(decode_packet(data, limits), limits, "response")
    (version,) = struct.unpack("<I", _get(msg, VER, "response", 4))
    if version != VERSION:
        raise ProtocolVersionMismatch(f"Roughtime response: version {version:#x}; this is {DRAFT}")
    srep_raw = _get(msg, SREP, "response")
    srep = decode_message(srep_raw, limits, "SREP")
    cert = decode_message(_get(msg, CERT, "response"), limits, "CERT")
    dele_raw = _get(cert, DELE, "CERT")
    dele = decode_message(dele_raw, limits, "DELE")
    (index,) = struct.unpack("<I", _get(msg, INDX, "response", 4))
    path = _get(msg, PATH, "response")
    Limits.check_count("Roughtime PATH depth", len(path) // HASH_BYTES, limits.max_path_depth)
    mint, maxt = _time(dele, MINT, "DELE"), _time(dele, MAXT, "DELE")
    if mint > maxt:
        raise MalformedInput(f"Roughtime DELE: MINT {mint} is after MAXT {maxt}")
    (radius,) = struct.unpack("<I", _get(srep, RADI, "SREP", 4))
    return Response(
        signature=_get(msg, SIG, "response", SIGNATURE_BYTES),
        signed_response=srep_raw,
        nonce=_get(msg, NONC, "response", NONCE_BYTES),
        index=index,
        path=path,
        root=_get(srep, ROOT, "SREP", HASH_BYTES),
        midpoint=_time(srep, MIDP, "SREP"),
        radius=radius,
        delegation_signature=_get(cert, SIG, "CERT", SIGNATURE_BYTES),
        delegation=dele_raw,
        mint=mint,
        maxt=maxt,
        online_key=_get(dele, PUBK, "DELE", KEY_BYTES),
    )


def _signed(public_key: bytes, signature: bytes, context: bytes, value: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, context + value)
    except (InvalidSignature, ValueError):
        return False
    return True


def _delegating_server(r: Response, keys: Sequence[TimeServerKey], limits: TimeLimits) -> str:
    """The provisioned server whose long-term key signed this delegation (§6.4: "the
    signature in CERT was made with the long-term key of the server")."""
    Limits.check_count("time server keys", len(keys), limits.max_servers)
    for key in keys:
        if _signed(key.public_key, r.delegation_signature, DELEGATION_CONTEXT, r.delegation):
            return key.name
    raise BadSignature(
        "time response not signed by a provisioned time server key: the server's long-term "
        "key is unknown here, or the response was forged"
    )


def verify_response(
    data: bytes, nonce: bytes, keys: Sequence[TimeServerKey], limits: TimeLimits
) -> VerifiedTime:
    """The checks of §6.4 on a response to a request that carried ``nonce``, against the
    provisioned long-term keys ``keys``; returns the verified midpoint and radius.

    Refusals: BadSignature (the delegation is not by a provisioned key, or SREP is not by
    the delegated key); ExpiredTimeDelegation (MIDP outside MINT..MAXT); TimeReplay (the
    response answers another nonce, or its Merkle proof does not contain this one);
    MalformedInput, LimitExceeded, EndlessDataAttack, ProtocolVersionMismatch (layout).
    """
    r = parse_response(data, limits)
    server = _delegating_server(r, keys, limits)
    if not _signed(r.online_key, r.signature, RESPONSE_CONTEXT, r.signed_response):
        raise BadSignature(f"time response from {server}: SREP not signed by its delegated key")
    if not r.mint <= r.midpoint <= r.maxt:
        raise ExpiredTimeDelegation(
            f"time server {server} signed {r.midpoint} with a key delegated for "
            f"{r.mint}..{r.maxt}; its operator must renew the delegation"
        )
    if r.nonce != nonce:
        raise TimeReplay(f"time response from {server} answers another request's nonce")
    if root_from_path(nonce, r.index, r.path, limits.max_path_depth) != r.root:
        raise TimeReplay(
            f"time response from {server}: its Merkle proof does not contain this nonce"
        )
    return VerifiedTime(r.midpoint, r.radius, server)


# --- a Primary's time for its ECUs: one request, every ECU's nonce bound --------------------


@dataclass(frozen=True)
class NonceCommitment:
    """A Primary's commitment to its ECUs' nonces: the Merkle root over them (same tree as
    §6.3) is the nonce it sends to every time server; ``paths[i]`` proves ECU ``i``'s nonce
    is under it. One round trip per server binds every ECU's nonce (docs/secure-time.md)."""

    nonce: bytes
    paths: tuple[bytes, ...]

    def token(self, i: int, responses: Sequence[bytes]) -> TimeToken:
        """What the Primary forwards to the ECU whose nonce was ``i``-th."""
        return TimeToken(i, self.paths[i], tuple(responses))


def commit_nonces(nonces: Sequence[bytes]) -> NonceCommitment:
    """The commitment to ``nonces`` (each ECU's fresh nonce, in a fixed order)."""
    if any(len(n) < 16 for n in nonces):
        raise ValueError("an ECU's time nonce has at least 16 random bytes")
    root, paths = merkle_tree(nonces)
    return NonceCommitment(root, tuple(paths))


@dataclass(frozen=True)
class TimeToken:
    """What a Primary forwards to one ECU, in the message layout of §5.2 (not a draft
    message): INDX and PATH place the ECU's nonce in the Primary's commitment; RESP holds
    the time servers' response packets back to back, unchanged (each packet says its
    length)."""

    index: int
    path: bytes
    responses: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        return encode_message(
            {INDX: _u32(self.index), PATH: self.path, RESP: b"".join(self.responses)}
        )

    @classmethod
    def from_bytes(cls, data: bytes, limits: TimeLimits) -> TimeToken:
        """Decode a token; its size, path depth and packet count are bounded."""
        cap = limits.max_servers * limits.packet_bytes + (limits.max_commitment_depth + 4) * 32
        if len(data) > cap:
            raise EndlessDataAttack(f"time token: {len(data)} bytes exceeds the {cap}-byte cap")
        msg = decode_message(data, limits, "time token")
        (index,) = struct.unpack("<I", _get(msg, INDX, "time token", 4))
        path = _get(msg, PATH, "time token")
        depth = len(path) // HASH_BYTES
        Limits.check_count("time token PATH depth", depth, limits.max_commitment_depth)
        raw, packets = _get(msg, RESP, "time token"), []
        while raw:
            if len(raw) < _HEADER.size:
                raise MalformedInput("time token: a response packet is cut short")
            length = _HEADER.size + _HEADER.unpack_from(raw, 0)[1]
            packets.append(raw[:length])
            raw = raw[length:]
            Limits.check_count("time token responses", len(packets), limits.max_servers)
        return cls(index, path, tuple(packets))


@dataclass(frozen=True)
class TimeDecision:
    """The outcome of the clock policy: the new latest verified time (never below the last
    one), the interval the agreeing servers share, how many distinct servers agreed, and
    the responses refused on the way (each a named error, for the ECU's report)."""

    latest: int
    agreed: VerifiedTime
    servers: int
    refused: tuple[UptaneError, ...] = ()


def verify_token(
    token: bytes, ecu_nonce: bytes, keys: Sequence[TimeServerKey], limits: TimeLimits
) -> tuple[list[VerifiedTime], list[UptaneError]]:
    """At an ECU: every response in the token checked (§6.4) against the nonce the
    Primary's commitment proves this ECU's ``ecu_nonce`` is under. A commitment that does
    not contain ``ecu_nonce`` leads to another nonce, so every response is a TimeReplay.
    Returns the verified responses and the named errors of the others."""
    t = TimeToken.from_bytes(token, limits)
    request_nonce = root_from_path(ecu_nonce, t.index, t.path, limits.max_commitment_depth)
    verified: list[VerifiedTime] = []
    refused: list[UptaneError] = []
    for raw in t.responses:
        try:
            verified.append(verify_response(raw, request_nonce, keys, limits))
        except UptaneError as e:
            refused.append(e)
    return verified, refused


def accept_token(
    token: bytes,
    ecu_nonce: bytes,
    keys: Sequence[TimeServerKey],
    policy: TimePolicy,
    last_verified: int | None,
    limits: TimeLimits,
) -> TimeDecision:
    """At an ECU: the time a forwarded token proves, under the clock policy. When too few
    responses verify, the first refusal is raised (BadSignature, TimeReplay, ...), so a
    single-server setup names what was wrong; the clock is the caller's to move."""
    verified, refused = verify_token(token, ecu_nonce, keys, limits)
    try:
        decision = decide_time(last_verified, verified, policy)
    except TimeQuorumNotMet:
        if refused:
            raise refused[0] from None
        raise
    return TimeDecision(decision.latest, decision.agreed, decision.servers, tuple(refused))


# --- the clock policy (§5.4 secure time; issue 21) -------------------------------------------

DAY = 86_400


@dataclass(frozen=True)
class TimePolicy:
    """How verified time may move an ECU's clock (docs/secure-time.md, "Clock policy").

    ``min_servers`` distinct servers must agree (their intervals share a point); the clock
    moves forward at most ``max_step`` seconds past the last verified time unless
    ``jump_servers`` agree; a verified time more than ``max_backward`` seconds behind the
    last one is refused (the clock never moves back).
    """

    min_servers: int = 1
    max_step: int = 366 * DAY
    jump_servers: int = 2
    max_backward: int = DAY


def agreement(verified: Sequence[VerifiedTime], min_servers: int) -> tuple[VerifiedTime, int]:
    """k of n: the largest group of responses from distinct servers whose intervals
    (midpoint ± radius) share a point, as one interval (their intersection) and the group's
    size; TimeQuorumNotMet when it is smaller than ``min_servers``. One response per server
    counts (the first); n is at most ``TimeLimits.max_servers``, so the quadratic scan is
    fine."""
    unique: dict[str, VerifiedTime] = {}
    for v in verified:
        unique.setdefault(v.server, v)
    best: list[VerifiedTime] = []
    for point in sorted({v.earliest for v in unique.values()}):
        group = [v for v in unique.values() if v.earliest <= point <= v.latest]
        if len(group) > len(best):
            best = group
    if not best or len(best) < min_servers:
        raise TimeQuorumNotMet(
            f"{len(best)} of {len(unique)} time servers agree on the time; the clock policy "
            f"needs {min_servers}: configure or reach more time servers"
        )
    lo, hi = max(v.earliest for v in best), min(v.latest for v in best)
    names = "+".join(sorted(v.server for v in best))
    return VerifiedTime((lo + hi) // 2, (hi - lo + 1) // 2, names), len(best)


def bounded_step(
    last_verified: int | None, candidate: int, servers: int, policy: TimePolicy
) -> int:
    """The new latest verified time when ``servers`` distinct servers agree on
    ``candidate``: at most ``max_step`` ahead of the last verified time unless
    ``jump_servers`` agree, never behind it (TimeJumpRefused beyond ``max_backward``)."""
    if last_verified is None:
        return candidate
    ahead = candidate - last_verified
    if ahead > policy.max_step and servers < policy.jump_servers:
        raise TimeJumpRefused(
            f"verified time {candidate} is {ahead} s after the last verified time "
            f"{last_verified}; the bound is {policy.max_step} s unless {policy.jump_servers} "
            f"time servers agree ({servers} did): configure more time servers, or re-provision "
            "the ECU's time"
        )
    if -ahead > policy.max_backward:
        raise TimeJumpRefused(
            f"verified time {candidate} is {-ahead} s before the last verified time "
            f"{last_verified}; the clock never moves back: check the time server's clock, "
            "or re-provision the ECU's time if the stored one is wrong"
        )
    return max(last_verified, candidate)


def decide_time(
    last_verified: int | None, verified: Sequence[VerifiedTime], policy: TimePolicy
) -> TimeDecision:
    """Both rules in order: k of n agreement, then the bounded step from the last time."""
    agreed, servers = agreement(verified, max(policy.min_servers, 1))
    latest = bounded_step(last_verified, agreed.midpoint, servers, policy)
    return TimeDecision(latest, agreed, servers)
