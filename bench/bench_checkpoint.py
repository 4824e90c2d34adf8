"""Durable runs: checkpoint policies on SQLite, 10,000-node layered no-op workflow.

Issue 5's target: strict checkpoints (each completion durable before its dependents
start) report nodes per second, and batched checkpoints (group commits) are at least
20x faster than strict.  Rows: the same workflow run without a store (the baseline, in
the same process), then with a SQLite store under each policy; every run is checked to
have saved every node.  ``python bench/bench_checkpoint.py`` prints the table;
``pytest bench/bench_checkpoint.py --benchmark-only`` gives pytest-benchmark statistics.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np

from bench.execution import workflow_of
from bench.graphs import layered
from flow_orchestrator import Engine, NodeStatus, Workflow
from flow_orchestrator.checkpoint import CheckpointPolicy
from flow_orchestrator.stores import SqliteStore


def _one() -> int:
    return 1


def _workflow(nodes: int) -> Workflow:
    graph = layered(nodes // 100, 100, 3)
    return workflow_of(graph, [_one] * graph.num_nodes, name="checkpoint-bench")


def timed_run(engine: Engine, workflow: Workflow, directory: str, policy: Any, run_id: str) -> float:
    """Seconds for one durable run on a fresh SQLite file; checks every node was saved."""
    path = os.path.join(directory, f"{run_id}.db")
    with SqliteStore(path) as store:
        start = time.perf_counter()
        engine.run(workflow, store=store, checkpoint=policy, run_id=run_id)
        seconds = time.perf_counter() - start
        state = store.load(run_id)
    assert (state.statuses == NodeStatus.COMPLETED).all() and len(state.outputs) == len(workflow)
    return seconds


def compare(nodes: int = 10_000, repeat: int = 3) -> list[dict[str, Any]]:
    """Nodes per second without a store and under each policy; ratios to strict."""
    workflow = _workflow(nodes)
    policies: list[tuple[str, Any]] = [("end", "end"), ("batched (1000 / 1 s)", CheckpointPolicy.batched()),
                                       ("strict", "strict")]
    rows: list[dict[str, Any]] = []
    with Engine(2) as engine, tempfile.TemporaryDirectory() as tmp:
        bare = min(_bare(engine, workflow) for _ in range(repeat))
        rows.append({"policy": "no store (baseline)", "seconds": bare})
        for label, policy in policies:
            runs = 1 if label == "strict" else repeat  # strict takes one fsync per commit
            best = min(timed_run(engine, workflow, tmp, policy, f"r{k}-{label[:3]}") for k in range(runs))
            rows.append({"policy": label, "seconds": best})
    strict = rows[-1]["seconds"]
    for row in rows:
        row.update(nodes=nodes, nodes_per_s=round(nodes / row["seconds"]),
                   us_per_node=round(row["seconds"] / nodes * 1e6, 2),
                   x_vs_strict=round(strict / row["seconds"], 1),
                   x_vs_no_store=round(row["seconds"] / rows[0]["seconds"], 1))
        row["seconds"] = round(row["seconds"], 4)
    return rows


def _bare(engine: Engine, workflow: Workflow) -> float:
    start = time.perf_counter()
    result = engine.run(workflow)
    seconds = time.perf_counter() - start
    assert bool(np.all(result.statuses == NodeStatus.COMPLETED))
    return seconds


def test_batched_checkpoints(benchmark, tmp_path):  # type: ignore[no-untyped-def]
    benchmark.group = "checkpoints to SQLite, 10k layered no-op"
    workflow = _workflow(10_000)
    counter = iter(range(10**6))
    with Engine(2) as engine:
        benchmark.pedantic(lambda: timed_run(engine, workflow, str(tmp_path), CheckpointPolicy.batched(),
                                             f"b{next(counter)}"), rounds=3)


if __name__ == "__main__":
    for row in compare():
        print(row)
