"""The node status table: one authority, consistent, and the one the core enforces."""

from __future__ import annotations

import pytest

from flow_orchestrator import _ext
from flow_orchestrator.status import TERMINAL, TRANSITIONS, NodeStatus, RunStatus, can_transition


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
