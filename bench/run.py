"""Time the graph core against its peers on the same graphs, in one process.

    python bench/run.py [--nodes 100000 1000000] [--repeat 5] [--json out.json]

Every engine gets the input it takes in practice, made beforehand and not timed: numpy
edge arrays for us, a Python edge list for rustworkx and networkx, a dict of
predecessors for stdlib graphlib.  Each figure is the best of ``--repeat`` runs after
one warm-up.  Prints one Markdown table, then our core's memory and the issue's two
performance targets.  See bench/README.md for what each figure means.

The runner of every suite in one process (``--suite``): the graph table here, the
engine suite from :mod:`bench.execution`, the others from each ``bench_<suite>.py``'s
``compare()``.  ``--suite compare`` is handed to :func:`bench.compare.main`, imported
one way: compare.py never imports this module, and what both need is in
:mod:`bench.common`.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import inspect
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from types import ModuleType
from typing import Any

if not __package__:
    # Run as a script: put the checkout first, for `bench` and an in-place build.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flow_orchestrator  # noqa: E402
from bench.common import Row, cpu_model, dist_version, fmt_ms, fmt_ratio, write_json  # noqa: E402
from bench.engines import (  # noqa: E402
    networkx_build_sort,
    ours_build_sort,
    rustworkx_build_sort,
    rustworkx_graph,
    stdlib_static_order,
)
from bench.graphs import KINDS, Graph, edge_list, make, predecessor_dict  # noqa: E402
from flow_orchestrator import _ext  # noqa: E402
from flow_orchestrator.dag import CSRGraph  # noqa: E402

# Engine names in the table; bench/README.md says what each one times.
OURS = "ours: from_edges"
RX_SORT = "rustworkx: sort only (prebuilt)"
RX_BUILD = "rustworkx: build+sort"
NX = "networkx: build+check+sort"
STDLIB = "stdlib graphlib: static_order"
PREP_EDGES = "(prep, excluded) edge list"
PREP_DICT = "(prep, excluded) predecessor dict"
PREP = (PREP_EDGES, PREP_DICT)

TARGET_NODES = 1_000_000
TARGET_SECONDS = 0.050
TARGET_SPEEDUP = 10.0
PEERS = ("rustworkx", "networkx")
DROPIN_MODULE = "bench.bench_graphlib"


# -- timing --------------------------------------------------------------------------


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` calls, after one warm-up call (first-touch page
    faults, lazy imports and cold caches are not what is being measured)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and its wall time, once: for input preparation, reported but not compared."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def bench_graph(kind: str, graph: Graph, peers: dict[str, ModuleType], repeat: int,
                networkx_max_nodes: int) -> list[Row]:
    """Every engine on one graph; ratios are against our row."""
    rx = peers.get("rustworkx")
    nx = peers.get("networkx") if graph.num_nodes <= networkx_max_nodes else None
    timings = [(OURS, best_of(lambda: ours_build_sort(graph), repeat))]
    edges, edges_seconds = timed(lambda: edge_list(graph)) if rx or nx else (None, None)
    if rx:
        dag = rustworkx_graph(rx, edges)
        timings.append((RX_SORT, best_of(lambda: rx.topological_sort(dag), repeat)))
        timings.append((RX_BUILD, best_of(lambda: rustworkx_build_sort(rx, edges), repeat)))
    if nx:
        timings.append((NX, best_of(lambda: networkx_build_sort(nx, edges, graph.num_nodes), repeat)))
    preds, preds_seconds = timed(lambda: predecessor_dict(graph))
    timings.append((STDLIB, best_of(lambda: stdlib_static_order(preds), repeat)))
    if edges is not None:
        timings.append((PREP_EDGES, edges_seconds))
    timings.append((PREP_DICT, preds_seconds))
    ours = timings[0][1]
    return [Row(engine, kind, graph.num_nodes, graph.num_edges, seconds,
                None if engine in PREP else seconds / ours)
            for engine, seconds in timings]


# -- the graphlib drop-in's rows, from another module --------------------------------


def dropin_rows(sizes: Sequence[int], repeat: int, notes: list[str]) -> list[Row]:
    """Rows of ``bench/bench_graphlib.py``'s ``compare()``, if that module is there.

    It is written separately and may be missing or unfinished, so any failure of it
    becomes a note rather than a failed run.  ``compare`` is called once per size it
    accepts (``nodes``), or once, with ``repeat``, and returns rows with the fields of
    :class:`Row` (mappings or objects); its ratios are taken as it gives them.
    """
    if importlib.util.find_spec(DROPIN_MODULE) is None:
        notes.append("skipped: graphlib drop-in vs stdlib (bench/bench_graphlib.py not present)")
        return []
    try:
        compare = importlib.import_module(DROPIN_MODULE).compare
        accepted = inspect.signature(compare).parameters
        rows = []
        for nodes in sizes if "nodes" in accepted else sizes[:1]:
            offered = {"nodes": nodes, "repeat": repeat}
            rows += [_as_row(r) for r in compare(**{k: v for k, v in offered.items() if k in accepted})]
    except Exception as exc:  # noqa: BLE001 - see the docstring
        notes.append(f"skipped: graphlib drop-in vs stdlib ({type(exc).__name__}: {exc})")
        return []
    notes.append("graphlib drop-in rows: from bench/bench_graphlib.py, ratios as it computes them")
    return rows


def _as_row(row: Any) -> Row:
    if isinstance(row, Mapping):
        return Row(**{f.name: row.get(f.name) for f in fields(Row)})
    return Row(**{f.name: getattr(row, f.name, None) for f in fields(Row)})


# -- memory and targets --------------------------------------------------------------


def core_memory(graph: Graph) -> dict[str, float]:
    """Bytes held by our graph with every lazy part built, split by what they scale with."""
    built = CSRGraph.from_edges(*graph)
    built.levels()
    built.pred_indptr  # noqa: B018 - touched to build the predecessor CSR
    edge_bytes = built.succ_indices.nbytes + built.pred_indices.nbytes
    node_bytes = built.nbytes - edge_bytes
    return {
        "nodes": graph.num_nodes,
        "edges": graph.num_edges,
        "total_bytes": built.nbytes,
        "node_bytes_per_node": node_bytes / graph.num_nodes,
        "edge_bytes_per_edge": edge_bytes / max(graph.num_edges, 1),
        "total_bytes_per_node": built.nbytes / graph.num_nodes,
    }


def _find(rows: Sequence[Row], engine: str, graph: str) -> Row | None:
    return next((r for r in rows if r.engine == engine and r.graph == graph
                 and r.nodes == TARGET_NODES), None)


def check_targets(rows: Sequence[Row]) -> list[str]:
    """The issue's two performance targets, checked on the layered 1M-node graph."""
    ours = _find(rows, OURS, "layered")
    if ours is None:
        return [f"targets: not checked (they need the layered graph at --nodes {TARGET_NODES})"]
    verdict = "PASS" if ours.seconds < TARGET_SECONDS else "FAIL"
    lines = [f"target: validate+sort of 1M nodes/3M edges under {TARGET_SECONDS * 1e3:.0f} ms: "
             f"{verdict} ({fmt_ms(ours.seconds)} ms on {ours.edges:,} edges, ids in dependency order)"]
    shuffled = _find(rows, OURS, "layered-shuffled")
    if shuffled is not None:
        lines.append(f"  the same graph with shuffled ids: {fmt_ms(shuffled.seconds)} ms "
                     f"({'within' if shuffled.seconds < TARGET_SECONDS else 'over'} the budget)")
    build, sort_only = _find(rows, RX_BUILD, "layered"), _find(rows, RX_SORT, "layered")
    if build is None or sort_only is None:
        return [*lines, "target: at least 10x faster than rustworkx: not checked (rustworkx not installed)"]
    verdict = "PASS" if build.ratio >= TARGET_SPEEDUP else "FAIL"
    lines.append(f"target: at least {TARGET_SPEEDUP:.0f}x faster than rustworkx: {verdict} "
                 f"({build.ratio:.1f}x) against '{RX_BUILD}', the same work as ours "
                 "(a graph from edges, then its order)")
    lines.append(f"  against '{RX_SORT}' (its sort alone, ours includes building): "
                 f"{sort_only.ratio:.1f}x ({'meets' if sort_only.ratio >= TARGET_SPEEDUP else 'misses'} 10x)")
    return lines


# -- output --------------------------------------------------------------------------


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| engine | graph | nodes | edges | time (ms) | ratio vs ours |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r.engine} | {r.graph} | {r.nodes:,} | {r.edges:,} | {fmt_ms(r.seconds)} "
              f"| {fmt_ratio(r.ratio)} |" for r in rows]
    return "\n".join(lines)


def machine_info(peers: dict[str, ModuleType]) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "flow_orchestrator": flow_orchestrator.__version__,
        "extension_debug_build": _ext.DEBUG_BUILD,
        "numpy": dist_version("numpy"),
        **{name: dist_version(name) if name in peers else None for name in PEERS},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


# -- command line --------------------------------------------------------------------


SUITES = ("graph", "engine", "middleware", "observability", "checkpoint", "state", "resume", "processes", "cold")

TITLES = {
    "middleware": "middleware with nothing to do: cost added per node (10,000 no-op nodes)",
    "observability": "metrics and observers: cost per node (100,000-node no-op workflow)",
    "checkpoint": "durable runs on SQLite: a whole run's cost per node over the same run without a store "
                  "(10,000-node layered no-op workflow; strict: one run, for reference)",
    "state": "run state of 100,000 nodes: save (encode) and load (decode), FlatBuffers vs stdlib JSON",
    "resume": "resume of a 100,000-node run 99% complete: time to the first new node",
    "processes": "process pools: pure-Python CPU-bound workflows (serial vs 2 processes, target >= 1.8x) "
                 "and the per-node cost of the process path",
    "cold": "the cold path: from the user's inputs (a list of pairs, names) through build and first run; "
            "ratios against baselines run in the same process",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[100_000, TARGET_NODES],
                        help="graph sizes, in nodes (default: 100000 1000000)")
    parser.add_argument("--graphs", nargs="+", choices=KINDS, default=list(KINDS),
                        help="graph kinds (default: all)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure, best kept (default: 5)")
    parser.add_argument("--networkx-max-nodes", type=int, default=200_000,
                        help="largest graph networkx runs on; it takes ~13 s a round at 1M nodes on "
                        "a 2-core machine (default: 200000)")
    parser.add_argument("--json", type=Path, help="also write the rows and machine info to this file")
    parser.add_argument("--suite", nargs="+", choices=(*SUITES, "compare"), default=list(SUITES),
                        help="what to measure: the graph core, the execution engine, the built-in "
                        "middleware, observers and metrics, durable runs' checkpoints, run-state codecs, resume, process pools, "
                        "the cold path (default: all "
                        "of these); or 'compare' alone: every engine on every workflow shape, each in its own "
                        "process (bench/compare.py, which takes its own options: --suite compare --help)")
    parser.add_argument("--workers", type=int, default=2, help="worker threads for the engine suite (default: 2)")
    args = parser.parse_args(argv)
    if args.repeat < 1 or min(args.nodes) < 1:
        parser.error("--repeat and --nodes must be at least 1")
    return args


def _import_peers(notes: list[str]) -> dict[str, ModuleType]:
    peers = {}
    for name in PEERS:
        try:
            peers[name] = importlib.import_module(name)
        except ImportError:
            notes.append(f"skipped: {name} (not installed)")
    return peers


def compare_argv(argv: Sequence[str]) -> list[str] | None:
    """With ``--suite compare`` (alone), the other options, for ``bench/compare.py``;
    else ``None``.  ``compare`` with another suite is a usage error."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--suite" or arg.startswith("--suite="):
            if arg == "--suite":
                end = next((j for j in range(i + 1, len(argv)) if argv[j].startswith("-")), len(argv))
                values, rest = argv[i + 1:end], argv[:i] + argv[end:]
            else:
                values, rest = [arg.split("=", 1)[1]], argv[:i] + argv[i + 1:]
            if "compare" not in values:
                return None
            if values != ["compare"]:
                sys.stderr.write("error: --suite compare runs alone (it takes bench/compare.py's options)\n")
                raise SystemExit(2)
            return rest
    return None


def main(argv: Sequence[str] | None = None) -> int:
    rest = compare_argv(sys.argv[1:] if argv is None else argv)
    if rest is not None:  # one way: compare.py never imports this module
        from bench import compare

        return compare.main(rest, prog=f"{Path(sys.argv[0]).name} --suite compare")
    args = parse_args(argv)
    notes: list[str] = []
    peers = _import_peers(notes)
    sizes = sorted(set(args.nodes))
    rows: list[Row] = []
    report: dict[str, Any] = {"machine": machine_info(peers), "repeat": args.repeat}
    if "graph" in args.suite:
        for nodes in sizes:
            for kind in args.graphs:
                rows += bench_graph(kind, make(kind, nodes), peers, args.repeat, args.networkx_max_nodes)
        if "networkx" in peers and sizes[-1] > args.networkx_max_nodes:
            notes.append(f"networkx: run only up to {args.networkx_max_nodes:,} nodes (--networkx-max-nodes), "
                         "it takes seconds a round beyond")
        rows += dropin_rows(sizes, args.repeat, notes)
        report.update({
            "rows": [asdict(r) for r in rows],
            "notes": notes,
            "memory": core_memory(make("layered", sizes[-1])),
            "targets": check_targets(rows),
        })
        print_report(report)
    if "engine" in args.suite:
        report["engine"] = engine_suite(args.workers, args.repeat)
        print_engine_report(report["engine"])
    for suite in TITLES:
        if suite in args.suite:
            report[suite] = overhead_rows(suite, args.repeat)
            print_overhead(suite, report[suite])
            for line in overhead_verdicts(suite, report[suite]):
                print(line)
    if args.json is not None:
        write_json(args.json, report)
    return 0


# -- middleware, observers and metrics: overhead per node ----------------------------------


def overhead_rows(suite: str, repeat: int) -> list[dict[str, Any]]:
    """Rows of ``bench/bench_<suite>.py``'s ``compare()``; a note row if it is missing."""
    module = f"bench.bench_{suite}"
    if importlib.util.find_spec(module) is None:
        return [{"skipped": f"{module} not present"}]
    compare = importlib.import_module(module).compare
    accepted = inspect.signature(compare).parameters
    return compare(**({"repeat": repeat} if "repeat" in accepted else {}))


def overhead_verdicts(suite: str, rows: list[dict[str, Any]]) -> list[str]:
    """The target lines of ``bench/bench_<suite>.py`` (its ``verdicts(rows)``, if any)."""
    verdicts = getattr(importlib.import_module(f"bench.bench_{suite}"), "verdicts", None)
    return verdicts(rows) if verdicts is not None and rows and "skipped" not in rows[0] else []


def print_overhead(suite: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{TITLES[suite]}\n")
    if not rows:
        return
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + " --- |" * len(keys))
    for row in rows:
        print("| " + " | ".join(_cell(row.get(k)) for k in keys) + " |")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


# -- the execution engine ----------------------------------------------------------------


def engine_suite(workers: int, repeat: int) -> dict[str, Any]:
    """Per-node cost on the issue's shapes, the numpy speed-up, diamond runs, run memory."""
    from bench import execution

    shapes = []
    for name, make_graph in execution.SHAPES.items():
        shapes += execution.measure_shape(name, make_graph(), workers=workers, repeat=repeat)
    return {
        "shapes": shapes,
        "numpy": execution.numpy_speedup(workers),
        "diamond": execution.diamond_runs(10_000, workers, repeat),
        "timeouts": execution.timeout_costs(100_000, workers, repeat),
        "run_state": execution.run_state_bytes(1_000_000),
        "dask": execution._dask() is not None,
    }


def print_engine_report(engine: dict[str, Any]) -> None:
    print("\nexecution engine: no-op actions, per-node cost (best run), every node checked to run once a run\n")
    print("| shape | engine | nodes | time (ms) | us/node | vs ours | vs bare loop |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    by_shape: dict[str, list[dict[str, Any]]] = {}
    for row in engine["shapes"]:
        by_shape.setdefault(row["shape"], []).append(row)
    verdicts = []
    for shape, rows in by_shape.items():
        bare = next(r for r in rows if r["engine"] == "bare loop")["seconds"]
        ours = next(r for r in rows if r["engine"].startswith("ours (") and "serial" not in r["engine"])
        for r in rows:
            print(f"| {shape} | {r['engine']} | {r['nodes']:,} | {fmt_ms(r['seconds'])} | {r['us_per_node']:.3f} "
                  f"| {r['seconds'] / ours['seconds']:.1f}x | {r['seconds'] / bare:.1f}x |")
        naive = next((r for r in rows if r["engine"].startswith("naive")), None)
        if naive is not None:
            ok = ours["seconds"] * 25 <= naive["seconds"] and ours["seconds"] <= 10 * bare
            verdicts.append(f"target {shape}: ours at most 1/25 of the naive loop and 10x the bare loop: "
                            f"{'PASS' if ok else 'FAIL'} (1/{naive['seconds'] / ours['seconds']:.0f} of naive, "
                            f"{ours['seconds'] / bare:.1f}x bare)")
    if not engine["dask"]:
        print("\nskipped: dask (not installed)")
    numpy_row = engine["numpy"]
    print(f"\n64 GIL-releasing numpy nodes (8 layers of 8, all-to-all): serial {numpy_row['serial_s'] * 1e3:.0f} ms, "
          f"{numpy_row['workers']} threads {numpy_row['threads_s'] * 1e3:.0f} ms: {numpy_row['speedup']:.2f}x "
          f"(target >= 1.8x: {'PASS' if numpy_row['speedup'] >= 1.8 else 'FAIL'})")
    diamond = {r["engine"]: r for r in engine["diamond"]}
    for name, r in diamond.items():
        print(f"6-node diamond, {r['runs']:,} runs: {name}: {r['us_per_run']:.1f} us per run")
    threads_d = next(r for n, r in diamond.items() if n.startswith("ours (") and "serial" not in n)
    serial_d = diamond["ours (serial)"]
    print(f"target diamond serial: <= 10 us a run: {'PASS' if serial_d['us_per_run'] <= 10 else 'FAIL'} "
          f"({serial_d['us_per_run']:.1f} us)")
    print(f"target diamond threads: <= 15 us a run: {'PASS' if threads_d['us_per_run'] <= 15 else 'FAIL'} "
          f"({threads_d['us_per_run']:.1f} us)")
    dask_d = next((r for n, r in diamond.items() if n.startswith("dask")), None)
    if dask_d is not None:
        ratio = dask_d["us_per_run"] / threads_d["us_per_run"]
        print(f"target diamond: at most 1/30 of dask threaded: {'PASS' if ratio >= 30 else 'FAIL'} (1/{ratio:.0f}; "
              f"serial 1/{dask_d['us_per_run'] / serial_d['us_per_run']:.0f})")
    timeouts = engine["timeouts"]
    print(f"\n{timeouts['nodes']:,}-node chain, timeout= on every node: {timeouts['timed_us_per_node']:.3f} us a node, "
          f"without {timeouts['plain_us_per_node']:.3f}: {timeouts['ratio']:.2f}x "
          f"(target <= 2x: {'PASS' if timeouts['ratio'] <= 2 else 'FAIL'})")
    grown = timeouts["grown_bytes"]
    growth = grown[-1] - grown[0]
    print(f"memory after each of {timeouts['memory_runs']} runs with timeout=3600 (tracemalloc, from a warm engine): "
          + ", ".join(f"{g / 1e6:.2f}" for g in grown) + f" MB; {timeouts['timer_entries']} timer entries left "
          f"(target no growth, < 1 MB from the first run to the last: {'PASS' if growth < 1e6 else 'FAIL'})")
    state = engine["run_state"]
    print(f"run-state memory at {state['nodes']:,} nodes: {state['bytes_per_node']:.1f} B/node beyond the graph "
          f"(target <= 64: {'PASS' if state['bytes_per_node'] <= 64 else 'FAIL'})")
    for line in verdicts:
        print(line)


def print_report(report: dict[str, Any]) -> None:
    info, memory = report["machine"], report["memory"]
    build = "DEBUG build: timings not representative" if info["extension_debug_build"] else "release build"
    versions = "".join(f", {name} {info[name]}" for name in ("numpy", *PEERS) if info[name])
    print(f"flow_orchestrator {info['flow_orchestrator']} ({build}); Python {info['python']}{versions}; "
          f"{info['cpu_count']} CPUs ({info['cpu']}); best of {report['repeat']} after 1 warm-up\n")
    print(markdown_table([Row(**r) for r in report["rows"]]))
    print()
    for note in report["notes"]:
        print(note)
    print(f"core memory, layered graph of {memory['nodes']:,} nodes / {memory['edges']:,} edges, every "
          f"array built: {memory['total_bytes'] / 1e6:.1f} MB = {memory['node_bytes_per_node']:.0f} B/node "
          f"(offsets, order, levels) + {memory['edge_bytes_per_edge']:.0f} B/edge (successor and "
          f"predecessor ids); {memory['total_bytes_per_node']:.1f} B per node all in")
    for line in report["targets"]:
        print(line)


if __name__ == "__main__":
    sys.exit(main())
