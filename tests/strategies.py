"""Hypothesis strategies shared by the tests (``tests/`` is on ``sys.path``, see pyproject)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


@st.composite
def dags(draw, max_nodes: int = 40, max_edges: int = 120):
    """A random DAG: ``(num_nodes, sources, targets)`` with edges going up a random order."""
    n = draw(st.integers(1, max_nodes))
    perm = np.array(draw(st.permutations(range(n))), dtype=np.int32)
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=max_edges))
    edges = [(perm[min(a, b)], perm[max(a, b)]) for a, b in pairs if a != b]
    src = np.array([e[0] for e in edges], dtype=np.int32)
    dst = np.array([e[1] for e in edges], dtype=np.int32)
    return n, src, dst


@st.composite
def digraphs(draw, max_nodes: int = 25, max_edges: int = 60):
    """A random directed graph without self-loops, possibly cyclic."""
    n = draw(st.integers(1, max_nodes))
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=max_edges))
    edges = [(a, b) for a, b in pairs if a != b]
    return (n, np.array([a for a, _ in edges], dtype=np.int32),
            np.array([b for _, b in edges], dtype=np.int32))
