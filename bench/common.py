"""What every benchmark shares: the result entry, timing helpers, the static server and
the profiling hook used to explain a missed goal.

A benchmark module exposes ``run(smoke: bool = False) -> list[Figure]``, optionally with a
``quick: bool = False`` keyword. ``smoke`` runs it at a tiny size (a few seconds at most) so
that the harness cannot rot; the numbers of a smoke run mean nothing. ``quick`` (CI) runs
only the smallest size of each scaling curve, with fewer repetitions. Every figure is a
ratio measured in one run against its reference, so that a noisy, shared machine moves
both sides together.

A figure that depends on a size (targets, vehicles) is measured at each size of
:data:`SIZES` (issue 20): one entry per size, all with the same ``series``, each naming its
``size`` and ``size_unit``; the README shows each series as a table with the growth from one
size to the next.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOT_YET = "not yet measurable"
MEASURED = "measured"
#: the sizes of every scaling curve (targets or vehicles)
SIZES = (1_000, 10_000, 100_000)


def sizes(smoke: bool, quick: bool, tiny: tuple[int, ...] = (30, 60)) -> tuple[int, ...]:
    """The sizes a scaling figure runs at: :data:`SIZES`, the smallest only with
    ``quick``, or ``tiny`` ones in a smoke run."""
    if smoke:
        return tiny
    return SIZES[:1] if quick else SIZES


def size_label(n: int) -> str:
    """``1k``, ``10k``, ``100k`` (entry-name suffixes)."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages now: how busy the shared machine was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


@dataclass
class Figure:
    """One named figure of ``bench/results.json``.

    ``value`` and ``reference`` are in ``unit``; ``ratio`` is value / reference (or the
    value itself where the goal has no reference); ``goal`` says the target in words and
    ``met`` whether this run reached it. A figure that cannot be measured yet has
    ``status == "not yet measurable"``, no numbers, ``met`` False and the reason in
    ``notes``.
    """

    name: str
    title: str
    goal: str
    value: float | None = None
    reference: float | None = None
    ratio: float | None = None
    met: bool = False
    unit: str = ""
    reference_unit: str = ""
    notes: str = ""
    status: str = MEASURED
    details: dict[str, Any] = field(default_factory=dict)
    #: the size this entry was measured at (targets, vehicles, ...), None if it has none
    size: int | None = None
    size_unit: str = ""
    #: the figure this entry is one size of (scaling tables); its own name if empty
    series: str = ""
    #: the 1/5/15-minute load averages when it was measured (the runner fills it in)
    load_average: list[float] | None = None
    #: the measured operation, run under cProfile when the goal is missed (not saved)
    profile_target: Callable[[], Any] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("profile_target", None)
        d["series"] = self.series or self.name
        for k in ("value", "reference", "ratio"):
            if isinstance(d[k], float):
                d[k] = round(d[k], 6)
        return d


def not_yet(name: str, title: str, goal: str, reason: str) -> Figure:
    """A figure whose component is not ready: the harness exists, the number does not."""
    return Figure(name, title, goal, status=NOT_YET, notes=reason)


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes (perf_counter). A ``fn`` that times itself (to
    leave its own setup and cleanup out) returns its seconds as a float instead."""
    t0 = time.perf_counter()
    got = fn()
    elapsed = time.perf_counter() - t0
    return got if isinstance(got, float) else elapsed


def alternate(
    a: Callable[[], Any],
    b: Callable[[], Any],
    runs: int,
    *,
    warmup: int = 1,
) -> tuple[list[float], list[float]]:
    """Run ``a`` and ``b`` alternately (``a b b a a b ...``, so neither always goes first)
    ``runs`` times each after ``warmup`` untimed rounds; returns both lists of seconds."""
    for _ in range(warmup):
        a()
        b()
    ta: list[float] = []
    tb: list[float] = []
    for i in range(runs):
        if i % 2 == 0:
            ta.append(timed(a))
            tb.append(timed(b))
        else:
            tb.append(timed(b))
            ta.append(timed(a))
    return ta, tb


def _profiled(fn: Callable[[], Any], repeat: int) -> cProfile.Profile:
    """``fn`` run ``repeat`` times under cProfile."""
    prof = cProfile.Profile()
    prof.enable()
    try:
        for _ in range(repeat):
            fn()
    finally:
        prof.disable()
    return prof


def profile_summary(fn: Callable[[], Any], *, top: int = 15, repeat: int = 1) -> str:
    """Where the time of ``fn`` goes: the top functions by cumulative time (cProfile)."""
    prof = _profiled(fn, repeat)
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.strip_dirs().sort_stats("cumulative").print_stats(top)
    lines = [ln.rstrip() for ln in out.getvalue().splitlines()]
    # keep the table, drop pstats' preamble of blank lines and the file list header
    start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    total = next((ln.strip() for ln in lines if "function calls" in ln), "")
    return "\n".join([total, *lines[start:]]).strip()


def time_by_category(
    fn: Callable[[], Any],
    rules: list[tuple[str, tuple[str, ...]]],
    *,
    repeat: int = 3,
) -> dict[str, float]:
    """Milliseconds per call of ``fn`` spent in each category (cProfile own time, so every
    function counts once). ``rules`` are ``(category, substrings)``, tried in order against
    ``"file:function"``; the rest is "other". Profiling inflates the total; the split is
    what matters."""
    stats = pstats.Stats(_profiled(fn, repeat))
    out: dict[str, float] = {name: 0.0 for name, _ in rules}
    out["other"] = 0.0
    for (filename, _line, func), row in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{filename}:{func}"
        cat = next((name for name, keys in rules if any(k in where for k in keys)), "other")
        out[cat] += row[2]
    return {k: round(v * 1e3 / repeat, 2) for k, v in out.items()}


@contextlib.contextmanager
def static_server(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP/1.1 (keep-alive) on 127.0.0.1 in a separate process,
    so that the server never competes with the measured client for the GIL. Yields the
    base URL (no trailing slash)."""
    code = (
        "import functools, http.server, sys\n"
        "class H(http.server.SimpleHTTPRequestHandler):\n"
        "    protocol_version = 'HTTP/1.1'\n"
        "    disable_nagle_algorithm = True\n"
        "    def log_message(self, *a): pass\n"
        "h = functools.partial(H, directory=sys.argv[1])\n"
        "s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), h)\n"
        "s.daemon_threads = True\n"
        "print(s.server_address[1], flush=True)\n"
        "s.serve_forever()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def gc_seconds(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall seconds of one call of ``fn`` and the seconds the cyclic garbage collector ran
    inside it (``gc.callbacks``, this thread's collections)."""
    import gc

    spent = 0.0
    started: list[float] = []

    def cb(phase: str, info: dict[str, Any]) -> None:
        nonlocal spent
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            spent += time.perf_counter() - started.pop()

    gc.callbacks.append(cb)
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0, spent
    finally:
        gc.callbacks.remove(cb)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def memory_sizes(smoke: bool) -> tuple[int, int]:
    """The two image sizes of a flat-memory figure: 1 MiB and 100 MiB (smoke: 64 KiB, 1 MiB)."""
    return (64 << 10, 1 << 20) if smoke else (1 << 20, 100 << 20)


def in_fresh_interpreters(
    measure: Callable[[int, Path], dict[str, Any]], sizes: tuple[int, int], work: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``measure(size, directory)`` for both sizes, each in a fresh spawned interpreter
    holding only what that part imports (so neither run inherits the other's, or other
    benchmarks', interpreter state) and in its own directory under ``work``."""
    import multiprocessing as mp

    for sub in ("small", "big"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        a = pool.apply(measure, (sizes[0], work / "small"))
        b = pool.apply(measure, (sizes[1], work / "big"))
    return a, b


def flat_memory_figure(
    names: tuple[str, str, str],
    small: dict[str, Any],
    big: dict[str, Any],
    sizes: tuple[int, int],
    notes: str,
) -> Figure:
    """The figure "peak at the big size / peak at the small size <= 1.05" from two
    measurements that each hold ``peak`` (bytes); ``names`` is (name, title, goal)."""
    ratio = big["peak"] / small["peak"]
    return Figure(
        *names,
        value=big["peak"] / 1024.0,
        reference=small["peak"] / 1024.0,
        ratio=ratio,
        met=ratio <= 1.05,
        unit=f"KiB peak, {sizes[1] >> 20} MiB image",
        reference_unit=f"KiB peak, {sizes[0] >> 10} KiB image",
        notes=notes,
        details={"peaks_bytes": {"small": small["peak"], "big": big["peak"]}},
    )
