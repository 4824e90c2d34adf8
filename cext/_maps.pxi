# Map nodes: one item per element of a dependency's output, scheduled by the core.
# Included by _ext.pyx after _engine.pxi and _joins.pxi, whose RunCore it serves.
#
# When the node a map node maps over has completed, the map node is queued like any
# ready node.  The worker that takes it claims it (PENDING -> RUNNING, through the
# transition table), turns the output into a list of elements and makes the node's
# MapRun: per item, a status/attempt word (the same encoding and the same transition
# table as a node's), start and end times, its output and its error.
#
# Items never enter the ready FIFO one by one.  The FIFO holds **tokens**: a map node's
# own id, queued once per worker allowed on its items (the node's max_concurrency=, at
# most the run's workers).  A worker that pops the id of a RUNNING map node works on
# its items: it claims them from the map's cursor (an atomic fetch-add, a few at a time
# when the map is large) and runs them one after the other, with no queue in between,
# until none is left; then it gives its token back.  So an item costs a claim, two CAS
# on its word, two clock reads and the call of its action: the same order as a chain
# of static nodes, whatever the number of items.
#
# An item that fails with attempts left goes back to PENDING and, after its delay (the
# engine's timer, as for nodes), into the map's retry list (a short mutex), from which
# workers take it before the cursor; if no token is out, the retry takes one and queues
# it.  A worker that finds nothing releases its token and then looks at the retry list
# again, and a retry queues itself and then looks at the tokens: sequentially
# consistent on both sides, so an item is never left with nobody to run it.
#
# Deadlines are timer entries per attempt, as for nodes: at the deadline the item goes
# to PENDING (retry) or TIMED_OUT, and the stuck worker's token and its place in the
# run's RUNNING counter pass to a replacement (a token queued again); when the stuck
# attempt returns, its CAS loses and the worker leaves the map at once.
#
# Fail-fast: an item that fails for good stops the map (no item starts any more) and
# aborts the run, unless the node or the run continues on error, when the other items
# go on.  Whoever stops a map claims what the cursor has left and cancels every PENDING
# item (those waiting for a retry too).  The worker whose item makes the count of
# terminal items reach the number of items finalizes the node: COMPLETED with the list
# of outputs (through the same code as a node's success: checkpoint, dependents), or
# FAILED (a MapItemError, first failure as its cause), or CANCELLED.  The sweep after
# an abort (once no worker holds a token: each holds the run's RUNNING counter) stops
# every map still running, so a map whose items all wait for a retry ends too.

cdef extern from "_sync.h" nogil:
    int64_t fo_fetch_add_i64(int64_t* p, int64_t v)

from flow_orchestrator.errors import MapItemError

cdef enum:
    MAP_STOPPED = 0     # 1 once no item may start (fail-fast, or the run stopped)
    MAP_TERMINAL = 1    # items in a terminal status
    MAP_FAILED = 2      # items FAILED or TIMED_OUT
    MAP_ACTIVE = 3      # tokens out (queued, or held by a worker)
    MAP_CURSOR = 4      # the next item never claimed
    MAP_RETRIES = 5     # items in the retry list
    MAP_COMPLETED = 6   # items COMPLETED
    NUM_MAP_COUNTERS = 7


@cython.final
cdef class MapRun:
    """The items of one map node in one run (see the notes of ``_maps.pxi``)."""

    cdef RunCore core
    cdef int32_t node
    cdef uint32_t running           # the map node's RUNNING word
    cdef uint64_t generation
    cdef Py_ssize_t n
    cdef Py_ssize_t chunk           # items claimed at once
    cdef list elements
    cdef list outputs
    cdef dict errors
    cdef cnp.ndarray _state, _start, _end
    cdef uint32_t* state
    cdef int64_t* start_ns
    cdef int64_t* end_ns
    cdef int64_t counters[NUM_MAP_COUNTERS]
    cdef int64_t limit
    cdef vector[int32_t] retry
    cdef cython.pymutex lock
    cdef object action
    cdef bint takes_ctx
    cdef bint has_timeout
    cdef bint continue_on_error
    cdef int32_t max_attempts
    cdef uint32_t slot
    cdef double timeout
    cdef object __weakref__         # the timer holds its callbacks weakly

    def retry_due(self, int32_t item, uint32_t word, uint64_t generation):
        """Timer callback: an item whose retry delay has passed goes to the retry list."""
        if generation != self.generation or fo_load_i64(&self.counters[MAP_STOPPED]) \
                or fo_load_u32(&self.state[item]) != word:
            return
        _map_requeue(self, item)
        if _map_acquire(self):
            self.core.queue.push(&self.node, 1)
            self.core._maybe_spawn()

    def on_deadline(self, int32_t item, uint32_t running, uint64_t generation):
        """Timer callback: the attempt ``running`` of ``item`` reached its deadline."""
        cdef RunCore core = self.core
        cdef uint32_t attempt = _attempt_of(running)
        if generation != self.generation or fo_load_u32(&self.state[item]) != running:
            return
        exc = NodeTimeoutError(f"item {item} of map {core.wf.labels[self.node]!r} attempt {attempt} "
                               f"timed out after {self.timeout:g} s")
        if not _map_item_ended(self, item, running, exc, fo_now_ns(), True):
            return
        # The stuck worker's token and RUNNING count pass to a replacement.
        fo_add_fetch_i64(&core.counters[C_STUCK], 1)
        core._running_done()
        if not fo_load_i64(&self.counters[MAP_STOPPED]) and not core._stopped(self.node):
            core.queue.push(&self.node, 1)
            core._maybe_spawn()
        else:
            fo_add_fetch_i64(&self.counters[MAP_ACTIVE], -1)


cdef inline bint _item_transition(MapRun m, int32_t item, uint32_t expected, uint32_t status,
                                  uint32_t attempt) except -1:
    """An item's status change: checked against the transition table, then one CAS."""
    if not _ALLOWED[_status_of(expected)][status]:
        raise InvalidTransitionError(f"item {item} of map {m.core.wf.labels[m.node]!r}: "
                                     f"{_status_of(expected)} -> {status} is not allowed")
    return fo_cas_u32(&m.state[item], expected, _word(status, attempt))


cdef bint _context_cancelled(NodeContext ctx) noexcept:
    if ctx._map is None:
        return ctx._core._attempt_cancelled(ctx._node, ctx._word)
    cdef MapRun m = <MapRun>ctx._map
    return (ctx._core._stopped(ctx._node) or fo_load_i64(&m.counters[MAP_STOPPED]) != 0
            or fo_load_u32(&m.state[ctx._item]) != ctx._word)


cdef object _context_element(NodeContext ctx):
    if ctx._map is None:
        raise AttributeError(f"node {ctx.node!r} is not a map item: it has no element")
    return (<MapRun>ctx._map).elements[ctx._item]


cdef int32_t _map_work(RunCore core, int32_t node) except -2:
    """What a worker does with a map node it popped: expand it (PENDING), or work on its
    items (RUNNING: a token).  Returns -1: what its items make ready is queued."""
    cdef uint32_t word = fo_load_u32(&core.state[node])
    cdef uint32_t running
    cdef MapRun m
    cdef int64_t now
    fo_add_fetch_i64(&core.counters[C_RUNNING], 1)
    if core._stopped(node):
        core._running_done()
        return -1
    if _status_of(word) == ST_PENDING:
        if not core._transition(node, word, ST_RUNNING, _attempt_of(word) + 1):
            core._running_done()
            return -1
        running = _word(ST_RUNNING, _attempt_of(word) + 1)
        now = fo_now_ns()
        fo_store_i64(&core.start_ns[node], now)
        if core.metrics is not None or core.events is not None:
            core._started(node, _attempt_of(running))
        try:
            m = _map_expand(core, node, running)
        except BaseException as exc:
            core._attempt_failed(node, running, exc, fo_now_ns())
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return -1
        if fo_load_i64(&m.counters[MAP_TERMINAL]) == m.n:  # no items, or a resume restored them all
            fo_add_fetch_i64(&m.counters[MAP_ACTIVE], -1)
            _map_finalize(m)
            core._running_done()
            return -1
    elif _status_of(word) == ST_RUNNING and core.maps is not None and node in core.maps:
        m = <MapRun>core.maps[node]
    else:
        core._running_done()  # a token of a map that ended
        return -1
    try:
        kept = _map_items(m)
    except BaseException:
        # Ctrl-C or SystemExit from an item (already recorded, the run aborted), or an
        # internal error: leave the map, giving back the token and the RUNNING count.
        fo_add_fetch_i64(&m.counters[MAP_ACTIVE], -1)
        core._running_done()
        raise
    if kept:
        core._running_done()
    return -1


cdef MapRun _map_expand(RunCore core, int32_t node, uint32_t running):
    """Make the MapRun of ``node`` from its dependency's output, and queue its tokens."""
    cdef CompiledWorkflow wf = core.wf
    over, limit = wf.maps[node]
    cdef uint32_t slot = wf.option_index[node]
    cdef MapRun m = MapRun.__new__(MapRun)
    # A map after a dependency that did not complete (all_done, none_failed) has no items.
    source = core.outputs[over] if _status_of(fo_load_u32(&core.state[over])) == ST_COMPLETED else ()
    try:
        m.elements = list(source)
    except TypeError:
        raise TypeError(f"map {wf.labels[node]!r} maps over the output of {wf.labels[over]!r}, "
                        f"which is not iterable: {type(source).__name__}") from None
    m.core = core
    m.node = node
    m.running = running
    m.generation = core.generation
    m.n = len(m.elements)
    m.outputs = [None] * m.n
    m.errors = {}
    m._state = np.zeros(m.n, dtype=np.uint32)
    m._start = np.zeros(m.n, dtype=np.int64)
    m._end = np.zeros(m.n, dtype=np.int64)
    m.state = <uint32_t*>cnp.PyArray_DATA(m._state)
    m.start_ns = <int64_t*>cnp.PyArray_DATA(m._start)
    m.end_ns = <int64_t*>cnp.PyArray_DATA(m._end)
    m.action = wf.actions[node]
    m.takes_ctx = (wf.flags[node] & FLAG_TAKES_CONTEXT) != 0
    m.has_timeout = (wf.flags[node] & FLAG_HAS_TIMEOUT) != 0
    m.continue_on_error = core.run_continues_on_error or (wf.flags[node] & FLAG_CONTINUE_ON_ERROR) != 0
    m.slot = slot
    m.max_attempts = wf.max_attempts[slot]
    m.timeout = wf.timeouts[slot]
    workers = core.max_helpers + 1
    m.limit = max(1, min(limit or workers, workers, m.n or 1))
    m.chunk = max(1, min(64, m.n // (m.limit * 16)))
    if core.maps is None:
        core.maps = {}
    core.maps[node] = m
    if core.restored_items is not None and node in core.restored_items:
        _map_restore(m, core.restored_items.pop(node))
    m.counters[MAP_ACTIVE] = m.limit   # this worker's token and the ones queued now
    if m.limit > 1:
        tokens = np.full(m.limit - 1, node, dtype=np.int32)
        core.queue.push(<const int32_t*>cnp.PyArray_DATA(tokens), m.limit - 1)
        core._maybe_spawn()
    return m


def restore_map_items(RunCore core, int32_t node, indices, list outputs, attempts):
    """Before :meth:`RunCore.start` of a resumed run: the items ``indices`` of map node
    ``node`` completed in the saved run, with these ``outputs`` and ``attempts``; when
    the node expands again they are COMPLETED at once (an initial state, like
    :meth:`RunCore.restore`), and only the others run.  Indices beyond the new number
    of elements are ignored."""
    if not core.wf.flags[node] & FLAG_MAP:
        raise ValueError(f"node {core.wf.labels[node]!r} is not a map node")
    if core.restored_items is None:
        core.restored_items = {}
    index = np.ascontiguousarray(indices, dtype=np.int64)
    tries = np.ascontiguousarray(attempts, dtype=np.int32)
    if index.shape[0] != len(outputs) or tries.shape[0] != len(outputs):
        raise ValueError("restore_map_items needs one output and attempt count per index")
    core.restored_items[node] = (index, outputs, tries)


cdef int _map_restore(MapRun m, tuple restored) except -1:
    cdef const int64_t[::1] index = restored[0]
    cdef list outputs = restored[1]
    cdef const int32_t[::1] tries = restored[2]
    cdef Py_ssize_t k
    cdef int64_t i, done = 0
    for k in range(index.shape[0]):
        i = index[k]
        if 0 <= i < m.n and _status_of(m.state[i]) == ST_PENDING:
            m.state[i] = _word(ST_COMPLETED, <uint32_t>max(tries[k], 1))
            m.outputs[i] = outputs[k]
            done += 1
    m.counters[MAP_COMPLETED] += done
    m.counters[MAP_TERMINAL] += done
    return 0


cdef bint _map_acquire(MapRun m) noexcept:
    """Take a token if fewer than the limit are out."""
    cdef int64_t active
    while True:
        active = fo_load_i64(&m.counters[MAP_ACTIVE])
        if active >= m.limit:
            return False
        if fo_cas_i64(&m.counters[MAP_ACTIVE], active, active + 1):
            return True


cdef int _map_requeue(MapRun m, int32_t item) except -1:
    with m.lock:
        m.retry.push_back(item)
    fo_add_fetch_i64(&m.counters[MAP_RETRIES], 1)
    return 0


cdef int32_t _map_retried(MapRun m) noexcept:
    """An item from the retry list, or -1."""
    cdef int32_t item = -1
    if fo_load_i64(&m.counters[MAP_RETRIES]) <= 0:
        return -1
    with m.lock:
        if m.retry.size():
            item = m.retry.back()
            m.retry.pop_back()
    if item >= 0:
        fo_add_fetch_i64(&m.counters[MAP_RETRIES], -1)
    return item


cdef bint _map_items(MapRun m) except -1:
    """Work on ``m``'s items with a token until none is left.  False when this worker's
    token and RUNNING count passed to a replacement (its attempt timed out)."""
    cdef RunCore core = m.core
    cdef int64_t lo = 0, hi = 0
    cdef int32_t item
    cdef int kept
    while True:
        if fo_load_i64(&m.counters[MAP_STOPPED]) or core._stopped(m.node):
            if lo < hi:  # claimed, never started: cancelled below with the rest
                _map_unclaim(m, lo, hi)
                lo = hi
            _map_stop(m)
            fo_add_fetch_i64(&m.counters[MAP_ACTIVE], -1)
            return True
        item = _map_retried(m)
        if item < 0:
            if lo >= hi:
                lo = fo_fetch_add_i64(&m.counters[MAP_CURSOR], m.chunk)
                hi = min(lo + m.chunk, m.n)
                if lo >= hi:
                    fo_add_fetch_i64(&m.counters[MAP_ACTIVE], -1)
                    # A retry queued meanwhile may have found every token out: take one back.
                    if fo_load_i64(&m.counters[MAP_RETRIES]) > 0 and _map_acquire(m):
                        continue
                    return True
            item = <int32_t>lo
            lo += 1
        kept = _map_item(m, item)
        if kept == 0:
            return False


cdef int _map_unclaim(MapRun m, int64_t lo, int64_t hi) except -1:
    """Cancel items claimed from the cursor that will not start."""
    cdef int64_t i, cancelled = 0
    cdef uint32_t word
    for i in range(lo, hi):
        word = fo_load_u32(&m.state[i])
        if _status_of(word) == ST_PENDING and _item_transition(m, <int32_t>i, word, ST_CANCELLED, _attempt_of(word)):
            cancelled += 1
    if cancelled:
        _map_count_terminal(m, cancelled)
    return 0


cdef int _map_stop(MapRun m) except -1:
    """No item of ``m`` starts any more: what the cursor left and every PENDING item
    (waiting for a retry too) becomes CANCELLED."""
    fo_store_i64(&m.counters[MAP_STOPPED], 1)
    fo_fetch_add_i64(&m.counters[MAP_CURSOR], m.n + 1)  # nobody claims from it any more
    _map_unclaim(m, 0, m.n)  # what it left, and the items waiting for a retry
    return 0


cdef int _map_item(MapRun m, int32_t item) except -1:
    """Run one attempt of ``item``: 1 to go on, 0 when the token passed to a replacement."""
    cdef uint32_t word = fo_load_u32(&m.state[item])
    cdef uint32_t attempt = _attempt_of(word) + 1
    cdef uint32_t running
    cdef NodeContext ctx
    if _status_of(word) != ST_PENDING or not _item_transition(m, item, word, ST_RUNNING, attempt):
        return 1
    running = _word(ST_RUNNING, attempt)
    fo_store_i64(&m.start_ns[item], fo_now_ns())
    element = m.elements[item]
    try:
        if m.takes_ctx:
            result = m.action(element, _item_context(m, item, running))
        else:
            result = m.action(element)
    except BaseException as exc:
        kept = _map_item_ended(m, item, running, exc, fo_now_ns(), False)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        if not kept:
            fo_add_fetch_i64(&m.core.counters[C_STUCK], -1)
        return kept
    cdef int64_t end = fo_now_ns()
    cdef object payload = None
    if m.core.checkpoint is not None:
        # Serialized before the item counts as completed: one that cannot be saved fails.
        try:
            payload = m.core.checkpoint.encode(m.node, result)
        except Exception as exc:
            kept = _map_item_ended(m, item, running, exc, end, False)
            if not kept:
                fo_add_fetch_i64(&m.core.counters[C_STUCK], -1)
            return kept
    if not _item_transition(m, item, running, ST_COMPLETED, attempt):
        fo_add_fetch_i64(&m.core.counters[C_STUCK], -1)  # timed out meanwhile: dropped
        return 0
    fo_store_i64(&m.end_ns[item], end)
    m.outputs[item] = result
    if payload is not None:
        _item_checkpoint(m, item, attempt, ST_COMPLETED, payload)
    fo_add_fetch_i64(&m.counters[MAP_COMPLETED], 1)
    _map_count_terminal(m, 1)
    return 1


cdef int _item_checkpoint(MapRun m, int32_t item, uint32_t attempt, int status, object value) except -1:
    """Hand a terminal item to the checkpointer (as RunCore._checkpoint_call does a node)."""
    cdef RunCore core = m.core
    cdef int64_t t0 = core.t0_ns
    cdef int64_t a = fo_load_i64(&m.start_ns[item])
    cdef int64_t b = fo_load_i64(&m.end_ns[item])
    try:
        core.checkpoint.item_ended(m.node, item, status, attempt, (a - t0) / 1e9 if a else NAN,
                                   (b - t0) / 1e9 if b else NAN, value)
    except (KeyboardInterrupt, SystemExit) as interrupt:
        core._interrupted(interrupt)
        raise
    except BaseException as failure:
        core.cancel(f"checkpoint failed: {type(failure).__name__}: {failure}")
    return 0


cdef NodeContext _item_context(MapRun m, int32_t item, uint32_t running):
    cdef NodeContext ctx = NodeContext.__new__(NodeContext)
    ctx._core = m.core
    ctx._node = m.node
    ctx._word = running
    ctx._map = m
    ctx._item = item
    ctx._deadline = 0.0
    if m.timeout > 0:
        ctx._deadline = m.start_ns[item] / 1e9 + m.timeout
        if m.core.timer is not None:
            m.core.timer.schedule(ctx._deadline, m.on_deadline, item, running, m.generation)
    return ctx


cdef bint _map_item_ended(MapRun m, int32_t item, uint32_t running, object exc, int64_t end,
                          bint timed_out) except -1:
    """An attempt of ``item`` raised ``exc`` (or timed out): retry it, or end it.  False
    if the item's word had changed (someone else ended the attempt)."""
    cdef RunCore core = m.core
    cdef uint32_t attempt = _attempt_of(running)
    cdef int final_status = ST_TIMED_OUT if timed_out else ST_FAILED
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        final_status = ST_CANCELLED
        core._interrupted(exc)
    elif isinstance(exc, NodeCancelledError):
        final_status = ST_CANCELLED
    elif not (fo_load_i64(&m.counters[MAP_STOPPED]) or core._stopped(m.node)) and (
            isinstance(exc, RetryRequested) or <int32_t>attempt < m.max_attempts):
        if not _item_transition(m, item, running, ST_PENDING, attempt):
            return False
        fo_store_i64(&m.end_ns[item], end)
        delay = exc.delay if isinstance(exc, RetryRequested) else core.wf.retry_delay(m.slot, attempt)
        if delay <= 0 or core.timer is None:
            _map_requeue(m, item)
        else:
            core.timer.schedule(fo_now_ns() / 1e9 + delay, m.retry_due, item, _word(ST_PENDING, attempt),
                                m.generation)
        return True
    if isinstance(exc, RetryRequested):
        exc = exc.__cause__ if exc.__cause__ is not None else exc
    if not _item_transition(m, item, running, final_status, attempt):
        return False
    fo_store_i64(&m.end_ns[item], end)
    m.errors[item] = exc
    if core.checkpoint is not None:
        _item_checkpoint(m, item, attempt, final_status, exc)
    if final_status != ST_CANCELLED:
        fo_add_fetch_i64(&m.counters[MAP_FAILED], 1)
        if not m.continue_on_error:
            fo_store_i64(&m.counters[MAP_STOPPED], 1)
            core._abort(False)
    _map_count_terminal(m, 1)
    return True


cdef int _map_count_terminal(MapRun m, int64_t k) except -1:
    if fo_add_fetch_i64(&m.counters[MAP_TERMINAL], k) == m.n:
        _map_finalize(m)
    return 0


cdef int _map_finalize(MapRun m) except -1:
    """Every item ended: the map node completes, fails or is cancelled."""
    cdef RunCore core = m.core
    cdef vector[int32_t] ready
    cdef int32_t next_node
    cdef int64_t now = fo_now_ns()
    cdef int64_t failed = fo_load_i64(&m.counters[MAP_FAILED])
    fo_add_fetch_i64(&core.counters[C_RUNNING], 1)  # given back by what ends the node
    if fo_load_i64(&m.counters[MAP_COMPLETED]) == m.n:
        next_node = core._attempt_succeeded(m.node, m.running, m.outputs, ready, now)
        if next_node >= 0:
            core.queue.push(&next_node, 1)
            core._maybe_spawn()
        return 0
    name = core.wf.labels[m.node]
    if failed:
        first = min(i for i, e in m.errors.items() if not isinstance(e, NodeCancelledError)
                    and not isinstance(e, (KeyboardInterrupt, SystemExit))) if m.errors else None
        cause = m.errors.get(first) if first is not None else None
        exc = MapItemError(f"{failed} of {m.n} item(s) of map {name!r} failed"
                           + (f"; item {first}: {type(cause).__name__}: {cause}" if cause is not None else ""))
        exc.__cause__ = cause
        _map_ended(m, ST_FAILED, exc, now)
    else:
        _map_ended(m, ST_CANCELLED, NodeCancelledError(f"map {name!r} was stopped before all its items ran"), now)
    return 0


cdef int _map_ended(MapRun m, int status, object exc, int64_t end) except -1:
    """The map node ends badly (we hold one RUNNING count for it)."""
    cdef RunCore core = m.core
    cdef int32_t node = m.node
    if not core._transition(node, m.running, status, _attempt_of(m.running)):
        core._running_done()
        return 0
    fo_store_i64(&core.end_ns[node], end)
    core.errors[node] = exc
    if core.metrics is not None or core.events is not None:
        core._ended_event(node, _attempt_of(m.running), status, exc)
    interrupt = None
    if core.checkpoint is not None:
        interrupt = core._checkpoint_call(node, _attempt_of(m.running), status, exc)
    core._ended_badly(node, status)
    core._running_done()
    if interrupt is not None:
        raise interrupt
    return 0


cdef void _maps_sweep(RunCore core) noexcept:
    """After an abort, once no worker holds a token: stop every map still running."""
    cdef MapRun m
    try:
        for m in list(core.maps.values()):
            if m.generation == core.generation and _status_of(fo_load_u32(&core.state[m.node])) == ST_RUNNING:
                _map_stop(m)
    except BaseException as exc:
        core._interrupted(exc)


cdef object _map_items_of(RunCore core, int32_t node):
    if core.maps is None or node not in core.maps:
        return None
    cdef MapRun m = <MapRun>core.maps[node]
    statuses = (m._state & 0xFF).astype(np.uint8)
    attempts = (m._state >> 8).astype(np.int32)
    t0 = core.t0_ns
    started = np.where(m._start > 0, (m._start - t0) / 1e9, np.nan)
    ended = np.where(m._end > 0, (m._end - t0) / 1e9, np.nan)
    return statuses, attempts, started, ended, m.outputs, dict(m.errors)
