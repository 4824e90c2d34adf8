"""The main demo job: a CPU-bound numpy batch workflow run on the engine.

``flow-orchestrator demo`` runs it: a few hundred nodes of numpy work that releases the
GIL, in the shape of a typical batch job::

    generate[g] ──▶ chunk[g, i] (x CHUNKS) ──▶ reduce[g] ──┐
                                                        ├──▶ report
    (x GROUPS)                                          ┘

Each generate step describes its group's data (a seed per chunk, as a real job would
list its input files), each chunk generates, sorts and transforms its slice, each reduce
combines its chunks, and the report checks the totals against a direct computation, so
a scheduling bug cannot go unnoticed.  A progress line is written while it runs.

The run is durable: it is saved to a SQLite store (the embedded default) while it runs,
and resuming it afterwards runs nothing again.  Outputs stay small (numbers, not
arrays), as they should in a job whose outputs are saved.

Part of :mod:`flow_orchestrator.cli` (layer L6, interfaces): ``cmd_demo`` of :mod:`.main`
runs it.  It moved here from ``flow_orchestrator/batch_demo.py``, which re-exports its names
so that old imports keep working.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from typing import Any, TextIO

import numpy as np

from ..engine import Engine
from ..result import RunResult
from ..stores import SqliteStore
from ..workflow import Workflow, WorkflowBuilder

__all__ = ["build_batch_workflow", "run_batch_demo"]

GROUPS = 8
CHUNKS = 32
CHUNK_SIZE = 200_000


def _generate(group: int, chunks: int) -> Any:
    def generate() -> dict[str, Any]:
        return {"group": group, "seeds": [[group, i] for i in range(chunks)], "size": CHUNK_SIZE}
    generate.__name__ = f"generate_{group}"
    return generate


def _chunk_data(seed: list[int], size: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(size)


def _chunk_value(data: np.ndarray) -> float:
    ordered = np.sort(data)                           # releases the GIL
    return float(np.sum(np.sqrt(np.abs(ordered)) * np.tanh(ordered)))


def _chunk(group: int, index: int) -> Any:
    def chunk(ctx: Any) -> float:
        spec = ctx.input(f"generate[{group}]")
        return _chunk_value(_chunk_data(spec["seeds"][index], spec["size"]))
    return chunk


def _reduce(group: int) -> Any:
    def reduce(ctx: Any) -> float:
        return float(sum(ctx.inputs.values()))
    return reduce


def _report(ctx: Any) -> dict[str, float]:
    totals = {name: value for name, value in ctx.inputs.items()}
    ctx.data["grand_total"] = sum(totals.values())
    return totals


def build_batch_workflow(groups: int = GROUPS, chunks: int = CHUNKS) -> Workflow:
    """The demo's workflow: ``groups * (chunks + 2) + 1`` nodes."""
    flow = WorkflowBuilder("numpy-batch")
    for g in range(groups):
        flow.add(f"generate[{g}]", _generate(g, chunks), tags={"io"})
        for i in range(chunks):
            flow.add(f"chunk[{g},{i}]", _chunk(g, i), depends_on=[f"generate[{g}]"], retries=1)
        flow.add(f"reduce[{g}]", _reduce(g), depends_on=[f"chunk[{g},{i}]" for i in range(chunks)])
    flow.add("report", _report, depends_on=[f"reduce[{g}]" for g in range(groups)])
    return flow.build()


def _expected_total(group: int) -> float:
    return sum(_chunk_value(_chunk_data([group, i], CHUNK_SIZE)) for i in range(CHUNKS))


def _progress(handle: Any, total: int, out: TextIO, stop: threading.Event) -> None:
    # On a terminal one line is redrawn; elsewhere (CI logs) a line per quarter is written.
    live = out.isatty()
    last_quarter = -1
    while not stop.wait(0.1):
        counts = handle.progress()
        done = total - int(counts[0]) - int(counts[1])
        line = f"  [{'#' * (30 * done // total):<30}] {done}/{total} nodes, {int(counts[1])} running"
        if live:
            out.write("\r" + line)
        elif 4 * done // total > last_quarter:
            last_quarter = 4 * done // total
            out.write(line + "\n")
        out.flush()


def run_batch_demo(workers: int | None = None, out: TextIO | None = None) -> RunResult:
    """Run the batch workflow with a progress line, print its summary, verify its result."""
    out = out if out is not None else sys.stdout
    workflow = build_batch_workflow()
    with Engine(workers) as engine:
        out.write(f"running {workflow.name!r}: {len(workflow)} nodes on {engine.max_workers} worker thread(s)\n")
        serial_start = time.perf_counter()
        Engine(1, executor="serial").run(workflow)
        serial = time.perf_counter() - serial_start
        folder = tempfile.TemporaryDirectory(prefix="flow-orchestrator-demo-")
        store = SqliteStore(os.path.join(folder.name, "runs.db"))  # the embedded default store
        handle = engine.submit(workflow, store=store, run_id="demo-1", checkpoint="batched")
        stop = threading.Event()
        painter = threading.Thread(target=_progress, args=(handle, len(workflow), out, stop), daemon=True)
        painter.start()
        try:
            result = handle.result()
        finally:
            stop.set()
            painter.join()
        end = "\r" if out.isatty() else ""
        out.write(f"{end}  [{'#' * 30}] {len(workflow)}/{len(workflow)} nodes{' ' * 12}\n")
        saved = store.load("demo-1")
        resume_start = time.perf_counter()
        again = engine.resume(workflow, "demo-1", store=store)
        resumed = time.perf_counter() - resume_start
        size = sum(os.path.getsize(store.path + suffix) for suffix in ("", "-wal") if os.path.exists(store.path + suffix))
        store.close()
        folder.cleanup()
    out.write(result.summary() + "\n")
    out.write(f"  saved to SQLite while it ran (batched checkpoints): run {saved.run_id!r} {saved.run_status}, "
              f"{len(saved.outputs)} outputs, {size / 1e3:.0f} kB; resuming it ran "
              f"{int((again.attempts > saved.attempts).sum())} node(s) again ({resumed * 1e3:.0f} ms)\n")
    out.write(f"  serial run of the same workflow: {serial:.3f} s "
              f"(speed-up with {engine.max_workers} workers: {serial / result.wall_seconds:.2f}x)\n")
    report = result.output("report")
    for g in range(GROUPS):
        if not np.isclose(report[f"reduce[{g}]"], _expected_total(g)):
            raise AssertionError(f"group {g}: wrong total {report[f'reduce[{g}]']}")
    out.write(f"  checked: all {GROUPS} group totals match a direct computation\n")
    return result
