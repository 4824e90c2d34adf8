# Interning: node names <-> dense int32 ids.  Included by _ext.pyx.

@cython.final
cdef class Interner:
    """Maps node names (``str``) to dense ``int32`` ids ``0..n-1`` and back.

    Ids are given in first-seen order.  Lookups never take a lock; adding names takes a
    short internal lock so that concurrent ``intern`` calls agree on ids under
    free-threaded CPython.  :meth:`freeze` forbids further additions (a built workflow's
    interner is frozen).
    """

    cdef dict _ids
    cdef list _names
    cdef bint _frozen
    cdef cython.pymutex _lock

    def __cinit__(self, names=None):
        self._ids = {}
        self._names = []
        self._frozen = False
        if names is not None:
            self.intern_many(names)

    cdef inline int32_t _add(self, object name) except -1:
        # Caller holds the lock.
        cdef object found = self._ids.get(name)
        if found is not None:
            return <int32_t>found
        if type(name) is not str:
            if not isinstance(name, str):
                raise NodeNameError(f"node names must be str, got {type(name).__name__}: {name!r}")
            name = str(name)
        if len(<str>name) == 0:
            raise NodeNameError("node names must be non-empty strings")
        cdef Py_ssize_t n = len(self._names)
        if n >= 0x7FFFFFFF:
            raise GraphTooLargeError("more than 2**31-1 nodes")
        self._ids[name] = n
        self._names.append(name)
        return <int32_t>n

    def intern(self, name):
        """Return the id of ``name``, adding it if it is new."""
        cdef object found = self._ids.get(name) if isinstance(name, str) else None
        if found is not None:
            return found
        if self._frozen:
            raise FrozenInternerError(f"cannot add {name!r}: the interner is frozen")
        with self._lock:
            return self._add(name)

    def intern_many(self, names):
        """Intern every name of an iterable; return their ids as an ``int32`` array."""
        cdef list seq = list(names)
        cdef Py_ssize_t i, n = len(seq)
        out = np.empty(n, dtype=np.int32)
        cdef int32_t[::1] view = out
        if self._frozen:
            for i in range(n):
                view[i] = self._lookup(seq[i])
            return out
        with self._lock:
            for i in range(n):
                view[i] = self._add(seq[i])
        return out

    cdef inline int32_t _lookup(self, object name) except -1:
        cdef object found = self._ids.get(name) if isinstance(name, str) else None
        if found is None:
            if self._frozen:
                raise FrozenInternerError(f"cannot add {name!r}: the interner is frozen")
            raise UnknownNodeError(f"unknown node {name!r}")
        return <int32_t>found

    def id(self, name):
        """Return the id of ``name``; raise :class:`UnknownNodeError` if it is unknown."""
        cdef object found = self._ids.get(name) if isinstance(name, str) else None
        if found is None:
            raise UnknownNodeError(f"unknown node {name!r}")
        return found

    def ids(self, names):
        """Ids of many names as an ``int32`` array; every unknown name is listed in the error."""
        cdef list seq = list(names)
        cdef Py_ssize_t i, n = len(seq)
        cdef object found
        cdef list unknown = None
        out = np.empty(n, dtype=np.int32)
        cdef int32_t[::1] view = out
        for i in range(n):
            name = seq[i]
            found = self._ids.get(name) if isinstance(name, str) else None
            if found is None:
                if unknown is None:
                    unknown = []
                unknown.append(name)
                view[i] = -1
            else:
                view[i] = <int32_t>found
        if unknown is not None:
            raise UnknownNodeError(f"unknown node(s): {', '.join(map(repr, unknown[:20]))}"
                                   + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""))
        return out

    def name(self, node_id):
        """Return the name of id ``node_id``; raise :class:`UnknownNodeError` if out of range."""
        cdef Py_ssize_t i
        try:
            i = node_id
        except (TypeError, OverflowError):
            raise UnknownNodeError(f"node ids are integers in [0, {len(self._names)}), got {node_id!r}") from None
        if i < 0 or i >= len(self._names):
            raise UnknownNodeError(f"node id {node_id} is out of range [0, {len(self._names)})")
        return self._names[i]

    def names(self, ids=None):
        """Names of the given ids (all names, in id order, when ``ids`` is omitted)."""
        if ids is None:
            return list(self._names)
        cdef cnp.ndarray arr = _as_id_array(ids, len(self._names), "ids")
        cdef const int32_t[::1] view = arr
        cdef list names = self._names
        return [names[view[i]] for i in range(view.shape[0])]

    def freeze(self):
        """Forbid further additions.  Idempotent; returns ``self``."""
        self._frozen = True
        return self

    @property
    def frozen(self):
        """Whether :meth:`freeze` was called."""
        return self._frozen

    def __len__(self):
        return len(self._names)

    def __contains__(self, name):
        return isinstance(name, str) and name in self._ids

    def __iter__(self):
        return iter(list(self._names))

    def __repr__(self):
        return f"<Interner {len(self._names)} names{' frozen' if self._frozen else ''}>"

    def __reduce__(self):
        return (_rebuild_interner, (list(self._names), self._frozen))


def _rebuild_interner(names, frozen):
    cdef Interner it = Interner(names)
    if frozen:
        it.freeze()
    return it


cdef cnp.ndarray _as_id_array(object ids, Py_ssize_t num_nodes, str what):
    """Validate a user-given sequence of node ids: integer dtype, 1-D, each in range.

    Returns a C-contiguous int32 array that is safe to index with checks off.
    """
    try:
        arr = np.asarray(ids)
    except Exception as exc:
        raise EdgeArrayError(f"{what}: cannot be read as an array of node ids ({exc})") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise EdgeArrayError(f"{what}: expected a 1-D array of node ids, got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=np.int32)
    if arr.dtype.kind not in "iu":
        raise EdgeArrayError(f"{what}: node ids must have an integer dtype, got {arr.dtype}")
    lo = arr.min()
    hi = arr.max()
    if lo < 0:
        raise EdgeArrayError(f"{what}: negative node id {int(lo)}")
    if hi >= num_nodes:
        raise EdgeArrayError(f"{what}: node id {int(hi)} is out of range for {num_nodes} nodes")
    return np.ascontiguousarray(arr, dtype=np.int32)
