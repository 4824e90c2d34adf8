# Join rules and branches: when a node whose dependencies ended runs, or is skipped.
# Included by _ext.pyx after _engine.pxi, whose RunCore and CompiledWorkflow it serves;
# the rules themselves are the C copy of status.JOIN_RULES in _states.pxi.
#
# A workflow whose nodes all have the default trigger (all_success) and none branches
# never comes here: its completions decrement counters (RunCore._release_successors)
# and its failures skip descendants (RunCore._skip_descendants), as always.  Otherwise
# (CompiledWorkflow.has_joins) every node that ends, whatever the outcome, tells each
# of its dependents once, with one edge outcome (SEEN_COMPLETED, SEEN_BRANCH_SKIPPED or
# SEEN_FAILED):
#
#   seen[w] |= outcome          (atomic fetch-or on one byte a node)
#   remaining[w] -= 1           (now: dependencies of w that have not ended)
#   decide = _JOIN[trigger[w]][seen[w]][remaining[w] == 0]
#
# The thread that brings remaining[w] to zero re-reads seen[w] after its decrement: every
# other dependency or-ed its bit before its own decrement, so it sees them all, and it is
# the only one to see zero, so a node is made ready once.  A skip may be decided early
# (a failed dependency of an all_success node) by whoever notices first; the skip is a
# CAS PENDING -> SKIPPED through the transition table, and its winner tells the skipped
# node's dependents in turn (an explicit stack, no recursion), with SEEN_FAILED or
# SEEN_BRANCH_SKIPPED after the reason.  A node that is no longer PENDING ignores what
# it learns.
#
# A branch node's output names the successors to take (_branch_taken turns it into a
# mask over its successor edges, in CSR order, or fails the node); the edges not taken
# carry SEEN_BRANCH_SKIPPED.
#
# all_done nodes also run after a failure under fail-fast: such a workflow aborts softly
# (C_ABORTED == 1, RunCore._abort): nodes that are not all_done stop starting, and once
# nothing runs the sweep cancels them and tells their all_done dependents
# (_join_soft_sweep), which then run.  A cancel, a Ctrl-C or a second failure's hard
# abort (C_ABORTED == 2) stops everything, as without joins.

cdef extern from "_sync.h" nogil:
    uint8_t fo_or_fetch_u8(uint8_t* p, uint8_t v)
    uint8_t fo_load_u8(const uint8_t* p)
    void fo_store_u8(uint8_t* p, uint8_t v)

from flow_orchestrator.errors import BranchError


cdef int _compile_joins(CompiledWorkflow wf, triggers) except -1:
    """Set ``wf``'s per-node triggers and join flags (``triggers``: None, all_success)."""
    cdef Py_ssize_t n = wf.num_nodes
    if triggers is None:
        wf._triggers = np.zeros(n, dtype=np.uint8)
    else:
        wf._triggers = np.ascontiguousarray(triggers, dtype=np.uint8)
        if wf._triggers.shape[0] != n:
            raise ValueError("triggers need one entry per node")
        if n and int(wf._triggers.max()) >= NUM_TRIGGERS:
            raise ValueError("trigger codes out of range")
    wf.triggers = <const uint8_t*>cnp.PyArray_DATA(wf._triggers)
    branches = np.flatnonzero(wf._flags & FLAG_BRANCH)
    wf.has_all_done = bool((wf._triggers == TRIG_ALL_DONE).any())
    wf.has_joins = bool(branches.size or wf._triggers.any())
    labels = wf.labels
    wf._branch_names = {int(b): tuple(labels[s] for s in wf.graph.successors(int(b)).tolist())
                        for b in branches.tolist()}
    return 0


cdef object _branch_taken(RunCore core, int32_t node, object result):
    """The mask (bytes, one per successor edge in CSR order) of the successors a branch
    node's output takes; BranchError when it names anything else."""
    cdef tuple names = core.wf._branch_names[node]
    if isinstance(result, str):
        chosen = (result,)
    elif result is None:
        chosen = ()
    else:
        try:
            chosen = tuple(result)
        except TypeError:
            chosen = None
        if chosen is None or not all(isinstance(c, str) for c in chosen):
            raise BranchError(
                f"branch {core.wf.labels[node]!r} must return the name, or a list of names, of "
                f"successors to take, got {result!r:.200}")
    unknown = [c for c in chosen if c not in names]
    if unknown:
        raise BranchError(
            f"branch {core.wf.labels[node]!r} chose {unknown[0]!r}, which is not one of its direct "
            f"successors ({', '.join(map(repr, names)) or 'it has none'})")
    return bytes([name in chosen for name in names])


cdef int64_t _join_notify(RunCore core, int32_t node, uint8_t outcome, object taken,
                          vector[int32_t]& ready) except -1:
    """``node`` ended with ``outcome`` (a branch's completion: per edge, after ``taken``):
    tell its dependents, skipping those the rules skip and telling theirs in turn.
    Nodes made ready are appended to ``ready``; returns how many nodes were skipped."""
    cdef const int64_t* sp = core.wf.graph.succ_ptr
    cdef const int32_t* si = core.wf.graph.succ_idx
    cdef const uint8_t* triggers = core.wf.triggers
    cdef const uint8_t* mask = NULL
    cdef vector[int32_t] todo
    cdef vector[uint8_t] todo_outcome
    cdef int64_t k, skipped = 0
    cdef int64_t now = fo_now_ns() if core.metrics is not None else 0
    cdef int32_t u, w, rem
    cdef uint8_t o, e, bits, decision
    cdef uint32_t word
    if taken is not None:
        mask = <const uint8_t*><const char*>taken
    todo.push_back(node)
    todo_outcome.push_back(outcome)
    while todo.size():
        u = todo.back()
        o = todo_outcome.back()
        todo.pop_back()
        todo_outcome.pop_back()
        for k in range(sp[u], sp[u + 1]):
            w = si[k]
            e = o
            if mask != NULL and u == node:
                e = SEEN_COMPLETED if mask[k - sp[u]] else SEEN_BRANCH_SKIPPED
            bits = fo_or_fetch_u8(&core.seen[w], e)
            rem = fo_sub_fetch_i32(&core.remaining[w], 1)
            word = fo_load_u32(&core.state[w])
            if _status_of(word) != ST_PENDING:
                continue
            if rem == 0:
                bits = fo_load_u8(&core.seen[w])
            decision = _JOIN[triggers[w]][bits & 7][rem == 0]
            if decision == JOIN_RUN:
                if now:
                    core.ready_ns[w] = now
                ready.push_back(w)
            elif decision != JOIN_WAIT and core._transition(w, word, ST_SKIPPED, _attempt_of(word)):
                fo_store_u8(&core.why[w], SKIP_DEPENDENCY_FAILED if decision == JOIN_SKIP_FAILED
                            else SKIP_BRANCH_NOT_TAKEN)
                skipped += 1
                todo.push_back(w)
                todo_outcome.push_back(SEEN_FAILED if decision == JOIN_SKIP_FAILED else SEEN_BRANCH_SKIPPED)
                if core.metrics is not None:
                    core.metrics.count(w, M_SKIPPED)
                if core.events is not None:
                    core.events.node_skip(w)
    return skipped


cdef int64_t _join_failed(RunCore core, int32_t node) except -1:
    """``node`` failed, timed out or was cancelled: tell its dependents (all_done ones
    may become ready: they are queued); returns how many were skipped."""
    cdef vector[int32_t] ready
    cdef int64_t skipped = _join_notify(core, node, SEEN_FAILED, None, ready)
    if ready.size():
        core.queue.push(&ready[0], ready.size())
        core._maybe_spawn()
    return skipped


cdef void _join_soft_sweep(RunCore core) noexcept:
    """After a soft abort, once nothing runs: every PENDING node that is not all_done
    becomes CANCELLED and tells its all_done dependents, which may then be ready."""
    cdef const int64_t* sp = core.wf.graph.succ_ptr
    cdef const int32_t* si = core.wf.graph.succ_idx
    cdef const uint8_t* triggers = core.wf.triggers
    cdef vector[int32_t] ready
    cdef Py_ssize_t v
    cdef int64_t k, cancelled = 0
    cdef int32_t w
    cdef uint32_t word
    for v in range(core.n):
        if triggers[v] == TRIG_ALL_DONE:
            continue
        word = fo_load_u32(&core.state[v])
        if _status_of(word) == ST_PENDING and fo_cas_u32(&core.state[v], word, _word(ST_CANCELLED, _attempt_of(word))):
            cancelled += 1
            if core.metrics is not None:
                core.metrics.count(v, M_CANCELLED)
            if core.events is not None:
                core.events.node_cancel(v, _attempt_of(word))
            for k in range(sp[v], sp[v + 1]):
                w = si[k]
                if triggers[w] != TRIG_ALL_DONE:
                    continue
                fo_or_fetch_u8(&core.seen[w], SEEN_FAILED)
                if fo_sub_fetch_i32(&core.remaining[w], 1) == 0 \
                        and _status_of(fo_load_u32(&core.state[w])) == ST_PENDING:
                    ready.push_back(w)
    if ready.size():
        core.queue.push(&ready[0], ready.size())
        try:
            core._maybe_spawn()
        except BaseException as exc:
            core._interrupted(exc)
    core._count_terminal(cancelled)
    if fo_load_i64(&core.counters[C_TERMINAL]) >= core.n:
        core._finish()


cdef int64_t _join_restore(RunCore core, const uint8_t* done, const int32_t* tries, list outputs) except -1:
    """RunCore.restore() for a workflow with joins: the restored nodes tell their
    dependents (a branch after its restored output), then every node the rules skip is
    skipped; returns the number of terminal nodes.  RunCore.start() then queues the
    PENDING nodes whose dependencies all ended (the rules said run)."""
    cdef const int64_t* sp = core.wf.graph.succ_ptr
    cdef const int32_t* si = core.wf.graph.succ_idx
    cdef Py_ssize_t v
    cdef int64_t k, terminal = 0
    cdef int32_t w
    cdef uint8_t e
    cdef vector[int32_t] ready
    cdef const uint8_t* mask
    order = core.wf.graph.topological_order().tolist()
    for v in range(core.n):
        if done[v]:
            core.state[v] = _word(ST_COMPLETED, <uint32_t>max(tries[v], 1))
            core.outputs[v] = outputs[v]
            terminal += 1
    for v in order:
        if not done[v]:
            continue
        taken = _branch_taken(core, v, outputs[v]) if core.wf.flags[v] & FLAG_BRANCH else None
        mask = <const uint8_t*><const char*>taken if taken is not None else NULL
        for k in range(sp[v], sp[v + 1]):
            w = si[k]
            e = SEEN_COMPLETED if mask == NULL or mask[k - sp[v]] else SEEN_BRANCH_SKIPPED
            core.seen[w] |= e
            core.remaining[w] -= 1
    # Decide, in topological order, what the restored outcomes imply (a skip tells its
    # dependents through _join_notify, so later nodes see it).
    for v in order:
        if _status_of(core.state[v]) != ST_PENDING or core.wf.indegree[v] == 0:
            continue
        e = _JOIN[core.wf.triggers[v]][core.seen[v] & 7][core.remaining[v] == 0]
        if e == JOIN_SKIP_FAILED or e == JOIN_SKIP_BRANCH:
            core.state[v] = _word(ST_SKIPPED, _attempt_of(core.state[v]))
            core.why[v] = SKIP_DEPENDENCY_FAILED if e == JOIN_SKIP_FAILED else SKIP_BRANCH_NOT_TAKEN
            terminal += 1 + _join_notify(core, v, SEEN_FAILED if e == JOIN_SKIP_FAILED else SEEN_BRANCH_SKIPPED,
                                         None, ready)
    return terminal
