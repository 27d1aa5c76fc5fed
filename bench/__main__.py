"""``python -m bench`` (``make bench``): run every benchmark, write ``bench/results.json``
and regenerate the results section of ``bench/README.md``.

    python -m bench                 # everything, every size (under 15 minutes)
    python -m bench --only fig4     # figure 4 (fig4_*; fig1 does not select fig10)
    python -m bench --quick --out /tmp/r.json --readme /tmp/README.md   # CI: smallest sizes
    python -m bench --smoke --out /tmp/r.json --readme /tmp/README.md   # tiny sizes

A benchmark that raises is recorded as ``"status": "failed"`` with the error (never as a
number); one whose component cannot be imported yet as ``"not yet measurable"``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import MEASURED, NOT_YET, Figure, cpu_count, load_average

HERE = Path(__file__).resolve().parent
MODULES = (
    "fig1_tuf_refresh",
    "fig2_full_verification",
    "fig3_memory",
    "fig4_image_verify",
    "fig5_serial_goodput",
    "fig6_isotp_frames",
    "fig7_manifests",
    "fig8_director_polls",
    "fig9_der_size",
    "fig10_decrypt",
    "fig11_delta",
    "fig12_nodes",
    "fig13_image_repo_add",
    "fig14_bulk_registration",
)
FAILED = "failed"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def run_module(name: str, smoke: bool, quick: bool = False) -> tuple[list[Figure], float]:
    """Run one benchmark module; a crash becomes one ``failed`` entry naming the error.
    Each figure records the load average when its module finished (unless it recorded its
    own)."""
    t0 = time.perf_counter()
    try:
        mod = importlib.import_module(f"bench.{name}")
        if "quick" in inspect.signature(mod.run).parameters:
            figures = list(mod.run(smoke=smoke, quick=quick))
        else:
            figures = list(mod.run(smoke=smoke))
    except ImportError as e:
        figures = [Figure(name, name, "", status=NOT_YET, notes=f"cannot import: {e}")]
    except Exception as e:
        tb = traceback.format_exception(e)
        figures = [
            Figure(
                name,
                name,
                "",
                status=FAILED,
                notes=f"{type(e).__name__}: {e}"[:500],
                details={"traceback": "".join(tb)[-3000:]},
            )
        ]
    load = load_average()
    for f in figures:
        if f.load_average is None:
            f.load_average = load
    return figures, time.perf_counter() - t0


_load = load_average


def _num(x: float | None) -> str:
    if x is None:
        return "—"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}" if abs(x) < 1 else f"{x:.2f}"


def _size(f: dict[str, Any]) -> str:
    return f"{f['size']:,} {f.get('size_unit', '')}".strip() if f.get("size") else "—"


def _load1(f: dict[str, Any]) -> str:
    la = f.get("load_average")
    return f"{la[0]:.2f}" if la else "—"


def table(figures: list[dict[str, Any]]) -> str:
    rows = [
        "| figure | size | value | reference | ratio | goal | met | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        size, load = _size(f), _load1(f)
        if f["status"] != MEASURED:
            met = f"**{f['status']}**"
            rows.append(
                f"| {f['title']} (`{f['name']}`) | {size} | — | — | — | {f['goal']} | {met} "
                f"| {load} |"
            )
            continue
        value = f"{_num(f['value'])} {f['unit']}"
        ref = f"{_num(f['reference'])} {f['reference_unit']}"
        met = "yes" if f["met"] else "**no**"
        rows.append(
            f"| {f['title']} (`{f['name']}`) | {size} | {value} | {ref} | {_num(f['ratio'])} "
            f"| {f['goal']} | {met} | {load} |"
        )
    return "\n".join(rows)


def scaling_tables(figures: list[dict[str, Any]]) -> list[str]:
    """One table per series measured at several sizes: each size's value, reference and
    ratio, and how the value grew against the size from the size before."""
    series: dict[str, list[dict[str, Any]]] = {}
    for f in figures:
        if f["status"] == MEASURED and f.get("size"):
            series.setdefault(f.get("series") or f["name"], []).append(f)
    out: list[str] = []
    for name, fs in series.items():
        if len(fs) < 2:
            continue
        fs = sorted(fs, key=lambda f: f["size"])
        out += [
            f"`{name}` ({fs[0]['unit']}; reference in {fs[0]['reference_unit']}):",
            "",
            "| size | value | reference | ratio | met | value grew | size grew | load |",
            "|---|---|---|---|---|---|---|---|",
        ]
        prev = None
        for f in fs:
            grew = sized = "—"
            if prev is not None and prev["value"]:
                grew = f"{f['value'] / prev['value']:.2f}×"
                sized = f"{f['size'] / prev['size']:g}×"
            met = "yes" if f["met"] else "**no**"
            out.append(
                f"| {_size(f)} | {_num(f['value'])} | {_num(f['reference'])} "
                f"| {_num(f['ratio'])} | {met} | {grew} | {sized} | {_load1(f)} |"
            )
            prev = f
        out.append("")
    return out


def results_section(doc: dict[str, Any]) -> str:
    figs = doc["figures"]
    met = sum(1 for f in figs if f["status"] == MEASURED and f["met"])
    measured = sum(1 for f in figs if f["status"] == MEASURED)
    out = [
        BEGIN,
        "<!-- generated by `make bench` (python -m bench); edit the sections outside -->",
        "",
        f"Run {doc['generated']} on {doc['machine']} ({doc['cpus']} cores, shared), "
        f"Python {doc['python']}, {doc['seconds']:.0f} s; load average (1/5/15 min) "
        f"{doc['load_average']['start']} at the start, {doc['load_average']['end']} at the "
        f"end. "
        f"{met} of {measured} measured figures meet their goal; "
        f"{len(figs) - measured} not measured.",
    ]
    if doc.get("previous_runs"):
        rerun = ", ".join(f"`{m}`" for m in doc.get("module_seconds_run", {}))
        last = doc["previous_runs"][-1]["generated"]
        out += [
            "",
            f"This run re-measured only {rerun} (`--only`); the other figures keep their "
            f"entries from the run of {last} or earlier (`previous_runs` in results.json).",
        ]
    out += ["", table(figs), ""]
    scaling = scaling_tables(figs)
    if scaling:
        out += ["### Scaling (generated)", "", *scaling]
    out += ["### Notes per figure (generated)", ""]
    for f in figs:
        out.append(f"- `{f['name']}`: {f['notes']}")
    broken = [(f, _breakdown(f)) for f in figs]
    if any(lines for _, lines in broken):
        out += ["", "### Breakdowns (generated)", ""]
        for f, lines in broken:
            if lines:
                out.append(f"- `{f['name']}`:")
                out += [f"  - {ln}" for ln in lines]
    profiled = [f for f in figs if f.get("details", {}).get("profile")]
    if profiled:
        out += ["", "### Profiles of the missed figures (generated)", ""]
        for f in profiled:
            out += [f"`{f['name']}`:", "", "```", f["details"]["profile"], "```", ""]
    out.append(END)
    return "\n".join(out)


#: ``details`` entries worth showing in the README (the rest stays in results.json)
BREAKDOWNS = {
    "ms_by_category_ours": "ms per run by category, ours (under cProfile)",
    "ms_by_category_python_tuf": "ms per run by category, python-tuf (under cProfile)",
    "fsyncs_per_run_ours": "fsync calls per run, ours",
    "ratio_without_fsync": "ratio with os.fsync stubbed in ours (attribution only)",
    "phase_peaks_kib": "peak KiB per phase",
    "held_at_end": "largest blocks still traced at the end",
    "ratio_by_chunk_bytes": "ratio by chunk size (bytes)",
    "ms_per_manifest_by_category": "ms per manifest by category (under cProfile)",
    "floor_requests_per_s": "requests/s with do-nothing handlers, same uvicorn and load",
    "der_bytes_by_content": "DER bytes by what they carry",
}


def _breakdown(f: dict[str, Any]) -> list[str]:
    d = f.get("details", {})
    return [
        f"{label}: {json.dumps(d[k], ensure_ascii=False)}"
        for k, label in BREAKDOWNS.items()
        if k in d
    ]


def update_readme(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + section + tail
    else:
        text = text.rstrip() + "\n\n## Results\n\n" + section + "\n"
    path.write_text(text)


def merge(out: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """A run of some modules (``--only``) keeps the other figures of ``out``: each figure
    measured now replaces the entry of the same name, the rest stay as they were (their
    run's time and load are in ``previous_runs``). A smoke run never merges into real
    results, nor the other way round."""
    try:
        old = json.loads(out.read_text())
    except (OSError, ValueError):
        return doc
    if not isinstance(old, dict) or old.get("smoke") != doc["smoke"]:
        return doc
    if bool(old.get("quick")) != bool(doc.get("quick")):
        return doc
    new = {f["name"]: f for f in doc["figures"]}
    kept = [f for f in old.get("figures", []) if f.get("name") not in new]
    if not kept:
        return doc
    figures = [new.pop(f["name"], f) for f in old["figures"] if f.get("name")]
    figures += list(new.values())
    previous = list(old.get("previous_runs", []))
    previous.append(
        {
            "generated": old.get("generated"),
            "load_average": old.get("load_average"),
            "figures": [f["name"] for f in kept],
        }
    )
    return {
        **doc,
        "figures": figures,
        "module_seconds": {**old.get("module_seconds", {}), **doc["module_seconds"]},
        "module_seconds_run": doc["module_seconds"],
        "previous_runs": previous[-8:],
    }


def _selects(only: str, module: str) -> bool:
    """``--only fig1`` names figure 1 (``fig1_*``), not figures 10 and 11; any other text
    is a substring of the module name."""
    if only.startswith("fig") and only[3:].isdigit():
        return module.startswith(only + "_")
    return only in module


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny sizes; numbers mean nothing")
    p.add_argument(
        "--quick", action="store_true", help="CI smoke: the smallest size of each curve only"
    )
    p.add_argument(
        "--only", action="append", default=[], help="figure (fig4) or module name substring"
    )
    p.add_argument("--out", type=Path, help="results file (default bench/results.json)")
    p.add_argument("--readme", type=Path, help="README to update (default bench/README.md)")
    args = p.parse_args(argv)
    if (args.smoke or args.quick) and (args.out is None or args.readme is None):
        p.error(
            "--smoke and --quick need --out and --readme (their numbers must not replace"
            " the full results)"
        )
    out = args.out or HERE / "results.json"
    readme = args.readme or HERE / "README.md"
    mods = [m for m in MODULES if not args.only or any(_selects(o, m) for o in args.only)]
    t0 = time.perf_counter()
    load_before = _load()
    figures: list[Figure] = []
    timings: dict[str, float] = {}
    for name in mods:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        figs, secs = run_module(name, args.smoke, args.quick)
        timings[name] = round(secs, 2)
        for f in figs:
            state = f.status if f.status != MEASURED else ("met" if f.met else "MISSED")
            print(f"  {f.name}: ratio {_num(f.ratio)} ({f.goal}) {state}", file=sys.stderr)
        figures.extend(figs)
    doc = {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "cpus": cpu_count(),
        "smoke": args.smoke,
        "quick": args.quick,
        "seconds": round(time.perf_counter() - t0, 1),
        "load_average": {"start": load_before, "end": _load()},
        "module_seconds": timings,
        "figures": [f.to_dict() for f in figures],
    }
    if args.only:
        doc = merge(out, doc)
    out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    update_readme(readme, results_section(doc))
    print(f"bench: wrote {out} and {readme} in {doc['seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
