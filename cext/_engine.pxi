# The scheduler: run state (the arena), worker loops, completion, timeouts, retries.
# Included by _ext.pyx after _states.pxi (the status word and the transition table,
# mirroring status.py) and _metrics.pxi (NodeMetrics, mirroring metrics.py), which it uses.
# RunCore, CompiledWorkflow and NodeContext stay together here: they are one state machine.
#
# Scheduling policy
# =================
#
# A run owns one RunCore: struct-of-arrays state indexed by node id.
#
#   state[v]      uint32  status in the low byte, attempt number above it
#   remaining[v]  int32   dependencies of v not yet completed
#   start_ns[v]   int64   CLOCK_MONOTONIC when v's last attempt started (0: never)
#   end_ns[v]     int64   ... and when it ended
#
# plus a list of outputs and a dict of errors.  Status and attempt share one word so
# that every status change is one compare-and-swap on (status, attempt): a late return
# from an attempt that already timed out and was retried cannot be mistaken for the
# current attempt (the ABA problem), whatever the interleaving.
#
# Every change of status goes through _transition(), which checks it against the one
# table of allowed transitions (flow_orchestrator.status.TRANSITIONS, loaded into
# _ALLOWED by _states.pxi) and performs the CAS.  Whoever wins the CAS owns the
# consequences: counting the node terminal, releasing or skipping its dependents.
# Losing a CAS means someone else already did.
#
# Workers.  A worker loop takes a ready node, runs its action, and on success
# decrements the remaining-dependency counter of each successor atomically; a
# successor whose counter reaches zero is ready.  Of the nodes that one completion
# makes ready, the worker keeps one to run next itself (a chain runs with no hand-off
# at all) and pushes the rest to the run's shared FIFO, waking idle workers.  There is
# no Future per node and no coordinator thread on the path of a completion.  A worker
# sleeps (with the GIL released) only when the FIFO is empty, in slices of 50 ms so
# that the thread driving a run sees Ctrl-C promptly.
#
# The thread that calls Engine.run() is itself a worker (unless the workflow has
# timeouts, when it must stay free to return at a deadline).  Helpers belong to the
# engine, not to a run: a run with ready work queued and no idle worker posts itself
# (once) on the engine's Crew, a board in C++ (FoBoard in _sync.h), and at most
# max_workers helper tasks live on the pool, each serving whatever run is posted: it
# joins the run (attached, so the arena cannot be recycled under it, and within the
# run's helper slots), works until the FIFO is empty, then leaves, so that a run with
# nothing to start holds no pool thread; work pushed later posts the run again.  A
# leaving helper gives up its slot and then looks at the FIFO once more (a Dekker
# handshake against the pusher's "push, then read C_HELPERS"), so no work is stranded.
# A queued task holds no run and a run that ends takes itself off the board, so tiny
# runs back to back cost a post and a removal, not a pool submission each, and pile up
# nothing.  An action that starts a nested run on the same engine cannot deadlock: a
# run started from a worker thread always works itself, even with timeouts, so it
# progresses even when every pool thread is busy.
#
# Failures.  When an attempt raises and retries remain, the node goes back to
# PENDING and the engine's timer re-queues it after the back-off delay: no worker
# waits.  When it fails for good, its descendants are SKIPPED at once (a walk of the
# successor CSR, each node claimed by CAS), and unless the node or the run continues
# on error the run is aborted: nothing new starts, running nodes finish, and once no
# node is running the remaining PENDING nodes become CANCELLED.  The abort check is a
# Dekker handshake on two sequentially consistent counters ("running += 1, then read
# aborted" against "aborted = 1, then read running"), so a node can never start after
# the sweep has decided it will not.
#
# Deadlines cost no Python per attempt: an attempt with a timeout pushes (deadline,
# node, running word) on the run's heap in C (FoDeadlines), and only the run's earliest
# deadline is an entry on the engine's timer (moved, the old entry cancelled, when an
# earlier one arrives; arm numbers tell the current arm from stale ones).  An entry
# whose attempt ended is inert (the node's word moved on) and is dropped lazily, at the
# top or by a compaction whenever the heap doubles past what was live: O(running
# attempts) entries however long the run.  The run's end frees the heap and cancels
# its timer entry, so nothing waits for a deadline an hour away.
#
# Timeouts are cooperative: Python threads cannot be killed.  At the deadline the
# engine's timer moves the node from RUNNING to TIMED_OUT (or back to PENDING for a
# retry), which cancels the attempt's token; the run moves on, and whatever the
# abandoned attempt returns later loses its CAS and is discarded: only the thread that
# wins a node's CAS records its output, error and end time.  A replacement worker is
# started on a thread of its own (the pool's are taken) so that a stuck thread does not
# shrink the run's parallelism.  An attempt run by another executor (a process pool)
# keeps the arena attached until its result arrives, so a late result can never land in
# a later run that reuses the arena.
#
# Observers and metrics: when a run has them, each transition also calls the observers'
# dispatcher and adds to per-node counters and latency histograms (NodeMetrics in
# _metrics.pxi: C arrays updated with plain adds under the GIL, relaxed atomics on
# free-threaded builds); when it has none, each costs one pointer test.
#
# Memory: 24 bytes a node in the arrays above, 8 for ready_ns (the metrics' queue wait,
# allocated only for runs with metrics), 8 for the outputs list, at most 4 in the FIFO.
# A new arena's arrays come from calloc (np.zeros), so its first run neither writes
# them nor touches a page it does not use; finished arenas go back to a small pool on
# their CompiledWorkflow and are reset with memcpy/memset, so running a small workflow
# many times allocates little.  The remaining counters start as a memcpy of the
# workflow's in-degrees, the one per-workflow array a run must copy (it writes them).

from cpython.exc cimport PyErr_CheckSignals
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.ref cimport Py_DECREF, Py_INCREF
from libc.math cimport NAN
from libcpp.vector cimport vector

cdef extern from "_sync.h" nogil:
    int fo_cas_i64(int64_t* p, int64_t expected, int64_t desired)
    int32_t fo_sub_fetch_i32(int32_t* p, int32_t v)
    int64_t fo_add_fetch_i64(int64_t* p, int64_t v)
    int64_t fo_load_i64(const int64_t* p)
    uint32_t fo_load_u32(const uint32_t* p)
    int fo_cas_u32(uint32_t* p, uint32_t expected, uint32_t desired)
    void fo_store_i64(int64_t* p, int64_t v)
    int64_t fo_now_ns()

    cdef cppclass FoReadyQueue:
        int push(const int32_t* ids, size_t n)
        size_t pop(int32_t* out, size_t max)
        size_t wait_pop(int32_t* out, size_t max, long timeout_ms)
        size_t size()
        void wake()
        void reset()
        int idle_workers()
        size_t capacity_bytes()

    cdef cppclass FoBoard:
        int capacity
        int post(void* run, int64_t* on_board)
        void* take()
        int remove(void* run, int64_t* on_board)
        int wait(long timeout_ms)
        int retire()
        void submit_failed()
        void close()
        size_t size()
        int helpers()

    enum:
        FO_POST_ADDED
        FO_POST_SUBMIT

    cdef struct FoDeadline:
        int64_t due
        int32_t node
        uint32_t word

    cdef cppclass FoDeadlines:
        const uint32_t* state
        int64_t push(int64_t due, int32_t node, uint32_t word, uint64_t* seq)
        int64_t pop_due(int64_t now, uint64_t seq, vector[FoDeadline]& out, uint64_t* next_seq)
        void clear()
        size_t size()

    cdef cppclass FoEvent:
        void set()
        void clear()
        int is_set()
        int wait(long timeout_ms)

from flow_orchestrator.errors import (
    InvalidTransitionError,
    NodeCancelledError,
    NodeTimeoutError,
    RetryRequested,
)

import weakref

# Node flags, one byte a node in CompiledWorkflow.
cdef enum:
    FLAG_TAKES_CONTEXT = 1
    FLAG_HAS_TIMEOUT = 2
    FLAG_CONTINUE_ON_ERROR = 4
    FLAG_BRANCH = 8             # its output names the successors to take (_joins.pxi)
    FLAG_MAP = 16               # runs one item per element of a dependency's output (_maps.pxi)

# Counters of a run, atomically updated.
cdef enum:
    C_TERMINAL = 0      # nodes in a terminal status
    C_RUNNING = 1       # nodes RUNNING, plus workers between "running += 1" and their CAS
    C_ABORTED = 2       # 2 once the run stops starting nodes; 1: only all_done nodes start (_joins.pxi)
    C_FINISHED = 3      # 1 once the run is over (all terminal); set by one thread
    C_ATTACHED = 4      # threads that may still touch this arena (driver + helpers)
    C_HELPERS = 5       # helper workers submitted and not yet exited
    C_STUCK = 6         # workers still inside an attempt that timed out
    C_FAILURES = 7      # nodes FAILED or TIMED_OUT
    C_ON_BOARD = 8      # 1 while the run is posted on its engine's Crew (guarded by the board)
    NUM_COUNTERS = 9


@cython.final
cdef class CompiledWorkflow:
    """A workflow prepared for execution: actions, per-node flags and limits in C arrays.

    Immutable and shared by every run of the workflow; it also keeps the pool of
    finished run arenas for reuse.
    """

    cdef object _workflow_ref           # weak: an engine's cache must not keep it alive
    cdef readonly Py_ssize_t num_nodes
    cdef readonly bint has_timeouts
    cdef CSRGraph graph
    cdef tuple actions
    cdef readonly list labels
    cdef cnp.ndarray _flags, _indegree, _roots, _max_attempts, _timeouts, _option_index
    cdef const uint8_t* flags
    cdef const int32_t* indegree
    cdef const int32_t* max_attempts   # per option-table entry
    cdef const double* timeouts        # per option-table entry, 0.0: none
    cdef const uint32_t* option_index  # per node
    cdef object retry_delay            # callable(option slot, retry number) -> seconds
    cdef cnp.ndarray _triggers
    cdef const uint8_t* triggers       # per node, a status.Trigger (_joins.pxi)
    cdef readonly bint has_joins       # some trigger is not all_success, or some node branches
    cdef readonly bint has_all_done    # some trigger is all_done: fail-fast aborts softly
    cdef object _branch_names          # {branch node: its successors' names, in CSR order}
    #: ``{map node: (id of the node it maps over, max items at once or 0)}`` (_maps.pxi).
    cdef public dict maps
    cdef list _pool
    cdef cython.pymutex _pool_lock
    # ``(action, call plan, middleware)`` per node, for executors that ship attempts
    # elsewhere: built on first use from what compile left here (thread and serial runs
    # never make these per-node tuples).
    cdef list _external
    cdef tuple _external_source
    cdef cython.pymutex _external_lock
    cdef object __weakref__

    def __cinit__(self, workflow, CSRGraph graph, tuple actions, flags, option_index,
                  max_attempts, timeouts, retry_delay, triggers=None):
        self._workflow_ref = weakref.ref(workflow)
        self.graph = graph
        self.num_nodes = graph.num_nodes
        if len(actions) != self.num_nodes:
            raise ValueError("one action per node is required")
        self.actions = actions
        self.labels = list(graph.labels) if graph.labels is not None else [str(i) for i in range(self.num_nodes)]
        self._flags = np.ascontiguousarray(flags, dtype=np.uint8)
        self._option_index = np.ascontiguousarray(option_index, dtype=np.uint32)
        self._max_attempts = np.ascontiguousarray(max_attempts, dtype=np.int32)
        self._timeouts = np.ascontiguousarray(timeouts, dtype=np.float64)
        if self._flags.shape[0] != self.num_nodes or self._option_index.shape[0] != self.num_nodes:
            raise ValueError("flags and option_index need one entry per node")
        if self.num_nodes and int(self._option_index.max()) >= self._max_attempts.shape[0]:
            raise ValueError("option_index out of range of the option tables")
        # Both from what building the graph already knows: the in-degrees by one count
        # over the edges, the roots a prefix of the topological order.  The predecessor
        # CSR is not needed to run (only NodeContext.inputs reads it, building it once).
        self._indegree = graph._in_degrees()
        self._roots = graph.roots()
        self.flags = <const uint8_t*>cnp.PyArray_DATA(self._flags)
        self.indegree = <const int32_t*>cnp.PyArray_DATA(self._indegree)
        self.option_index = <const uint32_t*>cnp.PyArray_DATA(self._option_index)
        self.max_attempts = <const int32_t*>cnp.PyArray_DATA(self._max_attempts)
        self.timeouts = <const double*>cnp.PyArray_DATA(self._timeouts)
        self.has_timeouts = bool((self._flags & FLAG_HAS_TIMEOUT).any())
        self.retry_delay = retry_delay
        self._pool = []
        _compile_joins(self, triggers)
        self.maps = {}

    @property
    def workflow(self):
        """The workflow this was compiled from (``None`` once it was garbage collected)."""
        return self._workflow_ref()

    def defer_external_actions(self, actions, plans, middleware, group):
        """What :attr:`external_actions` is made of, on first use:
        ``(actions[i], plans[i], middleware[group[i]])`` for each node ``i``."""
        if len(actions) != self.num_nodes:
            raise ValueError("one action per node is required")
        with self._external_lock:
            self._external = None
            self._external_source = (actions, plans, middleware, group)

    @property
    def external_actions(self):
        """``(action, call plan, middleware)`` per node, what executors that run attempts
        in other processes ship; made on first use (a tuple per distinct triple, one per
        node with one action per node), then kept."""
        with self._external_lock:
            if self._external is None:
                if self._external_source is None:
                    raise ValueError("this compiled workflow has no external actions")
                self._external = node_triples(*self._external_source)
                self._external_source = None
            return self._external

    cdef RunCore acquire(self):
        cdef RunCore core = None
        with self._pool_lock:
            if self._pool:
                core = self._pool.pop()
        if core is None:
            core = RunCore.__new__(RunCore, self)
        return core

    cdef void recycle(self, RunCore core):
        # Arenas of huge workflows are not kept: they would pin a lot of memory.
        if self.num_nodes > 200_000:
            return
        with self._pool_lock:
            if len(self._pool) < 4:
                self._pool.append(core)

    def pool_size(self):
        """Number of finished run arenas kept for reuse."""
        with self._pool_lock:
            return len(self._pool)


@cython.final
@cython.freelist(32)
cdef class NodeContext:
    """What an action receives: its node, the run's data, its dependencies' outputs,
    a cancellation token, its deadline and its attempt number.

    A context is only valid during the call it was made for: the engine reuses them.
    """

    cdef RunCore _core
    cdef int32_t _node
    cdef uint32_t _word
    cdef double _deadline
    cdef object _map               # None, or the MapRun of the item (_maps.pxi)
    cdef int32_t _item             # the item's index in its map, -1 for a node

    @property
    def item(self):
        """For an item of a map node, its index (its element's position); else ``None``."""
        return self._item if self._map is not None else None

    @property
    def element(self):
        """For an item of a map node, its element (what its action receives first)."""
        return _context_element(self)

    @property
    def node(self):
        """The node's name."""
        return self._core.wf.labels[self._node]

    @property
    def node_id(self):
        """The node's id in its workflow."""
        return self._node

    @property
    def attempt(self):
        """1 for the first attempt, 2 for the first retry, ..."""
        return _attempt_of(self._word)

    @property
    def deadline(self):
        """``time.monotonic()`` value at which this attempt times out, or ``None``."""
        return self._deadline if self._deadline > 0 else None

    def remaining(self):
        """Seconds left before the deadline (``None`` without a timeout)."""
        if self._deadline <= 0:
            return None
        return max(0.0, self._deadline - fo_now_ns() / 1e9)

    @property
    def data(self):
        """The run's shared :class:`~flow_orchestrator.data.WorkflowData`."""
        return self._core.data

    @property
    def run_id(self):
        """The id of the run."""
        return self._core.run_id

    @property
    def workflow(self):
        """The :class:`~flow_orchestrator.workflow.Workflow` being run."""
        return self._core.wf.workflow

    @property
    def inputs(self):
        """``{dependency name: its output}`` for every dependency of this node."""
        cdef CSRGraph g = self._core.wf.graph
        cdef list labels = self._core.wf.labels
        cdef list outputs = self._core.outputs
        cdef int64_t k
        g._ensure_preds()  # built on the first call that needs it, once per graph
        return {labels[g.pred_idx[k]]: outputs[g.pred_idx[k]]
                for k in range(g.pred_ptr[self._node], g.pred_ptr[self._node + 1])}

    def input(self, name):
        """The output of the dependency called ``name``."""
        inputs = self.inputs
        if name not in inputs:
            raise UnknownNodeError(f"node {self.node!r} has no dependency {name!r}")
        return inputs[name]

    @property
    def cancelled(self):
        """True once the run is cancelled or aborted, or this attempt timed out."""
        return _context_cancelled(self)

    def raise_if_cancelled(self):
        """Raise :class:`NodeCancelledError` if :attr:`cancelled`."""
        if _context_cancelled(self):
            raise NodeCancelledError(f"node {self.node!r} (attempt {self.attempt}) was cancelled")

    def wait(self, seconds):
        """Sleep up to ``seconds``, waking early on cancellation; True if cancelled."""
        cdef double until = fo_now_ns() / 1e9 + seconds
        cdef double left
        cdef FoEvent* over = self._core.over
        cdef long slice_ms
        while not _context_cancelled(self):
            left = until - fo_now_ns() / 1e9
            if left <= 0:
                return False
            slice_ms = <long>(min(left, 0.02) * 1000) + 1
            with nogil:
                over.wait(slice_ms)
        return True

    def __repr__(self):
        return f"<NodeContext node={self.node!r} attempt={self.attempt}>"


cdef class Crew


@cython.final
cdef class RunCore:
    """The state of one run (see the design notes above).  Driven by the engine."""

    cdef CompiledWorkflow wf
    cdef Py_ssize_t n
    cdef cnp.ndarray _state, _remaining, _start, _end, _ready
    cdef uint32_t* state
    cdef int32_t* remaining
    cdef int64_t* start_ns
    cdef int64_t* end_ns
    cdef int64_t* ready_ns          # when each node last became ready (metrics only)
    cdef cnp.ndarray _seen, _why
    cdef uint8_t* seen              # what each node saw of its dependencies (SEEN_* bits)
    cdef uint8_t* why               # why each SKIPPED node was (SKIP_*)
    cdef dict maps                  # None, or {map node: its MapRun} (_maps.pxi)
    cdef dict restored_items        # None, or {map node: items a resume restores} (_maps.pxi)
    cdef NodeMetrics metrics        # None: no metrics (the hot path tests one pointer)
    cdef object events              # None, or the observers' dispatcher
    cdef object checkpoint          # None, or the run's checkpointer (see begin_run)
    cdef int64_t counters[NUM_COUNTERS]
    cdef FoReadyQueue* queue
    cdef FoEvent* over
    cdef readonly list outputs
    cdef readonly dict errors
    cdef readonly object data
    cdef readonly object run_id
    cdef readonly int64_t t0_ns
    cdef readonly int64_t t1_ns
    cdef readonly uint64_t generation
    cdef object timer              # schedule(due_monotonic, fn, *args) -> handle; cancel(handle); or None
    cdef Crew crew                 # the engine's helpers, or None (serial, other executors)
    cdef FoDeadlines* deadlines    # attempt deadlines of this run (timeouts only)
    cdef object _arm_handle        # the timer entry armed for the earliest deadline, or None
    cdef uint64_t _armed_seq
    cdef int max_helpers
    cdef bint run_continues_on_error
    cdef readonly object interrupt  # KeyboardInterrupt/SystemExit raised by an action
    cdef readonly object cancel_reason
    cdef bint restored
    cdef bint fresh                # zeroed by the allocator, not run yet: no memset needed
    cdef object __weakref__

    def __cinit__(self, CompiledWorkflow wf):
        self.wf = wf
        self.n = wf.num_nodes
        # np.zeros is calloc: fresh pages are zero without being written, so a first run
        # touches only what it uses; _reset() clears them only for a reused arena.
        # ready_ns exists only for runs with metrics (allocated by the first such run).
        self._state = np.zeros(self.n, dtype=np.uint32)
        self._remaining = np.empty(self.n, dtype=np.int32)
        self._start = np.zeros(self.n, dtype=np.int64)
        self._end = np.zeros(self.n, dtype=np.int64)
        self._ready = None
        self.ready_ns = NULL
        self.fresh = True
        self.state = <uint32_t*>cnp.PyArray_DATA(self._state)
        self.remaining = <int32_t*>cnp.PyArray_DATA(self._remaining)
        self.start_ns = <int64_t*>cnp.PyArray_DATA(self._start)
        self.end_ns = <int64_t*>cnp.PyArray_DATA(self._end)
        self._seen = np.zeros(self.n, dtype=np.uint8)
        self._why = np.zeros(self.n, dtype=np.uint8)
        self.seen = <uint8_t*>cnp.PyArray_DATA(self._seen)
        self.why = <uint8_t*>cnp.PyArray_DATA(self._why)
        self.queue = new FoReadyQueue()
        self.over = new FoEvent()
        self.deadlines = new FoDeadlines()
        self.deadlines.state = self.state
        self.generation = 0

    def __dealloc__(self):
        del self.queue
        del self.over
        del self.deadlines

    # -- lifecycle -----------------------------------------------------------------

    cdef void _reset(self) noexcept:
        cdef Py_ssize_t i
        if not self.fresh:
            memset(self.state, 0, self.n * sizeof(uint32_t))
            memset(self.start_ns, 0, self.n * sizeof(int64_t))
            memset(self.end_ns, 0, self.n * sizeof(int64_t))
            memset(self.why, 0, self.n)
            if self.wf.has_joins:
                memset(self.seen, 0, self.n)
        self.fresh = False
        memcpy(self.remaining, self.wf.indegree, self.n * sizeof(int32_t))
        for i in range(NUM_COUNTERS):
            self.counters[i] = 0
        self.queue.reset()
        self.over.clear()
        self.deadlines.clear()
        self.generation += 1

    cdef int _prepare(self, data, run_id, timer, Crew crew, int max_helpers,
                      bint continue_on_error, NodeMetrics metrics, events, checkpoint) except -1:
        if self.crew is not None:
            self.crew._remove(self)  # a late post of the arena's previous run
        self._reset()
        if metrics is not None and metrics.num_nodes != self.n:
            raise ValueError("metrics were made for another workflow")
        if metrics is not None and self._ready is None:
            self._ready = np.zeros(self.n, dtype=np.int64)
            self.ready_ns = <int64_t*>cnp.PyArray_DATA(self._ready)
        self.metrics = metrics
        self.events = events
        self.checkpoint = checkpoint
        self.outputs = [None] * self.n
        self.errors = {}
        self.data = data
        self.run_id = run_id
        self.timer = timer
        self.crew = crew
        self._arm_handle = None
        self._armed_seq = 0
        self.max_helpers = max_helpers
        self.run_continues_on_error = continue_on_error
        self.interrupt = None
        self.cancel_reason = None
        self.restored = False
        self.maps = None
        self.restored_items = None
        fo_store_i64(&self.counters[C_ATTACHED], 1)  # the driver; last: helpers may join now
        self.t0_ns = fo_now_ns()
        self.t1_ns = 0
        return 0

    def restore(self, completed, list outputs, attempts):
        """Before :meth:`start`: resume, taking the nodes in ``completed`` as done.

        ``completed`` is a boolean array over node ids; those nodes become COMPLETED with
        their ``outputs`` and ``attempts`` (arrays over ids) and release their dependents,
        as if they had just run.  This is the run's initial state, not a transition, so
        it does not go through the transition table.  Every other node runs.
        """
        cdef cnp.ndarray done_arr = np.ascontiguousarray(completed, dtype=np.uint8)
        cdef cnp.ndarray tries_arr = np.ascontiguousarray(attempts, dtype=np.int32)
        if done_arr.shape[0] != self.n or tries_arr.shape[0] != self.n or len(outputs) != self.n:
            raise ValueError("restore needs one entry per node")
        cdef const uint8_t* done = <const uint8_t*>cnp.PyArray_DATA(done_arr)
        cdef const int32_t* tries = <const int32_t*>cnp.PyArray_DATA(tries_arr)
        cdef const int64_t* sp = self.wf.graph.succ_ptr
        cdef const int32_t* si = self.wf.graph.succ_idx
        cdef Py_ssize_t v
        cdef int64_t k, restored = 0
        if self.wf.has_joins:
            self.counters[C_TERMINAL] = _join_restore(self, done, tries, outputs)
            self.restored = True
            return
        for v in range(self.n):
            if done[v]:
                self.state[v] = _word(ST_COMPLETED, <uint32_t>max(tries[v], 1))
                self.outputs[v] = outputs[v]
                for k in range(sp[v], sp[v + 1]):
                    self.remaining[si[k]] -= 1
                restored += 1
        self.restored = True
        self.counters[C_TERMINAL] = restored

    def start(self, bint driver_works=False):
        """Queue the ready nodes (the roots, or after :meth:`restore` every pending node
        whose dependencies completed).  Called once by the driver; ``driver_works``: it
        calls :meth:`work` next, so one ready node needs no helper."""
        cdef cnp.ndarray roots = self.wf._roots
        cdef Py_ssize_t i, v
        cdef int64_t now
        if self.restored:
            if self.counters[C_TERMINAL] == self.n:
                self._finish()
                return
            roots = np.flatnonzero((self._remaining == 0)
                                   & ((self._state & 0xFF) == ST_PENDING)).astype(np.int32)
        if self.metrics is not None:
            now = fo_now_ns()
            for i in range(roots.shape[0]):
                self.ready_ns[(<const int32_t*>cnp.PyArray_DATA(roots))[i]] = now
        self.queue.push(<const int32_t*>cnp.PyArray_DATA(roots), roots.shape[0])
        if roots.shape[0] > 1 or not driver_works:
            self._maybe_spawn()

    def detach(self):
        """The driver is done with this arena; the last thread to leave recycles it."""
        if self.crew is not None:
            self.crew._remove(self)
        self._detach()

    cdef void _detach(self) noexcept:
        if fo_add_fetch_i64(&self.counters[C_ATTACHED], -1) == 0:
            self.checkpoint = None  # a pooled arena must not keep a store alive
            self.wf.recycle(self)

    # -- status changes: the one place -------------------------------------------------

    cdef int _transition(self, int32_t node, uint32_t expected, uint32_t new_status,
                         uint32_t new_attempt) except -1:
        """CAS node from word ``expected`` to (new_status, new_attempt): 1 if we won, 0 if
        the word had already changed; InvalidTransitionError if the table forbids it."""
        cdef uint32_t old_status = _status_of(expected)
        if not _ALLOWED[old_status][new_status]:
            raise InvalidTransitionError(
                f"node {self.wf.labels[node]!r}: {old_status} -> {new_status} is not allowed")
        return fo_cas_u32(&self.state[node], expected, _word(new_status, new_attempt))

    # -- the worker loop ---------------------------------------------------------------

    def work(self, bint driver=False):
        """Run ready nodes until the run is over or aborted (the driver), or until nothing
        can start (a helper, which has claimed a helper slot and an attachment).

        The driver (the thread of ``Engine.run``) waits for work when the FIFO is empty,
        checks for Ctrl-C between waits and returns when the run is over.  A helper
        leaves as soon as the FIFO is empty, so that its thread can serve other runs; it
        is asked back (posted on the engine's :class:`Crew`) when work is queued again.
        """
        self._work(driver)

    cdef int _work(self, bint driver) except -1:
        cdef int32_t node = -1
        cdef int32_t got[1]
        cdef vector[int32_t] ready
        try:
            while True:
                if node < 0:
                    if fo_load_i64(&self.counters[C_ABORTED]) == 2 or fo_load_i64(&self.counters[C_FINISHED]):
                        break
                    if self.queue.pop(got, 1) == 0:
                        if not driver:
                            break  # nothing can start: leave the run
                        with nogil:
                            if self.queue.wait_pop(got, 1, 50) == 0:
                                got[0] = -1
                        PyErr_CheckSignals()
                        if got[0] < 0:
                            continue
                    node = got[0]
                node = self._run_node(node, ready)
        except BaseException as exc:
            # Ctrl-C, SystemExit from an action, or an internal error: stop the run.
            # The driver re-raises; a helper leaves it recorded for the driver.
            self._interrupted(exc)
            if driver:
                raise
        finally:
            if not driver:
                self._leave()
        return 0

    cdef void _leave(self) noexcept:
        """A helper leaves the run.  Work pushed while it was leaving saw it still counted
        (and asked for nobody): after giving up its slot it looks again (a Dekker
        handshake on C_HELPERS against the FIFO), and asks for a helper if needed."""
        fo_add_fetch_i64(&self.counters[C_HELPERS], -1)
        try:
            if self.queue.size():
                self._maybe_spawn()
        except BaseException as exc:
            self._interrupted(exc)
        self._detach()

    cdef int _help(self) except -1:
        """A helper of the engine's crew took this run off the board: join it if it is
        still going (attached, so that the arena is not recycled under us) and a helper
        slot is free, then work until nothing can start."""
        cdef int64_t attached, helpers
        while True:
            attached = fo_load_i64(&self.counters[C_ATTACHED])
            if attached <= 0:
                return 0  # over and recycled (or in the pool)
            if fo_cas_i64(&self.counters[C_ATTACHED], attached, attached + 1):
                break
        if fo_load_i64(&self.counters[C_FINISHED]) or fo_load_i64(&self.counters[C_ABORTED]):
            self._detach()
            return 0
        while True:
            helpers = fo_load_i64(&self.counters[C_HELPERS])
            if helpers >= self.max_helpers + fo_load_i64(&self.counters[C_STUCK]):
                self._detach()
                return 0
            if fo_cas_i64(&self.counters[C_HELPERS], helpers, helpers + 1):
                break
        if self.queue.size() > 1:
            self._maybe_spawn()  # more work than this helper: ask for another
        self._work(False)
        return 0

    cdef int32_t _run_node(self, int32_t node, vector[int32_t]& ready) except -2:
        """Run one attempt of ``node``; return a node to run next, or -1."""
        cdef uint32_t word = fo_load_u32(&self.state[node])
        cdef uint32_t attempt = _attempt_of(word) + 1
        cdef uint32_t running
        cdef uint8_t flags = self.wf.flags[node]
        cdef NodeContext ctx
        if flags & FLAG_MAP:
            return _map_work(self, node)  # expands the map, or works on its items
        fo_add_fetch_i64(&self.counters[C_RUNNING], 1)
        if self._stopped(node) or _status_of(word) != ST_PENDING \
                or not self._transition(node, word, ST_RUNNING, attempt):
            self._running_done()
            return -1
        running = _word(ST_RUNNING, attempt)
        fo_store_i64(&self.start_ns[node], fo_now_ns())
        if self.metrics is not None or self.events is not None:
            self._started(node, attempt)
        if flags & FLAG_HAS_TIMEOUT:
            self._arm_deadline(node, running)
        ctx = None
        if flags & FLAG_TAKES_CONTEXT:
            ctx = self._context(node, running)
        action = self.wf.actions[node]
        try:
            if flags & FLAG_TAKES_CONTEXT:
                result = action(ctx)
            else:
                result = action()
        except BaseException as exc:
            self._attempt_failed(node, running, exc, fo_now_ns())
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return -1
        return self._attempt_succeeded(node, running, result, ready, fo_now_ns())

    cdef NodeContext _context(self, int32_t node, uint32_t word):
        cdef NodeContext ctx = NodeContext.__new__(NodeContext)
        cdef double timeout = self.wf.timeouts[self.wf.option_index[node]]
        ctx._core = self
        ctx._node = node
        ctx._word = word
        ctx._map = None
        ctx._deadline = 0.0
        if timeout > 0:
            ctx._deadline = self.start_ns[node] / 1e9 + timeout
        return ctx

    # -- deadlines: one heap per run in C, one timer entry per run ----------------------

    cdef int _arm_deadline(self, int32_t node, uint32_t running) except -1:
        """Record the deadline of the attempt ``running`` of ``node`` (just started).

        No Python work unless it is now the run's earliest deadline: then the run's one
        timer entry is moved to it.  The entry becomes inert as soon as the attempt ends
        (the node's word moves on) and is reclaimed by the heap's lazy compaction.
        """
        cdef double timeout = self.wf.timeouts[self.wf.option_index[node]]
        cdef uint64_t seq = 0
        cdef int64_t due
        if timeout <= 0 or self.timer is None:
            return 0
        due = self.deadlines.push(self.start_ns[node] + <int64_t>(timeout * 1e9), node, running, &seq)
        if due:
            self._arm(due, seq)
        return 0

    cdef int _arm(self, int64_t due, uint64_t seq) except -1:
        """Schedule the run's timer entry for ``due`` (arm number ``seq``); cancel the one
        it replaces.  The highest ``seq`` is the current arm, whatever order threads race
        in here: it is always at or before the earliest live deadline."""
        handle = self.timer.schedule(due / 1e9, self.deadlines_due, seq, self.generation)
        with cython.critical_section(self):
            if seq > self._armed_seq:
                old = self._arm_handle
                self._arm_handle = handle
                self._armed_seq = seq
            else:
                old = handle
        if old is not None:
            self.timer.cancel(old)
        return 0

    cdef void _disarm(self) noexcept:
        """The run is over: forget its deadlines and cancel its timer entry."""
        self.deadlines.clear()
        if self._arm_handle is None:
            return
        try:
            with cython.critical_section(self):
                handle = self._arm_handle
                self._arm_handle = None
            if handle is not None:
                self.timer.cancel(handle)
        except BaseException:
            pass  # the entry then fires later as a no-op

    def deadlines_due(self, uint64_t seq, uint64_t generation):
        """Timer callback (the run's one entry): time out the attempts whose deadline
        passed, and re-arm for the next one."""
        cdef vector[FoDeadline] due
        cdef uint64_t next_seq = 0
        cdef int64_t next_due
        cdef size_t i
        if generation != self.generation or fo_load_i64(&self.counters[C_FINISHED]):
            return
        # 1 us of slack: the timer sleeps on float seconds of the same clock.
        next_due = self.deadlines.pop_due(fo_now_ns() + 1000, seq, due, &next_seq)
        if next_due:
            self._arm(next_due, next_seq)
        for i in range(due.size()):
            self.on_deadline(due[i].node, due[i].word, generation)

    @property
    def pending_deadlines(self):
        """Deadline entries held by this run (live and not yet reclaimed)."""
        return self.deadlines.size()

    cdef int32_t _attempt_succeeded(self, int32_t node, uint32_t running, object result,
                                    vector[int32_t]& ready, int64_t end) except -2:
        cdef object payload = None
        cdef object interrupt = None
        cdef object taken = None
        if self.wf.flags[node] & FLAG_BRANCH:
            try:
                taken = _branch_taken(self, node, result)
            except Exception as exc:
                self._attempt_failed(node, running, exc, end)
                return -1
        if self.checkpoint is not None:
            # Serialized before the node counts as completed: an output that cannot be
            # saved fails its node (naming it) instead of being lost at the next save.
            try:
                payload = self.checkpoint.encode(node, result)
            except Exception as exc:
                self._attempt_failed(node, running, exc, end)
                return -1
        if not self._transition(node, running, ST_COMPLETED, _attempt_of(running)):
            # The attempt timed out meanwhile: its late result and end time are dropped,
            # without touching what the current attempt or run recorded.
            fo_add_fetch_i64(&self.counters[C_STUCK], -1)
            return -1
        # Stored after the CAS, before the dependents are released: they only read it
        # once their counter (a sequentially consistent RMW after this) reaches zero.
        fo_store_i64(&self.end_ns[node], end)
        self.outputs[node] = result
        if self.metrics is not None or self.events is not None:
            self._succeeded(node, _attempt_of(running))
        if self.checkpoint is not None:
            # Under the strict policy this returns once the completion is durable, so
            # no dependent can start before it (the dependents are released below).
            interrupt = self._checkpoint_call(node, _attempt_of(running), ST_COMPLETED, payload)
        ready.clear()
        cdef int64_t skipped = (_join_notify(self, node, SEEN_COMPLETED, taken, ready) if self.wf.has_joins
                                else self._release_successors(node, ready))
        cdef int32_t next_node = self._dispatch(ready)
        self._running_done()
        self._count_terminal(1 + skipped)
        if interrupt is not None:
            raise interrupt
        return next_node

    cdef object _checkpoint_call(self, int32_t node, uint32_t attempt, int status, object value):
        """Hand a terminal node to the checkpointer; return a Ctrl-C/SystemExit to re-raise.

        The checkpointer reports its own store failures by cancelling the run; anything
        it raises here cancels the run too, after which the caller's bookkeeping goes on
        (a node's dependents must still be released or skipped for the run to end).
        """
        cdef int64_t t0 = self.t0_ns
        cdef int64_t a = fo_load_i64(&self.start_ns[node])
        cdef int64_t b = fo_load_i64(&self.end_ns[node])
        try:
            self.checkpoint.node_ended(node, status, attempt, (a - t0) / 1e9 if a else NAN,
                                       (b - t0) / 1e9 if b else NAN, value)
        except (KeyboardInterrupt, SystemExit) as interrupt:
            self._interrupted(interrupt)
            return interrupt
        except BaseException as failure:
            self.cancel(f"checkpoint failed: {type(failure).__name__}: {failure}")
        return None

    cdef int64_t _release_successors(self, int32_t node, vector[int32_t]& ready) except -1:
        cdef const int64_t* sp = self.wf.graph.succ_ptr
        cdef const int32_t* si = self.wf.graph.succ_idx
        cdef int64_t k
        cdef int32_t w
        cdef int64_t now = fo_now_ns() if self.metrics is not None else 0
        for k in range(sp[node], sp[node + 1]):
            w = si[k]
            if fo_sub_fetch_i32(&self.remaining[w], 1) == 0:
                if now:
                    self.ready_ns[w] = now
                ready.push_back(w)
        return 0

    # -- observer and metric events (only when enabled) ------------------------------------

    cdef int _started(self, int32_t node, uint32_t attempt) except -1:
        if self.metrics is not None:
            self.metrics.count(node, M_STARTED)
            if self.ready_ns[node]:
                self.metrics.wait(node, self.start_ns[node] - self.ready_ns[node])
        if self.events is not None:
            self.events.node_start(node, attempt)
        return 0

    cdef int _succeeded(self, int32_t node, uint32_t attempt) except -1:
        cdef int64_t ns = self.end_ns[node] - self.start_ns[node]
        if self.metrics is not None:
            self.metrics.count(node, M_COMPLETED)
            self.metrics.duration(node, ns)
        if self.events is not None:
            self.events.node_success(node, attempt, ns / 1e9)
        return 0

    cdef int _retrying(self, int32_t node, uint32_t attempt, object exc, double delay) except -1:
        if self.metrics is not None:
            self.metrics.count(node, M_RETRIED)
            self.metrics.duration(node, self.end_ns[node] - self.start_ns[node])
        if self.events is not None:
            self.events.node_retry(node, attempt, exc, delay)
        return 0

    cdef int _ended_event(self, int32_t node, uint32_t attempt, int status, object exc) except -1:
        if self.metrics is not None:
            self.metrics.count(node, M_FAILED if status == ST_FAILED else
                               M_TIMED_OUT if status == ST_TIMED_OUT else M_CANCELLED)
            if self.start_ns[node]:
                self.metrics.duration(node, self.end_ns[node] - self.start_ns[node])
        if self.events is not None:
            if status == ST_FAILED:
                self.events.node_failure(node, attempt, exc)
            elif status == ST_TIMED_OUT:
                self.events.node_timeout(node, attempt)
            else:
                self.events.node_cancel(node, attempt)
        return 0

    cdef int32_t _dispatch(self, vector[int32_t]& ready) except -2:
        """Keep one newly ready node for this worker; share the rest."""
        if ready.size() == 0:
            return -1
        if ready.size() > 1:
            self.queue.push(&ready[1], ready.size() - 1)
            self._maybe_spawn()
        return ready[0]

    cdef int _maybe_spawn(self) except -1:
        """Queued work and nobody idle to take it: ask the engine's crew for a helper
        (the run is posted once; a helper takes it when a pool thread is free), or
        start a dedicated thread to replace one stuck in an abandoned attempt."""
        cdef int64_t helpers, stuck
        if self.crew is None:
            return 0
        while True:
            if fo_load_i64(&self.counters[C_FINISHED]) or fo_load_i64(&self.counters[C_ABORTED]):
                return 0
            # Cheap atomic checks first: once every helper runs this costs no lock.
            helpers = fo_load_i64(&self.counters[C_HELPERS])
            stuck = fo_load_i64(&self.counters[C_STUCK])
            if helpers >= self.max_helpers + stuck:
                return 0
            if helpers < self.max_helpers and fo_load_i64(&self.counters[C_ON_BOARD]):
                return 0  # already asked
            if self.queue.size() == 0 or self.queue.idle_workers() > 0:
                return 0
            if helpers < self.max_helpers:
                try:
                    self.crew._post(self)
                except BaseException as exc:
                    # No pool to run on (e.g. the engine was closed): stop the run with
                    # that error rather than leave work that nobody may ever take.
                    self.crew._remove(self)
                    self._interrupted(exc)
                return 0
            # Beyond max_helpers we replace threads stuck in abandoned attempts: those
            # need a thread of their own, the pool's are all taken.
            if fo_cas_i64(&self.counters[C_HELPERS], helpers, helpers + 1):
                fo_add_fetch_i64(&self.counters[C_ATTACHED], 1)
                try:
                    self.crew.dedicated(self)
                except BaseException as exc:
                    fo_add_fetch_i64(&self.counters[C_HELPERS], -1)
                    self._detach()
                    self._interrupted(exc)
                    return 0

    cdef void _running_done(self) noexcept:
        if fo_add_fetch_i64(&self.counters[C_RUNNING], -1) == 0 and fo_load_i64(&self.counters[C_ABORTED]):
            self._sweep()

    cdef void _count_terminal(self, int64_t k) noexcept:
        if fo_add_fetch_i64(&self.counters[C_TERMINAL], k) == self.n:
            self._finish()

    cdef void _finish(self) noexcept:
        if fo_cas_i64(&self.counters[C_FINISHED], 0, 1):
            self.t1_ns = fo_now_ns()
            if self.crew is not None:
                self.crew._remove(self)
            if self.timer is not None:
                self._disarm()
            self.over.set()
            self.queue.wake()

    # -- failures ------------------------------------------------------------------------

    cdef int _attempt_failed(self, int32_t node, uint32_t running, object exc, int64_t end) except -1:
        cdef uint32_t attempt = _attempt_of(running)
        cdef uint32_t slot = self.wf.option_index[node]
        cdef int final_status = ST_FAILED
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            final_status = ST_CANCELLED
            self._interrupted(exc)
        elif isinstance(exc, NodeCancelledError):
            final_status = ST_CANCELLED
        elif not self._stopped(node) and (
                isinstance(exc, RetryRequested) or <int32_t>attempt < self.wf.max_attempts[slot]):
            if self._transition(node, running, ST_PENDING, attempt):
                fo_store_i64(&self.end_ns[node], end)
                delay = exc.delay if isinstance(exc, RetryRequested) else self.wf.retry_delay(slot, attempt)
                if self.metrics is not None or self.events is not None:
                    self._retrying(node, attempt, exc, delay)
                self._schedule_retry(node, attempt, delay)
                self._running_done()
            else:
                fo_add_fetch_i64(&self.counters[C_STUCK], -1)
            return 0
        if isinstance(exc, RetryRequested):
            # The run was aborted while a retry was asked for: report the real error.
            exc = exc.__cause__ if exc.__cause__ is not None else exc
        if not self._transition(node, running, final_status, attempt):
            fo_add_fetch_i64(&self.counters[C_STUCK], -1)
            return 0
        fo_store_i64(&self.end_ns[node], end)
        self.errors[node] = exc
        if self.metrics is not None or self.events is not None:
            self._ended_event(node, attempt, final_status, exc)
        interrupt = None
        if self.checkpoint is not None:
            interrupt = self._checkpoint_call(node, attempt, final_status, exc)
        self._ended_badly(node, final_status)
        self._running_done()
        if interrupt is not None:
            raise interrupt
        return 0

    cdef int _ended_badly(self, int32_t node, int status) except -1:
        """Bookkeeping after ``node`` became FAILED, TIMED_OUT or CANCELLED (we won its CAS)."""
        if status != ST_CANCELLED:
            fo_add_fetch_i64(&self.counters[C_FAILURES], 1)
        elif self.cancel_reason is None:
            reason = f"node {self.wf.labels[node]!r} was cancelled"
            with cython.critical_section(self):
                if self.cancel_reason is None:
                    self.cancel_reason = reason
        cdef int64_t skipped = self._skip_descendants(node)
        # A cancelled node aborts the run like a failure does; an interrupt (Ctrl-C,
        # SystemExit) already aborted it in _interrupted().
        if not (self.run_continues_on_error or self.wf.flags[node] & FLAG_CONTINUE_ON_ERROR):
            self._abort(False)
        self._count_terminal(1 + skipped)
        return 0

    cdef int64_t _skip_descendants(self, int32_t node) except -1:
        cdef const int64_t* sp = self.wf.graph.succ_ptr
        cdef const int32_t* si = self.wf.graph.succ_idx
        cdef vector[int32_t] todo
        cdef int64_t k, skipped = 0
        cdef int32_t u, w
        cdef uint32_t word
        if self.wf.has_joins:
            return _join_failed(self, node)
        todo.push_back(node)
        while todo.size():
            u = todo.back()
            todo.pop_back()
            for k in range(sp[u], sp[u + 1]):
                w = si[k]
                word = fo_load_u32(&self.state[w])
                if _status_of(word) == ST_PENDING and self._transition(w, word, ST_SKIPPED, _attempt_of(word)):
                    self.why[w] = SKIP_DEPENDENCY_FAILED
                    skipped += 1
                    todo.push_back(w)
                    if self.metrics is not None:
                        self.metrics.count(w, M_SKIPPED)
                    if self.events is not None:
                        self.events.node_skip(w)
        return skipped

    cdef void _abort(self, bint hard=True) noexcept:
        # Soft (1) lets all_done nodes still start: only fail-fast with such nodes.
        cdef int64_t level = 2 if hard or not self.wf.has_all_done else 1
        if fo_cas_i64(&self.counters[C_ABORTED], 0, level) or (
                level == 2 and fo_cas_i64(&self.counters[C_ABORTED], 1, 2)):
            self.queue.wake()
            if fo_load_i64(&self.counters[C_RUNNING]) == 0:
                self._sweep()

    cdef void _sweep(self) noexcept:
        """After an abort, once nothing runs: every PENDING node becomes CANCELLED."""
        cdef Py_ssize_t v
        cdef int64_t cancelled = 0
        cdef uint32_t word
        if fo_load_i64(&self.counters[C_FINISHED]):
            return
        if self.maps:
            _maps_sweep(self)
        if fo_load_i64(&self.counters[C_ABORTED]) == 1:
            _join_soft_sweep(self)
            return
        # PENDING -> CANCELLED is in the table; this loop is noexcept, so it does the
        # CAS directly rather than through _transition().
        for v in range(self.n):
            word = fo_load_u32(&self.state[v])
            if _status_of(word) == ST_PENDING and fo_cas_u32(&self.state[v], word, _word(ST_CANCELLED, _attempt_of(word))):
                cancelled += 1
                if self.metrics is not None:
                    self.metrics.count(v, M_CANCELLED)
                if self.events is not None:
                    self.events.node_cancel(v, _attempt_of(word))
        self._count_terminal(cancelled)
        if fo_load_i64(&self.counters[C_TERMINAL]) >= self.n:
            self._finish()

    cdef int _schedule_retry(self, int32_t node, uint32_t attempt, double delay) except -1:
        if delay <= 0 or self.timer is None:
            self.retry_due(node, _word(ST_PENDING, attempt), self.generation)
        else:
            self.timer.schedule(fo_now_ns() / 1e9 + delay, self.retry_due, node,
                                _word(ST_PENDING, attempt), self.generation)
        return 0

    def retry_due(self, int32_t node, uint32_t word, uint64_t generation):
        """Timer callback: put a node whose retry delay has passed back in the queue."""
        if generation != self.generation or fo_load_i64(&self.counters[C_FINISHED]):
            return
        if fo_load_u32(&self.state[node]) != word:
            return
        if self.metrics is not None:
            self.ready_ns[node] = fo_now_ns()
        self.queue.push(&node, 1)
        self._maybe_spawn()

    def on_deadline(self, int32_t node, uint32_t running, uint64_t generation):
        """Timer callback: the attempt ``running`` of ``node`` reached its deadline."""
        cdef uint32_t attempt = _attempt_of(running)
        cdef uint32_t slot = self.wf.option_index[node]
        if generation != self.generation or fo_load_u32(&self.state[node]) != running:
            return
        timeout = self.wf.timeouts[slot]
        exc = NodeTimeoutError(
            f"node {self.wf.labels[node]!r} attempt {attempt} timed out after {timeout:g} s")
        cdef int64_t end = fo_now_ns()
        if <int32_t>attempt < self.wf.max_attempts[slot] and not self._stopped(node):
            if not self._transition(node, running, ST_PENDING, attempt):
                return
            fo_store_i64(&self.end_ns[node], end)
            fo_add_fetch_i64(&self.counters[C_STUCK], 1)
            delay = self.wf.retry_delay(slot, attempt)
            if self.metrics is not None or self.events is not None:
                self._retrying(node, attempt, exc, delay)
            self._schedule_retry(node, attempt, delay)
        else:
            if not self._transition(node, running, ST_TIMED_OUT, attempt):
                return
            fo_store_i64(&self.end_ns[node], end)
            fo_add_fetch_i64(&self.counters[C_STUCK], 1)
            self.errors[node] = exc
            if self.metrics is not None or self.events is not None:
                self._ended_event(node, attempt, ST_TIMED_OUT, exc)
            if self.checkpoint is not None:
                self._checkpoint_call(node, attempt, ST_TIMED_OUT, exc)
            self._ended_badly(node, ST_TIMED_OUT)
        self._running_done()
        self._maybe_spawn()

    cdef bint _attempt_cancelled(self, int32_t node, uint32_t word) noexcept:
        return self._stopped(node) or fo_load_u32(&self.state[node]) != word

    cdef inline bint _stopped(self, int32_t node) noexcept:
        """Whether ``node`` may not start now: the run was aborted (softly: unless it is
        an all_done node, see _joins.pxi)."""
        cdef int64_t aborted = fo_load_i64(&self.counters[C_ABORTED])
        return aborted != 0 and (aborted == 2 or self.wf.triggers[node] != TRIG_ALL_DONE)

    # -- control from the engine ---------------------------------------------------------

    def cancel(self, reason="cancelled", generation=None):
        """Stop starting nodes; running ones finish; pending ones end CANCELLED.

        With ``generation``, only if this arena still serves that run (it is reused).
        """
        if generation is not None and (generation != self.generation
                                       or fo_load_i64(&self.counters[C_FINISHED])):
            return
        with cython.critical_section(self):
            if self.cancel_reason is None:
                self.cancel_reason = reason
        self._abort()

    cdef void _interrupted(self, exc) noexcept:
        # A critical section: several threads may record at once on free-threaded builds.
        reason = f"interrupted by {type(exc).__name__}"
        with cython.critical_section(self):
            if self.interrupt is None:
                self.interrupt = exc
            if self.cancel_reason is None:
                self.cancel_reason = reason
        self._abort()

    def wait(self, double timeout=-1.0, bint check_signals=True):
        """Block until the run is over (True) or ``timeout`` seconds passed (False).

        Waits in slices with the GIL released, checking for Ctrl-C between them.
        """
        cdef double until = fo_now_ns() / 1e9 + timeout
        cdef int done = 0
        if fo_load_i64(&self.counters[C_FINISHED]):
            return True  # keep the GIL: releasing it would hand it to a waiting thread
        while True:
            with nogil:
                done = self.over.wait(50)
            if done:
                return True
            if check_signals:
                PyErr_CheckSignals()
            if timeout >= 0 and fo_now_ns() / 1e9 >= until:
                return False

    @property
    def nbytes(self):
        """Bytes of run state: the per-node arrays, the outputs list and the ready FIFO
        (outputs themselves excluded)."""
        import sys
        return (self._state.nbytes + self._remaining.nbytes + self._start.nbytes + self._end.nbytes
                + (self._ready.nbytes if self._ready is not None else 0) + (sys.getsizeof(self.outputs) if self.outputs is not None else 0)
                + self.queue.capacity_bytes())

    @property
    def is_over(self):
        """Whether every node reached a terminal status."""
        return fo_load_i64(&self.counters[C_FINISHED]) != 0

    @property
    def aborted(self):
        """Whether the run stopped starting nodes (fail-fast, cancel, interrupt)."""
        return fo_load_i64(&self.counters[C_ABORTED]) != 0

    @property
    def accepting(self):
        """Whether nodes may still start (not over, not stopped; after a fail-fast abort
        all_done nodes still do)."""
        return (not fo_load_i64(&self.counters[C_FINISHED])
                and fo_load_i64(&self.counters[C_ABORTED]) != 2)

    def map_items(self, int32_t node):
        """``(statuses, attempts, started, ended, outputs, errors)`` of the items of map
        node ``node`` (times in seconds since the run started), or ``None`` if it never
        expanded."""
        return _map_items_of(self, node)

    def branch_skipped(self):
        """How many nodes were SKIPPED because a branch did not take them."""
        return int(np.count_nonzero(self._why == SKIP_BRANCH_NOT_TAKEN))

    def skip_reasons(self):
        """A snapshot of why each SKIPPED node was (``uint8`` :class:`SkipReason` values)."""
        return self._why.copy()

    @property
    def failures(self):
        """Number of nodes FAILED or TIMED_OUT so far."""
        return fo_load_i64(&self.counters[C_FAILURES])

    def statuses(self):
        """A snapshot of every node's status (``uint8``), safe while the run goes on."""
        out = np.empty(self.n, dtype=np.uint8)
        cdef uint8_t[::1] view = out
        cdef Py_ssize_t v
        for v in range(self.n):
            view[v] = _status_of(fo_load_u32(&self.state[v]))
        return out

    def attempts(self):
        """A snapshot of every node's attempt count (``int32``)."""
        out = np.empty(self.n, dtype=np.int32)
        cdef int32_t[::1] view = out
        cdef Py_ssize_t v
        for v in range(self.n):
            view[v] = _attempt_of(fo_load_u32(&self.state[v]))
        return out

    def outcome(self):
        """``(completed, snapshot)``: how many nodes completed, and the per-node state as
        one ``bytes``: ``start_ns`` then ``end_ns`` (``int64``, 0: unset), then the
        status words (``uint32``, status in the low byte, attempt above).  One copy and
        no array: a :class:`RunResult` decodes it only if its arrays are read."""
        cdef Py_ssize_t n = self.n, v
        cdef int64_t completed = 0
        cdef uint32_t word
        blob = PyBytes_FromStringAndSize(NULL, n * 20)
        cdef char* buf = PyBytes_AS_STRING(blob)
        cdef int64_t* starts = <int64_t*>buf
        cdef int64_t* ends = <int64_t*>(buf + n * 8)
        cdef uint32_t* words = <uint32_t*>(buf + n * 16)
        for v in range(n):
            word = fo_load_u32(&self.state[v])
            words[v] = word
            completed += _status_of(word) == ST_COMPLETED
            starts[v] = fo_load_i64(&self.start_ns[v])
            ends[v] = fo_load_i64(&self.end_ns[v])
        return completed, blob

    def times(self):
        """``(started, ended)`` float64 seconds since the run started; NaN where unset."""
        started = np.empty(self.n, dtype=np.float64)
        ended = np.empty(self.n, dtype=np.float64)
        cdef double[::1] s = started
        cdef double[::1] e = ended
        cdef Py_ssize_t v
        cdef int64_t t0 = self.t0_ns, a, b
        for v in range(self.n):
            a = fo_load_i64(&self.start_ns[v])
            b = fo_load_i64(&self.end_ns[v])
            s[v] = (a - t0) / 1e9 if a else NAN
            e[v] = (b - t0) / 1e9 if b else NAN
        return started, ended

    # -- for executors that are not thread pools: one attempt at a time, from Python -------

    def pop_ready(self, double timeout):
        """A ready node id, waiting up to ``timeout`` seconds; -1 if none."""
        cdef int32_t got[1]
        cdef long ms = <long>(timeout * 1000)
        if self.queue.pop(got, 1):
            return got[0]
        with nogil:
            if self.queue.wait_pop(got, 1, ms) == 0:
                got[0] = -1
        return got[0]

    def begin_attempt(self, int32_t node):
        """Claim ``node`` for an attempt run elsewhere: its running word, or 0.

        A claimed attempt keeps the arena attached (not recycled for another run) until
        :meth:`finish_attempt`, so a late result can never land in a later run.
        """
        cdef uint32_t word = fo_load_u32(&self.state[node])
        fo_add_fetch_i64(&self.counters[C_RUNNING], 1)
        if self._stopped(node) or _status_of(word) != ST_PENDING \
                or not self._transition(node, word, ST_RUNNING, _attempt_of(word) + 1):
            self._running_done()
            return 0
        fo_add_fetch_i64(&self.counters[C_ATTACHED], 1)
        fo_store_i64(&self.start_ns[node], fo_now_ns())
        word = _word(ST_RUNNING, _attempt_of(word) + 1)
        if self.metrics is not None or self.events is not None:
            self._started(node, _attempt_of(word))
        if self.wf.flags[node] & FLAG_HAS_TIMEOUT:
            self._arm_deadline(node, word)
        return word

    def finish_attempt(self, int32_t node, uint32_t running, bint ok, object value):
        """Record the outcome of an attempt claimed with :meth:`begin_attempt`."""
        cdef vector[int32_t] ready
        cdef int32_t next_node
        try:
            if not ok:
                self._attempt_failed(node, running, value, fo_now_ns())
                return
            next_node = self._attempt_succeeded(node, running, value, ready, fo_now_ns())
            if next_node >= 0:
                self.queue.push(&next_node, 1)
        finally:
            self._detach()

    def external_context(self, int32_t node, uint32_t running):
        """A picklable snapshot context for an attempt run in another process."""
        cdef double timeout = self.wf.timeouts[self.wf.option_index[node]]
        deadline = self.start_ns[node] / 1e9 + timeout if timeout > 0 else None
        cdef NodeContext ctx = NodeContext.__new__(NodeContext)
        ctx._core = self
        ctx._node = node
        ctx._word = running
        ctx._map = None
        ctx._deadline = deadline or 0.0
        return ctx.inputs, self.wf.labels[node], _attempt_of(running), deadline


@cython.final
cdef class Crew:
    """The helper threads of one engine, shared by all its runs.

    A run that has queued work and no idle worker posts itself here (once); helper
    tasks take posted runs, work in each until nothing can start, and move on.  At most
    ``capacity`` helper tasks exist at once (queued on the pool or running), and a
    queued task holds no run, so back-to-back tiny runs cannot pile up tasks: a run that
    ends before a helper reaches it just takes itself off the board.  A task with
    nothing posted for ``linger`` seconds returns its thread to the pool.

    ``start()`` must submit one call of :meth:`serve` to the pool (``HelperStarter``);
    ``dedicated(core)`` must run ``core.work(False)`` on a new thread of its own
    (``DedicatedStarter``): it replaces a thread stuck in a timed-out attempt.
    """

    cdef FoBoard* board
    cdef object start
    cdef readonly object dedicated
    cdef long linger_ms

    def __cinit__(self, int capacity, start, dedicated, double linger=0.01):
        if capacity < 1:
            raise ValueError("a crew needs a capacity of at least 1")
        self.board = new FoBoard()
        self.board.capacity = capacity
        self.start = start
        self.dedicated = dedicated
        self.linger_ms = max(<long>(linger * 1000), 0)

    def __dealloc__(self):
        cdef void* p
        if self.board != NULL:
            p = self.board.take()
            while p != NULL:
                Py_DECREF(<object>p)
                p = self.board.take()
            del self.board

    cdef int _post(self, RunCore core) except -1:
        Py_INCREF(core)  # the board's reference, dropped when the post is taken or removed
        cdef int posted = self.board.post(<void*>core, &core.counters[C_ON_BOARD])
        if not (posted & FO_POST_ADDED):
            Py_DECREF(core)
            return 0
        if posted & FO_POST_SUBMIT:
            try:
                self.start()
            except BaseException:
                self.board.submit_failed()
                raise
        return 0

    cdef void _remove(self, RunCore core) noexcept:
        if self.board.remove(<void*>core, &core.counters[C_ON_BOARD]):
            Py_DECREF(core)

    def serve(self):
        """A helper task: help posted runs one after another; return (and stop counting
        as a helper) once nothing was posted for ``linger`` seconds or the crew closed."""
        cdef void* p
        cdef RunCore core
        cdef int more
        try:
            while True:
                p = self.board.take()
                if p != NULL:
                    core = <RunCore>p
                    Py_DECREF(core)  # the board's reference; ``core`` holds its own
                    core._help()
                    core = None
                    continue
                with nogil:
                    more = self.board.wait(self.linger_ms)
                if not more and self.board.retire():
                    return
        except BaseException:
            self.board.submit_failed()  # this task no longer counts
            raise

    def close(self):
        """Helpers waiting for work return now; nothing can be posted any more."""
        self.board.close()

    @property
    def posted(self):
        """Runs waiting for a helper."""
        return self.board.size()

    @property
    def helpers(self):
        """Helper tasks submitted and not returned (queued on the pool or running)."""
        return self.board.helpers()


def begin_run(CompiledWorkflow wf, data, run_id, timer, Crew crew, int max_helpers,
              bint continue_on_error, NodeMetrics metrics=None, events=None, checkpoint=None):
    """A reset arena from ``wf``'s pool (or a new one), ready for :meth:`RunCore.start`.

    ``metrics`` (a :class:`NodeMetrics` of this workflow) and ``events`` (an object with
    ``node_start(id, attempt)``, ``node_success(id, attempt, seconds)``,
    ``node_failure(id, attempt, exc)``, ``node_retry(id, attempt, exc, delay)``,
    ``node_skip(id)``, ``node_cancel(id, attempt)``, ``node_timeout(id, attempt)``) are
    optional; without them the scheduler pays one pointer test per event.  The objects
    passed here are typed by the Protocols of ``_ext.pyi`` (``CallbackTimer``,
    ``NodeEventSink``, ``CheckpointWriter``); ``crew`` is the engine's :class:`Crew`
    (``None``: no helper threads).

    ``checkpoint`` (optional) persists terminal nodes: ``encode(id, output) -> bytes``
    runs before a node may complete (raising fails the attempt);
    ``node_ended(id, status, attempt, started, ended, value)`` runs after the node
    completed (``value``: the encoded output), failed, timed out or was cancelled by its
    action (``value``: the exception), and before its dependents are released or
    skipped, so a strict checkpointer that returns once the record is durable keeps
    every dependent from starting before it.  Times are seconds since the run started
    (NaN: unset).
    """
    cdef RunCore core = wf.acquire()
    core._prepare(data, run_id, timer, crew, max_helpers, continue_on_error, metrics, events, checkpoint)
    return core
