"""Pictures of workflows and runs: Graphviz DOT, Mermaid, and SVG/PNG/PDF through Graphviz.

Three kinds of *subject* can be drawn, all as the same picture of a DAG:

* a :class:`~flow_orchestrator.workflow.Workflow`: its nodes and dependencies, plain,
  or coloured by a ``statuses`` array you give (one
  :class:`~flow_orchestrator.status.NodeStatus` code per node id);
* a :class:`~flow_orchestrator.result.RunResult`: coloured by the run's statuses;
* a :class:`~flow_orchestrator.state.RunState`, a stored run: drawn from its own node
  names and CSR successor arrays and coloured by its statuses, so that a saved run can
  be drawn without the workflow's code.

:func:`to_dot` and :func:`to_mermaid` return text; :func:`render` pipes the DOT text
through Graphviz's ``dot`` program (found with :func:`shutil.which`) to get SVG, PNG or
any other format ``dot`` supports, as bytes and optionally written to a file.
:func:`graphviz_available` tells whether ``dot`` is installed.

Design:

* **One colour table.**  :data:`STATUS_STYLES` maps every
  :class:`~flow_orchestrator.status.NodeStatus` to a :class:`StatusStyle` (fill, border,
  dashed or bold border), used by both formats and by the legend, which lists every
  status with how many nodes are in it.  Colour is never the only cue: skipped and
  cancelled nodes have dashed borders, failed and timed-out ones bold borders, and every
  node's tooltip (SVG) names its status.
* **Safe identifiers, escaped labels.**  Node ``i`` is ``n<i>`` in both formats (legend
  nodes are ``legend_<status>``), so no node name is ever parsed as syntax; the name is
  the node's label, escaped for the format: in DOT ``"``, ``\\`` and newlines are
  backslash-escaped and ``&`` is written ``&amp;`` (Graphviz decodes HTML entities in
  labels); in Mermaid the characters its parser or HTML renderer would interpret
  (``" # & < > : `` and the backtick) become numeric entity codes (``#34;``) and a newline
  becomes ``<br>``.  In both, characters that cannot be shown or that SVG's XML cannot
  hold (control characters other than newline, lone surrogates, U+FFFE and U+FFFF) are
  drawn as their Python escape (``\\x00``, ``\\ud800``) instead.  Unicode is kept as is:
  the text is meant to be encoded as UTF-8.
* **Deterministic.**  Nodes are written in id order and edges sorted by (source,
  target), so the same subject always gives the same text.
* **Bounded.**  Drawing more than ``max_nodes`` nodes (:data:`DEFAULT_MAX_NODES` unless
  the caller raises it, or ``None`` for no limit) raises
  :class:`~flow_orchestrator.errors.RenderTooLargeError` before any work is done: such
  pictures are unreadable and Graphviz takes minutes to lay them out.  Below the limit
  the text is built in bulk (numpy for the edges, one ``join``), in milliseconds for
  thousands of nodes.  Mermaid renderers have their own limits (mermaid.js draws at most
  500 edges unless its ``maxEdges`` setting is raised).

Where it sits: layer L6 (interfaces).  The text itself is made by
:mod:`flow_orchestrator._draw` (layer L1), which knows graphs and statuses but not the
classes drawn, so that ``Workflow.to_dot`` and ``RunResult.to_dot`` call down into it
and nothing imports back up; this module adds Graphviz and names the subject types.

Errors: a bad argument raises :class:`~flow_orchestrator.errors.DefinitionError`; a
missing Graphviz :class:`~flow_orchestrator.errors.GraphvizNotFoundError` and a failing
``dot`` :class:`~flow_orchestrator.errors.GraphvizError` (with its ``stderr``); all
three are :class:`~flow_orchestrator.errors.FlowError` s.
"""


from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, TypeAlias

from ._draw import (
    DEFAULT_MAX_NODES,
    DIRECTIONS,
    STATUS_STYLES,
    Drawable,
    Picture,
    StatusStyle,
    to_dot,
    to_mermaid,
)
from .errors import DefinitionError, GraphvizError, GraphvizNotFoundError
from .result import RunResult
from .state import RunState
from .workflow import Workflow

__all__ = [
    "DEFAULT_MAX_NODES",
    "DIRECTIONS",
    "STATUS_STYLES",
    "Drawable",
    "Picture",
    "StatusStyle",
    "Subject",
    "graphviz_available",
    "render",
    "to_dot",
    "to_mermaid",
]

_log = logging.getLogger(__name__)

Subject: TypeAlias = Workflow | RunResult | RunState | Drawable
"""What can be drawn: a workflow, the result of a run, or a stored run state."""

_INSTALL_HINT = ("Graphviz's 'dot' program was not found on PATH; install Graphviz to render pictures "
                "(Debian/Ubuntu: apt-get install graphviz; Fedora: dnf install graphviz; "
                "macOS: brew install graphviz; Windows: choco install graphviz), "
                "or use to_dot()/to_mermaid() for the text alone")


# -- Graphviz ------------------------------------------------------------------------------------

_FORMAT = re.compile(r"[a-z][a-z0-9_]*(?::[a-z0-9_]+)*\Z")


def graphviz_available() -> bool:
    """Whether Graphviz's ``dot`` program is on ``PATH`` (so :func:`render` can work)."""
    return shutil.which("dot") is not None


def _target(target: str | os.PathLike[str] | None, format: str | None) -> tuple[str, Path | None]:
    """The output format (lower case) and the file to write (None: bytes only)."""
    if format is not None:
        if not isinstance(format, str) or not _FORMAT.match(format.lower()):
            raise DefinitionError(f"format must be a Graphviz output format such as 'svg' or 'png', got {format!r}")
        format = format.lower()
    if target is None:
        return format or "svg", None
    if isinstance(target, str) and format is None and _FORMAT.match(target.lower()):
        return target.lower(), None
    if not isinstance(target, (str, os.PathLike)):
        raise DefinitionError(f"render() takes a format name or a file path, got {target!r}")
    path = Path(target)
    if format is None:
        suffix = path.suffix[1:].lower()
        if not _FORMAT.match(suffix):
            raise DefinitionError(f"cannot tell the format to write {str(path)!r} in from its name; pass format=")
        format = suffix
    return format, path


def render(subject: Subject, target: str | os.PathLike[str] | None = None, *, format: str | None = None,
           statuses: Any = None, title: str | None = None, max_nodes: int | None = DEFAULT_MAX_NODES,
           direction: str = "TB", legend: bool | None = None, timeout: float | None = 120.0) -> bytes:
    """Draw the subject with Graphviz: the picture's bytes, also written to a file if asked.

    Args:
        subject: what to draw, as for :func:`to_dot`.
        target: a format name (``"svg"``, ``"png"``, ``"pdf"``, ``"png:cairo"``... any
            ``dot -T`` format) to get bytes only, or a file path to write them to too, in
            the format its suffix names (``"run.svg"``) unless ``format`` is given.
            ``None``: bytes in ``format``, SVG by default.
        format: the Graphviz output format; with it, a str ``target`` is always a path.
        statuses, title, max_nodes, direction, legend: as for :func:`to_dot`.
        timeout: seconds ``dot`` may take (``None``: no limit).

    Raises :class:`~flow_orchestrator.errors.GraphvizNotFoundError` (saying how to
    install Graphviz) when ``dot`` is not on ``PATH``, and
    :class:`~flow_orchestrator.errors.GraphvizError` with ``dot``'s ``stderr`` when it
    fails or times out.
    """
    fmt, path = _target(target, format)
    source = to_dot(subject, statuses=statuses, title=title, max_nodes=max_nodes, direction=direction,
                    legend=legend)
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizNotFoundError(_INSTALL_HINT)
    try:
        done = subprocess.run([dot, f"-T{fmt}"], input=source.encode("utf-8"), capture_output=True,
                              timeout=timeout, check=False)
    except FileNotFoundError:
        raise GraphvizNotFoundError(_INSTALL_HINT) from None
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode("utf-8", "replace").strip()
        raise GraphvizError(f"Graphviz dot did not finish rendering {fmt} within {timeout} s"
                            + (f": {stderr}" if stderr else ""), stderr=stderr) from None
    except OSError as exc:
        raise GraphvizError(f"cannot run Graphviz dot ({dot}): {exc}") from exc
    stderr = done.stderr.decode("utf-8", "replace").strip()
    if done.returncode != 0 or not done.stdout:
        raise GraphvizError(f"Graphviz dot failed rendering {fmt} (exit status {done.returncode}): "
                            f"{stderr or 'no output'}", returncode=done.returncode, stderr=stderr)
    if stderr:
        _log.debug("Graphviz dot warnings: %s", stderr)
    if path is not None:
        path.write_bytes(done.stdout)
    return done.stdout
