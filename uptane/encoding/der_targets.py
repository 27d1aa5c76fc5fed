"""DER targets metadata read entry by entry, for a constrained partial-verification ECU.

:func:`uptane.encoding.der.decode_metadata` builds the whole model: for a 16 KiB Director
targets file that is 32 :class:`~uptane.metadata.TargetFile` objects plus the JSON-shaped
tree they are built from, about 100 KiB at its peak. A partial-verification Secondary
(§5.4.4.1) needs only the signatures, the signed header (version, expiry, vehicle id,
delegations) and *its own* entry. :func:`walk_targets` gives exactly that, one entry alive
at a time, and is exactly as strict as ``decode_metadata`` about what it accepts:

1. the byte cap, then :func:`~uptane.encoding.der.check_structure` over the whole input
   (the same strict TLV walk: minimal lengths, no BER, no trailing bytes, depth and counts);
2. the *shell*: the input with the contents of its target list cut out (the enclosing
   lengths rewritten) goes through ``decode_metadata`` itself, so the envelope, the
   signatures, the signed header, delegations and vehicle id get every check and the
   re-encoding check of the full decoder, and the role must be ``targets``;
3. every entry of the list, in order, is read by der.py's own per-entry reader and
   conversion (``_read(TargetAndCustom)``, ``_target_from_asn``), walked by the JSON path's
   generic caps at the depth it has in the whole document (``_Walk``: depth, every string,
   and the item count, summed with the shell's so the total cap is the whole document's),
   built with ``TargetFile.from_dict`` and required to re-encode to its own bytes
   (``_matches``); paths must be strictly increasing (the encoder sorts them; an equal
   path is a duplicate), and there are at most ``max_targets`` of them.

Steps 2 and 3 together are the whole-document re-encoding check: the input is one
SEQUENCE whose DER is its header (minimal, step 1) followed by its children's DER, so it
re-encodes to itself exactly when the shell does and every entry does, in sorted order.
``tests/uptane/test_der_targets.py`` checks the equivalence with ``decode_metadata`` on
valid files and on mutated ones.

Nothing is kept but the result: :class:`TargetsWalk` holds the shell model, the signed
span (a ``memoryview`` into the input, no copy) and this ECU's entry. Its
``metadata.signed.targets`` is an :class:`Entries` view that decodes the entries again one
at a time when iterated, so :func:`uptane.trust.check_director_targets` runs unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from uptane.encoding.der import (
    MetadataAsn,
    TargetAndCustom,
    _bad,
    _convert,
    _get_unrec,
    _header,
    _length,
    _matches,
    _read,
    _read_top,
    _signed_from_asn,
    _sigs_from_asn,
    _target_from_asn,
    _target_to_asn,
    _why,
    check_structure,
    decode_metadata,
)
from uptane.encoding.json import _Walk
from uptane.errors import EndlessDataAttack, LimitExceeded, NonCanonicalEncoding, UptaneError
from uptane.limits import Limits
from uptane.metadata import Metadata, TargetFile, Targets

WHAT = "targets DER"
#: one entry of a target list as (path, JSON shape): data, content start, end, limits
EntryShape = Callable[[bytes, int, int, Limits], tuple[str, dict[str, Any]]]
#: identifier octets: SEQUENCE, and the targets alternative of the signed body ([1], constructed)
_SEQ, _TARGETS_BODY = 0x30, 0xA1
#: the other alternatives of the signed body (root, snapshot, timestamp)
_OTHER_BODIES = (0xA0, 0xA2, 0xA3)


@dataclass
class TargetsWalk:
    """What a partial-verification ECU keeps of a DER targets file it walked.

    ``metadata``: the envelope (signatures, signed header, delegations, vehicle id) whose
    ``signed.targets`` is an :class:`Entries` view over the input; ``payload``: the bytes
    the signatures cover (a view into the input); ``mine``: the first entry that names
    ``ecu_id`` (None if none does).
    """

    metadata: Metadata[Targets]
    payload: bytes | memoryview
    mine: TargetFile | None

    def floor(self) -> Metadata[Targets]:
        """The rollback floor to keep after verification: version, expiry, spec version,
        vehicle id and this ECU's entry only; no signatures and no signed bytes, so it can
        never be mistaken for verifiable metadata."""
        s = self.metadata.signed
        mine = self.mine
        pruned = Targets(
            version=s.version,
            expires=s.expires,
            spec_version=s.spec_version,
            targets={} if mine is None else {mine.path: mine},
            vehicle_id=s.vehicle_id,
        )
        return Metadata(pruned, [], self.metadata.encoding, None, {})


class Entries(Mapping[str, TargetFile]):
    """path -> :class:`TargetFile` over the target list of walked DER bytes, decoded one
    entry at a time whenever it is iterated (nothing is cached). Only for bytes that
    :func:`walk_targets` accepted."""

    def __init__(
        self,
        data: bytes,
        start: int,
        end: int,
        count: int,
        limits: Limits,
        shape: EntryShape | None = None,
    ) -> None:
        self._data, self._start, self._end, self._count = data, start, end, count
        self._limits = limits
        self._shape = shape or _entry_shape

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[str]:
        return (path for path, _ in self._walk())

    def __getitem__(self, path: str) -> TargetFile:
        for p, tf in self._walk():
            if p == path:
                return tf
        raise KeyError(path)

    def items(self) -> Any:
        """(path, TargetFile) pairs, one decoded at a time (a generator, not a view)."""
        return self._walk()

    def values(self) -> Any:
        return (tf for _, tf in self._walk())

    def _walk(self) -> Iterator[tuple[str, TargetFile]]:
        for _, cstart, cend in _children(self._data, self._start, self._end):
            path, d = self._shape(self._data, cstart, cend, self._limits)
            yield path, TargetFile.from_dict(path, d, self._limits)


def _children(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(position, content start, content end) of each TLV in ``data[start:end]``, which
    :func:`check_structure` has checked."""
    pos = start
    while pos < end:
        cstart, clen = _header(data, pos)
        yield pos, cstart, cstart + clen
        pos = cstart + clen


def _entry_shape(data: bytes, start: int, end: int, limits: Limits) -> tuple[str, dict[str, Any]]:
    """der.py's reader and conversion for one TargetAndCustom: (path, JSON shape)."""
    return _convert(  # type: ignore[no-any-return]
        lambda: _target_from_asn(_read(TargetAndCustom, data, start, end), limits), WHAT
    )


def _locate(data: bytes) -> tuple[int, int, int, int, int, int, int] | None:
    """Offsets of the signed part (start, content start, end), of the targets body (start,
    end) and of the target list's contents (start, end), or None if ``data`` (checked by
    :func:`check_structure`) does not have the shape of targets metadata."""
    top_start, top_len = _header(data, 0)
    top_end = top_start + top_len
    if top_start >= top_end or data[top_start] != _SEQ:
        return None
    s_content, s_len = _header(data, top_start)
    s_end = s_content + s_len
    for pos, b_content, b_end in _children(data, s_content, s_end):
        tag = data[pos]
        if tag in _OTHER_BODIES:
            return None
        if tag != _TARGETS_BODY:
            continue
        if b_content >= b_end or data[b_content] != _SEQ:
            return None
        l_content, l_len = _header(data, b_content)
        return top_start, s_content, s_end, pos, b_end, l_content, l_content + l_len
    return None


def _shell(data: bytes, where: tuple[int, int, int, int, int, int, int]) -> bytes:
    """``data`` with the contents of its target list cut out, every enclosing length
    rewritten (minimal, as DER has them)."""
    _, s_content, s_end, b_start, b_end, _, l_end = where
    body = b"\x30\x00" + data[l_end:b_end]
    body = data[b_start : b_start + 1] + _length(len(body)) + body
    signed = data[s_content:b_start] + body + data[b_end:s_end]
    top = b"\x30" + _length(len(signed)) + signed + data[s_end:]
    return b"\x30" + _length(len(top)) + top


def _shell_items(shell: bytes, limits: Limits) -> int:
    """The JSON-shape item count of the shell's document, as ``decode_metadata`` builds it
    (its ``to_doc``) and ``check_tree`` counts it; ``shell`` has been decoded already."""

    def count() -> int:
        asn = _read_top(MetadataAsn, shell)
        doc = {
            **_get_unrec(asn, limits),
            "signed": _signed_from_asn(asn["signed"], limits),
            "signatures": _sigs_from_asn(asn["signatures"], limits),
        }
        walk = _Walk(limits)
        walk.run(doc)
        return walk.items

    return _convert(count, WHAT)  # type: ignore[no-any-return]


def _require_entry_encodes(tf: TargetFile, data: bytes, pos: int, end: int) -> None:
    """The entry at ``pos`` is exactly the DER of ``tf`` (der.require_encodes_to, for one
    element of the list)."""
    try:
        if _matches(TargetAndCustom, _target_to_asn(tf.path, tf.to_dict()), data, pos, None) != end:
            raise NonCanonicalEncoding("")
    except NonCanonicalEncoding:
        raise NonCanonicalEncoding(
            f"DER: {WHAT} is not in the canonical form of its value"
        ) from None
    except UptaneError:
        raise
    except Exception as e:
        raise _bad(f"cannot encode {WHAT}: {_why(e)}") from None


def walk_targets(
    data: bytes, limits: Limits, ecu_id: str, *, cap: int | None = None
) -> TargetsWalk:
    """Decode DER targets metadata as strictly as ``decode_metadata(..., role_type=
    "targets")`` but one entry at a time, keeping only this ECU's entry (see the module
    doc). Raises what ``decode_metadata`` raises for the same input (the same error
    classes; for input with several faults, possibly another of them first)."""
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
        decode_metadata(data, limits, role_type="targets", cap=cap)
        raise _bad(f"{WHAT}: not targets metadata")  # pragma: no cover - decode refused it
    shell = _shell(data, where)
    md: Metadata[Targets] = decode_metadata(shell, limits, role_type="targets", cap=cap)
    items = _shell_items(shell, limits)
    del shell
    s_start, _, s_end, _, _, l_start, l_end = where
    count = sum(1 for _ in _children(data, l_start, l_end))
    limits.check_count("targets", count, limits.max_targets)
    max_items = 8 * limits.max_targets + 4096  # check_tree's cap on the whole document
    mine: TargetFile | None = None
    previous: str | None = None
    for pos, cstart, cend in _children(data, l_start, l_end):
        if data[pos] != _SEQ:
            raise _bad(f"TargetList: unexpected element (tag 0x{data[pos]:02x})")
        path, d = _entry_shape(data, cstart, cend, limits)
        if previous is not None and path <= previous:
            if path == previous:
                raise _bad("a target path appears twice")
            raise NonCanonicalEncoding(f"DER: {WHAT} is not in the canonical form of its value")
        previous = path
        # the entry at the depth it has in the whole document: doc > signed > targets > path
        walk = _Walk(limits)
        walk.run({"signed": {"targets": {path: d}}})
        items += walk.items - 2  # the two wrappers above the targets object are not in it
        if items > max_items:
            raise LimitExceeded("too many JSON values")
        limits.check_string("target path", path)
        tf = TargetFile.from_dict(path, d, limits)
        _require_entry_encodes(tf, data, pos, cend)
        if mine is None and ecu_id in tf.ecu_ids:
            mine = tf
    md.signed.targets = Entries(data, l_start, l_end, count, limits)  # type: ignore[assignment]
    return TargetsWalk(md, memoryview(data)[s_start:s_end], mine)
