# Incremental topological sorting, the core of flow_orchestrator.graphlib.  Included by _ext.pyx.

from cpython.dict cimport PyDict_GetItemWithError
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.stdint cimport INT32_MAX
from libcpp.vector cimport vector

# A node's counter holds its number of predecessors not yet done, then one of these,
# exactly as the standard library's ``_NodeInfo.npredecessors`` does.
cdef enum:
    _NODE_OUT = -1   # returned by get_ready(), not yet done()
    _NODE_DONE = -2  # done()


cdef class TopologicalSorterCore:
    """The compiled state machine behind :class:`flow_orchestrator.graphlib.TopologicalSorter`.

    Nodes are interned to ``int32`` ids in first-seen order; edges are kept as two
    growable id arrays until :meth:`prepare` turns them into a successor CSR.  From
    then on every method works on C arrays: one counter a node, one FIFO of ready ids.

    Not final, so that the public class, and users' classes, can derive from it.  The
    methods mutating the state run in a critical section on the sorter, so concurrent
    use of one sorter under free-threaded CPython cannot corrupt its buffers.
    """

    cdef dict _ids                  # node -> id
    cdef list _nodes                # id -> node, the first-seen object
    cdef vector[int32_t] _npred     # per id: predecessors not yet done, or a sentinel
    cdef vector[int32_t] _edge_pred, _edge_node  # edges as added, freed by prepare()
    cdef vector[int64_t] _succ_ptr  # successor CSR, built by prepare()
    cdef vector[int32_t] _succ_idx
    # Ready ids: queue[head:tail] are ready, not yet returned by get_ready().  Every node
    # enters at most once, so n slots suffice and the buffer never moves after prepare().
    cdef vector[int32_t] _queue
    cdef Py_ssize_t _head, _tail, _npassedout, _nfinished
    cdef bint _prepared
    # Stand-ins.  The standard library hands a node back as the object add() was given
    # for it as *node* in the call that made the edge releasing it, and that object may
    # be equal to, yet not be, the first-seen one (1.0 for 1, an equal str).  Such an
    # object is kept in _aliases, and the edges it made carry its index (-1: none).
    # Tracked only from the first stand-in on, so most graphs pay nothing for it.
    cdef list _aliases
    cdef bint _aliased
    cdef vector[int32_t] _edge_alias, _succ_alias, _queue_alias

    def __cinit__(self):
        self._ids = {}
        self._nodes = []
        self._aliases = []

    def __init__(self, graph=None):
        if graph is not None:
            with cython.critical_section(self):
                self._add_graph(graph)

    @cython.final
    cdef int _add_graph(self, object graph) except -1:
        for node, predecessors in graph.items():
            # The standard library unpacks them with *predecessors: same iteration, once.
            if type(predecessors) is not tuple and type(predecessors) is not list:
                predecessors = tuple(predecessors)
            self._add(node, predecessors)
        return 0

    def add(self, node, *predecessors):
        """Add a new node and its predecessors to the graph.

        Both the *node* and all elements in *predecessors* must be hashable.

        If called multiple times with the same node argument, the set of dependencies
        will be the union of all dependencies passed in.

        It is possible to add a node with no dependencies (*predecessors* is not
        provided) as well as provide a dependency twice. If a node that has not been
        provided before is included among *predecessors* it will be automatically added
        to the graph with no predecessors of its own.

        Raises ValueError if called after "prepare".
        """
        with cython.critical_section(self):
            self._add(node, predecessors)

    @cython.final
    cdef int _add(self, object node, object predecessors) except -1:
        # Same steps, in the same order, as the standard library: a TypeError on an
        # unhashable predecessor leaves the same partial state behind.
        if self._prepared:
            raise SorterStateError("Nodes cannot be added after a call to prepare()")
        cdef int32_t v = self._intern(node)
        cdef Py_ssize_t count = len(predecessors)
        if count > INT32_MAX - self._npred[v]:
            raise GraphTooLargeError(f"node {node!r} has more than 2**31-1 predecessors")
        self._npred[v] += <int32_t>count
        # Without edges, this call's object can never be handed back.
        cdef int32_t alias = self._alias(v, node) if count else -1
        for pred in predecessors:
            self._edge_pred.push_back(self._intern(pred))
            self._edge_node.push_back(v)
            if self._aliased:
                self._edge_alias.push_back(alias)
        return 0

    @cython.final
    cdef inline int32_t _alias(self, int32_t v, object node) except -2:
        """-1 if ``node`` is the first-seen object of ``v``, else its index in _aliases."""
        if self._nodes[v] is node:
            return -1
        if not self._aliased:
            self._edge_alias.resize(self._edge_pred.size(), -1)
            self._aliased = True
        self._aliases.append(node)
        return <int32_t>(len(self._aliases) - 1)

    @cython.final
    cdef inline int32_t _intern(self, object node) except -1:
        cdef PyObject* found = PyDict_GetItemWithError(self._ids, node)
        if found is not NULL:
            return <int32_t><object>found
        cdef Py_ssize_t n = self._npred.size()
        if n >= INT32_MAX:
            raise GraphTooLargeError("more than 2**31-1 nodes")
        self._ids[node] = n
        # After the insertion, which may run the node's __eq__: the list and the
        # counters grow together, so every id stays a valid index into both.
        self._nodes.append(node)
        self._npred.push_back(0)
        return <int32_t>n

    def prepare(self):
        """Mark the graph as finished and check for cycles in the graph.

        If any cycle is detected, "CycleError" will be raised, but "get_ready" can
        still be used to obtain as many nodes as possible until cycles block more
        progress. After a call to this function, the graph cannot be modified and
        therefore no more nodes can be added using "add".
        """
        self._prepare()

    @cython.final
    cdef int _prepare(self) except -1:
        cdef list cycle
        with cython.critical_section(self):
            self._freeze()
            cycle = self._find_cycle()
        if cycle is not None:
            raise SorterCycleError("nodes are in a cycle", cycle)
        return 0

    @cython.final
    cdef int _freeze(self) except -1:
        if self._prepared:
            raise SorterStateError("cannot prepare() more than once")
        self._build_successors()
        self._queue_roots()
        self._prepared = True
        return 0

    @cython.final
    cdef int _build_successors(self) except -1:
        cdef Py_ssize_t n = self._npred.size(), m = self._edge_pred.size()
        self._succ_ptr.resize(n + 1, 0)
        self._succ_idx.resize(m)
        if self._aliased:
            self._succ_alias.resize(m)
        _stable_csr(n, m, self._edge_pred.data(), self._edge_node.data(), _or_null(self._edge_alias),
                    self._succ_ptr.data(), self._succ_idx.data(), _or_null(self._succ_alias))
        # The edge list is dead weight from here on.
        vector[int32_t]().swap(self._edge_pred)
        vector[int32_t]().swap(self._edge_node)
        vector[int32_t]().swap(self._edge_alias)
        return 0

    @cython.final
    cdef int _queue_roots(self) except -1:
        """Queue the nodes without predecessors, in id order: the standard library's
        first batch lists them in insertion order."""
        cdef Py_ssize_t n = self._npred.size(), v, tail = 0
        self._queue.resize(n)
        if self._aliased:
            self._queue_alias.resize(n, -1)  # a root is handed back as first seen
        cdef int32_t* queue = self._queue.data()
        cdef const int32_t* npred = self._npred.data()
        for v in range(n):
            if npred[v] == 0:
                queue[tail] = <int32_t>v
                tail += 1
        self._head = 0
        self._tail = tail
        return 0

    @cython.final
    cdef list _find_cycle(self):
        """The standard library's cycle, or None.

        The depth-first search that reproduces it only runs when a Kahn pass, on a
        copy of the counters, cannot reach every node.  It still decides: a node whose
        add() failed half-way never becomes ready, yet is on no cycle.
        """
        cdef Py_ssize_t n = self._npred.size()
        cdef vector[int32_t] counters
        counters.assign(self._npred.begin(), self._npred.end())
        # The pass uses the queue past its tail as its own queue: the live protocol
        # writes a slot before it reads it, so what is left there is never seen.
        cdef Py_ssize_t reached = _kahn_pass(self._succ_ptr.data(), self._succ_idx.data(),
                                             counters.data(), self._queue.data(), self._tail)
        if reached == n:
            return None
        cdef vector[int32_t] aliases
        cdef vector[int32_t] cycle = _dfs_cycle(n, self._succ_ptr.data(), self._succ_idx.data(),
                                                _or_null(self._succ_alias), &aliases)
        if cycle.empty():
            return None
        return [self._object(cycle[i], aliases[i]) for i in range(<Py_ssize_t>cycle.size())]

    @cython.final
    cdef inline object _object(self, int32_t v, int32_t alias):
        """The object standing for node ``v``: a stand-in, or the first-seen one."""
        return self._aliases[alias] if alias >= 0 else self._nodes[v]

    def get_ready(self):
        """Return a tuple of all the nodes that are ready.

        Initially it returns all nodes with no predecessors; once those are marked as
        processed by calling "done", further calls will return all new nodes that have
        all their predecessors already processed. Once no more progress can be made,
        empty tuples are returned.

        Raises ValueError if called without calling "prepare" previously.
        """
        self._check_prepared()
        with cython.critical_section(self):
            return self._pass_out()

    @cython.final
    cdef tuple _pass_out(self):
        cdef Py_ssize_t start = self._head, count = self._tail - start, i
        cdef int32_t v
        cdef tuple batch = PyTuple_New(count)
        for i in range(count):
            v = self._queue[start + i]
            self._npred[v] = _NODE_OUT
            node = self._object(v, self._queue_alias[start + i] if self._aliased else -1)
            Py_INCREF(node)  # PyTuple_SET_ITEM steals a reference
            PyTuple_SET_ITEM(batch, i, node)
        self._head = self._tail
        self._npassedout += count
        return batch

    def is_active(self):
        """Return ``True`` if more progress can be made and ``False`` otherwise.

        Progress can be made if cycles do not block the resolution and either there
        are still nodes ready that haven't yet been returned by "get_ready" or the
        number of nodes marked "done" is less than the number that have been returned
        by "get_ready".

        Raises ValueError if called without calling "prepare" previously.
        """
        self._check_prepared()
        return self._is_active()

    def __bool__(self):
        """``self.is_active()``: raises ValueError before "prepare"."""
        self._check_prepared()
        return self._is_active()

    @cython.final
    cdef inline bint _is_active(self) noexcept:
        return self._nfinished < self._npassedout or self._head < self._tail

    @cython.final
    cdef inline int _check_prepared(self) except -1:
        if not self._prepared:
            raise SorterStateError("prepare() must be called first")
        return 0

    def done(self, *nodes):
        """Marks a set of nodes returned by "get_ready" as processed.

        This method unblocks any successor of each node in *nodes* for being returned
        in the future by a call to "get_ready".

        Raises ValueError if any node in *nodes* has already been marked as processed
        by a previous call to this method, if a node was not added to the graph by
        using "add" or if called without calling "prepare" previously or if node has
        not yet been returned by "get_ready".  The nodes before the offending one stay
        marked as processed.
        """
        self._check_prepared()
        cdef PyObject* found
        with cython.critical_section(self):
            for node in nodes:
                found = PyDict_GetItemWithError(self._ids, node)
                if found is NULL:
                    raise SorterStateError(f"node {node!r} was not added using add()")
                self._done(<int32_t><object>found, node)

    @cython.final
    cdef inline int _done(self, int32_t v, object node) except -1:
        """Mark ``v`` done and queue the successors it unblocks; ``node`` is the object
        the caller named it by, for the error message."""
        cdef int32_t status = self._npred[v]
        if status != _NODE_OUT:
            if status >= 0:
                raise SorterStateError(f"node {node!r} was not passed out (still not ready)")
            raise SorterStateError(f"node {node!r} was already marked done")
        self._npred[v] = _NODE_DONE
        self._tail = _release(v, self._succ_ptr.data(), self._succ_idx.data(), _or_null(self._succ_alias),
                              self._npred.data(), self._queue.data(), _or_null(self._queue_alias),
                              self._tail)
        self._nfinished += 1
        return 0

    @cython.final
    cdef int _done_batch(self, Py_ssize_t start, tuple batch) except -1:
        """done(*batch) for a batch this sorter passed out from queue slot ``start`` on."""
        cdef Py_ssize_t i
        for i in range(len(batch)):
            self._done(self._queue[start + i], batch[i])
        return 0

    def static_order(self):
        """Returns an iterable of nodes in a topological order.

        The particular order that is returned may depend on the specific order in
        which the items were inserted in the graph.

        Using this method does not require to call "prepare" or "done". If any cycle is
        detected, :exc:`CycleError` will be raised.
        """
        # A generator, as the standard library's, so that prepare() (and a CycleError)
        # happens on the first next().  Batch by batch as well: code that calls other
        # methods between two next() sees the same state as with the standard library.
        cdef Py_ssize_t start
        cdef tuple batch
        self._prepare()
        while self._is_active():
            with cython.critical_section(self):
                start = self._head
                batch = self._pass_out()
            yield from batch
            with cython.critical_section(self):
                # The queue never moves after prepare(), so these slots still hold
                # the batch, whatever was called between two next().
                self._done_batch(start, batch)


cdef inline int32_t* _or_null(vector[int32_t]& values) noexcept nogil:
    # An empty vector's data() need not be NULL; the loops test tags against NULL.
    if values.empty():
        return NULL
    return values.data()


cdef void _stable_csr(Py_ssize_t n, Py_ssize_t m, const int32_t* src, const int32_t* dst,
                      const int32_t* tag, int64_t* ptr, int32_t* idx, int32_t* tag_out) noexcept nogil:
    """Group the edges ``src[e] -> dst[e]`` by source into ``ptr`` (n+1 zeros on entry)
    and ``idx``, by a stable counting sort: each source keeps its edges' order.  Unless
    ``tag`` is NULL, the edges' tags follow them into ``tag_out``."""
    cdef Py_ssize_t e, v
    cdef int64_t running = 0, count
    for e in range(m):
        ptr[src[e] + 1] += 1
    for v in range(n):
        count = ptr[v + 1]
        ptr[v] = running
        running += count
    # ptr[v] is v's write cursor; afterwards it is where v+1 starts, and one shift to
    # the right restores the offsets.
    for e in range(m):
        idx[ptr[src[e]]] = dst[e]
        if tag != NULL:
            tag_out[ptr[src[e]]] = tag[e]
        ptr[src[e]] += 1
    for v in range(n, 0, -1):
        ptr[v] = ptr[v - 1]
    ptr[0] = 0


cdef inline Py_ssize_t _release(int32_t u, const int64_t* ptr, const int32_t* idx,
                                const int32_t* alias, int32_t* counters, int32_t* queue,
                                int32_t* queue_alias, Py_ssize_t tail) noexcept nogil:
    """Count ``u`` out of each successor's counter, queueing the ones that reach zero,
    in successor order; returns the new tail.  Unless ``alias`` is NULL, a queued node
    carries the stand-in of the edge that released it."""
    cdef int64_t k
    cdef int32_t w
    for k in range(ptr[u], ptr[u + 1]):
        w = idx[k]
        counters[w] -= 1
        if counters[w] == 0:
            queue[tail] = w
            if alias != NULL:
                queue_alias[tail] = alias[k]
            tail += 1
    return tail


cdef Py_ssize_t _kahn_pass(const int64_t* ptr, const int32_t* idx, int32_t* counters,
                           int32_t* queue, Py_ssize_t tail) noexcept nogil:
    """Kahn's algorithm from the ready ids ``queue[:tail]``; returns how many nodes it
    reached (all of them unless a cycle blocks some)."""
    cdef Py_ssize_t head = 0
    while head < tail:
        tail = _release(queue[head], ptr, idx, NULL, counters, queue, NULL, tail)
        head += 1
    return tail


cdef vector[int32_t] _dfs_cycle(Py_ssize_t n, const int64_t* ptr, const int32_t* idx,
                               const int32_t* alias, vector[int32_t]* cycle_alias):
    """The standard library's ``TopologicalSorter._find_cycle``, over ids.

    The same iterative depth-first search: start nodes in id (insertion) order,
    successors in CSR (insertion) order, so the same cycle comes out: the stack from
    the repeated node on, then that node again.  Empty if the graph is acyclic.  Each
    entry's stand-in (that of the edge it was reached by, -1 for a start node or when
    ``alias`` is NULL) goes to ``cycle_alias``.
    """
    cdef vector[uint8_t] seen
    cdef vector[int32_t] stack_pos  # node -> index in stack, -1 when not on it
    cdef vector[int32_t] stack
    cdef vector[int32_t] stack_alias
    cdef vector[int64_t] cursor     # per stack entry: its next successor's slot in idx
    cdef vector[int32_t] cycle
    cdef Py_ssize_t start, top
    cdef int32_t node, node_alias
    cdef bint advanced
    seen.resize(n, 0)
    stack_pos.resize(n, -1)
    for start in range(n):
        if seen[start]:
            continue
        node = <int32_t>start
        node_alias = -1
        while True:
            if not seen[node]:
                seen[node] = 1
                cursor.push_back(ptr[node])
                stack_pos[node] = <int32_t>stack.size()
                stack.push_back(node)
                stack_alias.push_back(node_alias)
            elif stack_pos[node] >= 0:
                cycle.assign(stack.begin() + stack_pos[node], stack.end())
                cycle.push_back(node)
                cycle_alias.assign(stack_alias.begin() + stack_pos[node], stack_alias.end())
                cycle_alias.push_back(node_alias)
                return cycle
            # Backtrack to the topmost stack entry with another successor.
            advanced = False
            while not stack.empty():
                top = stack.size() - 1
                if cursor[top] < ptr[stack[top] + 1]:
                    node = idx[cursor[top]]
                    node_alias = alias[cursor[top]] if alias != NULL else -1
                    cursor[top] += 1
                    advanced = True
                    break
                stack_pos[stack.back()] = -1
                stack.pop_back()
                stack_alias.pop_back()
                cursor.pop_back()
            if not advanced:
                break
    return cycle
