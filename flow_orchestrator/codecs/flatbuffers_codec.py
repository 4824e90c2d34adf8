"""The FlatBuffers codec: a :class:`~flow_orchestrator.state.RunState` as a framed buffer.

File layout (all integers little-endian)::

    offset  size  field
    0       8     magic  b"\\x89FORSFB\\n"
    8       4     format version (uint32, flow_orchestrator.state.FORMAT_VERSION)
    12      4     CRC32 (zlib.crc32) of bytes 0..11, 16..23 and the whole payload
    16      8     payload length (uint64)
    24      ...   payload: a FlatBuffer of table RunState (schemas/run_state.fbs),
                  file identifier "FORS"

Encoding and decoding are done in bulk.  Numeric per-node vectors (statuses,
attempts, started, ended, the CSR arrays, output ids and offsets) are written with
``Builder.CreateNumpyVector`` from the state's arrays and read back with the generated
``...AsNumpy()`` accessors (``GetVectorAsNumpy``): zero-copy, read-only views of the
decoded bytes.  Outputs are one byte blob plus end offsets.  String vectors (node
names, error fields) are standard ``[string]`` vectors whose string objects are laid
out with numpy in one block (one ``CreateNumpyVector`` for the strings, one for the
offsets to them) and read back in one UTF-8 decode.

:func:`read_header` reads what a listing needs (workflow, run id, status, timestamps,
number of nodes) from the frame header and the head of the FlatBuffer (its table and
the strings written last, so first), bounds-checked like :func:`decode`; the CRC32, which
needs every byte, only for a state of at most 64 KiB: in a larger one it sees a
truncated or damaged head, not damage in the body.

Corruption guarantees: :func:`decode` checks the magic, version, length and CRC32
before the payload is parsed, so truncation and bit flips are reported as such; then
it verifies the FlatBuffer itself (root and vtable offsets, every field's and vector's
offset, alignment, length and NUL terminator against the buffer size, strings being
valid UTF-8) before the generated code reads anything, and finally
:meth:`RunState._decoded` checks the values (lengths, status codes, CSR arrays,
fingerprint...).  Whatever the input, :func:`decode` returns a valid state or raises
:class:`~flow_orchestrator.state.CorruptStateError`; it never allocates more than a
small multiple of the input's size.

Where it sits: layer L4 (services, durability): imported on first use by
:mod:`flow_orchestrator.codecs`; knows run states, nothing above.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flatbuffers
import numpy as np

from ..state import (
    decode_items,
    encode_items,
    FORMAT_VERSION,
    NOT_SAVED,
    CorruptStateError,
    ErrorRecord,
    RunState,
    check_blob,
    not_saved_positions,
)
from ._fbs import run_state_generated as gen
from ._header import StateHeader, read_head

__all__ = ["HEADER_SIZE", "MAGIC", "check_frame_header", "decode", "encode", "read_header"]

MAGIC = b"\x89FORSFB\n"
"""The first 8 bytes of an encoded state."""

_HEADER = struct.Struct("<8sIIQ")
HEADER_SIZE = _HEADER.size
"""Bytes before the FlatBuffer payload (24, so the payload stays 8-byte aligned)."""

_FILE_ID = b"FORS"
_U8, _I4, _U4, _I8, _F8 = (np.dtype(t) for t in ("u1", "<i4", "<u4", "<i8", "<f8"))
_NEWLINE = 0x0A

# Fields of table RunState in slot order (the schema's declaration order): name, kind
# ("scalar", "str", "strvec" or "vector") and the struct code of a scalar or the numpy
# dtype of a vector's items.
_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("format_version", "scalar", "I"), ("workflow", "str", None), ("fingerprint", "str", None),
    ("run_id", "str", None), ("run_status", "str", None), ("serializer", "str", None),
    ("started_at", "scalar", "d"), ("updated_at", "scalar", "d"), ("node_names", "strvec", None),
    ("succ_indptr", "vector", _I8), ("succ_indices", "vector", _I4), ("statuses", "vector", _U8),
    ("attempts", "vector", _I4), ("started", "vector", _F8), ("ended", "vector", _F8),
    ("output_ids", "vector", _I4), ("output_ends", "vector", _U4), ("output_blob", "vector", _U8),
    ("error_ids", "vector", _I4), ("error_types", "strvec", None), ("error_messages", "strvec", None),
    ("error_tracebacks", "strvec", None), ("data", "vector", _U8),
    # format 2, optional: where outputs live
    ("output_kinds", "optvector", _U8), ("output_blob_sizes", "optvector", np.dtype("<u8")),
    ("output_blob_digests", "optvector", _U8),
    # format 3, optional: the items of map nodes (state.encode_items)
    ("map_items", "optvector", _U8),
)
_INLINE, _BLOB, _UNSAVED = 0, 1, 2
_DIGEST = 32


# -- encoding ------------------------------------------------------------------------------------


def _utf8_lengths(strings: list[str]) -> tuple[bytes, np.ndarray]:
    """``strings`` NUL-joined as UTF-8 (lone surrogates kept), and each one's byte length."""
    blob = "\x00".join(strings).encode("utf-8", "surrogatepass")
    if blob.count(0) == len(strings) - 1:
        ends = np.flatnonzero(np.frombuffer(blob, _U8) == 0)
        lengths = np.diff(ends, prepend=-1, append=len(blob)) - 1
        return blob, lengths[: len(strings)]
    encoded = [s.encode("utf-8", "surrogatepass") for s in strings]  # a string holds a NUL
    return b"\x00".join(encoded), np.fromiter(map(len, encoded), np.int64, len(encoded))


def _layout_mask(lengths: np.ndarray) -> np.ndarray:
    """Which bytes of back-to-front string objects (4-byte length, bytes, NUL, padding to
    4) hold the strings' bytes and NULs (one ``np.repeat``: the fastest way measured)."""
    counts = np.empty((lengths.size, 3), np.int64)
    counts[:, 0] = 4
    counts[:, 1] = lengths + 1
    counts[:, 2] = (-(lengths + 1)) % 4
    pattern = np.zeros((lengths.size, 3), bool)
    pattern[:, 1] = True
    return np.repeat(pattern.ravel(), counts.ravel())


def _string_pool(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """FlatBuffers string objects (length, bytes, NUL, padding) back to back, and the
    offset of each within the pool."""
    blob, lengths = _utf8_lengths(strings)
    sizes = (lengths + 8) & ~3  # 4 (length) + bytes + 1 (NUL), rounded up to 4
    starts = np.zeros(len(strings), np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    pool = np.zeros(int(sizes.sum()), _U8)
    pool[_layout_mask(lengths)] = np.frombuffer(blob + b"\x00", _U8)
    pool.view(_U4)[starts // 4] = lengths
    return pool, starts


def _create_strings(builder: flatbuffers.Builder, strings: list[str]) -> int:
    """A ``[string]`` vector in two bulk writes: the string objects, then the offsets."""
    if not strings:
        return builder.CreateNumpyVector(np.zeros(0, _U4))
    pool, starts = _string_pool(strings)
    pool_end = builder.CreateNumpyVector(pool) - 4  # end-relative offset of the pool's data
    n = len(strings)
    before = builder.Offset()  # 4-aligned after a vector: no padding comes before the offsets
    element = before + 4 * n - 4 * np.arange(n, dtype=np.int64)
    target = pool_end - starts
    vector = builder.CreateNumpyVector((element - target).astype(_U4))
    if vector != before + 4 * n + 4:  # pragma: no cover - would mean the runtime changed
        raise RuntimeError("flatbuffers builder padded a string vector unexpectedly")
    return vector


def _sorted_items(mapping: dict[int, Any]) -> tuple[np.ndarray, list[Any]]:
    """The keys of an id-keyed dict as an ascending array, and the values in that order."""
    ids = np.fromiter(mapping, np.int64, len(mapping))
    if ids.size > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        order = np.argsort(ids, kind="stable")
        values = list(mapping.values())
        return ids[order], [values[i] for i in order.tolist()]
    return ids, list(mapping.values())


def _placements(ids: np.ndarray, values: list[bytes], refs: Mapping[int, bytes] | None
                ) -> tuple[list[bytes], np.ndarray | None, list[int], list[bytes]]:
    """The inline bytes of each output (empty for blobs and outputs not saved), each one's
    kind (``None``: all inline), and the sizes and digests of the blobs in order."""
    if not refs and not not_saved_positions(values):
        return values, None, [], []
    refs = refs or {}
    kinds = np.zeros(len(values), _U8)
    inline, sizes, digests = [], [], []
    for k, (node, value) in enumerate(zip(ids.tolist(), values)):
        if value is NOT_SAVED:
            kinds[k] = _UNSAVED
            inline.append(b"")
        elif node in refs:
            kinds[k] = _BLOB
            inline.append(b"")
            sizes.append(len(value))
            digests.append(refs[node])
        else:
            inline.append(value)
    return inline, kinds, sizes, digests


def _create_outputs(builder: flatbuffers.Builder, ids: np.ndarray, values: list[bytes]) -> tuple[int, int, int]:
    """The outputs as ids, end offsets and one newline-joined blob (see the schema)."""
    blob = b"\n".join(values)
    if blob.count(_NEWLINE) == len(values) - 1:  # no output holds a newline (JSON never does)
        ends = np.append(np.flatnonzero(np.frombuffer(blob, _U8) == _NEWLINE), len(blob))
    else:
        ends = np.cumsum(np.fromiter(map(len, values), np.int64, len(values)) + 1) - 1
    return (builder.CreateNumpyVector(ids.astype(_I4)), builder.CreateNumpyVector(ends.astype(_U4)),
            builder.CreateByteVector(blob))


def _create_errors(builder: flatbuffers.Builder, errors: dict[int, ErrorRecord]) -> tuple[int, ...]:
    """The errors as parallel vectors: ids, types, messages, tracebacks."""
    ids, records = _sorted_items(errors)
    return (builder.CreateNumpyVector(ids.astype(_I4)),
            _create_strings(builder, [r.type for r in records]),
            _create_strings(builder, [r.message for r in records]),
            _create_strings(builder, [r.traceback for r in records]))


# The generated ``RunStateAdd<Field>`` function of each offset field, by field name.
_ADDERS = {name: getattr(gen, "RunStateAdd" + name.title().replace("_", ""))
           for name, kind, _ in _FIELDS if kind != "scalar"}


def _size_hint(state: RunState) -> int:
    """A rough size of the buffer, so that the builder seldom grows (and copies)."""
    return (4096 + 64 * state.num_nodes + 4 * state.succ_indices.size + len(state.data)
            + 24 * len(state.outputs))


def _build(state: RunState, refs: Mapping[int, bytes] | None) -> tuple[flatbuffers.Builder, int]:
    """A finished builder holding ``state`` (objects first, back to front, then the
    table), and the format version written."""
    ids, values = _sorted_items(state.outputs)
    inline, kinds, sizes, digests = _placements(ids, values, refs)
    version = state.format_version if kinds is None else max(state.format_version, 2)
    b = flatbuffers.Builder(_size_hint(state))
    offsets = {"data": b.CreateByteVector(state.data)}
    if state.items:
        version = max(version, 3)
        offsets["map_items"] = b.CreateByteVector(encode_items(state.items))
    if kinds is not None:
        offsets["output_kinds"] = b.CreateNumpyVector(kinds)
        offsets["output_blob_sizes"] = b.CreateNumpyVector(np.array(sizes, "<u8"))
        offsets["output_blob_digests"] = b.CreateByteVector(b"".join(digests))
    offsets["output_ids"], offsets["output_ends"], offsets["output_blob"] = _create_outputs(b, ids, inline)
    (offsets["error_ids"], offsets["error_types"], offsets["error_messages"],
     offsets["error_tracebacks"]) = _create_errors(b, state.errors)
    for name in ("ended", "started", "attempts", "statuses", "succ_indices", "succ_indptr"):
        offsets[name] = b.CreateNumpyVector(getattr(state, name))
    offsets["node_names"] = _create_strings(b, state.node_names)
    for name in ("serializer", "run_status", "run_id", "fingerprint", "workflow"):
        offsets[name] = b.CreateString(getattr(state, name), errors="surrogatepass")
    gen.RunStateStart(b)
    gen.RunStateAddFormatVersion(b, version)
    gen.RunStateAddStartedAt(b, state.started_at)
    gen.RunStateAddUpdatedAt(b, state.updated_at)
    for name, add in _ADDERS.items():
        if name in offsets:
            add(b, offsets[name])
    b.Finish(gen.RunStateEnd(b), file_identifier=_FILE_ID)
    return b, version


def _frame(payload: bytes | memoryview, version: int) -> bytes:
    """The header (magic, version, CRC32, length) followed by ``payload``."""
    head = struct.pack("<8sI", MAGIC, version)
    size = struct.pack("<Q", len(payload))
    crc = zlib.crc32(payload, zlib.crc32(size, zlib.crc32(head)))
    return b"".join((head, struct.pack("<I", crc), size, payload))


def encode(state: RunState, *, refs: Mapping[int, bytes] | None = None) -> bytes:
    """The framed FlatBuffers encoding of ``state`` (see the module docstring).

    ``refs`` maps node ids to the sha256 of outputs that the store keeps as blobs of
    their own: those are written as references (length and digest), not copied.
    """
    builder, version = _build(state, refs)
    return _frame(memoryview(builder.Bytes)[builder.Head():], version)


# -- decoding: the frame ------------------------------------------------------------------------


def _corrupt(message: str) -> CorruptStateError:
    return CorruptStateError(f"corrupt FlatBuffers run state: {message}")


def _check_frame(data: bytes) -> None:
    if len(data) < HEADER_SIZE:
        raise _corrupt(f"{len(data)} bytes, shorter than the {HEADER_SIZE}-byte header (truncated?)")
    magic, version, crc, size = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise _corrupt(f"bad magic {magic!r} (not a FlatBuffers run state)")
    if size != len(data) - HEADER_SIZE:
        raise _corrupt(f"the header says {size} payload bytes, found {len(data) - HEADER_SIZE} (truncated?)")
    view = memoryview(data)
    if zlib.crc32(view[HEADER_SIZE:], zlib.crc32(view[16:24], zlib.crc32(view[:12]))) != crc:
        raise _corrupt("checksum mismatch (the file is damaged)")
    if not 1 <= version <= FORMAT_VERSION:
        raise _corrupt(f"format version {version}; this library reads 1..{FORMAT_VERSION}")


def check_frame_header(head: bytes, size: int) -> int:
    """The format version in ``head``, the first bytes (at least :data:`HEADER_SIZE`) of an
    encoded state of ``size`` bytes; :class:`CorruptStateError` if its magic, version or
    payload length is wrong.  The CRC32 needs the whole payload: it is checked when
    ``head`` is the whole state (the stores pass states of at most
    :data:`~flow_orchestrator.codecs.SMALL_STATE` bytes whole)."""
    if len(head) >= size:
        _check_frame(head)
    if len(head) < HEADER_SIZE or size < HEADER_SIZE:
        raise _corrupt(f"{size} bytes, shorter than the {HEADER_SIZE}-byte header (truncated?)")
    magic, version, _, length = _HEADER.unpack_from(head)
    if magic != MAGIC:
        raise _corrupt(f"bad magic {magic!r} (not a FlatBuffers run state)")
    if length != size - HEADER_SIZE:
        raise _corrupt(f"the header says {length} payload bytes, found {size - HEADER_SIZE} (truncated?)")
    if not 1 <= version <= FORMAT_VERSION:
        raise _corrupt(f"format version {version}; this library reads 1..{FORMAT_VERSION}")
    return int(version)


_HEAD_SLOTS = 9    # format_version .. node_names, the fields read_header reads


def read_header(read: Callable[[int], bytes], size: int) -> StateHeader:
    """The :class:`~flow_orchestrator.codecs.StateHeader` of an encoded state of ``size``
    bytes whose first ``n`` bytes ``read(n)`` gives, without decoding it: two reads, of 24
    bytes and of at most 64 KiB (a state that fits in it has its CRC32 checked too).
    :class:`CorruptStateError` if the frame header or the head of the buffer is damaged;
    damage further into a larger state (found by the CRC32) is left to :func:`decode`."""
    version = check_frame_header(read(HEADER_SIZE), size)
    return read_head(read, size, _check_frame,
                     lambda head: _head_fields(memoryview(head)[HEADER_SIZE:], size - HEADER_SIZE, version))


def _head_fields(buf: memoryview, payload_size: int, version: int) -> StateHeader:
    """The header fields from ``buf``, the first bytes of a payload of ``payload_size``."""
    check = _Verifier(buf)
    fields: dict[str, Any] = {}
    for name, kind, item, at in _located(check, _FIELDS[:_HEAD_SLOTS]):
        if at is None:
            fields[name] = 0 if item == "I" else 0.0  # the schema's defaults
            continue
        if kind == "scalar":
            fields[name] = check.read(item, at, name)
        elif kind == "str":
            fields[name] = check.string(at, name)
        else:  # node_names: only its length, checked against the whole payload
            start = at + check.read("I", at, name)
            count = check.read("I", start, name + " length")
            if start + 4 + 4 * count > payload_size:
                raise _corrupt(f"{name}: {count} items overflow the buffer")
            fields["num_nodes"] = count
    if fields["format_version"] != version:
        raise _corrupt("the format version in the payload differs from the header's")
    return StateHeader(version, fields["workflow"], fields["run_id"], fields["run_status"],
                       float(fields["started_at"]), float(fields["updated_at"]), fields["num_nodes"])


# -- decoding: verifying the FlatBuffer --------------------------------------------------------


class _Verifier:
    """Bounds checks of one table of a FlatBuffer, before any generated code reads it."""

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.size = len(buf)
        self.u8 = np.frombuffer(buf, _U8)
        self.u32 = np.frombuffer(buf[: self.size - self.size % 4], _U4)

    def read(self, fmt: str, pos: int, what: str) -> int:
        """The scalar of struct code ``fmt`` at ``pos``, checked to be in bounds and aligned."""
        width = struct.calcsize(fmt)
        if pos < 0 or pos + width > self.size or pos % width:
            raise _corrupt(f"{what} at {pos} is out of bounds or misaligned")
        return struct.unpack_from("<" + fmt, self.buf, pos)[0]

    def table(self) -> tuple[int, int, int, int]:
        """The root table's position and size, and its vtable's position and size."""
        if self.size < 8 or bytes(self.buf[4:8]) != _FILE_ID:
            raise _corrupt("missing file identifier")
        root = self.read("I", 0, "root offset")
        vtable = root - self.read("i", root, "vtable offset")
        vt_size = self.read("H", vtable, "vtable size")
        table_size = self.read("H", vtable + 2, "table size")
        if vt_size < 4 or vt_size % 2 or vtable + vt_size > self.size or table_size < 4 \
                or root + table_size > self.size:
            raise _corrupt("vtable or table out of bounds")
        return root, table_size, vtable, vt_size

    def vector(self, at: int, width: int, what: str) -> tuple[int, int]:
        """The data position and length of the vector referenced by the offset at ``at``."""
        start = at + self.read("I", at, what)
        count = self.read("I", start, what + " length")
        data = start + 4
        if data + count * width > self.size or data % min(width, 8):
            raise _corrupt(f"{what}: {count} items of {width} bytes at {data} overflow the buffer")
        return data, count

    def string(self, at: int, what: str) -> str:
        """The string referenced by the offset at ``at``, checked and decoded."""
        data, count = self.vector(at, 1, what)
        if data + count >= self.size or self.buf[data + count] != 0:
            raise _corrupt(f"{what}: string not NUL-terminated")
        return _utf8(bytes(self.buf[data: data + count]), what)

    def strings(self, at: int, what: str) -> tuple[list[str], bytes | None]:
        """A ``[string]`` vector, verified and decoded in bulk; and the strings' UTF-8,
        each followed by a NUL, when none holds a NUL."""
        data, count = self.vector(at, 4, what)
        element = data + 4 * np.arange(count, dtype=np.int64)
        target = element + self.u32[data // 4: data // 4 + count]
        if count and (bool(np.any(target % 4)) or int(target.max()) + 4 > self.size):
            raise _corrupt(f"{what}: string offsets out of bounds or misaligned")
        lengths = self.u32[target // 4].astype(np.int64)
        ends = target + 4 + lengths
        if count and (int(ends.max()) >= self.size or int(lengths.sum()) > self.size
                      or bool(np.any(self.u8[ends]))):
            raise _corrupt(f"{what}: strings overflow the buffer or are not NUL-terminated")
        return self._decode_strings(target + 4, lengths, what)

    def _decode_strings(self, starts: np.ndarray, lengths: np.ndarray, what: str) -> tuple[list[str], bytes | None]:
        """The strings at ``starts`` (bounds already checked): one decode and one split."""
        if not starts.size:
            return [], None
        packed = self._packed_bytes(starts, lengths)
        parts = _utf8(packed, what).split("\x00")
        if len(parts) == starts.size + 1:
            return parts[:-1], packed
        # a string holds a NUL: one at a time
        return [_utf8(bytes(self.buf[s: s + n]), what) for s, n in zip(starts.tolist(), lengths.tolist())], None

    def _packed_bytes(self, starts: np.ndarray, lengths: np.ndarray) -> bytes:
        """The strings' bytes, each followed by its NUL, in one block."""
        sizes = (lengths + 8) & ~3
        first, end = int(starts[0]) - 4, int(starts[-1]) - 4 + int(sizes[-1])
        if end <= self.size and bool(np.all(starts[1:] - starts[:-1] == sizes[:-1])):
            return self.u8[first:end][_layout_mask(lengths)].tobytes()  # laid out as encode() does
        firsts = np.zeros(starts.size, np.int64)
        np.cumsum(lengths[:-1] + 1, out=firsts[1:])
        index = np.arange(int(lengths.sum()) + starts.size, dtype=np.int64)
        return self.u8[index + np.repeat(starts - firsts, lengths + 1)].tobytes()


def _located(check: _Verifier, spec: tuple[tuple[str, str, Any], ...]) -> Iterator[tuple[str, str, Any, int | None]]:
    """Each field of ``spec`` (``_FIELDS`` or a prefix of it) with where its value lies in
    the root table, bounds-checked; ``None`` when absent, which only scalars (then the
    schema's default) and optional vectors may be."""
    root, table_size, vtable, vt_size = check.table()
    for slot, (name, kind, item) in enumerate(spec):
        entry = 4 + 2 * slot
        offset = check.read("H", vtable + entry, "vtable entry") if entry + 2 <= vt_size else 0
        if offset == 0:
            if kind not in ("scalar", "optvector"):
                raise _corrupt(f"required field {name} is missing")
            yield name, kind, item, None
            continue
        if offset + (struct.calcsize(item) if kind == "scalar" else 4) > table_size:
            raise _corrupt(f"field {name} lies outside its table")
        yield name, kind, item, root + offset


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise _corrupt(f"{what}: invalid UTF-8") from None


def _verify(buf: memoryview) -> dict[str, Any]:
    """Check every field of the root table against the buffer.

    Returns the scalars, strings and string vectors (decoded on the way) and
    ``names_utf8`` (see :meth:`RunState._decoded`); numeric vectors, once checked, are
    read by the generated code.
    """
    check = _Verifier(buf)
    fields: dict[str, Any] = {}
    for name, kind, item, at in _located(check, _FIELDS):
        if at is None:
            fields[name] = None if kind == "optvector" else 0 if item == "I" else 0.0  # the schema's defaults
            continue
        if kind == "scalar":
            fields[name] = check.read(item, at, name)
        elif kind == "str":
            fields[name] = check.string(at, name)
        elif kind == "strvec":
            fields[name], packed = check.strings(at, name)
            if name == "node_names":
                fields["names_utf8"] = None if packed is None else memoryview(packed)[:-1]
        else:
            check.vector(at, item.itemsize, name)
            if kind == "optvector":
                fields[name] = True
    return fields


# -- decoding: building the state ----------------------------------------------------------------


def _output_vectors(root: gen.RunState) -> tuple[np.ndarray, np.ndarray, bytes]:
    """Output ids, end offsets and blob, checked to be consistent (see the schema)."""
    ids = root.OutputIdsAsNumpy().astype(np.int64)
    ends = root.OutputEndsAsNumpy().astype(np.int64)
    blob = bytes(root.OutputBlobAsNumpy())
    if ids.size != ends.size or bool(np.any(ids[1:] <= ids[:-1])) or bool(np.any(ends[1:] <= ends[:-1])):
        raise _corrupt("output ids or offsets are not ascending, or differ in number")
    if (int(ends[-1]) if ends.size else 0) != len(blob) or (ids.size and int(ids[0]) < 0):
        raise _corrupt("output offsets do not match the output bytes")
    if ends.size > 1 and bool(np.any(np.frombuffer(blob, _U8)[ends[:-1]] != _NEWLINE)):
        raise _corrupt("outputs are not separated by newlines")
    return ids, ends, blob


def _placed(root: gen.RunState, outputs: dict[int, bytes], ids: np.ndarray, fields: dict[str, Any],
            fetch: Callable[[int, int, bytes], bytes] | None) -> None:
    """Format 2: put the outputs kept apart (fetched, checked) and not saved in place."""
    present = [fields.pop(name) for name in ("output_kinds", "output_blob_sizes", "output_blob_digests")]
    if not any(present):
        return
    if not all(present):
        raise _corrupt("output placement vectors are incomplete")
    kinds = root.OutputKindsAsNumpy()
    sizes = root.OutputBlobSizesAsNumpy().tolist()
    digests = bytes(root.OutputBlobDigestsAsNumpy())
    if kinds.size != ids.size or bool(np.any(kinds > _UNSAVED)):
        raise _corrupt("output kinds are malformed")
    apart = np.flatnonzero(kinds != _INLINE).tolist()
    blobs = ids[kinds == _BLOB].tolist()
    if len(blobs) != len(sizes) or len(digests) != _DIGEST * len(sizes):
        raise _corrupt("output blob references are malformed")
    node_ids = ids.tolist()
    if any(outputs[node_ids[k]] for k in apart):
        raise _corrupt("an output kept apart also has inline bytes")
    for k in np.flatnonzero(kinds == _UNSAVED).tolist():
        outputs[node_ids[k]] = NOT_SAVED
    if blobs and fetch is None:
        raise _corrupt("outputs are kept apart from this snapshot, in its store: load it through the store")
    for i, (node, size) in enumerate(zip(blobs, sizes)):
        digest = digests[_DIGEST * i:_DIGEST * (i + 1)]
        assert fetch is not None
        outputs[node] = check_blob(node, fetch(node, size, digest), size, digest)


def _outputs(root: gen.RunState) -> tuple[dict[int, bytes], np.ndarray]:
    """The outputs by node id, and their ids as an array."""
    ids, ends, blob = _output_vectors(root)
    if not ids.size:
        return {}, ids
    if blob.count(_NEWLINE) == ids.size - 1:  # one split when no output holds a newline
        values = blob.split(b"\n")
    else:
        values = [blob[a:b] for a, b in zip([0, *(ends[:-1] + 1).tolist()], ends.tolist())]
    first, last = int(ids[0]), int(ids[-1])
    # Comprehensions, not dict(enumerate(...)): their pairs allocate no tuples, so building
    # 100k entries does not set off the cyclic garbage collector (measured 2x faster).
    if last - first + 1 == ids.size:  # consecutive ids (every node completed): no id list
        return {node: value for node, value in enumerate(values, first)}, ids
    return {node: value for node, value in zip(ids.tolist(), values)}, ids


def _errors(root: gen.RunState, fields: dict[str, Any]) -> dict[int, ErrorRecord]:
    """The error records from their parallel vectors (the strings already decoded)."""
    ids = root.ErrorIdsAsNumpy().tolist()
    columns = (fields.pop("error_types"), fields.pop("error_messages"), fields.pop("error_tracebacks"))
    if any(len(column) != len(ids) for column in columns) or len(set(ids)) != len(ids):
        raise _corrupt("error vectors have different lengths or repeated ids")
    return {i: ErrorRecord(t, m, tb) for i, t, m, tb in zip(ids, *columns)}


def _state(data: bytes, fields: dict[str, Any], fetch: Callable[[int, int, bytes], bytes] | None) -> RunState:
    """The state from the verified buffer and the fields :func:`_verify` decoded."""
    root = gen.RunState.GetRootAs(data, HEADER_SIZE)
    outputs, output_ids = _outputs(root)
    _placed(root, outputs, output_ids, fields, fetch)
    fields["items"] = decode_items(root.MapItemsAsNumpy().tobytes()) if fields.pop("map_items") else {}
    fields.update(
        errors=_errors(root, fields), outputs=outputs,
        succ_indptr=root.SuccIndptrAsNumpy(), succ_indices=root.SuccIndicesAsNumpy(),
        statuses=root.StatusesAsNumpy(), attempts=root.AttemptsAsNumpy(),
        started=root.StartedAsNumpy(), ended=root.EndedAsNumpy(),
        data=bytes(root.DataAsNumpy()),
    )
    for name in ("succ_indptr", "succ_indices", "statuses", "attempts", "started", "ended"):
        # little-endian views; a copy in native order only on big-endian hosts
        fields[name] = fields[name].astype(fields[name].dtype.newbyteorder("="), copy=False)
    names_utf8 = fields.pop("names_utf8")
    return RunState._decoded(fields, output_ids, names_utf8)


def decode(data: bytes | bytearray | memoryview, *,
           fetch: Callable[[int, int, bytes], bytes] | None = None) -> RunState:
    """The :class:`~flow_orchestrator.state.RunState` encoded in ``data`` by :func:`encode`.

    Raises :class:`~flow_orchestrator.state.CorruptStateError` for anything but a
    valid, undamaged encoding (see the module docstring).  The state's arrays are
    read-only views of ``data`` (copied first unless it is ``bytes``).  ``fetch(node,
    size, sha256)`` gives the bytes of an output the store keeps apart (checked here:
    length, then sha256); without it, a state referencing such outputs is refused.
    """
    data = data if type(data) is bytes else bytes(data)
    _check_frame(data)
    try:
        fields = _verify(memoryview(data)[HEADER_SIZE:])
        if fields.get("format_version") != _HEADER.unpack_from(data)[1]:
            raise _corrupt("the format version in the payload differs from the header's")
        return _state(data, fields, fetch)
    except CorruptStateError:
        raise
    except (ValueError, TypeError, IndexError, OverflowError, struct.error) as exc:
        raise _corrupt(f"{type(exc).__name__}: {exc}") from exc
