"""Progress of long runs: a tqdm bar per run, or plain log lines.

:class:`ProgressObserver` is an :class:`~flow_orchestrator.observers.Observer`; give it
to an engine or to one run::

    engine.run(workflow, observers=[ProgressObserver(total=len(workflow))])

A node counts as done when it reaches a terminal status (completed, failed, skipped,
cancelled or timed out); failed and timed-out nodes also count as failed.

* With tqdm (``pip install flow-orchestrator[progress]``) each run gets a bar, written
  to ``file`` (tqdm's default: ``sys.stderr``) and closed when the run ends.
* Without it, or with ``use_tqdm=False``, on a terminal (``file``, by default
  ``sys.stderr``, is a TTY) or with ``line=True``: a plain progress line,
  ``workflow 'etl' run R: done/total nodes (failed f)``, rewritten in place (``\r``) on a
  terminal at most every ``interval`` seconds (one line each time elsewhere), then a last
  line with the outcome when the run ends.
* Otherwise (not a terminal, or ``line=False``) each run logs that line at INFO on the
  logger ``flow_orchestrator.progress`` at most every ``interval`` seconds, and a last
  line with the outcome.  The library configures no handler: nothing shows unless the
  application sets up logging, so a program whose output is not a terminal stays quiet.

The hooks are thread-safe: one observer may follow many runs at once.

Where it sits: layer L6 (interfaces): an observer for people watching a run.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from .observers import NodeEvent, Observer, RunEvent

__all__ = ["ProgressObserver"]

_log = logging.getLogger("flow_orchestrator.progress")
_PROGRESS = "workflow %r run %s: %d/%s nodes (failed %d)"


def _tqdm_class(use_tqdm: bool | None) -> Any:
    """tqdm's class, or None for the logging fallback."""
    if use_tqdm is False:
        return None
    try:
        from tqdm import tqdm
    except ImportError as exc:
        if use_tqdm:
            raise ImportError("ProgressObserver(use_tqdm=True) needs tqdm: "
                              "pip install 'flow-orchestrator[progress]'") from exc
        return None
    return tqdm


class _RunProgress:
    """The counts of one run, and its bar (tqdm) or when it last logged (fallback)."""

    __slots__ = ("total", "done", "failed", "bar", "last_log")

    def __init__(self, total: int | None, bar: Any, done: int = 0) -> None:
        self.total = total
        self.done = done
        self.failed = 0
        self.bar = bar
        self.last_log = time.monotonic()


class ProgressObserver(Observer):
    """Shows how many nodes of each run are done, with tqdm or with log lines.

    Args:
        total: nodes per run, when known (observers are not told the size of a run
            before it ends); ``None`` shows counts without a total until the end.
        use_tqdm: ``True`` to require tqdm, ``False`` to log, ``None`` (default) for
            tqdm when it is installed.
        logger: where the fallback logs (default ``flow_orchestrator.progress``).
        interval: seconds between two log lines of a run; also tqdm's ``mininterval``
            unless ``bar_options`` sets it.
        file: where tqdm, or the plain line, writes (default: ``sys.stderr``).
        bar_options: more keyword arguments for ``tqdm(...)`` (``leave``, ``ncols``...);
            the plain line honours ``initial`` (nodes done already, as a resume has).
        line: without tqdm, ``True`` for the plain progress line even when ``file`` is
            not a terminal, ``False`` for log lines even on one; ``None`` (default): the
            plain line on a terminal, else log lines.
    """

    def __init__(self, total: int | None = None, use_tqdm: bool | None = None,
                 logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
                 interval: float = 1.0, file: IO[str] | None = None,
                 bar_options: Mapping[str, Any] | None = None, line: bool | None = None) -> None:
        if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 1):
            raise ValueError(f"total must be None or an int >= 1, got {total!r}")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) \
                or math.isnan(interval) or interval < 0:
            raise ValueError(f"interval must be a number of seconds >= 0, got {interval!r}")
        self.total = total
        self.interval = float(interval)
        self._tqdm = _tqdm_class(use_tqdm)
        self._logger = logger if logger is not None else _log
        self._bar_options = {"mininterval": self.interval, "file": file, "unit": "node",
                             **(bar_options or {})}
        self._file = file
        self._tty = _isatty(file if file is not None else sys.stderr)
        self._line = self._tqdm is None and (self._tty if line is None else bool(line))
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], _RunProgress] = {}

    @property
    def uses_tqdm(self) -> bool:
        """Whether runs get a tqdm bar (else a plain line, or log lines)."""
        return self._tqdm is not None

    @property
    def uses_line(self) -> bool:
        """Whether runs get the plain progress line (no tqdm; a terminal, or ``line=True``)."""
        return self._line

    def on_workflow_start(self, event: RunEvent) -> None:
        """Start following a run (and open its bar)."""
        bar = None
        if self._tqdm is not None:
            bar = self._tqdm(total=self.total, desc=f"{event.workflow} {event.run_id}", **self._bar_options)
        initial = int(self._bar_options.get("initial") or 0) if self._line else 0
        with self._lock:
            self._runs[(event.workflow, event.run_id)] = _RunProgress(self.total, bar, initial)

    def on_workflow_finish(self, event: RunEvent) -> None:
        """Close the run's bar, or log its last line."""
        with self._lock:
            run = self._runs.pop((event.workflow, event.run_id), None)
        if run is None or event.result is None:
            return
        result = event.result
        total = len(result.statuses)
        if run.bar is not None:
            run.bar.total = total
            run.bar.set_description_str(f"{event.workflow} {event.run_id} {result.status}", refresh=False)
            run.bar.close()
        elif self._line:
            self._write(_PROGRESS % (event.workflow, event.run_id, run.done, total, run.failed)
                        + f", {result.status} in {result.wall_seconds:.3f} s", last=True)
        else:
            self._logger.info(_PROGRESS + ", %s in %.3f s", event.workflow, event.run_id, run.done,
                              total, run.failed, result.status, result.wall_seconds)

    def on_node_success(self, event: NodeEvent) -> None:
        """One more node done."""
        self._advance(event, failed=False)

    def on_node_failure(self, event: NodeEvent) -> None:
        """One more node done, and failed."""
        self._advance(event, failed=True)

    def on_node_timeout(self, event: NodeEvent) -> None:
        """One more node done, and failed."""
        self._advance(event, failed=True)

    def on_node_skip(self, event: NodeEvent) -> None:
        """One more node done."""
        self._advance(event, failed=False)

    def on_node_cancel(self, event: NodeEvent) -> None:
        """One more node done."""
        self._advance(event, failed=False)

    def _advance(self, event: NodeEvent, failed: bool) -> None:
        with self._lock:
            run = self._runs.get((event.workflow, event.run_id))
            if run is None:
                return
            run.done += 1
            run.failed += failed
            if run.bar is not None:
                _advance_bar(run, failed)
                return
            now = time.monotonic()
            if now - run.last_log < self.interval:
                return
            run.last_log = now
            line = (event.workflow, event.run_id, run.done, "?" if run.total is None else run.total, run.failed)
            if self._line:  # under the lock: lines of concurrent runs do not mix characters
                self._write(_PROGRESS % line, last=False)
                return
        self._logger.info(_PROGRESS, *line)

    def _write(self, text: str, last: bool) -> None:
        """The plain line: rewritten in place on a terminal, one line each time elsewhere."""
        stream = self._file if self._file is not None else sys.stderr
        try:
            if self._tty:
                stream.write(f"\r{text}\x1b[K" + ("\n" if last else ""))
            else:
                stream.write(text + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream must not fail the run
            pass


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def _advance_bar(run: _RunProgress, failed: bool) -> None:
    if failed:
        run.bar.set_postfix_str(f"failed={run.failed}", refresh=False)
    run.bar.update(1)
