"""Crash trials: a durable run SIGKILLed at random moments resumes to the right end.

For each file and database store, a child process (``crash_child.py``) runs a workflow
with strict checkpoints and is killed with SIGKILL at a random moment of its life
(while importing, saving the first snapshot, running nodes, writing checkpoints or the
final snapshot; or once a random number of nodes started), up to three times; then a
last child runs to the end.  After every
kill the test reads the store.  It checks that:

* every node completed in the end, with the right output, and the data is intact;
* no node the store held as completed at a kill ran again afterwards (the actions
  append their name to a log kept outside the store);
* what the store holds after a kill is never damaged (it loads, or the run was not
  saved yet), and its completed nodes only grow.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from flow_orchestrator import NodeStatus
from flow_orchestrator.stores import RunNotFoundError

import crash_child
from pg_server import postgres_conninfo

CHILD = Path(__file__).with_name("crash_child.py")
TRIALS = int(os.environ.get("FLOW_ORCHESTRATOR_CRASH_TRIALS", "4"))
KILLS = 3
DONE = int(NodeStatus.COMPLETED)


def where_for(kind: str, tmp: Path) -> str:
    """Where the child's store lives: a directory, a file, or ``conninfo#schema``."""
    if kind == "postgres":
        return f"{postgres_conninfo()}#crash_{uuid.uuid4().hex[:12]}"
    return str(tmp / {"json": "json", "flatbuffers": "fbs", "sqlite": "runs.db"}[kind])


def expected() -> tuple[dict[str, int], dict[str, object]]:
    """The outputs and data of a complete run."""
    outputs: dict[str, int] = {}
    for layer in range(crash_child.DEPTH):
        for i in range(crash_child.WIDTH):
            below = sum(outputs[f"n{layer - 1}_{j}"] for j in range(crash_child.WIDTH)) if layer else 0
            outputs[f"n{layer}_{i}"] = below + 1
    data: dict[str, object] = {"seed": 42, **{name: len(name) * 3 for name in outputs}}
    return outputs, data


def completed_in(kind: str, where: str) -> set[str]:
    """The nodes the store holds as completed (none if the run was not saved yet)."""
    with crash_child.open_store(kind, where) as store:
        try:
            state = store.load("job")
        except RunNotFoundError:
            return set()
    return {state.node_names[i] for i in np.flatnonzero(state.statuses == DONE).tolist()}


def log_lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def wait_for_lines(child: subprocess.Popen[bytes], log: Path, count: int) -> None:
    """Until ``log`` has ``count`` lines (nodes started) or the child exited."""
    deadline = time.monotonic() + 60
    while child.poll() is None and len(log_lines(log)) < count and time.monotonic() < deadline:
        time.sleep(0.001)


def start(kind: str, where: str, log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    # cwd outside the source tree: the child imports the installed package.
    return subprocess.Popen([sys.executable, str(CHILD), kind, where, str(log)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def lifetime(kind: str, tmp: Path) -> float:
    """Seconds one uninterrupted child takes, start to exit (kills fall within it)."""
    tmp.mkdir()
    began = time.monotonic()
    child = start(kind, where_for(kind, tmp), tmp / "log", tmp)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err.decode()
    return time.monotonic() - began


@pytest.mark.parametrize("kind", ["json", "flatbuffers", "sqlite", "postgres"])
def test_sigkill_at_random_moments_then_resume(kind: str, tmp_path: Path) -> None:
    rng = random.Random(f"{kind}-{os.getpid()}-{time.time_ns()}")
    life = lifetime(kind, tmp_path / "timing")
    outputs, data = expected()
    kills_that_hit_a_run = 0
    for trial in range(TRIALS):
        tmp = tmp_path / f"trial{trial}"
        tmp.mkdir()
        where, log = where_for(kind, tmp), tmp / "log"
        held_at_kill: list[tuple[set[str], int]] = []  # (completed in store, log length) per kill
        for attempt in range(KILLS + 1):
            child = start(kind, where, log, tmp)
            if attempt < KILLS:
                if attempt == 0 and trial % 2 == 0:
                    time.sleep(rng.uniform(0.0, life))  # any moment: imports, saves, nodes
                else:  # a moment in the middle of the nodes
                    wait_for_lines(child, log, len(log_lines(log)) + rng.randint(1, len(outputs) // 2))
                    time.sleep(rng.uniform(0.0, 0.02))
                if child.poll() is None:
                    child.kill()
                child.communicate(timeout=120)
                if child.returncode not in (0, -9):
                    pytest.fail(f"trial {trial}: the child failed: {child.stderr}")
                completed = completed_in(kind, where)  # loads: never damaged
                if held_at_kill:
                    assert completed >= held_at_kill[-1][0], "completed nodes were lost"
                held_at_kill.append((completed, len(log_lines(log))))
                kills_that_hit_a_run += 0 < len(completed) < len(outputs)
                if child.returncode == 0:
                    break
            else:
                _, err = child.communicate(timeout=120)
                assert child.returncode == 0, err.decode()
        ran = log_lines(log)
        for completed, length in held_at_kill:
            again = completed & set(ran[length:])
            assert not again, f"trial {trial}: nodes saved as completed ran again after a kill: {sorted(again)}"
        with crash_child.open_store(kind, where) as store:
            state = store.load("job")
        assert state.run_status == "completed" and (state.statuses == DONE).all()
        assert {state.node_names[i]: v for i, v in state.load_outputs().items()} == outputs
        assert state.load_data() == data
        assert set(ran) == set(outputs)
    # The random kills must have caught runs in the middle, not only before or after.
    assert kills_that_hit_a_run >= 1
