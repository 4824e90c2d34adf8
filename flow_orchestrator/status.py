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

When a node may leave PENDING for RUNNING or SKIPPED is the second half of the table:
the **join rules** (:data:`JOIN_RULES`), by the node's :class:`Trigger` and what it has
seen of its dependencies so far (a set of :data:`SEEN_COMPLETED`,
:data:`SEEN_BRANCH_SKIPPED` and :data:`SEEN_FAILED` bits, and whether every dependency
has ended):

=================  =====================================  ================================
trigger            runs                                   is SKIPPED
=================  =====================================  ================================
``all_success``    every dependency completed             at once when one failed
                                                          (:attr:`SkipReason.DEPENDENCY_FAILED`);
                                                          once all ended, when one was not
                                                          taken by a branch
                                                          (:attr:`SkipReason.BRANCH_NOT_TAKEN`)
``none_failed``    every dependency completed or was      at once when one failed; when
                   skipped by a branch, one completed     all were skipped by a branch
``all_done``       every dependency ended, whatever the   never
                   outcome (also after a failure under
                   fail-fast: clean-up, reporting)
=================  =====================================  ================================

"Failed" means failed, timed out, cancelled, or skipped because a dependency failed.
Only a failure decides early: a skip for a branch waits until every dependency ended,
so that a failure among them always wins and the outcome never depends on timing.
A skip propagates as what caused it: a node skipped because a branch was not taken
is, to its own dependents, a dependency skipped by a branch.

Where it sits: layer L0 (foundations): the one transition table; ``cext`` holds its C
copy.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

__all__ = ["NodeStatus", "RunStatus", "TRANSITIONS", "TERMINAL", "can_transition", "count_text", "Trigger", "SkipReason",
           "Join", "JOIN_RULES", "SEEN_COMPLETED", "SEEN_BRANCH_SKIPPED", "SEEN_FAILED", "join_rule"]


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


class Trigger(enum.IntEnum):
    """When a node runs, given how its dependencies ended (the node option ``trigger=``)."""

    ALL_SUCCESS = 0  #: every dependency completed (the default)
    NONE_FAILED = 1  #: none failed, at least one completed (the join after a branch)
    ALL_DONE = 2  #: every dependency ended, whatever the outcome (clean-up, reports)

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: Trigger | str) -> Trigger:
        """``value`` (a :class:`Trigger` or its name, ``"none_failed"``) as a Trigger;
        ``ValueError`` otherwise."""
        if isinstance(value, Trigger):
            return value
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        raise ValueError(f"trigger must be one of {', '.join(map(repr, _TRIGGER_NAMES))}, got {value!r}")


_TRIGGER_NAMES = ("all_success", "none_failed", "all_done")


class SkipReason(enum.IntEnum):
    """Why a node was SKIPPED (``NONE`` for a node that was not)."""

    NONE = 0
    DEPENDENCY_FAILED = 1  #: a dependency failed, timed out or was cancelled (or was skipped for that)
    BRANCH_NOT_TAKEN = 2  #: a branch did not take it, or skipped everything it depends on

    def __str__(self) -> str:
        return _SKIP_TEXT[self]


_SKIP_TEXT = {SkipReason.NONE: "", SkipReason.DEPENDENCY_FAILED: "dependency failed",
              SkipReason.BRANCH_NOT_TAKEN: "branch not taken"}

SEEN_COMPLETED = 1
"""What a node has seen of its dependencies (bits): one completed (through a taken edge)."""
SEEN_BRANCH_SKIPPED = 2
"""... one was skipped by a branch (or an edge out of a branch was not taken)."""
SEEN_FAILED = 4
"""... one failed, timed out, was cancelled, or was skipped because a dependency failed."""


class Join(enum.IntEnum):
    """What happens to a PENDING node when it learns how one more dependency ended."""

    WAIT = 0  #: nothing yet
    RUN = 1  #: it is ready (PENDING -> RUNNING when a worker takes it)
    SKIP_FAILED = 2  #: PENDING -> SKIPPED, reason DEPENDENCY_FAILED
    SKIP_BRANCH = 3  #: PENDING -> SKIPPED, reason BRANCH_NOT_TAKEN


def _join(trigger: Trigger, seen: int, all_ended: bool) -> Join:
    failed = bool(seen & SEEN_FAILED)
    if trigger is Trigger.ALL_DONE:
        return Join.RUN if all_ended else Join.WAIT
    if failed:
        return Join.SKIP_FAILED
    if not all_ended:  # a failure skips at once; anything else waits for every dependency
        return Join.WAIT
    if trigger is Trigger.ALL_SUCCESS:
        return Join.SKIP_BRANCH if seen & SEEN_BRANCH_SKIPPED else Join.RUN
    return Join.RUN if seen & SEEN_COMPLETED else Join.SKIP_BRANCH  # NONE_FAILED


JOIN_RULES: dict[Trigger, tuple[tuple[Join, Join], ...]] = {
    trigger: tuple((_join(trigger, seen, False), _join(trigger, seen, True)) for seen in range(8))
    for trigger in Trigger
}
"""``JOIN_RULES[trigger][seen][all_ended]``: the :class:`Join` decision for a PENDING
node with that trigger, that has seen the ``seen`` bits from its dependencies, once
every dependency ended or not.  The compiled core copies it into a C table, as it does
:data:`TRANSITIONS`, and decides with it alone."""


def join_rule(trigger: Trigger | str, seen: int, all_ended: bool) -> Join:
    """The :data:`JOIN_RULES` decision (see the module documentation)."""
    return JOIN_RULES[Trigger.parse(trigger)][seen][bool(all_ended)]


def count_text(statuses: Iterable[int]) -> str:
    """How many of ``statuses`` are in each status, as text: ``"9990 completed, 10 failed"``
    (the items of a map node in pictures and reports)."""
    counts: dict[NodeStatus, int] = {}
    for code in statuses:
        status = NodeStatus(code)
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{counts[s]} {s}" for s in NodeStatus if s in counts) or "no items"
