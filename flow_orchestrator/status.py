"""Node and run statuses, and the one table of allowed node status transitions.

The compiled scheduler copies :data:`TRANSITIONS` into a C table when it is imported
and checks every status change against it in one place, so this table is the single
authority on how a node's status may evolve::

    PENDING ──start──▶ RUNNING ──▶ COMPLETED | FAILED | CANCELLED | TIMED_OUT
       │                  │
       │                  └──retry scheduled──▶ PENDING
       ├──a dependency failed, timed out or was cancelled──▶ SKIPPED
       └──the run was aborted (fail-fast, cancel, Ctrl-C)──▶ CANCELLED

COMPLETED, FAILED, SKIPPED, CANCELLED and TIMED_OUT are terminal.

Where it sits: layer L0 (foundations): the one transition table; ``cext`` holds its C
copy.
"""

from __future__ import annotations

import enum

__all__ = ["NodeStatus", "RunStatus", "TRANSITIONS", "TERMINAL", "can_transition"]


class NodeStatus(enum.IntEnum):
    """The status of one node in one run (stored as a ``uint8`` in the core)."""

    PENDING = 0
    RUNNING = 1
    COMPLETED = 2
    FAILED = 3
    SKIPPED = 4
    CANCELLED = 5
    TIMED_OUT = 6

    def __str__(self) -> str:
        return self.name.lower()


class RunStatus(str, enum.Enum):
    """The overall outcome of a run."""

    COMPLETED = "completed"  #: every node completed
    FAILED = "failed"  #: at least one node failed or timed out
    CANCELLED = "cancelled"  #: the run was cancelled (by a token, a handle or Ctrl-C)

    def __str__(self) -> str:
        return self.value


TERMINAL = frozenset({NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED,
                      NodeStatus.CANCELLED, NodeStatus.TIMED_OUT})

TRANSITIONS: dict[NodeStatus, frozenset[NodeStatus]] = {
    NodeStatus.PENDING: frozenset({NodeStatus.RUNNING, NodeStatus.SKIPPED, NodeStatus.CANCELLED}),
    NodeStatus.RUNNING: frozenset({NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.CANCELLED,
                                   NodeStatus.TIMED_OUT, NodeStatus.PENDING}),
    NodeStatus.COMPLETED: frozenset(),
    NodeStatus.FAILED: frozenset(),
    NodeStatus.SKIPPED: frozenset(),
    NodeStatus.CANCELLED: frozenset(),
    NodeStatus.TIMED_OUT: frozenset(),
}


def can_transition(old: NodeStatus | int, new: NodeStatus | int) -> bool:
    """Whether a node may go from status ``old`` to status ``new``."""
    return NodeStatus(new) in TRANSITIONS[NodeStatus(old)]
