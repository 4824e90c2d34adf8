"""What errors say: ``str()`` names what failed and stays short (loggers print only ``str()``)."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

import flow_orchestrator as fo
from flow_orchestrator.errors import CycleError, NodeFailedError, WorkflowFailedError, cycle_text


def _fail(message: str):
    def fail():
        raise ValueError(message)
    return fail


def _failing(n: int) -> fo.Workflow:
    b = fo.WorkflowBuilder("many")
    for i in range(n):
        b.add(f"part-{i}", _fail(f"bad input {i}\nsecond line" if i == 1 else f"bad input {i}" + "!" * (400 if i == 2 else 0)))
    b.add("ok", lambda: 1)
    return b.build()


def test_workflow_failed_error_str_names_the_failed_nodes_and_their_errors(caplog):
    with fo.Engine(2, continue_on_error=True) as engine, pytest.raises(WorkflowFailedError) as info:
        engine.run(_failing(8))
    text = str(info.value)
    lines = text.splitlines()
    assert lines[0].endswith(": 8 node(s) failed:") and "sub-exception" not in text
    assert lines[1] == "  node 'part-0' failed after 1 attempt(s): ValueError: bad input 0"
    assert lines[2] == "  node 'part-1' failed after 1 attempt(s): ValueError: bad input 1 ..."  # one line each
    assert lines[3].endswith("!!!...") and len(lines[3]) < 300  # trimmed
    assert len(lines) == 1 + WorkflowFailedError.SHOWN + 1 and lines[-1] == "  and 3 more"
    with caplog.at_level(logging.ERROR):
        logging.getLogger("app").error("run failed: %s", info.value)
    assert "part-0" in caplog.text and "ValueError: bad input 0" in caplog.text


def test_one_failure_and_subgroups_keep_naming_nodes():
    failure = NodeFailedError("load", "timed_out", 3, TimeoutError("slow"))
    group = WorkflowFailedError("workflow 'w' run r: 1 node(s) failed", [failure])
    assert str(group) == ("workflow 'w' run r: 1 node(s) failed:\n"
                          "  node 'load' timed_out after 3 attempt(s): TimeoutError: slow")
    sub = WorkflowFailedError("m", [failure, NodeFailedError("x", "failed", 1, None)]).subgroup(
        lambda e: getattr(e, "node", None) == "x")
    assert str(sub) == "m:\n  node 'x' failed after 1 attempt(s): failed"


def test_a_long_cycle_message_is_capped_and_the_exception_keeps_the_whole_cycle():
    n = 200_000
    src = np.arange(n, dtype=np.int32)
    dst = (src + 1) % n
    names = [f"node-{i}" for i in range(n)]
    with pytest.raises(CycleError) as info:
        fo.Workflow.from_arrays("big", names, src, dst, lambda: None)
    text = str(info.value)
    assert len(text) < 500, len(text)
    assert text.startswith("workflow 'big': the graph has a cycle: 'node-0' -> 'node-1'")
    assert "'node-199999' -> 'node-0' (a cycle of 200,000 nodes)" in text and "(199,990 more)" in text
    assert info.value.cycle == [*names, "node-0"]
    with pytest.raises(CycleError) as bare:
        fo.CSRGraph.from_edges(n, src, dst)
    assert len(str(bare.value)) < 500 and len(bare.value.cycle) == n + 1


def test_a_short_cycle_is_named_in_full():
    with pytest.raises(CycleError) as info:
        fo.WorkflowBuilder("w").add("a", lambda: 1, depends_on="b").add("b", lambda: 1, depends_on="a").build()
    assert "'a' -> 'b' -> 'a'" in str(info.value) or "'b' -> 'a' -> 'b'" in str(info.value)
    assert cycle_text([*range(11), 0]) == " -> ".join(map(str, [*range(11), 0]))
    assert cycle_text(["x" * 500, "x" * 500]).count("...") == 2


# -- item 11: executor names and resumed summaries --------------------------------------------------


def test_the_threads_executor_name_is_accepted():
    with fo.Engine(2, executor="threads") as engine:
        assert engine.mode == "threads"
        assert engine.run(fo.WorkflowBuilder("w").add("a", lambda: 3).build()).output("a") == 3
    with pytest.raises(fo.DefinitionError, match="'threads'"):
        fo.Engine(2, executor="thread")


def test_a_resumed_summary_counts_only_this_runs_attempts():
    from flow_orchestrator.stores import MemoryStore
    fail = [True]

    def flaky():
        if fail[0]:
            raise ValueError("not yet")
        return 2
    wf = (fo.WorkflowBuilder("w").add("a", lambda: 1).add("b", lambda: 1)
          .add("c", flaky, depends_on=["a", "b"]).build())
    store = MemoryStore()
    with fo.Engine(2) as engine:
        first = engine.run(wf, store=store, run_id="r", raise_on_failure=False)
        assert "3 node(s) ran, 3 attempt(s)" in first.summary() and first.restored_attempts == 0
        fail[0] = False
        resumed = engine.resume(wf, "r", store=store)
    assert "1 node(s) ran, 1 attempt(s)" in resumed.summary(), resumed.summary()
    assert resumed.restored_attempts == 2 and int(resumed.attempts.sum()) == 3
    from flow_orchestrator.cli import report
    assert report.summary_json(report.view_of_result(resumed))["attempts"] == 1


UNGUARDED = '''
import flow_orchestrator as fo

def work():
    return 1

wf = fo.WorkflowBuilder("w").add("a", work).add("b", work, depends_on="a").build()
with fo.Engine(2, executor="processes") as engine:
    engine.run(wf)
'''


def test_a_process_pool_broken_by_a_script_without_a_main_guard_says_so(tmp_path):
    import subprocess
    import sys

    (tmp_path / "unguarded.py").write_text(UNGUARDED)
    done = subprocess.run([sys.executable, "unguarded.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 1
    last = [line for line in done.stderr.splitlines() if "WorkflowFailedError" in line or "node 'a'" in line]
    assert any('BrokenProcessPool: a worker process died: guard the script\'s entry point with '
               '`if __name__ == "__main__":`' in line for line in last), done.stderr[-3000:]


def test_a_source_tree_without_the_compiled_extension_says_how_to_build_it(tmp_path):
    import shutil
    import subprocess
    import sys

    import flow_orchestrator

    source = tmp_path / "checkout"
    shutil.copytree(flow_orchestrator.__path__[0], source / "flow_orchestrator",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    # -S: no .pth files, so no editable install's finder supplies another tree's _ext;
    # site-packages stays importable through PYTHONPATH.
    site_packages = os.path.dirname(os.path.dirname(np.__file__))
    done = subprocess.run([sys.executable, "-S", "-c", "import flow_orchestrator"], cwd=source,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": site_packages})
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith("ModuleNotFoundError: No module named 'flow_orchestrator._ext'")
    assert "pip install -e ." in last and "build_ext --inplace" in last and str(source) in last


# -- ProgressObserver without tqdm: a plain line on a terminal ----------------------------------------


class _Terminal:
    """A stream that says it is a terminal."""

    def __init__(self, tty: bool = True) -> None:
        self.text = ""
        self.tty = tty

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self.tty


def _chain(n: int) -> fo.Workflow:
    b = fo.WorkflowBuilder("prog")
    for i in range(n):
        b.add(f"n{i}", lambda: 1, depends_on=[f"n{i - 1}"] if i else [])
    return b.build()


def test_without_tqdm_a_terminal_gets_a_plain_progress_line(monkeypatch):
    import sys

    from flow_orchestrator.progress import ProgressObserver
    monkeypatch.setitem(sys.modules, "tqdm", None)
    term = _Terminal()
    observer = ProgressObserver(total=3, file=term, interval=0)
    assert not observer.uses_tqdm and observer.uses_line
    with fo.Engine(1, executor="serial") as engine:
        result = engine.run(_chain(3), observers=[observer])
    prefix = f"workflow 'prog' run {result.run_id}: "
    assert term.text.startswith(f"\r{prefix}1/3 nodes (failed 0)\x1b[K\r{prefix}2/3 nodes")
    assert term.text.endswith("\n") and term.text.count("\n") == 1 and f"\r{prefix}3/3 nodes (failed 0), completed in" in term.text


def test_without_tqdm_the_line_is_throttled_and_a_non_terminal_stays_quiet_unless_asked(monkeypatch):
    import sys

    from flow_orchestrator.progress import ProgressObserver
    monkeypatch.setitem(sys.modules, "tqdm", None)
    term = _Terminal()
    with fo.Engine(1, executor="serial") as engine:
        engine.run(_chain(50), observers=[ProgressObserver(file=term, interval=3600)])
        assert term.text.count("\r") == 1 and "50/50 nodes" in term.text  # only the last line
        pipe = _Terminal(tty=False)
        engine.run(_chain(3), observers=[ProgressObserver(file=pipe, interval=0)])
        assert pipe.text == ""  # not a terminal: log lines, which nobody configured
        asked = ProgressObserver(file=pipe, interval=0, line=True)
        engine.run(_chain(3), observers=[asked])
        lines = pipe.text.splitlines()
        assert len(lines) == 4 and "\r" not in pipe.text and lines[-1].endswith(" s") and "3/3" in lines[-1]
        assert not ProgressObserver(file=term, line=False).uses_line
