"""Moved to :mod:`flow_orchestrator.cli.batch_demo` (the demos belong to the command line,
layer L6, interfaces); this module re-exports its names so that old imports keep working."""

from __future__ import annotations

from .cli.batch_demo import CHUNK_SIZE as CHUNK_SIZE  # public, though not in __all__
from .cli.batch_demo import CHUNKS as CHUNKS
from .cli.batch_demo import GROUPS as GROUPS
from .cli.batch_demo import build_batch_workflow, run_batch_demo

__all__ = ["build_batch_workflow", "run_batch_demo"]
