"""The sans-I/O endpoints (hardware.protocol) talking to each other in memory."""

from __future__ import annotations

import contextlib

import pytest
from hw_support import MemoryHandler
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware import messages as m
from hardware.protocol import (
    EcuInfo,
    PrimaryEndpoint,
    SecondaryEndpoint,
    SecondaryHandler,
    negotiate_codec,
    negotiate_version,
)
from hardware.secure_link import ServerChannel, decode_pdu, is_envelope
from uptane.errors import (
    EndlessDataAttack,
    LimitExceeded,
    LinkError,
    LinkTimeout,
    MalformedInput,
    ProtocolVersionMismatch,
    ProtocolViolation,
    UptaneError,
)
from uptane.limits import CONSTRAINED, PRIMARY


def pair(**kw):
    handler = MemoryHandler()
    sec = SecondaryEndpoint(handler, kw.pop("sec_limits", CONSTRAINED), max_frame=512)
    pri = PrimaryEndpoint(PRIMARY, timeout=1.0, retries=2, **kw)
    return handler, sec, pri


def call(pri: PrimaryEndpoint, sec: SecondaryEndpoint, msg: m.Message, now: float = 0.0):
    reply = pri.receive(sec.receive(pri.request(msg, now)), now)
    assert reply is not None
    return reply


def answered(pri: PrimaryEndpoint, msg: m.Message, reply: m.Message):
    """Send ``msg`` and hand the Primary ``reply`` as a Secondary of its session would seal
    it (a WELCOME for a HELLO; other requests after a real handshake)."""
    channel = ServerChannel(None)
    if not isinstance(msg, m.Hello):
        sec = SecondaryEndpoint(MemoryHandler(), CONSTRAINED)
        sec.channel = channel
        call(pri, sec, pri.hello())
    pdu = decode_pdu(pri.request(msg, 0.0), PRIMARY.link_message_bytes)
    incoming = channel.open(pdu)
    rid = m.decode(incoming.payload, PRIMARY).rid
    return pri.receive(channel.seal(incoming, m.encode(reply, rid)), 0.0)


def test_memory_handler_satisfies_the_protocol() -> None:
    assert isinstance(MemoryHandler(), SecondaryHandler)


def test_hello_negotiates_version_and_frame_size() -> None:
    _, sec, pri = pair()
    info = call(pri, sec, pri.hello())
    assert isinstance(info, m.HelloInfo)
    assert info.version == m.MAX_VERSION == pri.version == sec.version
    assert info.max_frame == 512 == sec.frame_size
    assert (info.ecu_serial, info.hardware_id, info.mode) == ("ecu-1", "hw-a", "partial")
    assert info.max_message == CONSTRAINED.link_message_bytes
    assert pri.chunk_size() == CONSTRAINED.link_message_bytes - m.CHUNK_OVERHEAD


def test_hello_and_welcome_list_the_codecs_each_side_has() -> None:
    """HELLO lists every codec the Primary can forward, WELCOME the ones the ECU reads;
    a side that lists none is taken at its configuration."""
    handler, sec, pri = pair()
    hello = pri.hello()
    assert hello.codecs == ("json", "der", "compact-der")
    assert call(pri, sec, hello).codecs is None  # this handler says nothing
    handler.info = EcuInfo("ecu-1", "hw-a", "partial", 1 << 20, ("compact-der",))
    info = call(pri, sec, pri.hello())
    assert info.codecs == ("compact-der",) and pri.peer is not None
    assert pri.peer.codecs == ("compact-der",)


def test_codec_negotiation_compact_der_when_both_ends_have_it() -> None:
    ours = ("json", "der", "compact-der")
    # a DER Secondary: the most compact DER flavour both ends list
    assert negotiate_codec("der", ("compact-der",), ours) == "compact-der"
    assert negotiate_codec("der", ("der", "compact-der"), ours) == "compact-der"
    assert negotiate_codec("der", ("der",), ours) == "der"
    assert negotiate_codec("compact-der", ("der",), ours) == "der"
    # a peer that lists nothing: the configuration stands
    assert negotiate_codec("der", None, ours) == "der"
    assert negotiate_codec("json", (), ours) == "json"
    # the Secondary's word on what it reads wins over a configuration that disagrees
    assert negotiate_codec("json", ("der",), ours) == "der"
    assert negotiate_codec("der", ("json",), ours) == "json"
    with pytest.raises(LinkError, match="no common metadata codec"):
        negotiate_codec("der", ("cbor-x",), ours)
    with pytest.raises(LinkError):
        negotiate_codec("der", ("compact-der",), ("json", "der"))


def test_codec_lists_are_bounded() -> None:
    info = dict(
        version=2, ecu_serial="e", hardware_id="h", mode="partial", max_frame=64,
        max_message=9000, slot_size=1,
    )  # fmt: skip
    ok = m.HelloInfo(**info, codecs=("der",))
    assert m.decode(m.encode(ok, 5), PRIMARY).message == ok
    for bad, error in (
        (tuple(f"c{i}" for i in range(m.MAX_NAMES + 1)), LimitExceeded),
        (("x" * (PRIMARY.max_identifier + 1),), LimitExceeded),
        (("",), MalformedInput),
        ((3,), MalformedInput),
    ):
        raw = m.encode(m.HelloInfo(**info, codecs=bad), 5)  # type: ignore[arg-type]
        with pytest.raises(error):
            m.decode(raw, PRIMARY)


def test_version_negotiation_picks_the_highest_common() -> None:
    assert negotiate_version(1, 5, 2, 3) == 3
    assert negotiate_version(2, 2, 1, 4) == 2
    with pytest.raises(ProtocolVersionMismatch):
        negotiate_version(3, 4, 1, 2)


def test_hello_without_a_common_version_is_refused() -> None:
    _, sec, pri = pair(min_version=m.MAX_VERSION + 1, max_version=m.MAX_VERSION + 2)
    reply = call(pri, sec, pri.hello())
    assert isinstance(reply, m.Error)
    assert isinstance(reply.to_exception(), ProtocolVersionMismatch)
    assert not sec.in_session


def test_primary_refuses_a_version_outside_its_range() -> None:
    pri = PrimaryEndpoint(PRIMARY)
    bad = m.HelloInfo(
        version=7,
        ecu_serial="e",
        hardware_id="h",
        mode="full",
        max_frame=64,
        max_message=9000,
        slot_size=1,
    )
    with pytest.raises(ProtocolVersionMismatch):
        answered(pri, pri.hello(), bad)


def test_requests_before_hello_are_refused() -> None:
    _, sec, pri = pair()
    reply = call(pri, sec, m.GetStatus())
    assert isinstance(reply, m.Error)
    assert isinstance(reply.to_exception(), ProtocolViolation)


def test_report_time_status_install() -> None:
    handler, sec, pri = pair()
    call(pri, sec, pri.hello())
    assert call(pri, sec, m.GetReport(nonce=b"n1")) == m.Report(report=b"report:ecu-1:n1")
    assert call(pri, sec, m.PutTime(time=123, token=b"tok")) == m.Ack()
    assert (handler.time, handler.token) == (123, b"tok")
    st = call(pri, sec, m.GetStatus())
    assert isinstance(st, m.Status) and st.state == "idle"
    err = call(pri, sec, m.Install())
    assert isinstance(err, m.Error) and err.attack == "arbitrary-software"


def test_metadata_is_reassembled_from_chunks() -> None:
    handler, sec, pri = pair()
    call(pri, sec, pri.hello())
    blob = bytes(range(256)) * 20
    for off in range(0, len(blob), 1000):
        chunk = blob[off : off + 1000]
        msg = m.PutMetadata(
            repository="director",
            role="targets",
            encoding="der",
            total=len(blob),
            offset=off,
            chunk=chunk,
        )
        assert call(pri, sec, msg) == m.Ack(offset=off + len(chunk))
    assert handler.metadata[("director", "targets", "der")] == blob


def test_metadata_over_the_role_cap_is_endless_data() -> None:
    handler, sec, pri = pair()
    call(pri, sec, pri.hello())
    total = CONSTRAINED.bytes_for_role("timestamp") + 1
    msg = m.PutMetadata(
        repository="director",
        role="timestamp",
        encoding="der",
        total=total,
        offset=0,
        chunk=b"x",
    )
    reply = call(pri, sec, msg)
    assert isinstance(reply, m.Error)
    assert isinstance(reply.to_exception(), EndlessDataAttack)
    assert handler.metadata == {}


def test_metadata_out_of_order_is_a_protocol_violation() -> None:
    _, sec, pri = pair()
    call(pri, sec, pri.hello())
    msg = m.PutMetadata(
        repository="director", role="targets", encoding="der", total=10, offset=5, chunk=b"x"
    )
    reply = call(pri, sec, msg)
    assert isinstance(reply, m.Error) and isinstance(reply.to_exception(), ProtocolViolation)


def put_image(pri, sec, data: bytes, start: int, stop: int, step: int, name: str = "fw.bin"):
    for off in range(start, stop, step):
        chunk = data[off : min(off + step, stop)]
        reply = call(pri, sec, m.PutImage(filename=name, total=len(data), offset=off, chunk=chunk))
        assert reply == m.Ack(offset=off + len(chunk)), reply


def test_image_transfer_resumes_at_the_acknowledged_offset() -> None:
    handler, sec, pri = pair()
    call(pri, sec, pri.hello())
    image = bytes(i % 251 for i in range(10_000))
    put_image(pri, sec, image, 0, 4000, 1000)
    # the link dies; a new session starts, asks where to resume, and goes on from there
    sec.reset()
    pri2 = PrimaryEndpoint(PRIMARY)
    call(pri2, sec, pri2.hello())
    st = call(pri2, sec, m.GetStatus())
    assert (st.image_filename, st.image_total, st.image_offset) == ("fw.bin", 10_000, 4000)
    chunks_before = handler.chunks
    put_image(pri2, sec, image, 4000, 10_000, 1000)
    assert handler.chunks == chunks_before + 6
    assert bytes(handler.image) == image
    assert call(pri2, sec, m.Install(filename="fw.bin")).state == "installed"


def test_image_offset_rules() -> None:
    handler, sec, pri = pair()
    call(pri, sec, pri.hello())
    image = b"a" * 3000
    put_image(pri, sec, image, 0, 2000, 1000)
    # a chunk already held is acknowledged, not written again
    again = call(pri, sec, m.PutImage(filename="fw.bin", total=3000, offset=0 + 1000, chunk=b"a"))
    assert again == m.Ack(offset=2000) and handler.chunks == 2
    # a gap is refused
    gap = call(pri, sec, m.PutImage(filename="fw.bin", total=3000, offset=2500, chunk=b"a"))
    assert isinstance(gap, m.Error) and isinstance(gap.to_exception(), ProtocolViolation)
    # another file cannot resume, it must start at 0
    other = call(pri, sec, m.PutImage(filename="x.bin", total=3000, offset=2000, chunk=b"a"))
    assert isinstance(other, m.Error)
    # offset 0 restarts
    assert call(pri, sec, m.PutImage(filename="fw.bin", total=3000, offset=0, chunk=b"b")) == (
        m.Ack(offset=1)
    )
    assert bytes(handler.image) == b"b"


def test_image_over_the_cap_is_endless_data() -> None:
    _, sec, pri = pair()
    call(pri, sec, pri.hello())
    total = CONSTRAINED.image_bytes + 1
    reply = call(pri, sec, m.PutImage(filename="f", total=total, offset=0, chunk=b"x"))
    assert isinstance(reply.to_exception(), EndlessDataAttack)


def test_retransmitted_request_is_answered_from_cache_not_run_twice() -> None:
    handler, sec, pri = pair()
    call(pri, sec, pri.hello())
    data = pri.request(m.PutImage(filename="f", total=10, offset=0, chunk=b"12345"), 0.0)
    first = sec.receive(data)  # the reply is lost on the way back
    again = pri.poll(5.0)
    assert again is not None and again != data  # sealed again, with the next counter
    second = sec.receive(again)
    assert first is not None and second is not None and handler.chunks == 1
    assert pri.receive(second, 5.0) == m.Ack(offset=5)
    # the first PDU, late or replayed, is dropped: its counter is stale
    assert sec.receive(data) is None and sec.dropped == 1 and handler.chunks == 1


def test_stale_replies_are_ignored() -> None:
    _, sec, pri = pair()
    call(pri, sec, pri.hello())
    old = sec.receive(pri.request(m.GetReport(nonce=b"1"), 0.0))
    pri.cancel()
    data = pri.request(m.GetReport(nonce=b"2"), 0.0)
    assert pri.receive(old, 0.0) is None and pri.stale_replies == 1
    assert pri.receive(sec.receive(data), 0.0) == m.Report(report=b"report:ecu-1:2")


def test_timeouts_back_off_then_raise_link_timeout() -> None:
    pri = PrimaryEndpoint(PRIMARY, timeout=1.0, retries=2, backoff=2.0)
    data = pri.request(m.GetStatus(), 10.0)
    assert pri.next_deadline() == 11.0
    assert pri.poll(10.5) is None
    assert is_envelope(pri.poll(11.0) or b"") and pri.next_deadline() == 13.0
    assert is_envelope(pri.poll(13.0) or b"") and pri.next_deadline() == 17.0
    assert data
    with pytest.raises(LinkTimeout):
        pri.poll(17.0)
    assert pri.pending is None and pri.next_deadline() is None


def test_wrong_reply_type_is_a_protocol_violation() -> None:
    pri = PrimaryEndpoint(PRIMARY)
    with pytest.raises(ProtocolViolation):
        answered(pri, m.GetStatus(), m.Report(report=b"x"))


def test_one_request_at_a_time_and_only_requests() -> None:
    pri = PrimaryEndpoint(PRIMARY)
    pri.request(m.GetStatus(), 0.0)
    with pytest.raises(ProtocolViolation):
        pri.request(m.GetStatus(), 0.0)
    pri.cancel()
    with pytest.raises(ProtocolViolation):
        pri.request(m.Ack(), 0.0)


def test_secondary_answers_garbage_with_an_error() -> None:
    _, sec, pri = pair()
    # outside any envelope: refused in plain CBOR, as a session is required
    env = m.decode(sec.receive(b"\xff\x00garbage"), PRIMARY)
    assert isinstance(env.message, m.Error) and isinstance(
        env.message.to_exception(), ProtocolViolation
    )
    env = m.decode(sec.receive(m.encode(m.Ack(), 9)), PRIMARY)
    assert env.rid == 9 and isinstance(env.message, m.Error)
    # inside the session: garbage is malformed input, a reply is not a request
    call(pri, sec, pri.hello())
    reply = pri.receive(sec.receive(pri.channel.seal(b"\xff\x00garbage")), 0.0)
    assert reply is None  # answered with request id 0: not the one outstanding
    pri.cancel()
    assert isinstance(call(pri, sec, m.GetStatus()), m.Status)


class ExplodingHandler(MemoryHandler):
    def report(self, nonce: bytes) -> bytes:
        raise RuntimeError("bug")


def test_a_handler_bug_becomes_an_error_reply() -> None:
    sec = SecondaryEndpoint(ExplodingHandler(), PRIMARY)
    pri = PrimaryEndpoint(PRIMARY)
    call(pri, sec, pri.hello())
    reply = call(pri, sec, m.GetReport(nonce=b"n"))
    assert isinstance(reply, m.Error) and reply.code == 1
    assert isinstance(call(pri, sec, m.GetStatus()), m.Status)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_fuzz_secondary_endpoint_always_answers_with_a_message(inputs: list[bytes]) -> None:
    _, sec, pri = pair()
    call(pri, sec, pri.hello())
    for data in inputs:
        reply = sec.receive(data)  # never raises: dropped, refused, or an ERROR
        if reply is not None and not is_envelope(reply):
            assert isinstance(m.decode(reply, PRIMARY).message, m.Error)
        sealed = sec.receive(pri.channel.seal(data))  # the same bytes inside the session
        assert sealed is not None and is_envelope(sealed)
    assert isinstance(call(pri, sec, m.GetStatus()), m.Status)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(m.REPLY_TYPES)), st.binary(max_size=200))
def test_fuzz_primary_endpoint_raises_only_uptane_errors(kind, data: bytes) -> None:
    pri = PrimaryEndpoint(PRIMARY)
    request = {
        m.Hello: pri.hello(),
        m.GetReport: m.GetReport(nonce=b"n"),
        m.PutTime: m.PutTime(time=1),
        m.PutMetadata: m.PutMetadata(
            repository="d", role="targets", encoding="der", total=1, offset=0, chunk=b"x"
        ),
        m.PutImage: m.PutImage(filename="f", total=1, offset=0, chunk=b"x"),
        m.Install: m.Install(),
        m.GetStatus: m.GetStatus(),
        m.GetTimeNonce: m.GetTimeNonce(),
    }[kind]
    pri.request(request, 0.0)
    with contextlib.suppress(UptaneError):
        pri.receive(data, 0.0)
