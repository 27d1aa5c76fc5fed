"""Bounded, deterministic CBOR for link messages (Primary/bench <-> Secondary).

:func:`dumps` writes canonical CBOR (RFC 8949 §4.2.1 core deterministic encoding, through
cbor2) of a small data model: ``None``, ``bool``, signed 64-bit ``int``, ``bytes``, ``str``,
``list``/``tuple`` and ``dict`` with ``int`` or ``str`` keys.

:func:`loads` accepts exactly that model and nothing else. Before cbor2 sees a byte, an
iterative pre-scan walks the header structure and refuses, with :mod:`uptane.errors`:

- input over ``Limits.link_message_bytes`` (or ``cap``): :class:`EndlessDataAttack`;
- nesting deeper than ``Limits.max_depth``, a container over ``max_items`` entries, more
  than ``max_total`` items in all, a text string over ``Limits.max_string`` bytes:
  :class:`LimitExceeded`;
- a declared length longer than the bytes that are left, truncation, trailing bytes, tags,
  floats, ``undefined``, other simple values, indefinite lengths, map keys that are not
  ints or text; and what the integer and string policy (:mod:`uptane.policy`) refuses: an
  integer outside the signed 64-bit range, text holding NUL or another control character
  (tab, LF and CR excepted): :class:`MalformedInput`;
- non-shortest heads, unsorted or duplicate map keys: :class:`NonCanonicalEncoding`.

So a hostile declared length never allocates, and no cbor2 or built-in exception escapes.
"""

from __future__ import annotations

import re
from typing import Any

import cbor2

from uptane.errors import EndlessDataAttack, LimitExceeded, MalformedInput, NonCanonicalEncoding
from uptane.limits import Limits
from uptane.policy import INT64_MAX, INT64_MIN

CBORValue = Any

_INT_MIN = INT64_MIN
_INT_MAX = INT64_MAX
#: the control characters :func:`uptane.policy.check_document_string` refuses, as UTF-8
#: bytes (C0 but tab, LF, CR; DEL; C1); strict UTF-8 decoding refuses surrogates
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\xc2[\x80-\x9f]")

# major types
_UINT, _NINT, _BYTES, _TEXT, _ARRAY, _MAP, _TAG, _SIMPLE = range(8)
_ALLOWED_SIMPLE = {20, 21, 22}  # false, true, null
_SIMPLE_NAMES = {23: "undefined", 24: "simple value", 25: "float", 26: "float", 27: "float"}


def _check_encodable(obj: CBORValue, limits: Limits | None) -> None:
    stack: list[tuple[Any, int]] = [(obj, 0)]
    max_depth = limits.max_depth if limits is not None else 64
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise LimitExceeded(f"CBOR: nesting deeper than {max_depth}")
        if node is None or isinstance(node, (bool, str, bytes)):
            continue
        if isinstance(node, int):
            if not _INT_MIN <= node <= _INT_MAX:
                raise MalformedInput("CBOR: integer outside the signed 64-bit range")
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, dict):
            for k, v in node.items():
                if isinstance(k, bool) or not isinstance(k, (int, str)):
                    raise MalformedInput(f"CBOR: map key of type {type(k).__name__}")
                stack.append((k, depth + 1))
                stack.append((v, depth + 1))
        else:
            raise MalformedInput(f"CBOR: cannot encode {type(node).__name__}")


def dumps(obj: CBORValue) -> bytes:
    """Encode ``obj`` as deterministic CBOR; refuses types outside the link data model."""
    _check_encodable(obj, None)
    try:
        return cbor2.dumps(obj, canonical=True)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError) as e:  # pragma: no cover
        raise MalformedInput(f"CBOR: cannot encode: {e}") from None


def _head(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """Read one item head at ``pos``: (major, additional info, argument, new pos)."""
    n = len(data)
    if pos >= n:
        raise MalformedInput("CBOR: truncated (expected another item)")
    ib = data[pos]
    major, ai = ib >> 5, ib & 0x1F
    pos += 1
    if ai < 24:
        return major, ai, ai, pos
    if ai == 31:
        raise MalformedInput("CBOR: indefinite-length items are not allowed")
    if ai > 27:
        raise MalformedInput(f"CBOR: reserved additional information {ai}")
    size = 1 << (ai - 24)  # 1, 2, 4, 8
    if pos + size > n:
        raise MalformedInput("CBOR: truncated item head")
    arg = int.from_bytes(data[pos : pos + size], "big")
    if major != _SIMPLE:
        shortest = 24 if arg < 256 else 25 if arg < 65536 else 26 if arg < 2**32 else 27
        if arg < 24 or ai != shortest:
            raise NonCanonicalEncoding("CBOR: item head is not in its shortest form")
    return major, ai, arg, pos + size


def scan(
    data: bytes,
    limits: Limits,
    *,
    max_items: int | None = None,
    max_total: int | None = None,
) -> None:
    """Walk the item heads of ``data`` without decoding, enforcing every structural cap.

    ``max_items`` bounds one array or map (default ``Limits.max_custom_items``), ``max_total``
    all items together (default ``16 * max_items``).
    """
    per_container = limits.max_custom_items if max_items is None else max_items
    total_cap = 16 * per_container if max_total is None else max_total
    n = len(data)
    pos = 0
    total = 0
    # each entry: [items still to read, is a map]; the bottom one is the top-level item
    stack: list[list[Any]] = [[1, False]]
    while stack:
        top = stack[-1]
        if top[0] == 0:
            stack.pop()
            continue
        is_key = top[1] and top[0] % 2 == 0
        top[0] -= 1
        major, ai, arg, pos = _head(data, pos)
        total += 1
        if total > total_cap:
            raise LimitExceeded(f"CBOR: more than {total_cap} items")
        if is_key and major not in (_UINT, _NINT, _TEXT):
            raise MalformedInput("CBOR: map keys must be integers or text")
        if major in (_UINT, _NINT):
            if arg > _INT_MAX:  # uptane/policy.py: signed 64-bit integers only
                raise MalformedInput("CBOR: integer outside the signed 64-bit range")
            continue
        if major in (_BYTES, _TEXT):
            if arg > n - pos:
                raise MalformedInput(f"CBOR: string of {arg} bytes, only {n - pos} left")
            if major == _TEXT:
                if arg > limits.max_string:
                    raise LimitExceeded(f"CBOR: text of {arg} bytes exceeds {limits.max_string}")
                if _CONTROL_BYTES.search(data, pos, pos + arg) is not None:
                    raise MalformedInput("CBOR: text holds a control character")
            pos += arg
            continue
        if major in (_ARRAY, _MAP):
            count = arg * 2 if major == _MAP else arg
            if arg > per_container:
                raise LimitExceeded(f"CBOR: container of {arg} entries exceeds {per_container}")
            if count > n - pos:
                raise MalformedInput(f"CBOR: container of {arg} entries, only {n - pos} bytes left")
            if count:
                if len(stack) > limits.max_depth:
                    raise LimitExceeded(f"CBOR: nesting deeper than {limits.max_depth}")
                stack.append([count, major == _MAP])
            continue
        if major == _TAG:
            raise MalformedInput(f"CBOR: tag {arg} is not allowed")
        if ai not in _ALLOWED_SIMPLE:
            what = _SIMPLE_NAMES.get(ai, f"simple value {ai}")
            raise MalformedInput(f"CBOR: {what} is not allowed")
    if pos != n:
        raise MalformedInput(f"CBOR: {n - pos} trailing bytes")


def loads(
    data: bytes | bytearray | memoryview,
    limits: Limits,
    *,
    cap: int | None = None,
    max_items: int | None = None,
    max_total: int | None = None,
) -> CBORValue:
    """Decode one canonical CBOR item from ``data`` under ``limits``.

    ``cap`` bounds the byte length (default ``Limits.link_message_bytes``). See the module
    docstring for everything that is refused.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedInput("CBOR: expected bytes")
    limit = limits.link_message_bytes if cap is None else cap
    if len(data) > limit:
        raise EndlessDataAttack(f"CBOR: {len(data)} bytes exceeds the {limit}-byte cap")
    raw = bytes(data)
    scan(raw, limits, max_items=max_items, max_total=max_total)
    try:
        value = cbor2.loads(
            raw,
            max_depth=limits.max_depth + 2,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, UnicodeError) as e:
        raise MalformedInput(f"CBOR: {e}") from None
    except (RecursionError, MemoryError):  # pragma: no cover - the scan bounds both
        raise LimitExceeded("CBOR: input too complex") from None
    if dumps(value) != raw:
        raise NonCanonicalEncoding("CBOR: map keys are not in canonical order")
    return value
