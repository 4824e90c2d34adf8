"""Resuming a saved run: how a state compares with a workflow, and what it gives a run.

Layer L4 (services, durability).  Two steps, both before any node starts:

1. **Compare** (:func:`compare_workflow`, :func:`diff_workflow`).  A state is matched to
   the workflow *by node name*, never by id: an edited pipeline often gains nodes or
   lists them in another order, and ids are only definition order.  Removed or renamed
   nodes, changed dependencies and a different workflow name make the state
   incompatible (:class:`~flow_orchestrator.errors.IncompatibleStateError`, one line
   per difference); new nodes are accepted only with ``allow_new_nodes``.
2. **Plan** (:class:`ResumePlan`).  The state's completed nodes, mapped onto the
   workflow's ids, with their outputs deserialized and their attempt counts; ``rerun``
   names take themselves and every descendant back out of the completed set.  The
   engine hands the plan to the core (``RunCore.restore``) and, for a durable run, to
   :mod:`flow_orchestrator.checkpoint`, which decides whether the run can append to the
   stored journal or must write a new snapshot first.

Nothing here touches a store or runs a node: loading and locking are the checkpoint
module's, running is the engine's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DefinitionError, IncompatibleStateError
from .serialization import Serializer
from .state import NOT_SAVED, RunState, _difference, _sorted_unique, fingerprint
from .status import NodeStatus
from .workflow import Workflow

__all__ = ["ResumePlan", "WorkflowDiff", "compare_workflow", "diff_workflow"]

_COMPLETED = int(NodeStatus.COMPLETED)

@dataclass(frozen=True)
class WorkflowDiff:
    """How a workflow differs from the one a state was saved for (see :func:`compare_workflow`).

    Edges are ``(dependency, dependent)`` name pairs.  ``edges_added`` holds new
    dependencies of nodes that exist in the state (including on new nodes); the edges of
    new nodes' own dependencies are part of those nodes.  ``reordered`` is True when the
    same nodes have other ids (states are matched to workflows by name).
    """

    workflow: tuple[str, str] | None = None
    removed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    renamed: tuple[tuple[str, str], ...] = ()
    edges_removed: tuple[tuple[str, str], ...] = ()
    edges_added: tuple[tuple[str, str], ...] = ()
    reordered: bool = False

    def compatible(self, *, allow_new_nodes: bool = False) -> bool:
        """Whether a run saved for the old workflow can resume on the new one."""
        return not self.messages(allow_new_nodes=allow_new_nodes)

    def messages(self, *, allow_new_nodes: bool = False, limit: int = 10) -> list[str]:
        """One readable line per incompatibility (at most ``limit`` of each kind)."""
        out: list[str] = []
        if self.workflow is not None:
            out.append(f"the state is for workflow {self.workflow[0]!r}, not {self.workflow[1]!r}")
        _lines(out, self.renamed, limit, lambda p: f"node {p[0]!r} was renamed to {p[1]!r}", "renamed nodes")
        _lines(out, self.removed, limit, lambda s: f"node {s!r} was removed", "removed nodes")
        if not allow_new_nodes:
            _lines(out, self.added, limit, lambda s: f"node {s!r} was added", "added nodes")
        _lines(out, self.edges_removed, limit, lambda e: f"{e[1]!r} no longer depends on {e[0]!r}",
               "removed dependencies")
        _lines(out, self.edges_added, limit, lambda e: f"{e[1]!r} now depends on {e[0]!r}", "added dependencies")
        return out


def _lines(out: list[str], items: Sequence[Any], limit: int, fmt: Any, what: str) -> None:
    out.extend(fmt(item) for item in items[:limit])
    if len(items) > limit:
        out.append(f"... and {len(items) - limit} more {what}")


def _csr_pairs(indptr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sources = np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
    return sources, indices.astype(np.int64)


def _edge_names(keys: np.ndarray, size: int, names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    return tuple((names[s], names[t]) for s, t in zip((keys // size).tolist(), (keys % size).tolist()))


def compare_workflow(state: RunState, workflow: Workflow) -> WorkflowDiff:
    """A structured :class:`WorkflowDiff` of ``workflow`` against the one ``state`` was saved for."""
    renamed_wf = (state.workflow, workflow.name) if state.workflow != workflow.name else None
    new_names = workflow.names
    if state.fingerprint == fingerprint(workflow):
        return WorkflowDiff(workflow=renamed_wf)
    index = {name: i for i, name in enumerate(new_names)}
    to_new = np.fromiter((index.get(name, -1) for name in state.node_names), np.int64, state.num_nodes)
    seen = np.zeros(len(new_names), dtype=bool)
    seen[to_new[to_new >= 0]] = True
    removed = np.flatnonzero(to_new < 0)
    added = np.flatnonzero(~seen)
    is_added = ~seen
    renamed = removed[removed < is_added.size]
    renamed = renamed[is_added[renamed]]
    renamed_new = np.zeros(len(new_names), dtype=bool)
    renamed_new[renamed] = True
    size = max(len(new_names), 1)
    src, dst = _csr_pairs(state.succ_indptr, state.succ_indices)
    keep = (to_new[src] >= 0) & (to_new[dst] >= 0)
    old_keys = _sorted_unique(to_new[src[keep]] * size + to_new[dst[keep]])
    graph = workflow.graph
    src, dst = _csr_pairs(graph.succ_indptr, graph.succ_indices)
    new_keys = _sorted_unique((src * size + dst)[seen[dst] & ~renamed_new[src]])
    return WorkflowDiff(
        workflow=renamed_wf,
        removed=tuple(state.node_names[i] for i in _difference(removed, renamed).tolist()),
        added=tuple(new_names[i] for i in _difference(added, renamed).tolist()),
        renamed=tuple((state.node_names[i], new_names[i]) for i in renamed.tolist()),
        edges_removed=_edge_names(_difference(old_keys, new_keys), size, new_names),
        edges_added=_edge_names(_difference(new_keys, old_keys), size, new_names),
        reordered=bool(removed.size == 0 and not np.array_equal(to_new, np.arange(to_new.size))),
    )


def diff_workflow(state: RunState, workflow: Workflow, *, allow_new_nodes: bool = False) -> list[str]:
    """Why ``state`` cannot resume on ``workflow``: one line per difference, empty if it can.

    Nodes are matched by name: removed, renamed (a node whose id now has another name)
    and, unless ``allow_new_nodes``, added nodes; dependencies removed or added between
    nodes that exist in the state; and a different workflow name.  Nodes that only
    changed ids are not an incompatibility.
    """
    return compare_workflow(state, workflow).messages(allow_new_nodes=allow_new_nodes)


def _rerun_unsaved(workflow: Workflow, state: RunState, ids: np.ndarray, completed: np.ndarray) -> None:
    """Take back out of ``completed`` each node whose output was not saved
    (``persist=False``) that a dependent which will run needs, and so on up: a node that
    runs again needs its dependencies' outputs too.  Others stay completed, without an
    output."""
    unsaved = [ids[old] for old, blob in state.outputs.items() if blob is NOT_SAVED]
    if not unsaved:
        return
    graph = workflow.graph
    position = np.empty(len(workflow), dtype=np.int64)
    position[graph.topological_order()] = np.arange(len(workflow))
    candidates = sorted((int(v) for v in unsaved if completed[v]), key=lambda v: -position[v])
    indptr, indices = graph.succ_indptr, graph.succ_indices
    for node in candidates:  # dependents first: a dependent taken back out is seen by its dependencies
        if not completed[indices[indptr[node]:indptr[node + 1]]].all():
            completed[node] = False


@dataclass(frozen=True, slots=True, eq=False)
class ResumePlan:
    """What a saved state contributes to a run, mapped onto the workflow's node ids.

    Attributes:
        completed: ``bool`` per workflow node: restored as completed, not run again.
        outputs: the restored outputs by workflow node id (``None`` elsewhere).
        attempts: ``int32`` attempts already made, per workflow node.
        data: the saved workflow data, deserialized.
        run_id: the saved run's id.
        state: the saved state itself.
        ids: the state's node ids mapped to the workflow's (``ids[state_id]``).
    """

    completed: np.ndarray
    outputs: list[Any]
    attempts: np.ndarray
    data: dict[str, Any]
    run_id: str
    state: RunState
    ids: np.ndarray

    @classmethod
    def build(cls, workflow: Workflow, state: RunState | None, rerun: Iterable[str] = (),
              allow_new_nodes: bool = False, serializer: Serializer | None = None) -> ResumePlan | None:
        """The plan for resuming ``state`` on ``workflow`` (``None`` without a state).

        Raises :class:`~flow_orchestrator.errors.IncompatibleStateError` naming every
        difference that forbids it, and :class:`~flow_orchestrator.errors.DefinitionError`
        for ``rerun`` without a state or a state that is not a :class:`RunState`.
        """
        again = list(rerun)
        if state is None:
            if again:
                raise DefinitionError("rerun= needs resume=, the state to re-run nodes of")
            return None
        if not isinstance(state, RunState):
            raise DefinitionError(f"resume= takes a RunState, got {type(state).__name__}")
        problems = diff_workflow(state, workflow, allow_new_nodes=allow_new_nodes)
        if problems:
            raise IncompatibleStateError(
                f"run {state.run_id} cannot resume on workflow {workflow.name!r}: " + "; ".join(problems))
        n = len(workflow)
        ids = workflow.interner.ids(state.node_names)  # matched by name: ids may differ
        completed = np.zeros(n, dtype=bool)
        attempts = np.zeros(n, dtype=np.int32)
        done = np.flatnonzero(state.statuses == _COMPLETED)
        completed[ids[done]] = True
        attempts[ids] = state.attempts
        if again:
            completed[workflow.graph.descendants(workflow.interner.ids(again), include_self=True)] = False
        _rerun_unsaved(workflow, state, ids, completed)
        outputs: list[Any] = [None] * n
        for old, value in state.load_outputs(serializer).items():
            if completed[ids[old]]:
                outputs[ids[old]] = value
        return cls(completed, outputs, attempts, state.load_data(serializer), state.run_id, state, ids)

    def continues(self, saved: RunState) -> bool:
        """Whether this plan goes on from ``saved`` exactly as stored: the same nodes in
        the same order, and no node to re-run (so a durable run may append to its journal)."""
        return (self.state is saved and len(self.completed) == saved.num_nodes
                and bool(np.array_equal(self.ids, np.arange(saved.num_nodes)))
                and bool(np.array_equal(self.completed, saved.statuses == _COMPLETED)))
