"""The library's exception hierarchy.

Every error the library raises on bad input derives from :class:`FlowError`, so one
``except FlowError`` catches them all.  Where a builtin exception is the natural
category, the error also derives from it (an unknown node is a ``LookupError``, a cycle
is a ``ValueError`` and a :class:`graphlib.CycleError`), so code written against the
standard library keeps working.  The core never lets a bare ``KeyError`` or
``IndexError`` escape on bad input.
"""

from __future__ import annotations

import graphlib as _std_graphlib
from collections.abc import Sequence
from typing import Any

__all__ = [
    "FlowError",
    "GraphError",
    "EmptyGraphError",
    "CycleError",
    "DuplicateNodeError",
    "UnknownNodeError",
    "SelfDependencyError",
    "EdgeArrayError",
    "NodeNameError",
    "DefinitionError",
    "FrozenInternerError",
    "GraphTooLargeError",
]


class FlowError(Exception):
    """Base class of every error raised by flow-orchestrator."""


class GraphError(FlowError, ValueError):
    """The shape of a graph or workflow definition is invalid."""


class EmptyGraphError(GraphError):
    """A graph or workflow with no nodes was given where at least one is required."""


class CycleError(GraphError, _std_graphlib.CycleError):
    """The graph has a cycle.

    ``args`` follow the standard library's convention: ``(message, cycle)`` where
    ``cycle`` is a list of nodes in which each node depends on the one before it and
    the first and last nodes are the same.  The message names the nodes.
    """

    def __init__(self, message: str, cycle: Sequence[Any]) -> None:
        super().__init__(message, list(cycle))

    @property
    def cycle(self) -> list[Any]:
        """The nodes of one cycle, first node repeated at the end."""
        return self.args[1]

    def __str__(self) -> str:
        return str(self.args[0])


class DuplicateNodeError(GraphError):
    """Two nodes were given the same name."""


class UnknownNodeError(GraphError, LookupError):
    """A node name or id that the graph does not contain."""


class SelfDependencyError(GraphError):
    """A node depends on itself."""


class EdgeArrayError(GraphError, TypeError):
    """Edge arrays given in bulk are malformed: wrong dtype, shape, length or ids out of range."""


class NodeNameError(GraphError, TypeError):
    """A node name is not a non-empty ``str``."""


class FrozenInternerError(GraphError):
    """A name was added to an interner that belongs to a built (immutable) graph."""


class GraphTooLargeError(GraphError):
    """A graph exceeds the core's limits (2**31 - 1 nodes)."""


class DefinitionError(FlowError, ValueError):
    """A node's options or a workflow definition are invalid (bad retries, timeout, ...)."""
