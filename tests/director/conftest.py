"""Fixtures for the OEM backend tests: a static HTTP server and a clock."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def static_server() -> Iterator[callable]:
    """Start a static file server on 127.0.0.1 for a directory; returns its base URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def serve_app() -> Iterator[callable]:
    """Run an ASGI app with uvicorn on 127.0.0.1 (a free port) in a thread; returns its
    base URL. Servers are stopped at teardown; ``stop(url)`` stops one early."""
    import socket
    import time

    import uvicorn

    running: dict[str, tuple[uvicorn.Server, threading.Thread]] = {}

    def start(app: object) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        running[url] = (server, thread)
        return url

    def stop(url: str) -> None:
        server, thread = running.pop(url)
        server.should_exit = True
        thread.join(timeout=20)

    start.stop = stop  # type: ignore[attr-defined]
    yield start
    for url in list(running):
        stop(url)
