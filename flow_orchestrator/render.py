"""Pictures of workflows and runs: Graphviz DOT, Mermaid, and SVG/PNG/PDF through Graphviz.

Three kinds of *subject* can be drawn, all as the same picture of a DAG:

* a :class:`~flow_orchestrator.workflow.Workflow`: its nodes and dependencies, plain,
  or coloured by a ``statuses`` array you give (one
  :class:`~flow_orchestrator.status.NodeStatus` code per node id);
* a :class:`~flow_orchestrator.engine.RunResult`: coloured by the run's statuses;
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

Errors: a bad argument raises :class:`~flow_orchestrator.errors.DefinitionError`; a
missing Graphviz :class:`~flow_orchestrator.errors.GraphvizNotFoundError` and a failing
``dot`` :class:`~flow_orchestrator.errors.GraphvizError` (with its ``stderr``); all
three are :class:`~flow_orchestrator.errors.FlowError` s.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeAlias

import numpy as np

from .engine import RunResult
from .errors import (
    DefinitionError,
    GraphvizError,
    GraphvizNotFoundError,
    RenderTooLargeError,
)
from .state import RunState
from .status import NodeStatus
from .workflow import Workflow

__all__ = [
    "DEFAULT_MAX_NODES",
    "DIRECTIONS",
    "STATUS_STYLES",
    "StatusStyle",
    "Subject",
    "graphviz_available",
    "render",
    "to_dot",
    "to_mermaid",
]

_log = logging.getLogger(__name__)

Subject: TypeAlias = Workflow | RunResult | RunState
"""What can be drawn: a workflow, the result of a run, or a stored run state."""

DEFAULT_MAX_NODES = 5000
"""The most nodes drawn unless the caller passes a larger ``max_nodes`` (or ``None``)."""

DIRECTIONS = ("TB", "LR", "BT", "RL")
"""The layout directions: top to bottom (default), left to right, and their reverses."""

_INSTALL_HINT = ("Graphviz's 'dot' program was not found on PATH; install Graphviz to render pictures "
                "(Debian/Ubuntu: apt-get install graphviz; Fedora: dnf install graphviz; "
                "macOS: brew install graphviz; Windows: choco install graphviz), "
                "or use to_dot()/to_mermaid() for the text alone")


@dataclass(frozen=True, slots=True)
class StatusStyle:
    """How nodes in one status are drawn.

    Attributes:
        fill: background colour (``#rrggbb``).
        stroke: border colour (``#rrggbb``).
        dashed: a dashed border (nodes that never ran to the end: skipped, cancelled).
        bold: a thick border (nodes that went wrong: failed, timed out).
    """

    fill: str
    stroke: str
    dashed: bool = False
    bold: bool = False


STATUS_STYLES: Mapping[NodeStatus, StatusStyle] = MappingProxyType({
    NodeStatus.PENDING: StatusStyle("#f5f5f5", "#9e9e9e"),
    NodeStatus.RUNNING: StatusStyle("#bbdefb", "#1e88e5"),
    NodeStatus.COMPLETED: StatusStyle("#c8e6c9", "#43a047"),
    NodeStatus.FAILED: StatusStyle("#ffcdd2", "#e53935", bold=True),
    NodeStatus.SKIPPED: StatusStyle("#eeeeee", "#757575", dashed=True),
    NodeStatus.CANCELLED: StatusStyle("#ffe0b2", "#fb8c00", dashed=True),
    NodeStatus.TIMED_OUT: StatusStyle("#e1bee7", "#8e24aa", bold=True),
})
"""The one colour table: the style of every :class:`~flow_orchestrator.status.NodeStatus`."""

_PLAIN = StatusStyle("#ffffff", "#424242")  # nodes of a workflow drawn without statuses
_TEXT_COLOUR = "#212121"
_EDGE_COLOUR = "#616161"
_FONT = "Helvetica"

# -- escaping ------------------------------------------------------------------------------------

# Characters drawn as their Python escape: C0/C1 controls (newline is a line break),
# lone surrogates (not encodable) and U+FFFE/U+FFFF (not allowed in XML, hence in SVG).
_HIDDEN = [*range(0x0A), *range(0x0B, 0x20), *range(0x7F, 0xA0), *range(0xD800, 0xE000), 0xFFFE, 0xFFFF]
_VISIBLE = {code: ascii(chr(code))[1:-1] for code in _HIDDEN}

_DOT_ESCAPES: dict[int, str] = {code: text.replace("\\", "\\\\") for code, text in _VISIBLE.items()}
_DOT_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", ord("\n"): "\\n", ord("&"): "&amp;"})

# Mermaid: quotes end a label; '#...;' are its entity codes; '&', '<', '>' are HTML;
# ':' (with '#' and ';') trips its style-line preprocessing; a backtick starts a
# markdown label; 'ﬂ' and '¶' are its internal entity placeholders.
_MERMAID_ESCAPES: dict[int, str] = dict(_VISIBLE)
_MERMAID_ESCAPES.update({ord(c): f"#{ord(c)};" for c in "\"#&<>:`\ufb02\u00b6"})
_MERMAID_ESCAPES[ord("\n")] = "<br>"


def _any_of(table: dict[int, str]) -> re.Pattern[str]:
    """A pattern matching any character that ``table`` escapes."""
    return re.compile("[" + "".join(re.escape(chr(code)) for code in sorted(table)) + "]")


_DOT_SPECIAL = _any_of(_DOT_ESCAPES)
_MERMAID_SPECIAL = _any_of(_MERMAID_ESCAPES)


def _dot_text(text: str) -> str:
    """``text`` escaped for a double-quoted DOT string (label, tooltip, graph name)."""
    return text.translate(_DOT_ESCAPES)


def _escape_all(names: Sequence[str], special: re.Pattern[str], table: dict[int, str]) -> list[str]:
    """Every name escaped with ``table``; one scan of all the names when none needs it
    (the usual case: translating each name costs far more)."""
    if special.search("".join(names)) is None:
        return list(names)
    return [name.translate(table) if special.search(name) else name for name in names]


def _edge_lines(template: str, drawing: _Drawing) -> str:
    """One ``template % (source, target)`` line per edge, formatted in one C-level call."""
    if not drawing.sources.size:
        return ""
    pairs = np.column_stack((drawing.sources, drawing.targets)).ravel().tolist()
    return ((template + "\n") * drawing.sources.size % tuple(pairs))[:-1]


# -- what to draw --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Drawing:
    names: Sequence[str]
    sources: np.ndarray  # int64, sorted with targets by (source, target), no duplicates
    targets: np.ndarray
    statuses: np.ndarray | None  # NodeStatus codes by node id, or None: plain
    title: str


def _drawing(subject: Subject, statuses: Any, title: str | None, max_nodes: int | None) -> _Drawing:
    if isinstance(subject, Workflow):
        n, what = len(subject), f"workflow {subject.name!r}"
    elif isinstance(subject, RunResult):
        n, what = len(subject.statuses), f"run {subject.run_id} of workflow {subject.workflow.name!r}"
    elif isinstance(subject, RunState):
        n, what = subject.num_nodes, f"run {subject.run_id} of workflow {subject.workflow!r}"
    else:
        raise DefinitionError(f"can only draw a Workflow, a RunResult or a RunState, not {type(subject).__name__}")
    _check_size(n, max_nodes, what)
    if title is not None and not isinstance(title, str):
        raise DefinitionError(f"title must be a str or None, got {title!r}")
    if isinstance(subject, Workflow):
        names: Sequence[str] = subject.names
        indptr, indices = subject.graph.succ_indptr, subject.graph.succ_indices
        own, default_title = None, subject.name
    elif isinstance(subject, RunResult):
        workflow = subject.workflow
        names, indptr, indices = workflow.names, workflow.graph.succ_indptr, workflow.graph.succ_indices
        own, default_title = subject.statuses, f"{workflow.name} run {subject.run_id} ({subject.status})"
    else:
        names, indptr, indices = subject.node_names, subject.succ_indptr, subject.succ_indices
        own, default_title = subject.statuses, f"{subject.workflow} run {subject.run_id} ({subject.run_status})"
    codes = own if statuses is None else _status_codes(statuses, n)
    sources, targets = _edges(np.asarray(indptr), np.asarray(indices), n)
    return _Drawing(names, sources, targets, codes, default_title if title is None else title)


def _check_size(n: int, max_nodes: int | None, what: str) -> None:
    if max_nodes is None:
        return
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise DefinitionError(f"max_nodes must be an int >= 1 or None, got {max_nodes!r}")
    if n > max_nodes:
        raise RenderTooLargeError(
            f"{what} has {n} nodes, more than max_nodes={max_nodes} allows drawing; pass "
            f"max_nodes={n} (or None) to draw it anyway (Graphviz may take minutes to lay it out)")


def _status_codes(statuses: Any, n: int) -> np.ndarray:
    """``statuses`` checked as one NodeStatus code per node: DefinitionError otherwise."""
    try:
        codes = np.asarray(statuses)
    except Exception as exc:  # noqa: BLE001 - anything numpy refuses is a bad argument
        raise DefinitionError(f"statuses must be an array of NodeStatus codes: {exc}") from None
    if codes.dtype.kind not in "iu":
        raise DefinitionError(f"statuses must be an integer array of NodeStatus codes, got dtype {codes.dtype}")
    if codes.shape != (n,):
        raise DefinitionError(f"statuses must have one code per node ({n}), got shape {codes.shape}")
    if n and (int(codes.min()) < 0 or int(codes.max()) >= len(NodeStatus)):
        raise DefinitionError(f"statuses must be NodeStatus codes 0..{len(NodeStatus) - 1}")
    return codes


def _edges(indptr: np.ndarray, indices: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The (source, target) id pairs of CSR successor arrays, sorted and distinct."""
    offsets = indptr.astype(np.int64)
    sources = np.repeat(np.arange(n, dtype=np.int64), offsets[1:] - offsets[:-1])
    targets = indices.astype(np.int64)
    keys = sources * max(n, 1) + targets
    if keys.size > 1 and not bool(np.all(keys[1:] > keys[:-1])):
        keys = np.sort(keys)  # np.unique is far slower on int arrays in numpy 2
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
        sources, targets = keys // n, keys % n
    return sources, targets


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise DefinitionError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")


def _legend_entries(codes: np.ndarray | None) -> list[tuple[NodeStatus, str]]:
    """``(status, legend text)`` for every status, with node counts when there are statuses."""
    if codes is None:
        return [(status, str(status)) for status in NodeStatus]
    counts = np.bincount(codes.astype(np.int64), minlength=len(NodeStatus)).tolist()
    return [(status, f"{status} ({counts[status]})") for status in NodeStatus]


# -- DOT -----------------------------------------------------------------------------------------


def _dot_style(style: StatusStyle) -> str:
    attrs = f'fillcolor="{style.fill}", color="{style.stroke}"'
    if style.dashed:
        attrs += ', style="rounded,filled,dashed"'
    if style.bold:
        attrs += ", penwidth=2.5"
    return attrs


def to_dot(subject: Subject, *, statuses: Any = None, title: str | None = None,
           max_nodes: int | None = DEFAULT_MAX_NODES, direction: str = "TB",
           legend: bool | None = None) -> str:
    """The subject as a Graphviz DOT ``digraph``, nodes coloured by status.

    Args:
        subject: a :class:`~flow_orchestrator.workflow.Workflow`, a
            :class:`~flow_orchestrator.engine.RunResult` or a
            :class:`~flow_orchestrator.state.RunState`.
        statuses: one :class:`~flow_orchestrator.status.NodeStatus` code per node id
            (any integer array-like) to colour the nodes with; overrides a run's own
            statuses.  A workflow without it is drawn plain.
        title: the picture's caption; by default the workflow's name (and for a run its
            id and status); ``""`` for none.
        max_nodes: refuse (:class:`~flow_orchestrator.errors.RenderTooLargeError`) to
            draw more nodes than this; ``None`` for no limit.
        direction: ``"TB"`` (top to bottom), ``"LR"``, ``"BT"`` or ``"RL"``.
        legend: add a legend of the status colours, with each status's node count;
            by default only when the nodes are coloured.

    Node ``i`` is the DOT id ``n<i>`` with the escaped node name as its label (see the
    module documentation); edges go from a dependency to its dependent.
    """
    _check_direction(direction)
    drawing = _drawing(subject, statuses, title, max_nodes)
    codes = drawing.statuses
    out = [f'digraph "{_dot_text(drawing.title or "workflow")}" {{']
    graph_attrs = f'rankdir={direction}, fontname="{_FONT}"'
    if drawing.title:
        graph_attrs += f', label="{_dot_text(drawing.title)}", labelloc=t'
    out.append(f"  graph [{graph_attrs}];")
    out.append(f'  node [shape=box, style="rounded,filled", fontname="{_FONT}", fontcolor="{_TEXT_COLOUR}", '
               f"{_dot_style(_PLAIN)}];")
    out.append(f'  edge [color="{_EDGE_COLOUR}", arrowsize=0.7];')
    labels = _escape_all(drawing.names, _DOT_SPECIAL, _DOT_ESCAPES)
    if codes is None:
        out.extend([f'  n{i} [label="{label}", tooltip="{label}"];' for i, label in enumerate(labels)])
    else:
        words = [str(NodeStatus(code)) for code in range(len(NodeStatus))]
        attrs = [_dot_style(STATUS_STYLES[NodeStatus(code)]) for code in range(len(NodeStatus))]
        out.extend([f'  n{i} [label="{label}", tooltip="{label}: {words[code]}", {attrs[code]}];'
                    for i, (label, code) in enumerate(zip(labels, codes.tolist()))])
    if drawing.sources.size:
        out.append(_edge_lines("  n%d -> n%d;", drawing))
    if codes is not None if legend is None else bool(legend):
        out.append("  subgraph cluster_legend {")
        out.append('    graph [label="status", style="rounded,dashed", color="#bdbdbd", fontsize=10];')
        out.append("    node [fontsize=10];")
        entries = _legend_entries(codes)
        out.extend(f'    legend_{status.name.lower()} [label="{text}", tooltip="{text}", '
                   f"{_dot_style(STATUS_STYLES[status])}];" for status, text in entries)
        ids = [f"legend_{status.name.lower()}" for status, _ in entries]
        if direction in ("LR", "RL"):  # a rank is then a column, laid out bottom to top
            ids.reverse()
        out.append(f"    {{ rank=same; {' -> '.join(ids)} [style=invis]; }}")  # in status order
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


# -- Mermaid -------------------------------------------------------------------------------------


def _mermaid_style(style: StatusStyle) -> str:
    attrs = f"fill:{style.fill},stroke:{style.stroke},color:{_TEXT_COLOUR}"
    if style.dashed:
        attrs += ",stroke-dasharray:5 5"
    if style.bold:
        attrs += ",stroke-width:3px"
    return attrs


def _mermaid_title(title: str) -> str:
    """``title`` as a YAML double-quoted scalar: JSON's escapes (which YAML shares),
    and ``;`` as ``\\x3b`` so the line can never look like a Mermaid style line."""
    return json.dumps(title.translate(_VISIBLE), ensure_ascii=False).replace(";", "\\x3b")


def to_mermaid(subject: Subject, *, statuses: Any = None, title: str | None = None,
               max_nodes: int | None = DEFAULT_MAX_NODES, direction: str = "TB",
               legend: bool | None = None) -> str:
    """The subject as a Mermaid ``flowchart``, nodes coloured by status.

    Takes the same arguments as :func:`to_dot`.  Node ``i`` is the Mermaid id ``n<i>``
    with the escaped node name as its quoted label; each status is a ``classDef`` named
    after it (``completed``, ``timed_out``...) and nodes join it with ``class`` lines;
    the title goes in the YAML front matter and the legend in a ``legend`` subgraph.
    """
    _check_direction(direction)
    drawing = _drawing(subject, statuses, title, max_nodes)
    codes = drawing.statuses
    out: list[str] = []
    if drawing.title:
        out.extend(["---", f"title: {_mermaid_title(drawing.title)}", "---"])
    out.append(f"flowchart {direction}")
    labels = _escape_all(drawing.names, _MERMAID_SPECIAL, _MERMAID_ESCAPES)
    out.extend([f'  n{i}["{label}"]' for i, label in enumerate(labels)])
    if drawing.sources.size:
        out.append(_edge_lines("  n%d --> n%d", drawing))
    show_legend = codes is not None if legend is None else bool(legend)
    if show_legend:
        out.append("  subgraph legend [status]")
        out.append("    direction LR")
        out.extend(f'    legend_{status.name.lower()}["{text}"]' for status, text in _legend_entries(codes))
        out.append("  end")
    if codes is not None or show_legend:
        out.extend(f"  classDef {status.name.lower()} {_mermaid_style(STATUS_STYLES[status])}"
                   for status in NodeStatus)
    if codes is not None:
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(NodeStatus) + 1)).tolist()
        ids = order.tolist()
        for status in NodeStatus:
            members = ids[bounds[status]:bounds[status + 1]]
            if members:
                out.append(f"  class {','.join(map('n{}'.format, members))} {status.name.lower()}")
    if show_legend:
        out.extend(f"  class legend_{status.name.lower()} {status.name.lower()}" for status in NodeStatus)
    return "\n".join(out) + "\n"


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
