"""Pictures of workflows and runs: DOT and Mermaid text, and SVG/PNG through Graphviz.

The DOT output is parsed back with a small DOT parser written here (no dependency), and
the Mermaid output with a line parser, and compared with the workflow: node ids and
order, labels (with the escaping undone as Graphviz and Mermaid would), edges, colours
and the legend.  Tests that run Graphviz's ``dot`` skip when it is not installed, and
fail instead when ``FLOW_ORCHESTRATOR_CI=1`` (CI installs it).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import shutil
import stat
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np
import pytest
from engine_helpers import fail, ok
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import dags

import flow_orchestrator as fo
from flow_orchestrator import render
from flow_orchestrator.engine import Engine, RunResult
from flow_orchestrator.errors import (
    DefinitionError,
    FlowError,
    GraphTooLargeError,
    GraphvizError,
    GraphvizNotFoundError,
    RenderError,
    RenderTooLargeError,
)
from flow_orchestrator.render import (
    STATUS_STYLES,
    graphviz_available,
    to_dot,
    to_mermaid,
)
from flow_orchestrator.state import RunState
from flow_orchestrator.status import NodeStatus, RunStatus
from flow_orchestrator.workflow import Workflow, WorkflowBuilder

SVG = "{http://www.w3.org/2000/svg}"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

NASTY_NAMES = [
    "plain",
    'say "hi"',
    "back\\slash",
    "ends with a backslash\\",
    "\\N \\G \\l \\n not escapes",
    "two\nlines",
    "&amp; &lt; &#38; & alone",
    "<b>bold</b> <br>",
    "snow ☃ emoji 😀 rtl שלום combining é",
    "nul\x00 tab\t cr\r bell\x07 del\x7f c1\x85",
    "lone \ud800 surrogate",
    "non\ufffechar\uffff",
    '"; n1 -> n0; x="',
    "#quot; #35; #lt;",
    "classDef x fill:#f00;",
    "style n0 fill:#f00;",
    "`markdown` **bold**",
    "ﬂ°°38¶ß ﬂ°amp¶ß",
    "{braces} [brackets] (parens) |pipes| %% comment -->",
    "legend_failed",
    "n0",
]


# -- what a label should show ---------------------------------------------------------------


def shown(name: str) -> str:
    """What a node called ``name`` shows: control characters other than newline, lone
    surrogates and U+FFFE/U+FFFF as their Python escape, everything else as is."""
    return "".join(
        ascii(c)[1:-1] if c != "\n" and (unicodedata.category(c) in ("Cc", "Cs") or c in "\ufffe\uffff") else c
        for c in name)


# -- a small DOT parser -------------------------------------------------------------------------

TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<arrow>->)|(?P<id>[A-Za-z_][A-Za-z_0-9]*|-?[0-9.]+)'
                   r"|(?P<punct>[{}\[\];,=]))", re.DOTALL)


@dataclass
class Dot:
    name: str = ""
    graph: dict[str, str] = field(default_factory=dict)
    node_defaults: dict[str, str] = field(default_factory=dict)
    edge_defaults: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)  # in statement order
    cluster_of: dict[str, str | None] = field(default_factory=dict)
    edges: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    clusters: dict[str, dict[str, str]] = field(default_factory=dict)

    def workflow_nodes(self) -> dict[str, dict[str, str]]:
        return {k: v for k, v in self.nodes.items() if self.cluster_of[k] is None}

    def workflow_edges(self) -> list[tuple[str, str]]:
        return [(a, b) for a, b, _ in self.edges if self.cluster_of[a] is None and self.cluster_of[b] is None]


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while True:
        match = TOKEN.match(text, pos)
        if match is None:
            assert text[pos:].strip() == "", f"cannot tokenize DOT at {text[pos:pos + 40]!r}"
            return tokens
        pos = match.end()
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))


def unquote(token: tuple[str, str]) -> str:
    """A DOT ID's value: quoted strings lose their quotes and ``\\"`` its backslash."""
    kind, text = token
    if kind != "str":
        return text
    return re.sub(r'\\"', '"', text[1:-1])


def parse_dot(text: str) -> Dot:
    tokens = tokenize(text)
    dot = Dot()
    pos = 0

    def peek(k: int = 0) -> str:
        return tokens[pos + k][1] if pos + k < len(tokens) else ""

    def take(expected: str | None = None) -> tuple[str, str]:
        nonlocal pos
        token = tokens[pos]
        assert expected is None or token[1] == expected, f"expected {expected!r}, got {token!r}"
        pos += 1
        return token

    def attr_list() -> dict[str, str]:
        attrs: dict[str, str] = {}
        while peek() == "[":
            take("[")
            while peek() != "]":
                key = unquote(take())
                take("=")
                attrs[key] = unquote(take())
                if peek() in (",", ";"):
                    take()
            take("]")
        return attrs

    def node(name: str, cluster: str | None) -> None:
        if name not in dot.nodes:
            dot.nodes[name] = {}
            dot.cluster_of[name] = cluster

    def statements(cluster: str | None, graph_attrs: dict[str, str]) -> None:
        while peek() != "}":
            head = peek()
            if head in ("graph", "node", "edge") and peek(1) == "[":
                take()
                target = {"graph": graph_attrs, "node": dot.node_defaults, "edge": dot.edge_defaults}[head]
                if cluster is None or head == "graph":
                    target.update(attr_list())
                else:
                    attr_list()
            elif head == "subgraph" or head == "{":
                name = None
                if head == "subgraph":
                    take()
                    name = unquote(take())
                take("{")
                inner = cluster
                sub_attrs: dict[str, str] = {}
                if name is not None and name.startswith("cluster"):
                    inner = name
                    dot.clusters[name] = sub_attrs
                statements(inner, sub_attrs)
                take("}")
            elif peek(1) == "=":
                key = unquote(take())
                take("=")
                graph_attrs[key] = unquote(take())
            else:
                chain = [unquote(take())]
                node(chain[0], cluster)
                while peek() == "->":
                    take("->")
                    chain.append(unquote(take()))
                    node(chain[-1], cluster)
                attrs = attr_list()
                if len(chain) == 1:
                    dot.nodes[chain[0]].update(attrs)
                else:
                    dot.edges.extend((a, b, attrs) for a, b in itertools.pairwise(chain))
            if peek() == ";":
                take(";")

    take("digraph")
    dot.name = unquote(take())
    take("{")
    statements(None, dot.graph)
    take("}")
    assert pos == len(tokens), "text after the graph"
    return dot


def dot_shows(value: str) -> str:
    """What Graphviz shows for a DOT label: escString and HTML entities decoded.

    Only the escapes the renderer means to write are allowed, so that no name can turn
    into a live Graphviz escape (``\\N``, ``\\l``...) or entity.
    """
    def escape(match: re.Match[str]) -> str:
        assert match.group(1) in ('"', "\\", "n"), f"live escape {match.group(0)!r} in {value!r}"
        return {"n": "\n"}.get(match.group(1), match.group(1))

    assert re.fullmatch(r"(?:[^&]|&amp;)*", value, re.DOTALL), f"raw & in {value!r}"
    return re.sub(r"\\(.)", escape, value, flags=re.DOTALL).replace("&amp;", "&")


# -- a Mermaid line parser --------------------------------------------------------------------


@dataclass
class Mermaid:
    title: str | None = None
    direction: str = ""
    nodes: dict[str, str] = field(default_factory=dict)  # id -> label, in order
    edges: list[tuple[str, str]] = field(default_factory=list)
    class_defs: dict[str, dict[str, str]] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)  # node id -> class
    legend: list[str] = field(default_factory=list)


def mermaid_shows(label: str) -> str:
    """What Mermaid shows for a quoted label, checking that nothing in it is live syntax."""
    assert '"' not in label
    assert not re.search(r"[&:`\ufb02\u00b6]", label), f"live character in {label!r}"
    assert re.fullmatch(r"(?:[^#<>]|#\d+;|<br>)*", label, re.DOTALL), f"live # < > in {label!r}"
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), label.replace("<br>", "\n"))


def parse_mermaid(text: str) -> Mermaid:
    out = Mermaid()
    lines = text.splitlines()
    assert text.endswith("\n") and all(line == line.rstrip() for line in lines)
    if lines[0] == "---":
        assert lines[2] == "---" and lines[1].startswith("title: ")
        assert ";" not in lines[1]
        out.title = json.loads(lines[1][len("title: "):].replace("\\x3b", ";"))
        lines = lines[3:]
    out.direction = re.fullmatch(r"flowchart (TB|LR|BT|RL)", lines[0]).group(1)  # type: ignore[union-attr]
    in_legend = False
    for line in lines[1:]:
        if match := re.fullmatch(r'  (n\d+)\["(.*)"\]', line, re.DOTALL):
            assert not in_legend
            out.nodes[match.group(1)] = mermaid_shows(match.group(2))
        elif match := re.fullmatch(r"  (n\d+) --> (n\d+)", line):
            out.edges.append((match.group(1), match.group(2)))
        elif line == "  subgraph legend [status]":
            in_legend = True
        elif in_legend and line == "    direction LR":
            pass
        elif in_legend and (match := re.fullmatch(r'    (legend_[a-z_]+)\["([a-z_]+(?: \(\d+\))?)"\]', line)):
            out.legend.append(match.group(2))
        elif in_legend and line == "  end":
            in_legend = False
        elif match := re.fullmatch(r"  classDef ([a-z_]+) (\S+(?: 5)?)", line):
            out.class_defs[match.group(1)] = dict(item.split(":", 1) for item in match.group(2).split(","))
        elif match := re.fullmatch(r"  class ((?:n\d+|legend_[a-z_]+)(?:,n\d+)*) ([a-z_]+)", line):
            for node in match.group(1).split(","):
                assert node not in out.classes
                out.classes[node] = match.group(2)
        else:
            raise AssertionError(f"unexpected Mermaid line {line!r}")
    assert not in_legend
    return out


# -- fixtures and helpers -----------------------------------------------------------------------


def needs_dot() -> None:
    """Skip the calling test without Graphviz, or fail it when FLOW_ORCHESTRATOR_CI=1."""
    if graphviz_available():
        return
    if os.environ.get("FLOW_ORCHESTRATOR_CI") == "1":
        pytest.fail("Graphviz 'dot' is not installed, and FLOW_ORCHESTRATOR_CI=1 requires it "
                    "(apt-get install graphviz)")
    pytest.skip("Graphviz 'dot' is not installed (apt-get install graphviz)")


def workflow_of(names: list[str], edges: list[tuple[int, int]] = ()) -> Workflow:
    src = np.array([a for a, _ in edges], dtype=np.int32)
    dst = np.array([b for _, b in edges], dtype=np.int32)
    return Workflow.from_arrays("pictures", names, src, dst, ok)


def edge_names(workflow: Workflow) -> list[tuple[str, str]]:
    """(dependency, dependent) name pairs, sorted by the ids of both."""
    pairs = [(workflow.node_id(dep), workflow.node_id(name)) for name in workflow.names
             for dep in workflow.dependencies(name)]
    return [(workflow.names[a], workflow.names[b]) for a, b in sorted(set(pairs))]


def labelled(dot: Dot) -> dict[str, str]:
    """{node id: what its label shows} for the workflow's nodes."""
    return {k: dot_shows(v["label"]) for k, v in dot.workflow_nodes().items()}


def check_dot_matches(text: str, workflow: Workflow) -> Dot:
    dot = parse_dot(text)
    nodes = dot.workflow_nodes()
    assert list(nodes) == [f"n{i}" for i in range(len(workflow))]  # every node, in id order
    assert labelled(dot) == {f"n{i}": shown(name) for i, name in enumerate(workflow.names)}
    by_id = {f"n{i}": name for i, name in enumerate(workflow.names)}
    assert [(by_id[a], by_id[b]) for a, b in dot.workflow_edges()] == edge_names(workflow)
    return dot


def check_mermaid_matches(text: str, workflow: Workflow) -> Mermaid:
    chart = parse_mermaid(text)
    assert chart.nodes == {f"n{i}": shown(name) for i, name in enumerate(workflow.names)}
    assert list(chart.nodes) == [f"n{i}" for i in range(len(workflow))]
    by_id = {f"n{i}": name for i, name in enumerate(workflow.names)}
    assert [(by_id[a], by_id[b]) for a, b in chart.edges] == edge_names(workflow)
    return chart


def dot_status(attrs: dict[str, str], defaults: dict[str, str]) -> NodeStatus | None:
    """The status whose style a DOT node has (None: the plain style)."""
    merged = {**defaults, **attrs}
    for status, style in STATUS_STYLES.items():
        if (merged["fillcolor"], merged["color"]) == (style.fill, style.stroke):
            assert ("dashed" in merged["style"]) == style.dashed
            assert ("penwidth" in merged) == style.bold
            return status
    assert "dashed" not in merged["style"] and "penwidth" not in merged
    return None


def diamond() -> Workflow:
    return (WorkflowBuilder("diamond").add("a", ok).add("b", ok, depends_on="a").add("c", ok, depends_on="a")
            .add("d", ok, depends_on=["c", "b"]).build())


@pytest.fixture(scope="module")
def failed_run() -> RunResult:
    """A real run: ``transform`` fails, its descendants are skipped, the rest completes."""
    wf = (WorkflowBuilder("etl")
          .add("extract", ok)
          .add("transform", fail, depends_on="extract")
          .add("load", ok, depends_on="transform")
          .add('report "daily"', ok, depends_on=["load", "extract"])
          .add("side", ok)
          .add("side2", ok, depends_on="side")
          .build())
    with Engine(2) as engine:
        return engine.run(wf, continue_on_error=True, raise_on_failure=False)


# -- the colour table -----------------------------------------------------------------------------


def test_every_status_has_one_distinct_style():
    assert set(STATUS_STYLES) == set(NodeStatus)
    fills = [style.fill for style in STATUS_STYLES.values()]
    assert len(set(fills)) == len(fills)
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for s in STATUS_STYLES.values() for c in (s.fill, s.stroke))
    assert STATUS_STYLES[NodeStatus.SKIPPED].dashed and STATUS_STYLES[NodeStatus.FAILED].bold
    with pytest.raises(TypeError):
        STATUS_STYLES[NodeStatus.FAILED] = STATUS_STYLES[NodeStatus.COMPLETED]  # type: ignore[index]


# -- DOT --------------------------------------------------------------------------------------------


def test_dot_of_a_workflow_has_its_nodes_labels_and_edges_uncoloured():
    wf = diamond()
    text = to_dot(wf)
    dot = check_dot_matches(text, wf)
    assert dot.name == "diamond" and dot.graph["label"] == "diamond" and dot.graph["rankdir"] == "TB"
    assert all(dot_status(attrs, dot.node_defaults) is None for attrs in dot.workflow_nodes().values())
    assert dot.clusters == {}  # no legend without statuses
    assert wf.to_dot() == text and fo.to_dot(wf) == text
    assert to_dot(wf) == text  # deterministic


def test_dot_is_coloured_by_given_statuses_with_a_legend():
    wf = diamond()
    codes = [NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.TIMED_OUT, NodeStatus.SKIPPED]
    dot = check_dot_matches(to_dot(wf, statuses=codes), wf)
    got = [dot_status(attrs, dot.node_defaults) for attrs in dot.workflow_nodes().values()]
    assert got == codes
    assert [dot.nodes[f"n{i}"]["tooltip"] for i in range(4)] == [
        "a: completed", "b: failed", "c: timed_out", "d: skipped"]
    assert list(dot.clusters) == ["cluster_legend"]
    legend = {k: v for k, v in dot.nodes.items() if dot.cluster_of[k] == "cluster_legend"}
    assert list(legend) == [f"legend_{s.name.lower()}" for s in NodeStatus]
    counts = {s: codes.count(s) for s in NodeStatus}
    assert [v["label"] for v in legend.values()] == [f"{s} ({counts[s]})" for s in NodeStatus]
    assert [dot_status(v, dot.node_defaults) for v in legend.values()] == list(NodeStatus)
    # same statuses as a uint8 array, as runs store them
    assert to_dot(wf, statuses=np.array(codes, dtype=np.uint8)) == to_dot(wf, statuses=codes)


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_dot_escapes_nasty_names(name):
    wf = workflow_of([name, "other"], [(0, 1)])
    text = to_dot(wf, title=name, statuses=[NodeStatus.FAILED, NodeStatus.SKIPPED])
    text.encode("utf-8")  # strict: nothing unencodable reaches Graphviz
    dot = check_dot_matches(text, wf)
    assert dot_shows(dot.name) == dot_shows(dot.graph["label"]) == shown(name)
    assert dot_shows(dot.nodes["n0"]["tooltip"]) == f"{shown(name)}: failed"
    assert all(c == "\n" or unicodedata.category(c) not in ("Cc", "Cs") for c in text)


def test_title_and_direction_options():
    wf = diamond()
    dot = parse_dot(to_dot(wf, title="My ETL", direction="LR"))
    assert dot.graph["label"] == "My ETL" and dot.graph["rankdir"] == "LR"
    dot = parse_dot(wf.to_dot(title=""))
    assert "label" not in dot.graph
    for direction in ("TB", "LR", "BT", "RL"):
        assert parse_mermaid(to_mermaid(wf, direction=direction)).direction == direction
    for bad in ("tb", "XY", None):
        with pytest.raises(DefinitionError, match="direction"):
            to_dot(wf, direction=bad)  # type: ignore[arg-type]
        with pytest.raises(DefinitionError, match="direction"):
            to_mermaid(wf, direction=bad)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="title"):
        to_dot(wf, title=3)  # type: ignore[arg-type]


def test_legend_can_be_forced_on_or_off():
    wf = diamond()
    dot = parse_dot(to_dot(wf, legend=True))
    assert [dot.nodes[f"legend_{s.name.lower()}"]["label"] for s in NodeStatus] == [str(s) for s in NodeStatus]
    assert all(dot_status(a, dot.node_defaults) is None for a in dot.workflow_nodes().values())
    assert parse_dot(to_dot(wf, statuses=[2, 2, 2, 2], legend=False)).clusters == {}
    assert parse_mermaid(to_mermaid(wf, legend=True)).legend == [str(s) for s in NodeStatus]
    assert parse_mermaid(to_mermaid(wf, statuses=[2, 2, 2, 2], legend=False)).legend == []


@pytest.mark.parametrize("direction", ["TB", "LR", "BT", "RL"])
def test_legend_reads_in_status_order(direction):
    dot = parse_dot(to_dot(diamond(), statuses=[0, 1, 2, 3], direction=direction))
    chain = [(a, b) for a, b, attrs in dot.edges if dot.cluster_of[a] == "cluster_legend"]
    assert all(attrs == {"style": "invis"} for a, _, attrs in dot.edges if dot.cluster_of[a] == "cluster_legend")
    ids = [f"legend_{s.name.lower()}" for s in NodeStatus]
    # a rank is a row laid out left to right (TB, BT) or a column laid out bottom to top (LR, RL)
    order = ids if direction in ("TB", "BT") else ids[::-1]
    assert chain == list(itertools.pairwise(order))


@settings(max_examples=40)
@given(dags(max_nodes=25, max_edges=60), st.data())
def test_random_workflows_round_trip(dag, data):
    n, src, dst = dag
    alphabet = st.one_of(st.characters(), st.sampled_from(list('"\\\n\r\t\x00&#;:<>`ﬂ¶°ß\ud800\udfff\ufffe\uffff')))
    names = data.draw(st.lists(st.text(alphabet, min_size=1, max_size=8), min_size=n, max_size=n, unique=True))
    codes = data.draw(st.lists(st.sampled_from(list(NodeStatus)), min_size=n, max_size=n))
    wf = Workflow.from_arrays("random", names, src, dst, ok)
    text = to_dot(wf, statuses=codes)
    dot = check_dot_matches(text, wf)
    assert [dot_status(a, dot.node_defaults) for a in dot.workflow_nodes().values()] == codes
    chart = check_mermaid_matches(to_mermaid(wf, statuses=codes), wf)
    assert [chart.classes[f"n{i}"] for i in range(n)] == [s.name.lower() for s in codes]
    plain = check_dot_matches(to_dot(wf), wf)
    assert all(dot_status(a, plain.node_defaults) is None for a in plain.workflow_nodes().values())


# -- Mermaid ------------------------------------------------------------------------------------------


def test_mermaid_of_a_workflow():
    wf = diamond()
    text = to_mermaid(wf)
    chart = check_mermaid_matches(text, wf)
    assert chart.title == "diamond" and chart.direction == "TB"
    assert chart.classes == {} and chart.class_defs == {} and chart.legend == []
    assert wf.to_mermaid() == text == fo.to_mermaid(wf)
    assert text.splitlines()[:4] == ["---", 'title: "diamond"', "---", "flowchart TB"]
    assert "  n0 --> n1" in text.splitlines()


def test_mermaid_colours_use_one_class_per_status():
    wf = diamond()
    codes = [NodeStatus.COMPLETED, NodeStatus.CANCELLED, NodeStatus.COMPLETED, NodeStatus.PENDING]
    chart = check_mermaid_matches(to_mermaid(wf, statuses=codes), wf)
    assert set(chart.class_defs) == {s.name.lower() for s in NodeStatus}
    for status, style in STATUS_STYLES.items():
        spec = chart.class_defs[status.name.lower()]
        assert (spec["fill"], spec["stroke"]) == (style.fill, style.stroke)
        assert ("stroke-dasharray" in spec) == style.dashed and ("stroke-width" in spec) == style.bold
    assert {k: v for k, v in chart.classes.items() if k.startswith("n")} == {
        "n0": "completed", "n1": "cancelled", "n2": "completed", "n3": "pending"}
    assert chart.legend == ["pending (1)", "running (0)", "completed (2)", "failed (0)", "skipped (0)",
                            "cancelled (1)", "timed_out (0)"]
    assert all(chart.classes[f"legend_{s.name.lower()}"] == s.name.lower() for s in NodeStatus)


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_mermaid_escapes_nasty_names(name):
    wf = workflow_of(["first", name], [(0, 1)])
    text = to_mermaid(wf, title=name, statuses=[2, 3])
    text.encode("utf-8")
    chart = check_mermaid_matches(text, wf)
    assert chart.title == shown(name)
    # no line but the front matter could be taken for a style line by Mermaid's preprocessing
    assert not any(re.search(r"(style|classDef).*:\S*#.*;", line) for line in text.splitlines())


def test_no_title_means_no_front_matter():
    text = to_mermaid(diamond(), title="")
    assert text.startswith("flowchart TB\n") and parse_mermaid(text).title is None


# -- runs and stored runs ---------------------------------------------------------------------------


def test_dot_of_a_failed_run_colours_the_failure_and_its_skipped_descendants(failed_run):
    wf = failed_run.workflow
    assert failed_run.status is RunStatus.FAILED
    dot = check_dot_matches(failed_run.to_dot(), wf)
    status_of = {wf.names[int(k[1:])]: dot_status(a, dot.node_defaults) for k, a in dot.workflow_nodes().items()}
    assert status_of["transform"] is NodeStatus.FAILED
    descendants = wf.descendants("transform")
    assert descendants == ["load", 'report "daily"']
    assert all(status_of[name] is NodeStatus.SKIPPED for name in descendants)
    assert {name for name, s in status_of.items() if s is NodeStatus.COMPLETED} == {"extract", "side", "side2"}
    assert status_of == {name: failed_run.status_of(name) for name in wf.names}
    assert dot.graph["label"] == f"etl run {failed_run.run_id} (failed)"
    legend = {k: v["label"] for k, v in dot.nodes.items() if k.startswith("legend_")}
    assert legend["legend_failed"] == "failed (1)" and legend["legend_skipped"] == "skipped (2)"
    assert failed_run.to_dot() == to_dot(failed_run) == fo.to_dot(failed_run)
    # a workflow coloured by the run's statuses is the same picture
    assert to_dot(wf, statuses=failed_run.statuses, title=dot.graph["label"]) == to_dot(failed_run)


def test_mermaid_of_a_failed_run(failed_run):
    wf = failed_run.workflow
    chart = check_mermaid_matches(failed_run.to_mermaid(), wf)
    assert chart.title == f"etl run {failed_run.run_id} (failed)"
    classes = {wf.names[int(k[1:])]: v for k, v in chart.classes.items() if k.startswith("n")}
    assert classes == {"extract": "completed", "transform": "failed", "load": "skipped",
                       'report "daily"': "skipped", "side": "completed", "side2": "completed"}
    assert failed_run.to_mermaid(direction="LR") == to_mermaid(failed_run, direction="LR")


def test_a_stored_run_draws_like_its_result(failed_run):
    state = RunState.from_result(failed_run)
    assert to_dot(state) == to_dot(failed_run)
    assert to_mermaid(state) == to_mermaid(failed_run)
    check_dot_matches(to_dot(state), failed_run.workflow)
    # a RunState needs no workflow: its own names and CSR arrays are drawn
    renamed = dataclasses.replace(state, workflow="other name")
    assert parse_dot(to_dot(renamed)).graph["label"].startswith("other name run ")


def test_edges_are_sorted_whatever_the_csr_order():
    wf = WorkflowBuilder("fan").add("root", ok).add("x", ok).add("y", ok).add("z", ok, depends_on=["y", "x", "root"]) \
        .add("w", ok, depends_on=["z", "root"]).build()
    with Engine(1, executor="serial") as engine:
        state = RunState.from_result(engine.run(wf))
    indptr, indices = state.succ_indptr, state.succ_indices.copy()
    for node in range(state.num_nodes):  # reverse each node's successors
        indices[indptr[node]:indptr[node + 1]] = indices[indptr[node]:indptr[node + 1]][::-1].copy()
    shuffled = dataclasses.replace(state, succ_indices=indices)
    assert not np.array_equal(shuffled.succ_indices, state.succ_indices)
    assert to_dot(shuffled) == to_dot(state) and to_mermaid(shuffled) == to_mermaid(state)
    edges = parse_dot(to_dot(state)).workflow_edges()
    assert edges == sorted(edges, key=lambda e: (int(e[0][1:]), int(e[1][1:])))
    assert state.succ_indptr.tolist() == [0, 2, 3, 4, 5, 5] and state.succ_indices.tolist() == [3, 4, 3, 3, 4]
    # root -> z twice: a state refuses duplicate edges (issue 13), drawing must not double them anyway
    doubled = RunState._unchecked(**{**{f: getattr(state, f) for f in RunState.__dataclass_fields__},
                                     "succ_indptr": np.array([0, 3, 4, 5, 6, 6], dtype=np.int64),
                                     "succ_indices": np.array([4, 3, 3, 3, 3, 4], dtype=np.int32)})
    assert to_dot(doubled) == to_dot(state)


# -- arguments and limits -----------------------------------------------------------------------------


def test_bad_statuses_and_subjects_are_definition_errors():
    wf = diamond()
    for bad, match in [([2, 2, 2], "one code per node"), ([2, 2, 2, 7], "codes 0..6"), ([2, 2, 2, -1], "codes"),
                       ([2.0, 2, 2, 2], "integer"), (["completed"] * 4, "integer"), ([[2, 2], [2, 2]], "shape")]:
        with pytest.raises(DefinitionError, match=match):
            to_dot(wf, statuses=bad)
        with pytest.raises(DefinitionError, match=match):
            to_mermaid(wf, statuses=bad)
    for subject in (None, "diamond", wf.graph, {"a": []}):
        with pytest.raises(DefinitionError, match="Workflow, a RunResult or a RunState"):
            to_dot(subject)  # type: ignore[arg-type]
    for bad_limit in (0, -1, 2.5, "10", True):
        with pytest.raises(DefinitionError, match="max_nodes"):
            to_dot(wf, max_nodes=bad_limit)  # type: ignore[arg-type]


def test_too_many_nodes_is_refused_unless_the_limit_is_raised():
    wf = workflow_of([f"node{i}" for i in range(12)], [(i, i + 1) for i in range(11)])
    for draw in (to_dot, to_mermaid, render.render):
        with pytest.raises(RenderTooLargeError, match=r"12 nodes, more than max_nodes=10.*max_nodes=12") as info:
            draw(wf, max_nodes=10)  # type: ignore[operator]
        assert isinstance(info.value, GraphTooLargeError) and isinstance(info.value, RenderError)
        assert isinstance(info.value, FlowError)
    assert len(parse_dot(to_dot(wf, max_nodes=12)).workflow_nodes()) == 12
    assert len(parse_mermaid(to_mermaid(wf, max_nodes=None)).nodes) == 12


def test_the_default_limit_allows_large_graphs_and_refuses_larger(failed_run):
    limit = render.DEFAULT_MAX_NODES
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, limit, 3 * limit), rng.integers(0, limit, 3 * limit)
    keep = a != b
    src, dst = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
    wf = Workflow.from_arrays("big", [f"step {i}" for i in range(limit)], src, dst, ok)
    codes = rng.integers(0, len(NodeStatus), limit)
    dot = parse_dot(to_dot(wf, statuses=codes))
    assert len(dot.workflow_nodes()) == limit
    assert len(dot.workflow_edges()) == len(set(zip(src.tolist(), dst.tolist())))
    chart = parse_mermaid(to_mermaid(wf, statuses=codes))
    assert len(chart.nodes) == limit and len(chart.edges) == len(dot.workflow_edges())
    bigger = Workflow.from_arrays("bigger", [str(i) for i in range(limit + 1)], [], [], ok)
    with pytest.raises(RenderTooLargeError):
        to_dot(bigger)
    with pytest.raises(RenderTooLargeError):
        bigger.to_mermaid()
    assert len(parse_mermaid(bigger.to_mermaid(max_nodes=limit + 1)).nodes) == limit + 1


# -- Graphviz -------------------------------------------------------------------------------------------


def svg_texts(svg: bytes) -> list[str]:
    root = ET.fromstring(svg)  # valid XML, or this raises
    assert root.tag == f"{SVG}svg"
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def svg_fills(svg: bytes) -> set[str]:
    return {el.get("fill", "") for el in ET.fromstring(svg).iter()}


def test_svg_of_a_run_holds_every_label_and_status_colour(failed_run):
    needs_dot()
    svg = render.render(failed_run, "svg")
    texts = svg_texts(svg)
    for name in failed_run.workflow.names:
        assert name in texts
    assert f"etl run {failed_run.run_id} (failed)" in texts
    assert "failed (1)" in texts and "skipped (2)" in texts
    fills = svg_fills(svg)
    for status in (NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED):
        assert STATUS_STYLES[status].fill in fills
    assert render.render(failed_run) == svg  # SVG is the default format


def test_svg_shows_nasty_names_as_they_are():
    needs_dot()
    names = [n for n in NASTY_NAMES if "  " not in n and n == n.strip()]  # dot merges runs of spaces
    wf = workflow_of(names, [(i, i + 1) for i in range(len(names) - 1)])
    texts = svg_texts(render.render(wf, "svg", max_nodes=None))
    for name in names:
        for line in shown(name).split("\n"):  # one <text> per line
            assert line in texts, (name, line, texts)


@settings(max_examples=15)
@given(st.lists(st.text(st.one_of(st.characters(), st.sampled_from(list("\x00\ud800\uffff&;<>\"\\"))),
                        min_size=1, max_size=10), min_size=1, max_size=6, unique=True))
def test_svg_of_random_names_is_valid_xml(names):
    needs_dot()
    wf = workflow_of(names, [(i, i + 1) for i in range(len(names) - 1)])
    svg_texts(render.render(wf, "svg", statuses=[NodeStatus.RUNNING] * len(names)))


def test_png_and_files(tmp_path, failed_run):
    needs_dot()
    png = render.render(failed_run, "png")
    assert png.startswith(PNG_MAGIC)
    out = tmp_path / "run.png"
    assert render.render(failed_run, out) == out.read_bytes() and out.read_bytes().startswith(PNG_MAGIC)
    svg_path = tmp_path / "run.SVG"
    svg = render.render(failed_run, str(svg_path))  # a str path, suffix in any case
    assert svg_path.read_bytes() == svg and svg_texts(svg)
    plain = tmp_path / "picture"
    render.render(diamond(), plain, format="svg")
    assert svg_texts(plain.read_bytes())
    named_like_a_format = tmp_path / "png"
    render.render(diamond(), str(named_like_a_format), format="svg")  # with format=, a str is a path
    assert svg_texts(named_like_a_format.read_bytes())
    assert render.render(diamond(), format="png").startswith(PNG_MAGIC)
    assert render.render(diamond(), "PNG").startswith(PNG_MAGIC)  # format names in any case
    assert svg_texts(render.render(diamond(), format="SVG"))


def test_unknown_format_is_a_graphviz_error_with_its_stderr():
    needs_dot()
    with pytest.raises(GraphvizError, match="nosuchformat") as info:
        render.render(diamond(), "nosuchformat")
    assert info.value.returncode not in (0, None) and "nosuchformat" in info.value.stderr
    assert isinstance(info.value, RenderError) and not isinstance(info.value, GraphvizNotFoundError)


def test_bad_targets_are_definition_errors(tmp_path):
    for target, kw in [(tmp_path / "no_suffix", {}), (tmp_path / "x.svg", {"format": "SVG; rm"}),
                       (3, {}), (str(tmp_path / "x."), {})]:
        with pytest.raises(DefinitionError):
            render.render(diamond(), target, **kw)  # type: ignore[arg-type]


def test_missing_graphviz_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(render.shutil, "which", lambda name, *a, **k: None)
    assert graphviz_available() is False
    with pytest.raises(GraphvizNotFoundError, match="apt-get install graphviz") as info:
        render.render(diamond(), "svg")
    assert isinstance(info.value, GraphvizError) and isinstance(info.value, FlowError)
    assert to_dot(diamond())  # text needs no Graphviz


needs_posix = pytest.mark.skipif(not all(shutil.which(tool) for tool in ("sh", "cat", "sleep", "printf")),
                                 reason="a fake dot needs a POSIX shell and tools")


def fake_dot(tmp_path, body: str) -> str:
    script = tmp_path / "dot"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@needs_posix
def test_a_failing_dot_is_reported_with_its_stderr(monkeypatch, tmp_path):
    script = fake_dot(tmp_path, 'cat > /dev/null; echo "Error: <stdin>: syntax error in line 3" >&2; exit 3')
    monkeypatch.setattr(render.shutil, "which", lambda name, *a, **k: script)
    assert graphviz_available()
    with pytest.raises(GraphvizError, match=r"exit status 3.*syntax error in line 3") as info:
        render.render(diamond(), "svg")
    assert info.value.returncode == 3 and info.value.stderr == "Error: <stdin>: syntax error in line 3"


@needs_posix
def test_a_dot_without_output_or_too_slow_is_an_error(monkeypatch, tmp_path):
    script = fake_dot(tmp_path, "cat > /dev/null; exit 0")
    monkeypatch.setattr(render.shutil, "which", lambda name, *a, **k: script)
    with pytest.raises(GraphvizError, match="no output"):
        render.render(diamond(), "svg")
    script = fake_dot(tmp_path, "exec sleep 10")
    with pytest.raises(GraphvizError, match="within 0.2 s"):
        render.render(diamond(), "svg", timeout=0.2)


@needs_posix
def test_the_dot_input_is_the_to_dot_text(monkeypatch, tmp_path):
    seen = tmp_path / "seen.dot"
    script = fake_dot(tmp_path, f'echo "$1" > {seen}.args; cat > {seen}; printf "picture"')
    monkeypatch.setattr(render.shutil, "which", lambda name, *a, **k: script)
    wf = workflow_of(["é ☃", 'q"'], [(0, 1)])
    assert render.render(wf, "pdf", direction="LR", title="T", statuses=[2, 3]) == b"picture"
    assert seen.read_text(encoding="utf-8") == to_dot(wf, direction="LR", title="T", statuses=[2, 3])
    assert (tmp_path / "seen.dot.args").read_text().strip() == "-Tpdf"
