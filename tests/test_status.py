"""The node status table: one authority, consistent, and the one the core enforces."""

from __future__ import annotations

import pytest

from flow_orchestrator import _ext
from flow_orchestrator.data import WorkflowData
from flow_orchestrator.engine import Engine
from flow_orchestrator.errors import InvalidTransitionError
from flow_orchestrator.status import (
    TERMINAL,
    TRANSITIONS,
    NodeStatus,
    RunStatus,
    can_transition,
)
from flow_orchestrator.workflow import WorkflowBuilder


def test_table_covers_every_status():
    assert set(TRANSITIONS) == set(NodeStatus)


def test_terminal_statuses_have_no_way_out():
    for status in TERMINAL:
        assert TRANSITIONS[status] == frozenset()
    assert {s for s in NodeStatus if TRANSITIONS[s]} == {NodeStatus.PENDING, NodeStatus.RUNNING}


@pytest.mark.parametrize("old, new, allowed", [
    (NodeStatus.PENDING, NodeStatus.RUNNING, True),
    (NodeStatus.PENDING, NodeStatus.SKIPPED, True),
    (NodeStatus.PENDING, NodeStatus.COMPLETED, False),
    (NodeStatus.RUNNING, NodeStatus.PENDING, True),
    (NodeStatus.RUNNING, NodeStatus.TIMED_OUT, True),
    (NodeStatus.RUNNING, NodeStatus.SKIPPED, False),
    (NodeStatus.COMPLETED, NodeStatus.RUNNING, False),
    (NodeStatus.TIMED_OUT, NodeStatus.PENDING, False),
])
def test_can_transition(old, new, allowed):
    assert can_transition(old, new) is allowed


def test_core_status_codes_match_the_enum():
    assert _ext.STATUS_NAMES == tuple(s.name.lower() for s in NodeStatus)


def test_str_forms():
    assert str(NodeStatus.TIMED_OUT) == "timed_out"
    assert str(RunStatus.FAILED) == "failed"


def test_the_core_holds_the_same_transition_table():
    assert _ext.transition_table() == tuple(tuple(int(new in TRANSITIONS[old]) for new in NodeStatus)
                                            for old in NodeStatus)


# -- the compiled core enforces the table: every pair of statuses --------------------------------------
#
# Node ``b`` (depending on ``a`` and ``c``, no retries) is put in each status through the
# core's own entry points (``begin_attempt``/``finish_attempt``, ``on_deadline``, a failed
# dependency), then each of the seven statuses is asked for through the entry point that
# leads there.  ``finish_attempt`` and ``on_deadline`` hand the core the node's current
# word, so the core's one check (``RunCore._transition`` against ``_ALLOWED``) is what
# stands between a forbidden pair and the compare-and-swap; ``running`` and ``skipped``
# are only ever entered from a status the core tests first.  A forbidden pair must be
# refused (``InvalidTransitionError``, or nothing happens) with the word unchanged; an
# allowed one must happen, which shows the probe reaches the check.

_A, _C, _B = 0, 1, 2


def _transition_workflow():
    return (WorkflowBuilder("transitions").add("a", lambda: 1).add("c", lambda: 1)
            .add("b", lambda: 1, depends_on=["a", "c"]).build())


@pytest.fixture(scope="module")
def compiled():
    workflow = _transition_workflow()  # kept alive: a compiled workflow holds it weakly
    with Engine(1, executor="serial") as engine:
        yield workflow, engine.compile(workflow)


def _word(core, node):
    return (int(core.attempts()[node]) << 8) | int(core.statuses()[node])


def _ask(core, target: NodeStatus, failing_dependency: int = _C) -> None:
    """Ask the core to move ``b`` from its current word to ``target`` (to ``skipped``:
    by failing one of its dependencies)."""
    word = _word(core, _B)
    if target is NodeStatus.RUNNING:
        core.begin_attempt(_B)
    elif target is NodeStatus.SKIPPED:
        core.finish_attempt(failing_dependency, core.begin_attempt(failing_dependency), False,
                            ValueError("a dependency fails"))
    elif target is NodeStatus.COMPLETED:
        core.finish_attempt(_B, word, True, "out")
    elif target is NodeStatus.FAILED:
        core.finish_attempt(_B, word, False, ValueError("b fails"))
    elif target is NodeStatus.CANCELLED:
        core.finish_attempt(_B, word, False, _ext.NodeCancelledError("b gives up"))
    elif target is NodeStatus.PENDING:
        core.finish_attempt(_B, word, False, _ext.RetryRequested())
    else:
        core.on_deadline(_B, word, core.generation)


def _core_with_b(compiled, status: NodeStatus):
    """A fresh run (continuing on error) whose node ``b`` is in ``status``, attempt 1:
    started, then moved on by the allowed transitions (via pending for skipped)."""
    core = _ext.begin_run(compiled[1], WorkflowData({}), "transitions", None, None, 0, True)
    _ask(core, NodeStatus.RUNNING)
    if status is NodeStatus.SKIPPED:
        _ask(core, NodeStatus.PENDING)
        _ask(core, NodeStatus.SKIPPED, failing_dependency=_A)
    elif status is not NodeStatus.RUNNING:
        _ask(core, status)
    assert (NodeStatus(int(core.statuses()[_B])), int(core.attempts()[_B])) == (status, 1)
    return core


@pytest.mark.parametrize("new", list(NodeStatus), ids=str)
@pytest.mark.parametrize("old", list(NodeStatus), ids=str)
def test_the_compiled_core_allows_exactly_the_tables_transitions(compiled, old, new):
    core = _core_with_b(compiled, old)
    before = _word(core, _B)
    try:
        _ask(core, new)
        refused_by_the_table = False
    except InvalidTransitionError:
        refused_by_the_table = True
    after = NodeStatus(int(core.statuses()[_B]))
    if can_transition(old, new):
        assert not refused_by_the_table and after is new, f"{old} -> {new} is allowed but did not happen"
    else:
        assert _word(core, _B) == before, f"the core made the forbidden transition {old} -> {new} ({after})"
        # Every way in but these two passes the table: it must be the table that refused.
        assert refused_by_the_table or new in (NodeStatus.RUNNING, NodeStatus.SKIPPED), f"{old} -> {new}"
    core.detach()
