"""Compiling a workflow: a :class:`~flow_orchestrator.workflow.Workflow` becomes the
per-node arrays of a :class:`~flow_orchestrator._ext.CompiledWorkflow`.

Layer L5 (the run), beside the engine, which calls it once per workflow and caches the
result (:meth:`~flow_orchestrator.engine.Engine.compile`).  What it decides, so that
the core never decides it per call:

* each node's flags (``1``: call with the context, ``2``: has a timeout, ``4``:
  continue on error), from the option table (one row per distinct
  :class:`~flow_orchestrator.workflow.NodeOptions`, not one per node);
* each node's final callable: the action inside the engine's middleware, then the
  workflow's, then its own (:func:`~flow_orchestrator.context.with_middleware`);
* per option row, the attempt limit, the timeout and the retry delay callback;
* the raw ``(action, takes_context, middleware)`` triples that other executors ship
  (:mod:`flow_orchestrator.external`).

Whether an action takes the context is inspected once per distinct action object.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._ext import CompiledWorkflow
from .context import takes_context, with_middleware
from .errors import DefinitionError
from .workflow import NodeOptions, Workflow

__all__ = ["compile_workflow"]


class _Compiler:
    """Turns a Workflow into the arrays of a CompiledWorkflow (see compile_workflow)."""

    def __init__(self, workflow: Workflow, outer: tuple[Callable[..., Any], ...] = ()) -> None:
        self.workflow = workflow
        # Engine middleware, then the workflow's: applied outside each node's own.
        self.outer = (*outer, *workflow.middleware)
        self.table: tuple[NodeOptions, ...] = workflow.option_table
        self._takes: dict[int, bool] = {}

    def takes(self, action: Callable[..., Any]) -> bool:
        key = id(action)
        found = self._takes.get(key)
        if found is None:
            found = self._takes[key] = takes_context(action)
        return found

    def compile(self) -> CompiledWorkflow:
        wf = self.workflow
        option_flags = np.array([(2 if o.timeout else 0) | (4 if o.continue_on_error else 0)
                                 for o in self.table], dtype=np.uint8)
        flags = option_flags[wf.option_index]
        actions: list[Callable[..., Any]] = []
        raw: list[tuple[Callable[..., Any], bool, tuple[Callable[..., Any], ...]]] = []
        for node, action in enumerate(wf.actions):
            try:
                accepts = self.takes(action)
            except DefinitionError as exc:
                raise DefinitionError(f"node {wf.interner.name(node)!r}: {exc}") from None
            middleware = (*self.outer, *self.table[int(wf.option_index[node])].middleware)
            raw.append((action, accepts, middleware))
            if middleware:
                actions.append(with_middleware(action, accepts, middleware))
                flags[node] |= 1
            else:
                actions.append(action)
                flags[node] |= 1 if accepts else 0
        max_attempts = np.array([1 + o.retries for o in self.table], dtype=np.int32)
        timeouts = np.array([o.timeout or 0.0 for o in self.table], dtype=np.float64)
        table = self.table
        compiled = CompiledWorkflow(wf, wf.graph, tuple(actions), flags, wf.option_index,
                                    max_attempts, timeouts,
                                    lambda slot, retry: table[slot].retry_delay_for(retry))
        compiled.external_actions = raw
        return compiled


def compile_workflow(workflow: Workflow, middleware: Sequence[Callable[..., Any]] = ()) -> CompiledWorkflow:
    """Prepare a workflow for the scheduler: per-node flags, limits and final actions
    (wrapped in ``middleware``, then the workflow's, then each node's own)."""
    return _Compiler(workflow, tuple(middleware)).compile()
