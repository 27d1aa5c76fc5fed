"""Reference servers for figure 8's analysis: what uvicorn (as installed) and FastAPI cost
on this machine when the handler does nothing, answering the same size of body as a
Director timestamp. ``python -m uvicorn bench.floor_app:fastapi_async`` etc."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response

BODY = b"x" * 450  # about a Director timestamp.json

fastapi_async = FastAPI()
fastapi_sync = FastAPI()


@fastapi_async.get("/vehicles/{vin}/metadata/{name}")
async def _async_route(vin: str, name: str) -> Response:
    return Response(BODY, media_type="application/json")


@fastapi_sync.get("/vehicles/{vin}/metadata/{name}")
def _sync_route(vin: str, name: str) -> Response:
    return Response(BODY, media_type="application/json")


async def raw_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The least an ASGI app can do: the same body, no framework."""
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})
