"""Durable runs: what checkpoints cost, on SQLite, 10,000-node layered no-op workflow.

Issue 12's target (item 5): batched checkpoints cost at most 3 us a node over the same
run without a store.  Every figure is a whole durable run as a user pays it (lock, the
initial snapshot, the checkpoint batches, the final snapshot, unlock) on a fresh SQLite
file, against the same workflow run without a store in the same process, rounds
interleaved (no store, end, batched) so that a slow moment of the machine hits them alike;
each keeps its best round.  Rows:

* ``no store (baseline)``;
* ``end``: the two snapshots only;
* ``batched (1000 / 1 s)``: the default policy (the target);
* ``batched, distinct outputs``: each node returns a different int beyond the writer's
  memo of small values, so that serializing each output (the serializer's own cost:
  stdlib ``json``, or orjson with the ``fast`` extra) is in the figure, with its own
  baseline (the same workflow without a store);
* ``strict``: one run, for reference (each completion durable before its dependents
  start: one fsync per group commit).

Every run is checked to have saved every node.  ``python bench/bench_checkpoint.py``
prints the table; ``bench/run.py --suite checkpoint`` too;
``pytest bench/bench_checkpoint.py --benchmark-only`` gives pytest-benchmark statistics.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.execution import workflow_of
from bench.graphs import layered
from flow_orchestrator import Engine, NodeStatus, Workflow
from flow_orchestrator.checkpoint import CheckpointPolicy
from flow_orchestrator.stores import SqliteStore

TARGET_US = 3.0  # batched, over no store, a node


def _one() -> int:
    return 1


def _returning(value: int) -> Callable[[], int]:
    return lambda: value


def _workflow(nodes: int, distinct: bool = False) -> Workflow:
    graph = layered(nodes // 100, 100, 3)
    actions = [_returning(10**6 + i) for i in range(graph.num_nodes)] if distinct else [_one] * graph.num_nodes
    return workflow_of(graph, actions, name="checkpoint-bench")


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


def compare(nodes: int = 10_000, repeat: int = 7, strict: bool = True) -> list[dict[str, Any]]:
    """One row per configuration: best ``seconds``, ``us_per_node`` and
    ``us_per_node_over_no_store`` (over the baseline of the same workflow)."""
    plain, distinct = _workflow(nodes), _workflow(nodes, distinct=True)
    configs: dict[str, tuple[Workflow, Any]] = {
        "no store (baseline)": (plain, None),
        "end": (plain, "end"),
        "batched (1000 / 1 s)": (plain, CheckpointPolicy.batched()),
        "no store, distinct outputs": (distinct, None),
        "batched, distinct outputs": (distinct, CheckpointPolicy.batched()),
    }
    best = dict.fromkeys(configs, float("inf"))
    with Engine(2) as engine, tempfile.TemporaryDirectory() as tmp:
        for workflow in (plain, distinct):  # compiled, pool started, SQLite warmed up
            _bare(engine, workflow)
            timed_run(engine, workflow, tmp, "batched", f"warm-{id(workflow)}")
        for k in range(repeat):
            for label, (workflow, policy) in configs.items():
                seconds = (_bare(engine, workflow) if policy is None
                           else timed_run(engine, workflow, tmp, policy, f"r{k}-{len(label)}-{label[:3]}"))
                best[label] = min(best[label], seconds)
        if strict:  # one fsync per group commit: seconds, once
            best["strict"] = timed_run(engine, plain, tmp, "strict", "strict")
    rows = []
    for label, seconds in best.items():
        base = best["no store, distinct outputs" if "distinct" in label else "no store (baseline)"]
        rows.append({"policy": label, "nodes": nodes, "seconds": round(seconds, 4),
                     "us_per_node": round(seconds / nodes * 1e6, 2),
                     "us_per_node_over_no_store": round((seconds - base) / nodes * 1e6, 2)})
    return rows


def verdict(rows: list[dict[str, Any]]) -> str:
    """The target line for the batched row."""
    over = next(r for r in rows if r["policy"].startswith("batched ("))["us_per_node_over_no_store"]
    return (f"target batched SQLite checkpoints <= {TARGET_US:g} us a node over no store: "
            f"{'PASS' if over <= TARGET_US else 'FAIL'} ({over:.2f} us)")


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


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """What ``bench/run.py`` prints under this suite's table."""
    return [verdict(rows)]


if __name__ == "__main__":
    found = compare()
    for row in found:
        print(row)
    print(verdict(found))
