# Grouping per-node Python objects in C, so that building and compiling a workflow does
# Python work once per distinct action, plan or option row, not once per node.
# Included by _ext.pyx.
#
# A node's action, call plan and option row are keyed by identity (the object's
# address, plus a small integer): a table of (key, key2) -> group in C, with a
# shortcut for runs of equal keys, the usual layout of bulk workflows.  Python then
# decides once per group, and the per-node results are gathered back in C (take).

from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.stdlib cimport malloc
from libcpp.vector cimport vector

cdef extern from "Python.h":
    ctypedef struct PyFunctionObject:
        PyObject* func_code
        PyObject* func_defaults
        PyObject* func_kwdefaults
        PyObject* func_dict
        PyObject* func_annotations
    ctypedef struct PyCodeObject:
        int co_argcount
        int co_kwonlyargcount
    bint PyFunction_Check(object o)
    bint PyDict_CheckExact(object o)
    Py_ssize_t PyDict_GET_SIZE "PyDict_Size" (object o)
    bint PyCallable_Check(object o)
    int PyGC_Disable()
    int PyGC_Enable()

cdef extern from *:
    """
    #define FO_NO_GROUP 0xFFFFFFFFu
    """
    const uint32_t _NO_GROUP "FO_NO_GROUP"


cdef struct _KeyTable:
    uint64_t* k1
    uint64_t* k2
    uint32_t* group      # group + 1; 0 is an empty slot
    uint64_t mask
    uint32_t count


@cython.overflowcheck(False)  # a hash: wrapping multiplication is the point (the debug build checks)
cdef inline uint64_t _mix(uint64_t a, uint64_t b) noexcept nogil:
    cdef uint64_t h = (a >> 4) ^ (b * <uint64_t>0x9E3779B97F4A7C15)
    h *= <uint64_t>0xFF51AFD7ED558CCD
    return h ^ (h >> 29)


cdef int _table_init(_KeyTable* t, uint64_t capacity) except -1 nogil:
    t.k1 = <uint64_t*>malloc(capacity * sizeof(uint64_t))
    t.k2 = <uint64_t*>malloc(capacity * sizeof(uint64_t))
    t.group = <uint32_t*>calloc(capacity, sizeof(uint32_t))
    t.mask = capacity - 1
    t.count = 0
    if t.k1 == NULL or t.k2 == NULL or t.group == NULL:
        with gil:
            raise MemoryError()
    return 0


cdef void _table_free(_KeyTable* t) noexcept nogil:
    free(t.k1)
    free(t.k2)
    free(t.group)


cdef int _table_grow(_KeyTable* t) except -1 nogil:
    cdef _KeyTable bigger
    _table_init(&bigger, 2 * (t.mask + 1))
    cdef uint64_t i, j
    for i in range(t.mask + 1):
        if t.group[i]:
            j = _mix(t.k1[i], t.k2[i]) & bigger.mask
            while bigger.group[j]:
                j = (j + 1) & bigger.mask
            bigger.k1[j] = t.k1[i]
            bigger.k2[j] = t.k2[i]
            bigger.group[j] = t.group[i]
    bigger.count = t.count
    _table_free(t)
    t[0] = bigger
    return 0


cdef inline int64_t _table_group(_KeyTable* t, uint64_t a, uint64_t b) except -1 nogil:
    """The group of key ``(a, b)``; a new key gets the next group (``t.count`` before)."""
    cdef uint64_t j = _mix(a, b) & t.mask
    while t.group[j]:
        if t.k1[j] == a and t.k2[j] == b:
            return t.group[j] - 1
        j = (j + 1) & t.mask
    t.k1[j] = a
    t.k2[j] = b
    t.count += 1
    t.group[j] = t.count
    if 2 * <uint64_t>t.count > t.mask + 1:
        _table_grow(t)
    return t.count - 1


cdef inline uint64_t _defaults_count(PyObject* action) noexcept:
    if not PyFunction_Check(<object>action):
        return 0
    cdef PyObject* defaults = (<PyFunctionObject*>action).func_defaults
    return 0 if defaults == NULL else <uint64_t>PyTuple_GET_SIZE(<object>defaults)


cdef inline uint64_t _signature_key(PyObject* action) noexcept:
    """What decides the signature of ``action``: for a plain function whose signature is
    read from its code alone (no ``__dict__``, so no ``__wrapped__``; no keyword-only
    defaults; annotations that cannot matter: none, or a function without required
    parameters, as only those are looked up in them), its code object, so that the many
    functions one ``def`` or ``lambda`` makes in a loop share one signature (a return
    annotation included); else the object itself."""
    cdef PyFunctionObject* f
    cdef PyCodeObject* code
    if not PyFunction_Check(<object>action):
        return <uint64_t>action
    f = <PyFunctionObject*>action
    if f.func_kwdefaults != NULL or (f.func_dict != NULL and PyDict_GET_SIZE(<object>f.func_dict) != 0):
        return <uint64_t>action
    if f.func_annotations != NULL and not (PyDict_CheckExact(<object>f.func_annotations)
                                           and PyDict_GET_SIZE(<object>f.func_annotations) == 0):
        code = <PyCodeObject*>f.func_code
        if code.co_kwonlyargcount != 0 or code.co_argcount > <int>_defaults_count(action):
            return <uint64_t>action  # required parameters: their annotations may ask for the context
    return <uint64_t>f.func_code


cdef object _sequence(object values, str what):
    if type(values) is list or type(values) is tuple:
        return values
    try:
        return list(values)
    except TypeError:
        raise TypeError(f"{what}: expected a sequence, got {type(values).__name__}") from None


def group_by(objs, extra=None, select=None, *, signatures=False):
    """Group the indices ``i`` of ``objs`` by the identity of ``objs[i]`` (and the integer
    ``extra[i]`` when given), over the ``i`` with ``select[i]`` (every ``i`` when omitted).

    Returns ``(first, group)``: ``first[g]`` is the first index of group ``g`` (groups in
    first-seen order, ``int32``), ``group[i]`` the group of ``i`` (``uint32``,
    ``0xFFFFFFFF`` where not selected).  With ``signatures=True`` a plain function is
    keyed by its code object and its number of defaults instead (see
    ``flow_orchestrator._calling.signature_of``): one group per signature.

    >>> f = lambda: None
    >>> first, group = group_by([f, f, print, f])
    >>> first.tolist(), group.tolist()
    ([0, 2], [0, 0, 1, 0])
    """
    seq = _sequence(objs, "objs")
    cdef Py_ssize_t i, n = PySequence_Fast_GET_SIZE(seq)
    cdef const uint32_t[::1] extra_view
    cdef const uint8_t[::1] select_view
    cdef bint has_extra = extra is not None, has_select = select is not None
    if has_extra:
        extra_arr = np.ascontiguousarray(extra, dtype=np.uint32)
        if extra_arr.shape[0] != n:
            raise ValueError(f"extra has {extra_arr.shape[0]} entries for {n} objects")
        extra_view = extra_arr
    if has_select:
        select_arr = np.ascontiguousarray(select, dtype=np.bool_).view(np.uint8)
        if select_arr.shape[0] != n:
            raise ValueError(f"select has {select_arr.shape[0]} entries for {n} objects")
        select_view = select_arr
    group_arr = np.empty(n, dtype=np.uint32)
    cdef uint32_t* group = <uint32_t*>cnp.PyArray_DATA(group_arr)
    cdef vector[int32_t] first
    cdef _KeyTable table
    cdef PyObject** items
    cdef PyObject* item
    cdef uint64_t a, b, last_a = 0, last_b = 0
    cdef int64_t g, last_g = -1
    _table_init(&table, 16)
    try:
        with cython.critical_section(seq):
            items = PySequence_Fast_ITEMS(seq)
            for i in range(n):
                if has_select and not select_view[i]:
                    group[i] = _NO_GROUP
                    continue
                item = items[i]
                if signatures:
                    a = _signature_key(item)
                    b = _defaults_count(item) if a != <uint64_t>item else 0
                else:
                    a = <uint64_t>item
                    b = 0
                if has_extra:
                    b = (b << 32) | extra_view[i]
                if last_g < 0 or a != last_a or b != last_b:
                    g = _table_group(&table, a, b)
                    if g == <int64_t>first.size():
                        first.push_back(<int32_t>i)
                    last_a, last_b, last_g = a, b, g
                group[i] = <uint32_t>last_g
    finally:
        _table_free(&table)
    first_arr = np.empty(first.size(), dtype=np.int32)
    for i in range(<Py_ssize_t>first.size()):
        (<int32_t*>cnp.PyArray_DATA(first_arr))[i] = first[i]
    return first_arr, group_arr


def take(values, index, fallback=None):
    """``tuple(values[index[i]] for i)``, in C; where ``index[i]`` is ``0xFFFFFFFF``,
    ``fallback[i]`` instead.

    >>> take(["a", "b"], [1, 1, 0])
    ('b', 'b', 'a')
    """
    vals = _sequence(values, "values")
    index_arr = np.ascontiguousarray(index, dtype=np.uint32)
    cdef const uint32_t[::1] idx = index_arr
    cdef Py_ssize_t i, n = idx.shape[0], m = PySequence_Fast_GET_SIZE(vals)
    fb = _sequence(fallback, "fallback") if fallback is not None else vals
    if fallback is not None and PySequence_Fast_GET_SIZE(fb) != n:
        raise ValueError(f"fallback has {PySequence_Fast_GET_SIZE(fb)} entries for {n} indices")
    cdef tuple out = PyTuple_New(n)
    cdef PyObject* item
    cdef uint32_t k
    with cython.critical_section(vals, fb):
        for i in range(n):
            k = idx[i]
            if k < <uint64_t>m:
                item = PySequence_Fast_ITEMS(vals)[k]
            elif k == _NO_GROUP and fallback is not None:
                item = PySequence_Fast_ITEMS(fb)[i]
            else:
                raise IndexError(f"index {k} at {i} is out of range for {m} values")
            Py_INCREF(<object>item)
            PyTuple_SET_ITEM(out, i, <object>item)
    return out


def first_not_callable(objs):
    """The index of the first object of ``objs`` that is not callable, or -1."""
    seq = _sequence(objs, "objs")
    cdef Py_ssize_t i, n = PySequence_Fast_GET_SIZE(seq)
    cdef PyObject** items
    cdef PyObject* last = NULL
    with cython.critical_section(seq):
        items = PySequence_Fast_ITEMS(seq)
        for i in range(n):
            if items[i] != last:
                if not PyCallable_Check(<object>items[i]):
                    return i
                last = items[i]
    return -1


def node_triples(actions, plans, middleware, group):
    """``[(actions[i], plans[i], middleware[group[i]]) ...]``, in C, one tuple shared by
    consecutive nodes with the same three (what process executors ship per node).

    With one action per node this makes a tuple per node: the cyclic garbage collector
    is paused meanwhile (its state restored after), as otherwise the allocations would
    trigger collections that traverse the whole workflow again and again (six times
    the cost of the tuples on 100,000 nodes).
    """
    acts = _sequence(actions, "actions")
    pls = _sequence(plans, "plans")
    mws = _sequence(middleware, "middleware")
    group_arr = np.ascontiguousarray(group, dtype=np.uint32)
    cdef const uint32_t[::1] grp = group_arr
    cdef Py_ssize_t i, n = PySequence_Fast_GET_SIZE(acts), m = PySequence_Fast_GET_SIZE(mws)
    if PySequence_Fast_GET_SIZE(pls) != n or grp.shape[0] != n:
        raise ValueError("actions, plans and group differ in length")
    for i in range(n):
        if grp[i] >= <uint64_t>m:
            raise IndexError(f"group {grp[i]} at {i} is out of range for {m} middleware tuples")
    cdef list out = PyList_New(n)
    cdef PyObject* a
    cdef PyObject* p
    cdef PyObject* last_a = NULL
    cdef PyObject* last_p = NULL
    cdef uint32_t last_g = 0
    cdef object triple = None
    cdef int collecting = PyGC_Disable()
    try:
        with cython.critical_section(acts, pls):
            for i in range(n):
                a = PySequence_Fast_ITEMS(acts)[i]
                p = PySequence_Fast_ITEMS(pls)[i]
                if triple is None or a != last_a or p != last_p or grp[i] != last_g:
                    triple = (<object>a, <object>p, <object>PySequence_Fast_ITEMS(mws)[grp[i]])
                    last_a, last_p, last_g = a, p, grp[i]
                Py_INCREF(triple)
                PyList_SET_ITEM(out, i, triple)
    finally:
        if collecting:
            PyGC_Enable()
    return out
