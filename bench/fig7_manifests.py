"""Figure 7: Director manifest processing against the ed25519 verify bound.

A real :class:`director.director.Director` (SQLite inventory in a file, as ``uptane-director
init`` creates it, ``synchronous=FULL``) processes signed vehicle version manifests, each
carrying three ECU version reports (the Primary's own and two Secondaries'), through
:meth:`~director.director.Director.process_manifest`: decode, the Primary's signature,
each report's signature, nonce and time checks, and the durable commit that stores the
manifest, the nonces and the installed images. The manifests are built beforehand.

As the HTTP service runs it: ``THREADS`` submitter threads (the server's thread pool:
concurrent uploads) each send the manifests of their own vehicles, one after another, to
the same Director, whose writer groups what arrives together into one transaction and
one fsync (``director/groupcommit.py``). Figure: manifests accepted / wall time, from the
first submission to the last answer (every answer comes after its commit is durable).
The same Director answering one manifest at a time (one commit each) is in the details.

Reference: the verify bound, ``1 / (4 × one ed25519 verify)`` manifests per second (one
VVM signature and three report signatures), with the verify measured in this run. Figure:
manifests per second / bound (≥ 0.5).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Figure, median
from bench.directorkit import BenchVehicle, make_director
from uptane.metadata import JSON

NAME = "director_manifest_processing"
TITLE = "Director manifest processing, VVMs with 3 ECU reports, vs the ed25519 verify bound"
GOAL = "throughput / (1 / (4 × one verify)) ≥ 0.5"
#: concurrent uploads (the server's thread pool) and the vehicles they come from
THREADS, VEHICLES = 32, 64


def _verify_cost(repeat: int = 5) -> float:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    payload = b"x" * 400  # about the signed part of one ECU report
    sig = key.sign(payload)
    pub = key.public_key()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(50):
            pub.verify(sig, payload)
        samples.append((time.perf_counter() - t0) / 50)
    return median(samples)


def _workload(vehicles: list[BenchVehicle], per_vehicle: int) -> list[list[tuple[str, bytes]]]:
    """Each submitter thread's manifests: its vehicles' in turn (thread i has vehicles i,
    i + THREADS, ...), so concurrent uploads come from different vehicles."""
    threads = min(THREADS, len(vehicles))
    work: list[list[tuple[str, bytes]]] = [[] for _ in range(threads)]
    for _ in range(per_vehicle):
        for i, v in enumerate(vehicles):
            work[i % threads].append((v.vin, v.manifest(JSON)))
    return work


def _concurrent(
    d: Any,
    work: list[list[tuple[str, bytes]]],
    wrap: Callable[[Callable[[], None]], Callable[[], None]] = lambda f: f,
) -> tuple[float, float]:
    """Every thread sends its manifests one after another (each answered after its commit).
    Returns manifests accepted per second of wall time, and the process's CPU seconds (all
    threads) per manifest."""
    start = threading.Barrier(len(work) + 1)
    errors: list[BaseException] = []

    def submit(items: list[tuple[str, bytes]]) -> None:
        start.wait()
        try:
            for vin, data in items:
                d.process_manifest(vin, data, JSON)
        except BaseException as e:  # a refused manifest is a bug in the bench
            errors.append(e)

    threads = [
        threading.Thread(target=wrap(lambda items=items: submit(items)), daemon=True)
        for items in work
    ]
    for t in threads:
        t.start()
    start.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.join()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    if errors:
        raise errors[0]
    n = sum(map(len, work))
    return n / elapsed, cpu / n


def _serial(d: Any, items: list[tuple[str, bytes]]) -> float:
    """One manifest at a time (each its own batch and commit): manifests per second."""
    t0 = time.perf_counter()
    for vin, data in items:
        d.process_manifest(vin, data, JSON)
    return len(items) / (time.perf_counter() - t0)


def _statements(d: Any, work: list[list[tuple[str, bytes]]]) -> tuple[list[str], list[str]]:
    """The SQL statements (first words) SQLite ran for one manifest alone in its batch,
    and for a batch of manifests sent together (as traced by sqlite3)."""
    import sqlalchemy as sa

    seen: list[str] = []

    def trace(statement: str) -> None:
        seen.append(" ".join(statement.split()[:2]).upper())

    def on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.set_trace_callback(trace)

    d.writer.close()
    sa.event.listen(d.engine, "connect", on_connect)
    d.engine.dispose()  # new connections, traced
    try:
        vin, data = work[0].pop()
        d.process_manifest(vin, data, JSON)
        one = list(seen)
        seen.clear()
        _concurrent(d, [[w.pop()] for w in work if w])
        batch = list(seen)
    finally:
        d.writer.close()
        sa.event.remove(d.engine, "connect", on_connect)
        d.engine.dispose()
    return one, batch


def _profile(d: Any, work: list[list[tuple[str, bytes]]]) -> str:
    """A concurrent round under cProfile, every submitter thread and the writer profiled
    (attribution only: the profiler slows each thread): the top functions by own time,
    summed over threads. A C call that lets the GIL go (an ed25519 verify, an SQLite
    statement) counts the wait to get it back too; :func:`_cpu_split` has the CPU."""
    profiles: list[cProfile.Profile] = []

    def profiled(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            prof = cProfile.Profile()
            profiles.append(prof)
            prof.enable()
            try:
                fn()
            finally:
                prof.disable()

        return run

    d.writer.close()
    d.writer._loop = profiled(d.writer._loop)  # the next writer thread runs profiled
    try:
        _concurrent(d, work, profiled)
    finally:
        d.writer.close()
        del d.writer._loop
    stats = pstats.Stats(profiles[0])
    for p in profiles[1:]:
        stats.add(p)
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.strip_dirs().sort_stats("tottime").print_stats(15)
    lines = [ln.rstrip() for ln in out.getvalue().splitlines()]
    top = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    total = next((ln.strip() for ln in lines if "function calls" in ln), "")
    return "\n".join([f"{total} (all threads, sorted by own time)", *lines[top:]]).strip()


def _cpu_split(d: Any, work: list[list[tuple[str, bytes]]]) -> dict[str, float]:
    """CPU time (``time.thread_time``) per manifest in a concurrent round, by part: the
    submitter threads' signature checks against the cached keys (4 verifies and their
    calls), the rest of their work (decode, queueing, waking up), and the writer's
    batches (the SQL, savepoints, commits). Attribution only: the parts are timed by
    wrapping the Director's methods on this instance."""
    acc = {"signature checks (submitters)": 0.0, "submitters in all": 0.0, "writer": 0.0}
    lock = threading.Lock()

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*args)
            finally:
                with lock:
                    acc[name] += time.thread_time() - t0

        return run

    d.writer.close()
    d.manifests._precheck = timed("signature checks (submitters)", d.manifests._precheck)
    d.process_manifest = timed("submitters in all", d.process_manifest)
    d.writer._commit = timed("writer", d.writer._commit)
    try:
        _concurrent(d, work)
    finally:
        d.writer.close()
        del d.manifests._precheck, d.process_manifest, d.writer._commit
    n = sum(map(len, work))
    checks = acc["signature checks (submitters)"]
    return {
        "signature checks (submitters)": round(checks / n * 1e6, 1),
        "decode and the rest (submitters)": round((acc["submitters in all"] - checks) / n * 1e6, 1),
        "writer (SQL, savepoints, commits)": round(acc["writer"] / n * 1e6, 1),
    }


def run(smoke: bool = False) -> list[Figure]:
    from director.director import Director

    vehicles, per_vehicle, rounds = (8, 2, 1) if smoke else (VEHICLES, 20, 5)
    serial_count = 10 if smoke else 200
    with tempfile.TemporaryDirectory(prefix="bench-director-") as tmp:
        ddir, fleet = make_director(Path(tmp), vehicles=vehicles)
        d = Director(ddir)
        try:
            # warm up (unmeasured): every vehicle's keys read once, caches and the WAL file
            # as in the steady state of a server
            _concurrent(d, _workload(fleet, per_vehicle))
            rates, costs, cpus, sizes = [], [], [], Counter[int]()
            for _ in range(rounds):
                work = _workload(fleet, per_vehicle)
                costs.append(_verify_cost())
                d.writer.batch_sizes.clear()
                rate, cpu = _concurrent(d, work)
                rates.append(rate)
                cpus.append(cpu)
                sizes.update(d.writer.batch_sizes)
                costs.append(_verify_cost())
            cars = [fleet[i % len(fleet)] for i in range(serial_count)]
            serial = _serial(d, [(v.vin, v.manifest(JSON)) for v in cars])
            value = median(rates)
            one = median(costs)
            bound = 1.0 / (4 * one)
            ratio = value / bound
            batches = sum(sizes.values())
            mean_batch = sum(k * v for k, v in sizes.items()) / max(batches, 1)
            threads = min(THREADS, vehicles)
            total = vehicles * per_vehicle
            fig = Figure(
                NAME,
                TITLE,
                GOAL,
                value=value,
                reference=bound,
                ratio=ratio,
                met=ratio >= 0.5,
                unit="manifests/s (median of rounds)",
                reference_unit="manifests/s = 1 / (4 × one ed25519 verify)",
                notes=(
                    f"{rounds} rounds of {total} JSON VVMs (3 reports each) from {vehicles} "
                    f"vehicles, sent by {threads} threads to one Director.process_manifest "
                    f"on SQLite (synchronous=FULL, group commit); one verify "
                    f"{one * 1e6:.1f} µs. {batches} commits, {mean_batch:.1f} manifests "
                    f"each on average. One manifest at a time (a commit each): "
                    f"{serial:,.0f}/s, ratio {serial / bound:.3g}."
                ),
                details={
                    "one_verify_us": round(one * 1e6, 2),
                    "rates": [round(r, 1) for r in rates],
                    # CPU time of the whole process (every thread, both cores) per manifest,
                    # against wall time per manifest: above it, the work used both cores
                    "cpu_us_per_manifest": [round(c * 1e6, 1) for c in cpus],
                    "wall_us_per_manifest": [round(1e6 / r, 1) for r in rates],
                    "threads": threads,
                    "vehicles": vehicles,
                    "manifests_per_round": total,
                    "batch_sizes": {str(k): v for k, v in sorted(sizes.items())},
                    "mean_batch": round(mean_batch, 2),
                    "serial_manifests_per_s": round(serial, 1),
                    "serial_ratio": round(serial / bound, 4),
                },
            )
            one_stmts, batch_stmts = _statements(d, _workload(fleet, 1))
            fig.details["statements_one_manifest"] = one_stmts
            fig.details["statements_per_batch_of"] = {
                "manifests": min(threads, vehicles),
                "statements": len(batch_stmts),
                "commits": batch_stmts.count("COMMIT"),
            }
            fig.notes += (
                f" {len(one_stmts)} SQL statements for a manifest alone in its batch (BEGIN, "
                f"SAVEPOINT, RELEASE and COMMIT included)."
            )
            fig.details["cpu_us_per_manifest_by_part"] = _cpu_split(
                d, _workload(fleet, max(1, per_vehicle // 4))
            )
            if not fig.met:
                fig.details["profile"] = _profile(d, _workload(fleet, max(1, per_vehicle // 4)))
        finally:
            d.dispose()
    return [fig]
