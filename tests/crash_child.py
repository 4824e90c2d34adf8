"""A durable run for the crash trials of ``test_crash_resume.py``, run as a script.

``python crash_child.py KIND WHERE LOG``: runs (or resumes, if the store holds it) the
run ``job`` of a 60-node layered workflow with strict checkpoints on the store ``KIND``
at ``WHERE``.  Every action first appends ``<node>`` to ``LOG`` (a side effect kept
outside the store), then writes the workflow data and returns its inputs' sum + 1.
"""

from __future__ import annotations

import os
import sys
import time

from flow_orchestrator import WorkflowBuilder
from flow_orchestrator.engine import Engine
from flow_orchestrator.stores import FlatBuffersFileStore, JsonFileStore, SqliteStore, Store

WIDTH, DEPTH = 4, 15


def open_store(kind: str, where: str) -> Store:
    """The store of ``kind`` at ``where`` (a directory, a file or a conninfo)."""
    if kind == "json":
        return JsonFileStore(where)
    if kind == "flatbuffers":
        return FlatBuffersFileStore(where)
    if kind == "sqlite":
        return SqliteStore(where)
    if kind == "postgres":
        from flow_orchestrator.stores import PostgresStore
        conninfo, _, schema = where.rpartition("#")
        return PostgresStore(conninfo, schema=schema)
    raise SystemExit(f"unknown store kind {kind!r}")


def build(log_fd: int):  # type: ignore[no-untyped-def]
    """The workflow; node ``n<layer>_<i>`` depends on every node of the layer before."""
    def action(name: str):  # type: ignore[no-untyped-def]
        line = f"{name}\n".encode()

        def run(ctx):  # type: ignore[no-untyped-def]
            os.write(log_fd, line)  # O_APPEND: one atomic write per line
            time.sleep(0.002)
            ctx.data[name] = len(name) * 3
            return sum(ctx.inputs.values()) + 1
        return run

    b = WorkflowBuilder("crash-trial")
    for layer in range(DEPTH):
        for i in range(WIDTH):
            deps = [f"n{layer - 1}_{j}" for j in range(WIDTH)] if layer else []
            b.add(f"n{layer}_{i}", action(f"n{layer}_{i}"), depends_on=deps)
    return b.build()


def main() -> None:
    kind, where, log_path = sys.argv[1:4]
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    wf = build(log_fd)
    with open_store(kind, where) as store, Engine(2) as engine:
        if store.exists("job"):
            engine.resume(wf, "job", store=store, checkpoint="strict")
        else:
            engine.run(wf, store=store, run_id="job", checkpoint="strict", data={"seed": 42})


if __name__ == "__main__":
    main()
