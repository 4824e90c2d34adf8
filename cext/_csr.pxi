# The immutable CSR graph: build, validate, order, levels, reachability.  Included by _ext.pyx.

cdef inline object _readonly(cnp.ndarray arr):
    arr.flags.writeable = False
    return arr


cdef object _edge_array(object values, str what):
    """A user's edge endpoint array as an int32 ndarray, or an EdgeArrayError.

    int32 input is returned as is (its range is checked in the counting pass); any other
    integer dtype is range-checked here, before the cast could wrap a value around.
    """
    try:
        arr = np.asarray(values)
    except Exception as exc:
        raise EdgeArrayError(f"{what}: cannot be read as an array ({exc})") from None
    if arr.ndim != 1:
        raise EdgeArrayError(f"{what}: expected a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=np.int32)
    if arr.dtype.kind not in "iu":
        raise EdgeArrayError(f"{what}: node ids must have an integer dtype, got {arr.dtype}")
    if arr.dtype != np.int32:
        lo = arr.min()
        hi = arr.max()
        if lo < 0:
            raise EdgeArrayError(f"{what}: negative node id {int(lo)}")
        if hi > 0x7FFFFFFF:
            raise EdgeArrayError(f"{what}: node id {int(hi)} does not fit in int32")
    return np.ascontiguousarray(arr, dtype=np.int32)


cdef str _node_label(object names, Py_ssize_t node_id):
    if names is not None:
        return repr(names[node_id])
    return str(node_id)


@cython.final
cdef class CSRGraph:
    """An immutable directed acyclic graph in compressed sparse row form.

    Build one with :meth:`from_edges`.  Construction validates the graph (id ranges,
    self-loops, cycles) and computes its topological order once; the predecessor arrays
    and levels are built on first use (under a lock), then read-only like the rest.  Instances are safe to share between
    threads.  An edge ``(u, v)`` means "``v`` depends on ``u``": ``u`` runs first.
    """

    cdef readonly Py_ssize_t num_nodes
    cdef readonly Py_ssize_t num_edges
    cdef int32_t num_levels
    cdef cnp.ndarray _succ_ptr, _succ_idx, _pred_ptr, _pred_idx, _order, _levels
    cdef object _labels
    cdef cython.pymutex _lazy_lock
    # Raw views of the arrays above, for the C loops of this module and the scheduler.
    cdef const int64_t* succ_ptr
    cdef const int32_t* succ_idx
    cdef const int64_t* pred_ptr
    cdef const int32_t* pred_idx
    cdef const int32_t* order_ptr
    cdef const int32_t* levels_ptr

    def __init__(self):
        raise TypeError("use CSRGraph.from_edges(num_nodes, sources, targets)")

    @staticmethod
    def from_edges(num_nodes, sources, targets, *, labels=None):
        """Build and validate a graph of ``num_nodes`` nodes from two edge arrays.

        ``sources[i] -> targets[i]`` is an edge: ``targets[i]`` depends on
        ``sources[i]``.  Arrays may have any integer dtype; ``labels`` (a sequence of
        names indexed by id) is only used to name nodes in error messages.  Parallel
        edges are kept (a dependency listed twice counts twice, as in
        :mod:`graphlib`).

        Raises :class:`EmptyGraphError`, :class:`EdgeArrayError`,
        :class:`SelfDependencyError` or :class:`CycleError`.
        """
        cdef Py_ssize_t n
        try:
            n = num_nodes
        except (TypeError, OverflowError):
            raise EdgeArrayError(f"num_nodes must be an int in [1, 2**31-1], got {num_nodes!r}") from None
        if n <= 0:
            raise EmptyGraphError(f"a graph needs at least one node, got num_nodes={num_nodes!r}")
        if n > 0x7FFFFFFF:
            raise GraphTooLargeError(f"num_nodes={n} exceeds 2**31-1")
        src = _edge_array(sources, "sources")
        dst = _edge_array(targets, "targets")
        if src.shape[0] != dst.shape[0]:
            raise EdgeArrayError(
                f"sources and targets differ in length ({src.shape[0]} != {dst.shape[0]})")
        if labels is not None and len(labels) != n:
            raise EdgeArrayError(f"labels has {len(labels)} entries for {n} nodes")
        cdef CSRGraph g = CSRGraph.__new__(CSRGraph)
        g._labels = labels
        g._build(n, src, dst)
        return g

    cdef int _build(self, Py_ssize_t n, cnp.ndarray src_arr, cnp.ndarray dst_arr) except -1:
        cdef Py_ssize_t num_edges = src_arr.shape[0]
        cdef const int32_t* src = <const int32_t*>cnp.PyArray_DATA(src_arr)
        cdef const int32_t* dst = <const int32_t*>cnp.PyArray_DATA(dst_arr)
        succ_ptr_arr = np.zeros(n + 1, dtype=np.int64)
        indeg_arr = np.zeros(n, dtype=np.int32)
        cdef int64_t* sp = <int64_t*>cnp.PyArray_DATA(succ_ptr_arr)
        cdef int32_t* indeg = <int32_t*>cnp.PyArray_DATA(indeg_arr)
        cdef Py_ssize_t e, v, bad_edge = -1
        cdef bint bad_is_loop = False
        cdef uint32_t un = <uint32_t>n
        cdef int32_t s, d
        cdef int64_t running, count

        # Pass 1: validate every edge, count out-degrees (shifted by one) and in-degrees.
        with nogil:
            for e in range(num_edges):
                s = src[e]
                d = dst[e]
                if <uint32_t>s >= un or <uint32_t>d >= un:
                    bad_edge = e
                    break
                if s == d:
                    bad_edge = e
                    bad_is_loop = True
                    break
                sp[s + 1] += 1
                indeg[d] += 1
        if bad_edge >= 0:
            s = src[bad_edge]
            d = dst[bad_edge]
            if bad_is_loop:
                raise SelfDependencyError(
                    f"node {_node_label(self._labels, s)} depends on itself (edge {bad_edge})")
            raise EdgeArrayError(
                f"edge {bad_edge} ({s} -> {d}) has a node id out of range [0, {n})")

        # Pass 2: a stable scatter, so each node's successors keep their input order.
        # sp[v] serves as v's write cursor; afterwards sp[v] is where v+1 starts, and
        # one shift to the right restores the offsets without a second cursor array.
        succ_idx_arr = np.empty(num_edges, dtype=np.int32)
        cdef int32_t* si = <int32_t*>cnp.PyArray_DATA(succ_idx_arr)
        with nogil:
            running = 0
            for v in range(n):
                count = sp[v + 1]
                sp[v] = running
                running += count
            for e in range(num_edges):
                s = src[e]
                si[sp[s]] = dst[e]
                sp[s] += 1
            for v in range(n, 0, -1):
                sp[v] = sp[v - 1]
            sp[0] = 0

        self.num_nodes = n
        self.num_edges = num_edges
        self._succ_ptr = _readonly(succ_ptr_arr)
        self._succ_idx = _readonly(succ_idx_arr)
        self.succ_ptr = sp
        self.succ_idx = si
        self._sort(indeg_arr)
        return 0

    cdef int _sort(self, cnp.ndarray indeg_arr) except -1:
        """Kahn's algorithm, consuming the in-degree counts: the order, or CycleError."""
        cdef Py_ssize_t n = self.num_nodes
        # One spare slot: the branch-free enqueue below writes before it decides.
        order_arr = np.empty(n + 1, dtype=np.int32)
        cdef int32_t* order = <int32_t*>cnp.PyArray_DATA(order_arr)
        cdef int32_t* indeg = <int32_t*>cnp.PyArray_DATA(indeg_arr)
        cdef const int64_t* sp = self.succ_ptr
        cdef const int32_t* si = self.succ_idx
        cdef Py_ssize_t head = 0, tail = 0, v
        cdef int64_t k, k_end
        cdef int32_t u, w
        with nogil:
            for v in range(n):
                order[tail] = <int32_t>v
                tail += (indeg[v] == 0)
            while head < tail:
                u = order[head]
                head += 1
                k_end = sp[u + 1]
                for k in range(sp[u], k_end):
                    w = si[k]
                    indeg[w] -= 1
                    order[tail] = w
                    tail += (indeg[w] == 0)
        if tail < n:
            cycle = self._find_cycle(indeg)
            raise CycleError(
                "the graph has a cycle: "
                + " -> ".join([_node_label(self._labels, c) for c in cycle])
                + " (each node depends on the one before it)",
                [self._label(c) for c in cycle],
            )
        order_arr = order_arr[:n]
        self._order = _readonly(order_arr)
        self.order_ptr = order
        return 0

    cdef list _find_cycle(self, const int32_t* indeg):
        """One cycle among the nodes Kahn's pass left behind (those with indeg > 0).

        Each of them has a predecessor that was also left behind; walk predecessors
        until a node repeats.  Returned in dependency order, first node repeated.
        """
        self._ensure_preds()
        cdef Py_ssize_t n = self.num_nodes, v, start = -1
        cdef int64_t k
        cdef const int64_t* pp = self.pred_ptr
        cdef const int32_t* pi = self.pred_idx
        for v in range(n):
            if indeg[v] > 0:
                start = v
                break
        position = np.full(n, -1, dtype=np.int64)
        cdef int64_t[::1] pos = position
        cdef list path = []
        cdef Py_ssize_t cur = start
        while pos[cur] < 0:
            pos[cur] = len(path)
            path.append(cur)
            for k in range(pp[cur], pp[cur + 1]):
                if indeg[pi[k]] > 0:
                    cur = pi[k]
                    break
        # path[j+1] -> path[j] are edges, and cur == path[i] -> path[-1].
        cdef list loop = path[pos[cur]:]
        loop.reverse()
        loop.insert(0, cur)
        return loop

    cdef int _ensure_preds(self) except -1:
        """Build the predecessor CSR from the successor CSR, once, on first use.

        Predecessors come out grouped by node and ascending by id.  Built under a
        lock, so that concurrent first uses build it once; afterwards it is read-only.
        """
        with self._lazy_lock:
            if self._pred_ptr is not None:
                return 0
            n = self.num_nodes
            pred_ptr_arr = np.zeros(n + 1, dtype=np.int64)
            pred_idx_arr = np.empty(self.num_edges, dtype=np.int32)
            self._fill_preds(pred_ptr_arr, pred_idx_arr)
            self._pred_idx = _readonly(pred_idx_arr)
            self.pred_idx = <const int32_t*>cnp.PyArray_DATA(pred_idx_arr)
            self.pred_ptr = <const int64_t*>cnp.PyArray_DATA(pred_ptr_arr)
            self._pred_ptr = _readonly(pred_ptr_arr)
        return 0

    cdef void _fill_preds(self, cnp.ndarray pred_ptr_arr, cnp.ndarray pred_idx_arr) noexcept:
        cdef int64_t* pp = <int64_t*>cnp.PyArray_DATA(pred_ptr_arr)
        cdef int32_t* pi = <int32_t*>cnp.PyArray_DATA(pred_idx_arr)
        cdef const int64_t* sp = self.succ_ptr
        cdef const int32_t* si = self.succ_idx
        cdef Py_ssize_t n = self.num_nodes, u
        cdef int64_t k, running = 0, count
        cdef int32_t w
        with nogil:
            for k in range(self.num_edges):
                pp[si[k] + 1] += 1
            for u in range(n):
                count = pp[u + 1]
                pp[u] = running
                running += count
            for u in range(n):
                for k in range(sp[u], sp[u + 1]):
                    w = si[k]
                    pi[pp[w]] = <int32_t>u
                    pp[w] += 1
            for u in range(n, 0, -1):
                pp[u] = pp[u - 1]
            pp[0] = 0

    cdef int _ensure_levels(self) except -1:
        """Each node's level (longest path from a root), once, on first use."""
        with self._lazy_lock:
            if self._levels is not None:
                return 0
            levels_arr = np.zeros(self.num_nodes, dtype=np.int32)
            self.num_levels = _fill_levels(self.num_nodes, self.order_ptr, self.succ_ptr,
                                           self.succ_idx, <int32_t*>cnp.PyArray_DATA(levels_arr))
            self.levels_ptr = <const int32_t*>cnp.PyArray_DATA(levels_arr)
            self._levels = _readonly(levels_arr)
        return 0

    cdef object _label(self, Py_ssize_t node_id):
        return self._labels[node_id] if self._labels is not None else node_id

    cdef Py_ssize_t _check_node(self, object node_id) except -1:
        cdef Py_ssize_t v
        try:
            v = node_id
        except (TypeError, OverflowError):
            raise UnknownNodeError(f"node ids are integers in [0, {self.num_nodes}), got {node_id!r}") from None
        if v < 0 or v >= self.num_nodes:
            raise UnknownNodeError(f"node id {node_id} is out of range [0, {self.num_nodes})")
        return v

    # -- read-only views ------------------------------------------------------------

    @property
    def succ_indptr(self):
        """``int64[num_nodes + 1]``: offsets of each node's successors in :attr:`succ_indices`."""
        return self._succ_ptr

    @property
    def succ_indices(self):
        """``int32[num_edges]``: successors, grouped by node, in input order."""
        return self._succ_idx

    @property
    def pred_indptr(self):
        """``int64[num_nodes + 1]``: offsets of each node's predecessors in :attr:`pred_indices`."""
        self._ensure_preds()
        return self._pred_ptr

    @property
    def pred_indices(self):
        """``int32[num_edges]``: predecessors, grouped by node, in input order."""
        self._ensure_preds()
        return self._pred_idx

    @property
    def labels(self):
        """The node labels given at build time, or ``None``."""
        return self._labels

    def topological_order(self):
        """Node ids in a topological order (Kahn's, FIFO: ties keep id order)."""
        return self._order

    def levels(self):
        """``int32`` level of each node: the longest path from any root to it."""
        self._ensure_levels()
        return self._levels

    def level_count(self):
        """Number of levels: one more than the longest path in the graph."""
        self._ensure_levels()
        return self.num_levels

    def generations(self):
        """Nodes grouped by level: a list of ``int32`` arrays, ids ascending in each."""
        self._ensure_levels()
        by_level = np.argsort(self._levels, kind="stable").astype(np.int32)
        counts = np.bincount(self._levels, minlength=self.num_levels)
        return [_readonly(part) for part in np.split(by_level, np.cumsum(counts)[:self.num_levels - 1])]

    def successors(self, node_id):
        """The successors (dependents) of one node, as a read-only ``int32`` view."""
        cdef Py_ssize_t v = self._check_node(node_id)
        return self._succ_idx[self.succ_ptr[v]:self.succ_ptr[v + 1]]

    def predecessors(self, node_id):
        """The predecessors (dependencies) of one node, as a read-only ``int32`` view."""
        cdef Py_ssize_t v = self._check_node(node_id)
        self._ensure_preds()
        return self._pred_idx[self.pred_ptr[v]:self.pred_ptr[v + 1]]

    def in_degree(self):
        """``int32`` number of dependencies of each node (parallel edges count)."""
        self._ensure_preds()
        return _readonly(np.diff(self._pred_ptr).astype(np.int32))

    def out_degree(self):
        """``int32`` number of dependents of each node (parallel edges count)."""
        return _readonly(np.diff(self._succ_ptr).astype(np.int32))

    def roots(self):
        """Ids of the nodes without dependencies, ascending."""
        self._ensure_preds()
        return _readonly(np.flatnonzero(np.diff(self._pred_ptr) == 0).astype(np.int32))

    def leaves(self):
        """Ids of the nodes without dependents, ascending."""
        return _readonly(np.flatnonzero(np.diff(self._succ_ptr) == 0).astype(np.int32))

    def edges(self):
        """``(sources, targets)`` int32 arrays, grouped by source; rebuilds this graph."""
        src = np.repeat(np.arange(self.num_nodes, dtype=np.int32), np.diff(self._succ_ptr))
        return _readonly(src), self._succ_idx

    def ancestors(self, node_ids, *, include_self=False):
        """Ids of every node some of ``node_ids`` depend on, directly or not; ascending."""
        self._ensure_preds()
        return self._reach(node_ids, self.pred_ptr, self.pred_idx, include_self)

    def descendants(self, node_ids, *, include_self=False):
        """Ids of every node depending on some of ``node_ids``, directly or not; ascending."""
        return self._reach(node_ids, self.succ_ptr, self.succ_idx, include_self)

    cdef object _reach(self, object node_ids, const int64_t* ptr, const int32_t* idx, bint include_self):
        cdef cnp.ndarray seeds_arr = _as_id_array(node_ids, self.num_nodes, "node_ids")
        cdef const int32_t* seeds = <const int32_t*>cnp.PyArray_DATA(seeds_arr)
        cdef Py_ssize_t num_seeds = seeds_arr.shape[0], n = self.num_nodes, i, head = 0, tail = 0
        mask_arr = np.zeros(n, dtype=np.bool_)
        queue_arr = np.empty(n + num_seeds, dtype=np.int32)
        cdef uint8_t* mask = <uint8_t*>cnp.PyArray_DATA(mask_arr)
        cdef int32_t* queue = <int32_t*>cnp.PyArray_DATA(queue_arr)
        cdef int32_t u, w
        cdef int64_t k
        with nogil:
            for i in range(num_seeds):
                queue[tail] = seeds[i]
                tail += 1
            while head < tail:
                u = queue[head]
                head += 1
                for k in range(ptr[u], ptr[u + 1]):
                    w = idx[k]
                    if not mask[w]:
                        mask[w] = 1
                        queue[tail] = w
                        tail += 1
            if include_self:
                for i in range(num_seeds):
                    mask[seeds[i]] = 1
        return _readonly(np.flatnonzero(mask_arr).astype(np.int32))

    @property
    def nbytes(self):
        """Bytes held by the graph's arrays that exist so far (predecessors and levels
        are built on first use)."""
        return sum(a.nbytes for a in (self._succ_ptr, self._succ_idx, self._pred_ptr,
                                      self._pred_idx, self._order, self._levels)
                   if a is not None)

    def __len__(self):
        return self.num_nodes

    def __repr__(self):
        return f"<CSRGraph {self.num_nodes} nodes, {self.num_edges} edges>"

    def __reduce__(self):
        src, dst = self.edges()
        return (_rebuild_csr, (self.num_nodes, np.asarray(src), np.asarray(dst), self._labels))


def _rebuild_csr(num_nodes, sources, targets, labels):
    return CSRGraph.from_edges(num_nodes, sources, targets, labels=labels)


cdef int32_t _fill_levels(Py_ssize_t n, const int32_t* order, const int64_t* sp,
                          const int32_t* si, int32_t* level) noexcept nogil:
    """Longest-path levels by one sweep in topological order; returns the level count."""
    cdef Py_ssize_t i
    cdef int64_t k
    cdef int32_t u, w, next_level, max_level = 0
    for i in range(n):
        u = order[i]
        next_level = level[u] + 1
        for k in range(sp[u], sp[u + 1]):
            w = si[k]
            if level[w] < next_level:
                level[w] = next_level
        if level[u] > max_level:
            max_level = level[u]
    return max_level + 1
