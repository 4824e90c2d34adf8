"""A drop-in replacement for the standard library's :mod:`graphlib`, on a compiled core.

Switch by changing one import::

    from flow_orchestrator.graphlib import TopologicalSorter, CycleError

Everything observable is the standard library's: the ready batches, the static order,
the cycle reported, the exceptions and their messages, the state left after an error.

How it maps to the core
=======================

:class:`TopologicalSorter` is a thin subclass of the compiled ``TopologicalSorterCore``
(``cext/_topo_sorter.pxi``); every method is the compiled one, so a call costs what a
call into C costs, without a Python layer in between.

* ``add`` interns each node to a dense ``int32`` id, in first-seen order, which is the
  insertion order of the standard library's ``_node2info`` dict; it adds the number of
  predecessors to the node's counter and appends one ``pred -> node`` edge a
  predecessor, duplicates included (a predecessor listed twice counts twice).
* ``prepare`` turns the edges into a successor CSR by a stable counting sort, so each
  node's successors keep their insertion order, as the standard library's ``successors``
  lists do, and queues the nodes without predecessors in id order.
* ``get_ready`` hands out the queued ids as a tuple of nodes; ``done`` counts a node
  out of its successors' counters and queues those reaching zero.  The counters use the
  standard library's sentinels: -1 once handed out, -2 once done.
* A node comes back as the object the standard library would return: the first one
  seen, or, for a node released by an edge, the object given as *node* to the ``add``
  call that made the edge, when that object is equal to but not the first one (``1.0``
  for ``1``, an equal but distinct ``str``).  Such stand-ins are tracked from the first
  one on, so graphs without any pay nothing for them.

Why the order is the standard library's
=======================================

A batch is exactly what the ``done`` calls since the previous batch queued, in call
order, and ``static_order`` calls ``done`` on each batch in batch order.  So
``static_order`` is Kahn's algorithm with a FIFO queue whose first entries are the
nodes without predecessors in insertion order, and where each node queues its
successors in insertion order.  Both implementations start from the same ids in the
same order and follow the same successor lists, so they produce the same sequence.

The cycle reported by ``prepare`` is the standard library's too: the core runs the same
iterative depth-first search (start nodes in insertion order, successors in insertion
order).  It runs only when a Kahn pass over a copy of the counters cannot reach every
node, so an acyclic graph never pays for it.

Errors
======

The ``ValueError`` s are :class:`~flow_orchestrator.errors.SorterStateError`, also a
:class:`~flow_orchestrator.errors.FlowError`.  :class:`CycleError` is a
:class:`flow_orchestrator.errors.CycleError`, hence also a :class:`graphlib.CycleError`,
with the standard library's ``args`` and ``str()``.  Unhashable nodes raise the
``TypeError`` of the underlying dict.
"""

from __future__ import annotations

import types

from ._ext import TopologicalSorterCore as _TopologicalSorterCore
from .errors import SorterCycleError as CycleError

__all__ = ["TopologicalSorter", "CycleError"]


class TopologicalSorter(_TopologicalSorterCore):
    """Provides functionality to topologically sort a graph of hashable nodes.

    ``TopologicalSorter(graph)`` adds ``graph.items()`` as ``add(node, *predecessors)``
    would.  Same API and behaviour as :class:`graphlib.TopologicalSorter`.
    """

    __class_getitem__ = classmethod(types.GenericAlias)
