"""TUF canonical JSON (byte-identical to what python-tuf/securesystemslib sign) and a
bounded JSON decoder.

The decoder refuses, with :mod:`uptane.errors` errors and before building big objects:
input over the byte cap, nesting deeper than ``Limits.max_depth``, floats, NaN,
duplicate object keys, over-long strings and invalid UTF-8.
"""

from __future__ import annotations

import json
from typing import Any

from uptane.errors import EndlessDataAttack, LimitExceeded, MalformedInput
from uptane.limits import Limits

JSONValue = Any


def _escape(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _encode(obj: JSONValue, out: list[str]) -> None:
    if isinstance(obj, bool):
        out.append("true" if obj else "false")
    elif obj is None:
        out.append("null")
    elif isinstance(obj, int):
        out.append(str(obj))
    elif isinstance(obj, str):
        out.append(_escape(obj))
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        for i, item in enumerate(obj):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(obj, dict):
        out.append("{")
        for i, key in enumerate(sorted(obj)):
            if not isinstance(key, str):
                raise MalformedInput(f"canonical JSON keys must be strings, not {type(key)}")
            if i:
                out.append(",")
            out.append(_escape(key))
            out.append(":")
            _encode(obj[key], out)
        out.append("}")
    else:
        raise MalformedInput(f"canonical JSON cannot encode {type(obj).__name__}")


def canonical(obj: JSONValue) -> bytes:
    """Encode ``obj`` as TUF canonical JSON (OLPC style: sorted keys, no spaces, ints only)."""
    out: list[str] = []
    _encode(obj, out)
    return "".join(out).encode("utf-8")


def dumps(obj: JSONValue) -> bytes:
    """Compact JSON with sorted keys for *files* (metadata, manifests, state).

    Unlike :func:`canonical` it escapes control characters (PEM newlines), so any strict
    JSON reader (python-tuf, browsers) accepts it. Signatures never cover these bytes: they
    cover :func:`canonical` of the decoded ``signed`` value.
    """
    try:
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as e:
        raise MalformedInput(f"cannot encode as JSON: {e}") from None
    return text.encode("utf-8")


def _no_float(s: str) -> Any:
    raise MalformedInput(f"floating-point number {s[:32]!r} is not allowed in metadata")


def _no_constant(s: str) -> Any:
    raise MalformedInput(f"{s} is not allowed in metadata")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise MalformedInput("duplicate key in JSON object")
    return d


def check_tree(value: JSONValue, limits: Limits) -> None:
    """Walk a decoded JSON tree without recursion, enforcing depth, string and count caps."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    items = 0
    while stack:
        node, depth = stack.pop()
        if depth > limits.max_depth:
            raise LimitExceeded(f"JSON nesting deeper than {limits.max_depth}")
        if isinstance(node, str):
            limits.check_string("JSON string", node)
        elif isinstance(node, dict):
            items += len(node)
            for k, v in node.items():
                limits.check_string("JSON key", k)
                stack.append((v, depth + 1))
        elif isinstance(node, list):
            items += len(node)
            stack.extend((v, depth + 1) for v in node)
        if items > 8 * limits.max_targets + 4096:
            raise LimitExceeded("too many JSON values")


def loads(data: bytes, limits: Limits, *, cap: int | None = None, what: str = "JSON") -> JSONValue:
    """Decode JSON bytes under ``limits``; ``cap`` bounds the byte length (default: the
    largest role cap)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedInput(f"{what}: expected bytes")
    limit = cap if cap is not None else max(limits.role_bytes.values())
    if len(data) > limit:
        raise EndlessDataAttack(f"{what}: {len(data)} bytes exceeds the {limit}-byte cap")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedInput(f"{what}: invalid UTF-8 ({e.reason})") from None
    try:
        value = json.loads(
            text,
            parse_float=_no_float,
            parse_constant=_no_constant,
            object_pairs_hook=_pairs,
            # raw control characters inside strings are accepted: canonical JSON (OLPC, as
            # securesystemslib writes it) leaves PEM newlines unescaped, and signatures are
            # checked over the re-canonicalised value, never over these bytes
            strict=False,
        )
    except RecursionError:
        raise LimitExceeded(f"{what}: nesting too deep") from None
    except MalformedInput:
        raise
    except (ValueError, TypeError) as e:  # JSONDecodeError, int digit cap
        raise MalformedInput(f"{what}: {e}") from None
    check_tree(value, limits)
    return value
