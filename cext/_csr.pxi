# The immutable CSR graph: build, validate, order, levels, reachability.  Included by _ext.pyx.

from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE

cdef extern from "Python.h":
    bint PyLong_CheckExact(object o)
    bint PyTuple_CheckExact(object o)
    bint PyList_CheckExact(object o)
    bint PyBool_Check(object o)
    bint PyIndex_Check(object o)
    PyObject* PyList_GET_ITEM_PTR "PyList_GET_ITEM" (object o, Py_ssize_t i)


cdef inline object _readonly(cnp.ndarray arr):
    arr.flags.writeable = False
    return arr


cdef object _edge_array(object values, str what):
    """A user's edge endpoint array as a contiguous ndarray of an integer dtype, or an
    EdgeArrayError.  Ids are range-checked later, against the node count."""
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
    return np.ascontiguousarray(arr)


cdef int _raise_bad_edge(Py_ssize_t e, object s, object d, Py_ssize_t n) except -1:
    """The one error for an id out of range, whatever form the edges came in."""
    negative = "negative " if s < 0 or d < 0 else ""
    wide = " (it does not fit in int32)" if max(s, d) > 0x7FFFFFFF else ""
    raise EdgeArrayError(f"edge {e} ({s} -> {d}) has a {negative}node id out of range [0, {n}){wide}")


cdef tuple _int32_edges(object src, object dst, Py_ssize_t n):
    """Two integer arrays of another dtype than int32, range-checked against ``n``
    before the cast could wrap a value around; the first bad edge is reported as the
    counting pass reports it for int32 input."""
    if src.dtype == np.int32 and dst.dtype == np.int32:
        return src, dst
    bad = (src < 0) | (src >= n) | (dst < 0) | (dst >= n)
    if bad.any():
        e = int(np.argmax(bad))
        _raise_bad_edge(e, int(src[e]), int(dst[e]), n)
    return src.astype(np.int32), dst.astype(np.int32)


cdef Py_ssize_t _num_nodes(object num_nodes) except -1:
    cdef Py_ssize_t n
    try:
        n = num_nodes
    except (TypeError, OverflowError):
        raise EdgeArrayError(f"num_nodes must be an int in [1, 2**31-1], got {num_nodes!r}") from None
    if n <= 0:
        raise EmptyGraphError(f"a graph needs at least one node, got num_nodes={num_nodes!r}")
    if n > 0x7FFFFFFF:
        raise GraphTooLargeError(f"num_nodes={n} exceeds 2**31-1")
    return n


cdef int64_t _endpoint(object value, Py_ssize_t e) except? -1:
    """A node id that is not an exact int: a numpy integer or anything with
    ``__index__`` (never a bool, as a bool array is refused by ``from_edges``)."""
    if PyBool_Check(value) or not PyIndex_Check(value):
        raise EdgeArrayError(f"edges: edge {e}: node ids must be integers, got {type(value).__name__} {value!r}")
    cdef object index = value.__index__()
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(index, &overflow)
    return -1 if overflow else v


cdef extern from *:
    """
    /* The value of a small exact int read from the object itself, with no call: on
       3.12+ through the (unstable, inline) compact-value API, on 3.11 from the one
       30-bit digit of an int of size -1, 0 or 1.  0 when it is not that small. */
    static inline int fo_small_int(PyObject* o, long long* out) {
    #if PY_VERSION_HEX >= 0x030C0000
        if (!PyUnstable_Long_IsCompact((PyLongObject*)o)) return 0;
        *out = (long long)PyUnstable_Long_CompactValue((PyLongObject*)o);
        return 1;
    #else
        Py_ssize_t size = Py_SIZE(o);
        if (size < -1 || size > 1) return 0;
        *out = size * (long long)((PyLongObject*)o)->ob_digit[0];
        return 1;
    #endif
    }
    """
    bint fo_small_int(object o, long long* out) noexcept


cdef inline bint _fast_id(object value, uint64_t n, int32_t* out) noexcept:
    """An exact int in [0, n) into ``out``; False for anything else (decided slowly)."""
    cdef int overflow = 0
    cdef long long v
    if not PyLong_CheckExact(value):
        return False
    if fo_small_int(value, &v):
        if <unsigned long long>v >= n:
            return False
        out[0] = <int32_t>v
        return True
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or <unsigned long long>v >= n:
        return False
    out[0] = <int32_t>v
    return True


cdef int _pair_slow(object pair, Py_ssize_t e, Py_ssize_t n, int32_t* src, int32_t* dst) except -1:
    """One edge that is not a tuple or list of two in-range exact ints."""
    if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__"):
        raise EdgeArrayError(f"edges: edge {e} is {pair!r}, not a (source, target) pair")
    try:
        items = tuple(pair)
    except Exception:
        raise EdgeArrayError(f"edges: edge {e} is {pair!r}, not a (source, target) pair") from None
    if len(items) != 2:
        raise EdgeArrayError(f"edges: edge {e} has {len(items)} items, not a (source, target) pair")
    s, d = items
    cdef int64_t sv = s if PyLong_CheckExact(s) and -2**62 < s < 2**62 else _endpoint(s, e)
    cdef int64_t dv = d if PyLong_CheckExact(d) and -2**62 < d < 2**62 else _endpoint(d, e)
    if sv < 0 or sv >= n or dv < 0 or dv >= n:
        _raise_bad_edge(e, s, d, n)
    src[e] = <int32_t>sv
    dst[e] = <int32_t>dv
    return 0


cdef int _pairs_into(object seq, Py_ssize_t m, Py_ssize_t n, int32_t* src, int32_t* dst) except -1:
    """The ``m`` pairs ``(source, target)`` of a list or tuple into two int32 arrays of
    ``m`` slots, checked.

    Tuples and lists of two exact ints in range take the fast path: the C API reads the
    sequence's item pointers and each int's value, making no Python object; anything
    else (numpy integers, other sequences, errors) goes through :func:`_pair_slow`.
    """
    cdef Py_ssize_t e = 0
    cdef uint64_t un = <uint64_t>n
    cdef PyObject** items
    cdef PyObject* pair
    cdef bint ok
    with cython.critical_section(seq):
        while e < m:
            # Read again after a slow step: it may have run Python code (an __index__).
            if PySequence_Fast_GET_SIZE(seq) != m:
                raise EdgeArrayError("edges: the list of edges changed while it was read")
            items = PySequence_Fast_ITEMS(seq)
            while e < m:
                pair = items[e]
                if PyTuple_CheckExact(<object>pair) and PyTuple_GET_SIZE(<object>pair) == 2:
                    ok = (_fast_id(<object>PyTuple_GET_ITEM(<object>pair, 0), un, &src[e])
                          and _fast_id(<object>PyTuple_GET_ITEM(<object>pair, 1), un, &dst[e]))
                elif PyList_CheckExact(<object>pair) and PyList_GET_SIZE(<object>pair) == 2:
                    ok = (_fast_id(<object>PyList_GET_ITEM_PTR(<object>pair, 0), un, &src[e])
                          and _fast_id(<object>PyList_GET_ITEM_PTR(<object>pair, 1), un, &dst[e]))
                else:
                    ok = False
                if not ok:
                    break
                e += 1
            if e < m:
                _pair_slow(<object>items[e], e, n, src, dst)
                e += 1
    return 0


cdef str _node_label(object names, Py_ssize_t node_id):
    if names is not None:
        return repr(names[node_id])
    return str(node_id)


cdef cnp.ndarray _pair_array(object edges, Py_ssize_t n):
    """An ``(m, 2)`` integer array of edges as a C-contiguous int32 ``(m, 2)`` array:
    itself when it already is one, else converted through a memoryview of its int64
    form, range-checked first so that no id wraps around."""
    try:
        arr = np.asarray(edges)
    except Exception as exc:
        raise EdgeArrayError(f"edges: cannot be read as an array ({exc})") from None
    if arr.size == 0 and arr.ndim <= 2:
        return np.empty((0, 2), dtype=np.int32)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise EdgeArrayError(f"edges: expected (source, target) pairs, an (m, 2) array, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise EdgeArrayError(f"edges: node ids must have an integer dtype, got {arr.dtype}")
    if arr.dtype == np.int32 and arr.flags.c_contiguous:
        return arr  # the counting pass checks the range
    if arr.dtype == np.uint64:
        if (arr > 0x7FFFFFFF).any():
            first = int(np.argmax((arr > 0x7FFFFFFF).any(axis=1)))
            _raise_bad_edge(first, int(arr[first, 0]), int(arr[first, 1]), n)
        arr = arr.astype(np.int64)
    cdef const int64_t[:, :] wide = arr.astype(np.int64, copy=False)
    cdef Py_ssize_t e, m = wide.shape[0], bad = -1
    out = np.empty((m, 2), dtype=np.int32)
    cdef int32_t* ids = <int32_t*>cnp.PyArray_DATA(out)
    cdef uint64_t un = <uint64_t>n
    cdef int64_t s, d
    with nogil:
        for e in range(m):
            s = wide[e, 0]
            d = wide[e, 1]
            if <uint64_t>s >= un or <uint64_t>d >= un:
                bad = e
                break
            ids[2 * e] = <int32_t>s
            ids[2 * e + 1] = <int32_t>d
    if bad >= 0:
        _raise_bad_edge(bad, wide[bad, 0], wide[bad, 1], n)
    return out


@cython.final
cdef class CSRGraph:
    """An immutable directed acyclic graph in compressed sparse row form.

    Build one with :meth:`from_edges` (two endpoint arrays) or :meth:`from_edge_list`
    (``(source, target)`` pairs).  Construction validates the graph (id ranges,
    self-loops, cycles) and computes its topological order once; the predecessor arrays
    and levels are built on first use (under a lock), then read-only like the rest.  Instances are safe to share between
    threads.  An edge ``(u, v)`` means "``v`` depends on ``u``": ``u`` runs first.
    """

    cdef readonly Py_ssize_t num_nodes
    cdef readonly Py_ssize_t num_edges
    cdef int32_t num_levels
    cdef Py_ssize_t num_roots     # order[:num_roots] are the roots, ascending (Kahn's seeds)
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
        raise TypeError("use CSRGraph.from_edges(num_nodes, sources, targets) or CSRGraph.from_edge_list(num_nodes, edges)")

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
        cdef Py_ssize_t n = _num_nodes(num_nodes)
        src = _edge_array(sources, "sources")
        dst = _edge_array(targets, "targets")
        if src.shape[0] != dst.shape[0]:
            raise EdgeArrayError(
                f"sources and targets differ in length ({src.shape[0]} != {dst.shape[0]})")
        if labels is not None and len(labels) != n:
            raise EdgeArrayError(f"labels has {len(labels)} entries for {n} nodes")
        src, dst = _int32_edges(src, dst, n)
        cdef CSRGraph g = CSRGraph.__new__(CSRGraph)
        g._labels = labels
        g._build(n, <const int32_t*>cnp.PyArray_DATA(src), <const int32_t*>cnp.PyArray_DATA(dst),
                 1, src.shape[0])
        return g

    @staticmethod
    def from_edge_list(num_nodes, edges, *, labels=None):
        """Build and validate a graph of ``num_nodes`` nodes from ``(source, target)`` pairs.

        ``edges`` is a list or tuple of pairs (tuples or lists of two ints), an
        ``(m, 2)`` integer array, or any iterable of pairs; each pair ``(u, v)`` is
        the edge ``u -> v`` (``v`` depends on ``u``).  The pairs are read inside the
        compiled core (the C API on a list, a buffer on an array) with no array of
        Python objects in between; otherwise it is :meth:`from_edges`, with the same
        errors:

        >>> g = CSRGraph.from_edge_list(4, [(0, 1), (0, 2), (1, 3), (2, 3)])
        >>> g.topological_order().tolist()
        [0, 1, 2, 3]
        >>> CSRGraph.from_edge_list(2, [(0, 1), (1, 0)])
        Traceback (most recent call last):
        ...
        flow_orchestrator.errors.CycleError: the graph has a cycle: 0 -> 1 -> 0 (each node depends on the one before it)

        Raises :class:`EmptyGraphError`, :class:`EdgeArrayError` (a pair of another
        length, a non-integer or out-of-range id), :class:`SelfDependencyError` or
        :class:`CycleError`.
        """
        cdef Py_ssize_t n = _num_nodes(num_nodes)
        if labels is not None and len(labels) != n:
            raise EdgeArrayError(f"labels has {len(labels)} entries for {n} nodes")
        cdef CSRGraph g = CSRGraph.__new__(CSRGraph)
        g._labels = labels
        cdef Py_ssize_t m
        if type(edges) is not list and type(edges) is not tuple:
            if isinstance(edges, np.ndarray) or hasattr(edges, "__array_interface__") or hasattr(edges, "__array__"):
                arr = _pair_array(edges, n)
                g._build(n, <const int32_t*>cnp.PyArray_DATA(arr), <const int32_t*>cnp.PyArray_DATA(arr) + 1,
                         2, arr.shape[0])
                return g
            try:
                edges = list(edges)
            except TypeError:
                raise EdgeArrayError(f"edges: expected (source, target) pairs, got {type(edges).__name__}") from None
        m = PySequence_Fast_GET_SIZE(edges)
        src = np.empty(m, dtype=np.int32)
        dst = np.empty(m, dtype=np.int32)
        _pairs_into(edges, m, n, <int32_t*>cnp.PyArray_DATA(src), <int32_t*>cnp.PyArray_DATA(dst))
        g._build(n, <const int32_t*>cnp.PyArray_DATA(src), <const int32_t*>cnp.PyArray_DATA(dst), 1, m)
        return g

    cdef int _build(self, Py_ssize_t n, const int32_t* src, const int32_t* dst, Py_ssize_t stride,
                    Py_ssize_t num_edges) except -1:
        """The successor CSR and the order of edges ``src[e * stride] -> dst[e * stride]``
        (ids not yet checked), or the error naming the first bad edge."""
        succ_ptr_arr = np.zeros(n + 1, dtype=np.int64)
        indeg_arr = np.zeros(n, dtype=np.int32)
        cdef int64_t* sp = <int64_t*>cnp.PyArray_DATA(succ_ptr_arr)
        cdef int32_t* indeg = <int32_t*>cnp.PyArray_DATA(indeg_arr)
        cdef Py_ssize_t e, v, bad_edge = -1
        cdef bint bad_is_loop = False
        cdef uint32_t un = <uint32_t>n
        cdef int32_t s, d
        cdef int64_t running, count
        cdef uint32_t bad = 0, unsorted = 0

        # Pass 1: validate every edge, and see whether the edges come grouped by source
        # (then the scatter below is a copy).  No early exit and no branch, so that the
        # compiler vectorizes it; the first bad edge is looked for only if there is one.
        with nogil:
            if stride == 1 and num_edges:
                bad = (<uint32_t>src[0] >= un) | (<uint32_t>dst[0] >= un) | (src[0] == dst[0])
                for e in range(1, num_edges):
                    bad |= (<uint32_t>src[e] >= un) | (<uint32_t>dst[e] >= un) | (src[e] == dst[e])
                    unsorted |= src[e] < src[e - 1]
            else:
                for e in range(num_edges):
                    s = src[e * stride]
                    d = dst[e * stride]
                    bad |= (<uint32_t>s >= un) | (<uint32_t>d >= un) | (s == d)
                for e in range(1, num_edges):
                    unsorted |= src[e * stride] < src[(e - 1) * stride]
            if bad:
                for e in range(num_edges):
                    s = src[e * stride]
                    d = dst[e * stride]
                    if <uint32_t>s >= un or <uint32_t>d >= un or s == d:
                        bad_edge = e
                        bad_is_loop = s == d
                        break
        if bad_edge >= 0:
            s = src[bad_edge * stride]
            d = dst[bad_edge * stride]
            if bad_is_loop:
                raise SelfDependencyError(
                    f"node {_node_label(self._labels, s)} depends on itself (edge {bad_edge})")
            _raise_bad_edge(bad_edge, s, d, n)

        # Pass 2: count out-degrees (shifted by one) and in-degrees, ids now known good.
        with nogil:
            for e in range(num_edges):
                sp[src[e * stride] + 1] += 1
                indeg[dst[e * stride]] += 1

        # Pass 3: a stable scatter, so each node's successors keep their input order.
        # sp[v] serves as v's write cursor; afterwards sp[v] is where v+1 starts, and
        # one shift to the right restores the offsets without a second cursor array.
        # Edges already grouped by source are their own scatter: the targets, copied.
        succ_idx_arr = np.empty(num_edges, dtype=np.int32)
        cdef int32_t* si = <int32_t*>cnp.PyArray_DATA(succ_idx_arr)
        with nogil:
            running = 0
            for v in range(n + 1):
                count = sp[v]
                sp[v] = running + count
                running += count
            if not unsorted:
                if stride == 1:
                    memcpy(si, dst, num_edges * sizeof(int32_t))
                else:
                    for e in range(num_edges):
                        si[e] = dst[e * stride]
            else:
                for e in range(num_edges):
                    s = src[e * stride]
                    si[sp[s]] = dst[e * stride]
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
        cdef Py_ssize_t head = 0, tail = 0, v, roots = 0
        cdef int64_t k, k_end
        cdef int32_t u, w, left
        with nogil:
            for v in range(n):
                order[tail] = <int32_t>v
                tail += (indeg[v] == 0)
            roots = tail
            while head < tail:
                u = order[head]
                head += 1
                k_end = sp[u + 1]
                for k in range(sp[u], k_end):
                    # The count in a local: the stores to order[] could alias indeg[]
                    # for all the compiler knows, and it would read it back.
                    w = si[k]
                    left = indeg[w] - 1
                    indeg[w] = left
                    order[tail] = w
                    tail += (left == 0)
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
        self.num_roots = roots
        return 0

    cdef cnp.ndarray _in_degrees(self):
        """A new ``int32`` array of in-degrees: from the predecessor offsets when they
        exist, else one count over the successor indices (no predecessor CSR built)."""
        cdef Py_ssize_t n = self.num_nodes
        out = np.zeros(n, dtype=np.int32)
        cdef int32_t* deg = <int32_t*>cnp.PyArray_DATA(out)
        cdef const int32_t* si = self.succ_idx
        cdef Py_ssize_t v
        cdef int64_t k, m = self.num_edges
        with self._lazy_lock:
            pp = self._pred_ptr
        with nogil:
            if pp is None:
                for k in range(m):
                    deg[si[k]] += 1
            else:
                for v in range(n):
                    deg[v] = <int32_t>(self.pred_ptr[v + 1] - self.pred_ptr[v])
        return out

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
        return _readonly(self._in_degrees())

    def out_degree(self):
        """``int32`` number of dependents of each node (parallel edges count)."""
        return _readonly(np.diff(self._succ_ptr).astype(np.int32))

    def roots(self):
        """Ids of the nodes without dependencies, ascending (a read-only view: the
        topological order starts with them)."""
        return self._order[:self.num_roots]

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
