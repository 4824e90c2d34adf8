# The status word of a node: what mirrors flow_orchestrator/status.py.  Included by _ext.pyx
# before _engine.pxi, which uses every name here.
#
# Mirrors: NodeStatus (the ST_* codes and STATUS_NAMES, in the same order) and TRANSITIONS
# (copied at import into the C table _ALLOWED, which RunCore._transition() consults before
# every compare-and-swap).  A node's status and attempt number share one uint32 word,
# status in the low byte and attempt above it (_word, _status_of, _attempt_of), so a
# status change is one CAS on (status, attempt); why, see "Scheduling policy" in
# _engine.pxi.  tests/test_status.py checks that STATUS_NAMES follows NodeStatus.
#
# Why separate: it is the C face of one Python module, status.py, and depends on nothing
# else in the core; the scheduler in _engine.pxi only uses it.  Keeping it apart keeps the
# encoding of the word and the table of allowed transitions in one short file, next to
# nothing that could drift from status.py unnoticed.

from flow_orchestrator.status import JOIN_RULES as _JOIN_RULES
from flow_orchestrator.status import TRANSITIONS as _TRANSITIONS

cdef enum:
    ST_PENDING = 0
    ST_RUNNING = 1
    ST_COMPLETED = 2
    ST_FAILED = 3
    ST_SKIPPED = 4
    ST_CANCELLED = 5
    ST_TIMED_OUT = 6
    NUM_STATUSES = 7

cdef uint8_t _ALLOWED[NUM_STATUSES][NUM_STATUSES]


cdef void _load_transition_table():
    for old in range(NUM_STATUSES):
        for new in range(NUM_STATUSES):
            _ALLOWED[old][new] = 0
    for old, targets in _TRANSITIONS.items():
        for new in targets:
            _ALLOWED[int(old)][int(new)] = 1

_load_transition_table()

# The join rules (status.JOIN_RULES): _JOIN[trigger][seen bits][all dependencies ended].
cdef enum:
    TRIG_ALL_SUCCESS = 0
    TRIG_NONE_FAILED = 1
    TRIG_ALL_DONE = 2
    NUM_TRIGGERS = 3
    SEEN_COMPLETED = 1
    SEEN_BRANCH_SKIPPED = 2
    SEEN_FAILED = 4
    JOIN_WAIT = 0
    JOIN_RUN = 1
    JOIN_SKIP_FAILED = 2
    JOIN_SKIP_BRANCH = 3
    SKIP_NONE = 0
    SKIP_DEPENDENCY_FAILED = 1
    SKIP_BRANCH_NOT_TAKEN = 2

cdef uint8_t _JOIN[NUM_TRIGGERS][8][2]


cdef void _load_join_table():
    for trigger, rows in _JOIN_RULES.items():
        for seen in range(8):
            for ended in range(2):
                _JOIN[int(trigger)][seen][ended] = int(rows[seen][ended])

_load_join_table()


def join_table():
    """The C copy of ``status.JOIN_RULES``, as nested tuples (for the tests)."""
    return tuple(tuple((_JOIN[t][s][0], _JOIN[t][s][1]) for s in range(8)) for t in range(NUM_TRIGGERS))


def transition_table():
    """The C copy of ``status.TRANSITIONS``, as a tuple of rows of 0/1 (for the tests)."""
    return tuple(tuple(_ALLOWED[o][n] for n in range(NUM_STATUSES)) for o in range(NUM_STATUSES))

cdef inline uint32_t _word(uint32_t status, uint32_t attempt) noexcept nogil:
    return (attempt << 8) | status

cdef inline uint32_t _status_of(uint32_t word) noexcept nogil:
    return word & 0xFF

cdef inline uint32_t _attempt_of(uint32_t word) noexcept nogil:
    return word >> 8


STATUS_NAMES = ("pending", "running", "completed", "failed", "skipped", "cancelled", "timed_out")
