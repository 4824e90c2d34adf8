"""What both benchmark runners use: the graph table's row, number formats, the
machine's description and the JSON file.

The bottom of ``bench/``'s imports: it imports nothing from ``bench``, and the runners
(``run.py``, ``compare.py``) and the benchmark modules take what they share from here
rather than from each other.  ``bench_graphlib.py``'s ``compare()`` returns rows with
the fields of :class:`Row`.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One line of ``run.py``'s graph table; ``ratio`` is this time / ours on the same
    graph (none for input preparation, which is not a peer)."""

    engine: str
    graph: str
    nodes: int
    edges: int
    seconds: float
    ratio: float | None = None


# -- number formats ------------------------------------------------------------------


def fmt_ms(seconds: float) -> str:
    """``seconds`` in milliseconds, to 3 or 4 significant figures (``0.07``, ``16.7``, ``1,234``)."""
    ms = seconds * 1e3
    return f"{ms:,.2f}" if ms < 10 else f"{ms:,.1f}" if ms < 1000 else f"{ms:,.0f}"


def fmt_ratio(ratio: float | None) -> str:
    """A ratio as ``2.16x``, ``22.4x``, ``224x``; ``-`` for none."""
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:,.1f}x" if ratio < 100 else f"{ratio:,.0f}x"


# -- the machine ---------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                        platform.processor())
    except OSError:
        return platform.processor()


def dist_version(dist: str) -> str | None:
    """The installed version of the distribution ``dist``, or ``None`` if it is not installed."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- files ---------------------------------------------------------------------------


def write_json(path: Path, report: Any) -> None:
    """``report`` as indented JSON, with a final newline, to ``path``."""
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
