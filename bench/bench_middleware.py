"""What each built-in middleware costs per node when it has nothing to do.

The workflow: ``nodes`` independent no-op nodes run on ``Engine(2)``, once bare and once
per middleware (attached to every node, as workflow middleware), with the middleware
idle (then issue 12's stack: retry and a circuit breaker, an observer overriding every
node hook, and both, whose sum must stay within 2 us a node): retry without failure, a closed breaker, a limiter with plenty of tokens,
passing validation, an allowed permission, a logger filtering the events out, a timeout
not reached, and a metrics sink that does nothing.  The no-op action takes the context
in both, so the difference is the middleware alone (the issue's target: at most 1 us a
node each).

* ``PYTHONPATH=. python -m pytest bench/bench_middleware.py --benchmark-only -p no:cacheprovider``:
  pytest-benchmark statistics, one group.
* ``from bench.bench_middleware import compare; compare()``: rows
  ``{"middleware", "us_per_node_added", "seconds", "baseline_seconds", "nodes"}``;
  ``python bench/bench_middleware.py`` prints them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import structlog

from bench.execution import EveryNodeHookObserver
from flow_orchestrator import Engine, Workflow
from flow_orchestrator.middleware import (
    circuit_breaker,
    logging_middleware,
    metrics_middleware,
    permission,
    rate_limit,
    retry,
    timeout,
    validate,
)


def noop(ctx: Any) -> None:
    """The node's action: takes the context, like every action behind a middleware."""


def _quiet_logger() -> Any:
    # A concrete bound logger whose level filters the INFO events out.
    wrapper = structlog.make_filtering_bound_logger(logging.WARNING)
    return structlog.wrap_logger(structlog.ReturnLogger(), wrapper_class=wrapper).bind()


#: name -> a factory of the middleware with nothing to do (fresh per call).
IDLE: dict[str, Callable[[], Any]] = {
    "retry (no failure)": lambda: retry(3),
    "circuit_breaker (closed)": lambda: circuit_breaker("bench-breaker"),
    "rate_limit (tokens left)": lambda: rate_limit("bench-limiter", rate=1e9, burst=10**9),
    "validate (passing)": lambda: validate(inputs=int, output=type(None)),
    "permission (allowed)": lambda: permission(lambda ctx: True),
    "logging (filtered out)": lambda: logging_middleware(_quiet_logger()),
    "timeout (not reached)": lambda: timeout(3600.0),
    "metrics (no-op sink)": lambda: metrics_middleware(lambda node, attempt, seconds, error: None),
}


def independent(nodes: int, middleware: tuple[Any, ...] = ()) -> Workflow:
    """``nodes`` no-op nodes with no edges, every one wrapped in ``middleware``."""
    empty = np.empty(0, dtype=np.int32)
    return Workflow.from_arrays("middleware-bench", [f"n{i}" for i in range(nodes)], empty, empty,
                                noop, middleware=middleware)


def _run_once(engine: Engine, workflow: Workflow) -> float:
    start = time.perf_counter()
    result = engine.run(workflow)
    elapsed = time.perf_counter() - start
    if not result.ok:
        raise AssertionError(result.summary())
    return elapsed


def compare(nodes: int = 10_000, repeat: int = 3) -> list[dict[str, Any]]:
    """Best-of-``repeat`` time of the bare workflow and of each idle middleware.

    Rounds are interleaved (bare, then every middleware, ``repeat`` times) so that a
    slow patch of the machine hits them all alike; each workflow runs once untimed
    first (compiling it).  ``us_per_node_added`` is (best time - best bare time) per node.
    """
    workflows = {"(none)": independent(nodes)}
    workflows.update({name: independent(nodes, (make(),)) for name, make in IDLE.items()})
    stack = independent(nodes, (retry(3), circuit_breaker("bench-stack-breaker")))
    best = dict.fromkeys([*workflows, *STACK], float("inf"))
    with Engine(2) as engine, Engine(2, observers=[EveryNodeHookObserver()]) as observed:
        runs: dict[str, tuple[Engine, Workflow]] = {name: (engine, wf) for name, wf in workflows.items()}
        runs.update({STACK[0]: (engine, stack), STACK[1]: (observed, workflows["(none)"]),
                     STACK[2]: (observed, stack)})
        for eng, workflow in runs.values():
            _run_once(eng, workflow)
        for _ in range(repeat):
            for name, (eng, workflow) in runs.items():
                best[name] = min(best[name], _run_once(eng, workflow))
    base = best.pop("(none)")
    return [{"middleware": name, "us_per_node_added": (seconds - base) / nodes * 1e6,
             "seconds": seconds, "baseline_seconds": base, "nodes": nodes}
            for name, seconds in best.items()]


#: Issue 12's stack (target: at most 2 us a node over the plain run, all three together).
STACK = ("retry + circuit_breaker (idle)", "observer of every node hook",
         "retry + circuit_breaker + observer of every hook")
STACK_TARGET_US = 2.0


def stack_verdict(rows: list[dict[str, Any]]) -> str:
    """The target line for the whole stack."""
    added = next(r for r in rows if r["middleware"] == STACK[2])["us_per_node_added"]
    return (f"target retry + circuit breaker + full observer <= {STACK_TARGET_US:g} us a node over plain: "
            f"{'PASS' if added <= STACK_TARGET_US else 'FAIL'} ({added:.2f} us)")


# -- pytest-benchmark ---------------------------------------------------------------------------

NODES = 10_000


@pytest.fixture(scope="module")
def engine():
    with Engine(2) as eng:
        yield eng


@pytest.mark.parametrize("name", ["(none)", *IDLE])
def test_idle_middleware(benchmark, engine, name):
    benchmark.group = f"middleware with nothing to do: {NODES:,} independent no-op nodes, Engine(2)"
    workflow = independent(NODES, () if name == "(none)" else (IDLE[name](),))
    _run_once(engine, workflow)
    benchmark.pedantic(_run_once, args=(engine, workflow), rounds=5, iterations=1)


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """What ``bench/run.py`` prints under this suite's table."""
    return [stack_verdict(rows)]


if __name__ == "__main__":
    found = compare(repeat=5)
    for row in found:
        print(f"{row['middleware']:48} {row['us_per_node_added']:+7.3f} us/node "
              f"({row['seconds'] * 1e3:7.2f} ms vs {row['baseline_seconds'] * 1e3:7.2f} ms)")
    print(stack_verdict(found))
