"""A tiny TLV tool independent of the decoder under test, for building hostile and
non-canonical DER (test_der) and for mutations that keep lengths consistent
(test_fuzz_der). It trusts its input: give it well-formed DER."""

from __future__ import annotations

from typing import Any

Node = list[Any]  # [identifier byte, bytes (primitive) | list[Node] (constructed)]


def der_length(n: int) -> bytes:
    """The DER length octets for ``n`` (short form below 128, else long form)."""
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(ident: int, content: bytes) -> bytes:
    return bytes([ident]) + der_length(len(content)) + content


def parse_tree(data: bytes) -> list[Node]:
    """Well-formed DER as nested [identifier, body] lists."""
    out: list[Node] = []
    pos = 0
    while pos < len(data):
        ident = data[pos]
        first = data[pos + 1]
        if first < 0x80:
            length, start = first, pos + 2
        else:
            k = first & 0x7F
            length, start = int.from_bytes(data[pos + 2 : pos + 2 + k], "big"), pos + 2 + k
        body = data[start : start + length]
        out.append([ident, parse_tree(body) if ident & 0x20 else body])
        pos = start + length
    return out


def dump_tree(nodes: list[Node]) -> bytes:
    """The DER for a tree from :func:`parse_tree`, lengths recomputed."""
    return b"".join(
        tlv(ident, dump_tree(body) if isinstance(body, list) else body) for ident, body in nodes
    )
