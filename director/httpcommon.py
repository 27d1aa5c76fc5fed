"""HTTP pieces both services share: capped body reading, bearer tokens, the one error body
of both services, the version prefix of their APIs (with the old paths as deprecated
aliases), the admin-change log, and the background refresher.

Every error either service answers has one shape (issue 19)::

    {"status": 409, "error": "conflict", "detail": "what happened and what to do",
     "attack": null, "code": null, "request_id": "9f2c..."}

``attack`` and ``code`` are the core's (:class:`uptane.errors.UptaneError`) when the
error is one of its; ``request_id`` is the request's (``X-Request-ID``, also in the log
line of the request)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from director.common import log
from uptane.errors import (
    ArbitrarySoftwareAttack,
    BadSignature,
    EndlessDataAttack,
    MalformedInput,
    ReplayAttack,
    ReportTimeSkew,
    RollbackAttack,
    UptaneError,
)


async def read_body(request: Request, cap: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``cap`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > cap:
                raise HTTPException(413, f"request body exceeds the {cap}-byte cap")
        except ValueError:
            raise HTTPException(400, "bad Content-Length") from None
    buf = bytearray()
    async for chunk in request.stream():
        buf.extend(chunk)
        if len(buf) > cap:
            raise HTTPException(413, f"request body exceeds the {cap}-byte cap")
    return bytes(buf)


def bearer(request: Request) -> str:
    """The bearer token of a request; 401 if there is none."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "bearer token required", headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


def tokens_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


#: the admin API's version prefix; the paths without it are deprecated aliases
API = "/api/v1"
#: the error body's ``error`` for each status
STATUS_NAMES = {
    400: "malformed",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    422: "invalid",
    429: "too-many-requests",
    500: "internal",
    503: "unavailable",
}


def error_status(e: Exception) -> int:
    """HTTP status for an error raised while handling a request."""
    if isinstance(e, EndlessDataAttack):
        return 413
    if isinstance(e, MalformedInput):
        return 400
    if isinstance(e, (ArbitrarySoftwareAttack, BadSignature)):
        return 403
    if isinstance(e, (RollbackAttack, ReplayAttack, ReportTimeSkew)):
        return 409  # ReportTimeSkew: the report's time conflicts with the Director's clock
    if isinstance(e, UptaneError):
        return 400
    return 500


def error_body(
    status: int,
    detail: str,
    *,
    attack: str | None = None,
    code: int | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The one error body of both services."""
    return {
        "status": status,
        "error": STATUS_NAMES.get(status, "error"),
        "detail": detail,
        "attack": attack,
        "code": code,
        "request_id": request_id,
    }


def request_id_of(scope_or_request: Any) -> str | None:
    """The request id :class:`director.logs.RequestLog` gave this request, if any."""
    scope = getattr(scope_or_request, "scope", scope_or_request)
    state = scope.get("state") if isinstance(scope, dict) else None
    return state.get("request_id") if isinstance(state, dict) else None


def error_response(
    e: Exception, status: int | None = None, request: Request | None = None
) -> JSONResponse:
    code = status or error_status(e)
    rid = None if request is None else request_id_of(request)
    if isinstance(e, UptaneError):
        body = error_body(code, str(e), attack=e.attack, code=e.code, request_id=rid)
    else:
        body = error_body(code, str(e), request_id=rid)
    return JSONResponse(body, status_code=code)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Framework errors (HTTPException, an unknown path, a wrong method) in the one shape."""
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", None)
    text = detail if isinstance(detail, str) else str(detail or STATUS_NAMES.get(status, ""))
    headers = getattr(exc, "headers", None)
    return JSONResponse(
        error_body(status, text, request_id=request_id_of(request)),
        status_code=status,
        headers=headers,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """A body or parameter that does not fit the schema: 400 with the reason."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    reason = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors
    )
    return JSONResponse(
        error_body(400, f"malformed request: {reason}"[:2000], request_id=request_id_of(request)),
        status_code=400,
    )


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug: logged with its traceback and the request id, answered in the one shape
    without the details."""
    rid = request_id_of(request)
    log.error("internal error", exc_info=exc, extra={"fields": {"request_id": rid}})
    body = error_body(
        500, "internal error: the service logged it with this request id", request_id=rid
    )
    return JSONResponse(body, status_code=500)


def install_error_handlers(app, extra: dict[type[Exception], int] | None = None) -> None:  # type: ignore[no-untyped-def]
    """Every error in the one shape: UptaneError (and ``extra`` exception types) with
    their status, HTTP and validation errors, and anything else as 500."""

    def handler_for(status: int | None) -> Callable:  # type: ignore[type-arg]
        async def handle(request: Request, exc: Exception) -> JSONResponse:
            return error_response(exc, status, request)

        return handle

    app.add_exception_handler(UptaneError, handler_for(None))
    for cls, status in (extra or {}).items():
        app.add_exception_handler(cls, handler_for(status))
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)


class LegacyPaths:
    """ASGI middleware: the admin API before its version prefix, ``/api/X``, answered as
    ``/api/v1/X`` for one release, with ``Deprecation: true`` and a ``Link`` to the new
    path on the answer. The path asked is kept for the admin-change log
    (``state["asked_path"]``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith("/api/") or path.startswith(API + "/") or path == API:
            await self.app(scope, receive, send)
            return
        new = API + path[len("/api") :]
        # changed in place: the request log outside sees the route the router picks
        scope["path"], scope["raw_path"] = new, new.encode("utf-8", "surrogateescape")
        scope.setdefault("state", {})["asked_path"] = path
        link = f"<{new[:1000]}>; rel=successor-version".encode("latin-1", "replace")

        async def deprecated(msg: Any) -> None:
            if msg["type"] == "http.response.start":
                headers = [*msg.get("headers", []), (b"deprecation", b"true"), (b"link", link)]
                msg = dict(msg, headers=headers)
            await send(msg)

        await self.app(scope, receive, deprecated)


def periodic_lifespan(
    *schedules: tuple[float, Sequence[Callable[[], object]]],
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A FastAPI lifespan that runs, for each ``(interval, jobs)``, each job in the
    threadpool every ``interval`` seconds while the app is up (re-signing before expiry,
    picking up offline changes, moving campaigns on). A job that fails is logged and tried
    again next round; it never stops the others or the app. A job that returns a list of
    lines has each one logged."""

    async def run(interval: float, jobs: Sequence[Callable[[], object]]) -> None:
        while True:
            await asyncio.sleep(interval)
            for job in jobs:
                try:
                    out = await run_in_threadpool(job)
                except Exception as e:
                    log.warning("background %s failed (tried again): %s", _name(job), e)
                    continue
                if isinstance(out, list):
                    for line in out:
                        log.info("%s", line)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(run(interval, jobs)) for interval, jobs in schedules]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()

    return lifespan


def _name(job: Callable[[], object]) -> str:
    return str(getattr(job, "__name__", type(job).__name__))


def refresher_lifespan(
    interval: float, *jobs: Callable[[], object]
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """:func:`periodic_lifespan` with one schedule: ``jobs`` every ``interval`` seconds."""
    return periodic_lifespan((interval, jobs))


class AdminLog:
    """ASGI middleware: one log line per admin change (a request under ``/api/`` that is
    not a GET): method, path as asked, status, the caller and the request id; never the
    headers, so never a token. ``audit(caller, method, path, status, request_id)``, when
    given, is called (in a worker thread) once the status is known and before the answer
    leaves, for each change made by an authenticated caller (the route's token check puts
    it in ``state["caller"]``)."""

    def __init__(
        self,
        app: Any,
        what: str,
        audit: Callable[[str, str, str, int, str | None], None] | None = None,
    ) -> None:
        self.app = app
        self.what = what
        self.audit = audit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD", "OPTIONS")
            or not scope["path"].startswith("/api/")
        ):
            await self.app(scope, receive, send)
            return
        status = [500]
        state = scope.setdefault("state", {})

        async def tracking(msg: Any) -> None:
            if msg["type"] == "http.response.start":
                status[0] = int(msg["status"])
                await self._audit(scope, state, status[0])
            await send(msg)

        try:
            await self.app(scope, receive, tracking)
        finally:
            self._log(scope, state, status[0])

    async def _audit(self, scope: Any, state: dict[str, Any], status: int) -> None:
        caller = state.get("caller")
        if self.audit is None or caller is None:
            return
        path = str(state.get("asked_path") or scope["path"])[:300]
        try:
            await run_in_threadpool(
                self.audit, str(caller), scope["method"], path, status, state.get("request_id")
            )
        except Exception as e:  # the change is made: say the audit row is missing, loudly
            log.error("audit row not written for %s %s: %s", scope["method"], path, e)

    def _log(self, scope: Any, state: dict[str, Any], status: int) -> None:
        path = str(state.get("asked_path") or scope["path"])[:300]
        done = "done" if status < 400 else "refused"
        fields = {
            "event": "admin-change",
            "method": scope["method"],
            "path": path,
            "status": status,
            "caller": state.get("caller"),
            "request_id": state.get("request_id"),
        }
        log.info(
            "%s admin change %s: %s %s -> %d",
            self.what,
            done,
            scope["method"],
            path,
            status,
            extra={"fields": fields},
        )


def service_error_text(response: Any) -> str:
    """The error a service answered, as its own words: ``detail`` of a JSON error body
    (and the attack name, if any), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        text = detail if isinstance(detail, str) else str(detail)
    else:
        text = (response.text or "").strip()[:500] or response.reason_phrase
    return f"{response.status_code} {text}"


class _TooLarge(Exception):
    pass


class BodyCap:
    """ASGI middleware: refuse any request body over ``cap`` bytes with 413, whether the
    size is declared (Content-Length) or only discovered while streaming."""

    def __init__(self, app, cap: int) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.cap = cap

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.cap
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(send, scope)
                    return
        seen = 0
        started = False

        async def capped_receive():  # type: ignore[no-untyped-def]
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.cap:
                    raise _TooLarge
            return msg

        async def tracking_send(msg):  # type: ignore[no-untyped-def]
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, capped_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send, scope)

    async def _reject(self, send, scope=None) -> None:  # type: ignore[no-untyped-def]
        detail = f"request body exceeds the {self.cap}-byte cap"
        rid = None if scope is None else request_id_of(scope)
        body = json.dumps(error_body(413, detail, request_id=rid)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
