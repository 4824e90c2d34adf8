"""The engine's timer thread: retry back-offs and attempt deadlines, for every run.

One daemon thread per engine, started on first use, sleeps until the earliest due
entry of a heap.  Callbacks run on the timer thread and must be short (they re-queue
a node or mark it timed out); one that raises is logged and does not stop the timer.
Waiting retries therefore hold no worker thread.

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


class Timer:
    """Runs callbacks at ``time.monotonic()`` deadlines on one background thread."""

    def __init__(self, name: str = "flow-orchestrator-timer") -> None:
        self._name = name
        self._heap: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closed = False

    def schedule(self, due: float, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` on the timer thread at monotonic time ``due``.

        A bound method is held weakly: a deadline must not keep a finished run's state
        alive until it is due; if its object is gone by then, nothing is called.
        """
        if hasattr(fn, "__self__") and hasattr(fn, "__func__"):
            fn = weakref.WeakMethod(fn)  # type: ignore[assignment]
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._heap, (due, next(self._seq), fn, args))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            elif self._heap[0][0] == due:
                self._cond.notify()

    def pending(self) -> int:
        """Number of callbacks not yet run."""
        with self._cond:
            return len(self._heap)

    def close(self) -> None:
        """Drop pending callbacks and stop the thread."""
        with self._cond:
            self._closed = True
            self._heap.clear()
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
                _, _, entry, args = heapq.heappop(self._heap)
            fn = entry() if isinstance(entry, weakref.WeakMethod) else entry
            if fn is None:
                continue
            try:
                fn(*args)
            except Exception:  # a callback must never kill the timer
                _log.exception("timer callback %r failed", fn)
