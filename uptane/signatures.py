"""Threshold signature checking: the one place that counts signatures against keys.

A threshold counts *unique keys* (Standard 1.2.0 onwards, §5.4.4.3 ff.): a key listed under
two key ids, or a signature repeated with the same key id, counts once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from uptane.errors import BadSignature, MalformedInput, ThresholdNotMet
from uptane.keys import Key, SignedData
from uptane.limits import Limits
from uptane.metadata import KEYID_HINT_HEX, Signature


def keyid_matches(named: str, keyid: str) -> bool:
    """Whether a signature naming ``named`` may be from the key ``keyid``: the same id, or
    the 8-byte hint a DER signature carries (docs/der-profile.md, "Signature")."""
    return named == keyid or (len(named) == KEYID_HINT_HEX and keyid.startswith(named))


def count_valid(
    payload: SignedData,
    signatures: Iterable[Signature],
    keys: Mapping[str, Key],
    allowed_keyids: Iterable[str],
) -> int:
    """How many *unique* trusted keys produced a valid signature over ``payload``.

    Only key ids in ``allowed_keyids`` that are also in ``keys`` are trusted. Uniqueness is
    by the key's raw public bytes, so one key under two ids counts once. A signature naming
    an 8-byte key-id hint (DER) is tried against each trusted id with that prefix; a hint
    never reaches a key the role does not authorize.
    """
    allowed = set(allowed_keyids)
    hints: dict[str, list[str]] = {}
    seen_ids: set[str] = set()
    good: set[bytes] = set()
    for sig in signatures:
        if sig.keyid in seen_ids:
            continue  # the first signature naming an id (or a hint) is the one judged
        seen_ids.add(sig.keyid)
        if sig.keyid in allowed:
            candidates = [sig.keyid]
        elif len(sig.keyid) == KEYID_HINT_HEX:
            if not hints:
                for kid in sorted(allowed):
                    hints.setdefault(kid[:KEYID_HINT_HEX], []).append(kid)
            candidates = hints.get(sig.keyid, [])
        else:
            continue
        for kid in candidates:
            key = keys.get(kid)
            if key is None:
                continue
            try:
                identity = key.identity
            except MalformedInput:
                continue  # a broken key in trusted metadata simply cannot sign
            if identity in good:
                continue
            if key.verify(sig.sig, payload):
                good.add(identity)
                break
    return len(good)


def check_threshold(
    payload: SignedData,
    signatures: list[Signature],
    keys: Mapping[str, Key],
    allowed_keyids: Iterable[str],
    threshold: int,
    limits: Limits,
    *,
    repository: str | None = None,
    role: str | None = None,
) -> None:
    """Raise :class:`ThresholdNotMet` unless ``threshold`` unique trusted keys signed
    ``payload`` (§5.4.4.3 step 'threshold of unique keys')."""
    limits.check_count("signatures", len(signatures), limits.max_signatures)
    got = count_valid(payload, signatures, keys, allowed_keyids)
    if got < threshold:
        raise ThresholdNotMet(
            f"{got} valid signature(s) from unique trusted keys, {threshold} required",
            repository=repository,
            role=role,
        )


def check_single(payload: SignedData, signatures: list[Signature], key: Key, what: str) -> None:
    """Raise :class:`BadSignature` unless ``key`` signed ``payload`` (an ECU report, a VVM)."""
    kid = key.keyid
    for sig in signatures[:64]:
        if keyid_matches(sig.keyid, kid) and key.verify(sig.sig, payload):
            return
    raise BadSignature(f"{what} is not signed by the registered key {kid[:16]}…")
