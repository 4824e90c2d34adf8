"""Helpers shared by the engine tests (``tests/`` is on ``sys.path``, see pyproject)."""

from __future__ import annotations

import threading

from flow_orchestrator.engine import RunResult
from flow_orchestrator.status import TERMINAL, NodeStatus


def assert_terminal(result: RunResult) -> None:
    bad = [(name, NodeStatus(int(s))) for name, s in zip(result.workflow.names, result.statuses)
           if NodeStatus(int(s)) not in TERMINAL]
    assert not bad, f"nodes not in a terminal status: {bad}"


class StartLog:
    """Thread-safe record of which nodes started, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.order: list[str] = []

    def __call__(self, name: str) -> None:
        with self._lock:
            self.order.append(name)

    @property
    def started(self) -> set[str]:
        with self._lock:
            return set(self.order)


def ok():
    """An action that succeeds with 1 (module level: process pools can pickle it)."""
    return 1


def fail():
    """An action that always raises ValueError."""
    raise ValueError("fails")


def flaky(ctx):
    """An action whose first attempt fails; later ones return the attempt number."""
    if ctx.attempt == 1:
        raise ConnectionError("first attempt")
    return ctx.attempt
