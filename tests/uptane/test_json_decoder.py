"""The bounded JSON decoder's guarantees, on both of its paths.

``loads`` finds duplicate keys without a per-object hook when the input has no escaped
quote (it compares the strings in the tree with the quotes in the input), and with the
hook otherwise; these tests hold it to a plain reference decoder (hooked, recursive) on
hand-written cases and on generated documents.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uptane.encoding.json import (
    _no_long_string,
    _Walk,
    canonical,
    canonical_decoded,
    check_tree,
    loads,
)
from uptane.errors import LimitExceeded, MalformedInput, UptaneError
from uptane.limits import PRIMARY, Limits
from uptane.metadata import Metadata

SMALL = PRIMARY.replace(max_depth=4, max_string=8, max_targets=2)  # items cap 4112
PROPS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def reference(data: bytes, limits: Limits) -> Any:
    """What the decoder must accept: hooked duplicate check, recursive caps."""

    def pairs(p: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in p}) != len(p):
            raise MalformedInput("duplicate")
        return dict(p)

    def bad(s: str) -> Any:
        raise MalformedInput(s)

    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=pairs,
            parse_float=bad,
            parse_constant=bad,
            strict=False,
        )
    except (ValueError, RecursionError) as e:
        raise MalformedInput(str(e)) from None
    items = 0

    def walk(node: Any, depth: int) -> None:
        nonlocal items
        if depth > limits.max_depth:
            raise LimitExceeded("depth")
        if isinstance(node, str) and len(node) > limits.max_string:
            raise LimitExceeded("string")
        if isinstance(node, dict):
            items += len(node)
            for k, v in node.items():
                if len(k) > limits.max_string:
                    raise LimitExceeded("key")
                walk(v, depth + 1)
        elif isinstance(node, list):
            items += len(node)
            for v in node:
                walk(v, depth + 1)

    walk(value, 0)
    if items > 8 * limits.max_targets + 4096:
        raise LimitExceeded("items")
    _policy(value)
    return value


def _policy(node: Any) -> None:
    """The integer and string policy (uptane/policy.py), spelled out: int64 integers, no
    control character but tab, LF and CR, no lone surrogate, in any string or key."""
    if isinstance(node, bool):
        return
    if isinstance(node, int) and not -(2**63) <= node < 2**63:
        raise MalformedInput("integer")
    for s in [node] if isinstance(node, str) else list(node) if isinstance(node, dict) else []:
        if any((ord(c) < 32 and c not in "\t\n\r") or 0x7F <= ord(c) <= 0x9F for c in s):
            raise MalformedInput("control")
        if any(0xD800 <= ord(c) <= 0xDFFF for c in s):
            raise MalformedInput("surrogate")
    for child in (
        node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    ):
        _policy(child)


@pytest.mark.parametrize(
    "doc",
    [
        b'{"a":1,"a":2}',  # no escape at all: the quote count
        b'{"a":{"x":"y"},"a":2}',  # the dropped value holds strings too
        b'{"k":[{"a":1,"b":2,"a":3}]}',  # nested
        b'{"a":1,"\\u0061":2}',  # equal once decoded
        b'{"q":"\\u0022","a":1,"a":2}',  # a quote made by \\u, not by \\"
        b'{"q":"say \\"hi\\"","a":1,"a":2}',  # an escaped quote: the hooked path
        b'{"a\\\\":1,"a\\\\":2}',  # ends in an escaped backslash: the hooked path
        b'[{"a":null,"a":null}]',
        b'{"":1,"":1}',
    ],
)
def test_duplicate_keys_are_refused_on_both_paths(doc: bytes) -> None:
    with pytest.raises(MalformedInput, match="duplicate"):
        loads(doc, PRIMARY)


@pytest.mark.parametrize(
    "doc",
    [b'{"a":"\\"","b":"\\"\\\\"}', b'{"a\\u0062":1,"ab\\n":2}', b'"x"', b"7", b"[]", b"{}"],
)
def test_distinct_keys_and_escapes_are_accepted(doc: bytes) -> None:
    assert loads(doc, PRIMARY) == json.loads(doc)


def test_depth_string_and_item_caps_at_their_edges() -> None:
    limits = PRIMARY.replace(max_depth=3, max_string=4)
    assert loads(b"[[[[]]]]", limits) == [[[[]]]]  # innermost at depth 3
    with pytest.raises(LimitExceeded):
        loads(b"[[[[1]]]]", limits)  # the 1 is at depth 4
    with pytest.raises(LimitExceeded):
        loads(b'{"a":{"b":{"c":{"d":1}}}}', limits)
    assert loads(b'{"abcd":"wxyz"}', limits) == {"abcd": "wxyz"}
    for doc in (b'{"abcde":1}', b'{"a":"vwxyz"}', b'["vwxyz"]', b'"vwxyz"'):
        with pytest.raises(LimitExceeded):
            loads(doc, limits)
    few = PRIMARY.replace(max_targets=0)  # at most 4096 items
    assert len(loads(b"[" + b",".join([b"1"] * 4096) + b"]", few)) == 4096
    with pytest.raises(LimitExceeded):
        loads(b"[" + b",".join([b"1"] * 4097) + b"]", few)
    with pytest.raises(LimitExceeded):
        check_tree({"k": [0] * 4097}, few)


def test_a_depth_cap_near_the_interpreters_own_is_still_a_limit() -> None:
    deep = PRIMARY.replace(max_depth=100_000)
    with pytest.raises(LimitExceeded):
        loads(b"[" * 5000 + b"]" * 5000, deep, cap=10**6)


def test_lone_surrogate_is_malformed_not_a_unicode_error() -> None:
    signed = b'{"_type":"timestamp","expires":"2030-01-01T00:00:00Z","spec_version":"1.0.0",'
    signed += b'"version":1,"meta":{"snapshot.json":{"version":1}},"x":"\\ud800"}'
    with pytest.raises(UptaneError):
        Metadata.from_json(b'{"signatures":[],"signed":' + signed + b"}", PRIMARY)
    with pytest.raises(MalformedInput):
        canonical_decoded(json.loads(b'"\\ud800"'))


# --- generated documents ----------------------------------------------------------------------

keys = st.text(alphabet='ab"\\\x01é', max_size=3)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text('xy"\\\n\x00:', max_size=10)
)


def _obj(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(json.dumps(k) + ":" + v for k, v in pairs) + "}"


json_texts = st.recursive(
    scalars.map(json.dumps),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(keys, inner), max_size=4).map(_obj),  # keys may repeat
    ),
    max_leaves=16,
)


@PROPS
@given(text=json_texts)
def test_loads_agrees_with_the_reference_decoder(text: str) -> None:
    # json.dumps writes "é" as \u00e9, so keys equal only once decoded are generated too
    data = text.encode("utf-8")
    for limits in (PRIMARY, SMALL):
        try:
            want: Any = reference(data, limits)
        except UptaneError as e:
            want = type(e)
        try:
            got: Any = loads(data, limits)
        except UptaneError as e:
            got = type(e)
        assert got == want


@PROPS
@given(text=json_texts)
def test_canonical_decoded_is_canonical(text: str) -> None:
    try:
        value = loads(text.encode("utf-8"), PRIMARY)
    except UptaneError:
        return
    assert canonical_decoded(value) == canonical(value)


# --- the string-length pre-check (no escaped quote: one regex over the input, no length
# check per string in the walk) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "ok"),
    [
        (b'{"abcd":"wxyz"}', True),  # at the cap
        (b'{"abcde":1}', False),  # a key over it
        (b'{"a":"vwxyz"}', False),  # a value over it
        (b'["vwxyz"]', False),
        (b'"vwxyz"', False),  # the whole document
        (b'{"a":[1,{"b":["ok","vwxyz"]}]}', False),  # deep inside
        ('{"a":"éééé"}'.encode(), True),  # 8 bytes, 4 characters: a "maybe" that passes
        ('{"a":"ééééé"}'.encode(), False),
        (b'{"a":"\\n\\n\\n\\n"}', True),  # escapes shrink: 8 bytes, 4 characters
        (b'{"a":"\\u0041\\u0042\\u0043\\u0044"}', True),
        (b'{"a":"\\u0041\\u0042\\u0043\\u0044\\u0045"}', False),
        (b'{"a" :  1234567890123456789, "b":1}', True),  # a long run outside strings
    ],
)
def test_string_cap_on_the_unhooked_path(doc: bytes, ok: bool) -> None:
    limits = PRIMARY.replace(max_string=4)
    assert b'\\"' not in doc
    if ok:
        assert loads(doc, limits) == json.loads(doc)
    else:
        with pytest.raises(LimitExceeded, match="exceeds the cap of 4"):
            loads(doc, limits)


def test_no_long_string_is_exact_on_bytes() -> None:
    for cap in (1, 4, 4096):  # (the "]" after the closing quote is a run of 1)
        for n in (0, cap, cap + 1):
            doc = b'["' + b"x" * n + b'"]'
            assert _no_long_string(doc, cap) is (n <= cap)


@PROPS
@given(text=json_texts)
def test_both_walks_count_and_refuse_alike(text: str) -> None:
    """Over trees with no string longer than the cap, the walk without length checks
    counts the same and raises the same error as the full one."""
    try:
        value = json.loads(text, strict=False)
    except ValueError:
        return
    for limits in (PRIMARY, SMALL, PRIMARY.replace(max_depth=1), PRIMARY.replace(max_depth=0)):
        short = limits.replace(max_string=10**6)
        full, fast = _Walk(short), _Walk(short)
        outcome = []
        for walk, run in ((full, full.run), (fast, fast.run_short_strings)):
            try:
                run(value)
                outcome.append((walk.items, walk.strings))
            except UptaneError as e:
                outcome.append((type(e), str(e)))
        assert outcome[0] == outcome[1]


def test_a_duplicate_key_is_named_before_a_cap_as_with_an_escaped_quote() -> None:
    # found by test_loads_agrees_with_the_reference_decoder: without an escaped quote the
    # duplicate count ran after the walk, so a long string was named instead
    for doc in (b'{"a":"123456789","b":null,"b":null}', b'{"a":"x\\"123456789","b":1,"b":1}'):
        with pytest.raises(MalformedInput, match="duplicate key") as e:
            loads(doc, SMALL)
        assert not isinstance(e.value, LimitExceeded)
    with pytest.raises(LimitExceeded):
        loads(b'{"a":"123456789","b":null}', SMALL)
    with pytest.raises(LimitExceeded):
        loads(b'{"b":[[[[[1]]]]],"c":2}', SMALL)
