"""Resuming a run from a saved RunState: completed nodes are not run again."""

from __future__ import annotations

import threading

import pytest

from flow_orchestrator import Engine, NodeStatus, WorkflowBuilder
from flow_orchestrator.codecs import flatbuffers_codec, json_codec
from flow_orchestrator.errors import DefinitionError, IncompatibleStateError
from flow_orchestrator.state import RunState
from flow_orchestrator.stores import FlatBuffersFileStore, JsonFileStore, SqliteStore


class Calls:
    """Counts how often each node ran (thread-safe)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def action(self, name: str, fails_while_broken: bool = False):
        def run(ctx):
            with self._lock:
                self.counts[name] = self.counts.get(name, 0) + 1
            if fails_while_broken and ctx.data.get("broken", True):
                raise RuntimeError(f"{name} is down")
            return sum(ctx.inputs.values()) + 1 if ctx.inputs else 1
        return run


def diamond(calls: Calls, extra: bool = False, order: str = "abcd"):
    """a -> b (fails while data['broken']) -> c ; a -> d."""
    specs = {
        "a": ((), False), "b": (("a",), True), "c": (("b",), False), "d": (("a",), False),
    }
    flow = WorkflowBuilder("resumable")
    for name in order:
        deps, breaks = specs[name]
        flow.add(name, calls.action(name, breaks), depends_on=deps)
    if extra:
        flow.add("e", calls.action("e"), depends_on="c")
    return flow.build()


@pytest.fixture()
def engine():
    with Engine(2) as eng:
        yield eng


def failed_state(engine, calls):
    result = engine.run(diamond(calls), continue_on_error=True, raise_on_failure=False)
    assert result.status_of("b") is NodeStatus.FAILED and result.status_of("c") is NodeStatus.SKIPPED
    return result, RunState.from_result(result, data={"broken": False})


def test_resume_runs_only_what_did_not_complete(engine):
    calls = Calls()
    first, state = failed_state(engine, calls)
    second = engine.run(diamond(calls), resume=state)
    assert second.ok and second.run_id == first.run_id
    assert calls.counts == {"a": 1, "b": 2, "c": 1, "d": 1}
    # Restored outputs feed the nodes that run now: c = b + 1 = (a + 1) + 1.
    assert second.outputs == {"a": 1, "b": 2, "c": 3, "d": 2}
    assert second.attempts[second.workflow.node_id("a")] == 1


@pytest.mark.parametrize("codec", [flatbuffers_codec, json_codec])
def test_resume_from_an_encoded_state(engine, codec):
    calls = Calls()
    _, state = failed_state(engine, calls)
    restored = codec.decode(codec.encode(state))
    assert engine.run(diamond(calls), resume=restored).ok
    assert calls.counts["a"] == 1 and calls.counts["b"] == 2


@pytest.mark.parametrize("make_store", [lambda p: FlatBuffersFileStore(p), lambda p: SqliteStore(p / "runs.db")])
def test_resume_through_a_store(engine, tmp_path, make_store):
    calls = Calls()
    first, state = failed_state(engine, calls)
    store = make_store(tmp_path)
    try:
        store.save(state)
        result = engine.run(diamond(calls), resume=store.load(first.run_id))
    finally:
        store.close()
    assert result.ok and calls.counts == {"a": 1, "b": 2, "c": 1, "d": 1}


def test_rerun_a_node_and_its_descendants(engine):
    calls = Calls()
    _, state = failed_state(engine, calls)
    done = RunState.from_result(engine.run(diamond(calls), resume=state), data={"broken": False})
    engine.run(diamond(calls), resume=done, rerun=["b"])
    assert calls.counts == {"a": 1, "b": 3, "c": 2, "d": 1}


def test_a_completed_run_resumes_to_completion_at_once(engine):
    calls = Calls()
    _, state = failed_state(engine, calls)
    done = RunState.from_result(engine.run(diamond(calls), resume=state))
    again = engine.run(diamond(calls), resume=done)
    assert again.ok and calls.counts == {"a": 1, "b": 2, "c": 1, "d": 1}
    assert again.output("c") == 3


def test_nodes_are_matched_by_name_not_id(engine):
    calls = Calls()
    _, state = failed_state(engine, calls)
    result = engine.run(diamond(calls, order="dcba"), resume=state)
    assert result.ok and calls.counts == {"a": 1, "b": 2, "c": 1, "d": 1}
    assert result.outputs == {"a": 1, "b": 2, "c": 3, "d": 2}


def test_an_incompatible_workflow_is_refused_naming_the_difference(engine):
    calls = Calls()
    _, state = failed_state(engine, calls)
    changed = (WorkflowBuilder("resumable").add("a", calls.action("a"))
               .add("b", calls.action("b"), depends_on="a").add("c", calls.action("c"), depends_on="a")
               .add("d", calls.action("d"), depends_on="a").build())
    with pytest.raises(IncompatibleStateError, match="'b'.*'c'|'c'.*'b'"):
        engine.run(changed, resume=state)
    with pytest.raises(IncompatibleStateError, match="'e'"):
        engine.run(diamond(calls, extra=True), resume=state)
    assert calls.counts == {"a": 1, "b": 1, "d": 1}  # nothing ran


def test_new_nodes_are_allowed_on_request(engine):
    calls = Calls()
    _, state = failed_state(engine, calls)
    result = engine.run(diamond(calls, extra=True), resume=state, allow_new_nodes=True)
    assert result.ok and result.output("e") == 4
    assert calls.counts == {"a": 1, "b": 2, "c": 1, "d": 1, "e": 1}


def test_bad_resume_arguments(engine):
    calls = Calls()
    with pytest.raises(DefinitionError, match="rerun"):
        engine.run(diamond(calls), rerun=["a"])
    with pytest.raises(DefinitionError, match="RunState"):
        engine.run(diamond(calls), resume={"not": "a state"})


def test_the_serial_executor_resumes_too():
    calls = Calls()
    with Engine(1, executor="serial") as serial:
        _, state = failed_state(serial, calls)
        assert serial.run(diamond(calls), resume=state).ok
    assert calls.counts == {"a": 1, "b": 2, "c": 1, "d": 1}


def edited(calls: Calls, order: str):
    """a -> b (fails while data['broken']) -> c; a -> d; x -> y: its nodes added in ``order``."""
    specs = {"a": (), "b": ("a",), "c": ("b",), "d": ("a",), "x": (), "y": ("x",)}
    flow = WorkflowBuilder("edited")
    for name in order:
        flow.add(name, calls.action(name, name == "b"), depends_on=specs[name])
    return flow.build()


@pytest.mark.parametrize("kind", ["state", "sqlite", "json"])
def test_resume_of_an_edited_pipeline_maps_completed_nodes_by_name(engine, tmp_path, kind):
    """An edited pipeline lists its nodes in another order: the saved completions are mapped
    by name, so no finished node runs again and no node that never ran reports completed."""
    calls = Calls()
    store = None if kind == "state" else (SqliteStore(tmp_path / "runs.db") if kind == "sqlite"
                                          else JsonFileStore(tmp_path / "runs"))
    first = engine.run(edited(calls, "abcdxy"), store=store, run_id="edit", continue_on_error=True,
                       raise_on_failure=False)
    assert calls.counts == {"a": 1, "b": 1, "d": 1, "x": 1, "y": 1}  # c was skipped
    reordered = edited(calls, "ycxbda")
    assert reordered.names != first.workflow.names
    if store is None:
        result = engine.run(reordered, resume=RunState.from_result(first, data={"broken": False}))
    else:
        result = engine.resume(reordered, "edit", store=store, data={"broken": False})
    assert result.ok
    assert calls.counts == {"a": 1, "b": 2, "c": 1, "d": 1, "x": 1, "y": 1}
    assert result.outputs == {"a": 1, "b": 2, "c": 3, "d": 2, "x": 1, "y": 2}
    if store is not None:
        saved = store.load("edit")
        assert saved.node_names == reordered.names
        assert {name: saved.output(name) for name in saved.node_names} == result.outputs
        store.close()
