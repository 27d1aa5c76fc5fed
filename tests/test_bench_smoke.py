"""Every benchmark of ``bench/`` runs at a tiny size and yields well-formed entries, so the
harness cannot rot between ``make bench`` runs. Nothing here looks at a timing or at
whether a goal was met: performance lives in ``bench/``, never in test assertions."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

# bench/ is not an installed package (it is run from the checkout: `python -m bench`)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.__main__ import BEGIN, END, MODULES, main, run_module
from bench.common import MEASURED, NOT_YET

KEYS = {"name", "title", "goal", "value", "reference", "ratio", "met", "unit", "notes", "status"}


def check_entry(d: dict) -> None:
    assert set(d) >= KEYS, d
    assert isinstance(d["name"], str) and d["name"]
    assert isinstance(d["title"], str) and d["title"]
    assert isinstance(d["goal"], str) and d["goal"]
    assert isinstance(d["met"], bool)
    assert d["status"] in (MEASURED, NOT_YET), d["notes"]
    if d["status"] == NOT_YET:
        assert d["notes"], "a figure that is not measurable must say why"
        assert d["met"] is False
        return
    for k in ("value", "reference", "ratio"):
        assert isinstance(d[k], float) and math.isfinite(d[k]), (k, d[k])
    assert d["reference"] != 0
    assert d["unit"] and d["notes"]
    json.dumps(d)  # serialisable as results.json needs


@pytest.mark.parametrize("module", MODULES)
def test_benchmark_produces_well_formed_entries(module: str) -> None:
    figures, _ = run_module(module, smoke=True)
    assert figures
    names = [f.name for f in figures]
    assert len(set(names)) == len(names)
    for f in figures:
        check_entry(f.to_dict())


def test_runner_writes_results_and_keeps_the_hand_written_readme(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\nhand-written intro\n\n{BEGIN}\nold table\n{END}\n\nmore\n")
    out = tmp_path / "results.json"
    assert main(["--smoke", "--only", "fig9", "--out", str(out), "--readme", str(readme)]) == 0
    doc = json.loads(out.read_text())
    assert doc["smoke"] is True
    assert [f["name"] for f in doc["figures"]] == ["der_director_targets_size"]
    for f in doc["figures"]:
        check_entry(f)
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written intro\n")
    assert text.rstrip().endswith("more")
    assert "old table" not in text
    assert "der_director_targets_size" in text
    assert text.count(BEGIN) == 1 and text.count(END) == 1


def test_smoke_run_refuses_to_overwrite_the_real_results() -> None:
    with pytest.raises(SystemExit):
        main(["--smoke", "--only", "fig9"])


def test_a_partial_run_keeps_the_other_figures(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\n{BEGIN}\n{END}\n")
    out = tmp_path / "results.json"
    assert main(["--smoke", "--only", "fig9", "--out", str(out), "--readme", str(readme)]) == 0
    doc = json.loads(out.read_text())
    kept = {**doc["figures"][0], "name": "other_figure", "title": "kept from before"}
    stale = {**doc["figures"][0], "notes": "stale"}
    doc["figures"] = [kept, stale]
    out.write_text(json.dumps(doc))
    assert main(["--smoke", "--only", "fig9", "--out", str(out), "--readme", str(readme)]) == 0
    again = json.loads(out.read_text())
    assert [f["name"] for f in again["figures"]] == ["other_figure", "der_director_targets_size"]
    assert again["figures"][0] == kept
    assert again["figures"][1]["notes"] != "stale"
    assert again["previous_runs"][-1]["figures"] == ["other_figure"]
    assert "re-measured only `fig9_der_size`" in readme.read_text()
