"""The binary encoding of checkpoint batches and the framing of journal records.

A frame is ``<u32 length><u32 crc32(payload)>`` (little-endian) then the payload.
:func:`read_frames` stops at the first frame that is short or fails its CRC: a torn or
damaged tail is ignored while every earlier record is kept.

A batch payload is ``<f64 timestamp><u32 count>`` then per record
``<i32 node><u8 status><i32 attempt><f64 started><f64 ended><u8 flags>``, the output
(``<u32 size>`` + bytes, if ``flags & 1``) and the error (three ``<u32 size>`` + UTF-8
strings: type, message, traceback, if ``flags & 2``).  A batch that carries the
workflow data ends with ``<u8 1><u32 size>`` + the serialized data.  Decoding checks
every size against the bytes left, so damaged input raises :class:`CorruptStateError`
only.

Where it sits: layer L4 (services, durability).
"""

from __future__ import annotations

import struct
import zlib

from ..state import CorruptStateError, ErrorRecord
from .base import Transition, check_transitions

__all__ = ["FRAME", "decode_batch", "encode_batch", "frame", "read_frames"]

FRAME = struct.Struct("<II")
"""The frame header: payload length and CRC32."""

_BATCH = struct.Struct("<dI")
_RECORD = struct.Struct("<iBiddB")
_SIZE = struct.Struct("<I")
_DATA_TAG = b"\x01"


def frame(payload: bytes) -> bytes:
    """``payload`` with its length and CRC32 in front."""
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def read_frames(data: bytes | memoryview, start: int = 0) -> tuple[list[bytes], int]:
    """The payloads of the intact frames from ``start`` on, and the offset where they end."""
    view, pos, payloads = memoryview(data), start, []
    while pos + FRAME.size <= len(view):
        length, crc = FRAME.unpack_from(view, pos)
        end = pos + FRAME.size + length
        if end > len(view) or zlib.crc32(view[pos + FRAME.size:end]) != crc:
            break
        payloads.append(bytes(view[pos + FRAME.size:end]))
        pos = end
    return payloads, pos


def _text(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogatepass")
    return _SIZE.pack(len(raw)) + raw


def _encode_one(record: Transition) -> bytes:
    flags = (record.output is not None) | (record.error is not None) << 1
    parts = [_RECORD.pack(record.node_id, record.status, record.attempt, record.started, record.ended, flags)]
    if record.output is not None:
        parts.append(_SIZE.pack(len(record.output)) + record.output)
    if record.error is not None:
        parts.extend(_text(s) for s in (record.error.type, record.error.message, record.error.traceback))
    return b"".join(parts)


def encode_batch(stamp: float, records: list[Transition], data: bytes | None = None) -> bytes:
    """The payload of one checkpoint batch (with the serialized workflow data, if given)."""
    payload = _BATCH.pack(stamp, len(records)) + b"".join(map(_encode_one, records))
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


def _decode_one(reader: _Reader) -> Transition:
    node, status, attempt, started, ended, flags = reader.unpack(_RECORD)
    output = reader.blob() if flags & 1 else None
    error = ErrorRecord(reader.text(), reader.text(), reader.text()) if flags & 2 else None
    return Transition(node, status, attempt, started, ended, output, error)


def decode_batch(payload: bytes) -> tuple[float, list[Transition], bytes | None]:
    """The timestamp, records and data (``None``: unchanged) of a batch payload;
    :class:`CorruptStateError` if malformed."""
    reader = _Reader(payload)
    stamp, count = reader.unpack(_BATCH)
    if count > len(payload) // _RECORD.size:
        raise CorruptStateError(f"a checkpoint batch claims {count} records in {len(payload)} bytes")
    records = [_decode_one(reader) for _ in range(count)]
    data = None
    if reader.pos < len(payload) and reader.take(1) == _DATA_TAG:
        data = reader.blob()
    if reader.pos != len(payload):
        raise CorruptStateError("a checkpoint batch has trailing bytes")
    try:  # records from disk get the same checks as new ones
        return stamp, check_transitions(records), data
    except Exception as exc:  # noqa: BLE001 - any invalid record is corruption here
        raise CorruptStateError(f"invalid checkpoint record: {exc}") from None
