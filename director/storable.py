"""What the inventory can store (issue 15): the Director's own rule for values that reach
its database, checked before any write (director/manifests.py, "Client input never
answers 500"). The core's policy (:mod:`uptane.policy`) already keeps every decoded value
inside it; this module is the inventory's side of that promise."""

from __future__ import annotations

from typing import Any

from director.common import Invalid, log
from uptane.policy import INT64_MAX, INT64_MIN

#: the width of the manifests table's ``encoding`` column (migration 0006)
ENCODING_WIDTH = 16


class StorageRefused(Invalid):
    """A manifest whose values the inventory cannot store (HTTP 422, with the reason):
    it failed alone; nothing of it was stored."""


def check_storable(vin: str, attack: str | None, encoding: str, rows: list[dict[str, Any]]) -> None:
    """Every value of ``rows`` (a manifest's statement parameters), its manifest-level
    ``attack`` and ``encoding`` fit the inventory: integers in BIGINT
    (signed 64-bit), text without NUL (PostgreSQL refuses it) and encodable as UTF-8.
    The core's policy already holds all of this for a decoded manifest; this is the
    inventory's own rule, checked in the check phase of group commit, where a refusal
    costs the other manifests of the batch nothing."""
    if len(encoding) > ENCODING_WIDTH:
        raise StorageRefused(f"manifest refused: encoding name {encoding[:32]!r} is too long")
    for row in [*rows, {"attack": attack}]:
        for name, value in row.items():
            why = _unstorable(value)
            if why is not None:
                log.warning("manifest of %s refused: %s %s", vin[:64], name, why)
                raise StorageRefused(f"manifest refused: {name} {why}")


def _unstorable(value: Any) -> str | None:
    """Why the inventory cannot store ``value``, or None."""
    if type(value) is int:
        if not INT64_MIN <= value <= INT64_MAX:
            return f"is outside the database's 64-bit integers ({value.bit_length()} bits)"
    elif type(value) is str:
        if "\x00" in value:
            return "holds NUL, which the database cannot store"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode text"
    return None


def first_line(e: BaseException) -> str:
    """The first line of an error's text (a database error's is several), capped."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


__all__ = ["StorageRefused", "check_storable", "first_line"]
