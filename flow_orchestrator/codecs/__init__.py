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

Where it sits: layer L4 (services, durability), under the stores.  The codec modules are
imported on first use (PEP 562): ``import flow_orchestrator`` does not load
``flatbuffers``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING

from ..state import CorruptStateError, RunState
from ._header import SMALL_STATE, StateHeader

if TYPE_CHECKING:
    from . import flatbuffers_codec, json_codec

__all__ = ["CODECS", "SMALL_STATE", "CorruptStateError", "StateHeader", "decode_any", "flatbuffers_codec",
           "json_codec", "read_header_any"]

_NAMES = ("flatbuffers", "json")


class _Codecs(Mapping[str, ModuleType]):
    """The codec modules by name, each imported when first looked up."""

    def __getitem__(self, name: str) -> ModuleType:
        if name not in _NAMES:
            raise KeyError(name)
        return importlib.import_module(f"{__name__}.{name}_codec")

    def __iter__(self) -> Iterator[str]:
        return iter(_NAMES)

    def __len__(self) -> int:
        return len(_NAMES)

    def __repr__(self) -> str:
        return f"CODECS({', '.join(_NAMES)})"


CODECS: Mapping[str, ModuleType] = _Codecs()
"""The codec modules by name."""

# Magic bytes (copied from each codec, checked equal by the tests) -> codec name, so
# that telling a codec apart does not import both.
_MAGICS = {b"\x89FORSFB\n": "flatbuffers", b"#FORS-JSON ": "json"}


def __getattr__(name: str) -> object:
    """``flatbuffers_codec`` or ``json_codec``, imported on first use."""
    if name in ("flatbuffers_codec", "json_codec"):
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def decode_any(data: bytes | bytearray | memoryview) -> RunState:
    """Decode ``data`` with whichever codec wrote it, told by its magic bytes."""
    for magic, name in _MAGICS.items():
        if bytes(data[: len(magic)]) == magic:
            return CODECS[name].decode(data)  # type: ignore[no-any-return]
    raise CorruptStateError(f"not a saved run state (unknown magic {bytes(data[:16])!r})")


def read_header_any(read: Callable[[int], bytes], size: int) -> StateHeader:
    """The :class:`StateHeader` of an encoded state of ``size`` bytes, by whichever codec
    wrote it; ``read(n)`` gives its first ``n`` bytes (see the codecs' ``read_header``)."""
    head = read(16)
    for magic, name in _MAGICS.items():
        if head[: len(magic)] == magic:
            return CODECS[name].read_header(read, size)  # type: ignore[no-any-return]
    raise CorruptStateError(f"not a saved run state (unknown magic {head!r})")
