"""The runnable examples of ``examples/``, each end to end in a subprocess.

Each example runs as a user runs it, ``python /abs/path/examples/NAME.py ARGS``, with
its working directory a temporary directory outside the source tree: the child imports
the installed ``flow_orchestrator`` (or the one ``PYTHONPATH`` names, inherited), never
the uncompiled source package of the checkout (running a script puts only its own
folder, ``examples/``, on ``sys.path``).  The tests check the exit status and the key
lines of the output: the verified totals, and for the resumable job that a resumed run
runs exactly the tasks that were not saved as done.
"""

from __future__ import annotations

import ast
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from engine_helpers import interrupt_after_first_line

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
TOTAL_TASKS = 2000  # resumable_job.py's default: 40 layers of 50


def run_example(script: str, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python examples/SCRIPT ARGS`` in ``cwd`` (the environment inherited)."""
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False)


def output_of(done: subprocess.CompletedProcess[str]) -> str:
    """Both streams, for assertion messages."""
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"


def number(pattern: str, text: str) -> int:
    """The integer the one group of ``pattern`` matches in ``text``."""
    found = re.search(pattern, text)
    assert found is not None, f"{pattern!r} not in:\n{text}"
    return int(found.group(1).replace(",", ""))


# -- every example follows the same conventions ------------------------------------------------------


def test_there_are_examples():
    assert {"etl_files.py", "numpy_pipeline.py", "resumable_job.py", "dask_cluster.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_conventions(script):
    """A docstring saying how to run it, ``main(argv=None) -> int``, a ``__main__`` guard,
    and a line in examples/README.md with its command."""
    source = (EXAMPLES / script).read_text(encoding="utf-8")
    tree = ast.parse(source)
    doc = ast.get_docstring(tree)
    assert doc and f"python examples/{script}" in doc
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    assert mains and [a.arg for a in mains[0].args.args] == ["argv"] and ast.unparse(mains[0].returns) == "int"
    assert 'if __name__ == "__main__":\n    sys.exit(main())' in source
    assert f"python examples/{script}" in (EXAMPLES / "README.md").read_text(encoding="utf-8")


# -- etl_files.py ---------------------------------------------------------------------------------------


def test_etl_fails_on_a_bad_row_then_resumes_after_the_fix(tmp_path):
    first = run_example("etl_files.py", "--bad-row", "3", cwd=tmp_path)
    out = first.stdout
    assert first.returncode == 1, output_of(first)
    assert "generated 6 files of 400 rows" in out
    # The validate middleware names the file and the line; the flaky reads were retried.
    assert re.search(r"extract\[orders-003\.csv\].*ValidationError.*orders-003\.csv line \d+: "
                     r"quantity must be > 0, got -3", out), out
    assert "retried extract[orders-000.csv] after OSError: transient read error" in out
    assert "retried extract[orders-001.csv] after OSError: transient read error" in out
    # continue_on_error: the other files went through extract and transform.
    assert "10 completed, 1 failed, 3 skipped" in out and "ran 10 node(s) this time" in out

    folder = tmp_path / "etl-work" / "input"
    bad = folder / "orders-003.csv"
    bad.write_text(bad.read_text().replace(",-3,", ",3,"))
    with (folder / "orders-005.csv").open("a") as more:  # changed after its extract completed
        more.write("005-99999,2024-02-29,us,gizmo,2,10.00\n")

    second = run_example("etl_files.py", cwd=tmp_path)
    out = second.stdout
    assert second.returncode == 0, output_of(second)
    assert "resuming run 'etl' (failed): 10/14 nodes done earlier" in out
    assert "extracted again: extract[orders-005.csv]" in out
    # extract + transform of the fixed file and of the changed one, load, report.
    assert "ran 6 node(s) this time" in out
    assert "verified: 2,401 rows and" in out and "match the CSV files" in out
    with sqlite3.connect(tmp_path / "etl-work" / "warehouse.db") as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT source) FROM orders").fetchone() == (2401, 6)
        assert db.execute("SELECT quantity FROM orders WHERE order_id = '005-99999'").fetchone() == (2,)

    third = run_example("etl_files.py", cwd=tmp_path)
    assert third.returncode == 0 and "already completed: nothing to do" in third.stdout, output_of(third)


# -- numpy_pipeline.py --------------------------------------------------------------------------------


def test_numpy_pipeline_is_verified_and_timed(tmp_path):
    done = run_example("numpy_pipeline.py", cwd=tmp_path)
    out = done.stdout
    assert done.returncode == 0, output_of(done)
    assert "numpy-pipeline: 98 nodes, 32 chunks of 200,000 samples" in out
    assert "98 completed" in out and "samples 6,400,000" in out
    assert "verified: count, mean, std, min, max and the 32-bin histogram match a direct computation" in out
    assert re.search(r"timing: serial [\d.]+ s, \d+ threads [\d.]+ s \(speed-up [\d.]+x\)", out), out


# -- resumable_job.py ---------------------------------------------------------------------------------


def test_resumable_job_crashes_then_resumes_only_the_rest(tmp_path):
    crash = run_example("resumable_job.py", "--crash-after", "300", cwd=tmp_path)
    assert crash.returncode == -signal.SIGKILL, output_of(crash)
    assert "will crash (SIGKILL) when task 301 of this process starts" in crash.stdout
    assert "verified" not in crash.stdout

    resumed = run_example("resumable_job.py", "--resume", cwd=tmp_path)
    out = resumed.stdout
    assert resumed.returncode == 0, output_of(resumed)
    saved = number(r"resuming run 'job' \(running\): (\d+)/2000 tasks done in earlier runs", out)
    ran = number(r"ran (\d+) task\(s\) this time", out)
    assert 0 < saved <= 300  # strict checkpoints: what completed before the kill, at most
    assert ran == TOTAL_TASKS - saved, out
    assert f"2000/2000 done ({saved} restored" in out
    assert "verified: all 2000 outputs match a direct computation" in out

    again = run_example("resumable_job.py", "--resume", cwd=tmp_path)
    assert again.returncode == 0 and "already completed (2000/2000 tasks); nothing to do" in again.stdout


def test_resumable_job_stops_on_ctrl_c_then_resumes(tmp_path):
    # Its own session, SIGINT at its default: works when the suite runs as a background job.
    first, code, stdout, stderr = interrupt_after_first_line(
        [sys.executable, str(EXAMPLES / "resumable_job.py"), "--work-ms", "2"], cwd=tmp_path,
        delay=0.5)  # the run takes over 2 s (2 ms a task, 2 threads): some tasks are done by then
    assert first.startswith("starting run 'job'"), (first, stdout, stderr)
    assert code == 130, f"exit {code}\n{stdout}\n{stderr}"
    saved = number(r"interrupted: ran \d+ task\(s\) this time; (\d+)/2000 saved as done", stdout)
    assert 0 < saved < TOTAL_TASKS
    assert "resume with: " in stdout and "--resume --store resumable_job.db --run-id job" in stdout

    resumed = run_example("resumable_job.py", "--resume", "--work-ms", "0", cwd=tmp_path)
    out = resumed.stdout
    assert resumed.returncode == 0, output_of(resumed)
    assert f"resuming run 'job' (cancelled): {saved}/2000 tasks done in earlier runs" in out
    assert number(r"ran (\d+) task\(s\) this time", out) == TOTAL_TASKS - saved
    assert "verified: all 2000 outputs match" in out


def test_resumable_job_command_line_equivalent(tmp_path):
    """The docstring's CLI commands work on the script's runs (same workflow, same store)."""
    crash = run_example("resumable_job.py", "--crash-after", "200", cwd=tmp_path)
    assert crash.returncode == -signal.SIGKILL, output_of(crash)
    target = f"{EXAMPLES / 'resumable_job.py'}:workflow"
    cli = subprocess.run([sys.executable, "-m", "flow_orchestrator", "resume", target, "job",
                          "--store", "sqlite:///resumable_job.db", "--checkpoint", "strict"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert cli.returncode == 0, output_of(cli)
    assert "run job of workflow 'resumable-job': completed" in cli.stdout
    assert re.search(r"completed\s+2000", cli.stdout), cli.stdout
    again = run_example("resumable_job.py", "--resume", cwd=tmp_path)
    assert again.returncode == 0 and "already completed (2000/2000 tasks)" in again.stdout, output_of(again)

    fresh = subprocess.run([sys.executable, "-m", "flow_orchestrator", "run", target, "--store",
                            "sqlite:///cli.db", "--run-id", "job", "--checkpoint", "strict", "--data", "work_ms=0"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert fresh.returncode == 0 and re.search(r"completed\s+2000", fresh.stdout), output_of(fresh)


# -- dask_cluster.py ----------------------------------------------------------------------------------


def test_dask_cluster_on_a_local_cluster(tmp_path):
    pytest.importorskip("distributed", reason="dask.distributed is not installed: the 'dask' extra (pip install 'flow-orchestrator[dask]')")
    done = run_example("dask_cluster.py", cwd=tmp_path, timeout=180)
    out = done.stdout
    assert done.returncode == 0, output_of(done)
    assert re.search(r"dask cluster at tcp://\S+: 2 worker\(s\), 2 thread\(s\)", out), out
    assert "18 completed" in out
    # Retries (middleware on the workers) and observers (here) work across processes.
    assert re.search(r"observed: 20 attempt\(s\) started, 18 succeeded, 2 retried \(sample\[\d\], sample\[\d\]\), "
                     r"0 failed", out), out
    assert "ran on 2 worker process(es)" in out
    assert "verified: 6,282,477 points inside the quarter disc" in out
