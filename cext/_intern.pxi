# Interning: node names <-> dense int32 ids.  Included by _ext.pyx.
#
# Where the time went before: a dict of str -> int costs, per new name, a boxed int
# (beyond the small-int cache, one allocation of 32 bytes), two probes (get, then set),
# and the dict's repeated doubling, re-inserting every entry each time; building a
# dict of a million fresh names was 160 to 190 ms on the 2-core dev machine, whatever
# called it.  The table below keeps one 8-byte slot per bucket, sized once for a bulk
# call, and no Python object but the names themselves.

from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject, PyObject_Hash
from cpython.unicode cimport PyUnicode_GET_LENGTH
from libc.stdlib cimport calloc, free

cdef extern from "Python.h":
    object PyUnicode_FromObject(object obj)
    Py_ssize_t PySequence_Fast_GET_SIZE(object seq)
    PyObject** PySequence_Fast_ITEMS(object seq)

cdef extern from *:
    """
    /* The frozen flag only goes from 0 to 1, stored after every addition it covers:
       a reader that sees 1 also sees the table and the names as they were then. */
    static inline int fo_intern_is_frozen(const int* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void fo_intern_set_frozen(int* p) { __atomic_store_n(p, 1, __ATOMIC_RELEASE); }
    """
    int fo_intern_is_frozen(const int* p) noexcept nogil
    void fo_intern_set_frozen(int* p) noexcept nogil


# A slot is 0 (empty) or (low 32 bits of the name's hash) << 32 | (id + 1).  The bucket
# is the hash's low bits, so the table can be regrown from the slots alone; the tag
# settles most misses without touching the name.  At most half full.
cdef inline uint64_t _slot_of(Py_hash_t h, Py_ssize_t node_id) noexcept nogil:
    return ((<uint64_t>(<uint32_t>h)) << 32) | <uint64_t>(<uint32_t>(node_id + 1))


@cython.final
cdef class Interner:
    """Maps node names (``str``) to dense ``int32`` ids ``0..n-1`` and back.

    Ids are given in first-seen order.  Names live in a list (id -> name) and an
    open-addressing table of 8-byte slots (name -> id) keyed by each name's own cached
    ``str`` hash, so interning a name allocates nothing but the table's growth.  Adding
    names takes a short internal lock, so that concurrent ``intern`` calls agree on ids
    under free-threaded CPython; lookups take it too until :meth:`freeze` (a built
    workflow's interner is frozen), after which they take no lock.
    """

    cdef list _names
    cdef uint64_t* _slots
    cdef uint64_t _mask            # capacity - 1 (a power of two), 0 while empty
    cdef int _frozen
    cdef cython.pymutex _lock

    def __cinit__(self, names=None):
        self._names = []
        self._slots = NULL
        self._mask = 0
        self._frozen = 0
        if names is not None:
            self.intern_many(names)

    def __dealloc__(self):
        free(self._slots)

    # -- the table (callers hold the lock, or the interner is frozen) ----------------

    cdef inline Py_ssize_t _find(self, str name, Py_hash_t h) noexcept:
        """The id of ``name`` (an exact str with hash ``h``), or -1."""
        if self._slots == NULL:
            return -1
        cdef uint64_t mask = self._mask, i = (<uint64_t>h) & mask, s
        cdef uint32_t tag = <uint32_t>h
        cdef Py_ssize_t node_id
        while True:
            s = self._slots[i]
            if s == 0:
                return -1
            if <uint32_t>(s >> 32) == tag:
                node_id = <Py_ssize_t>(<uint32_t>s) - 1
                other = <str>PyList_GET_ITEM(self._names, node_id)
                if other is name or other == name:
                    return node_id
            i = (i + 1) & mask

    cdef int _reserve(self, Py_ssize_t count) except -1:
        """Room for ``count`` names in all, at most half full."""
        cdef uint64_t capacity = self._mask + 1 if self._slots != NULL else 0
        cdef uint64_t wanted = 16
        while wanted < 2 * <uint64_t>count:
            wanted <<= 1
        if wanted <= capacity:
            return 0
        cdef uint64_t* slots = <uint64_t*>calloc(wanted, sizeof(uint64_t))
        if slots == NULL:
            raise MemoryError()
        cdef uint64_t new_mask = wanted - 1, k, i, s
        with nogil:
            for k in range(capacity):
                s = self._slots[k]
                if s != 0:
                    i = (s >> 32) & new_mask
                    while slots[i] != 0:
                        i = (i + 1) & new_mask
                    slots[i] = s
        free(self._slots)
        self._slots = slots
        self._mask = new_mask
        return 0

    cdef Py_ssize_t _add(self, object name) except -1:
        """The id of ``name``, adding it if it is new.  Caller holds the lock."""
        if type(name) is not str:
            if not isinstance(name, str):
                raise NodeNameError(f"node names must be str, got {type(name).__name__}: {name!r}")
            name = PyUnicode_FromObject(name)  # an exact str with the same characters
        cdef Py_hash_t h = PyObject_Hash(name)
        cdef Py_ssize_t found = self._find(<str>name, h)
        if found >= 0:
            return found
        if PyUnicode_GET_LENGTH(name) == 0:
            raise NodeNameError("node names must be non-empty strings")
        cdef Py_ssize_t n = PyList_GET_SIZE(self._names)
        if n >= 0x7FFFFFFF:
            raise GraphTooLargeError("more than 2**31-1 nodes")
        if self._slots == NULL or 2 * <uint64_t>(n + 1) > self._mask + 1:
            self._reserve(2 * n + 2)
        cdef uint64_t mask = self._mask, i = (<uint64_t>h) & mask
        while self._slots[i] != 0:
            i = (i + 1) & mask
        self._names.append(name)
        self._slots[i] = _slot_of(h, n)
        return n

    cdef Py_ssize_t _lookup_unlocked(self, object name) except -2:
        """The id of ``name``, -1 if unknown (or not a str).  Caller holds the lock or
        the interner is frozen."""
        if type(name) is not str:
            if not isinstance(name, str):
                return -1
            name = PyUnicode_FromObject(name)
        return self._find(<str>name, PyObject_Hash(name))

    cdef Py_ssize_t _lookup(self, object name) except -2:
        """The id of ``name``, or -1: without a lock once frozen."""
        if fo_intern_is_frozen(&self._frozen):
            return self._lookup_unlocked(name)
        with self._lock:
            return self._lookup_unlocked(name)

    # -- public API -----------------------------------------------------------------

    def intern(self, name):
        """Return the id of ``name``, adding it if it is new."""
        cdef Py_ssize_t found
        if fo_intern_is_frozen(&self._frozen):
            found = self._lookup_unlocked(name)
            if found < 0:
                raise FrozenInternerError(f"cannot add {name!r}: the interner is frozen")
            return found
        with self._lock:
            return self._add(name)

    def intern_many(self, names):
        """Intern every name of an iterable; return their ids as an ``int32`` array."""
        seq = names if type(names) is list or type(names) is tuple else list(names)
        cdef Py_ssize_t i, n = PySequence_Fast_GET_SIZE(seq)
        out = np.empty(n, dtype=np.int32)
        cdef int32_t* view = <int32_t*>cnp.PyArray_DATA(out)
        cdef PyObject** items
        cdef Py_ssize_t found
        if fo_intern_is_frozen(&self._frozen):
            for i in range(n):
                name = seq[i]
                found = self._lookup_unlocked(name)
                if found < 0:
                    raise FrozenInternerError(f"cannot add {name!r}: the interner is frozen")
                view[i] = <int32_t>found
            return out
        with self._lock:
            # Sized once for the worst case (every name new), then never regrown.
            self._reserve(PyList_GET_SIZE(self._names) + n)
            # On a free-threaded build the list is held still while its items are read
            # (borrowed); under the GIL nothing in the loop can run Python code but an
            # error message.
            with cython.critical_section(seq):
                items = PySequence_Fast_ITEMS(seq)
                for i in range(n):
                    view[i] = <int32_t>self._add(<object>items[i])
        return out

    def id(self, name):
        """Return the id of ``name``; raise :class:`UnknownNodeError` if it is unknown."""
        cdef Py_ssize_t found = self._lookup(name)
        if found < 0:
            raise UnknownNodeError(f"unknown node {name!r}")
        return found

    def ids(self, names):
        """Ids of many names as an ``int32`` array; every unknown name is listed in the error."""
        cdef list seq = list(names)
        cdef Py_ssize_t i, n = len(seq), found
        cdef list unknown = None
        out = np.empty(n, dtype=np.int32)
        cdef int32_t* view = <int32_t*>cnp.PyArray_DATA(out)
        for i in range(n):
            found = self._lookup(seq[i])
            if found < 0:
                if unknown is None:
                    unknown = []
                unknown.append(seq[i])
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
        with self._lock:
            fo_intern_set_frozen(&self._frozen)
        return self

    @property
    def frozen(self):
        """Whether :meth:`freeze` was called."""
        return bool(fo_intern_is_frozen(&self._frozen))

    @property
    def nbytes(self):
        """Bytes held by the name -> id table (the names themselves are not counted)."""
        return 0 if self._slots == NULL else <Py_ssize_t>(self._mask + 1) * 8

    def __len__(self):
        return len(self._names)

    def __contains__(self, name):
        return self._lookup(name) >= 0

    def __iter__(self):
        return iter(list(self._names))

    def __repr__(self):
        return f"<Interner {len(self._names)} names{' frozen' if self.frozen else ''}>"

    def __reduce__(self):
        return (_rebuild_interner, (list(self._names), self.frozen))


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
