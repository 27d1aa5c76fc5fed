"""Figure 12: vehicle cycles per second with three Director nodes against one, on one
PostgreSQL database (issue 19).

The harness is ``load/nodes.py``: real ``uptane-director serve`` processes sharing one
Director directory and one private PostgreSQL cluster, a round-robin client, simulated
vehicles (a Primary and a brake ECU each, real signed reports, every role verified) that
cycle manifest-then-metadata while an admin thread keeps assigning. No node is killed
here. The figure is the ratio of cycles per second with 3 nodes to 1 node, measured in one
run, the two back to back on fresh databases.

On this 2-core machine the nodes, PostgreSQL and the load generator share the same two
cores, so three nodes cannot be three times one: the figure shows what a second and third
process buy when the cores are already busy (on separate machines each node brings its
own). The goal is that more nodes are not slower (ratio ≥ 1.0).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from bench.common import ROOT, Figure, cpu_count

NAME = "director_nodes_cycles"
TITLE = "Vehicle cycles per second, 3 Director nodes vs 1 (one PostgreSQL)"
GOAL = "≥ 1.0x (not slower with more nodes on a shared 2-core machine)"


def _measure(nodes_n: int, vehicles: int, seconds: float, workers: int) -> dict[str, object]:
    if str(ROOT) not in sys.path:  # load/ is a tool beside the packages
        sys.path.insert(0, str(ROOT))
    from load import nodes

    root = Path(tempfile.mkdtemp(prefix=f"uptane-fig12-{nodes_n}-"))
    try:
        with nodes.cluster_db(root) as url:
            return nodes.run_nodes(
                url, root, vehicles=vehicles, nodes=nodes_n, seconds=seconds, kill=False,
                workers=workers,
            )  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(smoke: bool = False) -> list[Figure]:
    from load import pgcluster

    if pgcluster.pg_bin() is None:
        from bench.common import not_yet

        return [not_yet(NAME, TITLE, GOAL, "PostgreSQL binaries (initdb, pg_ctl) not installed")]
    vehicles, seconds, workers = (12, 4.0, 4) if smoke else (200, 30.0, 24)
    one = _measure(1, vehicles, seconds, workers)
    three = _measure(3, vehicles, seconds, workers)
    a, b = float(three["cycles_per_second"]), float(one["cycles_per_second"])  # type: ignore[arg-type]
    ratio = a / b if b else 0.0
    return [
        Figure(
            NAME,
            TITLE,
            GOAL,
            value=a,
            reference=b if b else 1.0,
            ratio=ratio,
            met=ratio >= 1.0,
            unit="cycles/s (3 nodes)",
            reference_unit="cycles/s (1 node)",
            notes=(
                f"{vehicles} vehicles, {workers} client threads, {seconds:g} s each, "
                f"{cpu_count()} cores shared by PostgreSQL, the nodes and the clients; "
                f"3 nodes: propagation max {three['propagation_max_seconds']} s, "
                f"{three['versions_committed']} versions committed, none twice or skipped"
            ),
            details={"one_node": one, "three_nodes": three},
        )
    ]
