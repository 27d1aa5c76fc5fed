"""Figure 8: Director polls for unchanged metadata across a whole fleet, as a ratio to the
hit path (issue 20), at 1,000, 10,000 and 100,000 registered vehicles, on SQLite and on
PostgreSQL.

The real service: ``uptane-director serve`` (:func:`director.director_cli.main`: the
FastAPI app under uvicorn, one process, as shipped, request log lines off as a busy fleet
runs it) in its own process. Its vehicles are registered in bulk
(:func:`bench.directorkit.grow_fleet`: two ECUs each and the vehicle's own first Director
metadata, signed by the Director's online keys); the fleet grows from one size to the next
and the same signed rows go into the SQLite and the PostgreSQL inventory (a private
cluster, ``load/pgcluster.py``), two Director directories with the same keys.

A bounded load generator (``Plan.load``: processes, each with keep-alive HTTP/1.1
connections on one event loop, as a fleet's many vehicles are many connections) polls
``GET /vehicles/{vin}/metadata/timestamp.json`` for ``Plan.phase`` seconds at a time:

- **fleet-wide**: each request a vehicle drawn at random from the whole fleet, so most
  polls miss the per-process cache of signed bytes (``cache_vehicles`` and
  ``cache_seconds`` at their defaults: 10,000 vehicles, 2 s);
- **hit path**: the same load polling one vehicle, every request a cache hit.

The two alternate (hit, fleet, fleet, hit, ...) against the same server; every answer
must be 200 with the same bytes for the same vehicle. The figure is fleet-wide requests per
second over hit-path requests per second (goal ≥ 0.8). The details give the cache's hits
and misses during the fleet-wide phases (the service's ``/metrics``), and the CPU time per
request on each path of the server and of the PostgreSQL backends serving it (``/proc``),
which the shared machine's load moves less than the rates. A missed goal at the largest
size gets the server's profile during fleet-wide polls. ``docs/scale.md`` explains the poll
path and the numbers.
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    Figure,
    cpu_count,
    load_average,
    not_yet,
    size_label,
    sizes,
)
from bench.directorkit import fleet_vin, grow_fleet, init_director, same_keys

NAME = "director_unchanged_polls"
TITLE = "Director polls for unchanged metadata, fleet-wide vs one vehicle (hit path)"
GOAL_RATIO = 0.8
GOAL = f"fleet-wide ≥ {GOAL_RATIO:g} × hit-path requests/s"
DATABASES = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Plan:
    """How a size is measured: ``load`` = (processes, connections each), ``rounds`` of one
    hit-path and one fleet-wide phase of ``phase`` seconds each."""

    load: tuple[int, int] = (2, 64)
    rounds: int = 4
    phase: float = 1.5


FULL = Plan()
SMOKE = Plan((1, 2), 1, 0.3)
#: requests one connection makes at most in a phase (and the distinct ones it draws)
MAX_REQUESTS = 2_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVE = "import sys; from director.director_cli import main; sys.exit(main(sys.argv[1:]))"
#: the same server under cProfile; uvicorn exits cleanly on SIGINT and the stats are saved
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
    argv = [sys.executable, "-c", code, *pre, "serve", str(ddir), "--host", "127.0.0.1"]
    return _server(argv, ddir.parent / f"{ddir.name}-serve.log")


@contextlib.contextmanager
def _server(argv: list[str], log: Path) -> Iterator[tuple[int, int]]:
    """The server ``argv`` on a free port: yields the port and the process id."""
    port = _free_port()
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*argv, "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_bytes()[-2000:].decode(errors="replace")
                raise RuntimeError(f"the Director did not start: {tail}")
            time.sleep(0.05)
        yield port, proc.pid
    finally:
        # SIGINT: uvicorn shuts down, then re-raises it as KeyboardInterrupt, so the
        # profiled variant's ``finally`` still saves its stats (SIGTERM would not)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _paths(vehicles: int, one: int | None, seed: int) -> list[bytes]:
    """What one connection asks for, in order: one vehicle's timestamp (``one``), or a
    vehicle drawn at random from the fleet each time."""
    if one is not None:
        return [b"/vehicles/%s/metadata/timestamp.json" % fleet_vin(one).encode()]
    rng = random.Random(seed)
    return [
        b"/vehicles/%s/metadata/timestamp.json" % fleet_vin(rng.randrange(vehicles)).encode()
        for _ in range(MAX_REQUESTS)
    ]


async def _connection(port: int, paths: list[bytes], end: float, tally: list[int]) -> None:
    """One keep-alive HTTP/1.1 connection asking ``paths`` in turn until ``end``; each
    answer must be 200 with the same body for the same path (``tally``: good, bad)."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    first: dict[bytes, bytes] = {}
    i = 0
    try:
        while time.perf_counter() < end and i < MAX_REQUESTS:
            path = paths[i % len(paths)]
            i += 1
            writer.write(b"GET %s HTTP/1.1\r\nhost: bench\r\n\r\n" % path)
            head = await reader.readuntil(b"\r\n\r\n")
            at = head.lower().index(b"content-length:") + 15
            body = await reader.readexactly(int(head[at : head.index(b"\r\n", at)]))
            ok = head.startswith(b"HTTP/1.1 200 ") and first.setdefault(path, body) == body
            tally[0 if ok else 1] += 1
    finally:
        writer.close()


def _client(
    port: int, ask: tuple[int, int | None], conns: int, start: float, duration: float, out: Any
) -> None:
    """One load process: ``conns`` connections on one event loop (uvloop if installed, as
    uvicorn), each asking :func:`_paths` of ``ask`` (vehicles, one) with its own seed,
    started together at ``start`` (wall clock)."""
    import asyncio

    seeds = random.Random()  # from the OS: a forked process has its parent's state
    paths = [_paths(ask[0], ask[1], seeds.randrange(1 << 30)) for _ in range(conns)]
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        loop_factory = asyncio.new_event_loop
    tally = [0, 0]

    async def main() -> float:
        await asyncio.sleep(max(0.0, start - time.time()))
        t0 = time.perf_counter()
        end = t0 + duration
        await asyncio.gather(*(_connection(port, p, end, tally) for p in paths))
        return time.perf_counter() - t0

    loop = loop_factory()
    try:
        seconds = loop.run_until_complete(main())
    finally:
        loop.close()
    out.put((tally[0], tally[1], seconds))


def _phase(port: int, vehicles: int, one: int | None, duration: float, load: tuple) -> dict:
    """``load`` = (processes, connections each) polling for ``duration`` seconds."""
    procs_n, conns = load
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    start = time.time() + 0.3  # the processes draw their paths meanwhile
    procs = [
        ctx.Process(target=_client, args=(port, (vehicles, one), conns, start, duration, q))
        for _ in range(procs_n)
    ]
    for p in procs:
        p.start()
    results = [q.get(timeout=duration + 120) for _ in procs]
    for p in procs:
        p.join(10)
    done = sum(r[0] for r in results)
    seconds = max(r[2] for r in results)
    return {"requests": done, "errors": sum(r[1] for r in results), "seconds": seconds}


def cpu_seconds(pid: int) -> float:
    """CPU seconds the process ``pid`` has run so far, every thread (nanoseconds from
    ``/proc/PID/task/*/schedstat``; 0 where there is no such file)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def database_cpu_seconds(database: str | None) -> float:
    """CPU seconds used so far by the PostgreSQL backends serving ``database`` (their
    command line names it); 0 for None (SQLite runs in the server's process)."""
    if database is None:
        return 0.0
    total = 0.0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if f" {database} ".encode() in (proc / "cmdline").read_bytes():
                    total += cpu_seconds(int(proc.name))
    return total


def cache_counts(port: int) -> dict[str, float]:
    """The service's cache counters (``uptane_metadata_cache_total{result}``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    pat = r'^uptane_metadata_cache_total\{result="(\w+)"\} ([0-9.e+]+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pat, text, re.M)}


def measure(ddir: Path, vehicles: int, plan: Plan) -> dict[str, Any]:
    """Hit path and fleet-wide polls against one ``serve`` of ``ddir``, rounds ordered
    hit, fleet, fleet, hit, ... (so that neither always goes first while the shared
    machine's load drifts)."""
    one = random.randrange(vehicles)
    rounds: dict[str, list[dict]] = {"hit": [], "fleet": []}
    cache = {"hit": 0.0, "miss": 0.0}
    database = _postgres_database(ddir)
    with director_server(ddir) as (port, pid):
        # warm the interpreter, the connection path and the hit path's vehicle
        _phase(port, vehicles, one, 0.3, (1, 1))
        _phase(port, vehicles, None, 0.3, (1, 1))
        for i in range(plan.rounds):
            for kind in ("hit", "fleet") if i % 2 == 0 else ("fleet", "hit"):
                before, cpu0 = cache_counts(port), cpu_seconds(pid)
                db0 = database_cpu_seconds(database)
                r = _phase(port, vehicles, one if kind == "hit" else None, plan.phase, plan.load)
                r["cpu"] = cpu_seconds(pid) - cpu0
                r["db_cpu"] = database_cpu_seconds(database) - db0
                rounds[kind].append(r)
                if kind == "fleet":
                    after = cache_counts(port)
                    for k in cache:
                        cache[k] += after.get(k, 0) - before.get(k, 0)
    out = {kind: _summary(rs) for kind, rs in rounds.items()}
    out["fleet"]["cache_hits"] = int(cache["hit"])
    out["fleet"]["cache_misses"] = int(cache["miss"])
    out["fleet"]["miss_fraction"] = round(cache["miss"] / max(sum(cache.values()), 1.0), 4)
    return out


def _summary(rs: list[dict]) -> dict[str, Any]:
    """One path's phases: requests per second over them all, and per phase."""
    done = sum(r["requests"] for r in rs)
    return {
        "requests_per_s": done / sum(r["seconds"] for r in rs),
        "requests": done,
        "errors": sum(r["errors"] for r in rs),
        "per_phase_requests_per_s": [round(r["requests"] / r["seconds"], 1) for r in rs],
        "server_cpu_us_per_request": round(sum(r["cpu"] for r in rs) * 1e6 / max(1, done), 1),
        "database_cpu_us_per_request": round(sum(r["db_cpu"] for r in rs) * 1e6 / max(1, done), 1),
    }


def _postgres_database(ddir: Path) -> str | None:
    """The PostgreSQL database of the Director in ``ddir``; None on SQLite."""
    from sqlalchemy.engine import make_url

    from director.config import Config

    url = make_url(Config.load(ddir / "director.json").db_url)
    return url.database if url.get_backend_name() == "postgresql" else None


def profile_fleet(ddir: Path, vehicles: int, plan: Plan) -> str | None:
    """The server's own profile during fleet-wide polls (a missed goal's explanation)."""
    prof = ddir.parent / f"{ddir.name}.prof"
    with director_server(ddir, prof) as (port, _):
        _phase(port, vehicles, None, plan.phase, plan.load)
    return server_profile(prof)


def _figure(db: str, n: int, m: dict[str, Any], plan: Plan) -> Figure:
    fleet, hit = m["fleet"], m["hit"]
    ratio = fleet["requests_per_s"] / hit["requests_per_s"]
    errors = fleet["errors"] + hit["errors"]
    met = ratio >= GOAL_RATIO and errors == 0
    procs, conns = plan.load
    notes = (
        f"{n:,} vehicles on {db}; uptane-director serve (uvicorn, one process,"
        f" {_uvicorn_stack()}) on {cpu_count()} cores shared with the load ({procs} processes"
        f" of {conns} keep-alive connections), {plan.rounds} × {plan.phase:g} s per path,"
        f" alternated. Fleet-wide: {fleet['requests']:,} requests over random vehicles,"
        f" {fleet['miss_fraction']:.0%} of them cache misses, server CPU"
        f" {fleet['server_cpu_us_per_request']:.0f} µs a request{_db_cpu(fleet)}; hit path:"
        f" {hit['requests']:,} requests for one vehicle,"
        f" {hit['server_cpu_us_per_request']:.0f} µs; {errors} errors."
    )
    if not met:
        notes += " " + missed_note(ratio, fleet, hit)
    return Figure(
        f"{NAME}_{db}_{size_label(n)}",
        f"{TITLE} ({n:,} vehicles, {db})",
        GOAL,
        value=fleet["requests_per_s"],
        reference=hit["requests_per_s"],
        ratio=ratio,
        met=met,
        unit="requests/s fleet-wide",
        reference_unit="requests/s, hit path (one vehicle)",
        notes=notes,
        details={"database": db, "plan": plan.__dict__, **m},
        size=n,
        size_unit="vehicles",
        series=f"{NAME}_{db}",
        load_average=load_average(),
    )


def _db_cpu(path: dict[str, Any]) -> str:
    us = path["database_cpu_us_per_request"]
    return f" and PostgreSQL's {us:.0f} µs" if us else ""


def missed_note(ratio: float, fleet: dict[str, Any], hit: dict[str, Any]) -> str:
    """Why a fleet-wide figure is under its goal, in the figure's notes."""
    cpu = fleet["server_cpu_us_per_request"] / max(hit["server_cpu_us_per_request"], 1e-9)
    db = fleet["database_cpu_us_per_request"]
    why = (
        f" PostgreSQL's own {db:.0f} µs of CPU a request on the same two cores, and the"
        " event loop waiting for each round trip (a lookup is not in the server's process"
        " as SQLite's is)."
        if db
        else ""
    )
    return (
        f"Missed by {GOAL_RATIO - ratio:.2f}: a miss ({fleet['miss_fraction']:.0%} of the"
        " fleet-wide polls) costs a share of one indexed lookup that a hit does not: server"
        f" CPU a request {cpu:.2f} × the hit path's;{why} Load average"
        f" {', '.join(f'{x:g}' for x in load_average() or [])}. The profile in the details"
        " shows where the server's time goes; docs/scale.md, what would close the gap."
    )


def quiet(ddir: Path) -> None:
    """No log line per request (``log_requests`` false, as a busy fleet runs): the lines
    would cost both paths alike, and the measured difference is the cache's."""
    from director.config import Config

    cfg = Config.load(ddir / "director.json")
    cfg.log_requests = False
    cfg.save(ddir / "director.json")


@contextlib.contextmanager
def _databases(work: Path, ddir: Path) -> Iterator[dict[str, Path | str]]:
    """The Director directory of each database (SQLite: ``ddir``), or why there is none."""
    if str(ROOT) not in sys.path:  # load/ is a tool beside the packages
        sys.path.insert(0, str(ROOT))
    from load import pgcluster

    if pgcluster.pg_bin() is None:
        yield {"sqlite": ddir, "postgresql": "PostgreSQL binaries (initdb, pg_ctl) not installed"}
        return
    with pgcluster.cluster("uptane-fig8-pg-") as pg:
        url = pg.create_database(f"director_fig8_{os.getpid()}")
        yield {"sqlite": ddir, "postgresql": same_keys(ddir, work / "director-pg", url)}


def run(smoke: bool = False, quick: bool = False) -> list[Figure]:
    plan = SMOKE if smoke else FULL
    out: list[Figure] = []
    work = Path(tempfile.mkdtemp(prefix="bench-polls-"))
    try:
        ddir = init_director(work)
        quiet(ddir)
        with _databases(work, ddir) as dirs:
            live = [d for d in dirs.values() if isinstance(d, Path)]
            registered = 0
            for n in sizes(smoke, quick, tiny=(40,)):
                grow_fleet(live, registered, n, workers=1 if smoke else 2)
                registered = n
                for db in DATABASES:
                    d = dirs[db]
                    if not isinstance(d, Path):
                        out.append(_not_measured(db, n, d))
                        continue
                    fig = _figure(db, n, measure(d, n, plan), plan)
                    if not fig.met and not smoke and n == max(sizes(smoke, quick)):
                        fig.details["profile"] = profile_fleet(d, n, plan)
                    out.append(fig)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _not_measured(db: str, n: int, reason: str) -> Figure:
    fig = not_yet(f"{NAME}_{db}_{size_label(n)}", f"{TITLE} ({n:,} vehicles, {db})", GOAL, reason)
    fig.size, fig.size_unit, fig.series = n, "vehicles", f"{NAME}_{db}"
    return fig


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
