"""The command line and the demo job it runs (README Quickstart line 1)."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from flow_orchestrator import cli
from flow_orchestrator.batch_demo import build_batch_workflow, run_batch_demo


def test_demo_runs_the_batch_workflow_and_orders_a_dag(capsys):
    assert cli.main(["demo", "--layers", "20", "--width", "50", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "completed" in out and "273 completed" in out
    assert "checked: all 8 group totals match" in out
    assert "layered DAG: 1,000 nodes" in out


def test_batch_workflow_shape():
    wf = build_batch_workflow(groups=3, chunks=4)
    assert len(wf) == 3 * (4 + 2) + 1
    assert wf.roots() == ["generate[0]", "generate[1]", "generate[2]"]
    assert wf.leaves() == ["report"]


def test_batch_demo_result_is_verified():
    out = io.StringIO()
    result = run_batch_demo(workers=2, out=out)
    assert result.ok and "273 nodes" in out.getvalue()


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
