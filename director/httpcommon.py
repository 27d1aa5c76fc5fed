"""HTTP pieces both services share: capped body reading, bearer tokens, the mapping of
the core's errors to status codes with a clear reason, and the background refresher."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from director.common import log
from uptane.errors import (
    ArbitrarySoftwareAttack,
    BadSignature,
    EndlessDataAttack,
    MalformedInput,
    ReplayAttack,
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


def error_status(e: Exception) -> int:
    """HTTP status for an error raised while handling a request."""
    if isinstance(e, EndlessDataAttack):
        return 413
    if isinstance(e, MalformedInput):
        return 400
    if isinstance(e, (ArbitrarySoftwareAttack, BadSignature)):
        return 403
    if isinstance(e, (RollbackAttack, ReplayAttack)):
        return 409
    if isinstance(e, UptaneError):
        return 400
    return 500


def error_response(e: Exception, status: int | None = None) -> JSONResponse:
    code = status or error_status(e)
    body: dict[str, object] = {"detail": str(e)}
    if isinstance(e, UptaneError):
        body["attack"] = e.attack
        body["code"] = e.code
    return JSONResponse(body, status_code=code)


def install_error_handlers(app, extra: dict[type[Exception], int] | None = None) -> None:  # type: ignore[no-untyped-def]
    """Map UptaneError (and ``extra`` exception types) to JSON error responses."""

    def handler_for(status: int | None) -> Callable:  # type: ignore[type-arg]
        async def handle(request: Request, exc: Exception) -> JSONResponse:
            return error_response(exc, status)

        return handle

    app.add_exception_handler(UptaneError, handler_for(None))
    for cls, status in (extra or {}).items():
        app.add_exception_handler(cls, handler_for(status))


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
    not a GET): method, path and status. Never the headers, so never a token."""

    def __init__(self, app: Any, what: str) -> None:
        self.app = app
        self.what = what

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD")
            or not scope["path"].startswith("/api/")
        ):
            await self.app(scope, receive, send)
            return
        status = [500]

        async def tracking(msg: Any) -> None:
            if msg["type"] == "http.response.start":
                status[0] = int(msg["status"])
            await send(msg)

        try:
            await self.app(scope, receive, tracking)
        finally:
            done = "done" if status[0] < 400 else "refused"
            log.info(
                "%s admin change %s: %s %s -> %d",
                self.what,
                done,
                scope["method"],
                scope["path"][:300],
                status[0],
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
                    await self._reject(send)
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
                await self._reject(send)

    async def _reject(self, send) -> None:  # type: ignore[no-untyped-def]
        body = f'{{"detail":"request body exceeds the {self.cap}-byte cap"}}'.encode()
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
