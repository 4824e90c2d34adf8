"""Ctrl-C (SIGINT) during a run: scheduling stops promptly, statuses stay consistent,
the KeyboardInterrupt reaches the caller, and the process exits without hanging."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

SCRIPT = textwrap.dedent("""
    import sys, time, threading
    import numpy as np
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
    for i in range(400):
        flow.add(f"s{i}", step, depends_on=[f"s{i - 2}"] if i >= 2 else [])
    wf = flow.build()
    engine = fo.Engine(2, executor="serial" if mode == "serial" else None)
    handle_box = {}
    def report():
        started.wait()
        print("started", flush=True)
    threading.Thread(target=report, daemon=True).start()
    t0 = time.monotonic()
    try:
        engine.run(wf)
    except KeyboardInterrupt:
        print(f"interrupted after {time.monotonic() - t0:.2f}", flush=True)
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
    proc = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == "started"
        time.sleep(0.2)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (out, err)
    assert "interrupted after" in out and "closed" in out
    # The whole workflow takes ~10 s; the interrupt must end it long before that.
    assert elapsed < 5.0, elapsed
