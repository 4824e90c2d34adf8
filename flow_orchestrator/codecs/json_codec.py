"""The JSON codec: a :class:`~flow_orchestrator.state.RunState` as a framed JSON document.

File layout: one ASCII header line, then the JSON payload (UTF-8)::

    #FORS-JSON v0001 len=00000000000004d2 crc32=1a2b3c4d
    {"format_version": 1, "workflow": "etl", ..., "statuses": [2, 2, ...], ...}

The header holds the format version, the payload's length in bytes and a CRC32
(zlib.crc32) of the header up to ``crc32=`` followed by the payload, so ``tail -n +2
file | jq`` reads the state.  In the payload, per-node arrays are JSON lists indexed by
node id (``started``/``ended``: NaN as ``null``, infinities as the strings
``"Infinity"``/``"-Infinity"``; NaN payload bits are not kept), outputs are
``{"ids": [...], "sizes": [...], "base64": "..."}`` (the concatenated output bytes),
errors a list of ``{"id", "type", "message", "traceback"}`` objects and the workflow
data ``"data_base64"``.

The standard library's :mod:`json` does the work; orjson, when installed and
``fast`` is true, is used where it gives the same result (numpy arrays without
infinities, strings without lone surrogates; any refusal falls back to the stdlib).

:func:`read_header` reads what a listing needs from the header line and the head of the
payload, whose first keys are always ``format_version``, ``workflow``, ``fingerprint``,
``run_id``, ``run_status``, ``serializer``, ``started_at`` and ``updated_at``, in that
order (both encoders keep it), without parsing the rest; the CRC32, which needs every
byte, only for a state of at most 64 KiB.

Corruption guarantees: :func:`decode` checks the header, length and CRC32 before
parsing, then every field's JSON type, every list's element types and ranges, and the
base64 blobs, and finally :meth:`RunState._decoded` checks the values.  Whatever the
input, it returns a valid state or raises
:class:`~flow_orchestrator.state.CorruptStateError`; memory use stays proportional to
the input's size.

Where it sits: layer L4 (services, durability): imported on first use by
:mod:`flow_orchestrator.codecs`; knows run states, nothing above.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import itertools
import json
import math
import re
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..state import (
    FORMAT_VERSION,
    NOT_SAVED,
    CorruptStateError,
    ErrorRecord,
    RunState,
    check_blob,
    not_saved_positions,
)
from ._header import StateHeader, read_head

try:  # optional fast path
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]

__all__ = ["HEADER_SIZE", "MAGIC", "decode", "encode", "read_header"]

MAGIC = b"#FORS-JSON "
"""The first bytes of an encoded state."""

_HEADER = re.compile(rb"#FORS-JSON v(\d{4}) len=([0-9a-f]{16}) crc32=([0-9a-f]{8})\n")
HEADER_SIZE = len(b"#FORS-JSON v0001 len=0000000000000000 crc32=00000000\n")
"""Bytes of the header line, newline included."""

_STR_FIELDS = ("workflow", "fingerprint", "run_id", "run_status", "serializer")
_NUMERIC_FIELDS = {  # name: (dtype, smallest, largest)
    "succ_indptr": (np.int64, 0, 2**63 - 1),
    "succ_indices": (np.int32, 0, 2**31 - 1),
    "statuses": (np.uint8, 0, 255),
    "attempts": (np.int32, 0, 2**31 - 1),
}
_INLINE, _BLOB, _UNSAVED = 0, 1, 2
_SHA256 = re.compile(r"[0-9a-f]{64}")
_INFINITIES = {"Infinity": math.inf, "-Infinity": -math.inf}


# -- encoding ------------------------------------------------------------------------------------


def _float_list(arr: np.ndarray) -> list[Any]:
    out = arr.tolist()
    for i in np.flatnonzero(~np.isfinite(arr)).tolist():
        value = out[i]
        out[i] = None if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    return out


def _outputs_doc(outputs: dict[int, bytes], refs: Mapping[int, bytes] | None) -> dict[str, Any]:
    """Format 2 adds, when any output is not inline, ``kinds`` (0 inline, 1 a blob of the
    store, 2 not saved) and ``blobs`` (``[size, sha256 hex]`` per blob, in order)."""
    ids = sorted(outputs)
    values = [outputs[i] for i in ids]
    doc: dict[str, Any] = {"ids": ids}
    if refs or not_saved_positions(values):
        refs = refs or {}
        kinds = [_UNSAVED if v is NOT_SAVED else _BLOB if i in refs else _INLINE for i, v in zip(ids, values)]
        doc["kinds"] = kinds
        doc["blobs"] = [[len(v), refs[i].hex()] for i, v, k in zip(ids, values, kinds) if k == _BLOB]
        values = [v if k == _INLINE else b"" for v, k in zip(values, kinds)]
    doc.update(sizes=[len(v) for v in values], base64=base64.b64encode(b"".join(values)).decode("ascii"))
    return doc


def _document(state: RunState, numpy_ok: bool, refs: Mapping[int, bytes] | None = None) -> dict[str, Any]:
    """The JSON document of ``state``; numpy arrays stay arrays when ``numpy_ok``."""
    outputs = _outputs_doc(state.outputs, refs)
    version = max(state.format_version, 2) if "kinds" in outputs else state.format_version
    doc: dict[str, Any] = {"format_version": version}
    doc.update((name, getattr(state, name)) for name in _STR_FIELDS)
    doc.update(started_at=state.started_at, updated_at=state.updated_at, node_names=state.node_names)
    for name in ("succ_indptr", "succ_indices", "statuses", "attempts"):
        doc[name] = getattr(state, name) if numpy_ok else getattr(state, name).tolist()
    for name in ("started", "ended"):
        doc[name] = getattr(state, name) if numpy_ok else _float_list(getattr(state, name))
    doc["outputs"] = outputs
    doc["errors"] = [{"id": i, "type": r.type, "message": r.message, "traceback": r.traceback}
                     for i, r in sorted(state.errors.items())]
    doc["data_base64"] = base64.b64encode(state.data).decode("ascii")
    return doc


def _dumps(state: RunState, fast: bool, refs: Mapping[int, bytes] | None) -> tuple[bytes, int]:
    if fast and _orjson is not None and not (np.isinf(state.started).any() or np.isinf(state.ended).any()):
        doc = _document(state, True, refs)
        try:  # orjson writes NaN as null, like _float_list; infinities are excluded above
            return _orjson.dumps(doc, option=_orjson.OPT_SERIALIZE_NUMPY), doc["format_version"]
        except (TypeError, _orjson.JSONEncodeError):
            pass  # lone surrogates in a string: the stdlib handles them
    doc = _document(state, False, refs)
    return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode("ascii"), doc["format_version"]


def _frame(payload: bytes, version: int) -> bytes:
    """The header line (magic, version, length, CRC32) followed by ``payload``."""
    prefix = b"%sv%04d len=%016x " % (MAGIC, version, len(payload))
    return prefix + b"crc32=%08x\n" % zlib.crc32(payload, zlib.crc32(prefix)) + payload


def encode(state: RunState, *, fast: bool = True, refs: Mapping[int, bytes] | None = None) -> bytes:
    """The framed JSON encoding of ``state`` (see the module docstring).

    ``fast=False`` forces the standard library's :mod:`json` even when orjson is installed.
    ``refs`` maps node ids to the sha256 of outputs that the store keeps as blobs of
    their own: those are written as references (length and digest), not copied.
    """
    payload, version = _dumps(state, fast, refs)
    return _frame(payload, version)


# -- decoding --------------------------------------------------------------------------------------


def _corrupt(message: str) -> CorruptStateError:
    return CorruptStateError(f"corrupt JSON run state: {message}")


def _check_frame(data: bytes) -> int:
    match = _HEADER.fullmatch(data[:HEADER_SIZE])
    if match is None:
        raise _corrupt("bad or truncated header line (not a JSON run state?)")
    version, size, crc = int(match[1]), int(match[2], 16), int(match[3], 16)
    if size != len(data) - HEADER_SIZE:
        raise _corrupt(f"the header says {size} payload bytes, found {len(data) - HEADER_SIZE} (truncated?)")
    view = memoryview(data)
    if zlib.crc32(view[HEADER_SIZE:], zlib.crc32(view[: HEADER_SIZE - 15])) != crc:
        raise _corrupt("checksum mismatch (the file is damaged)")
    if not 1 <= version <= FORMAT_VERSION:
        raise _corrupt(f"format version {version}; this library reads 1..{FORMAT_VERSION}")
    return version


_HEAD_KEYS: tuple[tuple[str, type | tuple[type, ...]], ...] = (("format_version", int), ("workflow", str), ("fingerprint", str), ("run_id", str),
              ("run_status", str), ("serializer", str), ("started_at", (int, float)), ("updated_at", (int, float)))
_DECODER = json.JSONDecoder()


def read_header(read: Callable[[int], bytes], size: int) -> StateHeader:
    """The :class:`~flow_orchestrator.codecs.StateHeader` (``num_nodes`` ``None``) of an
    encoded state of ``size`` bytes whose first ``n`` bytes ``read(n)`` gives, from its
    header line and the first keys of its payload: two reads, of the header line and of at
    most 64 KiB (a state that fits in it has its CRC32 checked too).
    :class:`CorruptStateError` if they are damaged; damage further into a larger state is
    left to :func:`decode`, which checks the CRC32."""
    match = _HEADER.fullmatch(read(HEADER_SIZE))
    if match is None:
        raise _corrupt("bad or truncated header line (not a JSON run state?)")
    version, length = int(match[1]), int(match[2], 16)
    if length != size - HEADER_SIZE:
        raise _corrupt(f"the header says {length} payload bytes, found {size - HEADER_SIZE} (truncated?)")
    if not 1 <= version <= FORMAT_VERSION:
        raise _corrupt(f"format version {version}; this library reads 1..{FORMAT_VERSION}")
    values = read_head(read, size, _check_frame, lambda head: _head_values(head[HEADER_SIZE:]))
    if values["format_version"] != version:
        raise _corrupt("the format version in the payload differs from the header's")
    return StateHeader(version, values["workflow"], values["run_id"], values["run_status"],
                       float(values["started_at"]), float(values["updated_at"]), None)


def _head_values(raw: bytes) -> dict[str, Any]:
    """The first keys' values of a payload from its first bytes ``raw`` (a UTF-8 character
    cut at the end is left out)."""
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(raw)
    except UnicodeDecodeError:
        raise _corrupt("the payload is not UTF-8") from None
    values: dict[str, Any] = {}
    pos = 0
    for i, (key, kind) in enumerate(_HEAD_KEYS):
        lead = ("{" if i == 0 else ",") + f'"{key}":'
        if not text.startswith(lead, pos):
            raise _corrupt(f"the payload does not start with its header keys (at {key!r})")
        try:
            value, pos = _DECODER.raw_decode(text, pos + len(lead))
        except (ValueError, RecursionError):
            raise _corrupt(f"field {key!r} is not valid JSON") from None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _corrupt(f"field {key!r} is not a {getattr(kind, '__name__', 'number')}")
        values[key] = value
    return values


def _reject_constant(name: str) -> Any:
    raise _corrupt(f"{name} is not valid JSON")


def _loads(payload: bytes, fast: bool) -> Any:
    # orjson reads integers beyond 64 bits as floats, the stdlib as ints: either way the
    # type and range checks below refuse them where an int is expected, and elsewhere
    # (started, ended) both give the correctly rounded float, so the result is the same.
    if fast and _orjson is not None:
        try:
            return _orjson.loads(payload)
        except _orjson.JSONDecodeError:
            pass  # the stdlib decides, and reports, below
    try:
        return json.loads(payload, parse_constant=_reject_constant)
    except RecursionError:
        raise _corrupt("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        if isinstance(exc, CorruptStateError):
            raise
        raise _corrupt(f"invalid JSON: {exc}") from None


def _get(doc: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _corrupt(f"field {name!r} is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def _int_array(values: Any, name: str, dtype: type, low: int, high: int) -> np.ndarray:
    if type(values) is not list or not set(map(type, values)) <= {int}:
        raise _corrupt(f"{name} must be a list of integers")
    try:
        arr = np.array(values, dtype=np.int64)
    except OverflowError:
        raise _corrupt(f"{name} has integers out of range") from None
    if arr.size and (int(arr.min()) < low or int(arr.max()) > high):
        raise _corrupt(f"{name} has values outside {low}..{high}")
    return arr.astype(dtype)


def _float_array(values: Any, name: str) -> np.ndarray:
    if type(values) is not list:
        raise _corrupt(f"{name} must be a list")
    kinds = set(map(type, values))
    if not kinds <= {float, int, type(None), str}:
        raise _corrupt(f"{name} must hold numbers, null or infinities")
    if str in kinds or int in kinds:
        values = [_float_item(v, name) for v in values]
    return np.array(values, dtype=np.float64)


def _float_item(value: Any, name: str) -> float | None:
    if type(value) is str:
        if value not in _INFINITIES:
            raise _corrupt(f"{name} holds the string {value[:20]!r}")
        return _INFINITIES[value]
    if type(value) is int and not -2**1023 < value < 2**1023:
        raise _corrupt(f"{name} holds an integer out of float range")
    return value


def _b64(text: Any, name: str) -> bytes:
    if type(text) is not str:
        raise _corrupt(f"{name} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _corrupt(f"{name} is not valid base64") from None


def _placed(node: dict[str, Any], outputs: dict[int, bytes], ids: np.ndarray,
            fetch: Callable[[int, int, bytes], bytes] | None) -> None:
    """Format 2: put the outputs kept apart (fetched, checked) and not saved in place."""
    if "kinds" not in node and "blobs" not in node:
        return
    kinds = _int_array(node.get("kinds"), "outputs.kinds", np.int64, _INLINE, _UNSAVED)
    blobs = node.get("blobs")
    if kinds.size != ids.size or type(blobs) is not list or len(blobs) != int(np.count_nonzero(kinds == _BLOB)):
        raise _corrupt("outputs: kinds and blobs are inconsistent")
    node_ids = ids.tolist()
    if any(outputs[node_ids[k]] for k in np.flatnonzero(kinds != _INLINE).tolist()):
        raise _corrupt("an output kept apart also has inline bytes")
    for k in np.flatnonzero(kinds == _UNSAVED).tolist():
        outputs[node_ids[k]] = NOT_SAVED
    for node_id, ref in zip(ids[kinds == _BLOB].tolist(), blobs):
        if type(ref) is not list or len(ref) != 2 or type(ref[0]) is not int or not 0 <= ref[0] < 2**63 \
                or type(ref[1]) is not str or not _SHA256.fullmatch(ref[1]):
            raise _corrupt("outputs: malformed blob reference")
        if fetch is None:
            raise _corrupt("outputs are kept apart from this snapshot, in its store: load it through the store")
        digest = bytes.fromhex(ref[1])
        outputs[node_id] = check_blob(node_id, fetch(node_id, ref[0], digest), ref[0], digest)


def _outputs(doc: dict[str, Any], n: int, fetch: Callable[[int, int, bytes], bytes] | None = None
             ) -> tuple[dict[int, bytes], np.ndarray]:
    node = _get(doc, "outputs", dict)
    ids = _int_array(node.get("ids"), "outputs.ids", np.int64, 0, max(n - 1, 0))
    sizes = _int_array(node.get("sizes"), "outputs.sizes", np.int64, 0, 2**62)
    blob = _b64(node.get("base64"), "outputs.base64")
    if ids.size != sizes.size or int(sizes.sum()) != len(blob) or bool(np.any(ids[1:] <= ids[:-1])):
        raise _corrupt("outputs: ids, sizes and bytes are inconsistent")
    bounds = np.concatenate(([0], np.cumsum(sizes))).tolist()
    outputs = dict(zip(ids.tolist(), [blob[a:b] for a, b in itertools.pairwise(bounds)]))
    _placed(node, outputs, ids, fetch)
    return outputs, ids


def _errors(doc: dict[str, Any]) -> dict[int, ErrorRecord]:
    errors: dict[int, ErrorRecord] = {}
    for item in _get(doc, "errors", list):
        if type(item) is not dict or set(item) != {"id", "type", "message", "traceback"} \
                or type(item["id"]) is not int or item["id"] in errors:
            raise _corrupt("malformed or repeated error entry")
        errors[item["id"]] = ErrorRecord(item["type"], item["message"], item["traceback"])
    return errors


def _names(doc: dict[str, Any]) -> list[str]:
    names = _get(doc, "node_names", list)
    if not set(map(type, names)) <= {str}:
        raise _corrupt("node_names must be a list of strings")
    return names


def _state(doc: Any, version: int, fetch: Callable[[int, int, bytes], bytes] | None = None) -> RunState:
    if type(doc) is not dict:
        raise _corrupt("the payload is not a JSON object")
    if _get(doc, "format_version", int) != version:
        raise _corrupt("the format version in the payload differs from the header's")
    fields: dict[str, Any] = {name: _get(doc, name, str) for name in _STR_FIELDS}
    fields["format_version"] = version
    for name in ("started_at", "updated_at"):
        fields[name] = float(_get(doc, name, (float, int)))
    fields["node_names"] = names = _names(doc)
    for name, (dtype, low, high) in _NUMERIC_FIELDS.items():
        fields[name] = _int_array(doc.get(name), name, dtype, low, high)
    for name in ("started", "ended"):
        fields[name] = _float_array(doc.get(name), name)
    fields["outputs"], output_ids = _outputs(doc, len(names), fetch)
    fields["errors"] = _errors(doc)
    fields["data"] = _b64(doc.get("data_base64"), "data_base64")
    return RunState._decoded(fields, output_ids)


def decode(data: bytes | bytearray | memoryview, *, fast: bool = True,
           fetch: Callable[[int, int, bytes], bytes] | None = None) -> RunState:
    """The :class:`~flow_orchestrator.state.RunState` encoded in ``data`` by :func:`encode`.

    Raises :class:`~flow_orchestrator.state.CorruptStateError` for anything but a valid,
    undamaged encoding.  ``fast=False`` forces the standard library's :mod:`json`.
    ``fetch(node, size, sha256)`` gives the bytes of an output the store keeps apart
    (checked here: length, then sha256); without it, a state referencing such outputs
    is refused.
    """
    data = data if type(data) is bytes else bytes(data)
    version = _check_frame(data)
    doc = _loads(data[HEADER_SIZE:], fast)
    try:
        return _state(doc, version, fetch)
    except CorruptStateError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise _corrupt(f"{type(exc).__name__}: {exc}") from exc
