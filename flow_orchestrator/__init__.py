"""flow-orchestrator: an embeddable workflow engine for Python with a Cython core.

Define a DAG of Python callables with :class:`WorkflowBuilder` (fluently or with
decorators) or in bulk with :meth:`Workflow.from_arrays`; the compiled core
(:mod:`flow_orchestrator.dag`) validates and orders it, and :class:`Engine` runs it on
a thread pool with an atomic-counter scheduler (:mod:`flow_orchestrator.engine`).  :mod:`flow_orchestrator.graphlib`
is a faster drop-in for the standard library's :mod:`graphlib`.

Where it sits: layer L6 (interfaces), the public face; ``docs/internals.md`` opens
with the map of the layers below it.

The library logs through the standard :mod:`logging` module under the
``flow_orchestrator`` logger and configures nothing at import.
"""

from __future__ import annotations

import logging as _logging

from . import errors
from .dag import CSRGraph, Interner
from .errors import (
    CycleError,
    DefinitionError,
    DuplicateNodeError,
    EdgeArrayError,
    EmptyGraphError,
    FlowError,
    GraphError,
    SelfDependencyError,
    UnknownNodeError,
)
from .data import WorkflowData
from .context import ExternalContext, NodeContext
from .engine import CancellationToken, Engine, RunHandle
from .errors import BranchError, NodeFailedError, RunCancelledError, WorkflowFailedError
from .render import to_dot, to_mermaid
from .result import RunResult
from .status import NodeStatus, RunStatus, SkipReason, Trigger
from ._version import __version__
from .workflow import Node, NodeOptions, Workflow, WorkflowBuilder

__all__ = [
    "BranchError",
    "CancellationToken",
    "Engine",
    "ExternalContext",
    "NodeContext",
    "NodeFailedError",
    "NodeStatus",
    "RunCancelledError",
    "RunHandle",
    "RunResult",
    "RunStatus",
    "SkipReason",
    "Trigger",
    "WorkflowData",
    "WorkflowFailedError",
    "CSRGraph",
    "CycleError",
    "DefinitionError",
    "DuplicateNodeError",
    "EdgeArrayError",
    "EmptyGraphError",
    "FlowError",
    "GraphError",
    "Interner",
    "Node",
    "NodeOptions",
    "SelfDependencyError",
    "UnknownNodeError",
    "Workflow",
    "WorkflowBuilder",
    "errors",
    "to_dot",
    "to_mermaid",
]

_logging.getLogger(__name__).addHandler(_logging.NullHandler())
