"""A resume goes on with the serializer its run was saved with (``RunState.serializer``)."""

from __future__ import annotations

import pytest

import flow_orchestrator as fo
from flow_orchestrator.serialization import (
    JsonSerializer,
    PickleSerializer,
    SerializationError,
    get_serializer,
    register_serializer,
    resume_serializer,
    serializer_names,
)
from flow_orchestrator.state import RunState
from flow_orchestrator.stores import MemoryStore


class Opaque:
    """Only pickle can save it."""

    def __init__(self, n: int) -> None:
        self.n = n


def _workflow(fail: list[bool]) -> fo.Workflow:
    def second(ctx):
        if fail[0]:
            raise RuntimeError("not yet")
        return Opaque(ctx.inputs["first"].n + 1)
    return (fo.WorkflowBuilder("pickled")
            .add("first", lambda: Opaque(1))
            .add("second", second, depends_on="first")
            .build())


def test_a_durable_resume_uses_the_serializer_the_run_was_saved_with():
    fail = [True]
    wf = _workflow(fail)
    store = MemoryStore()
    with fo.Engine(2) as engine:
        first = engine.run(wf, store=store, run_id="r", serializer=PickleSerializer(), raise_on_failure=False)
        assert first.status is fo.RunStatus.FAILED and store.load("r").serializer == "pickle"
        fail[0] = False
        with pytest.raises(SerializationError, match="saved with the 'pickle' serializer, not 'json'"):
            engine.resume(wf, "r", store=store, serializer=JsonSerializer())
        with pytest.raises(SerializationError, match="runs code stored in the run"):
            engine.resume(wf, "r", store=store)  # pickle is never chosen for you: it trusts the store
        assert store.load("r").serializer == "pickle"
        result = engine.resume(wf, "r", store=store, serializer=PickleSerializer())
        assert result.ok and result.output("second").n == 2
        assert store.load("r").serializer == "pickle"


def test_resuming_a_state_uses_its_serializer():
    fail = [True]
    wf = _workflow(fail)
    with fo.Engine(2) as engine:
        failed = engine.run(wf, raise_on_failure=False)
        state = RunState.from_result(failed, PickleSerializer())
        fail[0] = False
        with pytest.raises(SerializationError, match="runs code stored in the run"):
            engine.run(wf, resume=state)
        assert engine.run(wf, resume=state, serializer=PickleSerializer()).output("second").n == 2


def test_the_registry():
    assert serializer_names()[:2] == ["json", "pickle"]
    assert resume_serializer("json").name == "json"
    with pytest.raises(SerializationError, match="runs code stored in the run"):
        resume_serializer("pickle")  # never chosen for you
    assert resume_serializer("pickle", PickleSerializer()).name == "pickle"
    with pytest.raises(SerializationError, match="'yaml' serializer, which is not known"):
        resume_serializer("yaml")

    class Upper(JsonSerializer):
        name = "upper-json"
    register_serializer("upper-json", Upper)
    try:
        assert "upper-json" in serializer_names() and get_serializer("upper-json").name == "upper-json"
        assert resume_serializer("upper-json").name == "upper-json"
        with pytest.raises(SerializationError):
            register_serializer("json", Upper)
    finally:
        from flow_orchestrator import serialization
        serialization._REGISTRY.pop("upper-json")
