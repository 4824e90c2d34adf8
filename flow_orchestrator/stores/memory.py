"""An in-process store, for tests and runs that need no durability.

Where it sits: layer L4 (services, durability): loaded on first use of its class.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Sequence

from ..state import RunState
from .base import (
    RunInfo,
    RunLock,
    Store,
    _check_data,
    _taken,
    apply_transitions,
    check_records,
    check_run_id,
    copy_state,
    held,
    listed,
)
from .errors import RunLockedError, RunNotFoundError, StoreError

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Run states kept in a dict, deep-copied on the way in and out.

    Thread-safe; callers can never mutate a stored state.  Locks are per store object:
    a second :meth:`lock` of a held run (from any thread) raises :class:`RunLockedError`.
    """

    def __init__(self) -> None:
        self._states: dict[str, RunState] = {}
        self._locked: set[str] = set()
        self._mutex = threading.Lock()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def save(self, state: RunState) -> None:
        """Save a deep copy of ``state``."""
        check_run_id(state.run_id)
        copy = copy_state(state)
        with self._mutex:
            self._check_open()
            self._states[state.run_id] = copy

    def _get(self, run_id: str) -> RunState:
        self._check_open()
        try:
            return self._states[check_run_id(run_id)]
        except KeyError:
            raise RunNotFoundError(f"no run {run_id!r} in this store") from None

    def load(self, run_id: str) -> RunState:
        """A deep copy of the run's state."""
        with self._mutex:  # checkpoints change the stored state in place
            return copy_state(self._get(run_id))

    def exists(self, run_id: str) -> bool:
        """Whether the store holds the run."""
        with self._mutex:
            self._check_open()
            return check_run_id(run_id) in self._states

    def list_runs(self, workflow: str | None = None) -> list[RunInfo]:
        """The runs held, sorted by run id (a running one whose lock this store does not
        hold is crashed: the run ended without its final save)."""
        with self._mutex:
            self._check_open()
            states = sorted(self._states.values(), key=lambda s: s.run_id)
            locked = set(self._locked)
        return [listed(s.run_id, s.workflow, s.run_status, s.updated_at, s.run_id in locked)
                for s in states if workflow is None or s.workflow == workflow]

    def delete(self, run_id: str) -> None:
        """Forget the run."""
        with self._mutex:
            self._get(run_id)
            del self._states[run_id]

    def checkpoint(self, run_id: str, transitions: Iterable[Sequence[object]], data: bytes | None = None) -> None:
        """Apply the batch to the stored state at once."""
        records = _taken(transitions)
        _check_data(data)
        with self._mutex:
            state = self._get(run_id)
            apply_transitions(state, check_records(records, state.num_nodes))  # the store's own copy
            if data is not None:
                state.data = data
            state.updated_at = time.time()

    def _acquire(self, run_id: str) -> str:
        with self._mutex:
            self._check_open()
            if run_id in self._locked:
                raise RunLockedError(f"run {run_id!r} is locked")
            self._locked.add(run_id)
        return run_id

    def _release(self, run_id: str) -> None:
        with self._mutex:
            self._locked.discard(run_id)

    def lock(self, run_id: str) -> contextlib.AbstractContextManager[RunLock]:
        """Hold the run for exclusive use within this store object (a lock never lost)."""
        check_run_id(run_id)
        return held(run_id, lambda: self._acquire(run_id), self._release)

    def close(self) -> None:
        """Drop every state."""
        with self._mutex:
            self._closed = True
            self._states.clear()
