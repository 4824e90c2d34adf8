"""The command line (``flow-orchestrator``, ``python -m flow_orchestrator``) and the demo job
it runs (README Quickstart line 1).

The workflow commands run end to end in subprocesses, in a temporary working directory
outside the source tree (``-m`` puts the working directory on ``sys.path``, where the
uncompiled source package would shadow the installed one), against temporary stores;
error variants and help texts run in-process through :func:`cli.main`.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flow_orchestrator import cli
from flow_orchestrator.cli import report, targets
from flow_orchestrator.cli.batch_demo import build_batch_workflow, run_batch_demo
from flow_orchestrator.stores import SqliteStore


def test_demo_runs_the_batch_workflow_crashes_it_resumes_and_orders_a_dag(capsys):
    assert cli.main(["demo", "--layers", "20", "--width", "50", "--workers", "2", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "completed" in out and "274 completed" in out
    assert "checked: all 8 group totals match" in out
    assert "saved to SQLite while it ran (batched checkpoints): run 'demo-1' completed, 274 outputs" in out
    assert "resuming it ran 0 node(s) again" in out
    # A real crash (a child killed with SIGKILL part-way), then a resume that runs only the rest.
    assert "killed with SIGKILL after 40% of the nodes" in out
    found = re.search(r"killed after (\d+) completions; the store held (\d+) completed node\(s\)\n"
                      r"  resumed: (\d+) restored, (\d+) run \(\d+ \+ \d+ = 274 of 274\), completed in [\d.]+ s; "
                      r"totals match", out)
    assert found, out
    seen, held, restored, ran = map(int, found.groups())
    assert 0 < held <= seen < 274 and restored == held and ran == 274 - held
    # The speed-up: medians after a warm-up, not one cold comparison.
    assert re.search(r"speed-up on 138 nodes \(4 groups, no store\), median of 1 run\(s\) each after a warm-up: "
                     r"serial [\d.]+ s, 2 worker thread\(s\) [\d.]+ s: [\d.]+x", out), out
    assert "layered DAG: 1,000 nodes" in out


def test_batch_workflow_shape():
    wf = build_batch_workflow(groups=3, chunks=4)
    assert len(wf) == 3 * (4 + 2) + 2
    assert wf.roots() == ["generate[0]", "generate[1]", "generate[2]"]
    assert wf.leaves() == ["lines"] and wf.kind("lines") == "map"


def test_the_demos_repeat_must_be_positive(capsys):
    with pytest.raises(ValueError, match="repeat must be >= 1"):
        run_batch_demo(workers=1, out=io.StringIO(), repeat=0)
    assert cli.main(["demo", "--repeat", "0"]) == 2


def test_the_demos_old_import_paths_keep_working():
    from flow_orchestrator import batch_demo, demo
    from flow_orchestrator.cli import batch_demo as moved_batch_demo
    from flow_orchestrator.cli import demo as moved_demo

    assert demo.run_demo is moved_demo.run_demo and demo.format_figures is moved_demo.format_figures
    assert batch_demo.run_batch_demo is moved_batch_demo.run_batch_demo and batch_demo.GROUPS == moved_batch_demo.GROUPS
    assert demo.__all__ == moved_demo.__all__ and batch_demo.__all__ == moved_batch_demo.__all__


def test_bad_arguments_exit_nonzero(capsys):
    assert cli.main(["demo", "--layers", "0"]) == 2
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])


def test_module_entry_point_help(tmp_path):
    # Run away from the source tree: ``-m`` puts the working directory on sys.path, and
    # the uncompiled source package there would shadow the installed one.
    done = subprocess.run([sys.executable, "-m", "flow_orchestrator", "--help"],
                          capture_output=True, text=True, check=True, cwd=tmp_path)
    assert "demo" in done.stdout and "examples:" in done.stdout


# -- the workflow commands, end to end in subprocesses ----------------------------------------------

# The actions log each call to $WF_LOG (so tests see what ran, also in worker processes);
# the node named by $WF_FAIL raises, the one named by $WF_HANG never ends.  Module-level
# functions: picklable for process pools.
WORKFLOW_MODULE = '''
import os
import pathlib
import time

import flow_orchestrator as fo


def _step(name, ctx):
    with pathlib.Path(os.environ["WF_LOG"]).open("a") as log:
        log.write(f"{name} factor={ctx.data.get('factor')}\\n")
    if name == os.environ.get("WF_HANG"):
        time.sleep(600)
    if name == os.environ.get("WF_FAIL"):
        raise RuntimeError(f"{name} exploded\\nwith a second line")
    return name


def extract(ctx):
    return _step("extract", ctx)


def transform(ctx):
    return _step("transform", ctx)


def report(ctx):
    return _step("report", ctx)


def load(ctx):
    return _step("load", ctx)


def build():
    return (fo.WorkflowBuilder("etl")
            .add("extract", extract)
            .add("transform", transform, depends_on="extract")
            .add("report", report, depends_on="extract")
            .add("load", load, depends_on=["transform", "report"])
            .build())


workflow = build()
not_a_workflow = 42
builder = fo.WorkflowBuilder("unbuilt")


def needs_args(x):
    return x


def broken_factory():
    raise ValueError("no workflow today")
'''

EDGES = {("extract", "transform"), ("extract", "report"), ("transform", "load"), ("report", "load")}


@pytest.fixture
def project(tmp_path):
    """A working directory outside the source tree, holding the workflow module ``etl_flow.py``."""
    (tmp_path / "etl_flow.py").write_text(WORKFLOW_MODULE)
    return tmp_path


def cli_run(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m flow_orchestrator ARGS`` in ``project`` (PYTHONPATH inherited), with env
    overrides; ``WF_LOG`` is ``project/log.txt``."""
    environ = {k: v for k, v in os.environ.items() if k != "WF_FAIL"}
    environ.update(WF_LOG=str(project / "log.txt"), **env)
    return subprocess.run([sys.executable, "-m", "flow_orchestrator", *args], capture_output=True, text=True,
                          cwd=project, env=environ, timeout=300, check=False)


def logged(project: Path) -> list[str]:
    """The actions' calls, in order, then forgotten."""
    path = project / "log.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


def one_error_line(done: subprocess.CompletedProcess[str], command: str) -> str:
    """The stderr of a command that failed: exactly one line, no traceback."""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"flow-orchestrator {command}: error: "), done.stderr
    return lines[0]


def test_run_then_status_list(project):
    done = cli_run(project, "run", "etl_flow.py:workflow", "--store", "sqlite:///runs.db", "--run-id", "ok-1",
                   "--data", "factor=3", "--workers", "2", "--checkpoint", "strict", "--progress")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("run ok-1 of workflow 'etl': completed\nwall time ")
    assert re.search(r"^completed\s+4$", done.stdout, re.MULTILINE) and re.search(r"^total\s+4$", done.stdout, re.MULTILINE)
    assert "slowest nodes" in done.stdout and "failures" not in done.stdout
    assert "store: sqlite:///runs.db" in done.stdout
    assert "4/4" in done.stderr  # --progress forces the bar, on stderr
    assert sorted(logged(project)) == ["extract factor=3", "load factor=3", "report factor=3", "transform factor=3"]
    assert (project / "runs.db").exists()  # three slashes: relative to the working directory

    done = cli_run(project, "run", "etl_flow.py:workflow", "--store", "sqlite:///runs.db", "--run-id", "ok-2")
    assert done.returncode == 0 and done.stderr == ""  # stderr is no terminal: no progress bar
    listing = cli_run(project, "status", "--store", f"sqlite:////{project}/runs.db")
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert header.split() == ["run", "id", "workflow", "status", "updated", "at"]
    assert [row.split()[:3] for row in rows] == [["ok-2", "etl", "completed"], ["ok-1", "etl", "completed"]]


def test_failed_run_status_and_resume(project):
    store = "json:///runs"
    failed = cli_run(project, "run", "etl_flow:build", "--store", store, "--run-id", "r1", "--data", "factor=2",
                     "--data", 'label="x"', "--continue-on-error", WF_FAIL="transform")
    assert failed.returncode == 1
    out = failed.stdout
    assert out.startswith("run r1 of workflow 'etl': failed")
    for status, count in (("completed", 2), ("failed", 1), ("skipped", 1)):
        assert re.search(rf"^{status}\s+{count}$", out, re.MULTILINE), out
    assert "failures (1)" in out
    assert re.search(r"^transform\s+failed\s+1\s+RuntimeError: transform exploded with a second line$", out, re.MULTILINE)
    assert "resume with: flow-orchestrator resume etl_flow:build r1 --store json:///runs" in out
    assert sorted(logged(project)) == ["extract factor=2", "report factor=2", "transform factor=2"]

    shown = cli_run(project, "status", "r1", "--store", store)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("run r1 of workflow 'etl': failed\nstarted ")
    assert re.search(r"^transform\s+failed\s+1\s+RuntimeError: transform exploded", shown.stdout, re.MULTILINE)
    report = json.loads(cli_run(project, "status", "r1", "--store", store, "--json").stdout)
    assert report["run_id"] == "r1" and report["status"] == "failed" and report["nodes"] == 4
    assert report["counts"] == {"pending": 0, "running": 0, "completed": 2, "failed": 1, "skipped": 1,
                                "cancelled": 0, "timed_out": 0}
    assert report["failures"] == [{"node": "transform", "status": "failed", "attempts": 1,
                                   "error_type": "RuntimeError", "message": "transform exploded\nwith a second line"}]
    assert {s["node"] for s in report["slowest"]} == {"extract", "report", "transform"}
    assert report["updated_at"] >= report["started_at"] > 0

    resumed = cli_run(project, "resume", "etl_flow.py:workflow", "r1", "--store", store)  # the fix: no WF_FAIL
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("run r1 of workflow 'etl': completed")
    assert logged(project) == ["transform factor=2", "load factor=2"]  # completed nodes not run again; data kept

    again = cli_run(project, "resume", "etl_flow.py:workflow", "r1", "--store", store, "--rerun", "report",
                    "--data", "factor=5")
    assert again.returncode == 0, again.stderr
    assert logged(project) == ["report factor=5", "load factor=5"]  # report and what depends on it

    listed = json.loads(cli_run(project, "status", "--store", store, "--json").stdout)
    assert [(r["run_id"], r["workflow"], r["status"]) for r in listed] == [("r1", "etl", "completed")]
    assert listed[0]["updated_at_iso"].endswith("+00:00")


def test_processes_executor_imports_the_module_in_the_workers(project):
    done = cli_run(project, "run", "etl_flow.py:workflow", "--executor", "processes", "--workers", "2",
                   "--data", "factor=7")
    assert done.returncode == 0, done.stderr
    assert sorted(logged(project)) == ["extract factor=7", "load factor=7", "report factor=7", "transform factor=7"]


def test_dask_executor_on_a_local_cluster(project):
    pytest.importorskip("distributed", reason="dask.distributed is not installed: the 'dask' extra (pip install 'flow-orchestrator[dask]')")
    done = cli_run(project, "run", "etl_flow.py:workflow", "--executor", "dask", "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert len(logged(project)) == 4


def parse_dot(text: str) -> tuple[dict[str, dict[str, str]], set[tuple[str, str]]]:
    """``{label: attributes}`` of the nodes and the ``(label, label)`` edges of our DOT output."""
    ids, nodes, edges = {}, {}, set()
    for line in text.splitlines():
        node = re.fullmatch(r'\s*(n\d+) \[(.*)\];', line)
        edge = re.fullmatch(r'\s*(n\d+) -> (n\d+);', line)
        if node:
            attrs = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', node.group(2)))
            ids[node.group(1)] = attrs["label"]
            nodes[attrs["label"]] = attrs
        elif edge:
            edges.add((ids[edge.group(1)], ids[edge.group(2)]))
    assert text.startswith("digraph ") and text.rstrip().endswith("}")
    return nodes, edges


def test_graph_dot_of_a_workflow_and_of_a_stored_run(project):
    done = cli_run(project, "graph", "etl_flow:workflow")  # a module name, found in the working directory
    assert done.returncode == 0, done.stderr
    nodes, edges = parse_dot(done.stdout)
    assert set(nodes) == {"extract", "transform", "report", "load"} and edges == EDGES

    assert cli_run(project, "run", "etl_flow.py:workflow", "--store", "sqlite:///runs.db", "--run-id", "g1",
                   WF_FAIL="report").returncode == 1
    done = cli_run(project, "graph", "etl_flow.py:workflow", "--store", "sqlite:///runs.db", "--run-id", "g1",
                   "-o", "run.dot")
    assert done.returncode == 0 and done.stdout == "", done.stderr
    text = (project / "run.dot").read_text()
    assert text.startswith('digraph "etl run g1 (failed)"')
    nodes, edges = parse_dot(text)
    assert edges == EDGES
    assert nodes["extract"]["tooltip"] == "extract: completed" and nodes["report"]["tooltip"] == "report: failed"
    assert nodes["load"]["tooltip"] == "load: skipped"
    assert nodes["report"]["fillcolor"] != nodes["extract"]["fillcolor"]


def test_graph_svg_and_png_through_graphviz(project):
    if shutil.which("dot") is None:
        if os.environ.get("FLOW_ORCHESTRATOR_CI") == "1":
            pytest.fail("FLOW_ORCHESTRATOR_CI=1 but Graphviz's dot is not installed", pytrace=False)
        pytest.skip("Graphviz's dot is not installed")
    done = cli_run(project, "graph", "etl_flow.py:workflow", "--format", "svg", "--direction", "LR")
    assert done.returncode == 0, done.stderr
    assert "<svg" in done.stdout and all(f">{name}</text>" in done.stdout for name in ("extract", "load"))
    done = cli_run(project, "graph", "etl_flow.py:workflow", "-o", "flow.png")
    assert done.returncode == 0, done.stderr
    assert (project / "flow.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


# -- errors: one line on stderr, exit 2 for usage and 1 for the rest ---------------------------------


@pytest.mark.parametrize(("args", "code", "message"), [
    (("run", "no_such_module:workflow"), 2, "cannot import module 'no_such_module'"),
    (("run", "etl_flow:nope"), 2, "module 'etl_flow' has no attribute 'nope' (workflows there: workflow)"),
    (("run", "etl_flow.py:workflow", "--store", "mysql://db/runs"), 2, "unknown scheme 'mysql'"),
    (("status", "missing", "--store", "sqlite:///runs.db"), 1, "no run 'missing' in sqlite:///runs.db"),
    (("run", "etl_flow.py:workflow", "--store", "postgresql://u:pw@127.0.0.1:1/db?connect_timeout=2"), 1,
     "Postgre"),  # cannot connect to PostgreSQL (or PostgresStore needs psycopg)
])
def test_errors_in_a_subprocess(project, args, code, message):
    if args[0] == "status":
        SqliteStore(project / "runs.db").close()
    done = cli_run(project, *args)
    assert done.returncode == code
    assert message in one_error_line(done, args[0])
    assert "pw@" not in done.stderr
    assert logged(project) == []


def test_a_locked_run_is_refused(project):
    assert cli_run(project, "run", "etl_flow.py:workflow", "--store", "sqlite:///runs.db", "--run-id", "busy",
                   WF_FAIL="load").returncode == 1
    logged(project)
    with SqliteStore(project / "runs.db") as store, store.lock("busy"):
        done = cli_run(project, "resume", "etl_flow.py:workflow", "busy", "--store", "sqlite:///runs.db")
    assert done.returncode == 1
    line = one_error_line(done, "resume")
    assert "run 'busy' is locked by pid" in line and "another process is running or resuming it" in line
    assert logged(project) == []


def test_status_shows_crashed_and_corrupt_runs_and_delete_removes_them(project):
    """A run whose process was SIGKILLed mid-run is listed crashed (running while it lived,
    when delete refuses it); a damaged one is listed corrupt, status RUN_ID says why (exit
    status 1), and delete removes both."""
    store = "json:///runs"
    assert cli_run(project, "run", "etl_flow.py:workflow", "--store", store, "--run-id", "ok").returncode == 0
    logged(project)
    environ = dict(os.environ, WF_LOG=str(project / "log.txt"), WF_HANG="transform")
    environ.pop("WF_FAIL", None)
    child = subprocess.Popen([sys.executable, "-m", "flow_orchestrator", "run", "etl_flow.py:workflow", "--store",
                              store, "--run-id", "hung", "--checkpoint", "strict", "--workers", "1"],
                             cwd=project, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        while "transform factor=None" not in ((project / "log.txt").read_text()
                                               if (project / "log.txt").exists() else ""):
            assert child.poll() is None, "the run ended before its hanging node"
            time.sleep(0.02)
        listed = json.loads(cli_run(project, "status", "--store", store, "--json").stdout)
        assert {r["run_id"]: r["status"] for r in listed} == {"ok": "completed", "hung": "running"}
        refused = cli_run(project, "delete", "hung", "--store", store)
        assert refused.returncode == 1
        line = one_error_line(refused, "delete")
        assert "run 'hung' is locked" in line and "a live process is running or resuming it" in line
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    done = cli_run(project, "status", "--store", store)
    assert done.returncode == 0
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["run", "id", "workflow", "status", "updated", "at", "why"]
    assert {row.split()[0]: row.split()[2] for row in rows} == {"ok": "completed", "hung": "crashed"}
    shown = cli_run(project, "status", "hung", "--store", store)
    assert shown.returncode == 0 and shown.stdout.startswith("run hung of workflow 'etl': crashed\n")
    assert "resume it with flow-orchestrator resume MODULE:WORKFLOW hung --store json:///runs" in shown.stdout

    state = project / "runs" / "ok.json"
    state.write_bytes(state.read_bytes()[:-10])  # truncated
    listed = json.loads(cli_run(project, "status", "--store", store, "--json").stdout)
    corrupt = next(r for r in listed if r["run_id"] == "ok")
    assert corrupt["status"] == "corrupt" and "truncated" in corrupt["reason"]
    assert "corrupt" in cli_run(project, "status", "--store", store, "--workflow", "etl").stdout
    shown = cli_run(project, "status", "ok", "--store", store)
    assert shown.returncode == 1 and shown.stdout.startswith("run ok: corrupt: corrupt JSON run state: ")
    assert "delete it with: flow-orchestrator delete ok --store json:///runs" in shown.stdout
    report_json = json.loads(cli_run(project, "status", "ok", "--store", store, "--json").stdout)
    assert report_json["status"] == "corrupt" and "truncated" in report_json["reason"]

    for run_id in ("ok", "hung"):
        deleted = cli_run(project, "delete", run_id, "--store", store)
        assert deleted.returncode == 0 and deleted.stdout == f"deleted run {run_id} from json:///runs\n"
    assert cli_run(project, "status", "--store", store).stdout == "no runs in json:///runs\n"
    missing = cli_run(project, "delete", "ok", "--store", store)
    assert missing.returncode == 1 and "no run 'ok' in json:///runs" in one_error_line(missing, "delete")


def in_process(capsys, *args: str) -> tuple[int, str, str]:
    """``cli.main(args)``: its exit status, stdout and stderr."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("attr", "code", "message"), [
    ("not_a_workflow", 2, "is not a Workflow (nor a callable returning one): it is of type int"),
    ("builder", 2, "is a WorkflowBuilder, not a Workflow"),
    ("needs_args", 2, "takes arguments"),
    ("broken_factory", 1, "broken_factory() failed: ValueError: no workflow today"),
    ("", 2, "expected MODULE:WORKFLOW"),
])
def test_workflow_errors(project, capsys, monkeypatch, attr, code, message):
    monkeypatch.setenv("WF_LOG", str(project / "log.txt"))
    status, out, err = in_process(capsys, "run", f"{project}/etl_flow.py:{attr}")
    assert status == code and out == ""
    assert err.startswith("flow-orchestrator run: error: ") and message in err and err.count("\n") == 1


def test_module_errors(project, capsys):
    (project / "raises_on_import.py").write_text("x = 1\nraise KeyError('config')\n")
    (project / "bad_syntax.py").write_text("def broken(:\n")
    cases = [
        (f"{project}/missing.py:workflow", 2, "no such file:"),
        (f"{project}/raises_on_import.py:workflow", 1, "importing"),
        (f"{project}/bad_syntax.py:workflow", 1, "SyntaxError"),
    ]
    for target, code, message in cases:
        status, _, err = in_process(capsys, "graph", target)
        assert status == code and message in err and err.count("\n") == 1, err


def test_usage_errors(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    wf = f"{project}/etl_flow.py:workflow"
    cases = [
        (("run", wf, "--checkpoint", "end"), "--checkpoint needs --store"),
        (("run", wf, "--data", "novalue"), "--data takes KEY=VALUE"),
        (("graph", wf, "--run-id", "x"), "--store and --run-id go together"),
        (("graph",), "give MODULE:WORKFLOW, or --store and --run-id"),
        (("graph", wf, "-o", "picture.jpeg"), "cannot tell the format"),
        (("status", "--store", "sqlite://runs.db"), "sqlite URLs name no host"),
    ]
    for args, message in cases:
        status, _, err = in_process(capsys, *args)
        assert status == 2 and message in err and err.count("\n") == 1, (args, err)
    status, _, err = in_process(capsys, "status", "--store", "sqlite:///missing.db")
    assert status == 1 and "no store at sqlite:///missing.db" in err
    assert not (project / "missing.db").exists()


def test_resume_errors(project, capsys, monkeypatch):
    monkeypatch.setenv("WF_LOG", str(project / "log.txt"))
    monkeypatch.setenv("WF_FAIL", "load")
    wf = f"{project}/etl_flow.py:workflow"
    store = f"flatbuffers:///{project}/runs"
    assert in_process(capsys, "run", wf, "--store", store, "--run-id", "f1")[0] == 1
    status, _, err = in_process(capsys, "run", wf, "--store", store, "--run-id", "f1")
    assert status == 1 and "run 'f1' already exists" in err
    status, _, err = in_process(capsys, "resume", wf, "f1", "--store", store, "--rerun", "nope")
    assert status == 2 and "--rerun: workflow 'etl' has no node 'nope'" in err
    status, _, err = in_process(capsys, "resume", wf, "missing", "--store", store)
    assert status == 1 and "no run 'missing'" in err
    (project / "bigger.py").write_text(textwrap.dedent("""
        from etl_flow import build, extract
        workflow = build()
        def grown():
            import flow_orchestrator as fo
            b = fo.WorkflowBuilder("etl")
            for name in workflow.names:
                b.add(name, workflow.action(name), depends_on=list(workflow.dependencies(name)))
            return b.add("extra", extract, depends_on="load").build()
    """))
    status, _, err = in_process(capsys, "resume", f"{project}/bigger.py:grown", "f1", "--store", store)
    assert status == 1 and "node 'extra' was added" in err and "--allow-new-nodes" in err
    monkeypatch.delenv("WF_FAIL")
    status, out, err = in_process(capsys, "resume", f"{project}/bigger.py:grown", "f1", "--store", store,
                                  "--allow-new-nodes")
    assert status == 0 and re.search(r"^completed\s+5$", out, re.MULTILINE), err


def test_graph_mermaid_and_stored_run_without_the_workflow(project, capsys, monkeypatch):
    monkeypatch.setenv("WF_LOG", str(project / "log.txt"))
    wf = f"{project}/etl_flow.py:workflow"
    status, out, _ = in_process(capsys, "graph", wf, "--format", "mermaid", "--direction", "LR")
    assert status == 0 and "flowchart LR" in out and out.count(" --> ") == len(EDGES)
    store = f"sqlite:///{project}/runs.db"
    assert in_process(capsys, "run", wf, "--store", store, "--run-id", "m1")[0] == 0
    status, out, _ = in_process(capsys, "graph", "--store", store, "--run-id", "m1")
    nodes, edges = parse_dot(out)
    assert status == 0 and edges == EDGES and nodes["load"]["tooltip"] == "load: completed"


def test_data_values_are_json_or_strings():
    assert targets.parse_data(["n=3", "f=1.5", "s=text", 'q="7"', "l=[1, 2]", "e=", "k=a=b"]) == {
        "n": 3, "f": 1.5, "s": "text", "q": "7", "l": [1, 2], "e": "", "k": "a=b"}


# -- help ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "resume", "status", "delete", "graph", "demo", "bench"])
def test_every_command_has_help_with_examples(command, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(targets, "bench_candidates", lambda: [tmp_path])
    try:
        code = cli.main([command, "--help"])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"usage: flow-orchestrator {command}")
    assert "examples:" in out and f"flow-orchestrator {command}" in out.split("examples:")[1]


def test_help_in_a_subprocess(project):
    done = cli_run(project, "run", "--help")
    assert done.returncode == 0 and "--store URL" in done.stdout and "sqlite:////var/lib/runs.db" in done.stdout
    top = cli_run(project, "--help").stdout
    assert all(name in top for name in ("run", "resume", "status", "delete", "graph", "demo", "bench", "exit status"))


# -- bench --------------------------------------------------------------------------------------------


def test_bench_runs_the_runner_of_the_working_directory(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "__init__.py").write_text("")
    (bench / "helper.py").write_text("NAME = 'fake runner'\n")
    (bench / "run.py").write_text(textwrap.dedent("""
        import sys
        from bench.helper import NAME

        def main(argv=None):
            print(NAME, sys.argv[0], list(argv))
            return 3
    """))
    done = subprocess.run([sys.executable, "-m", "flow_orchestrator", "bench", "--suite", "graph", "--repeat", "1"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "fake runner flow-orchestrator bench ['--suite', 'graph', '--repeat', '1']\n"


def test_bench_explains_where_to_get_it(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(targets, "bench_candidates", lambda: [tmp_path])
    status, out, err = in_process(capsys, "bench", "--suite", "graph")
    assert status == 1 and out == ""
    assert "not installed with the package" in err and "source checkout" in err and "sdist" in err


def test_bench_finds_the_checkout_next_to_the_tests(capsys, monkeypatch):
    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "run.py").is_file():
        pytest.skip("no bench/ in this tree")
    monkeypatch.setattr(targets, "bench_candidates", lambda: [root])
    status, out, _ = in_process(capsys, "bench", "--help")
    assert status == 0 and "The runner's options" in out and "--suite" in out and "usage: flow-orchestrator bench" in out


# -- report helpers -----------------------------------------------------------------------------------


def test_format_table_aligns_columns():
    text = report.format_table(("name", "n"), [("a", 1), ("long name", 10)], right=(1,))
    assert text.splitlines() == ["name        n", "a           1", "long name  10"]
    assert report.format_seconds(0.0000123) == "12 us" and report.format_seconds(2) == "2.000 s"


def test_run_lists_show_why_and_unknown_times():
    from flow_orchestrator.stores import RunInfo

    runs = [RunInfo("a", "etl", "completed", 1.0e9), RunInfo("b", "", "corrupt", float("nan"), "bad magic"),
            RunInfo("c", "etl", "crashed", 2.0e9, "saved as running, but no live process holds its lock")]
    lines = report.runs_table(runs).splitlines()
    assert lines[0].split() == ["run", "id", "workflow", "status", "updated", "at", "why"]
    assert lines[1].split()[:3] == ["c", "etl", "crashed"] and lines[-1].split() == ["b", "?", "corrupt", "?", "bad",
                                                                                       "magic"]
    as_json = report.runs_json(runs)
    assert as_json[-1] == {"run_id": "b", "workflow": "", "status": "corrupt", "updated_at": None,
                           "updated_at_iso": None, "reason": "bad magic"}
    assert "reason" not in as_json[1] and json.dumps(as_json, allow_nan=False)
    assert "why" not in report.runs_table(runs[:1])


def test_serializer_flag_and_resume_with_the_recorded_serializer(project, capsys, monkeypatch):
    """A run saved with pickle from Python resumes from the command line with --serializer
    pickle (never chosen for you: it runs code from the store); a --serializer that
    contradicts the saved run is a clear error; run takes --serializer."""
    monkeypatch.setenv("WF_LOG", str(project / "log.txt"))
    saved = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import flow_orchestrator as fo, etl_flow
        from flow_orchestrator.serialization import PickleSerializer
        from flow_orchestrator.stores import open_store
        with open_store("sqlite:///runs.db") as store, fo.Engine(2) as engine:
            result = engine.run(etl_flow.workflow, store=store, run_id="p1", serializer=PickleSerializer(),
                                data={"factor": {1, 2}}, raise_on_failure=False)
        assert result.status.value == "failed", result.summary()
    """)], cwd=project, env={**os.environ, "WF_LOG": str(project / "log.txt"), "WF_FAIL": "load"},
        capture_output=True, text=True, timeout=120, check=False)
    assert saved.returncode == 0, saved.stderr
    logged(project)
    wf = f"{project}/etl_flow.py:workflow"
    store = f"sqlite:///{project}/runs.db"
    status, _, err = in_process(capsys, "resume", wf, "p1", "--store", store, "--serializer", "json")
    assert status == 1 and "saved with the 'pickle' serializer, not 'json'" in err, err
    status, _, err = in_process(capsys, "resume", wf, "p1", "--store", store)
    assert status == 1 and "--serializer pickle" in err, err
    status, out, err = in_process(capsys, "resume", wf, "p1", "--store", store, "--data", "label=x",
                                  "--serializer", "pickle")
    assert status == 0 and re.search(r"^completed\s+4$", out, re.MULTILINE), err
    assert logged(project) == ["load factor={1, 2}"]  # the pickled data came back

    status, out, err = in_process(capsys, "run", wf, "--store", store, "--run-id", "p2", "--serializer", "pickle")
    assert status == 0, err
    status, _, err = in_process(capsys, "run", wf, "--serializer", "pickle")
    assert status == 2 and "--serializer needs --store" in err
    from flow_orchestrator.stores import open_store
    with open_store(store) as opened:
        assert opened.load("p2").serializer == "pickle" and opened.load("p1").serializer == "pickle"
