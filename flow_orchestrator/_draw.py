"""Pictures of DAGs as text: Graphviz DOT and Mermaid, coloured by node status.

Layer L1 (core seam), beside :mod:`flow_orchestrator.dag`.  This module knows graphs
(CSR successor arrays, node names, status codes), not the classes that hold them:
whatever can be drawn offers a ``_picture()`` method returning a :class:`Picture`
(:class:`~flow_orchestrator.workflow.Workflow`,
:class:`~flow_orchestrator.result.RunResult`, :class:`~flow_orchestrator.state.RunState`),
so ``Workflow.to_dot`` can call down here and nothing here calls back up, as
``dask/dot.py`` draws graphs without knowing collections.  The public face, with
Graphviz rendering, is :mod:`flow_orchestrator.render`; its documentation says how the
pictures look and why.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

import numpy as np

from .errors import DefinitionError, RenderTooLargeError
from .status import NodeStatus

__all__ = [
    "DEFAULT_MAX_NODES",
    "DIRECTIONS",
    "STATUS_STYLES",
    "Drawable",
    "Picture",
    "StatusStyle",
    "to_dot",
    "to_mermaid",
]



class Picture(NamedTuple):
    """What a drawing shows: a DAG as CSR successor arrays, its node names, and the
    status codes to colour it with (``None``: plain).  ``names`` is called only once the
    size check passed: listing a million names costs more than refusing to draw them."""

    names: Callable[[], Sequence[str]]
    num_nodes: int
    succ_indptr: Any
    succ_indices: Any
    statuses: np.ndarray | None
    title: str   # the default caption
    what: str    # how errors name the subject ("workflow 'etl'", "run 7 of workflow 'etl'")


class Drawable(Protocol):
    """Anything that can be drawn: it says what its picture shows.  Workflows, run
    results and stored run states are drawable; this module never imports them."""

    def _picture(self) -> Picture: ...

DEFAULT_MAX_NODES = 5000
"""The most nodes drawn unless the caller passes a larger ``max_nodes`` (or ``None``)."""

DIRECTIONS = ("TB", "LR", "BT", "RL")
"""The layout directions: top to bottom (default), left to right, and their reverses."""



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


def _drawing(subject: Drawable, statuses: Any, title: str | None, max_nodes: int | None) -> _Drawing:
    picture = getattr(subject, "_picture", None)
    if picture is None or isinstance(subject, type):
        raise DefinitionError(f"can only draw a Workflow, a RunResult or a RunState, not {type(subject).__name__}")
    seen: Picture = picture()
    n = seen.num_nodes
    _check_size(n, max_nodes, seen.what)
    if title is not None and not isinstance(title, str):
        raise DefinitionError(f"title must be a str or None, got {title!r}")
    codes = seen.statuses if statuses is None else _status_codes(statuses, n)
    sources, targets = _edges(np.asarray(seen.succ_indptr), np.asarray(seen.succ_indices), n)
    return _Drawing(seen.names(), sources, targets, codes, seen.title if title is None else title)


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


def to_dot(subject: Drawable, *, statuses: Any = None, title: str | None = None,
           max_nodes: int | None = DEFAULT_MAX_NODES, direction: str = "TB",
           legend: bool | None = None) -> str:
    """The subject as a Graphviz DOT ``digraph``, nodes coloured by status.

    Args:
        subject: a :class:`~flow_orchestrator.workflow.Workflow`, a
            :class:`~flow_orchestrator.result.RunResult` or a
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


def to_mermaid(subject: Drawable, *, statuses: Any = None, title: str | None = None,
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
