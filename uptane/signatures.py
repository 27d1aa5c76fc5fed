"""Threshold signature checking: the one place that counts signatures against keys.

A threshold counts *unique keys* (Standard 1.2.0 onwards, §5.4.4.3 ff.): a key listed under
two key ids, or a signature repeated with the same key id, counts once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from uptane.errors import BadSignature, MalformedInput, ThresholdNotMet
from uptane.keys import Key
from uptane.limits import Limits
from uptane.metadata import Signature


def count_valid(
    payload: bytes,
    signatures: Iterable[Signature],
    keys: Mapping[str, Key],
    allowed_keyids: Iterable[str],
) -> int:
    """How many *unique* trusted keys produced a valid signature over ``payload``.

    Only key ids in ``allowed_keyids`` that are also in ``keys`` are trusted. Uniqueness is
    by the key's raw public bytes, so one key under two ids counts once.
    """
    allowed = set(allowed_keyids)
    seen_ids: set[str] = set()
    good: set[bytes] = set()
    for sig in signatures:
        if sig.keyid in seen_ids or sig.keyid not in allowed:
            continue
        seen_ids.add(sig.keyid)
        key = keys.get(sig.keyid)
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
    return len(good)


def check_threshold(
    payload: bytes,
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


def check_single(payload: bytes, signatures: list[Signature], key: Key, what: str) -> None:
    """Raise :class:`BadSignature` unless ``key`` signed ``payload`` (an ECU report, a VVM)."""
    kid = key.keyid
    for sig in signatures[:64]:
        if sig.keyid == kid and key.verify(sig.sig, payload):
            return
    raise BadSignature(f"{what} is not signed by the registered key {kid[:16]}…")
