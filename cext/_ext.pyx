# distutils: language = c++
"""flow_orchestrator._ext: the one compiled seam of flow-orchestrator.

Users never import this module; the public modules (``flow_orchestrator.dag``,
``flow_orchestrator.graphlib``, ``flow_orchestrator.workflow``...) wrap it.

Design
======

Graphs are stored once, compactly, and never change after they are built.

Interning
    A node is known to the core by a dense ``int32`` id: ids ``0..n-1`` in the order
    the nodes were first seen.  :class:`Interner` maps names to ids and back, one at a
    time or in bulk.  Every array below is indexed by these ids, so per-node state is a
    slot in an array rather than a Python object.

CSR adjacency
    :class:`CSRGraph` keeps both directions in compressed sparse row form: the
    successors of node ``v`` are ``succ_idx[succ_ptr[v]:succ_ptr[v+1]]`` and its
    predecessors ``pred_idx[pred_ptr[v]:pred_ptr[v+1]]``.  Offsets are ``int64`` (any
    edge count), indices ``int32``: 16 bytes a node and 8 bytes an edge.  The arrays are
    built by a stable counting sort of the edge list after one branch-free validation
    pass (linear passes, no per-edge Python work; edges already grouped by source are
    copied rather than scattered), so each node's successors keep the order in which
    their edges were given; that order is what makes our topological order equal to the
    standard library's.

Ordering
    Validation is Kahn's algorithm with a FIFO queue that is the output array itself,
    consuming the in-degree counts of the counting pass.  If Kahn's pass leaves nodes
    behind the graph has a cycle: every node left behind has a predecessor that is also
    left behind, so walking predecessors from any of them must repeat a node, and the
    walk between the two visits is a cycle.  The error names its nodes.  What only some
    callers need is built on first use, under a lock, and then frozen like the rest: the
    predecessor CSR (one more counting sort) and the levels (the longest path from a
    root to each node, one sweep in topological order).

Incremental sorting
    :class:`TopologicalSorterCore`, behind :mod:`flow_orchestrator.graphlib`, is the
    one mutable structure: the standard library's ``TopologicalSorter`` protocol
    (``add``, ``prepare``, ``get_ready``, ``done``) over interned ids.  Edges are
    appended to growable arrays, turned into a successor CSR by the same stable
    counting sort once ``prepare()`` freezes the graph, and then consumed by per-node
    counters and a FIFO of ready ids.

Execution
    :class:`RunCore` and :class:`CompiledWorkflow` (``_engine.pxi``, which opens with its
    scheduling policy) run a workflow: atomic per-node dependency counters, a shared
    ready FIFO and worker loops on a thread pool.  The packed status/attempt word of a
    node and the table of allowed transitions (``_states.pxi``, mirroring
    :mod:`flow_orchestrator.status`) and the per-node counters and histograms
    (``_metrics.pxi``, mirroring :mod:`flow_orchestrator.metrics`) have files of their own,
    and so do the join rules and branches (``_joins.pxi``) and the items of map nodes
    (``_maps.pxi``), which the scheduler calls into only for workflows that have them.

Immutability
    Every array of a :class:`CSRGraph` is created, filled and then flagged read-only
    before the constructor returns; nothing is written afterwards.  A built graph can
    therefore be shared by any number of threads and runs without a lock, under the
    GIL or without one.

Boundaries
    Arrays from users are checked (dtype, shape, length, id range, self-loops) before a
    single unchecked index is taken, so that a release build, which runs with bounds
    checks off, cannot be made to read or write out of bounds by bad input.
"""

cimport cython
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

import numpy as np

from flow_orchestrator.errors import (
    CycleError,
    EdgeArrayError,
    EmptyGraphError,
    FrozenInternerError,
    GraphTooLargeError,
    NodeNameError,
    SelfDependencyError,
    SorterCycleError,
    SorterStateError,
    UnknownNodeError,
)

cnp.import_array()

cdef extern from *:
    """
    #ifndef FO_DEBUG_BUILD
    #define FO_DEBUG_BUILD 0
    #endif
    """
    const int FO_DEBUG_BUILD

#: True when this module was compiled with bounds/wraparound/initialization checks on.
DEBUG_BUILD = bool(FO_DEBUG_BUILD)

# In dependency order: _engine.pxi uses the status word (_states.pxi) and NodeMetrics
# (_metrics.pxi); each .pxi opens with what it mirrors on the Python side.
include "_intern.pxi"
include "_csr.pxi"
include "_group.pxi"
include "_states.pxi"
include "_metrics.pxi"
include "_engine.pxi"
include "_joins.pxi"
include "_maps.pxi"
include "_topo_sorter.pxi"
