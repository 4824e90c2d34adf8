"""WorkflowData: the thread-safe key-value data shared by the nodes of one run.

Where it sits: layer L0 (foundations).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, TypeVar

from .errors import FlowError

__all__ = ["WorkflowData", "DataTypeError", "MissingDataError"]

T = TypeVar("T")
_MISSING: Any = object()


class DataTypeError(FlowError, TypeError):
    """A typed getter found a value of another type."""


class MissingDataError(FlowError, KeyError):
    """A key is not in the workflow data and no default was given."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WorkflowData(MutableMapping[str, Any]):
    """Shared key-value data of a run, safe to read and write from any thread.

    Single reads and writes are atomic; :meth:`update_with` and :meth:`increment` make
    read-modify-write atomic too.  :meth:`snapshot` and :meth:`restore` give a deep
    copy for saving and resuming runs.  Typed getters (:meth:`get_int`, ...) raise
    :class:`DataTypeError` instead of handing back a value of the wrong type.
    """

    __slots__ = ("_items", "_lock", "_version")

    def __init__(self, initial: Mapping[str, Any] | None = None, /, **items: Any) -> None:
        self._lock = threading.RLock()
        self._version = 0
        self._items: dict[str, Any] = dict(initial) if initial else {}
        if items:
            self._items.update(items)

    # -- mapping protocol ----------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        try:
            return self._items[key]
        except KeyError:
            raise MissingDataError(f"no workflow data under {key!r}") from None

    def __setitem__(self, key: str, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._version += 1

    def __delitem__(self, key: str) -> None:
        with self._lock:
            try:
                del self._items[key]
            except KeyError:
                raise MissingDataError(f"no workflow data under {key!r}") from None
            self._version += 1

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __repr__(self) -> str:
        with self._lock:
            return f"WorkflowData({self._items!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles a consistent copy (for process executors and stores); the lock is new.
        with self._lock:
            return (WorkflowData, (dict(self._items),))

    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default``."""
        return self._items.get(key, default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        """Atomically: the value under ``key``, storing ``default`` first if it is absent."""
        with self._lock:
            if key not in self._items:
                self._version += 1
            return self._items.setdefault(key, default)

    # -- atomic read-modify-write -----------------------------------------------------

    def update_with(self, key: str, fn: Any, default: Any = _MISSING) -> Any:
        """Atomically replace the value under ``key`` by ``fn(value)``; return the new value."""
        with self._lock:
            if key in self._items:
                value = self._items[key]
            elif default is not _MISSING:
                value = default
            else:
                raise MissingDataError(f"no workflow data under {key!r}")
            new = fn(value)
            self._items[key] = new
            self._version += 1
            return new

    def increment(self, key: str, by: int | float = 1) -> int | float:
        """Atomically add ``by`` to the number under ``key`` (0 if absent); return it."""
        return self.update_with(key, lambda v: v + by, 0)

    # -- typed getters --------------------------------------------------------------------

    def get_typed(self, key: str, kind: type[T] | tuple[type, ...], default: Any = _MISSING) -> T:
        """The value under ``key``, checked to be an instance of ``kind``."""
        value = self._items.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise MissingDataError(f"no workflow data under {key!r}")
            return default
        if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
            name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise DataTypeError(f"workflow data {key!r} is {type(value).__name__}, not {name}")
        return value  # type: ignore[return-value]

    def get_int(self, key: str, default: Any = _MISSING) -> int:
        """The ``int`` under ``key`` (``bool`` is refused)."""
        return self.get_typed(key, int, default)

    def get_float(self, key: str, default: Any = _MISSING) -> float:
        """The number under ``key`` as a ``float`` (ints accepted, ``bool`` refused)."""
        if key not in self._items and default is not _MISSING:
            return default
        value: float = self.get_typed(key, (int, float))
        if isinstance(value, bool):
            raise DataTypeError(f"workflow data {key!r} is bool, not float")
        return float(value)

    def get_str(self, key: str, default: Any = _MISSING) -> str:
        """The ``str`` under ``key``."""
        return self.get_typed(key, str, default)

    def get_bool(self, key: str, default: Any = _MISSING) -> bool:
        """The ``bool`` under ``key``."""
        return self.get_typed(key, bool, default)

    def get_list(self, key: str, default: Any = _MISSING) -> list[Any]:
        """The ``list`` under ``key``."""
        return self.get_typed(key, list, default)

    def get_dict(self, key: str, default: Any = _MISSING) -> dict[str, Any]:
        """The ``dict`` under ``key``."""
        return self.get_typed(key, dict, default)

    # -- snapshot / restore ------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of every item, taken atomically."""
        with self._lock:
            return copy.deepcopy(self._items)

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Replace every item by a deep copy of ``snapshot``, atomically."""
        items = copy.deepcopy(dict(snapshot))
        with self._lock:
            self._items = items
            self._version += 1

    @property
    def version(self) -> int:
        """A counter that every change increments: savers skip data that did not change.

        A value changed in place (``data["list"].append(x)``) is not a change of the
        data; store the value again (or use :meth:`update_with`) for it to count.
        """
        return self._version
