"""Figure 8: Director polls for unchanged metadata, requests per second on 127.0.0.1.

The real service: ``uptane-director serve`` (:func:`director.director_cli.main`: the
FastAPI app under uvicorn, one process, as shipped) in its own process over a Director
with registered vehicles. A bounded load generator (``CLIENTS`` processes, each with one
``http.client`` keep-alive connection) polls ``GET /vehicles/{vin}/metadata/timestamp.json``
round-robin over the vehicles for ``DURATION`` seconds (and at most ``MAX_REQUESTS`` each);
every answer must be 200 with the same bytes. The figure is completed requests per second
(≥ 5,000 on this 2-core machine; the generator shares those cores).
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing as mp
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, Figure, cpu_count
from bench.directorkit import make_director

NAME = "director_unchanged_polls"
TITLE = "Director polls for unchanged metadata, load on 127.0.0.1"
GOAL = "≥ 5,000 requests/s"
MAX_REQUESTS = 200_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVE = "import sys; from director.director_cli import main; sys.exit(main(sys.argv[1:]))"
#: the same server under cProfile; uvicorn exits cleanly on SIGTERM and the stats are saved
SERVE_PROFILED = (
    "import cProfile, sys; from director.director_cli import main\n"
    "p = cProfile.Profile(); p.enable()\n"
    "try:\n    main(sys.argv[2:])\n"
    "finally:\n    p.disable(); p.dump_stats(sys.argv[1])\n"
)


def director_server(ddir: Path, profile_to: Path | None = None) -> Any:
    """``uptane-director serve DIR`` on a free port (optionally under cProfile)."""
    code = SERVE if profile_to is None else SERVE_PROFILED
    pre = [] if profile_to is None else [str(profile_to)]
    return _server([sys.executable, "-c", code, *pre, "serve", str(ddir), "--host", "127.0.0.1"])


def floor_server(app: str) -> Any:
    """One of :mod:`bench.floor_app`'s reference apps under the same uvicorn."""
    args = [sys.executable, "-m", "uvicorn", f"bench.floor_app:{app}", "--host", "127.0.0.1"]
    return _server([*args, "--log-level", "warning", "--no-access-log"])


@contextlib.contextmanager
def _server(argv: list[str]) -> Any:
    port = _free_port()
    proc = subprocess.Popen(
        [*argv, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"the Director did not start: {err[-2000:]}")
            time.sleep(0.05)
        yield port
    finally:
        # SIGINT: uvicorn shuts down, then re-raises it as KeyboardInterrupt, so the
        # profiled variant's ``finally`` still saves its stats (SIGTERM would not)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _client(port: int, paths: list[str], start: float, duration: float, out: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    done = bad = 0
    first: dict[str, bytes] = {}
    while time.time() < start:
        time.sleep(0.001)
    end = time.perf_counter() + duration
    i = 0
    while done < MAX_REQUESTS and time.perf_counter() < end:
        path = paths[i % len(paths)]
        i += 1
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status == 200 and first.setdefault(path, body) == body:
            done += 1
        else:
            bad += 1
    conn.close()
    out.put((done, bad))


def measure(server: Any, vins: list[str], clients: int, duration: float) -> dict[str, Any]:
    paths = [f"/vehicles/{v}/metadata/timestamp.json" for v in vins]
    with server as port:
        # warm the Director's cache and the connection path
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for p in paths:
            conn.request("GET", p)
            r = conn.getresponse()
            r.read()
            assert r.status == 200, r.status
        conn.close()
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        start = time.time() + 0.3
        procs = [
            ctx.Process(target=_client, args=(port, paths, start, duration, q))
            for _ in range(clients)
        ]
        for p in procs:
            p.start()
        results = [q.get(timeout=duration + 60) for _ in procs]
        for p in procs:
            p.join(10)
    done = sum(r[0] for r in results)
    bad = sum(r[1] for r in results)
    return {"rate": done / duration, "requests": done, "errors": bad}


def run(smoke: bool = False) -> list[Figure]:
    vehicles, clients, duration = (2, 1, 0.5) if smoke else (20, 3, 5.0)
    with tempfile.TemporaryDirectory(prefix="bench-polls-") as tmp:
        ddir, vs = make_director(Path(tmp), vehicles=vehicles)
        vins = [v.vin for v in vs]
        m = measure(director_server(ddir), vins, clients, duration)
        if m["rate"] < 5000.0 and not smoke:
            # where the time goes: the server's own profile (main thread: the event loop,
            # HTTP parsing, the framework), and the same load on apps that do nothing
            prof = Path(tmp) / "server.prof"
            measure(director_server(ddir, prof), vins, clients, min(duration, 3.0))
            m["profile"] = server_profile(prof)
            m["floor_requests_per_s"] = {
                app: round(measure(floor_server(app), vins, clients, duration)["rate"], 1)
                for app in ("raw_asgi", "fastapi_async", "fastapi_sync")
            }
    rate = m["rate"]
    m["uvicorn"] = _uvicorn_stack()
    return [
        Figure(
            NAME,
            TITLE,
            GOAL,
            value=rate,
            reference=5000.0,
            ratio=rate / 5000.0,
            met=rate >= 5000.0 and m["errors"] == 0,
            unit="requests/s",
            reference_unit="requests/s (the goal; no peer reference)",
            notes=(
                f"uptane-director serve (uvicorn, one process, {m['uvicorn']}) on "
                f"{cpu_count()} cores shared "
                f"with the load: {clients} client processes, one keep-alive connection each, "
                f"{duration:g} s, {vehicles} vehicles' timestamp.json round-robin; "
                f"{m['requests']} requests, {m['errors']} errors."
                + (
                    " Same load, same uvicorn, handlers that do nothing (req/s): "
                    + ", ".join(f"{k} {v:,.0f}" for k, v in m["floor_requests_per_s"].items())
                    + "."
                    if "floor_requests_per_s" in m
                    else ""
                )
            ),
            details=m,
        )
    ]


def _uvicorn_stack() -> str:
    """The HTTP parser and event loop uvicorn picks here ("auto": the C ones if installed)."""
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{http} + {loop}"


def server_profile(path: Path, top: int = 25) -> str | None:
    """The server's own time by function (tottime): where a poll's CPU goes."""
    import io
    import pstats

    if not path.exists():
        return None
    out = io.StringIO()
    st = pstats.Stats(str(path), stream=out)
    st.strip_dirs().sort_stats("tottime").print_stats(top)
    lines = [ln.rstrip() for ln in out.getvalue().splitlines()]
    start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    total = next((ln.strip() for ln in lines if "function calls" in ln), "")
    return "\n".join([total, "(server process, sorted by own time)", *lines[start:]]).strip()
