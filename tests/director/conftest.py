"""Fixtures for the OEM backend tests: a static HTTP server and a clock."""

from __future__ import annotations

import functools
import http.server
import sys
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


# --- PostgreSQL: a private cluster started by the test session ----------------------------

ROOT = str(Path(__file__).resolve().parents[2])


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[dict]:
    """A private cluster (load/pgcluster.py) for the session. Yields
    ``{"port": ..., "create": callable}``; ``create()`` makes a fresh database."""
    if ROOT not in sys.path:  # load/ is a tool beside the packages, not installed
        sys.path.insert(0, ROOT)
    from load import pgcluster

    if pgcluster.pg_bin() is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    with pgcluster.cluster() as pg:
        yield {
            "port": pg.port,
            "create": lambda: pg.create_database(f"director_{len(pg.created) + 1}"),
        }


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path: Path) -> str:
    """The Director suite runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'inventory.db'}"
    return request.getfixturevalue("pg_cluster")["create"]()


@pytest.fixture
def env(tmp_path: Path, db_url: str, now, serve_app):
    """An Image repository with images, a Director on ``db_url`` served over HTTP, and an
    admin client."""
    import httpx
    from oem import Clock, make_director, make_image_repo

    from director.director_server import create_app

    clock = Clock(now)
    image_dir = make_image_repo(tmp_path, now)
    director, token = make_director(tmp_path, image_dir, db_url, clock)
    # the test owns the tick: it calls director.tick() and asserts what it returns, which
    # a background tick of the app racing it would take first (CI, once)
    url = serve_app(create_app(director=director, tick_interval=3600.0))
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    state = {
        "director": director,
        "token": token,
        "url": url,
        "c": client,
        "clock": clock,
        "image_dir": image_dir,
        "db_url": db_url,
        "tmp": tmp_path,
    }
    yield state
    client.close()
    state["director"].dispose()
