"""The demo job behind ``flow-orchestrator demo``: build, validate and order a big DAG.

It generates a layered DAG (every node depends on a few random nodes of the layer
before it), builds a named :class:`~flow_orchestrator.workflow.Workflow` from the
arrays, and reports how long each step took and how much memory the core holds,
next to the standard library's :mod:`graphlib` ordering a tenth of the graph.

Part of :mod:`flow_orchestrator.cli` (layer L6, interfaces): ``cmd_demo`` of :mod:`.main`
runs it.  It moved here from ``flow_orchestrator/demo.py``, which re-exports its names
so that old imports keep working.
"""

from __future__ import annotations

import graphlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..dag import CSRGraph
from ..workflow import Workflow

__all__ = ["DemoFigures", "layered_edges", "run_demo"]


def layered_edges(layers: int, width: int, deps: int = 3, seed: int = 0) -> tuple[int, np.ndarray, np.ndarray]:
    """``(num_nodes, sources, targets)`` of a layered DAG: each node of layer ``L > 0``
    depends on ``deps`` random nodes of layer ``L - 1`` (repeats possible)."""
    rng = np.random.default_rng(seed)
    n = layers * width
    targets = np.repeat(np.arange(width, n, dtype=np.int32), deps)
    sources = ((targets // width - 1) * width + rng.integers(0, width, targets.shape[0])).astype(np.int32)
    return n, sources, targets


@dataclass(frozen=True)
class DemoFigures:
    """What :func:`run_demo` measured."""

    nodes: int
    edges: int
    levels: int
    graph_seconds: float
    workflow_seconds: float
    bytes_per_node: float
    bytes_per_edge: float
    stdlib_nodes: int
    stdlib_seconds: float
    ours_on_stdlib_graph_seconds: float


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _median_seconds(fn: Callable[[], object], repeat: int) -> float:
    """The median of ``repeat`` timed calls of ``fn``, after one untimed warm-up call."""
    fn()
    return statistics.median(_timed(fn)[1] for _ in range(repeat))


def run_demo(layers: int = 1000, width: int = 1000, deps: int = 3, repeat: int = 3) -> DemoFigures:
    """Build, validate and order a ``layers x width`` layered DAG; return the figures.

    The big graph is built once (its figures are one build's, as a user's first call);
    the comparison with :mod:`graphlib` on a tenth of it takes, for each side, the median
    of ``repeat`` runs after a warm-up."""
    n, sources, targets = layered_edges(layers, width, deps)
    names = [f"step-{i}" for i in range(n)]
    graph, graph_s = _timed(lambda: CSRGraph.from_edges(n, sources, targets))
    workflow, workflow_s = _timed(lambda: Workflow.from_arrays("demo", names, sources, targets, _noop))
    assert isinstance(graph, CSRGraph) and isinstance(workflow, Workflow)
    graph.levels(), graph.pred_indptr  # materialise the lazily built parts for the memory figure
    per_edge = 8.0
    per_node = (graph.nbytes - per_edge * graph.num_edges) / n

    small_n, small_src, small_dst = layered_edges(max(layers // 10, 1), width, deps)
    preds: dict[int, list[int]] = {v: [] for v in range(small_n)}
    for s, d in zip(small_src.tolist(), small_dst.tolist()):
        preds[d].append(s)
    stdlib_s = _median_seconds(lambda: list(graphlib.TopologicalSorter(preds).static_order()), repeat)
    ours_small_s = _median_seconds(lambda: CSRGraph.from_edges(small_n, small_src, small_dst), repeat)
    return DemoFigures(
        nodes=n, edges=graph.num_edges, levels=graph.level_count(),
        graph_seconds=graph_s, workflow_seconds=workflow_s, bytes_per_node=per_node,
        bytes_per_edge=per_edge, stdlib_nodes=small_n, stdlib_seconds=stdlib_s,
        ours_on_stdlib_graph_seconds=ours_small_s,
    )


def _noop() -> None:
    return None


def format_figures(f: DemoFigures) -> str:
    """A human-readable report of :class:`DemoFigures`."""
    return "\n".join([
        f"layered DAG: {f.nodes:,} nodes, {f.edges:,} edges, {f.levels:,} levels",
        f"  build + validate + topological sort (CSRGraph.from_edges): {f.graph_seconds * 1e3:8.1f} ms",
        f"  named workflow from arrays (interning {f.nodes:,} names):   {f.workflow_seconds * 1e3:8.1f} ms",
        f"  core memory: {f.bytes_per_node:.0f} bytes/node + {f.bytes_per_edge:.0f} bytes/edge",
        (f"stdlib graphlib static_order on {f.stdlib_nodes:,} nodes: {f.stdlib_seconds * 1e3:8.1f} ms"
         f"  (ours on the same graph: {f.ours_on_stdlib_graph_seconds * 1e3:.1f} ms,"
         f" {f.stdlib_seconds / max(f.ours_on_stdlib_graph_seconds, 1e-9):.0f}x faster; medians after a warm-up)"),
    ])
