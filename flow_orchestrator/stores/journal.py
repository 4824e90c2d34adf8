"""The binary encoding of checkpoint batches, the framing of journal records, and their chain.

A frame is ``<u32 length><u32 crc32(payload)>`` (little-endian) then the payload.

**The chain (journal format 2).**  Every checkpoint record's payload starts with
``<4s tag "\\xf0FJ2"><u64 seq><32s link>`` before the batch: ``seq`` counts the records
since the snapshot they extend (the first is 1), and ``link`` is the running digest of
the records before it: for record 1 the digest naming the snapshot (the stores choose
it: the sha256 of a file store's snapshot file, a digest of a database snapshot's
FlatBuffers header, which holds the snapshot's length and CRC32), then
``link[k+1] = sha256(link[k] || <u64 seq k> || <u32 crc32 of record k's payload>)``, so
each record's checksum covers the previous one's.  :class:`Chain` seals records when
writing and checks them when replaying: a missing, repeated, reordered or foreign record
raises :class:`CorruptStateError`.  Only the *last* record may be lost without notice
(a crash before it was written looks the same).

**Damage.**  A torn or damaged record with no intact record after it is a crash's torn
tail: it is ignored (and cut off by the next checkpoint), every earlier record kept.  A
damaged record *followed by an intact one* is damage in the middle: loading raises
:class:`CorruptStateError` rather than skip it and apply the later records
(:func:`read_frames` with ``strict=True``, :func:`row_payloads`).

**Format 1** (records without ``seq`` and ``link``) is still read, with the old rule
(replay up to the first damaged record); stores fold such a journal into a new snapshot
before they append to it, so formats never mix.

A batch payload is ``<f64 timestamp><u32 count>`` then per record
``<i32 node><u8 status><i32 attempt><f64 started><f64 ended><u8 flags>``, the output
(``<u32 size>`` + bytes, if ``flags & 1``; a reference ``<u64 size><32s sha256>`` to an
output the store keeps as a blob, if ``flags & 4``; none for an output not saved, if
``flags & 8``) and the error (three ``<u32 size>`` + UTF-8
strings: type, message, traceback, if ``flags & 2``); a record of an item of a map node
(``flags & 16``) is followed by ``<i64 item>`` first.  A batch that carries the
workflow data ends with ``<u8 1><u32 size>`` + the serialized data; any other byte after
the records is refused.  Decoding checks every size against the bytes left, so damaged
input raises :class:`CorruptStateError` only.

Where it sits: layer L4 (services, durability).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..state import NOT_SAVED, CorruptStateError, ErrorRecord, check_blob
from ..status import NodeStatus
from .base import RecordBatch, Transition, check_transitions

__all__ = ["FRAME", "RECORD_TAG", "SEED_BYTES", "Chain", "decode_batch", "encode_batch", "frame", "is_legacy",
           "read_frames", "replay", "replay_rows", "row_payloads", "single_frame", "snapshot_seed"]

FRAME = struct.Struct("<II")
"""The frame header: payload length and CRC32."""

_BATCH = struct.Struct("<dI")
_RECORD = struct.Struct("<iBiddB")
_SIZE = struct.Struct("<I")
_DATA_TAG = b"\x01"

RECORD_TAG = b"\xf0FJ2"
"""The first bytes of a chained (format 2) checkpoint record's payload."""

_REF = struct.Struct("<Q32s")
_ITEM = struct.Struct("<q")
_CHAIN = struct.Struct("<4sQ32s")
Fetch = Callable[[int, int, bytes], bytes]
_LINK = struct.Struct("<QI")


def frame(payload: bytes) -> bytes:
    """``payload`` with its length and CRC32 in front."""
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def read_frames(data: bytes | memoryview, start: int = 0, *, strict: bool = False) -> tuple[list[bytes], int]:
    """The payloads of the intact frames from ``start`` on, and the offset where they end.

    Reading stops at the first short or damaged frame.  With ``strict``, an intact
    chained record anywhere after that point means the damage is in the middle:
    :class:`CorruptStateError` instead of a silently shortened journal.
    """
    view, pos, payloads = memoryview(data), start, []
    while pos + FRAME.size <= len(view):
        length, crc = FRAME.unpack_from(view, pos)
        end = pos + FRAME.size + length
        if end > len(view) or zlib.crc32(view[pos + FRAME.size:end]) != crc:
            break
        payloads.append(bytes(view[pos + FRAME.size:end]))
        pos = end
    if strict and pos < len(view) and _intact_record_after(bytes(view), pos):
        raise CorruptStateError(f"a journal record at byte {pos} is damaged and intact records follow it")
    return payloads, pos


def _intact_record_after(data: bytes, pos: int) -> bool:
    """Whether an intact chained record's frame starts somewhere after ``pos``."""
    hit = data.find(RECORD_TAG, pos + 1)
    while hit >= 0:
        start = hit - FRAME.size
        if start > pos:
            length, crc = FRAME.unpack_from(data, start)
            if hit + length <= len(data) and zlib.crc32(memoryview(data)[hit:hit + length]) == crc:
                return True
        hit = data.find(RECORD_TAG, hit + 1)
    return False


def single_frame(data: object) -> bytes | None:
    """The payload of ``data`` if it is exactly one intact frame (a checkpoint row), else ``None``."""
    if not isinstance(data, bytes):
        return None
    got, end = read_frames(data)
    return got[0] if len(got) == 1 and end == len(data) else None


def row_payloads(rows: Sequence[object]) -> list[bytes]:
    """The payloads of checkpoint rows (one frame each) in order, up to a damaged last
    row (a torn tail, ignored); :class:`CorruptStateError` if a damaged row has an
    intact row after it."""
    payloads = []
    for i, row in enumerate(rows):
        payload = single_frame(row)
        if payload is None:
            if any(single_frame(later) is not None for later in rows[i + 1:]):
                raise CorruptStateError(f"checkpoint row {i + 1} is damaged and intact rows follow it")
            break
        payloads.append(payload)
    return payloads


class Chain:
    """Where a chain of checkpoint records stands: the last record's ``seq`` (0: none
    yet) and the running ``link`` the next record must name (see the module docs)."""

    __slots__ = ("link", "seq")

    def __init__(self, seed: bytes, seq: int = 0) -> None:
        self.link, self.seq = seed, seq

    def _advance(self, seq: int, payload: bytes) -> None:
        self.link = hashlib.sha256(self.link + _LINK.pack(seq, zlib.crc32(payload))).digest()
        self.seq = seq

    def seal(self, body: bytes) -> bytes:
        """The payload of the next record, ``body`` (a batch) behind its chain header."""
        seq = self.seq + 1
        payload = _CHAIN.pack(RECORD_TAG, seq, self.link) + body
        self._advance(seq, payload)
        return payload

    def follow(self, payload: bytes) -> bytes:
        """The batch of ``payload``, checked to be the next record of this chain;
        :class:`CorruptStateError` for a missing, repeated, reordered or foreign record."""
        if len(payload) < _CHAIN.size or payload[:len(RECORD_TAG)] != RECORD_TAG:
            raise CorruptStateError(f"checkpoint record {self.seq + 1} has no sequence number (not format 2)")
        _, seq, link = _CHAIN.unpack_from(payload)
        if seq != self.seq + 1:
            what = "repeated or out of order" if seq <= self.seq else f"records {self.seq + 1}..{seq - 1} are missing"
            raise CorruptStateError(f"checkpoint record {seq} follows record {self.seq}: {what}")
        if link != self.link:
            raise CorruptStateError(f"checkpoint record {seq} does not extend "
                                    f"{'this snapshot' if seq == 1 else f'record {seq - 1}'}")
        self._advance(seq, payload)
        return payload[_CHAIN.size:]

    @classmethod
    def after(cls, payload: bytes) -> Chain:
        """The chain just after the record ``payload`` (an intact, already checked record)."""
        _, seq, link = _CHAIN.unpack_from(payload)
        chain = cls(link, seq - 1)
        chain._advance(seq, payload)
        return chain


def replay(payloads: Iterable[bytes], seed: bytes, *, legacy: bool = False, fetch: Fetch | None = None
           ) -> list[tuple[float, list[Transition], bytes | None]]:
    """The decoded batches of a snapshot's records, their chain checked from ``seed``.

    ``legacy``: format 1 records (no chain).  ``fetch``: see :func:`decode_batch`.
    """
    if legacy:
        return [decode_batch(p, fetch) for p in payloads]
    chain = Chain(seed)
    return [decode_batch(chain.follow(p), fetch) for p in payloads]


def replay_rows(rows: Sequence[object], seed: bytes, fetch: Fetch | None = None
                ) -> list[tuple[float, list[Transition], bytes | None]]:
    """The decoded batches of a database run's checkpoint rows (one frame each, in order):
    :func:`row_payloads`, then :func:`replay` (format 1 when the first row is)."""
    payloads = row_payloads(rows)
    return replay(payloads, seed, legacy=bool(payloads) and is_legacy(payloads[0]), fetch=fetch)


SEED_BYTES = 24
"""How many leading bytes of a database snapshot (its FlatBuffers header: magic, format
version, CRC32 and length) name it for :func:`snapshot_seed`."""


def snapshot_seed(snapshot: bytes) -> bytes:
    """The first link of the chain of a database snapshot's checkpoint rows: the sha256 of
    its first :data:`SEED_BYTES` bytes (read without fetching the whole blob)."""
    return hashlib.sha256(b"flow-orchestrator/journal-seed\x00" + snapshot[:SEED_BYTES]).digest()


def is_legacy(payload: bytes) -> bool:
    """Whether a record payload is of format 1 (no chain header)."""
    return payload[:len(RECORD_TAG)] != RECORD_TAG


def _text(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogatepass")
    return _SIZE.pack(len(raw)) + raw


def _encode_one(record: Transition, refs: Mapping[int, bytes] | None) -> bytes:
    output = record.output
    ref = refs.get(id(output)) if refs and output is not None else None
    kind = 0 if output is None else 8 if output is NOT_SAVED else 1 if ref is None else 4
    flags = kind | (record.error is not None) << 1 | (record.item >= 0) << 4
    parts = [_RECORD.pack(record.node_id, record.status, record.attempt, record.started, record.ended, flags)]
    if record.item >= 0:
        parts.append(_ITEM.pack(record.item))
    if kind == 1:
        assert output is not None
        parts.append(_SIZE.pack(len(output)) + output)
    elif kind == 4:
        assert output is not None and ref is not None
        parts.append(_REF.pack(len(output), ref))
    if record.error is not None:
        parts.extend(_text(s) for s in (record.error.type, record.error.message, record.error.traceback))
    return b"".join(parts)


# One record's fixed fields and its output's size, packed as ``_RECORD`` + ``_SIZE`` are.
_ROW = np.dtype([("node", "<i4"), ("status", "u1"), ("attempt", "<i4"), ("started", "<f8"), ("ended", "<f8"),
                 ("flags", "u1"), ("size", "<u4")])
_FIXED = _RECORD.size  # the fixed fields alone: a record without an output
_COMPLETED = int(NodeStatus.COMPLETED)


def _pack_columns(batch: RecordBatch) -> bytes | None:
    """The records of a batch without errors, packed from its columns in bulk: the same
    bytes as :func:`_encode_one` of each record, with no Python per record (``None`` if an
    output is :data:`NOT_SAVED`: then record by record)."""
    n = len(batch)
    if not n:
        return b""
    rows = np.empty(n, _ROW)
    rows["node"], rows["status"], rows["attempt"] = batch.nodes, batch.statuses, batch.attempts
    rows["started"], rows["ended"] = batch.started, batch.ended
    done = batch.statuses == _COMPLETED
    rows["flags"] = done
    outputs = batch.outputs
    sizes = np.fromiter(map(len, outputs), np.int64, len(outputs))
    if any(outputs[i] is NOT_SAVED for i in np.flatnonzero(sizes == 0).tolist()):
        return None
    joined = b"".join(outputs)
    if len(outputs) == n:  # every record completed (the usual batch)
        rows["size"] = sizes
        if bool((sizes == sizes[0]).all()):  # outputs of one size: one array of whole records
            whole = np.empty(n, [("row", _ROW), ("output", f"V{int(sizes[0])}")] if sizes[0] else [("row", _ROW)])
            whole["row"] = rows
            if sizes[0]:
                whole["output"] = np.frombuffer(joined, f"V{int(sizes[0])}")
            return whole.tobytes()
    else:
        rows["size"][done] = sizes
    # Records of different lengths: scatter the fixed parts and the outputs into one buffer.
    lengths = np.full(n, _FIXED, np.int64)
    lengths[done] += _SIZE.size + sizes
    starts = np.zeros(n, np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    out = np.empty(int(starts[-1] + lengths[-1]), np.uint8)
    raw = rows.view(np.uint8).reshape(n, _ROW.itemsize)
    out[starts[:, None] + np.arange(_FIXED)] = raw[:, :_FIXED]
    where = starts[done] + _FIXED
    out[where[:, None] + np.arange(_SIZE.size)] = raw[done, _FIXED:]
    if joined:
        before = np.zeros(sizes.size, np.int64)
        np.cumsum(sizes[:-1], out=before[1:])
        out[np.repeat(where + _SIZE.size - before, sizes) + np.arange(len(joined))] = np.frombuffer(joined, np.uint8)
    return out.tobytes()


def encode_batch(stamp: float, records: list[Transition] | RecordBatch, data: bytes | None = None,
                 refs: Mapping[int, bytes] | None = None) -> bytes:
    """The payload of one checkpoint batch (with the serialized workflow data, if given).

    ``refs`` maps the ``id()`` of outputs the store keeps as blobs to their sha256: their
    records reference them instead of copying them.  A :class:`RecordBatch` without
    errors, outputs kept apart or outputs not saved is packed in bulk, to the same bytes.
    """
    body = (_pack_columns(records) if type(records) is RecordBatch and not records.errors and not refs
            and records.items is None else None)
    if body is None:
        body = b"".join(_encode_one(r, refs) for r in records)
    payload = _BATCH.pack(stamp, len(records)) + body
    if data is not None:
        payload += _DATA_TAG + _SIZE.pack(len(data)) + data
    return payload


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, size: int) -> bytes:
        """The next ``size`` bytes; :class:`CorruptStateError` if fewer are left."""
        if size > len(self.data) - self.pos:
            raise CorruptStateError("a checkpoint record is truncated")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple:
        """The next ``fmt.size`` bytes unpacked."""
        return fmt.unpack(self.take(fmt.size))

    def blob(self) -> bytes:
        """A ``<u32 size>``-prefixed byte string."""
        return self.take(self.unpack(_SIZE)[0])

    def text(self) -> str:
        """A ``<u32 size>``-prefixed UTF-8 string (surrogates passed)."""
        try:
            return self.blob().decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise CorruptStateError("a checkpoint error record is not UTF-8") from None


def _decode_one(reader: _Reader, fetch: Fetch | None) -> Transition:
    node, status, attempt, started, ended, flags = reader.unpack(_RECORD)
    if flags & ~31 or bin(flags & 13).count("1") > 1:
        raise CorruptStateError(f"a checkpoint record has unknown flags {flags:#x}")
    item = reader.unpack(_ITEM)[0] if flags & 16 else -1
    if item < -1:
        raise CorruptStateError(f"a checkpoint record names item {item}")
    output = reader.blob() if flags & 1 else NOT_SAVED if flags & 8 else None
    if flags & 4:
        size, digest = reader.unpack(_REF)
        if fetch is None:
            raise CorruptStateError("a checkpoint record references an output kept apart, and no store to fetch it")
        output = check_blob(node, fetch(node, size, digest), size, digest)
    error = ErrorRecord(reader.text(), reader.text(), reader.text()) if flags & 2 else None
    return Transition(node, status, attempt, started, ended, output, error, item)


def decode_batch(payload: bytes, fetch: Fetch | None = None) -> tuple[float, list[Transition], bytes | None]:
    """The timestamp, records and data (``None``: unchanged) of a batch payload;
    :class:`CorruptStateError` if malformed.  ``fetch(node, size, sha256)`` gives the bytes
    of an output kept as a blob (checked here: length, then sha256)."""
    reader = _Reader(payload)
    stamp, count = reader.unpack(_BATCH)
    if count > len(payload) // _RECORD.size:
        raise CorruptStateError(f"a checkpoint batch claims {count} records in {len(payload)} bytes")
    records = [_decode_one(reader, fetch) for _ in range(count)]
    data = None
    if reader.pos < len(payload):
        if reader.take(1) != _DATA_TAG:
            raise CorruptStateError("a checkpoint batch has trailing bytes after its records")
        data = reader.blob()
    if reader.pos != len(payload):
        raise CorruptStateError("a checkpoint batch has trailing bytes")
    try:  # records from disk get the same checks as new ones
        return stamp, check_transitions(records), data
    except Exception as exc:  # noqa: BLE001 - any invalid record is corruption here
        raise CorruptStateError(f"invalid checkpoint record: {exc}") from None
