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
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from director import inventory as inv
from director.common import epoch, iso

#: rows one read returns at most
MAX_ROWS = 1000


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
        """The row of one change through the API (:class:`director.httpcommon.AdminLog`)."""
        self.record(
            caller, f"{method} {path}"[:256], target=path, status=status, request_id=request_id
        )

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
            return [
                {
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
                for r in conn.execute(q)
            ]


__all__ = ["MAX_ROWS", "Audit", "cli_actor", "node_name"]
