"""The link's envelope (hardware.secure_link) through the endpoints: sessions per peer,
freshness, and with a link key a MAC on every message (issue 21)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hw_support import MemoryHandler

from hardware import messages as m
from hardware.client import LinkClient
from hardware.protocol import PrimaryEndpoint, SecondaryEndpoint
from hardware.secure_link import (
    ENVELOPE_BYTES,
    KIND_DATA,
    MAX_SESSIONS,
    ClientChannel,
    LinkKey,
    ServerChannel,
    decode_pdu,
    is_envelope,
    refusal,
)
from uptane.errors import (
    BadHash,
    LinkAuthentication,
    LinkTimeout,
    MalformedInput,
    ProtocolVersionMismatch,
    SessionRequired,
)
from uptane.limits import CONSTRAINED, PRIMARY

KEY = LinkKey(bytes(range(16)))


def pair(sec_key: LinkKey | None = KEY, pri_key: LinkKey | None = KEY):
    handler = MemoryHandler()
    sec = SecondaryEndpoint(handler, CONSTRAINED, max_frame=512, link_key=sec_key)
    pri = PrimaryEndpoint(PRIMARY, timeout=1.0, retries=2, link_key=pri_key)
    return handler, sec, pri


def call(pri: PrimaryEndpoint, sec: SecondaryEndpoint, msg: m.Message):
    reply = sec.receive(pri.request(msg, 0.0))
    assert reply is not None, "the Secondary dropped the request"
    got = pri.receive(reply, 0.0)
    assert got is not None, "the Primary dropped the reply"
    return got


def image_chunk(offset: int = 0, chunk: bytes = b"12345") -> m.PutImage:
    return m.PutImage(filename="fw.bin", total=10, offset=offset, chunk=chunk)


def test_an_authenticated_session_carries_every_request() -> None:
    _, sec, pri = pair()
    info = call(pri, sec, pri.hello())
    assert isinstance(info, m.HelloInfo) and sec.authenticated and pri.authenticated
    assert call(pri, sec, m.GetReport(nonce=b"n1")) == m.Report(report=b"report:ecu-1:n1")
    assert call(pri, sec, m.GetTimeNonce()) == m.TimeNonce(nonce=(1).to_bytes(16, "big"))
    assert call(pri, sec, image_chunk()) == m.Ack(offset=5)
    data = pri.request(m.GetStatus(), 0.0)
    pdu = decode_pdu(data, PRIMARY.link_message_bytes)
    assert pdu.kind == KIND_DATA and pdu.tagged and len(pdu.tag) == 8
    assert len(data) - len(pdu.payload) <= ENVELOPE_BYTES


@pytest.mark.parametrize("where", ["payload", "tag", "counter", "session id"])
def test_a_forged_request_is_dropped_and_changes_nothing(where: str) -> None:
    handler, sec, pri = pair()
    call(pri, sec, pri.hello())
    data = bytearray(pri.request(image_chunk(), 0.0))
    at = {"payload": 30, "tag": len(data) - 1, "counter": 3 + 8 + 7, "session id": 3}[where]
    data[at] ^= 0x01
    reply = sec.receive(bytes(data))
    if where == "session id":  # an unknown session: refused, not run
        assert reply is not None and pri.receive(reply, 0.0) is not None
    else:
        assert reply is None and sec.dropped == 1
    assert handler.chunks == 0 and handler.image_filename is None


def test_a_replayed_request_is_dropped() -> None:
    handler, sec, pri = pair()
    call(pri, sec, pri.hello())
    data = pri.request(image_chunk(), 0.0)
    assert pri.receive(sec.receive(data) or b"", 0.0) == m.Ack(offset=5)
    assert sec.receive(data) is None and sec.dropped == 1 and handler.chunks == 1
    # the install a peer recorded earlier cannot be played back either
    install = pri.request(m.Install(), 0.0)
    assert isinstance(pri.receive(sec.receive(install) or b"", 0.0), m.Error)  # incomplete
    handler.state = "idle"
    assert sec.receive(install) is None and handler.installed is None


def test_reordered_requests_drop_the_older_one() -> None:
    handler, sec, pri = pair()
    call(pri, sec, pri.hello())
    first = pri.request(image_chunk(0, b"12345"), 0.0)
    pri.cancel()
    second = pri.request(m.GetStatus(), 0.0)
    assert sec.receive(second) is not None
    assert sec.receive(first) is None and handler.chunks == 0


def test_a_forged_or_replayed_reply_is_dropped_by_the_primary() -> None:
    _, sec, pri = pair()
    call(pri, sec, pri.hello())
    reply = sec.receive(pri.request(m.GetStatus(), 0.0))
    assert reply is not None
    forged = bytearray(reply)
    forged[-1] ^= 0x80
    assert pri.receive(bytes(forged), 0.0) is None and pri.dropped == 1
    assert isinstance(pri.receive(reply, 0.0), m.Status)
    pri.request(m.GetStatus(), 0.0)
    assert pri.receive(reply, 0.0) is None and pri.dropped == 2  # the same reply again


def test_an_unauthenticated_refusal_cannot_name_an_attack() -> None:
    _, sec, pri = pair()
    call(pri, sec, pri.hello())
    data = pri.request(m.Install(), 0.0)
    rid = m.decode(decode_pdu(data, PRIMARY.link_message_bytes).payload, PRIMARY).rid
    fake = refusal(m.encode(m.Error.from_exception(BadHash("no")), rid))
    assert pri.receive(fake, 0.0) is None and pri.pending is not None
    real = refusal(m.encode(m.Error.from_exception(SessionRequired("again")), rid))
    assert isinstance(pri.receive(real, 0.0).to_exception(), SessionRequired)


def test_a_new_peer_without_a_hello_is_refused_without_touching_state() -> None:
    for key in (KEY, None):
        handler, sec, pri = pair(key, key)
        call(pri, sec, pri.hello())
        call(pri, sec, image_chunk(0, b"1234567890"))
        # plain CBOR, as any device on the bus could send it
        plain = sec.receive(m.encode(m.Install(filename="fw.bin"), 5))
        assert plain is not None and not is_envelope(plain)
        assert isinstance(m.decode(plain, PRIMARY).message.to_exception(), SessionRequired)
        # an envelope from a peer that never said HELLO (no session)
        stranger = PrimaryEndpoint(PRIMARY, link_key=key)
        refused = stranger.receive(sec.receive(stranger.request(m.Install(), 0.0)) or b"", 0.0)
        if key is None:
            assert isinstance(refused.to_exception(), SessionRequired)
        assert handler.installed is None and handler.state == "ready"
        assert isinstance(call(pri, sec, m.Install()), m.Status) and handler.installed


def test_a_hello_opens_a_new_session_beside_the_one_in_use() -> None:
    handler, sec, pri = pair()
    hello = pri.request(pri.hello(), 0.0)
    assert pri.receive(sec.receive(hello) or b"", 0.0) is not None
    meta = m.PutMetadata(
        repository="director", role="targets", encoding="der", total=8, offset=0, chunk=b"1234"
    )
    assert call(pri, sec, meta) == m.Ack(offset=4)
    # a HELLO the first Primary sent earlier, replayed: a session nobody can use
    old = PrimaryEndpoint(PRIMARY, link_key=KEY)
    replayed = old.request(old.hello(), 0.0)
    assert sec.receive(replayed) is not None and sec.receive(replayed) is not None
    rest = m.PutMetadata(
        repository="director", role="targets", encoding="der", total=8, offset=4, chunk=b"5678"
    )
    assert call(pri, sec, rest) == m.Ack(offset=8)
    assert handler.metadata[("director", "targets", "der")] == b"12345678"
    # the HELLO of the session in use, played back: dropped, the session goes on
    assert sec.receive(hello) is None
    assert isinstance(call(pri, sec, m.GetStatus()), m.Status)


def test_sessions_are_bounded_and_the_one_in_use_survives_a_flood_of_hellos() -> None:
    _, sec, pri = pair()
    call(pri, sec, pri.hello())
    assert isinstance(call(pri, sec, m.GetStatus()), m.Status)
    for _ in range(3 * MAX_SESSIONS):
        other = PrimaryEndpoint(PRIMARY, link_key=KEY)
        sec.receive(other.request(other.hello(), 0.0))
    assert len(sec.channel.sessions) == MAX_SESSIONS
    assert isinstance(call(pri, sec, m.GetStatus()), m.Status)


def test_keys_that_differ_or_are_missing_are_named_at_the_hello() -> None:
    for sec_key, pri_key in ((KEY, LinkKey(bytes(16))), (KEY, None), (None, KEY)):
        handler, sec, pri = pair(sec_key, pri_key)
        reply = pri.receive(sec.receive(pri.request(pri.hello(), 0.0)) or b"", 0.0)
        assert isinstance(reply, m.Error)
        assert isinstance(reply.to_exception(), LinkAuthentication)
        assert not sec.channel.sessions and handler.reports == 0


def test_a_keyed_primary_takes_no_unauthenticated_welcome() -> None:
    pri = PrimaryEndpoint(PRIMARY, link_key=KEY)
    hello = decode_pdu(pri.request(pri.hello(), 0.0), PRIMARY.link_message_bytes)
    # an unkeyed Secondary (or a man in the middle) answering with a session of its own
    mitm = ServerChannel(None)
    bare = hello.__class__(hello.kind, 0, hello.head, hello.payload, b"")
    incoming = mitm.open(bare)
    rid = m.decode(incoming.payload, PRIMARY).rid
    info = m.HelloInfo(
        version=m.MAX_VERSION,
        ecu_serial="evil",
        hardware_id="h",
        mode="partial",
        max_frame=64,
        max_message=8192,
        slot_size=1,
    )
    assert pri.receive(mitm.seal(incoming, m.encode(info, rid)), 0.0) is None
    assert pri.peer is None and pri.channel.session is None


def test_a_version_1_peer_is_told_to_update() -> None:
    _, sec, _ = pair(None, None)
    hello = m.Hello(min_version=1, max_version=1, max_frame=64, max_message=8192)
    reply = m.decode(sec.receive(m.encode(hello, 3)) or b"", PRIMARY)
    assert reply.rid == 3
    assert isinstance(reply.message.to_exception(), ProtocolVersionMismatch)


class Wire:
    """Both endpoints in one process: what the client sends, the endpoint answers."""

    def __init__(self, sec: SecondaryEndpoint) -> None:
        self.sec, self.inbox, self.sent = sec, [], []

    max_frame = 1024

    def negotiate(self, frame_size: int) -> None:
        pass

    def send(self, message: bytes, timeout: float | None = None) -> None:
        self.sent.append(message)
        reply = self.sec.receive(message)
        if reply is not None:
            self.inbox.append(reply)

    def recv(self, timeout: float) -> bytes | None:
        return self.inbox.pop(0) if self.inbox else None

    def close(self) -> None:
        pass


def test_a_link_client_with_the_key_and_one_without() -> None:
    handler, sec, _ = pair()
    with LinkClient(Wire(sec), PRIMARY, timeout=0.05, retries=0, link_key=KEY) as client:
        assert client.hello().ecu_serial == "ecu-1"
        client.put_image("fw.bin", b"0123456789", 10)
    assert handler.image == b"0123456789"
    stranger = LinkClient(Wire(sec), PRIMARY, timeout=0.05, retries=0)
    with pytest.raises(LinkAuthentication):
        stranger.hello()
    # the client keeps working when the Secondary forgot its sessions (a reboot)
    wire = Wire(sec)
    with LinkClient(wire, PRIMARY, timeout=0.05, retries=0, link_key=KEY) as client:
        client.hello()
        sec.reset()
        assert client.status().image_offset == 10
    # a recorded conversation played back by a peer without the key: nothing runs
    handler.image.clear()
    replay = Wire(sec)
    for pdu in wire.sent:
        replay.send(pdu)
    assert handler.image == b"" and handler.reports == 0
    kinds = {decode_pdu(r, 1 << 16).kind for r in replay.inbox}
    assert KIND_DATA not in kinds  # HELLOs answered (sessions nobody can use), nothing run
    with LinkClient(Wire(sec), PRIMARY, timeout=0.01, retries=0, link_key=LinkKey(bytes(16))):
        pass


def test_a_silent_drop_times_out_at_the_primary() -> None:
    _, sec, _ = pair()
    wire = Wire(sec)
    client = LinkClient(wire, PRIMARY, timeout=0.02, retries=1, link_key=KEY)
    client.hello()
    sec.channel.sessions[client.endpoint.channel.session.sid].received = 2**63  # type: ignore[union-attr]
    with pytest.raises(LinkTimeout):
        client.status()


def test_link_key_files(tmp_path: Path) -> None:
    key = LinkKey.generate()
    key.save(tmp_path / "link.key")
    assert os.stat(tmp_path / "link.key").st_mode & 0o777 == 0o600
    assert LinkKey.load(tmp_path / "link.key") == key
    for bad in (b"", b"zz" * 16, b"00" * 15, b"00" * 17):
        with pytest.raises(MalformedInput):
            LinkKey.from_text(bad)
    with pytest.raises(ValueError):
        LinkKey(b"short")
    assert "raw" not in repr(key) or key.raw.hex() not in repr(key)


def test_an_unsealed_session_request_from_the_client_side_is_marked() -> None:
    channel = ClientChannel(None)
    pdu = decode_pdu(channel.seal(b"x"), 64)
    assert pdu.kind == KIND_DATA and pdu.head == bytes(16)
