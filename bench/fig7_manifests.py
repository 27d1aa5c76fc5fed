"""Figure 7: vehicle version manifests POSTed over HTTP to ``uptane-director serve``,
against the two-core bound of their signature checks, at 1,000, 10,000 and 100,000
registered vehicles (issue 20).

The service as users run it: the ``uptane-director serve`` console script (FastAPI under
uvicorn, one process, its default configuration: SQLite in a file, ``synchronous=FULL``,
group commit, a JSON log line per request) in its own process. The fleet: every vehicle
has a Primary and two Secondaries, each ECU with its own ed25519 key (derived from a seed,
so that the load generator can sign for any vehicle without holding 300,000 keys). The
vehicles are written to the inventory in bulk (the same vehicle and ECU rows as
``uptane-director vehicle add`` writes, with the DBAPI's ``executemany``), without their
first signed metadata: manifest processing reads none of it, and signing it for 100,000
vehicles would take minutes. The fleet grows from one size to the next in one database.

The load: ``CLIENTS`` processes with ``CONNECTIONS`` keep-alive connections each, every
connection with one request in flight (so at most ``CLIENTS × CONNECTIONS`` uploads wait
in the server at once), sending signed JSON VVMs of three reports, built beforehand, from
vehicles drawn at random across the whole fleet (a different vehicle for each manifest
until the fleet is used up). A warm-up (not measured) comes first: one manifest from every
vehicle where the fleet fits the Director's per-vehicle key cache (``cache_vehicles``,
10,000 by default), as on a server that has run a while, whose manifests are checked in
the request threads; ``WARMUP`` manifests where it does not (100,000), where nearly every
manifest comes from a vehicle whose keys are not cached, as in such a fleet, and is checked
in the writer thread. The figure is manifests accepted per second of wall time (every
answer 200 with ``"accepted": true``, sent after its durable commit), median of the rounds.

Reference: the verify bound, ``cores / (4 × one signature check)`` manifests per second:
each manifest needs four signature checks (the VVM's and three reports'), timed in this
run between the rounds as the server makes them (``SignedManifest.verify`` of
:mod:`uptane.manifest` on a real manifest; the fastest of many short runs, as for the other
CPU-bound references: load from elsewhere only adds time), and the server's process may
use every core of the machine (``cores``). The load generator runs on the same cores; its CPU per
manifest is in the details, with the server's. Figure: throughput / bound (≥ 0.5). A miss
adds a profile of the server (every thread, CPU time) over one more round, split by what
spends the time, with where the signatures were checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing as mp
import os
import pstats
import random
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import ROOT, Figure, cpu_count, median, size_label, sizes

NAME = "director_manifest_processing"
TITLE = "Director manifests over HTTP (uptane-director serve), 3 reports each, vs the verify bound"
GOAL = "throughput / (cores / (4 × one signature check)) ≥ 0.5"
RATIO = 0.5
#: signature checks per manifest: the VVM's and one per ECU report
CHECKS = 4
HARDWARE = ("tcu-v5", "brk-v1", "ivi-v3")
#: load processes, and keep-alive connections (one request in flight each) per process
CLIENTS, CONNECTIONS = 2, 16
#: manifests per measured round, measured rounds, manifests of the warm-up round, and of
#: the round profiled when the goal is missed
MANIFESTS, ROUNDS, WARMUP, PROFILED = 2000, 3, 500, 1000
#: the largest cached fleet warmed up under the profiler
PROFILE_WARM_MAX = 2000
#: vehicles written per bulk transaction
CHUNK = 5000


# --- the fleet --------------------------------------------------------------------------


def vin(i: int) -> str:
    return f"VIN-F7-{i:06d}"


def _seed(i: int, j: int) -> bytes:
    """ECU ``j`` of vehicle ``i``'s private key (ed25519 seed)."""
    return hashlib.sha256(b"bench fig7 %d %d" % (i, j)).digest()


def _public_hex(span: tuple[int, int]) -> list[str]:
    """The raw public keys (hex) of every ECU of vehicles ``span``, vehicle by vehicle."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    derive = ed25519.Ed25519PrivateKey.from_private_bytes
    return [
        derive(_seed(i, j)).public_key().public_bytes_raw().hex()
        for i in range(*span)
        for j in range(len(HARDWARE))
    ]


def _key_row(public: str) -> tuple[str, str]:
    """An ECU's stored key text and key id, as ``vehicle add`` writes them (checked against
    :class:`uptane.keys.Key` for the first vehicle of every chunk)."""
    text = f'{{"keytype": "ed25519", "keyval": {{"public": "{public}"}}, "scheme": "ed25519"}}'
    canon = f'{{"keytype":"ed25519","keyval":{{"public":"{public}"}},"scheme":"ed25519"}}'
    return text, hashlib.sha256(canon.encode()).hexdigest()


def _check_key_row(i: int, public: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from uptane.keys import Key

    key = Key.from_public_object(
        ed25519.Ed25519PrivateKey.from_private_bytes(_seed(i, 0)).public_key()
    )
    text, kid = _key_row(public)
    if (text, kid) != (json.dumps(key.to_dict(), sort_keys=True), key.keyid):
        raise AssertionError("the bench writes ECU keys unlike the Director")


def register(ddir: Path, start: int, stop: int) -> float:
    """Vehicles ``start`` .. ``stop - 1`` (three ECUs each) written to the Director's
    SQLite inventory in bulk (the DBAPI's ``executemany``, a transaction per ``CHUNK``
    vehicles), then the WAL checkpointed as a server that ran a while would have it;
    returns the seconds it took."""
    from director.director import Director

    t0 = time.perf_counter()
    spans = [(a, min(a + CHUNK, stop)) for a in range(start, stop, CHUNK)]
    with mp.get_context("fork").Pool(cpu_count()) as pool:
        publics = pool.map(_public_hex, spans)
    d = Director(ddir)
    try:
        if d.engine.dialect.name != "sqlite":
            raise RuntimeError("figure 7 registers its fleet in SQLite")
        created = int(time.time())
        for (a, b), keys in zip(spans, publics, strict=True):
            _check_key_row(a, keys[0])
            with d.engine.begin() as conn:
                last = conn.exec_driver_sql("SELECT max(id) FROM vehicles").scalar() or 0
                conn.exec_driver_sql(
                    "INSERT INTO vehicles (vin, created_at) VALUES (?, ?)",
                    [(vin(i), created) for i in range(a, b)],
                )
                ids: dict[str, int] = dict(
                    conn.exec_driver_sql("SELECT vin, id FROM vehicles WHERE id > ?", (last,)).all()
                )
                conn.exec_driver_sql(
                    "INSERT INTO ecus (vehicle_id, serial, hardware_id, public_key, key_id,"
                    " is_primary) VALUES (?, ?, ?, ?, ?, ?)",
                    list(_ecu_rows(a, b, ids, keys)),
                )
        raw = d.engine.raw_connection()
        try:
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
        finally:
            raw.close()
    finally:
        d.dispose()
    return time.perf_counter() - t0


def _ecu_rows(
    a: int, b: int, ids: dict[str, int], keys: list[str]
) -> Iterator[tuple[int, str, str, str, str, bool]]:
    """The ECU rows of vehicles ``a`` .. ``b - 1``, as ``vehicle add`` writes them."""
    k = iter(keys)
    for i in range(a, b):
        v = vin(i)
        for j, hw in enumerate(HARDWARE):
            text, kid = _key_row(next(k))
            yield ids[v], f"{v}-ecu{j}", hw, text, kid, j == 0


def manifest(i: int) -> bytes:
    """A fresh signed JSON VVM of vehicle ``i``: a report per ECU, a new nonce each."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from bench.directorkit import BenchVehicle
    from uptane.keys import PrivateKey

    v = BenchVehicle(vin(i))
    for j, hw in enumerate(HARDWARE):
        serial = f"{v.vin}-ecu{j}"
        v.keys[serial] = PrivateKey(ed25519.Ed25519PrivateKey.from_private_bytes(_seed(i, j)))
        v.hardware[serial] = hw
    return v.manifest()


# --- the server -------------------------------------------------------------------------

#: the same service with every thread under cProfile (``threading.setprofile`` starts a
#: profiler in each new thread) counting each thread's CPU time (``time.thread_time``: a
#: thread waiting for a lock, the GIL or a socket counts nothing); the stats of all threads
#: are merged into one file when uvicorn stops on SIGINT
SERVE_PROFILED = """\
import cProfile, pstats, signal, sys, threading, time, types
from director.director_cli import main
profiles = [cProfile.Profile(time.thread_time)]
def start(frame, event, arg):
    sys.setprofile(None)
    p = cProfile.Profile(time.thread_time)
    profiles.append(p)
    p.enable()
def clear(signum, frame):  # SIGUSR1: the measured part starts (startup and warm-up out)
    for p in profiles:
        p.clear()
signal.signal(signal.SIGUSR1, clear)
threading.setprofile(start)
profiles[0].enable()
try:
    main(sys.argv[2:])
finally:
    profiles[0].disable()
    stats = pstats.Stats(profiles[0])
    for p in profiles[1:]:
        # not p.disable() from this thread: it would close the calls still open in p's
        # thread (a worker waiting for work) with this thread's CPU clock
        p.snapshot_stats()
        stats.add(types.SimpleNamespace(create_stats=lambda: None, stats=p.stats))
    stats.dump_stats(sys.argv[1])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_argv(ddir: Path, port: int, profile_to: Path | None) -> list[str]:
    tail = ["serve", str(ddir), "--host", "127.0.0.1", "--port", str(port)]
    if profile_to is not None:
        return [sys.executable, "-c", SERVE_PROFILED, str(profile_to), *tail]
    script = Path(sys.executable).with_name("uptane-director")
    if script.exists():  # the console script, as users run it
        return [str(script), *tail]
    code = "import sys; from director.director_cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *tail]


@contextlib.contextmanager
def server(ddir: Path, log: Path, profile_to: Path | None = None) -> Iterator[tuple[int, int]]:
    """``uptane-director serve DIR`` on a free port; yields (port, pid). Its output goes to
    ``log`` (a request log line each, as in production)."""
    port = _free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            _serve_argv(ddir, port, profile_to), cwd=ROOT, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_bytes()[-2000:].decode(errors="replace")
                raise RuntimeError(f"uptane-director serve did not start: {tail}")
            time.sleep(0.05)
        yield port, proc.pid
    finally:
        # SIGINT: uvicorn shuts down, and the profiled variant saves its stats
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# --- the load ---------------------------------------------------------------------------


def _request(port: int, i: int) -> bytes:
    body = manifest(i)
    head = (
        f"POST /vehicles/{vin(i)}/manifest HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _answer(buf: bytearray) -> tuple[int, bytes] | None:
    """The first whole response in ``buf`` (status, body), removed from it; None if it
    has not all arrived."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    at = head.find(b"content-length:")
    length = int(head[at + 15 : head.index(b"\r\n", at)]) if at >= 0 else 0
    if len(buf) < end + 4 + length:
        return None
    status, body = int(head[9:12]), bytes(buf[end + 4 : end + 4 + length])
    del buf[: end + 4 + length]
    return status, body


def drive(port: int, requests: list[bytes], conns: int) -> dict[str, Any]:
    """Send ``requests`` over ``conns`` keep-alive connections, one in flight on each;
    returns the accepted and refused counts, the first refusal, and the span of time."""
    sel = selectors.DefaultSelector()
    todo = iter(requests)
    done = bad = 0
    first_bad = ""
    t0 = time.monotonic()
    for _ in range(min(conns, len(requests))):
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(next(todo))
        sel.register(s, selectors.EVENT_READ, (s, bytearray()))
    while sel.get_map():
        ready = sel.select(timeout=60)
        if not ready:
            raise RuntimeError("no answer from the Director in 60 s")
        for key, _ in ready:
            s, buf = key.data
            data = s.recv(1 << 16)
            if not data:
                raise RuntimeError("the Director closed a connection")
            buf += data
            while (got := _answer(buf)) is not None:
                status, body = got
                if status == 200 and b'"accepted":true' in body:
                    done += 1
                else:
                    bad += 1
                    first_bad = first_bad or f"{status} {body[:300]!r}"
                nxt = next(todo, None)
                if nxt is None:
                    sel.unregister(s)
                    s.close()
                    break
                s.sendall(nxt)
    return {"done": done, "bad": bad, "first_bad": first_bad, "t0": t0, "t1": time.monotonic()}


def _client(port: int, rounds: list[list[int]], conns: int, go: list[Any], q: Any) -> None:
    """One load process: builds its requests for every round, says so, then sends each
    round when told (``go[r]``) and reports it with its CPU seconds."""
    try:
        built = [[_request(port, i) for i in r] for r in rounds]
        q.put(("ready", None))
        for r, reqs in enumerate(built):
            go[r].wait()
            c0 = time.process_time()
            out = drive(port, reqs, conns)
            out["cpu"] = time.process_time() - c0
            q.put(("round", out))
    except BaseException as e:  # reported to the parent, which raises it
        q.put(("error", f"{type(e).__name__}: {e}"))


def plan(n: int, per_round: list[int], clients: int, seed: int = 0) -> list[list[list[int]]]:
    """Each load process's vehicle indices for each round: a random order of the fleet, a
    different vehicle for each manifest until the fleet is used up (then again)."""
    rng = random.Random(n * 100 + seed)
    order: list[int] = []
    need = sum(per_round)
    while len(order) < need:
        order += rng.sample(range(n), n)
    out: list[list[list[int]]] = [[] for _ in range(clients)]
    at = 0
    for m in per_round:
        this = order[at : at + m]
        at += m
        for c in range(clients):
            out[c].append(this[c::clients])
    return out


def load(
    port: int,
    pid: int,
    plans: list[list[list[int]]],
    before: Callable[[int], None] = lambda r: None,
) -> list[dict[str, Any]]:
    """Run the rounds of ``plans`` (each load process's vehicles per round, :func:`plan`)
    against the server, calling ``before(r)`` before round ``r``; one result per round
    (rate, CPU per manifest of the server and of the load)."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    rounds = [sum(len(p[r]) for p in plans) for r in range(len(plans[0]))]
    go = [ctx.Event() for _ in rounds]
    procs = [
        ctx.Process(target=_client, args=(port, p, CONNECTIONS, go, q), daemon=True) for p in plans
    ]
    for p in procs:
        p.start()
    try:
        _expect(q, "ready", len(procs), 600)
        results = []
        for r, m in enumerate(rounds):
            before(r)
            s0 = _cpu_seconds(pid)
            go[r].set()
            outs = _expect(q, "round", len(procs), 600)
            s1 = _cpu_seconds(pid)
            wall = max(o["t1"] for o in outs) - min(o["t0"] for o in outs)
            done, bad = sum(o["done"] for o in outs), sum(o["bad"] for o in outs)
            if bad or done != m:
                firsts = [o["first_bad"] for o in outs if o["first_bad"]]
                raise RuntimeError(f"{bad} of {m} manifests refused: {firsts[:1]}")
            results.append(
                {
                    "rate": done / wall,
                    "wall_s": wall,
                    "client_cpu_us": sum(o["cpu"] for o in outs) / done * 1e6,
                    "server_cpu_us": None if s0 is None or s1 is None else (s1 - s0) / done * 1e6,
                }
            )
        return results
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()


def _expect(q: Any, kind: str, count: int, timeout: float) -> list[Any]:
    got: list[Any] = []
    while len(got) < count:
        what, value = q.get(timeout=timeout)
        if what == "error":
            raise RuntimeError(f"a load process failed: {value}")
        if what != kind:
            raise RuntimeError(f"a load process said {what}, not {kind}")
        got.append(value)
    return got


# --- the reference ----------------------------------------------------------------------


def check_costs(samples: int = 30, repeat: int = 20) -> dict[str, float]:
    """Seconds of the four signature checks of one real manifest, as the server makes them
    (:meth:`~uptane.manifest.SignedManifest.verify`), and of the raw ed25519 verify of
    ``cryptography`` alone: the fastest of ``samples`` short runs (pure CPU work: load from
    elsewhere only adds time, so the fastest is the machine's own cost; the median is
    kept too); and how much faster two threads verify than one (whether a verify lets
    Python's GIL go)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from uptane.keys import Key
    from uptane.limits import PRIMARY
    from uptane.manifest import decode_vehicle_manifest

    m = decode_vehicle_manifest(manifest(0), PRIMARY)
    derive = ed25519.Ed25519PrivateKey.from_private_bytes
    keys = [Key.from_public_object(derive(_seed(0, j)).public_key()) for j in range(len(HARDWARE))]
    pairs: list[tuple[Any, Key]] = [(m, keys[0]), *zip(m.signed.reports, keys, strict=True)]

    def four() -> None:
        for signed, key in pairs:
            signed.verify(key)

    checks = [_timed(four, repeat) for _ in range(samples)]
    raw = derive(_seed(0, 0))
    sig, pub = raw.sign(b"x" * 400), raw.public_key()
    ones = [_timed(lambda: pub.verify(sig, b"x" * 400), repeat) for _ in range(samples)]
    return {
        "per_manifest": min(checks),
        "per_manifest_median": median(checks),
        "raw_verify": min(ones),
        "two_threads": _two_threads(four, 5 * repeat),
    }


def _timed(fn: Any, repeat: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def _two_threads(fn: Any, repeat: int) -> float:
    """Throughput of ``fn`` in two threads at once / in one thread."""
    one = _timed(fn, repeat)
    spans: list[float] = []
    threads = [threading.Thread(target=lambda: spans.append(_timed(fn, repeat))) for _ in range(2)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    both = (time.perf_counter() - t0) / (2 * repeat)
    return one / both


# --- where the time goes ----------------------------------------------------------------

#: (category, substrings of "file:function"), tried in order; CPU time under cProfile
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("signature checks (ed25519)", ("keys.py:verify", "signatures.py", "'verify' of")),
    (
        "request log lines and ids",
        (
            "director/logs.py",
            "storage/logs.py",
            "/logging/",
            "uuid.py",
            "urandom",
            "'write' of '_io",
        ),
    ),
    (
        "SQL and commits (writer)",
        ("groupcommit.py", "sqlite3", "sqlalchemy", "director/inventory.py"),
    ),
    (
        "manifest decode and checks",
        ("/uptane/", "director/manifests.py", "director/storable", "director/director.py"),
    ),
    (
        "locks, queues and waking threads",
        ("'acquire' of", "'release' of", "threading.py", "queue.py", "_queue"),
    ),
    (
        "HTTP, ASGI and the framework",
        (
            "uvicorn",
            "starlette",
            "fastapi",
            "httptools",
            "h11",
            "anyio",
            "asyncio",
            "uvloop",
            "pydantic",
            "prometheus",
            "opentelemetry",
            "socket",
            "director/httpcommon.py",
            "director/director_server.py",
            "director/certs.py",
            "director/metrics.py",
            "json/",
            "typing.py",
            "contextlib.py",
            "functools.py",
        ),
    ),
]


def _category(key: tuple[str, int, str]) -> str | None:
    where = f"{key[0]}:{key[2]}"
    return next((name for name, keys in CATEGORIES if any(k in where for k in keys)), None)


def split(path: Path, manifests: int) -> tuple[dict[str, float], str, dict[str, int]]:
    """The server's profile (every thread, CPU time): µs per manifest of own time by
    category, the top functions by own time, and where the manifests' signatures were
    checked (:func:`checked_in`). A built-in function that matches no category
    (``isinstance``, ``dict.get`` ...) counts for its callers' categories, in proportion
    to the time each caller spent in it."""
    stats = pstats.Stats(str(path))
    cats = {name: 0.0 for name, _ in CATEGORIES} | {"other": 0.0}
    for key, (_cc, _nc, tt, _ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        cat = _category(key)
        if cat is None and callers and (key[0] == "~" or key[0].startswith("<")):
            for caller, row in callers.items():
                cats[_category(caller) or "other"] += row[2]
            continue
        cats[cat or "other"] += tt
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.strip_dirs().sort_stats("tottime").print_stats(20)
    lines = [ln.rstrip() for ln in out.getvalue().splitlines()]
    top = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    total = next((ln.strip() for ln in lines if "function calls" in ln), "")
    table = "\n".join(
        [f"{total} (server, all threads, CPU seconds, by own time)", *lines[top:]]
    ).strip()
    by_part = {k: round(v / manifests * 1e6, 1) for k, v in cats.items()}
    return by_part, table, checked_in(stats)


def checked_in(stats: pstats.Stats) -> dict[str, int]:
    """How many manifests had their signatures checked in the request threads, against
    the ECU keys the Director keeps for the vehicle, and how many in the writer thread,
    inside the batch's transaction, because the keys were not cached (the callers of
    ``director/manifests.py``'s ``_check_signed``); empty if the names changed."""
    names = {
        "_precheck": "the request threads (keys cached)",
        "_unit": "the writer (keys not cached)",
    }
    for key, row in stats.stats.items():  # type: ignore[attr-defined]
        if key[0].endswith("manifests.py") and key[2] == "_check_signed":
            out: dict[str, int] = {}
            for caller, c in row[4].items():
                name = names.get(caller[2], caller[2])
                out[name] = out.get(name, 0) + int(c[1])
            return out
    return {}


# --- the figure -------------------------------------------------------------------------


def measure(
    work: Path, n: int, per_round: list[int], clients: int, repeat: int = 20
) -> dict[str, Any]:
    """Rounds of uploads against a fresh ``serve`` over the fleet of ``n`` vehicles (the
    first a warm-up), the check cost timed before each measured round and after the last."""
    costs: list[dict[str, float]] = []
    with server(work / "director", work / "serve.log") as (port, pid):
        rounds = load(
            port,
            pid,
            plan(n, per_round, clients),
            lambda r: costs.append(check_costs(repeat=repeat)) if r else None,
        )
    costs.append(check_costs(repeat=repeat))
    return {"rounds": rounds[1:], "costs": costs, "per_round": per_round[1]}


def profiled(work: Path, n: int, per_round: list[int], clients: int) -> dict[str, Any]:
    """The same rounds (other vehicles) against the server under cProfile; the profile
    covers the last round only."""
    prof = work / f"serve-{n}.prof"
    with server(work / "director", work / "serve.log", prof) as (port, pid):

        def start_counting(r: int) -> None:
            if r == len(per_round) - 1:
                os.kill(pid, signal.SIGUSR1)
                _get(port, "/healthz")  # Python runs in the main thread: the handler too

        load(port, pid, plan(n, per_round, clients, seed=1), start_counting)
    by_part, table, where = split(prof, per_round[-1])
    return {
        "us_per_manifest_by_category": by_part,
        "signatures_checked_in": where,
        "profile": table,
    }


def _get(port: int, path: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        while s.recv(1 << 16):
            pass


def _figure(n: int, m: dict[str, Any], cores: int, clients: int) -> Figure:
    rates = [r["rate"] for r in m["rounds"]]
    value = median(rates)
    check = min(c["per_manifest"] for c in m["costs"])
    check_median = median([c["per_manifest_median"] for c in m["costs"]])
    raw = min(c["raw_verify"] for c in m["costs"])
    two = median([c["two_threads"] for c in m["costs"]])
    bound = cores / check
    ratio = value / bound
    server = [r["server_cpu_us"] for r in m["rounds"] if r["server_cpu_us"] is not None]
    client = [r["client_cpu_us"] for r in m["rounds"]]
    scpu = statistics.median(server) if server else None
    notes = (
        f"{len(rates)} rounds of {m['per_round']:,} JSON VVMs (3 reports each) from vehicles"
        f" drawn across {n:,} registered, POSTed by {clients} processes × {CONNECTIONS} keep-alive"
        f" connections to uptane-director serve (uvicorn, one process, SQLite), after a"
        f" warm-up of {m['warmup']:,} ("
        + (
            "every vehicle once: the Director's key cache holds the fleet"
            if m["warmup"] >= n
            else f"the fleet is larger than the Director's key cache of {m['cache_vehicles']:,}"
        )
        + f"); rounds {', '.join(f'{r:,.0f}' for r in rates)}/s. Four signature checks"
        f" {check * 1e6:.0f} µs (fastest; median {check_median * 1e6:.0f} µs; {raw * 1e6:.0f}"
        f" µs per raw ed25519 verify), {cores} cores:"
        f" bound {bound:,.0f}/s. Server CPU"
        + (f" {scpu:,.0f} µs per manifest ({scpu * value / 1e6:.2f} cores busy)" if scpu else " —")
        + f", load generator {statistics.median(client):,.0f} µs per manifest; two threads"
        f" run the checks {two:.2f}× as fast as one."
    )
    details: dict[str, Any] = {
        "rates": [round(r, 1) for r in rates],
        "check_us_per_manifest": round(check * 1e6, 1),
        "check_us_per_manifest_median": round(check_median * 1e6, 1),
        "raw_verify_us": round(raw * 1e6, 1),
        "two_thread_speedup": round(two, 2),
        "cores": cores,
        "server_cpu_us_per_manifest": [round(x, 1) for x in server],
        "client_cpu_us_per_manifest": [round(x, 1) for x in client],
        "wall_us_per_manifest": [round(1e6 / r, 1) for r in rates],
        "clients": clients,
        "connections_each": CONNECTIONS,
        "manifests_per_round": m["per_round"],
        "register_s": round(m["register_s"], 1),
        "warmup_manifests": m["warmup"],
        "cache_vehicles": m["cache_vehicles"],
    }
    return Figure(
        f"{NAME}_{size_label(n)}",
        f"{TITLE} ({n:,} vehicles)",
        GOAL,
        value=value,
        reference=bound,
        ratio=ratio,
        met=ratio >= RATIO,
        unit="manifests/s over HTTP (median of rounds)",
        reference_unit=f"manifests/s = {cores} cores / (4 × one signature check)",
        notes=notes,
        details=details,
        size=n,
        size_unit="vehicles",
        series=NAME,
    )


def _cache_vehicles(ddir: Path) -> int:
    """How many vehicles' ECU keys the Director keeps parsed in memory (``cache_vehicles``
    in director.json): manifests of those are checked before they queue for the writer."""
    from director.director import Director

    d = Director(ddir)
    try:
        return int(d.config.cache_vehicles)
    finally:
        d.dispose()


def _profile(work: Path, n: int, cache: int, clients: int) -> dict[str, Any] | None:
    """The server's profile at a size where it is affordable: the warm-up that a cached
    fleet needs takes three times as long under the profiler, so a fleet of more than
    ``PROFILE_WARM_MAX`` vehicles that fits the cache (10,000 by default) is left out (it
    runs the path of the smallest size, every vehicle's keys cached)."""
    if WARMUP < n <= cache and n > PROFILE_WARM_MAX:
        return None
    return profiled(work, n, [n if n <= cache else WARMUP, PROFILED], clients)


def run(smoke: bool = False, quick: bool = False) -> list[Figure]:
    from bench.directorkit import make_director

    rounds = [8 if smoke else MANIFESTS] * (1 if smoke else 2 if quick else ROUNDS)
    clients = 1 if smoke else CLIENTS
    out: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-manifests-") as tmp:
        work = Path(tmp)
        make_director(work, vehicles=0)
        cache = _cache_vehicles(work / "director")
        have = 0
        for n in sizes(smoke, quick):
            took = register(work / "director", have, n)
            have = n
            # the warm-up: every vehicle once where the Director's key cache holds the
            # whole fleet (a server that has run a while), else a few
            warm = n if n <= cache else WARMUP
            m = measure(work, n, [warm, *rounds], clients, repeat=5 if smoke else 20)
            m["register_s"], m["warmup"], m["cache_vehicles"] = took, warm, cache
            fig = _figure(n, m, cpu_count(), clients)
            p = None if fig.met or smoke else _profile(work, n, cache, clients)
            if p is not None:
                fig.details.update(p)
                fig.notes += _profile_notes(p)
            out.append(fig)
    return out


def _profile_notes(p: dict[str, Any]) -> str:
    parts = p["us_per_manifest_by_category"]
    text = (
        " Server CPU by part (µs per manifest, under cProfile, which inflates it): "
        + ", ".join(f"{k} {v:,.0f}" for k, v in parts.items())
        + "."
    )
    where = p.get("signatures_checked_in")
    if where:
        writer = where.get("the writer (keys not cached)", 0)
        total = writer + where.get("the request threads (keys cached)", 0)
        text += f" Signatures checked in the writer thread for {writer:,} of {total:,}."
    return text
