"""Map items are durable: saved by every store and codec, restored on resume, never run twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import flow_orchestrator as fo
from flow_orchestrator.codecs import flatbuffers_codec, json_codec
from flow_orchestrator.state import FORMAT_VERSION, ItemRecord, RunState, decode_items, encode_items
from flow_orchestrator.status import NodeStatus
from flow_orchestrator.stores import FlatBuffersFileStore, JsonFileStore, MemoryStore, SqliteStore
from flow_orchestrator.stores.base import Transition
from flow_orchestrator.stores.journal import decode_batch, encode_batch

from pg_server import fresh_schema

CHILD = Path(__file__).with_name("map_crash_child.py")
DONE = int(NodeStatus.COMPLETED)


def mapped(calls: list[int], broken: set[int]) -> fo.Workflow:
    def step(x: int) -> int:
        calls.append(x)
        if x in broken:
            raise ValueError(f"item {x}")
        return x * 2

    flow = fo.WorkflowBuilder("durable-map")
    flow.add("source", lambda: list(range(50)))
    flow.map("each", step, over="source", continue_on_error=True)
    flow.add("total", lambda each: sum(each), depends_on="each")
    return flow.build()


STORES = {
    "sqlite": lambda tmp: SqliteStore(tmp / "runs.db"),
    "flatbuffers": lambda tmp: FlatBuffersFileStore(tmp / "fb"),
    "json": lambda tmp: JsonFileStore(tmp / "json"),
    "memory": lambda tmp: MemoryStore(),
}


@pytest.fixture
def make_store(request, tmp_path):
    if request.param != "postgres":
        yield lambda: STORES[request.param](tmp_path)
        return
    from flow_orchestrator.stores import PostgresStore
    with fresh_schema() as (conninfo, schema):
        yield lambda: PostgresStore(conninfo, schema=schema)


@pytest.mark.parametrize("make_store", [*sorted(STORES), "postgres"], indirect=True)
@pytest.mark.parametrize("policy", ["strict", "batched", "end"])
def test_a_resumed_map_runs_only_the_items_that_did_not_complete(make_store, policy):
    calls: list[int] = []
    broken = {3, 17, 40}
    wf = mapped(calls, broken)
    store = make_store()
    try:
        with fo.Engine(2) as engine:
            first = engine.run(wf, store=store, run_id="m", checkpoint=policy, raise_on_failure=False)
            assert first.items("each").failed() == sorted(broken)
            saved = store.load("m")
            assert saved.format_version == FORMAT_VERSION
            records = saved.items[wf.node_id("each")]
            assert len(records) == 50 and {i for i, r in records.items() if r.status != DONE} == broken
            assert records[5].output == b"10" and records[3].error.type == "ValueError"
            broken.clear()
            calls.clear()
            again = engine.resume(wf, "m", store=store, checkpoint=policy)
        assert again.ok and again.output("total") == sum(2 * x for x in range(50))
        assert sorted(calls) == [3, 17, 40]
        assert again.items("each").counts()[NodeStatus.COMPLETED] == 50
        final = store.load("m")
        assert all(r.status == DONE for r in final.items[wf.node_id("each")].values())
    finally:
        store.close()


def test_items_survive_every_codec():
    records = {2: {0: ItemRecord(DONE, 1, 0.5, 0.7, b"[1]"),
                   4: ItemRecord(int(NodeStatus.FAILED), 2, 0.1, float("nan"), None, fo.state.ErrorRecord("E", "m", "tb"))}}
    assert decode_items(encode_items(records)) == records
    flow = fo.WorkflowBuilder("w")
    flow.add("a", lambda: [1])
    flow.add("b", lambda: 1, depends_on="a")
    flow.map("c", lambda x: x, over="a")
    state = RunState.initial(flow.build(), "r")
    state.items = records
    state.validate()
    for codec in (json_codec, flatbuffers_codec):
        back = codec.decode(codec.encode(state))
        assert back.items == records and back.format_version == 3
    with pytest.raises(fo.errors.CorruptStateError):
        decode_items(encode_items(records)[:-3])


def test_journal_records_carry_items():
    record = Transition(3, DONE, 1, 0.5, 0.6, b"7", None, 42)
    stamp, records, data = decode_batch(encode_batch(1.0, [record, Transition(1, DONE, 1, 0.1, 0.2, b"1")]))
    assert records == [record, Transition(1, DONE, 1, 0.1, 0.2, b"1", None, -1)]


def _saved_items(db: Path) -> set[int]:
    with SqliteStore(db) as store:
        if not store.exists("job"):
            return set()
        state = store.load("job")
    node = state.node_names.index("each")
    return {i for i, r in state.items.get(node, {}).items() if r.status == DONE}


def test_sigkill_a_half_done_10000_item_map_then_resume(tmp_path):
    """A child process is killed mid-map; the resumed run runs no item the store held as
    completed (counted in a file the items append to), and ends with every item done."""
    db, log = tmp_path / "runs.db", tmp_path / "calls"
    child = subprocess.Popen([sys.executable, str(CHILD), str(db), str(log)], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while child.poll() is None and time.monotonic() < deadline:
        if log.exists() and log.read_bytes().count(b"\n") >= 4000:
            break
        time.sleep(0.005)
    assert child.poll() is None, child.communicate()[1].decode()[-2000:]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    ran_before = log.read_bytes().count(b"\n")
    saved = _saved_items(db)
    assert 0 < len(saved) < 10_000, "the kill should land mid-map, after some items were saved"
    resumed = subprocess.run([sys.executable, str(CHILD), str(db), str(log)], cwd=tmp_path,
                             capture_output=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert resumed.stdout.split()[-1] == str(sum(2 * x for x in range(10_000))).encode()
    lines = log.read_text().split()
    again = [int(x) for x in lines[ran_before:]]
    assert not saved & set(again), "a completed item ran again"
    assert set(map(int, lines)) == set(range(10_000))
    assert _saved_items(db) == set(range(10_000))


def test_status_and_pictures_show_item_counts(tmp_path, capsys):
    from flow_orchestrator.cli.main import main
    from flow_orchestrator.render import to_dot, to_mermaid

    calls: list[int] = []
    wf = mapped(calls, {3, 13})
    store = SqliteStore(tmp_path / "runs.db")
    try:
        with fo.Engine(2) as engine:
            result = engine.run(wf, store=store, run_id="pics", raise_on_failure=False)
        state = store.load("pics")
    finally:
        store.close()
    assert 'each [48 completed, 2 failed]' in to_mermaid(result)
    assert 'label="each [48 completed, 2 failed]"' in to_dot(state)
    main(["status", "--store", f"sqlite:///{tmp_path / 'runs.db'}", "pics"])
    out = capsys.readouterr().out
    assert "map items" in out and "each" in out.split("map items")[1].splitlines()[2]
    main(["status", "--store", f"sqlite:///{tmp_path / 'runs.db'}", "pics", "--json"])
    report = __import__("json").loads(capsys.readouterr().out)
    assert report["items"]["each"]["completed"] == 48 and report["items"]["each"]["failed"] == 2
