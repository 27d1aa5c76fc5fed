"""Standard-DER targets metadata read entry by entry, for a constrained partial-verification
ECU: :mod:`uptane.encoding.der_targets`' walk, for the Uptane modules' encoding
(:mod:`uptane.encoding.uptane_der`).

A partial-verification Secondary (§5.4.4.1) needs the signatures, the signed header
(version, expiry, vehicle id, delegations) and *its own* entry. :func:`walk_uptane_targets`
gives exactly that with one entry alive at a time, as strictly as
:func:`~uptane.encoding.uptane_der.decode_metadata`:

1. the byte cap, then :func:`~uptane.encoding.der.check_structure` over the whole input;
2. the *shell*: the input with ``numberOfTargets`` set to 0 and the contents of its target
   list cut out (every enclosing length rewritten) goes through the full decoder, with the
   SHA-256 of the *input's* signed part standing for its own, so the envelope, every
   signature's method and hash, the signed header, delegations and vehicle id get every
   check and the re-encoding check, and the role must be ``targets``;
3. the input's ``numberOfTargets`` must be the DER of the number of entries, and every
   entry, in order, is read by the schema reader, walked by the JSON path's generic caps
   at its depth in the whole document, built with ``TargetFile.from_dict`` and required to
   re-encode to its own bytes; a path appears at most once, and there are at most
   ``max_targets`` of them.

Steps 2 and 3 together are the whole-document re-encoding check. What is kept: the shell
model (its ``signed.targets`` an :class:`~uptane.encoding.der_targets.Entries` view that
decodes the entries again one at a time), the 32-byte digest the signatures cover
(computed over a view of the input, no copy), and this ECU's entry.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

from asn1crypto import core

from uptane.encoding.der import (
    _bad,
    _convert,
    _der,
    _header,
    _length,
    _matches,
    _read,
    _read_top,
    _why,
    check_structure,
)
from uptane.encoding.der_targets import Entries, TargetsWalk, _children
from uptane.encoding.json import _Walk
from uptane.encoding.uptane_der import (
    MetadataAsn,
    TargetAndCustom,
    _signed_from_asn,
    _sigs_from_asn,
    decode_envelope,
    entry_from_asn,
    entry_to_asn,
)
from uptane.errors import EndlessDataAttack, LimitExceeded, NonCanonicalEncoding, UptaneError
from uptane.limits import Limits
from uptane.metadata import Metadata, TargetFile, Targets

WHAT = "targets DER"
#: identifier octets on the way down: signed [0], body [3] EXPLICIT, targetsMetadata [1],
#: numberOfTargets [0] (primitive), targets [1]
_SIGNED, _BODY, _TARGETS_BODY, _COUNT, _LIST = 0xA0, 0xA3, 0xA1, 0x80, 0xA1


def _entry_shape(data: bytes, start: int, end: int, limits: Limits) -> tuple[str, dict[str, Any]]:
    """The schema reader and conversion for one TargetAndCustom: (path, JSON shape)."""
    return _convert(  # type: ignore[no-any-return]
        lambda: entry_from_asn(_read(TargetAndCustom, data, start, end), limits), WHAT
    )


def _only_child(data: bytes, start: int, end: int) -> int | None:
    """The position of the one TLV in ``data[start:end]``, or None."""
    if start >= end:
        return None
    cstart, clen = _header(data, start)
    return start if cstart + clen == end else None


def _locate(data: bytes) -> tuple[int, ...] | None:
    """Offsets of the signed part (start, end), of the TLVs to rewrite (body, targets body),
    of numberOfTargets (start, end) and of the target list's contents (start, end); None if
    ``data`` (checked by check_structure) does not have the shape of targets metadata."""
    top_start, top_len = _header(data, 0)
    if top_start >= top_start + top_len or data[top_start] != _SIGNED:
        return None
    s_content, s_len = _header(data, top_start)
    s_end = s_content + s_len
    body = next((p for p, _, _ in _children(data, s_content, s_end) if data[p] == _BODY), None)
    if body is None:
        return None
    b_content, b_len = _header(data, body)
    alt = _only_child(data, b_content, b_content + b_len)
    if alt is None or data[alt] != _TARGETS_BODY:
        return None
    t_content, t_len = _header(data, alt)
    kids = list(_children(data, t_content, t_content + t_len))[:2]
    if len(kids) != 2 or data[kids[0][0]] != _COUNT or data[kids[1][0]] != _LIST:
        return None
    (count_pos, _, count_end), (list_pos, l_content, l_end) = kids
    return top_start, s_end, body, alt, count_pos, count_end, list_pos, l_content, l_end


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def _shell(data: bytes, where: tuple[int, ...]) -> bytes:
    """``data`` with numberOfTargets 0 and an empty target list, every enclosing length
    rewritten (minimal, as DER has them)."""
    top_start, s_end, body, alt, _, _, _, _, l_end = where
    t_content, t_len = _header(data, alt)
    targets = b"\x80\x01\x00\xa1\x00" + data[l_end : t_content + t_len]
    b_content, b_len = _header(data, body)
    body_der = _tlv(_BODY, _tlv(_TARGETS_BODY, targets))
    s_content, _ = _header(data, top_start)
    signed = data[s_content:body] + body_der + data[b_content + b_len : s_end]
    top = _tlv(_SIGNED, signed) + data[s_end:]
    return _tlv(0x30, top)


def _shell_items(shell: bytes, limits: Limits) -> int:
    """The JSON-shape item count of the shell's document, as the full decoder builds it."""

    def count() -> int:
        asn = _read_top(MetadataAsn, shell)
        doc = {
            "signed": _signed_from_asn(asn["signed"], limits),
            "signatures": _sigs_from_asn(asn, limits),
        }
        walk = _Walk(limits)
        walk.run(doc)
        return walk.items

    return _convert(count, WHAT)  # type: ignore[no-any-return]


def _require_encodes(fn: Callable[[], bool], what: str) -> None:
    """Refuse unless ``fn()`` (a comparison of the input with a re-encoding) holds."""
    try:
        if not fn():
            raise NonCanonicalEncoding("")
    except NonCanonicalEncoding:
        raise NonCanonicalEncoding(
            f"DER: {what} is not in the canonical form of its value"
        ) from None
    except UptaneError:
        raise
    except Exception as e:
        raise _bad(f"cannot encode {what}: {_why(e)}") from None


def _entry_encodes_to(tf: TargetFile, data: bytes, pos: int, end: int) -> bool:
    """Whether the entry at ``data[pos:end]`` is exactly the DER of ``tf``."""
    return bool(
        _matches(TargetAndCustom, entry_to_asn(tf.path, tf.to_dict()), data, pos, None) == end
    )


def _walk_entries(
    data: bytes, where: tuple[int, ...], items: int, limits: Limits, ecu_id: str
) -> tuple[int, TargetFile | None]:
    """Step 3 of the module doc for every entry; returns their number and this ECU's."""
    _, _, _, _, count_pos, count_end, _, l_start, l_end = where
    count = sum(1 for _ in _children(data, l_start, l_end))
    limits.check_count("targets", count, limits.max_targets)
    count_der = _der(core.Integer, count, {"implicit": 0})
    _require_encodes(lambda: data[count_pos:count_end] == count_der, WHAT)
    max_items = 8 * limits.max_targets + 4096  # check_tree's cap on the whole document
    mine: TargetFile | None = None
    seen: set[str] = set()
    for pos, cstart, cend in _children(data, l_start, l_end):
        if data[pos] != 0x30:
            raise _bad(f"Targets: unexpected element (tag 0x{data[pos]:02x})")
        path, d = _entry_shape(data, cstart, cend, limits)
        if path in seen:
            raise _bad("a target path appears twice")
        seen.add(path)
        # the entry at the depth it has in the whole document: doc > signed > targets > path
        walk = _Walk(limits)
        walk.run({"signed": {"targets": {path: d}}})
        items += walk.items - 2  # the two wrappers above the targets object are not in it
        if items > max_items:
            raise LimitExceeded("too many JSON values")
        limits.check_string("target path", path)
        tf = TargetFile.from_dict(path, d, limits)
        again = functools.partial(_entry_encodes_to, tf, data, pos, cend)
        _require_encodes(again, WHAT)
        if mine is None and ecu_id in tf.ecu_ids:
            mine = tf
    return count, mine


def walk_uptane_targets(
    data: bytes, limits: Limits, ecu_id: str, *, cap: int | None = None
) -> TargetsWalk:
    """Decode standard-DER targets metadata as strictly as ``decode_metadata(...,
    role_type="targets")`` but one entry at a time, keeping only this ECU's entry (see the
    module doc); ``payload`` is the digest the signatures cover."""
    if not isinstance(data, bytes):
        data = bytes(data)
    if cap is None:
        cap = limits.bytes_for_role("targets")
    if len(data) > cap:
        raise EndlessDataAttack(f"{WHAT}: {len(data)} bytes exceeds the {cap}-byte cap")
    check_structure(data, limits, cap)
    where = _locate(data)
    if where is None:
        # not shaped like targets metadata: the full decoder names what is wrong
        decode_envelope(data, limits, role_type="targets", cap=cap)
        raise _bad(f"{WHAT}: not targets metadata")  # pragma: no cover - decode refused it
    top_start, s_end = where[0], where[1]
    digest = hashlib.sha256(memoryview(data)[top_start:s_end]).digest()
    shell = _shell(data, where)
    md: Metadata[Targets] = decode_envelope(
        shell, limits, role_type="targets", cap=cap, digest=digest
    )
    items = _shell_items(shell, limits)
    del shell
    count, mine = _walk_entries(data, where, items, limits, ecu_id)
    l_start, l_end = where[7], where[8]
    md.signed.targets = Entries(data, l_start, l_end, count, limits, _entry_shape)  # type: ignore[assignment]
    return TargetsWalk(md, digest, mine)
