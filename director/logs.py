"""Every request's id, log line and metrics (issue 19), for both services.

:class:`RequestLog` is the outermost middleware of an app. It gives each request an id
(the client's ``X-Request-ID`` when it is a short token of safe characters, else a fresh
one), answers it in ``X-Request-ID``, and, when the answer is complete, writes one log line
(``request``: id, method, route template, status, milliseconds; never a VIN, a header or
a token) and counts it in the app's metrics. Error bodies carry the same id
(:func:`director.httpcommon.error_body`), and so do the admin-change lines and the audit
rows, so one id follows a request everywhere.

:func:`configure` sets the services' log (``uptane.service``) to text on a terminal and
JSON lines otherwise (:mod:`storage.logs`).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from director.common import log
from director.metrics import ServiceMetrics
from storage import logs as storage_logs

REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}\Z")
#: the route label of a request no route took (an unknown path: its text is not a label)
UNMATCHED = "unmatched"


def configure(fmt: str = "auto", *, level: int = logging.INFO) -> str:
    """The services' log on stderr: ``auto`` (text on a terminal, JSON otherwise),
    ``json`` or ``text``; returns the format chosen."""
    return storage_logs.configure(log.name, fmt, level=level)


def route_of(scope: dict[str, Any]) -> str:
    """The route template a request took (``/vehicles/{vin}/metadata/{name}``)."""
    state = scope.get("state") or {}
    if isinstance(state, dict) and state.get("route"):
        return str(state["route"])
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else UNMATCHED


class RequestLog:
    """ASGI middleware, outermost: request id, one log line per request, its metrics.
    ``log_requests`` False keeps the metrics and drops the lines (a busy fleet)."""

    def __init__(
        self, app: Any, *, metrics: ServiceMetrics | None = None, log_requests: bool = True
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        state = scope.get("state")
        if not isinstance(state, dict):
            state = scope["state"] = {}
        state["request_id"] = rid
        t0 = time.perf_counter()
        status = [500]

        async def tagged(msg: Any) -> None:
            if msg["type"] == "http.response.start":
                status[0] = int(msg["status"])
                headers = [*msg.get("headers", []), (b"x-request-id", rid.encode())]
                msg = dict(msg, headers=headers)
            await send(msg)

        try:
            await self.app(scope, receive, tagged)
        finally:
            self._done(scope, rid, status[0], time.perf_counter() - t0)

    def _done(self, scope: Any, rid: str, status: int, seconds: float) -> None:
        route = route_of(scope)
        if self.metrics is not None:
            self.metrics.observe_request(route, scope["method"], status, seconds)
        if self.log_requests:
            fields = {
                "event": "request",
                "request_id": rid,
                "method": scope["method"],
                "route": route,
                "status": status,
                "ms": round(seconds * 1000, 2),
            }
            log.info("request", extra={"fields": fields})


def _request_id(scope: Any) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id" and REQUEST_ID.match(value):
            return str(value.decode("ascii"))
    return uuid.uuid4().hex


__all__ = ["UNMATCHED", "RequestLog", "configure", "route_of"]
