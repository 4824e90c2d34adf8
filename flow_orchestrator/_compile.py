"""Compiling a workflow: a :class:`~flow_orchestrator.workflow.Workflow` becomes the
per-node arrays of a :class:`~flow_orchestrator._ext.CompiledWorkflow`.

Layer L5 (the run), beside the engine, which calls it once per workflow and caches the
result (:meth:`~flow_orchestrator.engine.Engine.compile`).  What it decides, so that
the core never decides it per call:

* each node's flags (``1``: call with the context (the action adapted to its
  :class:`~flow_orchestrator.context.CallPlan` when it takes inputs by name), ``2``: has a timeout, ``4``:
  continue on error), from the option table (one row per distinct
  :class:`~flow_orchestrator.workflow.NodeOptions`, not one per node);
* each node's final callable: the action inside the engine's middleware, then the
  workflow's, then its own (:func:`~flow_orchestrator.context.with_middleware`);
* per option row, the attempt limit, the timeout and the retry delay callback;
* the raw ``(action, call plan, middleware)`` triples that other executors ship
  (:mod:`flow_orchestrator.external`).

How an action is called was decided when the workflow was built (``Workflow.call_plans``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._ext import CompiledWorkflow
from .context import CallPlan, adapt, with_middleware
from .workflow import NodeOptions, Workflow

__all__ = ["compile_workflow"]


class _Compiler:
    """Turns a Workflow into the arrays of a CompiledWorkflow (see compile_workflow)."""

    def __init__(self, workflow: Workflow, outer: tuple[Callable[..., Any], ...] = ()) -> None:
        self.workflow = workflow
        # Engine middleware, then the workflow's: applied outside each node's own.
        self.outer = (*outer, *workflow.middleware)
        self.table: tuple[NodeOptions, ...] = workflow.option_table

    def compile(self) -> CompiledWorkflow:
        wf = self.workflow
        option_flags = np.array([(2 if o.timeout else 0) | (4 if o.continue_on_error else 0)
                                 for o in self.table], dtype=np.uint8)
        flags = option_flags[wf.option_index]
        middleware_of = [(*self.outer, *o.middleware) for o in self.table]
        actions: list[Callable[..., Any]] = []
        raw: list[tuple[Callable[..., Any], CallPlan, tuple[Callable[..., Any], ...]]] = []
        # One final callable per distinct (action, call plan, option row): nodes that share
        # them share it, so compiling costs per distinct combination, not per node.
        made: dict[tuple[int, CallPlan, int], tuple[Callable[..., Any], int]] = {}
        for node, (action, plan, slot) in enumerate(zip(wf.actions, wf.call_plans, wf.option_index.tolist())):
            middleware = middleware_of[slot]
            raw.append((action, plan, middleware))
            key = (id(action), plan, slot)
            found = made.get(key)
            if found is None:
                if middleware:
                    found = (with_middleware(action, plan, middleware), 1)
                elif plan.nothing:
                    found = (action, 0)
                else:
                    found = (adapt(action, plan), 1)
                made[key] = found
            actions.append(found[0])
            flags[node] |= found[1]
        _mark_kinds(wf, flags)
        max_attempts = np.array([1 + o.retries for o in self.table], dtype=np.int32)
        timeouts = np.array([o.timeout or 0.0 for o in self.table], dtype=np.float64)
        table = self.table
        compiled = CompiledWorkflow(wf, wf.graph, tuple(actions), flags, wf.option_index,
                                    max_attempts, timeouts,
                                    lambda slot, retry: table[slot].retry_delay_for(retry),
                                    triggers=np.array([int(o.trigger) for o in table], dtype=np.uint8)[wf.option_index])
        compiled.external_actions = raw
        return compiled


def _mark_kinds(wf: Workflow, flags: np.ndarray) -> None:
    """Flag the branch (``8``) and map (``16``) nodes (few: a dict of them)."""
    for node, kind in wf.kinds.items():
        flags[node] |= 8 if kind.kind == "branch" else 16


def compile_workflow(workflow: Workflow, middleware: Sequence[Callable[..., Any]] = ()) -> CompiledWorkflow:
    """Prepare a workflow for the scheduler: per-node flags, limits and final actions
    (wrapped in ``middleware``, then the workflow's, then each node's own)."""
    return _Compiler(workflow, tuple(middleware)).compile()
