"""Local HTTP servers for the Primary's tests, bound to 127.0.0.1 on a free port.

A module of its own (not conftest.py) so that test files import it by a name no other
test folder uses.

- :func:`serve` runs any ``BaseHTTPRequestHandler`` subclass in a thread (hostile servers).
- The ``static_server`` fixture serves a directory the way a static web server serves a
  TUF repository: GET only, single ``Range: bytes=N-`` requests, and every request path
  recorded. Paths are looked up *raw* (not percent-decoded), so a repository writes each
  file under the name a client requests (``..%2Fx.json`` for role ``../x``) and nothing can
  climb out of the served directory.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class QuietHandler(BaseHTTPRequestHandler):
    """A handler that does not log to stderr and records every request path."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def record(self) -> None:
        server = self.server
        with server.lock:  # type: ignore[attr-defined]
            server.requests.append(self.path)  # type: ignore[attr-defined]

    def send_body(self, body: bytes, status: int = 200, headers: dict[str, str] | None = None):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


class _Httpd(ThreadingHTTPServer):
    """A threading server that does not print the resets clients cause on purpose."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class Server:
    """A running server: ``url`` (no trailing slash), ``requests`` (paths, in order)."""

    def __init__(self, httpd: ThreadingHTTPServer, scheme: str = "http") -> None:
        self.httpd = httpd
        host, port = httpd.server_address[:2]
        self.url = f"{scheme}://{host}:{port}"
        self.requests: list[str] = httpd.requests  # type: ignore[attr-defined]

    def count(self, path: str) -> int:
        return sum(1 for p in self.requests if p == path)


@contextmanager
def serve(
    handler: type[BaseHTTPRequestHandler], *, tls: ssl.SSLContext | None = None, **attrs: object
) -> Iterator[Server]:
    """Run ``handler`` on 127.0.0.1 in a thread (HTTPS with the server context ``tls``);
    ``attrs`` become attributes of the server (handlers read them as ``self.server.NAME``)."""
    httpd = _Httpd(("127.0.0.1", 0), handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    httpd.requests = []  # type: ignore[attr-defined]
    httpd.lock = threading.Lock()  # type: ignore[attr-defined]
    for k, v in attrs.items():
        setattr(httpd, k, v)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield Server(httpd, "https" if tls is not None else "http")
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(timeout=5)


class StaticHandler(QuietHandler):
    """Serves ``self.server.root``: raw path lookup, 404 for anything else."""

    def do_GET(self) -> None:
        self.record()
        root: Path = self.server.root  # type: ignore[attr-defined]
        parts = self.path.split("?", 1)[0].lstrip("/").split("/")
        if any(p in ("", ".", "..") for p in parts):
            self.send_body(b"not found", 404)
            return
        f = root.joinpath(*parts)
        if not f.is_file():
            self.send_body(b"not found", 404)
            return
        data = f.read_bytes()
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-") and rng[6:-1].isdigit():
            start = int(rng[6:-1])
            if start >= len(data):
                self.send_body(b"", 416, {"Content-Range": f"bytes */{len(data)}"})
                return
            self.send_body(
                data[start:], 206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            )
            return
        self.send_body(data)
