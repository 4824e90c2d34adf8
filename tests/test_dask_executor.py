"""DaskExecutor: an executor of its own, outputs kept on the cluster, what cannot be pickled.

The executor contract (outputs, failures, retries, timeouts, cancellation) is checked in
``test_engine_executors.py`` with the other executors.  One LocalCluster of 2 worker
processes serves the whole module.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest

distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed: the 'dask' extra (pip install 'flow-orchestrator[dask]')")

from engine_helpers import Holder, returns_lock

from flow_orchestrator import Engine, NodeStatus, WorkflowBuilder
from flow_orchestrator.dask_executor import DaskExecutor, dask_dumps, dask_loads
from flow_orchestrator.errors import DefinitionError, PicklingError
from flow_orchestrator.observers import Observer

# -- module-level actions and values (the workers import this module) -------------------------


def pid(ctx=None):
    return os.getpid()


def square(x):
    return x * x


def divide(a, b=1):
    return a / b


def slow(seconds):
    time.sleep(seconds)
    return seconds


def rows(ctx):
    """A big-ish output that should stay on the worker that made it."""
    return list(range(ctx.data["n"]))


def total(ctx):
    (values,) = ctx.inputs.values()
    return (type(values).__name__, sum(values))


def input_types(ctx):
    return {name: type(value).__name__ for name, value in sorted(ctx.inputs.items())}


def tracked(ctx):
    return Tracked(ctx.data["log"])


def describe_tracked(ctx):
    (value,) = ctx.inputs.values()
    return type(value).__name__


def flaky(ctx):
    if ctx.attempt < 3:
        raise ConnectionError(f"attempt {ctx.attempt}")
    return ctx.attempt


def _rebuild_tracked(log: str) -> Tracked:
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"{os.getpid()}\n")
    return Tracked(log)


class Tracked:
    """Writes the id of every process that unpickles it to a log file."""

    def __init__(self, log: str) -> None:
        self.log = log

    def __reduce__(self):
        return (_rebuild_tracked, (self.log,))


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    from engine_helpers import local_dask_cluster

    cluster = local_dask_cluster()
    with distributed.Client(cluster) as c:
        c.wait_for_workers(2)
        yield c
    cluster.close()


@pytest.fixture()
def executor(client):
    ex = DaskExecutor(client)
    yield ex
    ex.shutdown()


@pytest.fixture()
def keeping(client):
    ex = DaskExecutor(client, keep_outputs_on_cluster=True)
    yield ex
    ex.shutdown()


# -- as a concurrent.futures executor -------------------------------------------------------------


def test_submit_returns_a_concurrent_future_of_the_value(executor):
    futures = [executor.submit(square, i) for i in range(5)]
    assert all(isinstance(f, cf.Future) for f in futures)
    assert [f.result(timeout=30) for f in futures] == [0, 1, 4, 9, 16]
    assert executor.submit(divide, 6, b=3).result(timeout=30) == 2.0  # keywords go to the function
    assert executor.submit(pid).result(timeout=30) != os.getpid()
    assert list(executor.map(square, [3, 4])) == [9, 16]


def test_an_exception_keeps_its_type_and_the_workers_traceback(executor):
    error = executor.submit(divide, 1, b=0).exception(timeout=30)
    assert type(error) is ZeroDivisionError
    assert any(frame.name == "divide" for frame in __import__("traceback").extract_tb(error.__traceback__))


def test_cancel_and_shutdown(client):
    ex = DaskExecutor(client)
    blocker = [ex.submit(slow, 0.5) for _ in range(2)]  # both workers busy
    queued = ex.submit(slow, 5.0)
    assert queued.cancel() and queued.cancelled()
    ex.shutdown(wait=True)
    assert all(f.done() for f in blocker) and [f.result() for f in blocker] == [0.5, 0.5]
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 2)
    assert client.status == "running"  # the client is the caller's: left open


def test_bad_arguments(client):
    with pytest.raises(DefinitionError, match="distributed.Client"):
        DaskExecutor("tcp://nowhere:8786")
    with pytest.raises(DefinitionError, match="'key', 'pure'"):
        DaskExecutor(client, submit_options={"pure": True, "key": "k"})
    assert repr(DaskExecutor(client, keep_outputs_on_cluster=True)).endswith("keep_outputs_on_cluster=True)")


def test_dumps_uses_cloudpickle_only_when_pickle_cannot():
    assert dask_loads(dask_dumps(square))(3) == 9  # by reference
    assert dask_loads(dask_dumps(lambda x: x + 1))(1) == 2  # by value
    with pytest.raises(TypeError):
        dask_dumps(threading.Lock())


def test_importing_flow_orchestrator_does_not_import_dask(tmp_path):
    code = ("import sys, flow_orchestrator, flow_orchestrator.engine, flow_orchestrator.external; "
            "print(sorted(m for m in ('dask', 'distributed', 'cloudpickle') if m in sys.modules))")
    # cwd outside the source tree: the child imports the installed (compiled) package.
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- in an engine ----------------------------------------------------------------------------------


def test_lambdas_and_closures_run_on_dask(executor):
    offset = 10
    wf = (WorkflowBuilder("w").add("lam", lambda: 1).add("closure", lambda ctx: ctx.input("lam") + offset,
                                                          depends_on="lam").build())
    with Engine(2, executor=executor) as eng:
        assert eng.run(wf).outputs == {"lam": 1, "closure": 11}


def test_unpicklable_action_on_dask(executor):
    wf = WorkflowBuilder("w").add("locked", functools.partial(square, threading.Lock())).build()
    with Engine(2, executor=executor) as eng, pytest.raises(DefinitionError, match="DaskExecutor.*node 'locked'.*_thread.lock"):
        eng.run(wf)


def test_unpicklable_output_fails_its_node(executor):
    wf = WorkflowBuilder("w").add("lock", returns_lock).add("n", pid).build()
    with Engine(2, executor=executor) as eng:
        result = eng.run(wf, continue_on_error=True, raise_on_failure=False)
    error = result.error("lock")
    assert isinstance(error, PicklingError) and error.node == "lock" and error.what == "output"
    assert result.status_of("n") is NodeStatus.COMPLETED


def test_retries_run_again_and_observers_see_every_attempt(executor):
    seen = []

    class Record(Observer):
        def on_node_retry(self, event):
            seen.append(("retry", event.node, event.attempt))

        def on_node_success(self, event):
            seen.append(("success", event.node, event.attempt))

    wf = WorkflowBuilder("w").add("flaky", flaky, retries=3, retry_delay=0.01).build()
    with Engine(2, executor=executor, metrics=True) as eng:
        result = eng.run(wf, observers=[Record()])
        totals = eng.metrics.workflow("w").totals()
    assert result.output("flaky") == 3 and result.attempts.tolist() == [3]
    assert seen == [("retry", "flaky", 1), ("retry", "flaky", 2), ("success", "flaky", 3)]
    assert totals["completed"] == 1


def test_a_durable_run_checkpoints_to_its_store(executor):
    from flow_orchestrator.stores import MemoryStore

    store = MemoryStore()
    wf = WorkflowBuilder("w").add("a", pid).add("b", input_types, depends_on="a").build()
    with Engine(2, executor=executor) as eng:
        result = eng.run(wf, store=store, run_id="dask-run")
    saved = store.load("dask-run")
    assert saved.statuses.tolist() == [int(NodeStatus.COMPLETED)] * 2
    assert saved.load_outputs() == {0: result.output("a"), 1: {"a": "int"}}


# -- outputs kept on the cluster --------------------------------------------------------------------


def test_outputs_stay_on_the_cluster_and_dependents_get_values(keeping):
    wf = (WorkflowBuilder("w").add("rows", rows).add("total", total, depends_on="rows")
          .add("types", input_types, depends_on=["rows", "total"]).build())
    with Engine(2, executor=keeping) as eng:
        result = eng.run(wf, data={"n": 1000})
    outputs = result.outputs
    assert all(isinstance(v, distributed.Future) for v in outputs.values())
    assert keeping.gather(outputs) == {"rows": list(range(1000)), "total": ("list", 499500),
                                       "types": {"rows": "list", "total": "tuple"}}
    assert result.output("total").result() == ("list", 499500)


def test_kept_outputs_move_between_workers_not_through_this_process(keeping, tmp_path):
    """Many producers and consumers: values unpickled only by worker processes."""
    log = tmp_path / "unpickled"
    b = WorkflowBuilder("w")
    for i in range(8):
        b.add(f"make{i}", tracked).add(f"use{i}", describe_tracked, depends_on=f"make{i}")
    b.add("all", input_types, depends_on=[f"make{i}" for i in range(8)])
    with Engine(2, executor=keeping) as eng:
        result = eng.run(b.build(), data={"log": str(log)})
    assert keeping.gather(result.output("use0")) == "Tracked"
    assert keeping.gather(result.output("all")) == {f"make{i}": "Tracked" for i in range(8)}
    pids = {int(line) for line in pathlib.Path(log).read_text().split()} if log.exists() else set()
    assert os.getpid() not in pids  # some moved between the workers (or none had to): never here


def test_kept_and_local_inputs_mix(keeping):
    """A resumed run: restored outputs are plain values, new ones futures; both arrive as values."""
    from flow_orchestrator.state import RunState

    wf = (WorkflowBuilder("w").add("local", pid).add("remote", pid)
          .add("types", input_types, depends_on=["local", "remote"]).build())
    with Engine(2) as threads:
        state = RunState.from_result(threads.run(wf))
    with Engine(2, executor=keeping) as eng:
        result = eng.run(wf, resume=state, rerun=["remote"])
    assert isinstance(result.output("local"), int) and isinstance(result.output("remote"), distributed.Future)
    assert keeping.gather(result.output("types")) == {"local": "int", "remote": "int"}


def test_an_unpicklable_output_can_stay_on_the_cluster(keeping):
    wf = WorkflowBuilder("w").add("lock", returns_lock).build()
    with Engine(1, executor=keeping) as eng:
        result = eng.run(wf)
    future = result.output("lock")
    assert isinstance(future, distributed.Future) and future.status == "finished"


def test_kept_outputs_cannot_be_checkpointed(keeping):
    from flow_orchestrator.errors import SerializationError
    from flow_orchestrator.stores import MemoryStore

    wf = WorkflowBuilder("w").add("a", pid).add("b", input_types, depends_on="a").build()
    with Engine(2, executor=keeping) as eng:
        result = eng.run(wf, store=MemoryStore(), raise_on_failure=False)
    assert result.status_of("a") is NodeStatus.FAILED and result.status_of("b") is NodeStatus.SKIPPED
    assert isinstance(result.error("a"), SerializationError) and "node 'a'" in str(result.error("a"))


def test_unpicklable_input_or_data_still_named_when_kept(keeping):
    wf = WorkflowBuilder("w").add("n", pid).build()
    with Engine(1, executor=keeping) as eng:
        result = eng.run(wf, data={"holder": Holder()}, raise_on_failure=False)
    error = result.error("n")
    assert isinstance(error, PicklingError) and error.what == "data['holder']"
