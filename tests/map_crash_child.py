"""A durable run with a 10,000-item map, for ``test_map_durability.py``, run as a script.

``python map_crash_child.py DB LOG``: runs (or resumes, if the SQLite store at ``DB``
holds it) the run ``job``: ``source`` lists 10,000 numbers, the map ``each`` runs one
item per number (each first appends ``<number>`` to ``LOG``, a side effect kept outside
the store, then returns its double), and ``total`` sums them.
"""

from __future__ import annotations

import os
import sys
import time

from flow_orchestrator import WorkflowBuilder
from flow_orchestrator.engine import Engine
from flow_orchestrator.stores import SqliteStore

ITEMS = 10_000


def build(log_fd: int):  # type: ignore[no-untyped-def]
    def each(x: int) -> int:
        os.write(log_fd, f"{x}\n".encode())  # O_APPEND: one atomic write per line
        time.sleep(0.0001)
        return 2 * x

    flow = WorkflowBuilder("map-crash")
    flow.add("source", lambda: list(range(ITEMS)))
    flow.map("each", each, over="source")
    flow.add("total", lambda each: sum(each), depends_on="each")
    return flow.build()


def main() -> None:
    db, log_path = sys.argv[1:3]
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    wf = build(log_fd)
    policy = "batched"
    with SqliteStore(db) as store, Engine(2) as engine:
        if store.exists("job"):
            result = engine.resume(wf, "job", store=store, checkpoint=policy)
        else:
            result = engine.run(wf, store=store, run_id="job", checkpoint=policy)
    print(result.output("total"))


if __name__ == "__main__":
    main()
