"""Wall-clock bounds: the timing promises the test suite observes as events only.

The suite (``tests/``) checks that a cancel reaches a running action and that Ctrl-C ends
a run, never how fast, so that a loaded CI machine cannot fail it.  How fast is checked
here, on a quiet machine:

* fingerprinting a one-million-node workflow (names, edges) takes under 1 s;
* a cancel through a token or a run handle ends a run whose action polls
  ``ctx.cancelled`` within 2 s;
* SIGINT to a process running a ~10 s workflow ends it within 5 s.

``PYTHONPATH=. python -m pytest bench/bench_bounds.py -p no:cacheprovider`` (plain tests,
each failing with the time it took), or ``PYTHONPATH=. python bench/bench_bounds.py``,
which prints each time against its bound.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable

import numpy as np

from flow_orchestrator import CancellationToken, Engine, WorkflowBuilder
from flow_orchestrator.errors import RunCancelledError
from flow_orchestrator.state import fingerprint
from flow_orchestrator.workflow import Workflow

__all__ = ["BOUNDS", "main"]

FINGERPRINT_NODES = 1_000_000


def fingerprint_seconds(nodes: int = FINGERPRINT_NODES) -> float:
    """Seconds to fingerprint a chain of ``nodes`` named nodes (the workflow is built first)."""
    wf = Workflow.from_arrays("big", [f"n{i}" for i in range(nodes)], np.arange(nodes - 1),
                              np.arange(1, nodes), lambda: None)
    start = time.perf_counter()
    digest = fingerprint(wf)
    seconds = time.perf_counter() - start
    assert len(digest) == 64
    return seconds


def _cancel_seconds(cancel: Callable[[Engine, Workflow, threading.Event], Callable[[], None]]) -> float:
    started = threading.Event()

    def runner(ctx):  # type: ignore[no-untyped-def]
        started.set()
        while not ctx.cancelled:
            ctx.wait(0.005)
        ctx.raise_if_cancelled()

    wf = WorkflowBuilder("cancellable").add("runner", runner).add("after", lambda: None, depends_on="runner").build()
    with Engine(2) as engine:
        wait_for_end = cancel(engine, wf, started)
        start = time.perf_counter()
        wait_for_end()
        return time.perf_counter() - start


def token_cancel_seconds() -> float:
    """Seconds from ``token.cancel()`` (the action running) to the run's end."""
    def cancel(engine: Engine, wf: Workflow, started: threading.Event) -> Callable[[], None]:
        token = CancellationToken()
        handle = engine.submit(wf, cancel=token)
        assert started.wait(30)

        def end() -> None:
            token.cancel("bench")
            assert isinstance(handle.exception(timeout=30), RunCancelledError)
        return end
    return _cancel_seconds(cancel)


def handle_cancel_seconds() -> float:
    """Seconds from ``handle.cancel()`` (the action running) to the run's end."""
    def cancel(engine: Engine, wf: Workflow, started: threading.Event) -> Callable[[], None]:
        handle = engine.submit(wf)
        assert started.wait(30)

        def end() -> None:
            handle.cancel("bench")
            assert isinstance(handle.exception(timeout=30), RunCancelledError)
        return end
    return _cancel_seconds(cancel)


_LONG_RUN = textwrap.dedent("""
    import time
    import flow_orchestrator as fo

    def step():
        time.sleep(0.05)

    flow = fo.WorkflowBuilder("long")
    for i in range(400):  # ~10 s on 2 threads
        flow.add(f"s{i}", step, depends_on=[f"s{i - 2}"] if i >= 2 else [])
    wf = flow.build()
    with fo.Engine(2) as engine:
        print("starting", flush=True)
        try:
            engine.run(wf)
        except KeyboardInterrupt:
            raise SystemExit(0)
    raise SystemExit(3)
""")


def sigint_seconds() -> float:
    """Seconds from SIGINT to the exit of a process running a ~10 s workflow."""
    # SIGINT back at its default in the child: a background job inherits it ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        child = subprocess.Popen([sys.executable, "-c", _LONG_RUN], stdout=subprocess.PIPE, text=True,
                                 start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "starting"
        time.sleep(0.3)
        start = time.perf_counter()
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=60) == 0, "the run was not interrupted"
        return time.perf_counter() - start
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


#: name -> (measure, bound in seconds)
BOUNDS: dict[str, tuple[Callable[[], float], float]] = {
    f"fingerprint of {FINGERPRINT_NODES:,} nodes": (fingerprint_seconds, 1.0),
    "token cancel to the run's end": (token_cancel_seconds, 2.0),
    "handle cancel to the run's end": (handle_cancel_seconds, 2.0),
    "SIGINT to the exit of a ~10 s run": (sigint_seconds, 5.0),
}


def _check(name: str) -> None:
    measure, bound = BOUNDS[name]
    seconds = measure()
    assert seconds < bound, f"{name}: {seconds:.3f} s (bound {bound:g} s)"


def test_fingerprint_of_a_million_nodes_is_fast() -> None:
    _check(f"fingerprint of {FINGERPRINT_NODES:,} nodes")


def test_a_token_cancel_ends_the_run_promptly() -> None:
    _check("token cancel to the run's end")


def test_a_handle_cancel_ends_the_run_promptly() -> None:
    _check("handle cancel to the run's end")


def test_sigint_ends_a_long_run_promptly() -> None:
    _check("SIGINT to the exit of a ~10 s run")


def main() -> int:
    """Print each measure against its bound; exit 1 if any is over."""
    over = 0
    for name, (measure, bound) in BOUNDS.items():
        seconds = measure()
        over += seconds >= bound
        print(f"{name:40s} {seconds:8.3f} s  (bound {bound:g} s){'  OVER' if seconds >= bound else ''}")
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
