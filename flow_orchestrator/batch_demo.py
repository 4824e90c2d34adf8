"""The main demo job: a CPU-bound numpy batch workflow run on the engine.

``flow-orchestrator demo`` runs it: a few hundred nodes of numpy work that releases the
GIL, in the shape of a typical batch job::

    generate[g] ──▶ chunk[g, i] (x CHUNKS) ──▶ reduce[g] ──┐
                                                        ├──▶ report
    (x GROUPS)                                          ┘

Each chunk sorts and transforms its slice of its group's data, each reduce combines
its chunks, and the report checks the totals against a direct computation, so a
scheduling bug cannot go unnoticed.  A progress line is written while it runs.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

import numpy as np

from .engine import Engine, RunResult
from .workflow import Workflow, WorkflowBuilder

__all__ = ["build_batch_workflow", "run_batch_demo"]

GROUPS = 8
CHUNKS = 32
CHUNK_SIZE = 200_000


def _generate(group: int) -> Any:
    def generate() -> np.ndarray:
        return np.random.default_rng(group).standard_normal(CHUNKS * CHUNK_SIZE)
    generate.__name__ = f"generate_{group}"
    return generate


def _chunk(group: int, index: int) -> Any:
    def chunk(ctx: Any) -> float:
        data = ctx.input(f"generate[{group}]")[index * CHUNK_SIZE:(index + 1) * CHUNK_SIZE]
        ordered = np.sort(data)                       # releases the GIL
        return float(np.sum(np.sqrt(np.abs(ordered)) * np.tanh(ordered)))
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
        flow.add(f"generate[{g}]", _generate(g), tags={"io"})
        for i in range(chunks):
            flow.add(f"chunk[{g},{i}]", _chunk(g, i), depends_on=[f"generate[{g}]"], retries=1)
        flow.add(f"reduce[{g}]", _reduce(g), depends_on=[f"chunk[{g},{i}]" for i in range(chunks)])
    flow.add("report", _report, depends_on=[f"reduce[{g}]" for g in range(groups)])
    return flow.build()


def _expected_total(group: int) -> float:
    data = np.random.default_rng(group).standard_normal(CHUNKS * CHUNK_SIZE)
    return float(sum(np.sum(np.sqrt(np.abs(np.sort(c))) * np.tanh(np.sort(c)))
                     for c in np.split(data, CHUNKS)))


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
        handle = engine.submit(workflow)
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
    out.write(result.summary() + "\n")
    out.write(f"  serial run of the same workflow: {serial:.3f} s "
              f"(speed-up with {engine.max_workers} workers: {serial / result.wall_seconds:.2f}x)\n")
    report = result.output("report")
    for g in range(GROUPS):
        if not np.isclose(report[f"reduce[{g}]"], _expected_total(g)):
            raise AssertionError(f"group {g}: wrong total {report[f'reduce[{g}]']}")
    out.write(f"  checked: all {GROUPS} group totals match a direct computation\n")
    return result
