"""Output serializers: exact round-trips or SerializationError, never a silent change."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import pathlib
import pickle
import random
import struct
import sys
import tracemalloc
import uuid
import warnings
import zoneinfo
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flow_orchestrator.errors import FlowError
from flow_orchestrator.serialization import (
    MAX_DEPTH,
    RAW_MAGIC,
    JsonSerializer,
    PickleSerializer,
    SerializationError,
    Serializer,
    get_serializer,
)

JSON = JsonSerializer()
STDLIB = JsonSerializer(fast=False)


# -- exact comparison ----------------------------------------------------------------------------


def _value_bytes(x: np.ndarray | np.generic) -> bytes:
    """The bytes that hold ``x``'s value.  x87 extended precision (``np.longdouble`` on
    x86) keeps 10 significant bytes in 12 or 16: the rest is padding whose content is
    undefined and may differ between equal values."""
    raw = np.asarray(x).tobytes()
    if x.dtype.kind in "fc" and np.finfo(x.dtype).nmant == 63:
        part = x.dtype.itemsize // (2 if x.dtype.kind == "c" else 1)
        return b"".join(raw[i:i + 10] for i in range(0, len(raw), part))
    return raw


def same(a: Any, b: Any) -> bool:
    """Equal in value, type and bits: floats by their bits, arrays by dtype, shape and bytes."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and _value_bytes(a) == _value_bytes(b)
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and _value_bytes(a) == _value_bytes(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(same(ka, kb) and same(va, vb)
                                        for (ka, va), (kb, vb) in zip(a.items(), b.items()))
    if isinstance(a, (set, frozenset)):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if isinstance(a, (dt.datetime, dt.time)):  # == compares instants: also the wall time, fold and zone
        return a.replace(tzinfo=None) == b.replace(tzinfo=None) and a.fold == b.fold and same_tz(a.tzinfo, b.tzinfo)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)  # NaN payloads, signed zeros, exponents
    if isinstance(a, uuid.UUID):
        return a == b and a.is_safe is b.is_safe
    if isinstance(a, enum.Enum):
        return a is b
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return a == b


def same_tz(a: dt.tzinfo | None, b: dt.tzinfo | None) -> bool:
    if a is None or b is None or isinstance(a, zoneinfo.ZoneInfo):
        return a is b  # a zone by key comes back as the same (cached) ZoneInfo
    return type(a) is type(b) and a.__getinitargs__() == b.__getinitargs__()  # offset and given name


# -- strategies ------------------------------------------------------------------------------------

any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
nan_bits = st.integers(0, 2**52 - 1).map(lambda m: struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000001 | m))[0])
floats = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, math.inf, -math.inf, 5e-324, 1e308]), nan_bits,
                   nan_bits.map(lambda x: -x))
ints = st.one_of(st.integers(), st.integers(-(2**70), 2**70),
                st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1]),
                st.sampled_from([1, -1]).map(lambda sign: sign * 10**5000))  # past str()'s digit limit
numeric_dtypes = st.one_of(
    hnp.boolean_dtypes(), hnp.integer_dtypes(endianness="="), hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?"), hnp.complex_number_dtypes(endianness="?"),
    hnp.datetime64_dtypes(endianness="?"), hnp.timedelta64_dtypes(endianness="?"),
)
arrays = st.one_of(
    hnp.arrays(numeric_dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    hnp.arrays(st.one_of(hnp.unicode_string_dtypes(), hnp.byte_string_dtypes()),
               hnp.array_shapes(min_dims=1, max_dims=2, max_side=3)),
)
np_scalars = hnp.from_dtype(np.dtype(np.float64), allow_nan=True) | \
    numeric_dtypes.flatmap(lambda d: hnp.arrays(d, ()).map(lambda a: a[()]))
hashable_leaves = st.one_of(st.none(), st.booleans(), ints, floats, any_text, st.binary(max_size=8))
leaves = st.one_of(hashable_leaves, st.binary(max_size=16).map(bytearray), arrays, np_scalars)
keys = st.one_of(hashable_leaves, st.tuples(hashable_leaves, hashable_leaves), st.just("$fo"))


def containers(children):
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(any_text | st.just("$fo"), children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
    )


class Color(enum.IntEnum):
    RED = 1
    GREEN = 2


class Shape(enum.Enum):
    SQUARE = (4, "sides")
    CIRCLE = "round"


class Perm(enum.Flag):
    R = 1
    W = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: Any
    y: Any = None
    tag: str = dataclasses.field(init=False, default="pt")


@dataclasses.dataclass(slots=True)
class Box:
    items: Any


utc_offsets = st.timedeltas(min_value=-dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999999),
                            max_value=dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999999))
time_zones = st.one_of(
    st.none(), st.just(dt.timezone.utc), utc_offsets.map(dt.timezone),
    st.tuples(utc_offsets, st.text(max_size=5)).map(lambda p: dt.timezone(*p)),
    st.sampled_from(["Europe/Paris", "America/New_York", "Asia/Kolkata", "UTC"]).map(zoneinfo.ZoneInfo),
)
folds = st.sampled_from([0, 1])
stdlib_leaves = st.one_of(
    st.tuples(st.datetimes(), time_zones, folds).map(lambda p: p[0].replace(tzinfo=p[1], fold=p[2])),
    st.dates(), st.tuples(st.times(), time_zones, folds).map(lambda p: p[0].replace(tzinfo=p[1], fold=p[2])),
    st.timedeltas(), st.decimals(allow_nan=True, allow_infinity=True), st.decimals(places=3),
    st.sampled_from([decimal.Decimal("-0"), decimal.Decimal("sNaN7"), decimal.Decimal("-NaN"),
                     decimal.Decimal("1E+999999"), decimal.Decimal("0.000")]),
    st.uuids(), st.builds(uuid.UUID, st.uuids().map(str), is_safe=st.sampled_from(list(uuid.SafeUUID))),
    st.text(max_size=8).map(pathlib.PurePosixPath), st.text(max_size=8).map(pathlib.PureWindowsPath),
    st.text(max_size=8).filter(lambda t: "\x00" not in t).map(pathlib.Path),
    st.sampled_from([*Color, *Shape, Perm.R, Perm.R | Perm.W, Perm(0)]),
)
hashable_stdlib = st.one_of(hashable_leaves, stdlib_leaves.filter(
    lambda v: not (isinstance(v, decimal.Decimal) and v.is_snan())))  # a signaling NaN cannot be hashed


def stdlib_containers(children):
    return st.one_of(
        containers(children),
        st.sets(hashable_stdlib, max_size=4), st.frozensets(hashable_stdlib, max_size=4),
        st.builds(Point, children, children), st.builds(Box, children),
        st.dictionaries(hashable_stdlib, children, max_size=3),
    )


values = st.recursive(leaves, containers, max_leaves=25)
stdlib_values = st.recursive(st.one_of(leaves, stdlib_leaves), stdlib_containers, max_leaves=25)


with warnings.catch_warnings():
    warnings.simplefilter("ignore", PendingDeprecationWarning)
    MATRIX = np.matrix([[1, 2]])


class OddZone(dt.tzinfo):
    """A time zone that is neither datetime.timezone nor a ZoneInfo (as pytz's and dateutil's)."""

    def utcoffset(self, when: Any) -> dt.timedelta:
        return dt.timedelta(hours=1)


def _local_classes() -> tuple[Any, Any]:
    class Local(enum.Enum):
        A = 1

    @dataclasses.dataclass
    class LocalData:
        a: int = 1
    return Local.A, LocalData()


LOCAL_ENUM, LOCAL_DATA = _local_classes()

unsupported = st.one_of(
    st.sets(st.just(object()), min_size=1, max_size=1), st.just(object()),
    st.just(LOCAL_ENUM), st.just(LOCAL_DATA), st.just(OrderedDict(a=1)), st.just(np.array([object()], dtype=object)),
    st.just(MATRIX), st.just(np.zeros(2, dtype=[("a", "<i4")])), st.just(np.longlong(3)),
    st.just(np.str_("x")), st.just(1 + 2j), st.just(range(3)), st.just(type),
)
maybe_unsupported = st.recursive(st.one_of(leaves, unsupported), containers, max_leaves=20)


# -- properties ------------------------------------------------------------------------------------


@given(values)
def test_supported_values_round_trip_exactly(value):
    for serializer in (JSON, STDLIB):
        data = serializer.dumps(value)
        assert isinstance(data, bytes)
        assert same(serializer.loads(data), value)


@given(values)
def test_orjson_and_stdlib_paths_agree(value):
    fast, slow = JSON.dumps(value), STDLIB.dumps(value)
    for data in (fast, slow):
        assert same(JSON.loads(data), value) and same(STDLIB.loads(data), value)
    assert json.loads(fast) == json.loads(slow)  # the same JSON tree, written two ways


@given(maybe_unsupported)
def test_any_value_round_trips_or_raises_serialization_error(value):
    try:
        data = JSON.dumps(value)
    except SerializationError as exc:
        assert str(exc).startswith("value")
        return
    assert same(JSON.loads(data), value)


@settings(max_examples=300)
@given(values, st.data())
def test_damaged_bytes_load_or_raise_serialization_error(value, data):
    raw = bytearray(JSON.dumps(value))
    for _ in range(data.draw(st.integers(1, 4))):
        if not raw:
            break
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(0, len(raw)))]
    for serializer in (JSON, STDLIB):
        try:
            serializer.loads(bytes(raw))
        except SerializationError:
            pass


@given(st.binary(max_size=64))
def test_random_bytes_load_or_raise_serialization_error(raw):
    for serializer in (JSON, STDLIB):
        try:
            serializer.loads(raw)
        except SerializationError:
            pass


# -- specific values -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    2**64, -(2**64) - 1, 10**5000, 0.1, -0.0, math.nan, -math.nan, math.inf, -math.inf, b"\x00\xff",
    bytearray(b"ab"), (1, [2, (3,)]), [(), []], {1: "a", (2, 3): b"x", None: 0.5, 2.5: True},
    {"$fo": "bytes", "b64": ""}, {"a": {"$fo": 1}}, "\ud800", "é\x00\n",
    np.arange(6, dtype=">i4").reshape(2, 3), np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    np.array(3.5), np.zeros((0, 3)), np.array([np.nan, -0.0], dtype="<f2"), np.array(["ab", "c"]),
    np.array([b"a\x00"], dtype="S2"), np.array(["2020-01-01"], dtype="M8[D]"), np.array([1 + 2j], dtype=">c8"),
    np.float32(1.25), np.int64(-7), np.uint64(2**64 - 1), np.bool_(True), np.datetime64("NaT"),
    np.timedelta64(5, "ms"), np.float64(math.nan), np.longdouble(1) / 3,
], ids=lambda value: type(value).__name__)
def test_known_values_round_trip(value):
    for serializer in (JSON, STDLIB):
        assert same(serializer.loads(serializer.dumps(value)), value)


def test_nan_payload_bits_are_kept():
    weird = struct.unpack("<d", struct.pack("<Q", 0xFFF8_0000_DEAD_BEEF))[0]
    back = JSON.loads(JSON.dumps([weird]))[0]
    assert struct.pack("<d", back) == struct.pack("<d", weird)


def test_plain_json_stays_plain():
    value = {"a": [1, 2.5, None, True, "x"], "b": {"c": -3}}
    assert json.loads(JSON.dumps(value)) == value
    assert JSON.dumps(7) == b"7" and STDLIB.dumps("é") == b'"\\u00e9"'


def test_big_integers_in_foreign_json_are_exact():
    # orjson would read this as a float: the fast path must leave it to the stdlib
    assert JSON.loads(b"[123456789012345678901234567890]") == [123456789012345678901234567890]


@pytest.mark.parametrize("value, path, what", [
    ({"a": [1, {2: {3, 4, 5j}}]}, "value['a'][1][2][<set item 5j>]", "complex"),
    ([OrderedDict()], "value[0]", "collections.OrderedDict"),
    ((1, LOCAL_ENUM), "value[1]", "_local_classes.<locals>.Local is a local class"),
    ([Point(1, LOCAL_DATA)], "value[0].y", "LocalData is a local class"),
    (Box([dt.datetime(2020, 1, 1, tzinfo=OddZone())]), "value.items[0]", "OddZone cannot be serialized"),
    ({(1, 2): object()}, "value[(1, 2)]", "object"),
    ({"x": np.array([None])}, "value['x']", "dtype object"),
    (np.longlong(1), "value", "longlong"),
])
def test_errors_name_the_type_and_the_path(value, path, what):
    with pytest.raises(SerializationError) as info:
        JSON.dumps(value)
    assert str(info.value).startswith(path + ":") and what in str(info.value)
    assert info.value.path == path and isinstance(info.value, FlowError)


def test_path_of_a_key_whose_repr_fails():
    with pytest.raises(SerializationError, match=r"^value\[<int>\]: objects of type object"):
        JSON.dumps({10**5000: object()})


def test_depth_limit_and_cycles():
    deep: Any = 1
    for _ in range(MAX_DEPTH):
        deep = [deep]
    assert JSON.loads(JSON.dumps(deep)) == deep
    with pytest.raises(SerializationError, match="deeper"):
        JSON.dumps([deep])
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(SerializationError, match="cycle"):
        JSON.dumps(cyclic)
    with pytest.raises(SerializationError):
        JSON.loads(b"[" * 5000 + b"]" * 5000)


@pytest.mark.parametrize("raw", [
    b"", b"nan", b"NaN", b"[1,", b'{"$fo": "what"}', b'{"$fo": "bytes", "b64": "!!"}',
    b'{"$fo": "int", "hex": "12"}', b'{"$fo": "float", "bits": "zz"}', b'{"$fo": 3}',
    b'{"$fo": "ndarray", "dtype": "|O", "shape": [1], "b64": "AAAAAAAAAAA="}',
    b'{"$fo": "ndarray", "dtype": "<i4", "shape": [3], "b64": "AAAAAA=="}',
    b'{"$fo": "ndarray", "dtype": "<i4", "shape": [-1], "b64": ""}',
    b'{"$fo": "ndarray", "dtype": "<i4", "shape": [true], "b64": "AAAAAA=="}',
    b'{"$fo": "ndarray", "dtype": "V8", "shape": [1], "b64": "AAAAAAAAAAA="}',
    b'{"$fo": "npscalar", "dtype": "<i4", "b64": "AA=="}', b'{"$fo": "dict", "items": [[1]]}',
    b'{"$fo": "dict", "items": [[[1], 2]]}', b'{"$fo": "dict", "items": [[1, 2], [1, 3]]}',
    b'{"$fo": "tuple", "items": {}}', b"\xff\xfe",
])
def test_malformed_input_raises_serialization_error(raw):
    for serializer in (JSON, STDLIB):
        with pytest.raises(SerializationError):
            serializer.loads(raw)


# -- pickle and the registry -----------------------------------------------------------------------


def test_pickle_serializer_round_trips_and_fails_loudly():
    ser = PickleSerializer()
    value = {frozenset({1}): OrderedDict(a=Color.RED), "arr": np.arange(3)}
    back = ser.loads(ser.dumps(value))
    assert back[frozenset({1})] == value[frozenset({1})] and np.array_equal(back["arr"], value["arr"])
    with pytest.raises(SerializationError, match="cannot pickle"):
        ser.dumps(lambda: None)
    with pytest.raises(SerializationError, match="cannot unpickle"):
        ser.loads(b"\x80\x05garbage")
    assert "unsafe" in PickleSerializer.__doc__.lower() and "untrusted" in PickleSerializer.__doc__


def test_registry_and_protocol():
    assert isinstance(JSON, Serializer) and isinstance(PickleSerializer(), Serializer)
    assert get_serializer("json").name == "json"
    with pytest.raises(SerializationError, match="allow_pickle"):
        get_serializer("pickle")
    assert get_serializer("pickle", allow_pickle=True).name == "pickle"
    with pytest.raises(SerializationError, match="unknown"):
        get_serializer("yaml")


def test_serializers_are_picklable():
    # for process executors and stores that hand serializers to worker processes
    assert pickle.loads(pickle.dumps(JSON)).fast is True
    assert sys.getrecursionlimit() > 2 * MAX_DEPTH


def test_loads_many_equals_loads_of_each():
    ser = JsonSerializer()
    values = [1, 2.5, float("inf"), b"\x00raw", (1, [2, {"k": None}]), {3: "int key"}, 2 ** 80, "text"]
    blobs = [ser.dumps(v) for v in values]
    many = ser.loads_many(blobs)
    assert [repr(v) for v in many] == [repr(v) for v in values]
    assert ser.loads_many([]) == []


def test_loads_many_reports_the_bad_item():
    ser = JsonSerializer()
    with pytest.raises(SerializationError):
        ser.loads_many([ser.dumps(1), b"{not json", ser.dumps(2)])


# -- standard library types (datetime, Decimal, UUID, paths, sets, enums, dataclasses) --------------


@settings(max_examples=300)
@given(stdlib_values)
def test_stdlib_values_round_trip_exactly_with_their_types(value):
    for serializer in (JSON, STDLIB):
        assert same(serializer.loads(serializer.dumps(value)), value)


@given(stdlib_values)
def test_stdlib_values_orjson_and_stdlib_agree_and_sets_are_deterministic(value):
    fast, slow = JSON.dumps(value), STDLIB.dumps(value)
    assert json.loads(fast) == json.loads(slow)
    assert same(JSON.loads(slow), value) and same(STDLIB.loads(fast), value)
    assert JSON.dumps(JSON.loads(fast)) == fast  # sets are written in one order, whatever their own


@pytest.mark.parametrize("value", [
    dt.datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("America/New_York")),
    dt.datetime(2020, 2, 29, 23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")),
    dt.datetime(1, 1, 1), dt.datetime.max.replace(tzinfo=dt.timezone.utc), dt.date(2024, 2, 29),
    dt.time(0, 0, tzinfo=dt.timezone(-dt.timedelta(microseconds=1))), dt.timedelta(-1, 1, 1), dt.timedelta.max,
    decimal.Decimal("-0.000"), decimal.Decimal("sNaN123"), decimal.Decimal("-Infinity"),
    decimal.Decimal("1234567890.123456789012345678901234567890"),
    uuid.UUID(int=0), uuid.UUID("12345678-1234-5678-1234-567812345678", is_safe=uuid.SafeUUID.safe),
    {1, 2.5, "x", (1, b"y"), None}, frozenset({frozenset(), frozenset({1})}), set(),
    pathlib.PurePosixPath("/etc/x"), pathlib.PureWindowsPath("C:\\Users\\x"), pathlib.Path("a/b"),
    Color.GREEN, Shape.SQUARE, Perm.R | Perm.W, Perm(0),
    Point(dt.date(2020, 1, 1), {Shape.CIRCLE}), Box(Box([Point(1)])),
    {Color.RED: {dt.timedelta(1): Point((1, 2))}},
], ids=lambda value: type(value).__name__)
def test_known_stdlib_values_round_trip(value):
    for serializer in (JSON, STDLIB):
        back = serializer.loads(serializer.dumps(value))
        assert same(back, value) and type(back) is type(value)


def test_time_zones_come_back_as_the_same_objects():
    utc = JSON.loads(JSON.dumps(dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)))
    paris = JSON.loads(JSON.dumps(dt.datetime(2020, 1, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))))
    assert utc.tzinfo is dt.timezone.utc and paris.tzinfo is zoneinfo.ZoneInfo("Europe/Paris")


def test_sets_are_written_in_a_deterministic_order():
    assert JSON.dumps({"b", "a", "c"}) == b'{"$fo":"set","items":["a","b","c"]}'
    assert JSON.dumps(frozenset(range(50))) == JSON.dumps(frozenset(reversed(range(50))))


def test_dataclasses_are_read_back_without_running_init():
    @dataclasses.dataclass
    class Never:  # local: refused; the check below uses a module-level one
        x: int
    assert JSON.loads(JSON.dumps(Point(1))).tag == "pt"
    with pytest.raises(SerializationError, match=r"^value: .*Never is a local class"):
        JSON.dumps(Never(1))


def test_dataclass_attributes_that_are_not_fields_are_refused():
    point = Point(1)
    object.__setattr__(point, "cache", 2)
    with pytest.raises(SerializationError, match="not fields .*cache"):
        JSON.dumps(point)


def test_unimported_modules_are_never_imported_on_load():
    raw = b'{"$fo": "enum", "class": "antigravity:X", "value": 1}'
    with pytest.raises(SerializationError, match="not imported"):
        JSON.loads(raw)
    assert "antigravity" not in sys.modules


@pytest.mark.parametrize("raw", [
    b'{"$fo": "datetime", "iso": "2020-13-01T00:00:00", "fold": 0, "tz": null}',
    b'{"$fo": "datetime", "iso": "2020-01-01T00:00:00+01:00", "fold": 0, "tz": null}',
    b'{"$fo": "datetime", "iso": "2020-01-01T00:00:00", "fold": 2, "tz": null}',
    b'{"$fo": "datetime", "iso": "2020-01-01T00:00:00", "fold": 0, "tz": {"zone": "No/Where"}}',
    b'{"$fo": "datetime", "iso": "2020-01-01T00:00:00", "fold": 0, "tz": {"zone": "../../etc/passwd"}}',
    b'{"$fo": "datetime", "iso": "2020-01-01T00:00:00", "fold": 0, "tz": {"offset": [1, 0, 0]}}',
    b'{"$fo": "datetime", "iso": "2020-01-01T00:00:00", "fold": 0, "tz": "cet"}',
    b'{"$fo": "date", "iso": 5}', b'{"$fo": "time", "iso": "25:00"}',
    b'{"$fo": "timedelta", "dsu": [0, 86400, 0]}', b'{"$fo": "timedelta", "dsu": [1000000000, 0, 0]}',
    b'{"$fo": "decimal", "str": "1.2.3"}', b'{"$fo": "uuid", "hex": "xyz"}',
    b'{"$fo": "uuid", "hex": "00000000000000000000000000000000", "safe": "maybe"}',
    b'{"$fo": "path", "kind": "Path", "str": "x"}', b'{"$fo": "path", "kind": "WindowsPath", "str": "x"}',
    b'{"$fo": "set", "items": [1, 1]}', b'{"$fo": "frozenset", "items": [[1]]}',
    b'{"$fo": "enum", "class": "{MOD}:Color", "value": 7}'.replace(b'{MOD}', __name__.encode()),
    b'{"$fo": "enum", "class": "{MOD}:Point", "value": 1}'.replace(b'{MOD}', __name__.encode()),
    b'{"$fo": "enum", "class": "Color", "value": 1}',
    b'{"$fo": "dataclass", "class": "{MOD}:Point", "fields": {"x": 1}}'.replace(b'{MOD}', __name__.encode()),
    b'{"$fo": "dataclass", "class": "{MOD}:Color", "fields": {}}'.replace(b'{MOD}', __name__.encode()),
])
def test_malformed_stdlib_values_raise_serialization_error(raw):
    for serializer in (JSON, STDLIB):
        with pytest.raises(SerializationError):
            serializer.loads(raw)


def test_large_arrays_and_bytes_are_raw_buffers_made_with_one_copy():
    """Arrays and bytes of RAW_MIN bytes or more follow a JSON skeleton as raw buffers: no
    base64, one copy of the data while writing, exact (and writable) on reading."""
    serializer = JsonSerializer()
    array = np.arange(2**20, dtype="<f8").reshape(1024, 1024)
    value = {"array": array, "blob": bytes(range(256)) * 64, "small": b"ab", "view": array[:, ::2]}
    tracemalloc.start()
    try:
        data = serializer.dumps(value)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    raw = array.nbytes + 64 * 256 + array.nbytes // 2
    assert data[:len(RAW_MAGIC)] == RAW_MAGIC and raw < len(data) < raw + 1024
    assert peak < len(data) + array.nbytes // 2 + 2**16  # the output, and the strided view's C copy
    back = serializer.loads(data)
    assert back["array"].dtype == array.dtype and np.array_equal(back["array"], array)
    assert np.array_equal(back["view"], array[:, ::2]) and back["view"].flags.c_contiguous
    assert back["blob"] == value["blob"] and back["small"] == b"ab" and back["array"].flags.writeable
    assert serializer.loads_many([data, b"1"])[1] == 1
    assert serializer.dumps(np.zeros(4)).startswith(b"{")  # small: plain tagged JSON, as before


def test_damaged_raw_buffer_envelopes_raise_serialization_error():
    """Any cut or bit flip of an envelope loads a value or raises SerializationError."""
    serializer = JsonSerializer()
    data = serializer.dumps([np.arange(1000, dtype=np.int64), b"x" * 5000])
    rng = random.Random(7)
    for _ in range(300):
        damaged = bytearray(data[:rng.randrange(len(data) + 1)] if rng.random() < 0.3 else data)
        if damaged:
            damaged[rng.randrange(min(len(damaged), 200))] ^= 1 << rng.randrange(8)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # numpy on a damaged dtype name
                serializer.loads(bytes(damaged))
        except SerializationError:
            pass
    for forged in (data.replace(b'"buf":1', b'"buf":0'), data.replace(b'"buf":1', b'"buf":2')):
        with pytest.raises(SerializationError, match="raw buffer"):
            serializer.loads(forged)
