"""The cross-engine comparison runner, bench/compare.py: behaviour, never timings.

The runner is run end to end as ``flow-orchestrator bench --suite compare --quick`` in a
subprocess whose working directory is the checkout, with ``python -P`` so that the
checkout's uncompiled source tree cannot shadow the package under test (installed in
CI, built in place and on ``PYTHONPATH`` otherwise); it starts one more process per
cell.  The plan rules and the README rewriting are also checked in this process, on
``bench`` loaded the way the command line loads it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import statistics
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flow_orchestrator.cli import targets

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not (ROOT / "bench" / "compare.py").is_file(), reason="no bench/ in this tree")

SHAPES = ["layered-10k", "layered-1m", "diamond-x1000"]  # in the registry's order, as reported
ENGINES = ["ours-threads", "naive-graphlib", "dask-sync"]
REPEAT, WARMUP, COLD_REPEAT = 2, 1, 2
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def compare(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``flow-orchestrator bench --suite compare ARGS`` from the checkout."""
    return subprocess.run([sys.executable, "-P", "-m", "flow_orchestrator", "bench", "--suite", "compare", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def bench_compare() -> ModuleType:
    """``bench.compare`` of this checkout (the installed package stays the one in use)."""
    targets.bench_module(ROOT)
    return importlib.import_module("bench.compare")


def readme_copy(path: Path) -> tuple[str, str]:
    """A copy of the README at ``path`` with a marker block holding stale figures; returns
    the text before and after the block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").is_file() else "# readme\n"
    if START in text and END in text:
        text = text[: text.index(START)] + text[text.index(END) + len(END):]
    head, tail = text + "\n## Figures\n\n", "\n\nAfter the figures.\n"
    path.write_text(f"{head}{START}\nstale figures\n{END}{tail}", encoding="utf-8")
    return head, tail


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One --quick run: 3 shapes x 3 engines, ours' cold figure from 2 processes, JSON,
    Markdown and a README copy."""
    tmp = tmp_path_factory.mktemp("compare")
    readme = tmp / "README.md"
    head, tail = readme_copy(readme)
    done = compare("--quick", "--shapes", *SHAPES, "--engines", *ENGINES, "--repeat", str(REPEAT),
                   "--warmup", str(WARMUP), "--cold-repeat", str(COLD_REPEAT), "--json", str(tmp / "out.json"), "--markdown", str(tmp / "out.md"),
                   "--readme", str(readme))
    assert done.returncode == 0, done.stderr
    return {"done": done, "tmp": tmp, "report": json.loads((tmp / "out.json").read_text(encoding="utf-8")),
            "markdown": (tmp / "out.md").read_text(encoding="utf-8"), "readme": readme.read_text(encoding="utf-8"),
            "head": head, "tail": tail}


def test_json_has_the_machine_versions_and_options(quick_run: dict[str, Any]) -> None:
    report = quick_run["report"]
    assert {"cpu", "cpu_count", "os", "python"} <= set(report["machine"])
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["python"].count(".") == 2
    assert {"flow-orchestrator", "numpy", "dask", "taskflow"} <= set(report["packages"])
    assert report["packages"]["numpy"] and report["date"]
    assert report["options"]["shapes"] == SHAPES and report["options"]["engines"] == ENGINES
    assert report["options"]["quick"] is True and report["options"]["repeat"] == REPEAT


def test_every_cell_ran_and_verified_or_says_why_not(quick_run: dict[str, Any]) -> None:
    cells = {(c["shape"], c["engine"]): c for c in quick_run["report"]["cells"]}
    assert set(cells) == {(s, e) for s in SHAPES for e in ENGINES}
    for cell in cells.values():
        if cell["status"] == "skipped":
            assert cell["reason"]
            continue
        assert cell["status"] == "ok", cell
        runs = cell["runs_per_repetition"]
        assert cell["node_runs_verified"] == cell["nodes"] * (REPEAT + WARMUP) * runs
        assert len(cell["times_s"]) == REPEAT
        assert cell["min_s"] <= cell["median_s"] <= cell["max_s"]
        assert cell["peak_rss_mb"] > 0 and cell["overhead_us_per_node"] is not None
    assert cells[("diamond-x1000", "ours-threads")]["runs_per_repetition"] > 1
    assert all(cells[(s, "ours-threads")]["x_vs_ours_warm"] == 1.0 for s in SHAPES)
    assert all(cells[(s, "ours-threads")]["x_vs_ours_cold"] == 1.0 for s in SHAPES)
    dask = cells[("layered-10k", "dask-sync")]
    if importlib.util.find_spec("dask") is None:
        assert dask["status"] == "skipped" and "dask" in dask["reason"]
    else:
        assert dask["status"] == "ok"
    assert cells[("layered-1m", "dask-sync")]["status"] == "skipped"  # by rule, or not installed


def test_ours_is_cold_and_warm_and_the_peers_as_before(quick_run: dict[str, Any]) -> None:
    """Ours: the cold figure is the median of one sample per fresh process; a peer has
    no cold figure, and its only figure is compared with ours cold and warm."""
    report = quick_run["report"]
    assert report["options"]["cold_repeat"] == COLD_REPEAT
    assert report["build"] in ("Workflow.from_edge_list", "np.array + Workflow.from_arrays")
    for cell in report["cells"]:
        if cell["status"] != "ok":
            continue
        if cell["engine"] == "ours-threads":
            samples = cell["cold_samples_s"]
            assert len(samples) == COLD_REPEAT and all(s > 0 for s in samples)
            assert cell["cold_s"] == statistics.median(samples) and cell["build"] == report["build"]
            assert cell["cold_us_per_node"] == cell["cold_s"] / cell["nodes"] * 1e6
            assert cell["first_s"] in samples  # the cell's own process gave the first sample
        else:
            assert cell["cold_s"] is None and cell["cold_us_per_node"] is None and cell["first_s"] > 0
            ours = next(c for c in report["cells"] if (c["shape"], c["engine"]) == (cell["shape"], "ours-threads"))
            assert cell["x_vs_ours_cold"] == cell["us_per_node"] / ours["cold_us_per_node"]
            assert cell["x_vs_ours_warm"] == cell["us_per_node"] / ours["us_per_node"]


def test_markdown_has_a_table_per_shape_and_a_row_per_engine(quick_run: dict[str, Any]) -> None:
    markdown, report = quick_run["markdown"], quick_run["report"]
    assert quick_run["done"].stdout == markdown
    for shape in SHAPES:
        assert markdown.count(f"### {shape}:") == 1
    labels = {c["engine"]: c["label"] for c in report["cells"]}
    for engine in ENGINES:
        rows = [line for line in markdown.splitlines() if line.startswith(f"| {labels[engine]} |")]
        assert len(rows) == len(SHAPES)
    assert report["machine"]["cpu"] in markdown and report["date"] in markdown


def test_readme_is_rewritten_between_the_markers_only(quick_run: dict[str, Any]) -> None:
    readme, report = quick_run["readme"], quick_run["report"]
    assert readme.startswith(quick_run["head"] + START + "\n") and readme.endswith(END + quick_run["tail"])
    block = readme[len(quick_run["head"]) + len(START):-len(END + quick_run["tail"])]
    assert "stale figures" not in block
    assert report["date"] in block and report["machine"]["cpu"] in block
    assert_generated_format(block, SHAPES, ENGINES)
    for shape in SHAPES:
        assert sum(line.startswith(f"| {shape} |") for line in block.splitlines()) == 1


def test_tables_are_made_again_from_the_json_without_running(quick_run: dict[str, Any]) -> None:
    tmp = quick_run["tmp"]
    done = compare("--from-json", str(tmp / "out.json"), "--markdown", str(tmp / "again.md"))
    assert done.returncode == 0, done.stderr
    assert (tmp / "again.md").read_text(encoding="utf-8") == quick_run["markdown"] == done.stdout
    assert done.stderr == ""  # no cell ran: no progress lines


def test_readme_without_markers_is_an_error_and_nothing_runs(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n", encoding="utf-8")
    done = compare("--quick", "--shapes", "chain-10k", "--engines", "ours-threads", "--json",
                   str(tmp_path / "out.json"), "--readme", str(readme))
    assert done.returncode == 2
    assert START in done.stderr and "nothing was run or written" in done.stderr
    assert readme.read_text(encoding="utf-8") == "# no markers here\n"
    assert not (tmp_path / "out.json").exists()


def test_a_cell_past_its_timeout_is_reported_not_fatal(tmp_path: Path) -> None:
    done = compare("--quick", "--shapes", "chain-10k", "--engines", "ours-threads", "--timeout", "0.05",
                   "--json", str(tmp_path / "out.json"))
    assert done.returncode == 1
    (cell,) = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))["cells"]
    assert cell["status"] == "timeout" and "--timeout" in cell["reason"]
    assert "timeout: timed out" in done.stdout


# -- the README's table: in the generated format (its figures are a machine's, not checked) ---------------

NUMBER = r"[\d,]+(?:\.\d+)?"
RATIO = NUMBER + "x"
NOT_RUN = r"-|failed|timeout"


def cell_pattern(column: str) -> str:
    """What the README has under ``column``: ours' cold, warm or ``cold / warm`` figures,
    a peer's figure with its ratios to ours cold / warm (and † when capped)."""
    if column.endswith(" cold / warm"):
        return f"{NUMBER} / {NUMBER}"
    if column.endswith((" cold", " warm")):
        return NUMBER
    return rf"{NUMBER}(?: \({RATIO} / {RATIO}\))?(?: †)?"


def assert_generated_format(block: str, shapes: list[str], engines: list[str]) -> None:
    """``block`` (between the markers) is what ``readme_block`` writes: the measurement
    and command lines, the legend, and one table of a row per shape with ours cold before
    warm; figures only as numbers, ratios, ``-`` or a status."""
    compare = bench_compare()
    lines = block.strip("\n").splitlines()
    assert re.fullmatch(r"Measured \d{4}-\d\d-\d\d \d\d:\d\d UTC on .+, \d+ CPUs; Python .+\.", lines[0]), lines[0]
    assert lines[1].startswith("Each engine and shape in a fresh process") and "Ours cold: the median of" in lines[1]
    assert "Command: `" in lines[1]
    assert lines[2:5] == ["", compare.README_LEGEND, ""]
    columns = compare.readme_columns(engines)
    assert lines[5] == "| shape | nodes | " + " | ".join(columns) + " |"
    assert lines[6] == "| --- | ---: |" + " ---: |" * len(columns)
    rows = [line.removeprefix("| ").removesuffix(" |").split(" | ") for line in lines[7:]]
    assert [row[0] for row in rows] == shapes
    for row in rows:
        assert len(row) == 2 + len(columns), row
        assert re.fullmatch(rf"{NUMBER}(?: x {NUMBER} runs)?|-", row[1]), row
        for column, text in zip(columns, row[2:]):
            assert re.fullmatch(f"{cell_pattern(column)}|{NOT_RUN}", text), (row[0], column, text)
    assert columns.index("ours (threads) cold") + 1 == columns.index("ours (threads) warm")


def test_the_readme_has_one_benchmark_table_in_the_generated_format() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count(START) == 1 and text.count(END) == 1
    start, end = text.index(START), text.index(END)
    compare = bench_compare()
    assert_generated_format(text[start + len(START):end], list(compare.SHAPES), list(compare.ENGINES))
    section = text[text.index("## Benchmarks"):]
    tables = [line for line in section.splitlines() if line.startswith("| --- |")]
    assert len(tables) == 1 and tables[0] in text[start:end], "the README's benchmark table is the generated one"


# -- in this process: the plan rules, the markers, the --suite option -------------------------------


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """``bench.compare``, with ``bench`` loaded from the checkout as the command line does."""
    run = targets.bench_module(ROOT)
    assert Path(run.__file__).parent == ROOT / "bench"
    return importlib.import_module("bench.compare")


def test_plan_skips_and_caps_with_reasons(bench: ModuleType) -> None:
    engines, shapes, plan = bench.ENGINES, bench.SHAPES, bench.plan

    def cell(engine: Any, shape: str, quick: bool = False) -> Any:
        return plan(engine, shapes[shape], quick=quick, repeat=3, warmup=1)

    assert cell(engines["ours-threads"], "layered-1m").skip is None
    assert cell(engines["ours-processes"], "layered-1m").skip
    assert "no middleware" in cell(engines["naive-graphlib"], "middleware-10k").skip
    assert "checkpoints" in cell(engines["naive-graphlib"], "checkpoint-strict-10k").skip
    assert cell(engines["ours-serial"], "checkpoint-batched-10k").skip is None
    missing = bench.EngineSpec("ghost", "ghost", "ghost", requires="no_such_peer_module_xyz")
    assert "no_such_peer_module_xyz is not installed" in cell(missing, "chain-10k").skip
    if importlib.util.find_spec("dask") is not None:
        assert cell(engines["dask-threaded"], "layered-1m").skip
        capped = cell(engines["dask-sync"], "layered-100k")
        assert capped.skip is None and (capped.repeat, capped.warmup) == (1, 0) and capped.note
    if importlib.util.find_spec("taskflow") is not None:
        assert cell(engines["taskflow"], "layered-100k").skip
        capped = cell(engines["taskflow"], "layered-10k")
        assert capped.nodes == bench.TASKFLOW_MAX_NODES and "capped" in capped.note
        assert cell(engines["taskflow"], "diamond-x1000").runs == bench.TASKFLOW_MAX_RUNS
        assert cell(engines["taskflow"], "layered-10k", quick=True).note == ""  # small enough


@pytest.mark.parametrize("shape", ["layered-10k", "middleware-10k", "checkpoint-batched-10k"])
@pytest.mark.parametrize("engine", ["ours-threads", "ours-serial"])
def test_nothing_of_ours_runs_before_the_cold_run(bench: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                                   engine: str, shape: str) -> None:
    """Setting ours up makes only the user's inputs: no engine, no workflow, no
    compiling until ``first()``, the timed cold run."""
    from flow_orchestrator import Engine, Workflow

    execution = importlib.import_module("bench.execution")
    calls: list[str] = []
    for cls, name in [(Engine, "__init__"), (Engine, "run"), (Engine, "compile"), (Workflow, "__init__")]:
        original = getattr(cls, name)

        def spy(*args: Any, _original: Any = original, _name: str = f"{cls.__name__}.{name}", **kwargs: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, name, spy)
    spec, graph_shape = bench.ENGINES[engine], bench.SHAPES[shape]
    graph = graph_shape.make(60)
    counter = execution.Counter(graph.num_nodes)
    with ExitStack() as stack:
        runner = bench._runner(spec, graph_shape, graph, counter, execution.ran, 2, stack)
        assert calls == [] and runner.first is not None
        runner.first()
        assert {"Engine.__init__", "Engine.run", "Workflow.__init__"} <= set(calls)
        runner.run()
        if runner.final_check is not None:
            runner.final_check()
    counter.check(2)


def test_peak_rss_is_this_process_s_own(bench: ModuleType) -> None:
    status = Path("/proc/self/status")
    if not status.is_file():
        pytest.skip("no /proc: ru_maxrss is used")
    before = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
    peak = bench._peak_rss_mb()
    after = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
    assert before / 1024 <= peak <= after / 1024


def test_workflow_from_edge_list_uses_from_edge_list_when_the_package_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from flow_orchestrator import Workflow

    execution = importlib.import_module("bench.execution")
    edges = [(0, 1), (0, 2), (1, 3), (2, 3)]
    wf = execution.workflow_from_edge_list("w", ["a", "b", "c", "d"], edges, lambda: None)
    assert len(wf) == 4
    seen: list[Any] = []

    def from_edge_list(cls: type, name: str, node_names: Any, pairs: Any, actions: Any) -> Any:
        seen.append(pairs)
        return "built"

    monkeypatch.setattr(Workflow, "from_edge_list", classmethod(from_edge_list), raising=False)
    assert execution.edge_list_build() == "Workflow.from_edge_list"
    assert execution.workflow_from_edge_list("w", ["a", "b", "c", "d"], edges, lambda: None) == "built"
    assert seen == [edges]  # the list itself, not converted


def test_replace_between_markers(bench: ModuleType) -> None:
    text = f"intro\n{START}\nold\n{END}\noutro\n"
    assert bench.replace_between_markers(text, "new\n") == f"intro\n{START}\nnew\n{END}\noutro\n"
    for broken in ("no markers\n", f"{END}\n{START}\n", f"{START}\n{START}\n{END}\n", f"{START} only\n"):
        with pytest.raises(bench.MarkerError):
            bench.replace_between_markers(broken, "new")


def test_run_py_hands_suite_compare_over(bench: ModuleType) -> None:
    run = importlib.import_module("bench.run")
    assert run.compare_argv(["--suite", "compare", "--quick", "--repeat", "2"]) == ["--quick", "--repeat", "2"]
    assert run.compare_argv(["--repeat", "2", "--suite=compare"]) == ["--repeat", "2"]
    assert run.compare_argv(["--suite", "graph", "engine"]) is None
    assert run.compare_argv(["--repeat", "2"]) is None
    with pytest.raises(SystemExit):
        run.compare_argv(["--suite", "compare", "graph"])
