"""Map nodes: a map of no-op items against the same work done other ways, in one process.

The issue's target: a map of 100,000 no-op items costs at most 1.5x the same work as
100,000 static nodes (``Workflow.from_arrays``, no edges), and each item stays within
the same order of cost as a static node (<= 1 us over the action).  For reference, the
same 100,000 calls through a Dask bag (``dask.bag.from_sequence(...).map(...)``, the
threaded scheduler), a list of ``dask.delayed`` calls (skipped without dask), and the
naive ``ThreadPoolExecutor.map``.  Every figure is the best of ``repeat`` runs, in one
process, so the ratios are comparable even on a noisy machine.

* ``PYTHONPATH=. python bench/bench_maps.py [items] [repeat]`` prints the table;
* ``from bench.bench_maps import compare; compare(100_000, 3)`` returns its rows;
* ``PYTHONPATH=. python -m pytest bench/bench_maps.py --benchmark-only -p no:cacheprovider``
  gives pytest-benchmark's statistics.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

import flow_orchestrator as fo

__all__ = ["compare", "map_workflow", "static_workflow"]

WORKERS = min(4, os.cpu_count() or 1)


def noop() -> None:
    """The work of a static node: nothing (the figures are the scheduling cost)."""


def noop_item(element: object) -> None:
    """The work of an item: nothing."""


def map_workflow(items: int) -> fo.Workflow:
    """``source`` lists ``items`` numbers; the map ``each`` runs :func:`noop_item` on each."""
    flow = fo.WorkflowBuilder("bench-map")
    flow.add("source", lambda: range(items))
    flow.map("each", noop_item, over="source")
    return flow.build()


def static_workflow(items: int) -> fo.Workflow:
    """The same work as ``items`` static nodes without edges, built in bulk."""
    return fo.Workflow.from_arrays("bench-static", [f"n{i}" for i in range(items)], [], [], noop)


def _best(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm up (compilation, arena, threads)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


DELAYED_MAX = 10_000
"""``dask.delayed`` is timed on at most this many items (its cost grows faster than the
count: 100,000 would take minutes); its row is per item like the others."""


def compare(items: int = 100_000, repeat: int = 3) -> list[dict[str, Any]]:
    """One row per way of doing the work: items, seconds (best of ``repeat``),
    microseconds an item, and the ratio of that to the map's."""
    rows: list[tuple[str, int, float]] = []
    with fo.Engine(WORKERS) as engine:
        mapped, static = map_workflow(items), static_workflow(items)
        rows.append(("map node (flow-orchestrator)", items, _best(lambda: engine.run(mapped), repeat)))
        rows.append(("static nodes (flow-orchestrator)", items, _best(lambda: engine.run(static), repeat)))
    with cf.ThreadPoolExecutor(WORKERS) as pool:
        rows.append(("ThreadPoolExecutor.map", items,
                     _best(lambda: list(pool.map(noop_item, range(items))), repeat)))
    try:
        import dask
        import dask.bag as db
    except ImportError:
        pass
    else:
        with dask.config.set(scheduler="threads", num_workers=WORKERS):
            rows.append(("dask.bag map (threads)", items, _best(
                lambda: db.from_sequence(range(items), npartitions=WORKERS * 4).map(noop_item).compute(), repeat)))
            few = min(items, DELAYED_MAX)
            rows.append(("dask.delayed list (threads)", few, _best(
                lambda: dask.compute(*[dask.delayed(noop_item)(i) for i in range(few)]), 1)))
    base = rows[0][2] / rows[0][1]
    return [{"what": what, "items": count, "seconds": seconds, "us_per_item": seconds / count * 1e6,
             "vs_map": seconds / count / base} for what, count, seconds in rows]


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'':34} {'items':>8} {'seconds':>9} {'us/item':>9} {'x map':>7}"]
    lines += [f"{r['what']:34} {r['items']:8} {r['seconds']:9.4f} {r['us_per_item']:9.3f} {r['vs_map']:7.2f}"
              for r in rows]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def engine():
    with fo.Engine(WORKERS) as eng:
        yield eng


@pytest.mark.parametrize("kind", ["map", "static"])
def test_bench_map_vs_static(benchmark, engine, kind):
    wf = map_workflow(100_000) if kind == "map" else static_workflow(100_000)
    engine.run(wf)
    benchmark.group = "100,000 no-op items"
    benchmark(engine.run, wf)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(_table(compare(count, int(sys.argv[2]) if len(sys.argv) > 2 else 3)))
