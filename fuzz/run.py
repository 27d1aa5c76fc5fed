"""Run the atheris harness for every decoder (``make fuzz``) and record the results.

    python -m fuzz.run [NAME...]

The signed-content feeds (``signed_*``) are left out unless named: ``python -m
fuzz.signed`` runs them (10^5 inputs each by default).

Environment: ``FUZZ_RUNS`` inputs per decoder (default 1,000,000), ``FUZZ_MAX_TIME``
seconds per decoder (default: no limit), ``FUZZ_OUT`` the work folder (default
``fuzz/out``: seed corpora, grown corpora, crash inputs, ``results.json``). Each decoder
runs in its own process, seeded with its valid encodings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from fuzz.harness import MISSING


def run_one(name: str, runs: int, max_time: int, out: Path) -> dict[str, object]:
    from fuzz.targets import TARGETS

    corpus = out / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(TARGETS[name].seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)
    crashes = out / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "fuzz.harness",
        name,
        f"-runs={runs}",
        "-max_len=8192",
        "-rss_limit_mb=2048",
        "-timeout=30",
        f"-artifact_prefix={crashes}/{name}-",
        "-print_final_stats=1",
        str(corpus),
    ]
    if max_time:
        cmd.insert(-1, f"-max_total_time={max_time}")
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    log = proc.stdout + proc.stderr
    (out / f"{name}.log").write_text(log)
    done = re.findall(r"Done (\d+) runs in (\d+) second", log)
    execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
    cov = re.findall(r"cov: (\d+)", log)
    artifacts = sorted(p.name for p in crashes.glob(f"{name}-*"))
    return {
        "runs": int(execs[-1]) if execs else (int(done[-1][0]) if done else None),
        "seconds": round(elapsed, 1),
        "coverage_edges": int(cov[-1]) if cov else None,
        "exit_code": proc.returncode,
        "findings": artifacts,
        "corpus_size": len(list(corpus.iterdir())),
    }


def main(argv: list[str]) -> int:
    try:
        import atheris  # noqa: F401
    except ImportError:
        print(MISSING, file=sys.stderr)
        return 2
    from fuzz.targets import TARGETS

    runs = int(os.environ.get("FUZZ_RUNS", "1000000"))
    max_time = int(os.environ.get("FUZZ_MAX_TIME", "0"))
    out = Path(os.environ.get("FUZZ_OUT", "fuzz/out"))
    out.mkdir(parents=True, exist_ok=True)
    # the signed-content feeds (fuzz/signed.py) run 10^5 inputs each in their own loop,
    # ``python -m fuzz.signed``: a Director request or a trust refresh per input is too
    # slow for 10^6 under libFuzzer; name one here to run it under atheris anyway
    names = argv[1:] or [n for n in TARGETS if not n.startswith("signed_")]
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    failed = False
    for name in names:
        r = run_one(name, runs, max_time, out)
        results[name] = {"requested": runs, **r}
        results_file.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        status = "FINDING" if r["findings"] or r["exit_code"] else "ok"
        failed |= status != "ok"
        print(f"{name:28} {r['runs']!s:>9} runs {r['seconds']:>8}s  {status}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
