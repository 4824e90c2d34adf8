"""A workflow on a Dask cluster: a local one of 2 worker processes, or yours.

What it shows
    The engine's scheduler stays in this process and sends each node's attempt to a
    ``dask.distributed`` cluster through
    :class:`~flow_orchestrator.dask_executor.DaskExecutor`: a Monte Carlo estimate of
    pi split into chunks that run in parallel on the workers, then combined::

        sample[0] ──┐
        sample[1] ──┼──▶ combine ──▶ report
        ...         ┘

    Retries and observers work as on threads: ``--flaky N`` makes the first attempt of
    N chunks fail with a ``ConnectionError`` on the worker, the ``retry`` middleware
    (applied on the worker) asks for another attempt, and an observer in this process
    counts starts, successes and retries.  Each chunk reports the worker process that
    ran it, and the estimate is checked against the same computation done here.

Run it (needs ``pip install "flow-orchestrator[dask]"``)::

    python examples/dask_cluster.py                       # a LocalCluster of 2 processes
    python examples/dask_cluster.py --chunks 64 --samples 2000000 --workers 4
    python examples/dask_cluster.py --scheduler tcp://scheduler:8786

With ``--scheduler`` the workers must have numpy and flow-orchestrator installed (the
wrapper that runs an attempt comes from the library); the actions themselves travel with
the tasks (this file runs as ``__main__``, whose functions dask serializes by value).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import flow_orchestrator as fo
from flow_orchestrator.middleware import retry
from flow_orchestrator.observers import NodeEvent, Observer

# -- the nodes' actions (module-level: they are shipped to the workers) -----------------------------


def count_inside(seed: int, samples: int) -> int:
    """How many of ``samples`` random points of the unit square fall in the quarter disc."""
    points = np.random.default_rng(seed).random((samples, 2))
    return int(np.count_nonzero(np.einsum("ij,ij->i", points, points) <= 1.0))


def sample(ctx: Any) -> dict[str, Any]:
    """``sample[c]``: chunk ``c`` of the estimate, and where it ran."""
    chunk = int(ctx.node[len("sample["):-1])
    if chunk < ctx.data["flaky"] and ctx.attempt == 1:
        raise ConnectionError(f"chunk {chunk}: lost the connection to the data source (simulated)")
    return {"chunk": chunk, "inside": count_inside(ctx.data["seed"] + chunk, ctx.data["samples"]),
            "samples": ctx.data["samples"], "worker": f"{socket.gethostname()}:{os.getpid()}"}


def combine(ctx: Any) -> dict[str, Any]:
    """``combine``: the chunks' counts, summed, and the workers that made them."""
    parts = list(ctx.inputs.values())
    return {"inside": sum(p["inside"] for p in parts), "samples": sum(p["samples"] for p in parts),
            "workers": sorted({p["worker"] for p in parts})}


def report(ctx: Any) -> dict[str, Any]:
    """``report``: the estimate of pi."""
    total = ctx.input("combine")
    return {**total, "pi": 4.0 * total["inside"] / total["samples"]}


def build(chunks: int, retry_delay: float = 0.05) -> fo.Workflow:
    """The workflow: ``chunks`` sample nodes, then combine and report."""
    flow = fo.WorkflowBuilder("dask-pi")
    for c in range(chunks):
        flow.add(f"sample[{c}]", sample, middleware=retry(3, base_delay=retry_delay, retry_on=ConnectionError))
    flow.add("combine", combine, depends_on=[f"sample[{c}]" for c in range(chunks)])
    flow.add("report", report, depends_on="combine")
    return flow.build()


class EventCounter(Observer):
    """Counts node events, in this process (the hooks run on the engine's dispatch threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = {"start": 0, "success": 0, "retry": 0, "failure": 0}
        self.retried: list[str] = []

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def on_node_start(self, event: NodeEvent) -> None:
        """An attempt was sent to the cluster."""
        self._count("start")

    def on_node_success(self, event: NodeEvent) -> None:
        """A node completed."""
        self._count("success")

    def on_node_failure(self, event: NodeEvent) -> None:
        """A node failed for good."""
        self._count("failure")

    def on_node_retry(self, event: NodeEvent) -> None:
        """An attempt failed on a worker; another one is coming."""
        self._count("retry")
        with self._lock:
            self.retried.append(event.node)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="a running dask scheduler (default: start a LocalCluster)")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes of the LocalCluster (default: %(default)s)")
    parser.add_argument("--chunks", type=int, default=16, help="sample nodes (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=500_000, help="points per chunk (default: %(default)s)")
    parser.add_argument("--flaky", type=int, default=2, metavar="N",
                        help="the first attempt of N chunks fails (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the first chunk (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the workflow on a Dask cluster; 0 when it completed and its result checks out."""
    args = _parser().parse_args(argv)
    if args.chunks < 1 or args.samples < 1 or args.workers < 1:
        print("error: --chunks, --samples and --workers must be >= 1", file=sys.stderr)
        return 2
    try:
        import distributed

        from flow_orchestrator.dask_executor import DaskExecutor
    except ImportError as exc:
        print(f"error: this example needs dask.distributed ({exc}): pip install 'flow-orchestrator[dask]'",
              file=sys.stderr)
        return 1

    wf = build(args.chunks)
    data = {"seed": args.seed, "samples": args.samples, "flaky": args.flaky}
    counter = EventCounter()
    start = time.perf_counter()
    cluster = None
    try:
        if args.scheduler:
            client = distributed.Client(args.scheduler, timeout="10s")
        else:
            # dask logs every task that raised as "Compute Failed" at ERROR on its worker,
            # also the attempts that the retry middleware retries: quieter than that here,
            # since the engine reports the failures that matter in the run's result.
            cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                               dashboard_address=None, silence_logs=logging.CRITICAL)
            client = distributed.Client(cluster)
    except (OSError, TimeoutError) as exc:
        print(f"error: cannot reach the dask scheduler at {args.scheduler or 'a local cluster'}: {exc}",
              file=sys.stderr)
        return 1
    try:
        threads = sum(client.nthreads().values())
        print(f"dask cluster at {client.scheduler_info()['address']}: {len(client.nthreads())} worker(s), "
              f"{threads} thread(s) (ready in {time.perf_counter() - start:.1f} s)")
        # At most one attempt in flight per worker thread.
        with fo.Engine(max(threads, 1), executor=DaskExecutor(client), observers=[counter]) as engine:
            result = engine.run(wf, data=data, raise_on_failure=False)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

    print(result.summary())
    events = counter.counts
    print(f"observed: {events['start']} attempt(s) started, {events['success']} succeeded, "
          f"{events['retry']} retried ({', '.join(counter.retried) or 'none'}), {events['failure']} failed")
    if not result.ok:
        return 1
    figures = result.output("report")
    print(f"pi ~ {figures['pi']:.6f} from {figures['samples']:,} points "
          f"(error {abs(figures['pi'] - np.pi):.2e})")
    print(f"ran on {len(figures['workers'])} worker process(es): {', '.join(figures['workers'])}")
    expected = sum(count_inside(args.seed + c, args.samples) for c in range(args.chunks))
    if figures["inside"] != expected:
        print(f"error: {figures['inside']} points inside, a direct computation finds {expected}")
        return 1
    print(f"verified: {expected:,} points inside the quarter disc, as a direct computation finds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
