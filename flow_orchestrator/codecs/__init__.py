"""File codecs of run states: :class:`~flow_orchestrator.state.RunState` <-> ``bytes``.

Two codecs with the same interface, ``encode(state) -> bytes`` and
``decode(data) -> RunState``:

* :mod:`~flow_orchestrator.codecs.flatbuffers_codec` (``flatbuffers``): compact and fast,
  per-node arrays written and read in bulk (zero-copy on reading);
* :mod:`~flow_orchestrator.codecs.json_codec` (``json``): readable, stdlib ``json``
  (orjson as an optional fast path).

Both frame the payload with a magic, the format version, its length and a CRC32, and
both guarantee that :func:`decode` of any input, damaged, truncated or forged, returns
a valid state or raises :class:`~flow_orchestrator.state.CorruptStateError`, never
another exception, and never allocates more than a small multiple of the input's size.
:func:`decode_any` picks the codec from the first bytes.
"""

from __future__ import annotations

from ..state import CorruptStateError, RunState
from . import flatbuffers_codec, json_codec

__all__ = ["CODECS", "CorruptStateError", "decode_any", "flatbuffers_codec", "json_codec"]

CODECS = {"flatbuffers": flatbuffers_codec, "json": json_codec}
"""The codec modules by name."""


def decode_any(data: bytes | bytearray | memoryview) -> RunState:
    """Decode ``data`` with whichever codec wrote it, told by its magic bytes."""
    for codec in (flatbuffers_codec, json_codec):
        if bytes(data[: len(codec.MAGIC)]) == codec.MAGIC:
            return codec.decode(data)
    raise CorruptStateError(f"not a saved run state (unknown magic {bytes(data[:16])!r})")
