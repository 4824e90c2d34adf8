"""Serializers for node outputs and workflow data: exact round-trips, or a loud failure.

A saved run keeps every completed node's output and the run's data as ``bytes`` made by
a :class:`Serializer`.  Resuming must hand each dependent exactly the value it would
have had, so a serializer either round-trips a value exactly or raises
:class:`SerializationError`; it never changes a value silently.

:class:`JsonSerializer` (the default, name ``"json"``) writes UTF-8 JSON.  Values that
JSON represents exactly are written as plain JSON: ``None``, ``bool``, ``str``, ``int``
in the signed 64-bit range, finite ``float`` (shortest repr, which reads back to the
same bits, ``-0.0`` included), ``list`` and ``dict`` with ``str`` keys.  Everything
else it supports is written as a *tagged* object, ``{"$fo": TAG, ...}``:

==============  ===================================================================
``int``         integers outside the 64-bit range, as hex (``{"$fo": "int", "hex": "-0x1f"}``)
``float``       nan, inf and -inf, as the 64 bits in hex (NaN payloads are kept)
``bytes``       base64 (``bytearray`` likewise, as ``"bytearray"``)
``tuple``       ``{"$fo": "tuple", "items": [...]}``, so tuples do not come back as lists
``dict``        dicts with a non-``str`` key, or with a ``"$fo"`` key, as ``[key, value]`` pairs
``ndarray``     numpy arrays: dtype string, shape and the exact bytes (base64); numeric,
                bool, datetime, timedelta, bytes and str dtypes; object and structured
                arrays are refused; the memory layout (strides, Fortran order) is not kept
``npscalar``    numpy scalars of numeric, bool, datetime and timedelta types
``datetime``    ``datetime``, ``time``: the wall time (ISO), ``fold`` and the time zone:
                none, ``"utc"``, a fixed offset (``datetime.timezone``, with its name if
                given) or a ``zoneinfo.ZoneInfo`` by key; other ``tzinfo`` types are refused
``date``        ISO; ``timedelta`` as ``[days, seconds, microseconds]``
``decimal``     ``str(d)``: digits, exponent, sign of zero and NaN payloads are kept
``uuid``        hex (and ``is_safe`` when known)
``path``        ``pathlib`` paths, with their class (``PurePosixPath``, ``PureWindowsPath``,
                ``PosixPath``, ``WindowsPath``) and ``str()``
``set``         ``set`` and ``frozenset`` (``"frozenset"``): the items sorted by their JSON
                text, so that equal sets are written alike
``enum``        a member, by its class's ``module:QualName`` and its value
``dataclass``   by its class's ``module:QualName`` and each field; read back as pickle
                does, without calling ``__init__`` or ``__post_init__``; attributes that
                are not fields are refused, since they would be lost
==============  ===================================================================

**Raw buffers.**  The data of ``bytes``, ``bytearray`` and numpy arrays of at least
:data:`RAW_MIN` bytes is not base64: it follows the JSON as raw buffers, and the tagged
object says which (``{"$fo": "ndarray", "dtype": ..., "shape": ..., "buf": 0}``).  Such
an output is an *envelope*: ``<8s RAW_MAGIC><u64 skeleton length><u64 count>``, the JSON
skeleton, ``count`` ``<u64>`` buffer sizes, then each buffer at an offset aligned to 64
bytes, and nothing after the last.  It is made with one copy of the data (one
``bytes.join``); reading checks every size against the bytes there are and that each
buffer is used exactly once.  Sets keep their items inline (their order is by JSON text).

Enum and dataclass classes must be found again by name: local classes (defined in a
function) are refused with a :class:`SerializationError` naming the value's path.
Reading a value never imports a module: the module of an enum or dataclass must be
imported already (the workflow's module usually imports it), else
:class:`SerializationError` says which, so a damaged or hostile store cannot make a
load run a module's code.

Types are checked exactly: other subclasses (``OrderedDict``, ``np.matrix``, a
``datetime`` subclass...) and any other object are refused with a
:class:`SerializationError` that names the type and the path inside the value
(``value['rows'][3][1]``, ``value.field``), as are containers nested deeper than
:data:`MAX_DEPTH` (or cyclic).

orjson, when installed, is used as a fast path only where it gives the same result as
the standard library: its output is valid JSON that the stdlib reads back to the same
values (floats are written shortest-round-trip by both), and on reading it is skipped
for documents with an integer of 19 digits or more (which orjson would read as a
float); anything orjson refuses (lone surrogates, deep nesting) falls back to the stdlib.

:class:`PickleSerializer` (name ``"pickle"``) is opt-in: it handles any picklable
object but **loading a pickle can run arbitrary code, so never use it with a store
that someone else can write to**.

Where it sits: layer L0 (foundations).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import pathlib
import pickle
import re
import struct
import sys
import threading
import uuid
import weakref
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import SerializationError

try:  # optional fast path
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]

__all__ = [
    "MAX_DEPTH",
    "RAW_MAGIC",
    "RAW_MIN",
    "TAG",
    "JsonSerializer",
    "PickleSerializer",
    "SerializationError",
    "Serializer",
    "get_serializer",
    "register_serializer",
    "resume_serializer",
    "serializer_names",
]

TAG = "$fo"
"""The key that marks a tagged JSON object."""

MAX_DEPTH = 100
"""How deeply containers may nest in a value given to :class:`JsonSerializer`."""

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_ARRAY_KINDS = frozenset("biufcmMSU")
_SCALAR_KINDS = frozenset("biufcmM")
_LONG_INT = re.compile(rb"\d{19}")
_F64 = struct.Struct("<d")
_ENVELOPE = struct.Struct("<8sQ")  # magic, length of the JSON skeleton
RAW_MAGIC = b"\x00FO-RAW\x01"
"""The first bytes of a :class:`JsonSerializer` output that carries raw buffers (plain
JSON never starts with a NUL byte)."""
RAW_MIN = 4096
"""Bytes and numpy arrays of at least this many bytes are written as raw buffers."""
_ALIGN = 64
_U64 = struct.Struct("<Q")


@runtime_checkable
class Serializer(Protocol):
    """Turns outputs and workflow data into bytes and back.

    ``loads(dumps(x))`` must equal ``x`` exactly, or ``dumps`` must raise
    :class:`SerializationError`; ``loads`` raises :class:`SerializationError` on bytes
    it cannot read.  ``name`` is saved with each run so that it is read back with the
    same serializer.
    """

    name: str

    def dumps(self, obj: Any) -> bytes:
        """Serialize ``obj``."""
        ...

    def loads(self, data: bytes) -> Any:
        """Deserialize bytes made by :meth:`dumps`."""
        ...


# -- the path of a failure, assembled while unwinding ------------------------------------


class _Failure(Exception):
    """Internal: a failure deep inside a value; containers add their key on the way out."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.keys: list[str] = []

    def error(self) -> SerializationError:
        keys = self.keys[::-1]
        if len(keys) > 16:
            keys = keys[:8] + [f"...{len(keys) - 16} more..."] + keys[-8:]
        return SerializationError(self.message, "value" + "".join(keys))


def _key(key: Any) -> str:
    """``[key]`` for a failure's path: a short repr, even of keys whose repr fails."""
    try:
        text = repr(key)
    except Exception:  # noqa: BLE001 - e.g. an int past str()'s digit limit
        text = f"<{_type_name(key)}>"
    return f"[{text[:60]}...]" if len(text) > 60 else f"[{text}]"


def _type_name(obj: Any) -> str:
    kind = type(obj)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


# -- dumps: value -> JSON tree --------------------------------------------------------------


def _float_bits(value: float) -> str:
    return format(_U64.unpack(_F64.pack(value))[0], "016x")


def _b64(raw: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(raw).decode("ascii")


def _enc_list(items: Any, depth: int) -> list[Any]:
    out = []
    for i, item in enumerate(items):
        try:
            out.append(_enc(item, depth))
        except _Failure as failure:
            failure.keys.append(f"[{i}]")
            raise
    return out


def _enc_dict(obj: dict[Any, Any], depth: int) -> Any:
    if all(type(k) is str for k in obj) and TAG not in obj:
        out = {}
        for key, item in obj.items():
            try:
                out[key] = _enc(item, depth)
            except _Failure as failure:
                failure.keys.append(_key(key))
                raise
        return out
    pairs = []
    for key, item in obj.items():
        try:
            pairs.append([_enc(key, depth), _enc(item, depth)])
        except _Failure as failure:
            failure.keys.append(_key(key))
            raise
    return {TAG: "dict", "items": pairs}


class _Raw(threading.local):
    """Internal: the raw buffers of the value being written (``bufs``, a list while
    :meth:`JsonSerializer.dumps` collects them) or read (``view``, the envelope's bytes
    and where each buffer starts)."""

    bufs: list[memoryview] | None = None
    view: memoryview | None = None
    spans: list[tuple[int, int]] = []  # noqa: RUF012 - replaced, never mutated
    used: set[int] = set()  # noqa: RUF012


_raw = _Raw()


def _out_of_band(raw: memoryview) -> int | None:
    """The index of ``raw`` among the value's raw buffers, or ``None`` when it stays inline
    (small, or no collection going on)."""
    bufs = _raw.bufs
    if bufs is None or raw.nbytes < RAW_MIN:
        return None
    bufs.append(raw)
    return len(bufs) - 1


def _enc_bytes(obj: bytes | bytearray, tag: str) -> dict[str, Any]:
    index = _out_of_band(memoryview(obj))
    return {TAG: tag, "b64": _b64(obj)} if index is None else {TAG: tag, "buf": index}


def _enc_ndarray(arr: np.ndarray) -> dict[str, Any]:
    dtype = arr.dtype
    if dtype.kind not in _ARRAY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise _Failure(f"numpy arrays of dtype {dtype} cannot be serialized exactly (object or structured)")
    if dtype.itemsize == 0:
        raise _Failure(f"numpy arrays of zero-size dtype {dtype} are not supported")
    out: dict[str, Any] = {TAG: "ndarray", "dtype": dtype.str, "shape": list(arr.shape)}
    if _raw.bufs is not None and arr.nbytes >= RAW_MIN:
        # The array's own bytes (C order; copied only if it is not C-contiguous), as
        # unsigned bytes so that any dtype (datetime64 included) gives a buffer.
        flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        out["buf"] = _out_of_band(memoryview(flat.data))
        return out
    out["b64"] = _b64(arr.tobytes())
    return out


def _enc_npscalar(obj: np.generic) -> dict[str, Any]:
    dtype = obj.dtype
    if dtype.kind not in _SCALAR_KINDS or np.dtype(dtype.str).type is not type(obj):
        raise _Failure(f"numpy scalars of type {_type_name(obj)} are not supported")
    return {TAG: "npscalar", "dtype": dtype.str, "b64": _b64(np.asarray(obj).tobytes())}


# -- standard library types: dates and times, decimals, UUIDs, paths, sets, enums, dataclasses --

_PATHS: dict[str, type[pathlib.PurePath]] = {
    kind.__name__: kind for kind in (pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.PosixPath,
                                     pathlib.WindowsPath)}
_TIMEDELTA_MAX = 999_999_999


def _enc_tz(tz: dt.tzinfo | None) -> Any:
    """``None``, ``"utc"``, ``{"offset": [days, s, us], "name": ...}`` or ``{"zone": key}``."""
    if tz is None:
        return None
    if tz is dt.timezone.utc:
        return "utc"
    if type(tz) is dt.timezone:
        # (offset,) or (offset, name): the name given, if any
        args = tz.__getinitargs__()  # type: ignore[attr-defined]
        offset = args[0]
        return {"offset": [offset.days, offset.seconds, offset.microseconds],
                "name": args[1] if len(args) > 1 else None}
    zoneinfo = sys.modules.get("zoneinfo")
    if zoneinfo is not None and type(tz) is zoneinfo.ZoneInfo:
        key = getattr(tz, "key", None)
        if key is None:
            raise _Failure("a ZoneInfo made from a file (no key) cannot be serialized: use ZoneInfo(key)")
        return {"zone": key}
    raise _Failure(f"time zones of type {_type_name(tz)} cannot be serialized exactly "
                   "(use datetime.timezone, or zoneinfo.ZoneInfo by key)")


def _enc_datetime(obj: dt.datetime) -> dict[str, Any]:
    return {TAG: "datetime", "iso": obj.replace(tzinfo=None).isoformat(), "fold": obj.fold,
            "tz": _enc_tz(obj.tzinfo)}


def _enc_time(obj: dt.time) -> dict[str, Any]:
    return {TAG: "time", "iso": obj.replace(tzinfo=None).isoformat(), "fold": obj.fold,
            "tz": _enc_tz(obj.tzinfo)}


def _class_name(kind: type) -> str:
    """``module:QualName`` of a class that can be found again by that name."""
    name = _CLASS_NAMES.get(kind)
    if name is not None:
        return name
    module, qualname = kind.__module__, kind.__qualname__
    if "<locals>" in qualname or "<" in module:
        raise _Failure(f"{_type_name_of(kind)} is a local class: it cannot be found by name when the "
                       "value is read back; define it at module level")
    found = _lookup(module, qualname)
    if found is not kind:
        raise _Failure(f"{_type_name_of(kind)} cannot be found by its name {module}:{qualname} "
                       "(define it at module level, under that name)")
    name = f"{module}:{qualname}"
    _CLASS_NAMES[kind] = name
    return name


def _type_name_of(kind: type) -> str:
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _lookup(module: str, qualname: str) -> Any:
    """The object ``qualname`` of the already imported ``module``, or None."""
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None) if found is not None else None
    return found


_CLASS_NAMES: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()


def _enc_enum(obj: enum.Enum, depth: int) -> dict[str, Any]:
    name = _class_name(type(obj))
    try:
        value = _enc(obj.value, depth)
    except _Failure as failure:
        failure.keys.append(".value")
        raise
    return {TAG: "enum", "class": name, "value": value}


def _enc_dataclass(obj: Any, depth: int) -> dict[str, Any]:
    kind = type(obj)
    name = _class_name(kind)
    fields = dataclasses.fields(obj)
    names = [field.name for field in fields]
    extra = set(getattr(obj, "__dict__", ())) - set(names)
    if extra:
        raise _Failure(f"dataclass {_type_name(obj)} has attributes that are not fields "
                       f"({', '.join(sorted(extra)[:5])}): they would be lost")
    out = {}
    for field in names:
        try:
            try:
                item = getattr(obj, field)
            except AttributeError:
                raise _Failure(f"field {field!r} of dataclass {_type_name(obj)} is not set") from None
            out[field] = _enc(item, depth)
        except _Failure as failure:
            failure.keys.append(f".{field}")
            raise
    return {TAG: "dataclass", "class": name, "fields": out}


def _enc_set(obj: set[Any] | frozenset[Any], depth: int) -> dict[str, Any]:
    bufs, _raw.bufs = _raw.bufs, None  # items are ordered by their JSON text: all inline
    try:
        return _enc_set_items(obj, depth)
    finally:
        _raw.bufs = bufs


def _enc_set_items(obj: set[Any] | frozenset[Any], depth: int) -> dict[str, Any]:
    items = []
    for item in obj:
        try:
            tree = _enc(item, depth)
        except _Failure as failure:
            failure.keys.append(f"[<set item {_key(item)[1:-1]}>]")
            raise
        items.append((_stdlib_dumps(tree), tree))
    items.sort(key=lambda pair: pair[0])  # a deterministic order: by the items' JSON text
    return {TAG: "set" if type(obj) is set else "frozenset", "items": [tree for _, tree in items]}


def _enc_stdlib(obj: Any) -> Any:
    """Tagged forms of the standard library's value types; ``None`` if ``obj`` is not one."""
    kind = type(obj)
    if kind is dt.datetime:
        return _enc_datetime(obj)
    if kind is dt.date:
        return {TAG: "date", "iso": obj.isoformat()}
    if kind is dt.time:
        return _enc_time(obj)
    if kind is dt.timedelta:
        return {TAG: "timedelta", "dsu": [obj.days, obj.seconds, obj.microseconds]}
    if kind is decimal.Decimal:
        return {TAG: "decimal", "str": str(obj)}
    if kind is uuid.UUID:
        out = {TAG: "uuid", "hex": obj.hex}
        if obj.is_safe is not uuid.SafeUUID.unknown:
            out["safe"] = obj.is_safe.name
        return out
    if kind.__name__ in _PATHS and _PATHS[kind.__name__] is kind:
        return {TAG: "path", "kind": kind.__name__, "str": str(obj)}
    return None


def _enc_leaf(obj: Any) -> Any:
    """Tagged forms of the non-container types; _Failure for anything unsupported."""
    kind = type(obj)
    if kind is int:
        return {TAG: "int", "hex": hex(obj)}
    if kind is float:
        return {TAG: "float", "bits": _float_bits(obj)}
    if kind is bytes:
        return _enc_bytes(obj, "bytes")
    if kind is bytearray:
        return _enc_bytes(obj, "bytearray")
    if kind is np.ndarray:
        return _enc_ndarray(obj)
    if isinstance(obj, np.generic):
        return _enc_npscalar(obj)
    tree = _enc_stdlib(obj)
    if tree is not None:
        return tree
    raise _Failure(f"objects of type {_type_name(obj)} are not JSON-serializable exactly "
                   "(use plain containers, numpy arrays, or PickleSerializer)")


def _enc(obj: Any, depth: int) -> Any:
    kind = type(obj)
    if kind is str or kind is bool or obj is None:
        return obj
    if kind is int and _INT64_MIN <= obj <= _INT64_MAX:
        return obj
    if kind is float and math.isfinite(obj):
        return obj
    if kind is list or kind is tuple or kind is dict:
        if depth >= MAX_DEPTH:
            raise _Failure(f"containers nested deeper than {MAX_DEPTH} levels (or a cycle)")
        if kind is dict:
            return _enc_dict(obj, depth + 1)
        items = _enc_list(obj, depth + 1)
        return items if kind is list else {TAG: "tuple", "items": items}
    if kind is set or kind is frozenset or isinstance(obj, enum.Enum) or (
            dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
        if depth >= MAX_DEPTH:
            raise _Failure(f"containers nested deeper than {MAX_DEPTH} levels (or a cycle)")
        if kind is set or kind is frozenset:
            return _enc_set(obj, depth + 1)
        if isinstance(obj, enum.Enum):
            return _enc_enum(obj, depth + 1)
        return _enc_dataclass(obj, depth + 1)
    return _enc_leaf(obj)


# -- loads: JSON tree -> value ------------------------------------------------------------------


def _expect(value: Any, kind: type, what: str) -> Any:
    if type(value) is not kind:
        raise _Failure(f"malformed {what}: expected {kind.__name__}, got {_type_name(value)}")
    return value


def _unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(_expect(text, str, what), validate=True)
    except (binascii.Error, ValueError):
        raise _Failure(f"malformed {what}: invalid base64") from None


def _raw_bytes(node: dict[str, Any], what: str) -> bytes | bytearray | memoryview:
    """The bytes of a tagged value: base64 inline, or ``"buf"``, a raw buffer of the envelope."""
    if "buf" not in node:
        return _unb64(node.get("b64"), what)
    index, view = node["buf"], _raw.view
    if view is None or type(index) is not int or not 0 <= index < len(_raw.spans) or "b64" in node:
        raise _Failure(f"malformed {what}: no such raw buffer")
    if index in _raw.used:
        raise _Failure(f"malformed {what}: raw buffer {index} used twice")
    _raw.used.add(index)
    start, size = _raw.spans[index]
    return view[start:start + size]


def _dec_dtype(text: Any, kinds: frozenset[str]) -> np.dtype:
    _expect(text, str, "dtype")
    try:
        dtype = np.dtype(text) if len(text) <= 32 else None
    except (TypeError, ValueError, SyntaxError):
        dtype = None
    if dtype is None or dtype.str != text or dtype.kind not in kinds or dtype.itemsize == 0 \
            or dtype.fields is not None or dtype.subdtype is not None:
        raise _Failure(f"malformed or unsupported dtype {text!r}")
    return dtype


def _dec_ndarray(node: dict[str, Any]) -> np.ndarray:
    dtype = _dec_dtype(node.get("dtype"), _ARRAY_KINDS)
    shape = _expect(node.get("shape"), list, "ndarray shape")
    if len(shape) > 32 or any(type(d) is not int or d < 0 for d in shape):
        raise _Failure(f"malformed ndarray shape {shape!r}")
    raw = _raw_bytes(node, "ndarray data")
    if math.prod(shape) * dtype.itemsize != len(raw):
        raise _Failure(f"ndarray data has {len(raw)} bytes, not the {shape} x {dtype.itemsize} expected")
    try:
        return np.frombuffer(bytearray(raw), dtype=dtype).reshape(shape)
    except (ValueError, TypeError, OverflowError) as exc:
        raise _Failure(f"malformed ndarray: {exc}") from None


def _dec_npscalar(node: dict[str, Any]) -> np.generic:
    dtype = _dec_dtype(node.get("dtype"), _SCALAR_KINDS)
    raw = _unb64(node.get("b64"), "numpy scalar data")
    if len(raw) != dtype.itemsize:
        raise _Failure(f"numpy scalar data has {len(raw)} bytes, not {dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype)[0]


def _dec_int(node: dict[str, Any]) -> int:
    text = _expect(node.get("hex"), str, "int")
    if not re.fullmatch(r"-?0x[0-9a-f]+", text):
        raise _Failure(f"malformed int {text[:40]!r}")
    return int(text, 16)


def _dec_float(node: dict[str, Any]) -> float:
    text = _expect(node.get("bits"), str, "float")
    if not re.fullmatch(r"[0-9a-f]{16}", text):
        raise _Failure(f"malformed float bits {text!r}")
    return _F64.unpack(_U64.pack(int(text, 16)))[0]


def _dec_pairs(node: dict[str, Any], depth: int) -> dict[Any, Any]:
    pairs = _expect(node.get("items"), list, "dict items")
    out: dict[Any, Any] = {}
    for i, pair in enumerate(pairs):
        try:
            if type(pair) is not list or len(pair) != 2:
                raise _Failure("malformed dict item: expected a [key, value] pair")
            key = _dec(pair[0], depth)
            try:
                out[key] = _dec(pair[1], depth)
            except TypeError:
                raise _Failure(f"unhashable dict key of type {_type_name(key)}") from None
        except _Failure as failure:
            failure.keys.append(f"[<item {i}>]")
            raise
    if len(out) != len(pairs):
        raise _Failure("duplicate dict keys")
    return out


def _dec_iso(node: dict[str, Any], kind: Any, what: str) -> Any:
    text = _expect(node.get("iso"), str, what)
    try:
        return kind.fromisoformat(text)
    except ValueError:
        raise _Failure(f"malformed {what} {text[:40]!r}") from None


def _dec_tz(tree: Any) -> dt.tzinfo | None:
    if tree is None:
        return None
    if tree == "utc":
        return dt.timezone.utc
    if type(tree) is dict and "offset" in tree:
        offset = _expect(tree["offset"], list, "time zone offset")
        name = tree.get("name")
        if len(offset) != 3 or any(type(x) is not int for x in offset) or (name is not None and type(name) is not str):
            raise _Failure("malformed time zone offset")
        try:
            delta = dt.timedelta(*offset)
            return dt.timezone(delta) if name is None else dt.timezone(delta, name)
        except (ValueError, OverflowError) as exc:
            raise _Failure(f"malformed time zone offset: {exc}") from None
    if type(tree) is dict and "zone" in tree:
        key = _expect(tree["zone"], str, "time zone key")
        import zoneinfo  # only when a value has a zone: not at import
        try:
            return zoneinfo.ZoneInfo(key)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise _Failure(f"unknown time zone {key[:60]!r}: {exc}") from None
    raise _Failure("malformed time zone")


def _dec_clock(node: dict[str, Any], kind: Any, what: str) -> Any:
    value = _dec_iso(node, kind, what)
    fold = node.get("fold", 0)
    if fold not in (0, 1) or type(fold) is not int or value.tzinfo is not None:
        raise _Failure(f"malformed {what}")
    return value.replace(tzinfo=_dec_tz(node.get("tz")), fold=fold)


def _dec_timedelta(node: dict[str, Any]) -> dt.timedelta:
    dsu = _expect(node.get("dsu"), list, "timedelta")
    if len(dsu) != 3 or any(type(x) is not int for x in dsu):
        raise _Failure("malformed timedelta")
    try:
        value = dt.timedelta(*dsu)
    except (OverflowError, ValueError) as exc:
        raise _Failure(f"malformed timedelta: {exc}") from None
    if [value.days, value.seconds, value.microseconds] != dsu:
        raise _Failure("malformed timedelta (not normalized)")
    return value


def _dec_decimal(node: dict[str, Any]) -> decimal.Decimal:
    text = _expect(node.get("str"), str, "decimal")
    try:
        value = decimal.Decimal(text) if len(text) <= 100_000 else None
    except decimal.InvalidOperation:
        value = None
    if value is None:
        raise _Failure(f"malformed decimal {text[:40]!r}")
    return value


def _dec_uuid(node: dict[str, Any]) -> uuid.UUID:
    text = _expect(node.get("hex"), str, "uuid")
    safe = node.get("safe", "unknown")
    if not re.fullmatch(r"[0-9a-f]{32}", text) or safe not in uuid.SafeUUID.__members__:
        raise _Failure(f"malformed uuid {text[:40]!r}")
    return uuid.UUID(hex=text, is_safe=uuid.SafeUUID[safe])


def _dec_path(node: dict[str, Any]) -> pathlib.PurePath:
    kind = _PATHS.get(_expect(node.get("kind"), str, "path kind"))
    text = _expect(node.get("str"), str, "path")
    if kind is None:
        raise _Failure(f"malformed path kind {node.get('kind')!r}")
    try:
        return kind(text)
    except NotImplementedError:  # a concrete path of another system: WindowsPath here
        raise _Failure(f"a {kind.__name__} cannot be made on this system (use Pure{kind.__name__})") from None
    except (TypeError, ValueError) as exc:
        raise _Failure(f"malformed path: {exc}") from None


def _dec_class(node: dict[str, Any], base: Callable[[type], bool], what: str) -> type:
    """The class named ``module:QualName`` by a tagged value: looked up in modules already
    imported, never imported here (reading a value must not run a module's code)."""
    name = _expect(node.get("class"), str, f"{what} class")
    module, _, qualname = name.partition(":")
    if not module or not qualname:
        raise _Failure(f"malformed {what} class name {name[:80]!r}")
    if module not in sys.modules:
        raise _Failure(f"{what} class {name[:80]!r}: module {module[:60]!r} is not imported (reading a value "
                       "never imports modules: import it first)")
    kind = _lookup(module, qualname)
    if not isinstance(kind, type) or not base(kind):
        raise _Failure(f"{what} class {name[:80]!r} is not found, or is not {what}")
    return kind


def _dec_enum(node: dict[str, Any], depth: int) -> enum.Enum:
    kind = _dec_class(node, lambda k: issubclass(k, enum.Enum), "an enum")
    value = _dec(node.get("value"), depth)
    try:
        member = kind(value)
    except (ValueError, TypeError):
        raise _Failure(f"{_type_name_of(kind)} has no member of value {value!r:.60}") from None
    if type(member) is not kind:
        raise _Failure(f"malformed enum value for {_type_name_of(kind)}")
    return member  # type: ignore[return-value]


def _dec_dataclass(node: dict[str, Any], depth: int) -> Any:
    kind = _dec_class(node, dataclasses.is_dataclass, "a dataclass")
    values = _expect(node.get("fields"), dict, "dataclass fields")
    names = [field.name for field in dataclasses.fields(kind)]
    if sorted(values) != sorted(names):
        raise _Failure(f"malformed dataclass {_type_name_of(kind)}: its fields are {names}, not {list(values)}")
    # As pickle does: no __init__ or __post_init__ runs; the fields are set as saved.
    obj: Any = object.__new__(kind)
    for field in names:
        try:
            object.__setattr__(obj, field, _dec(values[field], depth))
        except _Failure as failure:
            failure.keys.append(f".{field}")
            raise
    return obj


def _dec_set(node: dict[str, Any], depth: int) -> set[Any] | frozenset[Any]:
    items = _dec_list(_expect(node.get("items"), list, "set items"), depth)
    try:
        out = set(items) if node[TAG] == "set" else frozenset(items)
    except TypeError:
        raise _Failure("unhashable set item") from None
    if len(out) != len(items):
        raise _Failure("duplicate set items")
    return out


_TAGGED: dict[str, Callable[[dict[str, Any]], Any]] = {
    "int": _dec_int,
    "float": _dec_float,
    "bytes": lambda node: bytes(_raw_bytes(node, "bytes")),
    "bytearray": lambda node: bytearray(_raw_bytes(node, "bytearray")),
    "ndarray": _dec_ndarray,
    "npscalar": _dec_npscalar,
    "datetime": lambda node: _dec_clock(node, dt.datetime, "datetime"),
    "date": lambda node: _dec_iso(node, dt.date, "date"),
    "time": lambda node: _dec_clock(node, dt.time, "time"),
    "timedelta": _dec_timedelta,
    "decimal": _dec_decimal,
    "uuid": _dec_uuid,
    "path": _dec_path,
}
_NESTED: dict[str, Callable[[dict[str, Any], int], Any]] = {
    "set": _dec_set,
    "frozenset": _dec_set,
    "enum": _dec_enum,
    "dataclass": _dec_dataclass,
}


def _dec_tagged(node: dict[str, Any], depth: int) -> Any:
    tag = node[TAG]
    if tag == "tuple":
        return tuple(_dec_list(_expect(node.get("items"), list, "tuple items"), depth))
    if tag == "dict":
        return _dec_pairs(node, depth)
    nested = _NESTED.get(tag) if type(tag) is str else None
    if nested is not None:
        return nested(node, depth)
    decode = _TAGGED.get(tag) if type(tag) is str else None
    if decode is None:
        raise _Failure(f"unknown tag {tag!r}")
    return decode(node)


def _dec_list(items: list[Any], depth: int) -> list[Any]:
    out = []
    for i, item in enumerate(items):
        try:
            out.append(_dec(item, depth))
        except _Failure as failure:
            failure.keys.append(f"[{i}]")
            raise
    return out


def _dec_dict(node: dict[str, Any], depth: int) -> dict[str, Any]:
    out = {}
    for key, item in node.items():
        try:
            out[key] = _dec(item, depth)
        except _Failure as failure:
            failure.keys.append(_key(key))
            raise
    return out


def _dec(node: Any, depth: int) -> Any:
    kind = type(node)
    if kind is list or kind is dict:
        if depth > MAX_DEPTH:
            raise _Failure("containers nested too deeply")
        if kind is list:
            return _dec_list(node, depth + 1)
        return _dec_tagged(node, depth + 1) if TAG in node else _dec_dict(node, depth + 1)
    return node


# -- the JSON text layer ----------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _stdlib_dumps(tree: Any) -> bytes:
    return json.dumps(tree, allow_nan=False, separators=(",", ":")).encode("ascii")


def _json_dumps(tree: Any, fast: bool) -> bytes:
    if fast and _orjson is not None:
        try:
            return _orjson.dumps(tree)
        except (TypeError, _orjson.JSONEncodeError):
            pass  # lone surrogates or deep nesting: the stdlib handles them
    return _stdlib_dumps(tree)


def _json_loads(data: bytes, fast: bool) -> Any:
    if fast and _orjson is not None and not _LONG_INT.search(data):
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass  # the stdlib decides, and reports, below
    return json.loads(data, parse_constant=_reject_constant)


def _padding(size: int) -> bytes:
    return bytes(-size % _ALIGN)


def _envelope(text: bytes, bufs: list[memoryview]) -> bytes:
    """The JSON skeleton and the raw buffers it refers to, in one allocation (the only
    copy of the buffers): ``<8s magic><u64 skeleton length><u64 count>``, the skeleton,
    ``count`` ``<u64>`` buffer sizes, then each buffer at an offset aligned to 64."""
    sizes = np.array([b.nbytes for b in bufs], dtype="<u8")
    parts: list[Any] = [_ENVELOPE.pack(RAW_MAGIC, len(text)), struct.pack("<Q", len(bufs)), text, sizes.data]
    pos = _ENVELOPE.size + 8 + len(text) + sizes.nbytes
    for i, buf in enumerate(bufs):
        parts.append(_padding(pos))
        pos += -pos % _ALIGN
        parts.append(buf)
        pos += buf.nbytes
    return b"".join(parts)


def _open_envelope(view: memoryview) -> tuple[memoryview, list[tuple[int, int]]]:
    """The skeleton of an envelope and the ``(offset, size)`` of each raw buffer, checked
    to fit ``view`` exactly; :class:`SerializationError` otherwise."""
    total = view.nbytes
    head = _ENVELOPE.size + 8
    if total < head:
        raise SerializationError("truncated raw-buffer envelope", "")
    _, length, count = struct.unpack_from("<8sQQ", view)
    if length > total - head or count > (total - head - length) // 8:
        raise SerializationError("malformed raw-buffer envelope (sizes past its end)", "")
    text = view[head:head + length]
    pos = head + length + 8 * count
    sizes = np.frombuffer(view, dtype="<u8", count=count, offset=head + length).tolist()
    spans = []
    for size in sizes:
        pos += -pos % _ALIGN
        if size > total - pos:
            raise SerializationError("malformed raw-buffer envelope (a buffer past its end)", "")
        spans.append((pos, size))
        pos += size
    if pos != total:
        raise SerializationError("malformed raw-buffer envelope (bytes after its buffers)", "")
    return text, spans


class JsonSerializer:
    """The default serializer: exact JSON round-trips or :class:`SerializationError`.

    See the module docstring for what is supported and how it is written.  ``fast``
    (default True) uses orjson when it is installed, only where it gives the same
    result as the standard library.
    """

    name = "json"

    def __init__(self, *, fast: bool = True) -> None:
        self.fast = fast

    def dumps(self, obj: Any) -> bytes:
        """UTF-8 JSON for ``obj``; :class:`SerializationError` naming the type and path
        of the first part that cannot round-trip exactly."""
        bufs: list[memoryview] = []
        outer, _raw.bufs = _raw.bufs, bufs
        try:
            tree = _enc(obj, 0)
        except _Failure as failure:
            raise failure.error() from None
        except RecursionError:
            raise SerializationError("nested too deeply to serialize") from None
        finally:
            _raw.bufs = outer
        text = _json_dumps(tree, self.fast)
        return _envelope(text, bufs) if bufs else text

    def loads(self, data: bytes | bytearray | memoryview) -> Any:
        """The value serialized in ``data``; :class:`SerializationError` if malformed."""
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
        spans: list[tuple[int, int]] = []
        text: bytes | memoryview = data if isinstance(data, bytes) else bytes(view)
        if view[:len(RAW_MAGIC)] == RAW_MAGIC:
            text, spans = _open_envelope(view)
        try:
            tree = _json_loads(bytes(text), self.fast)
        except (ValueError, TypeError, RecursionError) as exc:
            raise SerializationError(f"not valid JSON: {exc}", "") from None
        outer = _raw.view, _raw.spans, _raw.used
        _raw.view, _raw.spans, _raw.used = (view if spans else None), spans, set()
        try:
            value = _dec(tree, 0)
            if len(_raw.used) != len(spans):
                raise _Failure("raw buffers that no value uses")
            return value
        except _Failure as failure:
            raise failure.error() from None
        except RecursionError:
            raise SerializationError("nested too deeply to deserialize") from None
        finally:
            _raw.view, _raw.spans, _raw.used = outer

    def loads_many(self, items: list[bytes | bytearray | memoryview]) -> list[Any]:
        """:meth:`loads` of each item, parsed as one JSON array (a resume restores
        thousands of outputs: one parse instead of one per output)."""
        if any(bytes(item[:1]) == RAW_MAGIC[:1] for item in items):
            return [self.loads(item) for item in items]  # raw buffers: one envelope each
        try:
            trees = _json_loads(b"[" + b",".join(bytes(item) for item in items) + b"]", self.fast)
            if not isinstance(trees, list) or len(trees) != len(items):
                raise ValueError("items are not one JSON value each")
            return [_dec(tree, 0) for tree in trees]
        except (ValueError, TypeError, RecursionError, _Failure):
            return [self.loads(item) for item in items]  # the slow path names the bad one

    def __repr__(self) -> str:
        return f"JsonSerializer(fast={self.fast})"


class PickleSerializer:
    """Opt-in serializer for any picklable value (protocol 5).

    **Unsafe for untrusted stores**: unpickling runs code chosen by whoever wrote the
    bytes.  Use it only with stores that nobody else can write to.  Pickle keeps
    subclasses, sets and custom objects that :class:`JsonSerializer` refuses.
    """

    name = "pickle"

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def dumps(self, obj: Any) -> bytes:
        """Pickle ``obj``; :class:`SerializationError` if it cannot be pickled."""
        try:
            return pickle.dumps(obj, protocol=self.protocol)
        except RecursionError:
            raise SerializationError("nested too deeply to pickle") from None
        except Exception as exc:  # pickling calls arbitrary __reduce__ code
            raise SerializationError(f"cannot pickle {_type_name(obj)}: {exc}") from exc

    def loads(self, data: bytes | bytearray | memoryview) -> Any:
        """Unpickle ``data`` (see the class docstring: only from trusted stores)."""
        try:
            return pickle.loads(data)
        except Exception as exc:  # a damaged pickle can raise nearly anything
            raise SerializationError(f"cannot unpickle: {type(exc).__name__}: {exc}", "") from exc

    def __repr__(self) -> str:
        return f"PickleSerializer(protocol={self.protocol})"


_REGISTRY: dict[str, Callable[[], Serializer]] = {
    JsonSerializer.name: JsonSerializer,
    PickleSerializer.name: PickleSerializer,
}
_UNSAFE = {PickleSerializer.name}


def register_serializer(name: str, factory: Callable[[], Serializer], *, unsafe: bool = False) -> None:
    """Make ``factory()`` the serializer called ``name`` for :func:`get_serializer` (and so
    for the command line's ``--serializer`` and for resuming runs saved with it).

    ``unsafe`` marks a serializer whose loading can run code (as pickle's):
    :func:`get_serializer` then needs ``allow_pickle``.  Built-in names cannot be taken.
    """
    if not isinstance(name, str) or not name or name in (JsonSerializer.name, PickleSerializer.name):
        raise SerializationError(f"cannot register a serializer named {name!r}", "")
    _REGISTRY[name] = factory
    if unsafe:
        _UNSAFE.add(name)
    else:
        _UNSAFE.discard(name)


def serializer_names() -> list[str]:
    """The names :func:`get_serializer` knows, built-in ones first."""
    return list(_REGISTRY)


def get_serializer(name: str, *, allow_pickle: bool = False) -> Serializer:
    """The serializer called ``name``: ``"json"``, ``"pickle"`` (only with
    ``allow_pickle``) or one of :func:`register_serializer`; :class:`SerializationError`
    otherwise."""
    factory = _REGISTRY.get(name) if isinstance(name, str) else None
    if factory is None:
        raise SerializationError(f"unknown serializer {name!r} (known: {', '.join(_REGISTRY)})", "")
    if name in _UNSAFE and not allow_pickle:
        raise SerializationError(f"the {name} serializer is unsafe for untrusted stores; "
                                 "pass allow_pickle=True to use it", "")
    return factory()


def resume_serializer(recorded: str, given: Serializer | None = None) -> Serializer:
    """The serializer to read (and go on saving) a run saved with the one named ``recorded``.

    ``given`` (an explicit choice) must be that one.  Without it, the serializer of that
    name, unless it is unsafe for untrusted stores (pickle runs code stored in the run):
    a store that anyone else can write could then run code on the next resume, so such
    a run resumes only when its serializer is given explicitly (``serializer=
    PickleSerializer()``; on the command line ``--serializer pickle``).
    :class:`SerializationError` when ``given`` contradicts ``recorded``, when an unsafe
    serializer is not given explicitly, or when no serializer of that name is known.
    """
    if given is not None:
        if given.name != recorded:
            raise SerializationError(f"the run was saved with the {recorded!r} serializer, not {given.name!r}: "
                                     f"resume it with {recorded!r}, or without choosing one (the saved run "
                                     "says which)", "")
        return given
    if recorded in _UNSAFE:
        raise SerializationError(f"the run was saved with the {recorded!r} serializer, which runs code stored "
                                 f"in the run: resume it with that serializer given explicitly (serializer=..., "
                                 f"or --serializer {recorded} on the command line) only if you trust the store",
                                 "")
    try:
        return get_serializer(recorded)
    except SerializationError:
        raise SerializationError(f"the run was saved with the {recorded!r} serializer, which is not known "
                                 "here: pass it (serializer=...) or register it (register_serializer)", "") from None
