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
  workflow's, then its own (:func:`~flow_orchestrator.context.with_middleware`), made
  once per distinct (action, call plan, option row) and gathered per node in C;
* per option row, the attempt limit, the timeout and the retry delay callback;
* the raw ``(action, call plan, middleware)`` triples that other executors ship
  (:mod:`flow_orchestrator.external`), left to the compiled workflow to make on first
  use, so that a run on threads never makes them.

How an action is called was decided when the workflow was built (``Workflow.call_plans``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._ext import CompiledWorkflow, group_by, take
from .context import CallPlan, adapt, adapt_item, with_middleware
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
        actions, plans, slots = wf.actions, wf.call_plans, wf.option_index
        option_flags = np.array([(2 if o.timeout else 0) | (4 if o.continue_on_error else 0)
                                 for o in self.table], dtype=np.uint8)
        middleware_of = [(*self.outer, *o.middleware) for o in self.table]
        # Python decides once per distinct (call plan, option row), C applies it per node.
        # Most groups call every node's action as it is (no middleware, and the plan is
        # "nothing" or "the context alone"): the compiled actions are then the workflow's
        # own tuple.  The others get one final callable per distinct (action, plan, row).
        first, plan_group = group_by(plans, slots)
        calls_with_context = np.zeros(len(first), dtype=np.uint8)
        wraps = np.zeros(len(first), dtype=np.bool_)
        for g, node in enumerate(first.tolist()):
            plan, middleware = plans[node], middleware_of[int(slots[node])]
            calls_with_context[g] = 0 if plan.nothing and not middleware else 1
            wraps[g] = bool(middleware) or not (plan.nothing or plan.context_only)
        flags = option_flags[slots] | calls_with_context[plan_group]
        final: tuple[Callable[..., Any], ...] = actions
        if wraps.any():
            action_first, action_group = group_by(actions, plan_group, wraps[plan_group])
            made = [self._final(actions[node], plans[node], middleware_of[int(slots[node])])
                    for node in action_first.tolist()]
            final = take(made, action_group, actions)
        if wf.kinds:
            final = _branches_and_maps(wf, flags, final, middleware_of)
        max_attempts = np.array([1 + o.retries for o in self.table], dtype=np.int32)
        timeouts = np.array([o.timeout or 0.0 for o in self.table], dtype=np.float64)
        table = self.table
        compiled = CompiledWorkflow(wf, wf.graph, final, flags, slots, max_attempts, timeouts,
                                    lambda slot, retry: table[slot].retry_delay_for(retry),
                                    triggers=np.array([int(o.trigger) for o in table], dtype=np.uint8)[slots])
        # What other executors ship: the raw (action, call plan, middleware) of each node,
        # made on first use (a tuple per node with one action per node: threads never pay).
        compiled.defer_external_actions(actions, plans, middleware_of, slots)
        compiled.maps = {node: (wf.node_id(kind.over), wf.options(node).max_concurrency or 0)
                         for node, kind in wf.kinds.items() if kind.kind == "map" and kind.over is not None}
        return compiled

    @staticmethod
    def _final(action: Callable[..., Any], plan: CallPlan,
               middleware: tuple[Callable[..., Any], ...]) -> Callable[..., Any]:
        """The callable of the context alone that the core calls for such a node."""
        return with_middleware(action, plan, middleware) if middleware else adapt(action, plan)


def _branches_and_maps(wf: Workflow, flags: np.ndarray, final: tuple[Callable[..., Any], ...],
                       middleware_of: list[tuple[Callable[..., Any], ...]]) -> tuple[Callable[..., Any], ...]:
    """Flag the branch (``8``) and map (``16``) nodes (few: a dict of them), and give each
    map node the callable its items run (:func:`~flow_orchestrator.context.adapt_item`),
    flagged ``1`` when it takes the context."""
    made = list(final)
    for node, kind in wf.kinds.items():
        if kind.kind == "branch":
            flags[node] |= 8
            continue
        item, with_context = adapt_item(wf.actions[node], wf.call_plans[node],
                                        middleware_of[int(wf.option_index[node])])
        made[node] = item
        flags[node] = (flags[node] & ~np.uint8(1)) | 16 | (1 if with_context else 0)
    return tuple(made)


def compile_workflow(workflow: Workflow, middleware: Sequence[Callable[..., Any]] = ()) -> CompiledWorkflow:
    """Prepare a workflow for the scheduler: per-node flags, limits and final actions
    (wrapped in ``middleware``, then the workflow's, then each node's own)."""
    return _Compiler(workflow, tuple(middleware)).compile()
