"""The timed operation of each engine, shared by bench_graph.py and run.py.

Each takes the input its engine is given in practice, made beforehand by
:mod:`bench.graphs`, and returns the topological order, so that no engine can skip
the sort by returning a lazy object.  Peers are passed in as modules: they are
optional, and each caller decides what to do when one is missing.
"""

from __future__ import annotations

import graphlib
from types import ModuleType

from bench.graphs import Graph
from flow_orchestrator.dag import CSRGraph


def ours_build_sort(graph: Graph) -> CSRGraph:
    """Build, validate (ids, self-loops, cycles) and sort, from numpy edge arrays."""
    return CSRGraph.from_edges(*graph)


def rustworkx_graph(rx: ModuleType, edges: list[tuple[int, int]]):
    """A rustworkx graph; nodes are created up to the largest id in ``edges``."""
    dag = rx.PyDiGraph()
    dag.extend_from_edge_list(edges)
    return dag


def rustworkx_build_sort(rx: ModuleType, edges: list[tuple[int, int]]) -> list[int]:
    return rx.topological_sort(rustworkx_graph(rx, edges))


def networkx_build_sort(nx: ModuleType, edges: list[tuple[int, int]], num_nodes: int) -> list[int]:
    dag = nx.DiGraph()
    dag.add_nodes_from(range(num_nodes))  # nodes without edges count too, as in ours
    dag.add_edges_from(edges)
    # topological_sort checks for cycles itself; is_directed_acyclic_graph is the
    # validation step a networkx user writes, so it is part of the work timed.
    if not nx.is_directed_acyclic_graph(dag):
        raise ValueError("benchmark graph has a cycle")
    return list(nx.topological_sort(dag))


def stdlib_static_order(predecessors: dict[int, list[int]]) -> list[int]:
    return list(graphlib.TopologicalSorter(predecessors).static_order())
