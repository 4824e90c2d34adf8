# Per-node metrics: what mirrors flow_orchestrator/metrics.py.  Included by _ext.pyx before
# _engine.pxi, which updates a NodeMetrics from its transitions.
#
# Mirrors: the columns of the counters (M_* and METRIC_COUNTS), the latency histogram
# buckets (NUM_BUCKETS, BUCKET_BOUNDS; fo_bucket_of_ns in _sync.h computes a bucket) and
# NodeMetrics, the C arrays that metrics.py's WorkflowMetrics reads through snapshot().
# metrics.py re-exports METRIC_COUNTS and BUCKET_BOUNDS; tests/test_metrics.py checks the
# buckets against them.
#
# Why separate: it is the C face of one Python module, metrics.py, and knows nothing of the
# scheduler: the scheduler calls count()/duration()/wait() (inline C methods, no Python
# call) only when a run has metrics.  Keeping it apart keeps the metric layout, which
# metrics.py and the exporters depend on, out of the state machine's file.

cdef extern from "_sync.h" nogil:
    void fo_metric_add(int64_t* p, int64_t v)
    int fo_bucket_of_ns(int64_t ns)


# Per-node metric counters (columns of NodeMetrics.counts).
cdef enum:
    M_STARTED = 0
    M_COMPLETED = 1
    M_FAILED = 2
    M_RETRIED = 3
    M_TIMED_OUT = 4
    M_SKIPPED = 5
    M_CANCELLED = 6
    NUM_METRIC_COUNTS = 7
    NUM_BUCKETS = 16

METRIC_COUNTS = ("started", "completed", "failed", "retried", "timed_out", "skipped", "cancelled")
#: Upper bounds (seconds) of the latency histogram buckets; the last bucket is +inf.
BUCKET_BOUNDS = tuple(4.0 ** b * 1e-6 for b in range(NUM_BUCKETS - 1))


cdef inline int _bucket(int64_t ns) noexcept nogil:
    """Histogram bucket of a latency: powers of 4 from 1 us, the last one unbounded."""
    return fo_bucket_of_ns(ns)


@cython.final
cdef class NodeMetrics:
    """Per-node counters and latency histograms of one workflow, across its runs.

    Kept in C arrays and updated by the thread that makes each transition (plain adds
    under the GIL, relaxed atomic adds on free-threaded builds): no Python object and no
    lock per node event.  Read with
    :meth:`snapshot` (a copy; counts of runs still going on may be mid-update).
    """

    cdef readonly Py_ssize_t num_nodes
    cdef readonly bint histograms
    cdef cnp.ndarray _counts, _duration_sum, _wait_sum, _duration_hist, _wait_hist
    cdef int64_t* counts
    cdef int64_t* duration_sum
    cdef int64_t* wait_sum
    cdef int64_t* duration_hist
    cdef int64_t* wait_hist

    def __cinit__(self, Py_ssize_t num_nodes, bint histograms=True):
        self.num_nodes = num_nodes
        self.histograms = histograms
        self._counts = np.zeros((num_nodes, NUM_METRIC_COUNTS), dtype=np.int64)
        self._duration_sum = np.zeros(num_nodes, dtype=np.int64)
        self._wait_sum = np.zeros(num_nodes, dtype=np.int64)
        rows = num_nodes if histograms else 1
        self._duration_hist = np.zeros((rows, NUM_BUCKETS), dtype=np.int64)
        self._wait_hist = np.zeros((rows, NUM_BUCKETS), dtype=np.int64)
        self.counts = <int64_t*>cnp.PyArray_DATA(self._counts)
        self.duration_sum = <int64_t*>cnp.PyArray_DATA(self._duration_sum)
        self.wait_sum = <int64_t*>cnp.PyArray_DATA(self._wait_sum)
        self.duration_hist = <int64_t*>cnp.PyArray_DATA(self._duration_hist)
        self.wait_hist = <int64_t*>cnp.PyArray_DATA(self._wait_hist)

    # Every update happens with the GIL held (or, free-threaded, with fo_metric_add
    # being a real atomic add): see _sync.h.
    cdef inline void count(self, int32_t node, int what) noexcept nogil:
        fo_metric_add(&self.counts[node * NUM_METRIC_COUNTS + what], 1)

    cdef inline void duration(self, int32_t node, int64_t ns) noexcept nogil:
        cdef Py_ssize_t row = node if self.histograms else 0
        fo_metric_add(&self.duration_sum[node], ns)
        fo_metric_add(&self.duration_hist[row * NUM_BUCKETS + _bucket(ns)], 1)

    cdef inline void wait(self, int32_t node, int64_t ns) noexcept nogil:
        cdef Py_ssize_t row = node if self.histograms else 0
        fo_metric_add(&self.wait_sum[node], ns)
        fo_metric_add(&self.wait_hist[row * NUM_BUCKETS + _bucket(ns)], 1)

    def snapshot(self):
        """Copies: ``counts`` (int64 [nodes, 7], columns :data:`METRIC_COUNTS`),
        ``duration_sum``/``wait_sum`` (seconds per node), ``duration_hist``/``wait_hist``
        (int64 [nodes or 1, 16] over :data:`BUCKET_BOUNDS`)."""
        return {
            "counts": self._counts.copy(),
            "duration_sum": self._duration_sum / 1e9,
            "wait_sum": self._wait_sum / 1e9,
            "duration_hist": self._duration_hist.copy(),
            "wait_hist": self._wait_hist.copy(),
        }

    @property
    def nbytes(self):
        """Bytes held by the metric arrays."""
        return sum(a.nbytes for a in (self._counts, self._duration_sum, self._wait_sum,
                                      self._duration_hist, self._wait_hist))
