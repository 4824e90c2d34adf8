"""The main demo job: a CPU-bound numpy batch workflow run on the engine.

``flow-orchestrator demo`` runs it: a few hundred nodes of numpy work that releases the
GIL, in the shape of a typical batch job::

    generate[g] ──▶ chunk[g, i] (x CHUNKS) ──▶ reduce[g] ──┐
                                                        ├──▶ report ──▶ lines (map)
    (x GROUPS)                                          ┘

Each generate step describes its group's data (a seed per chunk, as a real job would
list its input files), each chunk generates, sorts and transforms its slice, each reduce
combines its chunks, and the report checks the totals against a direct computation, so
a scheduling bug cannot go unnoticed; ``lines``, a map node, formats one line per group
of the report (one item per element of its output, scheduled by the core).  A progress line is written while it runs.

The run is durable: it is saved to a SQLite store (the embedded default) while it runs,
and resuming it afterwards runs nothing again.  Outputs stay small (numbers, not
arrays), as they should in a job whose outputs are saved.

Then the selling point, for real: a child process runs the same workflow durably (strict
checkpoints) and is killed with SIGKILL part-way; resuming its run restores what the
store holds and runs only the rest, and the demo prints both counts.  Last, the speed-up
of the worker threads over a serial run: the median of several runs of each, after a
warm-up, on a smaller version of the workflow (same nodes, half the groups), no store.

Part of :mod:`flow_orchestrator.cli` (layer L6, interfaces): ``cmd_demo`` of :mod:`.main`
runs it.  It moved here from ``flow_orchestrator/batch_demo.py``, which re-exports its names
so that old imports keep working.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..engine import Engine
from ..observers import NodeEvent, Observer
from ..result import RunResult
from ..status import NodeStatus
from ..stores import SqliteStore
from ..workflow import Workflow, WorkflowBuilder

__all__ = ["build_batch_workflow", "run_batch_demo"]

GROUPS = 8
CHUNKS = 32
CHUNK_SIZE = 200_000
#: How much of the workflow the crash child completes before it is killed.
CRASH_AT = 0.4


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
    """The demo's workflow: ``groups * (chunks + 2) + 2`` nodes."""
    flow = WorkflowBuilder("numpy-batch")
    for g in range(groups):
        flow.add(f"generate[{g}]", _generate(g, chunks), tags={"io"})
        for i in range(chunks):
            flow.add(f"chunk[{g},{i}]", _chunk(g, i), depends_on=[f"generate[{g}]"], retries=1)
        flow.add(f"reduce[{g}]", _reduce(g), depends_on=[f"chunk[{g},{i}]" for i in range(chunks)])
    flow.add("report", _report, depends_on=[f"reduce[{g}]" for g in range(groups)])
    flow.map("lines", _line, over="report")
    return flow.build()


def _line(name: str, report: dict[str, float]) -> str:
    return f"{name}: {report[name]:.6g}"


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


def _check_totals(result: RunResult, what: str) -> None:
    report = result.output("report")
    for g in range(GROUPS):
        if not np.isclose(report[f"reduce[{g}]"], _expected_total(g)):
            raise AssertionError(f"{what}: group {g}: wrong total {report[f'reduce[{g}]']}")


# -- the crash: a child process killed with SIGKILL, then the resume -------------------------------


class _Completions(Observer):
    """In the crash child: one line on stdout per completed node, as it completes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def on_node_success(self, event: NodeEvent) -> None:
        with self._lock:
            sys.stdout.write(f"{event.node}\n")
            sys.stdout.flush()


class _Started(Observer):
    """In the resume: which nodes started (ran) this time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.nodes: set[str] = set()

    def on_node_start(self, event: NodeEvent) -> None:
        with self._lock:
            self.nodes.add(event.node)


def crash_child(db: str, workers: int) -> None:
    """The crash child's job (``python -c``): run the workflow durably into ``db``."""
    with SqliteStore(db) as store, Engine(workers) as engine:
        engine.run(build_batch_workflow(), store=store, run_id="crash", checkpoint="strict",
                   observers=[_Completions()])


_CHILD = "import sys; from flow_orchestrator.cli.batch_demo import crash_child; crash_child(sys.argv[1], int(sys.argv[2]))"


def _crash_then_resume(engine: Engine, workflow: Workflow, db: str) -> tuple[int, int, int, RunResult, float]:
    """Kill a child running ``workflow`` into ``db`` once it completed ``CRASH_AT`` of the
    nodes, then resume the run here: ``(completions seen, restored, ran, result, seconds)``."""
    package_root = str(Path(__file__).resolve().parents[2])  # the same flow_orchestrator in the child
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    # cwd: the store's directory, since ``python -c`` puts the working directory first on
    # sys.path, and a source checkout there would shadow the installed package.
    # Its stderr goes to a file, not a pipe: a pipe nobody reads while we read stdout
    # would block the child once full (whatever it logs) and hang the demo.
    errors = tempfile.TemporaryFile(mode="w+", dir=os.path.dirname(os.path.abspath(db)))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, db, str(engine.max_workers)], env=env,
                             cwd=os.path.dirname(os.path.abspath(db)),
                             stdout=subprocess.PIPE, stderr=errors, text=True)
    assert child.stdout is not None
    seen, target = 0, int(len(workflow) * CRASH_AT)
    try:
        while seen < target and child.stdout.readline():
            seen += 1
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)  # a real crash: no handler, no final save
        child.wait()
        child.stdout.close()
        errors.seek(0)
        err = errors.read()[-4000:]
        errors.close()
    if seen < target:
        raise RuntimeError(f"the crash child ended before it could be killed (exit {child.returncode}):\n{err}")
    with SqliteStore(db) as store:
        restored = int((store.load("crash").statuses == NodeStatus.COMPLETED).sum())
        started = _Started()
        began = time.perf_counter()
        result = engine.resume(workflow, "crash", store=store, checkpoint="strict", observers=[started])
        seconds = time.perf_counter() - began
    return seen, restored, len(started.nodes), result, seconds


# -- the speed-up, measured fairly -------------------------------------------------------------------


def _median_seconds(engines: list[Engine], workflow: Workflow, repeat: int) -> list[float]:
    """Per engine, the median wall time of ``repeat`` runs of ``workflow`` (no store),
    after one untimed warm-up run each; the engines take turns, so drift hits all alike."""
    times: list[list[float]] = [[] for _ in engines]
    for round_ in range(repeat + 1):
        for i, eng in enumerate(engines):
            began = time.perf_counter()
            eng.run(workflow)
            if round_:  # round 0 is the warm-up
                times[i].append(time.perf_counter() - began)
    return [statistics.median(t) for t in times]


def run_batch_demo(workers: int | None = None, out: TextIO | None = None, *, repeat: int = 3) -> RunResult:
    """Run the batch workflow with a progress line, print its summary and verify it; crash
    a child running it and resume; time threads against serial (median of ``repeat``)."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    out = out if out is not None else sys.stdout
    workflow = build_batch_workflow()
    with Engine(workers) as engine, tempfile.TemporaryDirectory(prefix="flow-orchestrator-demo-") as folder:
        out.write(f"running {workflow.name!r}: {len(workflow)} nodes on {engine.max_workers} worker thread(s)\n")
        store = SqliteStore(os.path.join(folder, "runs.db"))  # the embedded default store
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
        out.write(result.summary() + "\n")
        out.write(f"  saved to SQLite while it ran (batched checkpoints): run {saved.run_id!r} {saved.run_status}, "
                  f"{len(saved.outputs)} outputs, {size / 1e3:.0f} kB; resuming it ran "
                  f"{int((again.attempts > saved.attempts).sum())} node(s) again ({resumed * 1e3:.0f} ms)\n")
        _check_totals(result, "the run")
        out.write(f"  checked: all {GROUPS} group totals match a direct computation\n")

        out.write(f"crash: a child process runs it (strict checkpoints) and is killed with SIGKILL "
                  f"after {int(CRASH_AT * 100)}% of the nodes\n")
        out.flush()
        seen, restored, ran, resumed_result, resume_s = _crash_then_resume(
            engine, workflow, os.path.join(folder, "crash.db"))
        _check_totals(resumed_result, "the resumed run")
        out.write(f"  killed after {seen} completions; the store held {restored} completed node(s)\n"
                  f"  resumed: {restored} restored, {ran} run ({restored} + {ran} = {restored + ran} of "
                  f"{len(workflow)}), {resumed_result.status} in {resume_s:.2f} s; totals match\n")

        small = build_batch_workflow(groups=GROUPS // 2)
        with Engine(1, executor="serial") as serial_engine:
            serial, threaded = _median_seconds([serial_engine, engine], small, repeat)
        out.write(f"speed-up on {len(small)} nodes ({GROUPS // 2} groups, no store), median of {repeat} "
                  f"run(s) each after a warm-up: serial {serial:.3f} s, {engine.max_workers} worker thread(s) "
                  f"{threaded:.3f} s: {serial / threaded:.2f}x\n")
    return result
