"""Serial framing and reliable delivery, sans-I/O: COBS, CRC frames, and the ARQ link
under injected bit flips, drops, duplicates and truncations (simulated clock)."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.serial_link import (
    FLAG_MORE,
    KIND_ACK,
    KIND_DATA,
    Frame,
    FrameCodec,
    ReliableLink,
    cobs_decode,
    cobs_encode,
    cobs_max_encoded,
    decode_frame,
    encode_frame,
)
from uptane.errors import EndlessDataAttack, LinkTimeout, MalformedInput, UptaneError


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_cobs_round_trip_has_no_zero(data: bytes) -> None:
    enc = cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= cobs_max_encoded(len(data))
    assert cobs_decode(enc) == data


@pytest.mark.parametrize("size", [0, 1, 253, 254, 255, 508, 509, 1000])
def test_cobs_block_boundaries(size: int) -> None:
    for data in (b"\x01" * size, b"\x00" * size, bytes(i % 256 for i in range(size))):
        assert cobs_decode(cobs_encode(data)) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_cobs_fuzz_decoder_raises_only_malformed_input(data: bytes) -> None:
    # the library's DecodeError never escapes: hostile frames get the project's error
    with contextlib.suppress(MalformedInput):
        cobs_decode(data)


@pytest.mark.parametrize(
    "wire", [b"\x02a\x00", b"\x05ab", b"\x00", b"\x03a\x00b"], ids=["zero", "short", "nul", "nul2"]
)
def test_cobs_malformed_is_malformed_input(wire: bytes) -> None:
    with pytest.raises(MalformedInput, match="COBS"):
        cobs_decode(wire)


def test_cobs_takes_bytearray_and_memoryview() -> None:
    data = b"a\x00b" * 100
    enc = cobs_encode(memoryview(data))
    assert cobs_decode(bytearray(enc)) == cobs_decode(memoryview(enc)) == data


def test_cobs_decodes_the_previous_encoders_trailing_block() -> None:
    # the hand-written encoder this package replaced ended a 254-byte run with an empty
    # block (0x01); ECUs and Primaries still running it must stay readable
    run = bytes(range(1, 255))
    assert cobs_decode(b"\xff" + run + b"\x01") == run
    assert cobs_decode(cobs_encode(run)) == run


def test_frame_round_trip() -> None:
    f = Frame(KIND_DATA, 0xDEADBEEF, 65535, b"\x00payload\x00", FLAG_MORE)
    wire = encode_frame(f)
    assert wire.startswith(b"\x00") and wire.endswith(b"\x00") and wire.count(0) == 2
    assert decode_frame(wire[1:-1], 64) == f
    assert FrameCodec(64).feed(wire * 3) == [f, f, f]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: w[:-3],  # truncated
        lambda w: w[:2],
        lambda w: bytes([w[0]]) + bytes([w[1] ^ 0x10]) + w[2:],  # bit flip
        lambda w: w[:5] + w[6:],  # byte dropped
        lambda w: w[:5] + w[5:6] + w[5:],  # byte duplicated
    ],
)
def test_damaged_frames_are_refused(mutate) -> None:
    wire = encode_frame(Frame(KIND_DATA, 7, 1, b"some payload bytes"))[1:-1]
    with pytest.raises(MalformedInput):
        decode_frame(mutate(wire), 64)


def test_refused_frame_shapes() -> None:
    with pytest.raises(MalformedInput):
        decode_frame(encode_frame(Frame(KIND_DATA, 1, 1, b"x" * 65))[1:-1], 64)
    with pytest.raises(MalformedInput):
        decode_frame(encode_frame(Frame(KIND_ACK, 1, 1, b"x"))[1:-1], 64)
    with pytest.raises(MalformedInput):
        decode_frame(encode_frame(Frame(5, 1, 1))[1:-1], 64)
    with pytest.raises(MalformedInput):
        decode_frame(encode_frame(Frame(KIND_DATA, 1, 1, b"", 0x80))[1:-1], 64)


def test_codec_drops_garbage_and_overlong_frames_with_bounded_buffer() -> None:
    codec = FrameCodec(64)
    good = encode_frame(Frame(KIND_ACK, 1, 2))
    frames = codec.feed(b"\x01\x02\x03\x00" + b"\x55" * 100_000 + b"\x00" + good)
    assert frames == [Frame(KIND_ACK, 1, 2)]
    assert codec.corrupt == 2
    assert len(codec._buf) == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_frame_decoder_raises_only_uptane_errors(data: bytes) -> None:
    with contextlib.suppress(UptaneError):
        decode_frame(data, 128)
    FrameCodec(128).feed(data)  # the stream decoder never raises


# --- the ARQ link under faults ------------------------------------------------------------


def damage(data: bytes, rng: random.Random, rate: float) -> bytes:
    """Inject faults at a byte error rate: flip a bit, drop, duplicate, or truncate."""
    if rate == 0.0:
        return data
    out = bytearray()
    for b in data:
        if rng.random() >= rate:
            out.append(b)
            continue
        kind = rng.randrange(4)
        if kind == 0:
            out.append(b ^ (1 << rng.randrange(8)))
        elif kind == 2:
            out += bytes((b, b))
        elif kind == 3:
            break  # the rest of this write is lost
    return bytes(out)


def shuttle(a: ReliableLink, b: ReliableLink, rng: random.Random, rate: float) -> None:
    """Move bytes both ways on a simulated clock until both ends are idle."""
    now = 0.0
    for _ in range(1_000_000):
        moved = False
        for src, dst in ((a, b), (b, a)):
            out = src.outgoing()
            if out:
                moved = True
                dst.receive(damage(out, rng, rate), now)
        if moved:
            continue
        deadlines = [d for d in (a.next_deadline(), b.next_deadline()) if d is not None]
        if not deadlines:
            return
        now = max(now, min(deadlines))
        a.poll(now)
        b.poll(now)
    raise AssertionError("the link did not settle")


def drain(link: ReliableLink) -> list[bytes]:
    out = []
    while (m := link.next_message()) is not None:
        out.append(m)
    return out


def test_messages_arrive_in_order_both_ways_without_faults() -> None:
    a, b = ReliableLink(max_frame=512), ReliableLink(max_frame=512)
    msgs = [b"", b"x", bytes(range(256)) * 9, b"\x00" * 3000]
    for msg in msgs:
        a.send(msg, 0.0)
        b.send(msg[::-1], 0.0)
    shuttle(a, b, random.Random(1), 0.0)
    assert drain(b) == msgs
    assert drain(a) == [m[::-1] for m in msgs]
    assert a.retransmits == b.retransmits == 0


@pytest.mark.parametrize("rate", [1e-4, 5e-4, 1e-3])
@pytest.mark.parametrize("seed", range(4))
def test_faulty_line_delivers_byte_exact_or_fails_clean(rate: float, seed: int) -> None:
    rng = random.Random(seed)
    a, b = ReliableLink(max_frame=1024), ReliableLink(max_frame=1024)
    a.set_frame_size(1024 if seed % 2 else 256)
    sent = [rng.randbytes(rng.randrange(1, 20_000)) for _ in range(4)]
    for msg in sent:
        a.send(msg, 0.0)
    replies = [rng.randbytes(rng.randrange(1, 3000)) for _ in range(3)]
    for msg in replies:
        b.send(msg, 0.0)
    try:
        shuttle(a, b, rng, rate)
        failed = False
    except LinkTimeout:
        failed = True
    got, got_back = drain(b), drain(a)
    if failed:  # clean failure: whatever arrived is a byte-exact prefix
        assert got == sent[: len(got)] and got_back == replies[: len(got_back)]
    else:
        assert got == sent and got_back == replies
    if rate >= 5e-4:
        assert a.retransmits > 0 and a.corrupt + b.corrupt > 0


def test_dead_line_raises_link_timeout_then_recovers_with_a_new_session() -> None:
    a, b = ReliableLink(ack_timeout=1.0, retries=3), ReliableLink()
    a.send(b"hello", 0.0)
    a.outgoing()  # lost
    session = a.session
    for t in (1.0, 2.0, 3.0):
        a.poll(t)
        a.outgoing()  # lost again
    with pytest.raises(LinkTimeout):
        a.poll(4.0)
    assert a.tx_idle and a.session != session
    a.send(b"again", 5.0)
    shuttle(a, b, random.Random(0), 0.0)
    assert drain(b) == [b"again"]


def test_duplicated_frames_are_delivered_once() -> None:
    a, b = ReliableLink(), ReliableLink()
    a.send(b"once", 0.0)
    wire = a.outgoing()
    b.receive(wire + wire + wire, 0.0)
    assert drain(b) == [b"once"] and b.duplicates == 2


def test_peer_restart_is_followed() -> None:
    a, b = ReliableLink(), ReliableLink()
    a.send(b"one", 0.0)
    shuttle(a, b, random.Random(0), 0.0)
    a2 = ReliableLink()  # the sender restarts: new session, sequence from 0
    a2.send(b"two", 0.0)
    shuttle(a2, b, random.Random(0), 0.0)
    assert drain(b) == [b"one", b"two"]


def test_over_long_message_is_endless_data_and_the_link_goes_on() -> None:
    a = ReliableLink(max_message=100_000)
    b = ReliableLink(max_message=1000)
    a.send(b"x" * 5000, 0.0)
    a.send(b"fine", 0.0)
    shuttle(a, b, random.Random(0), 0.0)
    with pytest.raises(EndlessDataAttack):
        b.next_message()
    assert drain(b) == [b"fine"]
    with pytest.raises(EndlessDataAttack):
        b.send(b"x" * 1001, 0.0)


def test_lost_data_lost_ack_and_truncated_frame_are_each_recovered() -> None:
    a, b = ReliableLink(ack_timeout=1.0), ReliableLink()
    a.send(b"payload" * 20, 0.0)  # 140 bytes: three 64-byte fragments
    a.outgoing()  # first DATA frame lost
    a.poll(1.0)
    b.receive(a.outgoing(), 1.0)  # retransmitted, arrives
    b.outgoing()  # ... but its ACK is lost
    a.poll(2.0)
    b.receive(a.outgoing(), 2.0)  # the copy is re-acknowledged, not delivered twice
    assert b.duplicates == 1
    a.receive(b.outgoing(), 2.0)  # ACK arrives; the second fragment goes out
    wire = a.outgoing()
    b.receive(wire[: len(wire) // 2], 2.0)  # truncated: the rest never comes
    a.poll(3.0)
    b.receive(a.outgoing(), 3.0)  # its leading 0x00 ends the stub; the copy gets through
    assert b.corrupt == 1
    assert b.next_message() is None
    a.receive(b.outgoing(), 3.0)
    shuttle(a, b, random.Random(0), 0.0)
    assert drain(b) == [b"payload" * 20]
    assert a.retransmits == 3
