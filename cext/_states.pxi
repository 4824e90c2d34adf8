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

cdef inline uint32_t _word(uint32_t status, uint32_t attempt) noexcept nogil:
    return (attempt << 8) | status

cdef inline uint32_t _status_of(uint32_t word) noexcept nogil:
    return word & 0xFF

cdef inline uint32_t _attempt_of(uint32_t word) noexcept nogil:
    return word >> 8


STATUS_NAMES = ("pending", "running", "completed", "failed", "skipped", "cancelled", "timed_out")
