"""A long job that survives crashes: strict checkpoints to SQLite, resumed by run id.

What it shows
    A 2,000-node workflow built in bulk with :meth:`Workflow.from_arrays` (40 layers of
    50 tasks; each task depends on two tasks of the layer before) run durably: every
    completion is saved to a :class:`~flow_orchestrator.stores.SqliteStore` before
    any task that depends on it starts (``checkpoint="strict"``).  Kill the process at
    any moment (Ctrl-C, ``kill -9``, a power cut, or ``--crash-after N``, which
    SIGKILLs the process when its task number N+1 starts) and ``--resume`` continues
    the run: tasks already done are not run again, the rest are.  It prints how many
    tasks ran this time and checks every output against a direct computation.

Run it::

    python examples/resumable_job.py --crash-after 700      # dies (SIGKILL) part way
    python examples/resumable_job.py --resume               # runs only what is left
    python examples/resumable_job.py --resume               # "already completed"

    python examples/resumable_job.py --run-id nightly --store /tmp/jobs.db --work-ms 5
    # ... press Ctrl-C while it runs, then:
    python examples/resumable_job.py --run-id nightly --store /tmp/jobs.db --resume

The command-line equivalent (the module-level ``workflow`` is the same workflow, so the
CLI and this script can resume each other's runs in the same store)::

    flow-orchestrator run examples/resumable_job.py:workflow \\
        --store sqlite:///resumable_job.db --run-id job --checkpoint strict
    flow-orchestrator status --store sqlite:///resumable_job.db job
    flow-orchestrator resume examples/resumable_job.py:workflow job \\
        --store sqlite:///resumable_job.db --checkpoint strict

(The checkpoint policy is not saved with a run: give ``--checkpoint strict`` to
``resume`` too, or the resumed run checkpoints in batches, the CLI's default.)

Tasks sleep ``work_ms`` milliseconds (workflow data, default 0.5; ``--work-ms`` here,
``--data work_ms=5`` with the CLI) to stand in for real work.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import flow_orchestrator as fo
from flow_orchestrator.observers import NodeEvent, Observer
from flow_orchestrator.stores import RunExistsError, RunLockedError, SqliteStore

LAYERS = 40
WIDTH = 50
MODULUS = 1_000_003
DEFAULT_WORK_MS = 0.5

# Set by main() only: a crash switch must not live in the run's data, which is saved and
# restored on resume (the resumed run would crash again).
_crash_after: int | None = None
_started = itertools.count(1)


def task(ctx: Any) -> int:
    """One task: a value derived from its inputs and its id, after ``work_ms`` of "work".

    ``--crash-after N`` makes the start of the task number N+1 of this process kill the
    whole process with SIGKILL: no ``finally`` block, no atexit handler, no final save.
    """
    if _crash_after is not None and next(_started) > _crash_after:
        _die()
    time.sleep(float(ctx.data.get("work_ms", DEFAULT_WORK_MS)) / 1000.0)
    return expected_value(ctx.node_id, list(ctx.inputs.values()))


def expected_value(node_id: int, inputs: Sequence[int]) -> int:
    """What task ``node_id`` returns given its inputs' values (in any order)."""
    return (31 * sum(inputs) + 7 * node_id + 1) % MODULUS


def _die() -> None:
    sys.stdout.flush()
    if hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)  # no SIGKILL (Windows): the next best thing


def task_names(layers: int = LAYERS, width: int = WIDTH) -> list[str]:
    """Task names in id order: ``task-LLL-III``."""
    return [f"task-{layer:03d}-{i:03d}" for layer in range(layers) for i in range(width)]


def edges(layers: int = LAYERS, width: int = WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """``(sources, targets)``: task ``(l, i)`` depends on ``(l-1, i)`` and ``(l-1, i+1 mod width)``."""
    ids = np.arange(layers * width, dtype=np.int32).reshape(layers, width)
    left, right, dependents = ids[:-1].ravel(), np.roll(ids[:-1], -1, axis=1).ravel(), ids[1:].ravel()
    if width == 1:  # left and right are the same task
        return left, dependents
    return np.concatenate([left, right]), np.concatenate([dependents, dependents])


def build(layers: int = LAYERS, width: int = WIDTH) -> fo.Workflow:
    """The job's workflow: ``layers * width`` tasks, all running :func:`task`."""
    sources, targets = edges(layers, width)
    return fo.Workflow.from_arrays("resumable-job", task_names(layers, width), sources, targets, task)


def expected_outputs(layers: int = LAYERS, width: int = WIDTH) -> list[int]:
    """Every task's output, computed directly in a plain loop (the check of a run)."""
    sources, targets = edges(layers, width)
    deps: list[list[int]] = [[] for _ in range(layers * width)]
    for s, t in zip(sources.tolist(), targets.tolist()):
        deps[t].append(s)
    values: list[int] = []
    for node in range(layers * width):  # ids are in a topological order: layer by layer
        values.append(expected_value(node, [values[d] for d in deps[node]]))
    return values


#: The default job, for ``flow-orchestrator run examples/resumable_job.py:workflow``.
workflow = build()


class CompletionCounter(Observer):
    """Counts the tasks that completed in this process (observer hooks run on worker threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.completed = 0

    def on_node_success(self, event: NodeEvent) -> None:
        """One more task done here."""
        with self._lock:
            self.completed += 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="resumable_job.db", help="SQLite file of the runs (default: %(default)s)")
    parser.add_argument("--run-id", default="job", help="the run's id in the store (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue the run --run-id saved in --store")
    parser.add_argument("--crash-after", type=int, metavar="N",
                        help="SIGKILL this process when its task number N+1 starts")
    parser.add_argument("--layers", type=int, default=LAYERS, help="layers of tasks (default: %(default)s)")
    parser.add_argument("--width", type=int, default=WIDTH, help="tasks per layer (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="worker threads (default: %(default)s)")
    parser.add_argument("--work-ms", type=float, default=DEFAULT_WORK_MS,
                        help="milliseconds each task sleeps (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run or resume the job; 0 when it completed and its outputs check out."""
    global _crash_after
    args = _parser().parse_args(argv)
    if args.layers < 1 or args.width < 1 or args.workers < 1:
        print("error: --layers, --width and --workers must be >= 1", file=sys.stderr)
        return 2
    wf = workflow if (args.layers, args.width) == (LAYERS, WIDTH) else build(args.layers, args.width)
    total = len(wf)
    _crash_after = args.crash_after
    counter = CompletionCounter()
    data = {"work_ms": args.work_ms}

    with SqliteStore(args.store) as store, fo.Engine(args.workers) as engine:
        if args.resume:
            if not store.exists(args.run_id):
                print(f"error: no run {args.run_id!r} in {args.store} to resume", file=sys.stderr)
                return 1
            saved = store.load(args.run_id)
            done_before = int(np.count_nonzero(saved.statuses == fo.NodeStatus.COMPLETED))
            if saved.run_status == "completed":
                print(f"run {args.run_id!r} already completed ({done_before}/{total} tasks); nothing to do")
                return 0
            print(f"resuming run {args.run_id!r} ({saved.run_status}): {done_before}/{total} tasks "
                  "done in earlier runs", flush=True)
        else:
            done_before = 0
            print(f"starting run {args.run_id!r} of {wf.name!r}: {total} tasks on {args.workers} threads, "
                  f"strict checkpoints to {args.store}", flush=True)
        if _crash_after is not None:
            print(f"will crash (SIGKILL) when task {_crash_after + 1} of this process starts", flush=True)

        start = time.perf_counter()
        try:
            if args.resume:
                result = engine.resume(wf, args.run_id, store=store, checkpoint="strict", data=data,
                                       observers=[counter], raise_on_failure=False)
            else:
                result = engine.run(wf, store=store, run_id=args.run_id, checkpoint="strict", data=data,
                                    observers=[counter], raise_on_failure=False)
        except RunExistsError:
            print(f"error: {args.store} already holds a run {args.run_id!r}: add --resume to continue it, "
                  "or choose another --run-id", file=sys.stderr)
            return 1
        except RunLockedError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            # The run was cancelled and its final state saved before the exception got here.
            saved = store.load(args.run_id)
            done = int(np.count_nonzero(saved.statuses == fo.NodeStatus.COMPLETED))
            print(f"\ninterrupted: ran {counter.completed} task(s) this time; {done}/{total} saved as done")
            print(f"resume with: {_resume_command(args)}")
            return 130
        elapsed = time.perf_counter() - start

    done = int(np.count_nonzero(result.statuses == fo.NodeStatus.COMPLETED))
    print(f"ran {counter.completed} task(s) this time in {elapsed:.2f} s; "
          f"{done}/{total} done ({done_before} restored from {args.store})")
    if not result.ok:
        print(result.summary())
        print(f"resume with: {_resume_command(args)}")
        return 1
    expected = expected_outputs(args.layers, args.width)
    outputs = result.outputs
    wrong = [name for name, value in zip(wf.names, expected) if outputs[name] != value]
    if wrong:
        print(f"error: {len(wrong)} output(s) differ from a direct computation, e.g. {wrong[:3]}")
        return 1
    print(f"verified: all {total} outputs match a direct computation (checksum {sum(expected) % MODULUS})")
    return 0


def _resume_command(args: argparse.Namespace) -> str:
    return (f"python {sys.argv[0] or 'resumable_job.py'} --resume --store {args.store} --run-id {args.run_id}"
            + ("" if (args.layers, args.width) == (LAYERS, WIDTH) else f" --layers {args.layers} --width {args.width}"))


if __name__ == "__main__":
    sys.exit(main())
