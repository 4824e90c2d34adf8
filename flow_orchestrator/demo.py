"""Moved to :mod:`flow_orchestrator.cli.demo` (the demos belong to the command line, layer
L6, interfaces); this module re-exports its names so that old imports keep working."""

from __future__ import annotations

from .cli.demo import DemoFigures, layered_edges, run_demo
from .cli.demo import format_figures as format_figures  # public, though not in __all__

__all__ = ["DemoFigures", "layered_edges", "run_demo"]
