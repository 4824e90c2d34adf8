"""Resume of a 100,000-node run that is 99% complete: time to the first new node.

Issue 5's target: the first node that did not complete starts within 200 ms of
beginning to load the saved state (FlatBuffers decode, compatibility check, restoring
99,000 outputs into the core, scheduling).  ``python bench/bench_resume.py`` prints it;
``pytest bench/bench_resume.py --benchmark-only`` gives pytest-benchmark statistics.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from bench.execution import workflow_of
from bench.graphs import layered
from flow_orchestrator import Engine, Workflow
from flow_orchestrator.codecs import flatbuffers_codec
from flow_orchestrator.observers import Observer
from flow_orchestrator.state import RunState
from flow_orchestrator.stores import SqliteStore


def _one() -> int:
    return 1


def almost_done_state(engine: Engine, workflow: Workflow, missing: int) -> bytes:
    """A saved state of ``workflow`` where the last ``missing`` nodes (in topological
    order) never ran, FlatBuffers-encoded."""
    done = RunState.from_result(engine.run(workflow))
    tail = workflow.graph.topological_order()[-missing:]
    skip = set(tail.tolist())
    statuses, attempts = done.statuses.copy(), done.attempts.copy()
    started, ended = done.started.copy(), done.ended.copy()
    statuses[tail], attempts[tail], started[tail], ended[tail] = 0, 0, np.nan, np.nan
    state = RunState(workflow=done.workflow, fingerprint=done.fingerprint, run_id=done.run_id,
                     run_status="running", node_names=done.node_names, succ_indptr=done.succ_indptr,
                     succ_indices=done.succ_indices, statuses=statuses, attempts=attempts,
                     started=started, ended=ended, started_at=done.started_at,
                     updated_at=done.updated_at, data=done.data,
                     outputs={k: v for k, v in done.outputs.items() if k not in skip})
    return flatbuffers_codec.encode(state)


class _FirstStart(Observer):
    def __init__(self) -> None:
        self.at: float | None = None

    def on_node_start(self, event: object) -> None:
        if self.at is None:
            self.at = time.perf_counter()


def time_to_first_node(engine: Engine, workflow: Workflow, blob: bytes) -> float:
    """Seconds from starting to decode ``blob`` to the first resumed node starting."""
    first = _FirstStart()
    start = time.perf_counter()
    result = engine.run(workflow, resume=flatbuffers_codec.decode(blob), observers=[first])
    assert result.ok and first.at is not None
    return first.at - start


def time_to_first_node_from_store(engine: Engine, workflow: Workflow, store: SqliteStore, state: RunState) -> float:
    """Seconds from ``engine.resume(run_id, store=...)`` (lock, load, compatibility check,
    restore) to the first resumed node starting; ``state`` is saved first."""
    store.save(state)
    first = _FirstStart()
    start = time.perf_counter()
    result = engine.resume(workflow, state.run_id, store=store, observers=[first])
    assert result.ok and first.at is not None
    return first.at - start


def compare(nodes: int = 100_000, repeat: int = 5) -> list[dict]:
    """Best and median time to the first new node over ``repeat`` resumes: from a
    decoded state, and by run id from a SQLite store (a durable run)."""
    graph = layered(nodes // 100, 100, 3)
    workflow = workflow_of(graph, [_one] * graph.num_nodes)
    rows = []
    with Engine(2) as engine, tempfile.TemporaryDirectory() as tmp:
        blob = almost_done_state(engine, workflow, graph.num_nodes // 100)
        times = sorted(time_to_first_node(engine, workflow, blob) for _ in range(repeat))
        rows.append({"resume": "RunState (FlatBuffers bytes)", "nodes": graph.num_nodes, "complete": "99%",
                     "state_bytes": len(blob), "best_ms": times[0] * 1e3,
                     "median_ms": times[len(times) // 2] * 1e3, "target_ms": 200.0})
        with SqliteStore(os.path.join(tmp, "runs.db")) as store:
            state = flatbuffers_codec.decode(blob)
            times = sorted(time_to_first_node_from_store(engine, workflow, store, state) for _ in range(repeat))
        rows.append({"resume": "run id in a SqliteStore", "nodes": graph.num_nodes, "complete": "99%",
                     "state_bytes": len(blob), "best_ms": times[0] * 1e3,
                     "median_ms": times[len(times) // 2] * 1e3, "target_ms": 200.0})
    return rows


def test_resume_first_node(benchmark):
    benchmark.group = "resume 100k, 99% complete"
    graph = layered(1000, 100, 3)
    workflow = workflow_of(graph, [_one] * graph.num_nodes)
    with Engine(2) as engine:
        blob = almost_done_state(engine, workflow, 1000)
        seconds = benchmark.pedantic(time_to_first_node, args=(engine, workflow, blob), rounds=5)
    assert seconds < 10


if __name__ == "__main__":
    for row in compare():
        print(row)
