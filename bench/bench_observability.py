"""What metrics and observers cost, on the 100,000-node layered no-op workflow.

    PYTHONPATH=. python -m pytest bench/bench_observability.py --benchmark-only -p no:cacheprovider
    PYTHONPATH=. python -c "from bench.bench_observability import compare; print(compare(3))"

Every configuration runs the same workflow (``layered(1000, 100, 3)``, actions that
only count their calls) on its own ``Engine(2)``, after one untimed warm-up run:

* ``plain``: no metrics, no observer;
* ``metrics``: ``Engine(metrics=True)``: per-node counters and sums, per-workflow
  histograms (issue 4's target: at most 20% slower than plain);
* ``metrics, per-node histograms``: ``MetricsRegistry(node_histograms=True)`` (opt-in);
* ``observer overriding nothing``: an :class:`Observer` subclass with no hook;
* ``observer overriding every node hook``: each hook does nothing, so this is the
  cost of delivering the events.

:func:`compare` interleaves the configurations round by round and keeps each one's
best time, so that a slow moment of the machine does not land on one configuration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from bench.execution import Counter, EveryNodeHookObserver, workflow_of
from bench.graphs import layered
from flow_orchestrator import Engine, Workflow
from flow_orchestrator.metrics import MetricsRegistry
from flow_orchestrator.observers import Observer

WORKERS = 2


class NothingObserver(Observer):
    """Overrides no hook."""


#: Configuration name -> a new engine for it.
CONFIGS: dict[str, Callable[[], Engine]] = {
    "plain": lambda: Engine(WORKERS),
    "metrics": lambda: Engine(WORKERS, metrics=True),
    "metrics, per-node histograms": lambda: Engine(WORKERS, metrics=MetricsRegistry(node_histograms=True)),
    "observer overriding nothing": lambda: Engine(WORKERS, observers=[NothingObserver()]),
    "observer overriding every node hook": lambda: Engine(WORKERS, observers=[EveryNodeHookObserver()]),
}


def noop_workflow() -> tuple[Workflow, Counter]:
    """The 100,000-node layered workflow of counting no-op actions."""
    graph = layered(1000, 100, 3)
    counter = Counter(graph.num_nodes)
    return workflow_of(graph, counter.actions, "observability"), counter


def compare(repeat: int = 3) -> list[dict[str, Any]]:
    """One row per configuration: best ``seconds`` of ``repeat`` runs, ``us_per_node``,
    ``ratio`` to plain and ``overhead_us_per_node`` over plain."""
    wf, counter = noop_workflow()
    engines = {name: make() for name, make in CONFIGS.items()}
    best = dict.fromkeys(engines, float("inf"))
    try:
        for engine in engines.values():
            engine.run(wf)  # warm-up: compiles, starts the pool, allocates the metrics
        for _ in range(repeat):
            for name, engine in engines.items():
                start = time.perf_counter()
                engine.run(wf)
                best[name] = min(best[name], time.perf_counter() - start)
    finally:
        for engine in engines.values():
            engine.close()
    counter.check(len(engines) * (repeat + 1))
    return [_row(name, seconds, best["plain"], len(wf)) for name, seconds in best.items()]


def _row(name: str, seconds: float, plain: float, nodes: int) -> dict[str, Any]:
    return {"config": name, "nodes": nodes, "seconds": seconds, "us_per_node": seconds / nodes * 1e6,
            "ratio": seconds / plain, "overhead_us_per_node": (seconds - plain) / nodes * 1e6}


# -- pytest-benchmark ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noop():
    return noop_workflow()


@pytest.mark.parametrize("config", list(CONFIGS))
def test_observability_cost(benchmark, noop, config):
    benchmark.group = "observability: layered 100k no-op, 2 threads"
    wf, counter = noop
    before = int(counter.calls[0])
    with CONFIGS[config]() as engine:
        engine.run(wf)
        result = benchmark.pedantic(engine.run, args=(wf,), rounds=5, iterations=1)
    assert result.ok
    counter.check(before + 6)
