"""The audit log (issue 19): one row per change made through the admin API or the CLI, in
the inventory database (``audit_log``): who (the token's name, or ``cli:USER``), what
(``POST /api/v1/vehicles``, ``cli assign``), on what, the outcome (the HTTP status, or 0
for a CLI command that succeeded and 2 for one that failed), when, the request id and the
node that took it. ``GET /api/v1/audit`` reads it back (newest first).

The API's rows are written by :class:`director.httpcommon.AdminLog` once the status is
known and before the answer leaves; a change refused for want of a valid token is only in
the log (no row a stranger could fill the table with).
"""

from __future__ import annotations

import getpass
import json
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from director import inventory as inv
from director import paging
from director.common import epoch, iso
from director.paging import Page

#: rows one read returns at most
MAX_ROWS = 1000
#: details noted for rows not yet written, at most (:meth:`Audit.note`)
MAX_NOTES = 1000


def node_name(port: int | None = None) -> str:
    """This process's name in the audit log: host, and port when serving."""
    host = socket.gethostname()[:100]
    return f"{host}:{port}" if port else host


def cli_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user[:100]}"


class Audit:
    """Writes and reads the audit log of one Director."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime], node: str) -> None:
        self.engine = engine
        self.clock = clock
        self.node = node
        #: what a route noted for the row of its request (:meth:`note`), by request id
        self._notes: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._notes_lock = threading.Lock()

    def note(self, request_id: str | None, detail: dict[str, Any]) -> None:
        """Put ``detail`` in the row :meth:`api_change` writes for this request (a bulk
        registration's counts: one row for the batch, saying what it did)."""
        if request_id is None:
            return
        with self._notes_lock:
            self._notes[request_id] = detail
            while len(self._notes) > MAX_NOTES:  # a request whose row was never written
                self._notes.popitem(last=False)

    def record(
        self,
        actor: str,
        action: str,
        *,
        target: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one row (its own transaction)."""
        with self.engine.begin() as conn:
            conn.execute(
                inv.audit_log.insert().values(
                    at=epoch(self.clock()),
                    actor=actor[:128],
                    action=action[:256],
                    target=None if target is None else target[:2000],
                    status=status,
                    request_id=request_id,
                    node=self.node[:128],
                    detail=None if detail is None else json.dumps(detail, sort_keys=True)[:4000],
                )
            )

    def api_change(
        self, caller: str, method: str, path: str, status: int, request_id: str | None
    ) -> None:
        """The row of one change through the API (:class:`director.httpcommon.AdminLog`),
        with what its route noted."""
        detail = None
        if request_id is not None:
            with self._notes_lock:
                detail = self._notes.pop(request_id, None)
        self.record(
            caller,
            f"{method} {path}"[:256],
            target=path,
            status=status,
            request_id=request_id,
            detail=detail,
        )

    def page(
        self, page: Page, *, actor: str | None = None, request_id: str | None = None
    ) -> dict[str, Any]:
        """One page of rows, newest first (``page`` descending), of one actor or request."""
        t = inv.audit_log
        q = sa.select(t)
        if actor is not None:
            q = q.where(t.c.actor == actor)
        if request_id is not None:
            q = q.where(t.c.request_id == request_id)
        with self.engine.connect() as conn:
            return paging.fetch(conn, q, t.c.id, page, _row)

    def entries(
        self,
        *,
        limit: int = 100,
        before: int | None = None,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows, newest first: at most ``limit``, older than id ``before``, of one actor or
        one request."""
        t = inv.audit_log
        q = sa.select(t).order_by(t.c.id.desc()).limit(max(1, min(limit, MAX_ROWS)))
        if before is not None:
            q = q.where(t.c.id < before)
        if actor is not None:
            q = q.where(t.c.actor == actor)
        if request_id is not None:
            q = q.where(t.c.request_id == request_id)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(q)]


def _row(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "at": iso(r.at),
        "actor": r.actor,
        "action": r.action,
        "target": r.target,
        "status": r.status,
        "request_id": r.request_id,
        "node": r.node,
        "detail": None if r.detail is None else json.loads(r.detail),
    }


__all__ = ["MAX_ROWS", "Audit", "cli_actor", "node_name"]
