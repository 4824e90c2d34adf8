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

Where it sits: layer L1 (core seam): a thin face over the compiled ``_ext``.  The package
imports it before anything else that needs ``_ext``, so a source tree whose extension is
not built fails here with a one-line hint instead of a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import os

try:
    from ._ext import CSRGraph, Interner
except ModuleNotFoundError as exc:
    if exc.name != f"{__package__}._ext":
        raise
    raise ModuleNotFoundError(
        f"No module named {exc.name!r}: the compiled extension is not built in this source tree "
        f"({os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}): run `pip install -e .` or "
        "`python setup.py build_ext --inplace` there, or run from outside the checkout (it shadows an "
        "installed copy)", name=exc.name) from None

__all__ = ["CSRGraph", "Interner"]
