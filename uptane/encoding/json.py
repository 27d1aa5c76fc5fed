"""TUF canonical JSON (byte-identical to what python-tuf/securesystemslib sign) and a
bounded JSON decoder.

The decoder refuses, with :mod:`uptane.errors` errors and before building big objects:
input over the byte cap, nesting deeper than ``Limits.max_depth``, floats, NaN,
duplicate object keys, over-long strings and invalid UTF-8; and what the integer and
string policy (:mod:`uptane.policy`) refuses in any document: an integer outside the
signed 64-bit range, a string holding NUL or another control character (tab, LF and CR
excepted) or a lone surrogate.
"""

from __future__ import annotations

import json
import re
from typing import Any

from uptane.errors import EndlessDataAttack, LimitExceeded, MalformedInput
from uptane.limits import Limits
from uptane.policy import INT64_MAX, INT64_MIN, check_document_string, is_int64

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
    return _utf8("".join(out))


#: json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False), with the
#: encoder built once (dumps builds one per call with these options)
_C_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def canonical_decoded(value: JSONValue) -> bytes:
    """:func:`canonical` of a tree that :func:`loads` returned (only dict with str keys,
    list, str, int, bool and None; no floats), at C speed.

    For such a tree the standard library's compact, sorted, non-ASCII-preserving encoding
    differs from canonical JSON only in how it writes control characters inside strings
    (escaped there, raw in canonical JSON), and it writes those with a backslash. So an
    output with no backslash at all is the canonical form; anything else (PEM keys with
    newlines, escaped quotes) goes through :func:`canonical`. Never call this on a value
    that did not come from :func:`loads`: floats or non-string keys would not be refused.
    """
    try:
        text = _C_CANONICAL(value)
    except (TypeError, ValueError):
        return canonical(value)
    if "\\" in text:
        return canonical(value)
    return _utf8(text)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON's \ud800 escape can make
        raise MalformedInput("canonical JSON cannot encode a lone surrogate") from None


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
    """Walk a decoded JSON tree, enforcing depth, string and count caps."""
    _Walk(limits).run(value)


class _Walk:
    """One pass over a decoded JSON tree, level by level (no recursion): nesting depth,
    every string's length (keys and values) and the total item count. It also counts the
    strings, which is how :func:`loads` tells that no object lost a duplicate key."""

    __slots__ = ("items", "max_depth", "max_items", "max_string", "strings")

    def __init__(self, limits: Limits) -> None:
        self.max_depth = limits.max_depth
        self.max_string = limits.max_string
        self.max_items = 8 * limits.max_targets + 4096
        self.items = 0
        self.strings = 0

    def run(self, value: JSONValue) -> None:
        max_depth, max_string, max_items = self.max_depth, self.max_string, self.max_items
        items = strings = depth = 0
        level = [value]
        while level:
            below: list[Any] = []
            add = below.append
            for node in level:
                t = type(node)
                if t is str or (t is not dict and t is not list and isinstance(node, str)):
                    if len(node) > max_string:
                        _too_long("JSON string", node, max_string)
                    strings += 1
                    continue
                if t is dict or isinstance(node, dict):
                    if node and max(map(len, node)) > max_string:
                        for k in node:
                            if len(k) > max_string:
                                _too_long("JSON key", k, max_string)
                    strings += len(node)
                    values = node.values()
                elif t is list or isinstance(node, list):
                    values = node
                else:
                    continue
                # the children of a value at depth d are at depth d + 1
                if node and depth >= max_depth:
                    raise LimitExceeded(f"JSON nesting deeper than {max_depth}")
                items += len(node)
                if items > max_items:
                    raise LimitExceeded("too many JSON values")
                for v in values:
                    t = type(v)
                    if t is str:
                        if len(v) > max_string:
                            _too_long("JSON string", v, max_string)
                        strings += 1
                    elif t is int:
                        if not _INT64_MIN <= v <= _INT64_MAX:
                            _out_of_range(v)
                    elif t is bool or v is None:
                        pass
                    else:  # containers, and subclasses of str (never from json.loads)
                        add(v)
            level = below
            depth += 1
        self.items, self.strings = items, strings

    def run_short_strings(self, value: JSONValue) -> None:
        """:meth:`run` for a tree that ``json.loads`` made without hooks (only dict, list,
        str, int, bool and None) from input shown to hold no string longer than
        ``max_string`` (:func:`_no_long_string`): the same depth and item checks, in the
        same order, and the same counts, without a length check per string."""
        max_depth, max_items = self.max_depth, self.max_items
        items = strings = depth = 0
        t = type(value)
        level = [value] if t is dict or t is list else []
        if t is str:
            strings = 1
        while level:
            below: list[Any] = []
            add = below.append
            for node in level:
                if type(node) is dict:
                    strings += len(node)
                    values = node.values()
                else:
                    values = node
                # the children of a value at depth d are at depth d + 1
                if node and depth >= max_depth:
                    raise LimitExceeded(f"JSON nesting deeper than {max_depth}")
                items += len(node)
                if items > max_items:
                    raise LimitExceeded("too many JSON values")
                for v in values:
                    t = type(v)
                    if t is str:
                        strings += 1
                    elif t is dict or t is list:
                        add(v)
                    elif t is int and not _INT64_MIN <= v <= _INT64_MAX:
                        _out_of_range(v)
            level = below
            depth += 1
        self.items, self.strings = items, strings


#: by ``max_string``: a quote byte followed by more than ``max_string`` bytes that are not
#: quotes (see :func:`_no_long_string`)
_LONG_RUNS: dict[int, re.Pattern[bytes]] = {}


def _no_long_string(raw: bytes, max_string: int) -> bool:
    """True when no string in ``raw`` can be longer than ``max_string`` characters, for an
    input with no escaped quote (``\\"``). There every ``"`` byte delimits a string, so a
    string's content is the run of non-quote bytes after its opening quote, and it decodes
    to at most as many characters as it has bytes (an escape or a multi-byte UTF-8
    character only shrinks). So if no quote is followed by more than ``max_string``
    non-quote bytes, no string is too long. False says only "maybe": walk with the checks."""
    pattern = _LONG_RUNS.get(max_string)
    if pattern is None:
        if len(_LONG_RUNS) > 16:
            _LONG_RUNS.clear()
        pattern = _LONG_RUNS[max_string] = re.compile(b'"[^"]{%d}' % (max_string + 1))
    return pattern.search(raw) is None


#: every integer of a document is a signed 64-bit value (uptane/policy.py); the walks check
#: each one (a comparison per integer: about 2 ms for 40,000 integers)
_INT64_MIN, _INT64_MAX = INT64_MIN, INT64_MAX


class _OutOfRange(MalformedInput):
    """An integer outside int64 found by a walk; :func:`loads` names where it is."""


def _out_of_range(value: int) -> None:
    raise _OutOfRange(f"a {value.bit_length()}-bit integer is outside int64")


def _too_long(what: str, value: str, cap: int) -> None:
    raise LimitExceeded(f"{what}: length {len(value)} exceeds the cap of {cap}")


#: the raw bytes a string may not hold (uptane/policy.py): NUL and the C0 controls but tab,
#: LF and CR, and DEL (outside strings JSON allows only tab, LF, CR and space)
_CONTROL_BYTES = bytes(range(0x09)) + b"\x0b\x0c" + bytes(range(0x0E, 0x20)) + b"\x7f"
#: a C1 control in UTF-8, an escaped control or an escaped surrogate
_SUSPECT_ESCAPE = re.compile(rb"\xc2[\x80-\x9f]|\\u00[0189]|\\u007[fF]|\\u[dD][89a-fA-F]")


def _suspect_strings(raw: bytes) -> bool:
    """Whether a string of ``raw`` may break the string policy: True sends the tree
    through :func:`_check_policy`. Measured on a 3.6 MB targets file: one regular
    expression over the input for all of this took 190 ms (the decode itself 160 ms);
    ``bytes.translate`` and two substring searches take about 5 ms."""
    if len(raw.translate(None, _CONTROL_BYTES)) != len(raw):
        return True
    if b"\xc2" in raw or b"\\u" in raw:
        return _SUSPECT_ESCAPE.search(raw) is not None
    return False


def _check_policy(value: JSONValue, what: str) -> None:
    """Every integer of the tree is a signed 64-bit value and no string (key or value)
    breaks :func:`uptane.policy.check_document_string`; the error names where (one pass,
    no recursion; the tree was bounded by the walk)."""
    todo: list[tuple[Any, str]] = [(value, "")]
    while todo:
        node, at = todo.pop()
        t = type(node)
        if t is str:
            check_document_string(node, f"{what} {at or '(top)'}")
        elif t is int:
            if not is_int64(node):
                bits = node.bit_length()
                raise MalformedInput(f"{what} {at}: a {bits}-bit integer is outside int64")
        elif t is dict:
            for k, v in node.items():
                check_document_string(k, f"{what} key in {at or '(top)'}")
                todo.append((v, f"{at}.{k[:40]}" if at else k[:40]))
        elif t is list:
            todo.extend((v, f"{at}[{i}]") for i, v in enumerate(node))


def _has_duplicate_key(text: str) -> bool:
    """Whether an object of ``text``, which :func:`loads` parsed, repeats a key (the hooked
    parse: only on the path of an input already refused)."""
    try:
        json.loads(text, object_pairs_hook=_pairs, strict=False)
    except MalformedInput:
        return True
    except (RecursionError, ValueError):  # pragma: no cover - it parsed once already
        return False
    return False


def loads(data: bytes, limits: Limits, *, cap: int | None = None, what: str = "JSON") -> JSONValue:
    """Decode JSON bytes under ``limits``; ``cap`` bounds the byte length (default: the
    largest role cap).

    Duplicate keys are found without a Python hook on every object when the input holds
    no escaped quote (``\\"``): then every ``"`` byte delimits a string, so the input has
    exactly two per string it spells out, and an object that kept only the last of two
    equal keys has fewer strings in the tree than the input spelled out. Inputs with an
    escaped quote take the hooked decoder, which refuses a duplicate in each object.
    The same property bounds every string's length by one regular-expression search over
    the input (:func:`_no_long_string`); when it cannot, the walk checks each string.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedInput(f"{what}: expected bytes")
    limit = cap if cap is not None else max(limits.role_bytes.values())
    if len(data) > limit:
        raise EndlessDataAttack(f"{what}: {len(data)} bytes exceeds the {limit}-byte cap")
    raw = bytes(data)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedInput(f"{what}: invalid UTF-8 ({e.reason})") from None
    hooked = b'\\"' in raw
    try:
        value = json.loads(
            text,
            parse_float=_no_float,
            parse_constant=_no_constant,
            object_pairs_hook=_pairs if hooked else None,
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
    walk = _Walk(limits)
    try:
        if not hooked and _no_long_string(raw, limits.max_string):
            walk.run_short_strings(value)
        else:
            walk.run(value)
    except _OutOfRange:
        _check_policy(value, what)  # names the field (the slow path, only on the way out)
        raise
    except LimitExceeded:
        # the hooked decoder refuses a duplicate key while it parses, before any cap is
        # checked; the count below needs the whole walk, so ask the hooked parse here
        if not hooked and _has_duplicate_key(text):
            raise MalformedInput(f"{what}: duplicate key in JSON object") from None
        raise
    if not hooked and raw.count(b'"') != 2 * walk.strings:
        raise MalformedInput(f"{what}: duplicate key in JSON object")
    if type(value) is int and not is_int64(value):
        _out_of_range(value)
    if _suspect_strings(raw):
        _check_policy(value, what)
    return value
