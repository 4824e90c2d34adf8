"""Ctrl-C (SIGINT) during a run: scheduling stops, statuses stay consistent, the
KeyboardInterrupt reaches the caller, the process exits without hanging, and a durable
run's result and final snapshot agree that every unfinished node was cancelled.

Each child runs in a session of its own with SIGINT at its default disposition
(``engine_helpers.interrupt_after_first_line``), so these tests also work when the suite runs as
a background job; the signal goes to the child's pid only.  Nothing here times the
interrupt: it is observed (the run ends early, with its nodes cancelled); the
``communicate`` timeouts only keep a hung child from hanging the suite.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from engine_helpers import interrupt_after_first_line

from flow_orchestrator.status import NodeStatus
from flow_orchestrator.stores import SqliteStore

NODES = 400

SCRIPT = textwrap.dedent(f"""
    import sys, time, threading
    import flow_orchestrator as fo

    mode = sys.argv[1]
    started = threading.Event()

    def step(ctx):
        started.set()
        if mode == "cooperative":
            ctx.wait(0.05)
        else:
            time.sleep(0.05)

    flow = fo.WorkflowBuilder("long")
    for i in range({NODES}):
        flow.add(f"s{{i}}", step, depends_on=[f"s{{i - 2}}"] if i >= 2 else [])
    wf = flow.build()
    engine = fo.Engine(2, executor="serial" if mode == "serial" else None)
    def report():
        started.wait()
        print("started", flush=True)
    threading.Thread(target=report, daemon=True).start()
    try:
        engine.run(wf)
    except KeyboardInterrupt as exc:
        done = int((exc.result.statuses == fo.NodeStatus.COMPLETED).sum())
        print(f"interrupted: {{exc.result.status}}, {{done}} completed", flush=True)
        engine.close()
        print("closed", flush=True)
        sys.exit(0)
    print("finished without interrupt", flush=True)
    sys.exit(3)
""")


@pytest.mark.parametrize("mode", ["threads", "cooperative", "serial"])
def test_sigint_stops_the_run_and_propagates(tmp_path, mode):
    script = tmp_path / "long_run.py"
    script.write_text(SCRIPT)
    first, code, out, err = interrupt_after_first_line([sys.executable, str(script), mode], cwd=tmp_path)
    assert first == "started" and code == 0, (first, code, out, err)
    assert "interrupted: cancelled" in out and "closed" in out, (out, err)
    # The interrupt ended the run early: the workflow (~10 s) did not run to its end.
    completed = int(out.split("interrupted: cancelled, ")[1].split(" completed")[0])
    assert completed < NODES


DURABLE = textwrap.dedent("""
    import json, sys, threading, time
    import flow_orchestrator as fo
    from flow_orchestrator.stores import SqliteStore

    where = sys.argv[1]
    lock = threading.Lock()
    done = [0]

    def step(ctx):
        time.sleep(0.03)
        with lock:
            done[0] += 1
            if done[0] == 6:
                print("started", flush=True)  # a few completed; more are running
        return 1

    flow = fo.WorkflowBuilder("wide")
    for i in range(300):
        flow.add(f"s{i}", step, depends_on=[f"s{i - 3}"] if i >= 3 else [])
    wf = flow.build()
    with SqliteStore(where) as store, fo.Engine(3) as engine:
        try:
            engine.run(wf, store=store, run_id="job")
        except KeyboardInterrupt as exc:
            counts = {str(fo.NodeStatus(s)): int((exc.result.statuses == s).sum())
                      for s in set(exc.result.statuses.tolist())}
            print(json.dumps({"status": str(exc.result.status), "counts": counts}), flush=True)
            sys.exit(0)
    print("finished without interrupt", flush=True)
    sys.exit(3)
""")


def test_ctrl_c_leaves_no_pending_or_running_node_in_the_result_or_the_saved_state(tmp_path):
    """Docs: pending nodes of a cancelled run end ``cancelled``.  The result of an
    interrupted durable run and its final snapshot hold no pending or running node, and
    they agree."""
    script = tmp_path / "durable_run.py"
    script.write_text(DURABLE)
    db = tmp_path / "runs.db"
    first, code, out, err = interrupt_after_first_line([sys.executable, str(script), str(db)], cwd=tmp_path)
    assert first == "started" and code == 0, (first, code, out, err)
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed["status"] == "cancelled"
    counts = printed["counts"]
    assert "pending" not in counts and "running" not in counts, counts
    assert counts.get("cancelled", 0) > 0 and 0 < counts.get("completed", 0) < 300, counts

    with SqliteStore(str(db)) as store:
        state = store.load("job")
    assert state.run_status == "cancelled"
    saved = {str(NodeStatus(s)): int((state.statuses == s).sum()) for s in set(state.statuses.tolist())}
    assert "pending" not in saved and "running" not in saved, saved
    assert saved == counts
