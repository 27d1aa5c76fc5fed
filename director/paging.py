"""Pages of the admin API's listings (issue 20): every listing that grows with the fleet
answers ``{"items": [...], "next": CURSOR or null}``, ``?limit=`` rows at a time (default
and maximum: ``page_limit`` and ``page_limit_max`` in ``director.json``), continued with
``?after=CURSOR``.

Pages are keyset pages on the table's primary key (``WHERE id > :last ORDER BY id LIMIT
n``), never ``OFFSET``: a row inserted or deleted while a client pages never makes it skip
or see twice a row that stays, and each page costs one indexed range scan however deep it
is. The cursor is opaque to clients (base64url of the listing's name and the last key):
a cursor of another listing, or one that is not a cursor, is refused with
:class:`BadPage` (HTTP 400), never a 500.

A module with a listing of its own applies a :class:`Page` to its query with
:func:`keyset` and shapes the rows with :func:`result` (or does both with :func:`fetch`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from director.common import Invalid

#: the longest cursor taken (a listing's name and a 64-bit key fit in far less)
MAX_CURSOR = 128
#: keys are the tables' integer primary keys: 0 .. 2**63-1
MAX_KEY = 2**63 - 1


class BadPage(Invalid):
    """A ``limit`` or ``after`` a listing cannot take (HTTP 400)."""


def encode(kind: str, key: int) -> str:
    """The cursor after row ``key`` of listing ``kind``."""
    return base64.urlsafe_b64encode(f"{kind}.{key}".encode()).decode().rstrip("=")


def decode(kind: str, cursor: str) -> int:
    """The key a cursor of listing ``kind`` continues after; :class:`BadPage` otherwise."""
    if not cursor or len(cursor) > MAX_CURSOR:
        raise BadPage("bad cursor: pass the `next` of the previous page as ?after= unchanged")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadPage(
            "bad cursor: pass the `next` of the previous page as ?after= unchanged"
        ) from None
    name, _, key = text.rpartition(".")
    if name != kind:
        raise BadPage(f"this cursor is not one of {kind}: page each listing with its own `next`")
    if not key.isdigit() or len(key) > 19 or int(key) > MAX_KEY:
        raise BadPage("bad cursor: pass the `next` of the previous page as ?after= unchanged")
    return int(key)


@dataclass(frozen=True)
class Page:
    """What one page asks: ``limit`` rows of listing ``kind`` after key ``after`` (from
    the start when None), in ascending key order (newest first when ``descending``)."""

    kind: str
    limit: int
    after: int | None = None
    descending: bool = False

    @classmethod
    def ask(
        cls,
        kind: str,
        limit: int | None,
        after: str | None,
        *,
        default: int,
        maximum: int,
        descending: bool = False,
    ) -> Page:
        """The page a request's ``?limit=`` and ``?after=`` ask; :class:`BadPage` for a
        limit outside 1..``maximum`` or a bad cursor."""
        if limit is None:
            limit = min(default, maximum)
        if not 1 <= limit <= maximum:
            raise BadPage(f"limit must be 1 to {maximum} (page_limit_max in director.json)")
        return cls(kind, limit, None if after is None else decode(kind, after), descending)

    @classmethod
    def of(cls, config: Any, kind: str, limit: int | None, after: str | None, **kw: Any) -> Page:
        """:meth:`ask` with the default and maximum of a Director's configuration."""
        return cls.ask(
            kind,
            limit,
            after,
            default=int(config.page_limit),
            maximum=int(config.page_limit_max),
            **kw,
        )

    def following(self, cursor: str | None) -> Page | None:
        """The next page after a page whose ``next`` was ``cursor`` (None: it was the last)."""
        if cursor is None:
            return None
        return Page(self.kind, self.limit, decode(self.kind, cursor), self.descending)


def keyset(q: sa.Select[Any], key: sa.ColumnElement[Any], page: Page) -> sa.Select[Any]:
    """``q`` restricted to ``page``: after its key, ordered by ``key``, one row more than
    the limit (that row only tells whether a next page exists)."""
    if page.after is not None:
        q = q.where(key < page.after if page.descending else key > page.after)
    order = key.desc() if page.descending else key.asc()
    return q.order_by(order).limit(page.limit + 1)


def result(
    rows: Sequence[Any], page: Page, key_of: Callable[[Any], int], render: Callable[[Any], Any]
) -> dict[str, Any]:
    """The answer of a page from the rows of its :func:`keyset` query."""
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    return {
        "items": [render(r) for r in rows],
        "next": encode(page.kind, key_of(rows[-1])) if more and rows else None,
    }


def fetch(
    conn: Connection,
    q: sa.Select[Any],
    key: sa.ColumnElement[Any],
    page: Page,
    render: Callable[[Any], Any],
    key_of: Callable[[Any], int] = lambda r: int(r.id),
) -> dict[str, Any]:
    """Run ``q`` for one page and shape the answer (``key_of``: a row's key, ``r.id``)."""
    return result(conn.execute(keyset(q, key, page)).all(), page, key_of, render)


def old_shape(request: Any, *params: object) -> bool:
    """Whether a request came by a deprecated path (``/api/X``, not ``/api/v1/X``) and
    gave none of ``params`` (the paging ones it may give): such a request gets the bare
    list it always got, for the one release the old paths last."""
    state = getattr(request, "state", None)
    return getattr(state, "asked_path", None) is not None and all(p is None for p in params)


def walk(get: Callable[[Page], dict[str, Any]], first: Page) -> Iterator[Any]:
    """Every item of a listing, page after page, following the cursors (the CLI)."""
    page: Page | None = first
    while page is not None:
        answer = get(page)
        yield from answer["items"]
        page = page.following(answer["next"])


__all__ = [
    "MAX_CURSOR",
    "BadPage",
    "Page",
    "decode",
    "encode",
    "fetch",
    "keyset",
    "old_shape",
    "result",
    "walk",
]
