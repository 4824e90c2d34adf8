"""Large outputs: one node returning a big numpy array, without a store and with each store.

Issue 13, item 7: a 200 MB array cost 7.45 s and a 1.5 GB peak with ``SqliteStore``
(0.07 s and 228 MB without a store), and the database grew by 400 MB to 1 GB per run.
Each row is one kind of store, measured in a fresh child process (so that peaks do not
mix): the seconds of each of 3 runs (new run ids, one store), the peak resident memory
of the child (``ru_maxrss``) and the peak of Python and numpy allocations
(``tracemalloc``, which numpy reports to) above what the child held before the first
run (the ``x array`` column divides it by the array's size), the time to load the first
run back, and the store's size on disk after the 3 runs and after deleting them.  Ratios are to the no-store row
of the same invocation.

    PYTHONPATH=. python bench/bench_large_outputs.py            # 200 MB
    PYTHONPATH=. python bench/bench_large_outputs.py --mb 50    # quicker (CI)
    PYTHONPATH=. python bench/bench_large_outputs.py --stores none sqlite

PostgreSQL is measured when ``FLOW_ORCHESTRATOR_TEST_POSTGRES`` names a server (in a
schema of its own, dropped afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

STORES = ("none", "memory", "json", "flatbuffers", "sqlite", "postgres")
RUNS = 3


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _open(kind: str, where: Path, schema: str) -> Any:
    from flow_orchestrator.stores import FlatBuffersFileStore, JsonFileStore, MemoryStore, SqliteStore

    if kind == "memory":
        return MemoryStore()
    if kind == "json":
        return JsonFileStore(where / "runs")
    if kind == "flatbuffers":
        return FlatBuffersFileStore(where / "runs")
    if kind == "sqlite":
        return SqliteStore(where / "runs.db")
    from flow_orchestrator.stores import PostgresStore

    return PostgresStore(os.environ["FLOW_ORCHESTRATOR_TEST_POSTGRES"], schema=schema)


def _pg_size(schema: str) -> int:
    import psycopg

    with psycopg.connect(os.environ["FLOW_ORCHESTRATOR_TEST_POSTGRES"], autocommit=True) as db:
        row = db.execute("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                         " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                         (schema,)).fetchone()
        return int(row[0])


def _pg_drop(schema: str) -> None:
    import psycopg

    with psycopg.connect(os.environ["FLOW_ORCHESTRATOR_TEST_POSTGRES"], autocommit=True) as db:
        db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def measure(kind: str, mb: int) -> dict[str, Any]:
    """One store kind, in this process: seconds per run, peaks, size after the runs."""
    import numpy as np

    import flow_orchestrator as fo

    size = mb * 2**20

    def big() -> Any:
        return np.ones(size // 8, dtype=np.float64)

    def small(big: Any) -> float:
        return float(big[0])

    workflow = (fo.WorkflowBuilder("large-outputs").add("big", big)
                .add("small", small, depends_on="big").build())
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory() as tmp, fo.Engine(1) as engine:
        where = Path(tmp)
        store = None if kind == "none" else _open(kind, where, schema)
        engine.run(fo.WorkflowBuilder("warm").add("w", lambda: 1).build())  # compiled, pools up
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        seconds = []
        try:
            for i in range(RUNS):
                start = time.perf_counter()
                result = engine.run(workflow, store=store, run_id=f"r{i}")
                seconds.append(time.perf_counter() - start)
                assert result.ok and result.output("small") == 1.0
                del result
            traced_peak = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
            if store is not None:
                start = time.perf_counter()
                state = store.load("r0")
                load_seconds = time.perf_counter() - start
                assert len(state.outputs[0]) >= size
                del state
            else:
                load_seconds = float("nan")
            disk = _disk(kind, where, schema)
            if store is not None:
                for i in range(RUNS):
                    store.delete(f"r{i}")
                if kind not in ("postgres", "none", "memory"):
                    store.close()
                    store = None
            deleted = _disk(kind, where, schema)
        finally:
            if store is not None:
                store.close()
            if kind == "postgres":
                _pg_drop(schema)
    return {"store": kind, "mb": mb, "seconds": seconds, "load_seconds": load_seconds,
            "traced_peak": traced_peak, "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "disk": disk, "deleted": deleted}


def _disk(kind: str, where: Path, schema: str) -> int:
    if kind == "postgres":
        return _pg_size(schema)
    return 0 if kind in ("none", "memory") else _size_on_disk(where)


def compare(mb: int = 200, stores: tuple[str, ...] = STORES) -> list[dict[str, Any]]:
    """Each store's row, each measured in a child process of its own."""
    rows = []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    for kind in stores:
        if kind == "postgres" and not os.environ.get("FLOW_ORCHESTRATOR_TEST_POSTGRES"):
            print("postgres: skipped (FLOW_ORCHESTRATOR_TEST_POSTGRES is not set)", file=sys.stderr)
            continue
        out = subprocess.run([sys.executable, "-m", "bench.bench_large_outputs", "--child", kind, "--mb", str(mb)],
                             capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parent.parent,
                             check=False)
        if out.returncode != 0:
            print(f"{kind}: failed\n{out.stderr[-3000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a text table, ratios to the no-store row."""
    base = next((r for r in rows if r["store"] == "none"), None)
    mib = 2**20
    lines = [f"{'store':<12} {'run 1 s':>8} {'runs 2-3 s':>11} {'x none':>7} {'load s':>7} {'peak RSS MB':>12}"
             f" {'traced MB':>10} {'x array':>8} {'disk after 3 runs MB':>21} {'after deleting them':>20}"]
    for r in rows:
        first, rest = r["seconds"][0], sum(r["seconds"][1:]) / max(len(r["seconds"]) - 1, 1)
        ratio = f"{first / base['seconds'][0]:.1f}x" if base else "-"
        lines.append(f"{r['store']:<12} {first:>8.2f} {rest:>11.2f} {ratio:>7} {r['load_seconds']:>7.2f}"
                     f" {r['maxrss'] / mib:>12.0f} {r['traced_peak'] / mib:>10.0f}"
                     f" {r['traced_peak'] / (r['mb'] * mib):>7.1f}x {r['disk'] / mib:>21.0f} {r['deleted'] / mib:>20.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the table (or, with ``--child``, one row as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the array in MiB (default 200; CI: 50)")
    parser.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    parser.add_argument("--child", choices=STORES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.mb)))
        return
    rows = compare(args.mb, tuple(args.stores))
    print(f"one node returning a {args.mb} MiB float64 array, {RUNS} runs per store (fresh process per store)")
    print(table(rows))


if __name__ == "__main__":
    main()
