"""The saved state of a run: what a store writes and what resuming reads back.

A :class:`RunState` holds everything needed to resume a run of a workflow:

* a header: :data:`FORMAT_VERSION`, the workflow's name, its :func:`fingerprint`, the
  run id and status, the name of the :mod:`~flow_orchestrator.serialization` serializer
  used for outputs and data, and two epoch timestamps;
* the DAG it ran: node names in id order and the successor lists in CSR form
  (``succ_indptr``, ``succ_indices``, as :class:`~flow_orchestrator.dag.CSRGraph` holds
  them), so that a changed workflow can be described precisely
  (:func:`flow_orchestrator.resume.diff_workflow`);
* per node, as numpy arrays indexed by node id: ``statuses`` (``uint8``
  :class:`~flow_orchestrator.status.NodeStatus`), ``attempts`` (``int32``), ``started``
  and ``ended`` (``float64`` seconds since the run started, NaN when unset);
* the serialized output of every completed node (:data:`NOT_SAVED` for a node with
  ``persist=False``), the :class:`ErrorRecord` of each node that ended with an exception,
  and the serialized workflow data.  Durable stores keep outputs of :data:`BLOB_MIN`
  bytes or more apart from snapshots (written once per run, referenced by length and
  sha256); in memory a state always holds them.

Every :class:`RunState` is validated when it is made (:meth:`RunState.validate`): array
types and lengths, status codes, attempt counts (below :data:`MAX_ATTEMPTS`, what the
core keeps), the CSR arrays (no duplicate edge, no cycle), that every completed node's
dependencies completed too, output and error ids, that the fingerprint matches the names
and edges, and that JSON workflow data is a JSON object (data of other serializers is
checked when :meth:`RunState.load_data` reads it).  Anything inconsistent raises
:class:`CorruptStateError`, so a state that a codec hands back is always usable.  The
codecs (:mod:`flow_orchestrator.codecs`) add checksums and bounds checks on top.

Where it sits: layer L3 (run records): codecs and stores (L4) read and write it;
comparing a state with a workflow is :mod:`flow_orchestrator.resume`'s.
"""

from __future__ import annotations

import hashlib
import math
import struct
import time
import traceback as _traceback
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ._draw import Picture
from ._ext import CSRGraph
from .errors import CorruptStateError, FlowError, UnknownNodeError
from .serialization import JsonSerializer, SerializationError, Serializer
from .status import NodeStatus, count_text

if TYPE_CHECKING:
    from .result import RunResult
    from .workflow import Workflow

__all__ = [
    "BLOB_MIN",
    "ItemRecord",
    "decode_items",
    "encode_items",
    "item_records",
    "FORMAT_VERSION",
    "MAX_ATTEMPTS",
    "NOT_SAVED",
    "RUN_STATUSES",
    "CorruptStateError",
    "ErrorRecord",
    "RunState",
    "blob_digest",
    "canonical_graph",
    "check_blob",
    "fingerprint",
    "fingerprint_arrays",
    "not_saved_positions",
    "unsaved_nodes",
]

FORMAT_VERSION = 3
"""The version of the saved-state format that this library writes (and the newest it reads).

Version 2 added where each output lives: inline, in a blob of the store kept apart
from the snapshot (referenced by length and sha256), or not saved (``persist=False``).
Version 3 added the items of map nodes (:attr:`RunState.items`).  States of versions 1
and 2 are still read, and written back with their version unless they gain what it
cannot hold."""

BLOB_MIN = 64 * 1024
"""Durable stores keep outputs of at least this many bytes as blobs of their own, written
once per run, which snapshots and journal records reference by length and sha256."""


class _NotSaved(bytes):
    """The type of :data:`NOT_SAVED` (a ``bytes`` only so that output mappings keep one type)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return other is self

    def __ne__(self, other: object) -> bool:
        return other is not self

    __hash__ = bytes.__hash__

    def __repr__(self) -> str:
        return "NOT_SAVED"

    def __reduce__(self) -> str:
        return "NOT_SAVED"


NOT_SAVED: bytes = _NotSaved()
"""The output of a completed node whose output is not kept (``NodeOptions(persist=False)``):
in :attr:`RunState.outputs` and in checkpoint records.  A resume runs such a node again
when a dependent that has not completed needs it."""


def not_saved_positions(values: Sequence[bytes]) -> list[int]:
    """The positions of :data:`NOT_SAVED` among ``values`` (found through the lengths, in
    bulk: it is the only empty value that is not ``b""``)."""
    if not values:
        return []
    sizes = np.fromiter(map(len, values), np.int64, len(values))
    return [i for i in np.flatnonzero(sizes == 0).tolist() if values[i] is NOT_SAVED]


def blob_digest(blob: bytes) -> bytes:
    """The sha256 by which snapshots and journal records name an output kept as a blob."""
    return hashlib.sha256(blob).digest()


def check_blob(node: int, blob: object, size: int, digest: bytes) -> bytes:
    """``blob``, checked to be the output a state references (its length, then its sha256);
    :class:`CorruptStateError` otherwise."""
    if type(blob) is not bytes:
        _fail(f"the stored output of node id {node} is missing")
    assert isinstance(blob, bytes)
    if len(blob) != size:
        _fail(f"the stored output of node id {node} has {len(blob)} bytes, not the {size} its state references")
    if blob_digest(blob) != digest:
        _fail(f"the stored output of node id {node} is damaged (its sha256 differs from its state's)")
    return blob

MAX_ATTEMPTS = 2**24
"""Attempt counts must be below this: the compiled core keeps a node's attempt in 24 bits."""

RUN_STATUSES = ("running", "completed", "failed", "cancelled")
"""The values of :attr:`RunState.run_status`: a run being checkpointed, or how it ended."""

_NUM_STATUSES = len(NodeStatus)
_FINGERPRINT_TAG = b"flow-orchestrator/fingerprint/v1\x00"
_HEX = frozenset("0123456789abcdef")


# -- fingerprint ---------------------------------------------------------------------------------


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (``np.unique`` is far slower on large int arrays in numpy 2)."""
    values = np.sort(values)
    if values.size > 1:
        values = values[np.concatenate(([True], values[1:] != values[:-1]))]
    return values


def _difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The values of sorted unique ``a`` that are not in sorted unique ``b``."""
    if not b.size:
        return a
    found = b[np.minimum(np.searchsorted(b, a), b.size - 1)] == a
    return a[~found]


def _canonical_csr(indptr: np.ndarray, indices: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The CSR arrays with each node's successors sorted and distinct (as given when they are)."""
    m = indices.size
    if m > 1:
        increasing = indices[1:] > indices[:-1]
        starts = indptr[1:-1]
        increasing[starts[(starts > 0) & (starts < m)] - 1] = True
        if not bool(increasing.all()):
            sources = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
            keys = _sorted_unique(sources * n + indices)
            indices = (keys % n).astype(np.int32)
            indptr = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(np.bincount(keys // n, minlength=n), out=indptr[1:])
    return indptr, indices


def _hash_names(digest: Any, names: Sequence[str], utf8: bytes | memoryview | None) -> None:
    if utf8 is not None:  # the caller's NUL-joined UTF-8 of names that hold no NUL
        digest.update(b"names:nul-separated\x00")
        digest.update(utf8)
        return
    joined = "\x00".join(names)
    if joined.count("\x00") == len(names) - 1:  # no name holds a NUL: the separator is unambiguous
        digest.update(b"names:nul-separated\x00")
    else:
        digest.update(b"names:lengths\x00")
        digest.update(np.fromiter(map(len, names), dtype="<i8", count=len(names)).tobytes())
        joined = "".join(names)
    digest.update(joined.encode("utf-8", "surrogatepass"))


def fingerprint_arrays(names: Sequence[str], succ_indptr: np.ndarray, succ_indices: np.ndarray,
                       *, names_utf8: bytes | memoryview | None = None) -> str:
    """The :func:`fingerprint` of a DAG given as node names and CSR successor arrays.

    Hashes, with sha256: the node and edge counts, the names in id order as one UTF-8
    string (NUL-separated, or with each name's length when a name holds a NUL; lone
    surrogates kept), then the CSR arrays with each node's successors sorted and
    distinct, so their order and duplicate edges do not matter.  All in bulk: no
    per-edge Python work, and no sort when the successors are already in order.
    ``names_utf8`` (for decoders that have it): ``"\\x00".join(names)`` as UTF-8 with
    surrogates passed, when no name holds a NUL.
    """
    n = len(names)
    indptr, indices = _canonical_csr(succ_indptr, succ_indices, n)
    digest = hashlib.sha256(_FINGERPRINT_TAG)
    digest.update(struct.pack("<QQ", n, indices.size))
    _hash_names(digest, names, names_utf8)
    # Hashed through the buffer protocol: no copy of the arrays (little-endian hosts).
    digest.update(np.ascontiguousarray(indptr, dtype="<i8").data)
    digest.update(np.ascontiguousarray(indices, dtype="<i4").data)
    return digest.hexdigest()


def canonical_graph(workflow: Workflow) -> tuple[np.ndarray, np.ndarray]:
    """The workflow's CSR successor arrays as a state stores them: each node's successors
    sorted, each edge once (:meth:`Workflow.from_arrays` may list an edge twice); the
    workflow's own arrays when they already are (no copy, one O(edges) check)."""
    graph = workflow.graph
    return _canonical_csr(graph.succ_indptr, graph.succ_indices, len(workflow))


def fingerprint(workflow: Workflow) -> str:
    """The sha256 hex digest of a workflow's DAG: node names in id order and its edges.

    Stable across processes, runs and library versions (the format is versioned by a
    tag inside the hash); independent of the workflow's name, actions and options.
    """
    graph = workflow.graph
    return fingerprint_arrays(workflow.names, graph.succ_indptr, graph.succ_indices)


# -- errors ----------------------------------------------------------------------------------------


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _safe(fn: Any, fallback: str) -> str:
    try:
        return str(fn())
    except Exception:  # noqa: BLE001 - a broken __str__ or traceback must not stop a save
        return fallback


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """What is kept of the exception that ended a node: its type, message and traceback."""

    type: str
    message: str
    traceback: str = ""

    def __post_init__(self) -> None:
        for name in ("type", "message", "traceback"):
            if type(getattr(self, name)) is not str:
                raise CorruptStateError(f"ErrorRecord.{name} must be a str, got {getattr(self, name)!r}")

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorRecord:
        """The record of ``exc``: qualified type name, ``str(exc)``, formatted traceback."""
        name = _type_name(exc)
        message = _safe(lambda: exc, f"<unprintable {name}>")
        tb = _safe(lambda: "".join(_traceback.format_exception(exc)), "")
        return cls(name, message, tb)

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


@dataclass(frozen=True, slots=True, eq=False)
class ItemRecord:
    """The saved state of one item of a map node: its status and attempts, its times
    (seconds since the run started, NaN: unset), its serialized output (a completed
    item's) and its error (one that ended with an exception).  Records compare equal
    field by field, times bit for bit (so NaN equals NaN)."""

    status: int
    attempt: int
    started: float = math.nan
    ended: float = math.nan
    output: bytes | None = None
    error: ErrorRecord | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ItemRecord):
            return NotImplemented
        return ((self.status, self.attempt, self.output, self.error) == (other.status, other.attempt, other.output,
                                                                          other.error)
                and struct.pack("<dd", self.started, self.ended) == struct.pack("<dd", other.started, other.ended))

    __hash__ = None  # type: ignore[assignment]


def _check_items(items: Any, n: int) -> None:
    if type(items) is not dict:
        _fail(f"items must be a dict keyed by map node id, got {type(items).__name__}")
    _id_array("items", items, n)
    for node, records in items.items():
        if type(records) is not dict or not all(type(k) is int and k >= 0 for k in records):
            _fail(f"items of node {node} must be a dict keyed by item index")
        for index, record in records.items():
            if type(record) is not ItemRecord:
                _fail(f"item {index} of node {node} must be an ItemRecord")
            if type(record.status) is not int or not 0 <= record.status < _NUM_STATUSES:
                _fail(f"item {index} of node {node} has status {record.status!r}")
            if type(record.attempt) is not int or not 0 <= record.attempt < MAX_ATTEMPTS:
                _fail(f"item {index} of node {node} has attempt count {record.attempt!r}")
            if (record.status == NodeStatus.COMPLETED) != (type(record.output) is bytes):
                _fail(f"item {index} of node {node}: an output if and only if it completed")
            if record.error is not None and type(record.error) is not ErrorRecord:
                _fail(f"item {index} of node {node}: its error must be an ErrorRecord")


def item_records(result: RunResult, serializer: Serializer) -> dict[int, dict[int, ItemRecord]]:
    """The :class:`ItemRecord` of every item of ``result``'s map nodes, outputs serialized."""
    records: dict[int, dict[int, ItemRecord]] = {}
    for node, kind in result.workflow.kinds.items():
        if kind.kind != "map":
            continue
        items = result.items(node)
        if not len(items):
            continue
        mine: dict[int, ItemRecord] = {}
        for i, (status, attempt, started, ended) in enumerate(zip(
                items.statuses.tolist(), items.attempts.tolist(), items.started.tolist(), items.ended.tolist())):
            output = None
            if status == NodeStatus.COMPLETED:
                try:
                    output = serializer.dumps(items.outputs[i])
                except SerializationError as exc:
                    raise SerializationError(f"output of item {i} of map {items.node!r}: {exc}", "") from exc
            error = items.errors.get(i)
            mine[i] = ItemRecord(status, attempt, started, ended, output,
                                 ErrorRecord.from_exception(error) if error is not None else None)
        records[node] = mine
    return records


_ITEMS_HEAD = struct.Struct("<iI")
_ITEM = struct.Struct("<qBiddB")
_ITEM_SIZE = struct.Struct("<I")


def encode_items(items: dict[int, dict[int, ItemRecord]]) -> bytes:
    """The items of a state as bytes (what the codecs store; :func:`decode_items` reads
    it): per map node ``<i32 node><u32 count>``, then per item
    ``<i64 index><u8 status><i32 attempt><f64 started><f64 ended><u8 flags>``, the output
    (``<u32 size>`` + bytes, if ``flags & 1``) and the error (three ``<u32 size>`` +
    UTF-8 strings, if ``flags & 2``)."""
    parts: list[bytes] = []
    for node in sorted(items):
        records = items[node]
        parts.append(_ITEMS_HEAD.pack(node, len(records)))
        for index in sorted(records):
            r = records[index]
            parts.append(_ITEM.pack(index, r.status, r.attempt, r.started, r.ended,
                                    (r.output is not None) | (r.error is not None) << 1))
            if r.output is not None:
                parts.append(_ITEM_SIZE.pack(len(r.output)) + r.output)
            if r.error is not None:
                for text in (r.error.type, r.error.message, r.error.traceback):
                    raw = text.encode("utf-8", "surrogatepass")
                    parts.append(_ITEM_SIZE.pack(len(raw)) + raw)
    return b"".join(parts)


def decode_items(data: bytes | memoryview) -> dict[int, dict[int, ItemRecord]]:
    """The items :func:`encode_items` wrote; :class:`CorruptStateError` on damaged bytes."""
    raw = bytes(data)
    pos = 0

    def take(size: int) -> bytes:
        nonlocal pos
        if size > len(raw) - pos:
            _fail("the items of the map nodes are truncated")
        chunk = raw[pos:pos + size]
        pos += size
        return chunk

    def blob() -> bytes:
        return take(_ITEM_SIZE.unpack(take(4))[0])

    items: dict[int, dict[int, ItemRecord]] = {}
    while pos < len(raw):
        node, count = _ITEMS_HEAD.unpack(take(_ITEMS_HEAD.size))
        records = items.setdefault(node, {})
        for _ in range(count):
            index, status, attempt, started, ended, flags = _ITEM.unpack(take(_ITEM.size))
            if flags & ~3:
                _fail(f"an item record has unknown flags {flags:#x}")
            output = blob() if flags & 1 else None
            error = None
            if flags & 2:
                try:
                    error = ErrorRecord(*(blob().decode("utf-8", "surrogatepass") for _ in range(3)))
                except UnicodeDecodeError:
                    _fail("an item's error record is not UTF-8")
            records[index] = ItemRecord(status, attempt, started, ended, output, error)
    return items


# -- the state -------------------------------------------------------------------------------------


def _fail(message: str) -> None:
    raise CorruptStateError(message)


def _check_str(name: str, value: Any, *, empty: bool = False) -> None:
    if type(value) is not str or (not empty and not value):
        _fail(f"{name} must be a{'' if empty else ' non-empty'} str, got {value!r:.80}")


def _check_array(name: str, arr: Any, dtype: type, length: int) -> None:
    if not isinstance(arr, np.ndarray):
        _fail(f"{name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype != np.dtype(dtype) or arr.ndim != 1:
        _fail(f"{name} must be a 1-d {np.dtype(dtype)} array, got {arr.ndim}-d {arr.dtype}")
    if arr.shape[0] != length:
        _fail(f"{name} has {arr.shape[0]} entries, expected {length}")


def _check_time(name: str, value: Any) -> None:
    if type(value) not in (float, int) or not math.isfinite(value):
        _fail(f"{name} must be finite epoch seconds, got {value!r:.80}")


def _id_array(name: str, ids: Any, n: int) -> np.ndarray:
    """The keys of an id-keyed dict as a sorted int64 array, checked to be node ids."""
    if type(ids) is not dict:
        _fail(f"{name} must be a dict keyed by node id, got {type(ids).__name__}")
    if not all(type(k) is int for k in ids):
        _fail(f"{name} keys must be int node ids")
    try:
        arr = np.fromiter(ids, dtype=np.int64, count=len(ids))
    except OverflowError:
        arr = np.array([-1])
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= n):
        _fail(f"{name} has node ids outside 0..{n - 1}")
    arr.sort()
    return arr


def _names_of(state: RunState, ids: Any) -> str:
    shown = [state.node_names[i] for i in list(ids)[:5]]
    return ", ".join(map(repr, shown)) + (" ..." if len(ids) > 5 else "")


@dataclass(eq=False, kw_only=True)
class RunState:
    """The state of one run of a workflow, as saved by stores and read to resume.

    Per-node arrays are indexed by node id.  Arrays decoded by a codec may be read-only
    views of the decoded buffer: copy them before changing them.  Instances compare
    equal when every field is equal, arrays bit for bit (NaN payloads included).
    """

    workflow: str
    fingerprint: str
    run_id: str
    run_status: str
    node_names: list[str]
    succ_indptr: np.ndarray
    succ_indices: np.ndarray
    statuses: np.ndarray
    attempts: np.ndarray
    started: np.ndarray
    ended: np.ndarray
    started_at: float
    updated_at: float
    outputs: dict[int, bytes] = field(default_factory=dict)
    errors: dict[int, ErrorRecord] = field(default_factory=dict)
    #: The items of map nodes that expanded: ``{map node id: {item index: ItemRecord}}``.
    items: dict[int, dict[int, ItemRecord]] = field(default_factory=dict)
    data: bytes = b"{}"
    serializer: str = JsonSerializer.name
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        for name in ("started_at", "updated_at"):
            if type(getattr(self, name)) is int:
                setattr(self, name, float(getattr(self, name)))
        self.validate()

    @classmethod
    def _decoded(cls, fields: dict[str, Any], output_ids: np.ndarray,
                 names_utf8: bytes | memoryview | None = None) -> RunState:
        """Internal, for codecs: a state whose fields were made by a decoder.

        The decoder guarantees the Python types of the items (names are ``str``,
        outputs ``bytes`` keyed by the ``int`` ids in ``output_ids``, ascending) and, if
        given, that ``names_utf8`` is the names' NUL-joined UTF-8 (no name holding a
        NUL); every value is still checked, in bulk.
        """
        if fields.keys() != cls.__dataclass_fields__.keys():
            raise TypeError(f"RunState._decoded needs exactly the fields {sorted(cls.__dataclass_fields__)}")
        state = cls.__new__(cls)
        state.__dict__.update(fields)
        state._check(output_ids, names_utf8)
        return state

    @classmethod
    def _unchecked(cls, **fields: Any) -> RunState:
        """Internal: a state made from a workflow and an already validated state, not
        checked here (its saver calls :meth:`validate` off the hot path)."""
        defaults = {name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc,operator]
                    for name, f in cls.__dataclass_fields__.items()
                    if name not in fields}
        state = cls.__new__(cls)
        state.__dict__.update(defaults, **fields)
        return state

    # -- validation --------------------------------------------------------------------

    def validate(self) -> None:
        """Check every field and their consistency; :class:`CorruptStateError` if wrong.

        Run when the state is made; run it again after changing a state in place.
        """
        if type(self.node_names) is not list:
            _fail(f"node_names must be a list, got {type(self.node_names).__name__}")
        if not all(type(s) is str for s in self.node_names):
            _fail("node names must be str")
        output_ids = _id_array("outputs", self.outputs, len(self.node_names))
        if not all(type(v) is bytes or v is NOT_SAVED for v in self.outputs.values()):
            _fail("outputs must be bytes (or NOT_SAVED)")
        self._check(output_ids)

    def _check(self, output_ids: np.ndarray, names_utf8: bytes | memoryview | None = None) -> None:
        self._validate_header()
        n = len(self.node_names)
        if not all(self.node_names) or len(set(self.node_names)) != n:
            _fail("node names must be non-empty and unique")
        self._validate_graph(n, names_utf8)
        self._validate_nodes(n)
        self._validate_progress()
        self._validate_outputs(output_ids)
        _id_array("errors", self.errors, n)
        if not all(type(v) is ErrorRecord for v in self.errors.values()):
            _fail("errors must be ErrorRecord values")
        _check_items(self.items, n)
        if type(self.data) is not bytes:
            _fail(f"data must be bytes, got {type(self.data).__name__}")
        if self.serializer == JsonSerializer.name:
            self._loaded_data(JsonSerializer())

    def _validate_header(self) -> None:
        version = self.format_version
        if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
            _fail(f"unsupported state format version {version!r} (this library reads 1..{FORMAT_VERSION})")
        for name in ("workflow", "run_id", "serializer"):
            _check_str(name, getattr(self, name))
        if type(self.run_status) is not str or self.run_status not in RUN_STATUSES:
            _fail(f"run_status must be one of {RUN_STATUSES}, got {self.run_status!r:.80}")
        fp = self.fingerprint
        if type(fp) is not str or len(fp) != 64 or not _HEX.issuperset(fp):
            _fail(f"fingerprint must be 64 lowercase hex digits, got {fp!r:.80}")
        _check_time("started_at", self.started_at)
        _check_time("updated_at", self.updated_at)

    def _validate_graph(self, n: int, names_utf8: bytes | memoryview | None) -> None:
        indptr, indices = self.succ_indptr, self.succ_indices
        _check_array("succ_indptr", indptr, np.int64, n + 1)
        if not isinstance(indices, np.ndarray) or indices.ndim != 1:
            _fail("succ_indices must be a 1-d numpy array")
        _check_array("succ_indices", indices, np.int32, indices.shape[0])
        if indptr[0] != 0 or indptr[-1] != indices.size or bool(np.any(indptr[1:] < indptr[:-1])):
            _fail("succ_indptr is not a valid CSR offset array for succ_indices")
        if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= n):
            _fail(f"succ_indices has node ids outside 0..{n - 1}")
        canon_indptr, canon_indices = _canonical_csr(indptr, indices, n)
        if canon_indices.size != indices.size:
            _fail(f"the graph has {indices.size - canon_indices.size} duplicate edge(s)")
        if fingerprint_arrays(self.node_names, canon_indptr, canon_indices, names_utf8=names_utf8) != self.fingerprint:
            _fail("the fingerprint does not match the node names and edges")
        if indices.size:
            sources = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
            try:
                CSRGraph.from_edges(n, sources, indices)
            except FlowError as exc:  # CycleError
                _fail(f"the graph is not a DAG: {str(exc)[:300]}")

    def _validate_nodes(self, n: int) -> None:
        _check_array("statuses", self.statuses, np.uint8, n)
        _check_array("attempts", self.attempts, np.int32, n)
        _check_array("started", self.started, np.float64, n)
        _check_array("ended", self.ended, np.float64, n)
        if n and int(self.statuses.max()) >= _NUM_STATUSES:
            _fail(f"statuses has codes outside 0..{_NUM_STATUSES - 1}")
        if n and (int(self.attempts.min()) < 0 or int(self.attempts.max()) >= MAX_ATTEMPTS):
            _fail(f"attempts has counts outside 0..{MAX_ATTEMPTS - 1}")

    def _validate_progress(self) -> None:
        """No completed node has a dependency that cannot have ended before it started (a
        run never starts a node before its dependencies ended; a state saying otherwise
        never existed).

        A dependency may have completed, failed, timed out, been cancelled or skipped
        (the join rules run ``all_done`` and ``none_failed`` nodes after those).  A skip is
        not recorded until the final snapshot, so a skipped dependency may still show
        as *pending*, but only when it could have been skipped: when a path reaches it
        from a node that ended (a branch that did not take it, a failure) through
        pending nodes alone.  So a pending root, or a pending node below only pending
        or running ones, never precedes a completed node, and neither does a running one.
        """
        indptr, indices = self.succ_indptr, self.succ_indices
        if not indices.size:
            return
        statuses = self.statuses
        n = statuses.size
        done = statuses == NodeStatus.COMPLETED
        sources = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
        targets = indices.astype(np.int64)
        into_done = done[targets]
        if not into_done.any():
            return
        pending = statuses == NodeStatus.PENDING
        ended = ~pending & (statuses != NodeStatus.RUNNING)
        bad = into_done & ~ended[sources]  # completed nodes whose dependency has not ended
        if not bad.any():
            return
        # A pending dependency may be a skip not yet recorded: reachable from an ended
        # node through pending nodes only (edges into pending nodes, from ended or pending ones).
        keep = pending[targets] & (ended[sources] | pending[sources])
        if keep.any():
            skippable = CSRGraph.from_edges(n, sources[keep].astype(np.int32), targets[keep].astype(np.int32))
            starts = np.zeros(n, dtype=bool)
            starts[sources[keep]] = True
            seeds = np.flatnonzero(ended & starts).astype(np.int32)
            reach = np.zeros(n, dtype=bool)
            if seeds.size:
                reach[skippable.descendants(seeds)] = True
            bad &= ~(pending[sources] & reach[sources])
        if bad.any():
            _fail("completed node(s) with a dependency that had not ended: "
                  f"{_names_of(self, _sorted_unique(targets[bad]))}")

    def _validate_outputs(self, ids: np.ndarray) -> None:
        if type(self.outputs) is not dict or len(self.outputs) != ids.size:
            _fail("outputs must be a dict keyed by node id")
        done = np.flatnonzero(self.statuses == NodeStatus.COMPLETED)
        if ids.shape != done.shape or not np.array_equal(ids, done):
            missing = _difference(done, ids)
            extra = _difference(ids, done)
            what = (f"completed node(s) without an output: {_names_of(self, missing)}" if missing.size
                    else f"output(s) of node(s) that did not complete: {_names_of(self, extra)}")
            _fail(f"outputs must be those of the completed nodes; {what}")

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def initial(cls, workflow: Workflow, run_id: str, *, serializer: Serializer | None = None,
                data: Mapping[str, Any] | None = None, started_at: float | None = None,
                check: bool = True) -> RunState:
        """The state of a run that has not started: every node pending, status ``running``.

        ``check=False`` skips :meth:`validate` (its caller validates later, off the
        critical path: a durable run's writer does before saving).
        """
        serializer = serializer or JsonSerializer()
        n = len(workflow)
        now = time.time()
        indptr, indices = canonical_graph(workflow)
        make = cls if check else cls._unchecked
        return make(workflow=workflow.name, fingerprint=fingerprint(workflow), run_id=run_id,
                    run_status="running", node_names=workflow.names,
                    succ_indptr=indptr, succ_indices=indices,
                    statuses=np.zeros(n, np.uint8), attempts=np.zeros(n, np.int32),
                    started=np.full(n, np.nan), ended=np.full(n, np.nan),
                    started_at=now if started_at is None else started_at, updated_at=now,
                    data=dump_data(data, serializer), serializer=serializer.name)

    @classmethod
    def from_result(cls, result: RunResult, serializer: Serializer | None = None,
                    data: Mapping[str, Any] | None = None, *, started_at: float | None = None) -> RunState:
        """The state of a finished run: statuses, attempts, timings, errors, and the
        outputs of completed nodes serialized with ``serializer`` (JSON by default).

        ``data`` is the run's workflow data (a :class:`~flow_orchestrator.data.WorkflowData`
        or a mapping; none: empty).  ``started_at`` defaults to now minus the run's wall
        time.  A value the serializer refuses raises its
        :class:`~flow_orchestrator.serialization.SerializationError`, naming the node.
        """
        serializer = serializer or JsonSerializer()
        workflow = result.workflow
        indptr, indices = canonical_graph(workflow)
        now = time.time()
        return cls(workflow=workflow.name, fingerprint=fingerprint(workflow), run_id=result.run_id,
                   run_status=str(result.status), node_names=workflow.names,
                   succ_indptr=indptr, succ_indices=indices,
                   statuses=result.statuses, attempts=result.attempts,
                   started=result.started, ended=result.ended,
                   started_at=now - result.wall_seconds if started_at is None else started_at,
                   updated_at=now, outputs=_dump_outputs(result, serializer),
                   errors=_error_records(result), items=item_records(result, serializer),
                   data=dump_data(data, serializer), serializer=serializer.name)

    # -- reading -------------------------------------------------------------------------------

    def _picture(self) -> Picture:
        """What a drawing of this stored run shows (see :mod:`flow_orchestrator._draw`)."""
        return Picture(self._labels, self.num_nodes, self.succ_indptr, self.succ_indices,
                       self.statuses, f"{self.workflow} run {self.run_id} ({self.run_status})",
                       f"run {self.run_id} of workflow {self.workflow!r}")

    def _labels(self) -> list[str]:
        """Node names for pictures: a map node's followed by its items' counts by status."""
        names = list(self.node_names)
        for node, records in self.items.items():
            names[node] = f"{names[node]} [{count_text(r.status for r in records.values())}]"
        return names

    @property
    def num_nodes(self) -> int:
        """How many nodes the workflow has."""
        return len(self.node_names)

    def node_id(self, name: str) -> int:
        """The id of the node called ``name`` in this state;
        :class:`~flow_orchestrator.errors.UnknownNodeError` (a ``LookupError``) if none."""
        try:
            return self.node_names.index(name)
        except ValueError:
            raise UnknownNodeError(f"run {self.run_id} has no node {name!r}") from None

    def output(self, node: str | int, serializer: Serializer | None = None) -> Any:
        """The deserialized output of a completed node (by name or id): ``KeyError`` if it
        has none, :class:`~flow_orchestrator.errors.UnknownNodeError` for an unknown name."""
        node_id = self.node_id(node) if isinstance(node, str) else node
        blob = self.outputs[node_id]
        if blob is NOT_SAVED:
            raise KeyError(f"the output of node {self.node_names[node_id]!r} was not saved (persist=False)")
        return self._serializer(serializer).loads(blob)

    def load_outputs(self, serializer: Serializer | None = None) -> dict[int, Any]:
        """Every stored output, deserialized: ``{node id: value}`` (in bulk when the
        serializer has ``loads_many``); outputs not saved (``persist=False``) are left out."""
        serializer = self._serializer(serializer)
        ids = [node for node, blob in self.outputs.items() if blob is not NOT_SAVED]
        blobs = [self.outputs[i] for i in ids]
        many = getattr(serializer, "loads_many", None)
        values = many(blobs) if many is not None else [serializer.loads(b) for b in blobs]
        return dict(zip(ids, values))

    def load_data(self, serializer: Serializer | None = None) -> dict[str, Any]:
        """The deserialized workflow data; :class:`CorruptStateError` unless it is a dict."""
        return self._loaded_data(self._serializer(serializer))

    def _loaded_data(self, serializer: Serializer) -> dict[str, Any]:
        try:
            data = serializer.loads(self.data)
        except SerializationError as exc:
            raise CorruptStateError(f"the workflow data cannot be read: {exc}") from None
        if type(data) is not dict:
            _fail(f"the workflow data must be a mapping, got {type(data).__name__}")
        return data

    def _serializer(self, serializer: Serializer | None) -> Serializer:
        serializer = serializer or JsonSerializer()
        if serializer.name != self.serializer:
            raise SerializationError(f"this state was saved with the {self.serializer!r} serializer, "
                                     f"not {serializer.name!r}", "")
        return serializer

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunState):
            return NotImplemented
        return all(_same(getattr(self, f), getattr(other, f)) for f in self.__dataclass_fields__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"<RunState {self.workflow!r} run {self.run_id} {self.run_status}: "
                f"{self.num_nodes} nodes, {len(self.outputs)} outputs, {len(self.errors)} errors>")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and a.tobytes() == b.tobytes())
    return type(a) is type(b) and a == b


def unsaved_nodes(workflow: Workflow) -> frozenset[int]:
    """The ids of the nodes whose outputs are not kept (``NodeOptions(persist=False)``),
    found per distinct option row."""
    rows = [i for i, options in enumerate(workflow.option_table) if not options.persist]
    if not rows:
        return frozenset()
    return frozenset(np.flatnonzero(np.isin(workflow.option_index, rows)).tolist())


def _dump_outputs(result: RunResult, serializer: Serializer) -> dict[int, bytes]:
    """The serialized outputs of the completed nodes, by id (``result.outputs`` in one go:
    ``RunResult.output()`` costs microseconds a call); :data:`NOT_SAVED` for nodes with
    ``persist=False``."""
    names = result.workflow.names
    values = result.outputs
    unsaved = unsaved_nodes(result.workflow)
    outputs = {}
    for node in np.flatnonzero(result.statuses == NodeStatus.COMPLETED).tolist():
        if node in unsaved:
            outputs[node] = NOT_SAVED
            continue
        try:
            outputs[node] = serializer.dumps(values[names[node]])
        except SerializationError as exc:
            raise SerializationError(f"output of node {names[node]!r}: {exc}", "") from exc
    return outputs


def dump_data(data: Mapping[str, Any] | None, serializer: Serializer) -> bytes:
    """The workflow data (a :class:`~flow_orchestrator.data.WorkflowData`, a mapping or
    ``None``) serialized; :class:`SerializationError` if it cannot be copied or saved."""
    try:
        snapshot = getattr(data, "snapshot", None)
        items = {} if data is None else snapshot() if callable(snapshot) else dict(data)
        return serializer.dumps(items)
    except SerializationError as exc:
        raise SerializationError(f"workflow data: {exc}", "") from exc
    except Exception as exc:  # the copy (deepcopy) or a serializer of the user's refused a value
        raise SerializationError(f"workflow data: {type(exc).__name__}: {exc}", "") from exc


def _error_records(result: RunResult) -> dict[int, ErrorRecord]:
    return {node: ErrorRecord.from_exception(exc) for node, exc in sorted(result.errors_by_id.items())}
