"""The engine's timer thread: retry back-offs and the runs' deadline checks, for every run.

One daemon thread per engine, started on first use, sleeps until the earliest due
entry of a heap.  Callbacks run on the timer thread and must be short (they re-queue
a node or time out attempts); one that raises is logged and does not stop the timer.
Waiting retries therefore hold no worker thread.

Entries can be cancelled (:meth:`Timer.cancel`): a cancelled entry is made inert at
once and reclaimed lazily, when it reaches the top of the heap or when inert entries
outnumber live ones (then the heap is rebuilt without them), so the heap holds O(live)
entries.  A run keeps at most one deadline entry here (its earliest attempt deadline;
the others wait in a heap of the run, in C) and cancels it when it ends.

Where it sits: layer L0 (foundations): the core calls it through the
``CallbackTimer`` protocol of ``_ext.pyi``; it imports nothing of the package.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

_log = logging.getLogger("flow_orchestrator.timer")

#: What :meth:`Timer.schedule` returns: the heap entry itself, ``[due, seq, fn, args]``;
#: ``fn`` is ``None`` once cancelled.
TimerHandle = list


class Timer:
    """Runs callbacks at ``time.monotonic()`` deadlines on one background thread."""

    def __init__(self, name: str = "flow-orchestrator-timer") -> None:
        self._name = name
        self._heap: list[list[Any]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closed = False
        self._inert = 0  # cancelled entries still in the heap

    def schedule(self, due: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """Call ``fn(*args)`` on the timer thread at monotonic time ``due``; return a
        handle for :meth:`cancel`.

        A bound method is held weakly: a deadline must not keep a finished run's state
        alive until it is due; if its object is gone by then, nothing is called.
        """
        if hasattr(fn, "__self__") and hasattr(fn, "__func__"):
            fn = weakref.WeakMethod(fn)  # type: ignore[assignment]
        entry = [due, next(self._seq), fn, args]
        with self._cond:
            if self._closed:
                entry[2] = None
                return entry
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            elif self._heap[0] is entry:
                self._cond.notify()
        return entry

    def cancel(self, handle: TimerHandle) -> None:
        """Make a scheduled call inert (no effect if it already ran or was cancelled)."""
        with self._cond:
            if handle[2] is None:
                return
            handle[2] = None
            handle[3] = ()
            self._inert += 1
            if self._inert > 64 and self._inert * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if entry[2] is not None]
                heapq.heapify(self._heap)
                self._inert = 0

    def pending(self) -> int:
        """Number of callbacks not yet run (cancelled ones excluded)."""
        with self._cond:
            return len(self._heap) - self._inert

    def entries(self) -> int:
        """Entries the heap holds, cancelled ones not yet reclaimed included."""
        with self._cond:
            return len(self._heap)

    def close(self) -> None:
        """Drop pending callbacks and stop the thread."""
        with self._cond:
            self._closed = True
            for entry in self._heap:
                entry[2] = None
            self._heap.clear()
            self._inert = 0
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                if self._closed:
                    return
                entry = heapq.heappop(self._heap)
                _, _, fn, args = entry
                if fn is None:
                    self._inert -= 1
                    continue
                entry[2] = None  # ran: a later cancel() is a no-op
            if isinstance(fn, weakref.WeakMethod):
                fn = fn()
                if fn is None:
                    continue
            try:
                fn(*args)
            except Exception:  # a callback must never kill the timer
                _log.exception("timer callback %r failed", fn)
