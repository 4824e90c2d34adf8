"""Benchmark graphs with fixed seeds, and converters to the inputs the peers take.

Every generator returns a :class:`Graph`: ``(num_nodes, sources, targets)`` with int32
edge arrays, where ``sources[i] -> targets[i]`` means "``targets[i]`` depends on
``sources[i]``", as in :meth:`CSRGraph.from_edges`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# Widest layer of the layered graphs built by node count: squares up to this width, so
# that 1,000,000 nodes is 1000 layers of 1000, the reference graph (~3M edges).
LAYER_WIDTH = 1000


class Graph(NamedTuple):
    """Unpacks as the arguments of ``CSRGraph.from_edges(num_nodes, sources, targets)``."""

    num_nodes: int
    sources: np.ndarray
    targets: np.ndarray

    @property
    def num_edges(self) -> int:
        return int(self.sources.shape[0])


def layered(n_layers: int, width: int, deps: int = 3, seed: int = 0) -> Graph:
    """``n_layers`` layers of ``width`` nodes; each node past layer 0 depends on
    ``deps`` distinct random nodes of the layer before.  Ids run layer by layer.

    Edges come grouped by target, as a builder declaring one node at a time makes them.
    """
    if not 0 < deps <= width:
        raise ValueError(f"deps must be in [1, width], got {deps}")
    rng = np.random.default_rng(seed)
    num_nodes = n_layers * width
    targets = np.arange(width, num_nodes, dtype=np.int32)
    # Distinct picks without a per-node loop: sorted draws from [0, width - deps], the
    # j-th one shifted up by j, are strictly increasing and so never repeat.
    picks = np.sort(rng.integers(0, width - deps + 1, size=(targets.size, deps)), axis=1)
    picks += np.arange(deps)
    sources = (targets[:, None] // width - 1) * width + picks
    return Graph(num_nodes, sources.astype(np.int32).ravel(), np.repeat(targets, deps))


def chain(n: int) -> Graph:
    """``0 -> 1 -> ... -> n-1``: the deepest graph, one node per level."""
    ids = np.arange(n, dtype=np.int32)
    return Graph(n, ids[:-1], ids[1:])


def fan_out_in(n: int) -> Graph:
    """Node 0 -> ``n`` independent nodes -> node ``n + 1``: the widest graph, 3 levels."""
    middle = np.arange(1, n + 1, dtype=np.int32)
    sources = np.concatenate([np.zeros(n, dtype=np.int32), middle])
    targets = np.concatenate([middle, np.full(n, n + 1, dtype=np.int32)])
    return Graph(n + 2, sources, targets)


def diamond() -> Graph:
    """``0 -> {1, 2} -> 3``: small enough that only per-call overhead shows."""
    return Graph(4, np.array([0, 0, 1, 2], dtype=np.int32), np.array([1, 2, 3, 3], dtype=np.int32))


def shuffled(graph: Graph, seed: int = 0) -> Graph:
    """The same graph with node ids randomly permuted.

    Generators number nodes in dependency order, which keeps memory access sequential;
    shuffled ids show the cost of random access on graphs that are numbered otherwise.
    """
    perm = np.random.default_rng(seed).permutation(graph.num_nodes).astype(np.int32)
    return Graph(graph.num_nodes, perm[graph.sources], perm[graph.targets])


KINDS = ("layered", "layered-shuffled", "chain", "fan_out_in")


def make(kind: str, num_nodes: int) -> Graph:
    """A graph of ``kind`` (one of :data:`KINDS`) with about ``num_nodes`` nodes."""
    if kind not in KINDS:
        raise ValueError(f"unknown graph kind {kind!r}; known: {', '.join(KINDS)}")
    if kind == "chain":
        return chain(num_nodes)
    if kind == "fan_out_in":
        return fan_out_in(max(num_nodes - 2, 1))
    width = max(min(LAYER_WIDTH, math.isqrt(num_nodes)), 1)
    graph = layered(num_nodes // width, width, deps=min(3, width))
    return shuffled(graph) if kind == "layered-shuffled" else graph


# -- inputs of the peers -----------------------------------------------------------


def edge_list(graph: Graph) -> list[tuple[int, int]]:
    """``[(source, target), ...]`` of Python ints, for networkx and rustworkx."""
    return list(zip(graph.sources.tolist(), graph.targets.tolist()))


def predecessor_dict(graph: Graph) -> dict[int, list[int]]:
    """``{node: [its predecessors]}`` over every node, for stdlib ``graphlib``."""
    by_target = np.argsort(graph.targets, kind="stable")
    preds = graph.sources[by_target].tolist()
    ends = np.cumsum(np.bincount(graph.targets, minlength=graph.num_nodes)).tolist()
    starts = [0, *ends[:-1]]
    return {node: preds[lo:hi] for node, (lo, hi) in enumerate(zip(starts, ends))}
