"""The compiled graph core, public face: :class:`CSRGraph` and :class:`Interner`.

:class:`CSRGraph` is an immutable, validated DAG over dense ``int32`` node ids stored
as CSR arrays (see the design notes in :mod:`flow_orchestrator._ext`).  Build one in
bulk from numpy edge arrays::

    >>> import numpy as np
    >>> from flow_orchestrator.dag import CSRGraph
    >>> g = CSRGraph.from_edges(4, np.array([0, 0, 1, 2]), np.array([1, 2, 3, 3]))
    >>> g.topological_order().tolist()
    [0, 1, 2, 3]
    >>> g.levels().tolist()
    [0, 1, 1, 2]
    >>> g.descendants([1]).tolist()
    [3]

:class:`Interner` maps names to those ids and back::

    >>> from flow_orchestrator.dag import Interner
    >>> names = Interner(["extract", "transform"])
    >>> names.id("transform"), names.name(0)
    (1, 'extract')

Where it sits: layer L1 (core seam): a thin face over the compiled ``_ext``.
"""

from __future__ import annotations

from ._ext import CSRGraph, Interner

__all__ = ["CSRGraph", "Interner"]
