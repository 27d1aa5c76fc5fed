"""Link messages (hardware.messages): round trips, field checks, error mapping, fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware import messages as m
from uptane.encoding import cbor
from uptane.errors import (
    BadHash,
    EndlessDataAttack,
    LimitExceeded,
    LinkTimeout,
    MalformedInput,
    RollbackAttack,
    UptaneError,
    error_classes,
)
from uptane.limits import CONSTRAINED, PRIMARY

EXAMPLES: list[m.Message] = [
    m.Hello(min_version=1, max_version=3, max_frame=1024, max_message=65536),
    m.HelloInfo(
        version=1,
        ecu_serial="ecu-1",
        hardware_id="hw-a",
        mode="full",
        max_frame=512,
        max_message=8192,
        slot_size=1 << 20,
    ),
    m.GetReport(nonce=b"\x01" * 16),
    m.Report(report=b"signed report bytes"),
    m.PutTime(time=1_790_000_000),
    m.PutTime(time=b"20260101T000000Z", token=b"signed-token"),
    m.PutMetadata(
        repository="director", role="targets", encoding="der", total=10, offset=4, chunk=b"abc"
    ),
    m.PutImage(filename="fw/app.bin", total=100, offset=50, chunk=b"\x00" * 50),
    m.Install(),
    m.Install(filename="fw/app.bin"),
    m.GetStatus(),
    m.Status(state="idle"),
    m.Status(
        state="receiving",
        image_filename="fw/app.bin",
        image_total=100,
        image_offset=40,
        installed="fw/old.bin",
        attack=64,
    ),
    m.Ack(),
    m.Ack(offset=7),
    m.Error(code=30, attack="rollback", message="version 3 < 4"),
    m.GetTimeNonce(),
    m.TimeNonce(nonce=bytes(range(32))),
]


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda x: type(x).__name__)
def test_round_trip(msg: m.Message) -> None:
    data = m.encode(msg, 42)
    env = m.decode(data, PRIMARY)
    assert env.rid == 42
    assert env.message == msg
    assert m.encode(env.message, 42) == data


def test_every_type_is_covered() -> None:
    assert {type(x) for x in EXAMPLES} == set(m.MESSAGE_TYPES.values())


def test_wire_layout_uses_small_integer_keys() -> None:
    raw = cbor.loads(m.encode(m.GetReport(nonce=b"n"), 7), PRIMARY)
    assert raw == {0: m.GetReport.TYPE, 1: 7, 2: b"n"}


def _raw(d: dict) -> bytes:
    return cbor.dumps(d)


@pytest.mark.parametrize(
    "raw",
    [
        [1, 2],  # not a map
        {0: 99, 1: 1},  # unknown type
        {0: 3, 2: b"n"},  # no request id
        {0: 3, 1: -1, 2: b"n"},  # bad request id
        {0: 3, 1: True, 2: b"n"},  # boolean request id
        {0: 3, 1: 1},  # missing nonce
        {0: 3, 1: 1, 2: "text"},  # wrong type
        {0: 3, 1: 1, 2: b"n", 3: 1},  # unknown key
        {0: 11, 1: 1, 2: -5},  # negative offset
        {0: 11, 1: 1, 2: True},  # bool for int
        {0: 2, 1: 1, 2: 1, 3: "e", 4: "h", 5: "half", 6: 1, 7: 9000, 8: 1},  # bad mode
        {0: 1, 1: 1, 2: 3, 3: 1, 4: 64, 5: 9000},  # min > max version
        {0: 7, 1: 1, 2: "f", 3: 4, 4: 2, 5: b"abc"},  # chunk past total
        {0: 6, 1: 1, 2: "d", 3: "r", 4: "der", 5: 1, 6: 1, 7: b"a"},  # chunk past total
        {0: 10, 1: 1, 2: "x", 4: 5, 5: 6},  # offset past total
    ],
)
def test_bad_messages_are_refused(raw: object) -> None:
    with pytest.raises(MalformedInput):
        m.decode(_raw(raw), PRIMARY)  # type: ignore[arg-type]


def test_field_caps() -> None:
    with pytest.raises(LimitExceeded):
        m.decode(m.encode(m.GetReport(nonce=b"n" * 65), 1), PRIMARY)
    long_id = "e" * (CONSTRAINED.max_identifier + 1)
    info = m.HelloInfo(
        version=1,
        ecu_serial=long_id,
        hardware_id="h",
        mode="partial",
        max_frame=64,
        max_message=8192,
        slot_size=1,
    )
    with pytest.raises(LimitExceeded):
        m.decode(m.encode(info, 1), CONSTRAINED)
    big = m.PutImage(filename="f", total=10**6, offset=0, chunk=b"x" * 9000)
    with pytest.raises(EndlessDataAttack):
        m.decode(m.encode(big, 1), CONSTRAINED)


@pytest.mark.parametrize("cls", sorted(error_classes().values(), key=lambda c: c.code))
def test_error_message_maps_every_error_class(cls: type[UptaneError]) -> None:
    msg = m.Error.from_exception(cls("it broke"))
    back = m.decode(m.encode(msg, 1), PRIMARY).message
    assert isinstance(back, m.Error)
    exc = back.to_exception()
    assert type(exc) is cls
    assert exc.code == cls.code and exc.attack == back.attack
    assert exc.message == "it broke"


def test_error_message_for_foreign_exceptions_and_unknown_codes() -> None:
    msg = m.Error.from_exception(KeyError("x"))
    assert msg.code == UptaneError.code
    assert type(m.Error(code=9999, attack="new", message="?").to_exception()) is UptaneError
    assert m.Error.from_exception(BadHash("h")).known
    assert isinstance(m.Error.from_exception(LinkTimeout()).to_exception(), LinkTimeout)
    assert isinstance(m.Error.from_exception(RollbackAttack()).to_exception(), RollbackAttack)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_decode_raises_only_uptane_errors(data: bytes) -> None:
    with contextlib.suppress(UptaneError):
        m.decode(data, CONSTRAINED)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(EXAMPLES), st.data())
def test_fuzz_mutated_messages_raise_only_uptane_errors(msg: m.Message, data) -> None:
    raw = bytearray(m.encode(msg, 5))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(UptaneError):
        m.decode(bytes(raw[:cut]), PRIMARY)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.integers(0, 9),
        st.none()
        | st.booleans()
        | st.integers(-3, 2**64 - 1)
        | st.binary(max_size=8)
        | st.text(max_size=8)
        | st.lists(st.integers(), max_size=3),
        max_size=9,
    )
)
def test_fuzz_structured_maps_raise_only_uptane_errors(raw: dict) -> None:
    with contextlib.suppress(UptaneError):
        m.decode(cbor.dumps(raw), PRIMARY)
