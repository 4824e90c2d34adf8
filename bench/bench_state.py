"""Saving and loading a run state: the FlatBuffers codec against stdlib JSON.

The issue's target: on a 100,000-node run state, FlatBuffers is at least 5x faster than
stdlib JSON for each of encode (save) and decode (load), and under 50 ms each; encoded
sizes reported.  The state is the one a finished run leaves: every node completed, a
small int output each, a few error records, a layered DAG of two dependencies a node.

* ``PYTHONPATH=. python -m pytest bench/bench_state.py --benchmark-only -p no:cacheprovider``
  gives pytest-benchmark's statistics, one group per operation;
* ``from bench.bench_state import compare; compare(nodes=100_000, repeat=3)`` returns one
  row per codec and operation (best and mean seconds, bytes, speedup over stdlib JSON).

Only encode/decode are timed (bytes in memory), not file I/O.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from flow_orchestrator.codecs import flatbuffers_codec, json_codec
from flow_orchestrator.serialization import JsonSerializer
from flow_orchestrator.state import ErrorRecord, RunState, fingerprint_arrays

__all__ = ["CODECS", "compare", "make_state"]

LAYER = 1000
"""Nodes per layer of the benchmark DAG."""


def _layered_csr(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR successors of a layered DAG: node i (past the first layer) depends on the nodes
    i - LAYER and i - LAYER + 1 of the previous layer (when they are in it)."""
    targets = np.arange(LAYER, nodes, dtype=np.int64)
    sources = np.concatenate([targets - LAYER, targets - LAYER + 1])
    targets = np.concatenate([targets, targets])
    keep = sources // LAYER == targets // LAYER - 1
    order = np.lexsort((targets[keep], sources[keep]))
    sources, targets = sources[keep][order], targets[keep][order]
    indptr = np.zeros(nodes + 1, np.int64)
    np.cumsum(np.bincount(sources, minlength=nodes), out=indptr[1:])
    return indptr, targets.astype(np.int32)


def make_state(nodes: int = 100_000, errors: int = 5, seed: int = 0) -> RunState:
    """The state of a finished run of ``nodes`` nodes: all completed, int outputs, a few
    error records (of attempts that were retried), timings in seconds."""
    rng = np.random.default_rng(seed)
    names = [f"layer{i // LAYER:04d}/node{i % LAYER:04d}" for i in range(nodes)]
    indptr, indices = _layered_csr(nodes)
    started = np.sort(rng.random(nodes)) * 60.0
    serializer = JsonSerializer()
    failed = rng.choice(nodes, size=min(errors, nodes), replace=False).tolist()
    return RunState(
        workflow="bench", fingerprint=fingerprint_arrays(names, indptr, indices), run_id="bench-1",
        run_status="completed", node_names=names, succ_indptr=indptr, succ_indices=indices,
        statuses=np.full(nodes, 2, np.uint8), attempts=np.ones(nodes, np.int32),
        started=started, ended=started + rng.random(nodes) * 1e-3,
        started_at=1.7e9, updated_at=1.7e9 + 61.0,
        outputs={i: serializer.dumps(i * 7) for i in range(nodes)},
        errors={i: ErrorRecord("TimeoutError", f"attempt 1 of node {names[i]} timed out",
                               "Traceback (most recent call last):\n  ...\nTimeoutError\n") for i in failed},
        data=serializer.dumps({"source": "bench", "rows": nodes}),
    )


CODECS: dict[str, tuple[Callable[[RunState], bytes], Callable[[bytes], RunState]]] = {
    "flatbuffers": (flatbuffers_codec.encode, flatbuffers_codec.decode),
    "json (stdlib)": (lambda s: json_codec.encode(s, fast=False), lambda b: json_codec.decode(b, fast=False)),
    "json (orjson if installed)": (json_codec.encode, json_codec.decode),
}
"""Encode and decode functions by codec name; stdlib JSON is the baseline."""


def _times(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def compare(nodes: int = 100_000, repeat: int = 3) -> list[dict[str, Any]]:
    """Time encode and decode of a ``nodes``-node state with each codec.

    Returns one row per codec and operation: ``codec``, ``operation`` (``"encode"`` or
    ``"decode"``), ``nodes``, ``best_ms``, ``mean_ms``, ``bytes`` (the encoded size) and
    ``speedup`` (stdlib JSON's best time over this one's).  Every decoded state is
    checked to equal the original.
    """
    state = make_state(nodes)
    rows: list[dict[str, Any]] = []
    for codec, (encode, decode) in CODECS.items():
        blob = encode(state)
        if decode(blob) != state:
            raise AssertionError(f"{codec}: the decoded state differs from the original")
        for operation, fn, arg in (("encode", encode, state), ("decode", decode, blob)):
            times = _times(functools.partial(fn, arg), repeat)
            rows.append({"codec": codec, "operation": operation, "nodes": nodes,
                         "best_ms": 1e3 * min(times), "mean_ms": 1e3 * sum(times) / len(times),
                         "bytes": len(blob)})
    baseline = {row["operation"]: row["best_ms"] for row in rows if row["codec"] == "json (stdlib)"}
    for row in rows:
        row["speedup"] = baseline[row["operation"]] / row["best_ms"]
    return rows


# -- pytest-benchmark ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def state() -> RunState:
    return make_state()


@pytest.mark.parametrize("codec", list(CODECS))
def test_encode(benchmark, state, codec):
    benchmark.group = "run state 100k nodes: encode"
    encode, decode = CODECS[codec]
    blob = benchmark.pedantic(encode, args=(state,), rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["bytes"] = len(blob)
    assert decode(blob) == state


@pytest.mark.parametrize("codec", list(CODECS))
def test_decode(benchmark, state, codec):
    benchmark.group = "run state 100k nodes: decode"
    encode, decode = CODECS[codec]
    blob = encode(state)
    benchmark.extra_info["bytes"] = len(blob)
    decoded = benchmark.pedantic(decode, args=(blob,), rounds=5, iterations=1, warmup_rounds=1)
    assert decoded == state
