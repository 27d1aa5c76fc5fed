"""Bounded CBOR (uptane.encoding.cbor): round trips and hostile input."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uptane.encoding import cbor
from uptane.errors import (
    EndlessDataAttack,
    LimitExceeded,
    MalformedInput,
    NonCanonicalEncoding,
    UptaneError,
)
from uptane.limits import CONSTRAINED, PRIMARY


def _text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(
        st.characters(blacklist_categories=("Cc", "Cs")) | st.sampled_from("\t\n\r"),
        max_size=max_size,
    )


values = st.recursive(
    st.none()
    | st.booleans()
    # the integer and string policy (uptane/policy.py): signed 64-bit integers, text with
    # no control character but tab, LF and CR
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.binary(max_size=64)
    | _text(max_size=32),
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(st.integers(-100, 100) | _text(max_size=8), inner, max_size=6)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_round_trip_is_deterministic(value: object) -> None:
    data = cbor.dumps(value)
    assert cbor.loads(data, PRIMARY) == value
    assert cbor.dumps(cbor.loads(data, PRIMARY)) == data


def test_map_keys_are_sorted_canonically() -> None:
    assert cbor.dumps({10: 1, 2: 2, "a": 3}) == cbor.dumps({"a": 3, 2: 2, 10: 1})


@pytest.mark.parametrize(
    "value", [1.5, float("nan"), object(), {(1, 2): 3}, {True: 1}, 2**64, 2**63, -(2**63) - 1]
)
def test_dumps_refuses_types_outside_the_model(value: object) -> None:
    with pytest.raises(MalformedInput):
        cbor.dumps(value)


def test_over_the_message_cap_is_endless_data() -> None:
    data = cbor.dumps(b"x" * (CONSTRAINED.link_message_bytes + 1))
    with pytest.raises(EndlessDataAttack):
        cbor.loads(data, CONSTRAINED)


def test_deep_nesting_is_refused_before_decoding() -> None:
    data = b"\x81" * 100_000 + b"\x00"
    with pytest.raises(LimitExceeded):
        cbor.loads(data, PRIMARY, cap=len(data))


def test_nesting_at_the_cap_is_accepted() -> None:
    data = b"\x81" * PRIMARY.max_depth + b"\x00"
    cbor.loads(data, PRIMARY)
    with pytest.raises(LimitExceeded):
        cbor.loads(b"\x81" + data, PRIMARY)


@pytest.mark.parametrize(
    "data",
    [
        bytes([0x5B]) + b"\xff" * 8,  # bytes of 2**64-1
        bytes([0x7A]) + b"\x7f\xff\xff\xff" + b"abc",  # text of 2 GiB
        bytes([0x9A]) + b"\x00\x00\x00\xff",  # array of 255, nothing after
        bytes([0xBB]) + b"\x00\x00\x00\x00\x00\x00\x00\x05" + b"\x00" * 9,
    ],
)
def test_huge_declared_lengths_never_allocate(data: bytes) -> None:
    with pytest.raises((MalformedInput, LimitExceeded)):
        cbor.loads(data, PRIMARY)


def test_too_many_items() -> None:
    with pytest.raises(LimitExceeded):
        cbor.loads(cbor.dumps(list(range(300))), PRIMARY)
    with pytest.raises(LimitExceeded):
        cbor.loads(cbor.dumps([[0] * 200] * 200), PRIMARY)


def test_long_text_is_refused() -> None:
    with pytest.raises(LimitExceeded):
        cbor.loads(cbor.dumps("a" * (CONSTRAINED.max_string + 1)), CONSTRAINED)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", MalformedInput),
        (cbor2.dumps({1: 2}) + b"\x00", MalformedInput),  # trailing
        (cbor2.dumps(1.0), MalformedInput),  # float
        (b"\xf7", MalformedInput),  # undefined
        (b"\xf0", MalformedInput),  # simple value
        (b"\xc1\x1a\x00\x00\x00\x01", MalformedInput),  # tag (epoch time)
        (b"\xc2\x41\x01", MalformedInput),  # tag (bignum)
        (b"\x9f\x01\xff", MalformedInput),  # indefinite array
        (b"\x5f\x41\x01\xff", MalformedInput),  # indefinite bytes
        (b"\x1c", MalformedInput),  # reserved additional info
        (b"\x19\x00\x01", NonCanonicalEncoding),  # 1 in a 2-byte head
        (b"\xa2\x02\x00\x01\x00", NonCanonicalEncoding),  # unsorted keys
        (b"\xa2\x01\x00\x01\x00", MalformedInput),  # duplicate keys
        (b"\xa1\x41\x00\x00", MalformedInput),  # bytes as a map key
        (b"\x62\xc3\x28", MalformedInput),  # invalid UTF-8
        (b"\x82\x01", MalformedInput),  # truncated
    ],
)
def test_refused_encodings(data: bytes, error: type[UptaneError]) -> None:
    with pytest.raises(error):
        cbor.loads(data, PRIMARY)


def test_loads_refuses_non_bytes() -> None:
    with pytest.raises(MalformedInput):
        cbor.loads("text", PRIMARY)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_fuzz_loads_raises_only_uptane_errors(data: bytes) -> None:
    with contextlib.suppress(UptaneError):
        cbor.loads(data, CONSTRAINED)


@settings(max_examples=200, deadline=None)
@given(values, st.data())
def test_fuzz_mutated_valid_cbor_raises_only_uptane_errors(value: object, data) -> None:
    raw = bytearray(cbor.dumps(value))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(UptaneError):
        cbor.loads(bytes(raw), PRIMARY)
