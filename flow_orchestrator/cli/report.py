"""The reports of the command line (part of :mod:`flow_orchestrator.cli`, layer L6, interfaces).

One run, whether it just ran (:class:`~flow_orchestrator.engine.RunResult`) or was loaded
from a store (:class:`~flow_orchestrator.state.RunState`), is seen through one
:class:`RunView`; from it come the run summary (:func:`summary_text`, :func:`summary_json`:
status counts, failures, timings, slowest nodes).  The runs of a store become a table or a
list of dicts (:func:`runs_table`, :func:`runs_json`), corrupt and crashed runs with why;
a run whose state is damaged has a report of its own (:func:`corrupt_text`,
:func:`corrupt_json`).  The formatting helpers (tables,
durations, times) are here too.  Nothing here writes output: :mod:`.main` does.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..result import RunResult
from ..state import RunState
from ..status import NodeStatus
from ..stores.base import CORRUPT, RunInfo

__all__ = ["RunView", "corrupt_json", "corrupt_text", "format_seconds", "format_table", "format_time", "iso_time",
           "one_line", "runs_json", "runs_table", "summary_json", "summary_text", "view_of_result", "view_of_state"]

_FAILED = (int(NodeStatus.FAILED), int(NodeStatus.TIMED_OUT))
_MESSAGE_WIDTH = 160


# -- reports ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunView:
    """What a report shows of one run, whether it just ran (:class:`RunResult`) or was
    loaded from a store (:class:`RunState`).

    Per-node arrays are indexed like ``names``; ``errors`` maps node names to the
    ``(type, message)`` of the exception that ended them.  Times: ``wall_seconds`` for a
    run that just ended, ``started_at``/``updated_at`` (epoch seconds) for a stored one.
    """

    workflow: str
    run_id: str
    status: str
    names: Sequence[str]
    statuses: np.ndarray
    attempts: np.ndarray
    started: np.ndarray
    ended: np.ndarray
    errors: dict[str, tuple[str, str]]
    wall_seconds: float | None = None
    started_at: float | None = None
    updated_at: float | None = None
    cancel_reason: str | None = None
    restored_attempts: int = 0  # a resumed run's attempts that an earlier run made
    items: dict[str, dict[str, int]] | None = None  # map node -> its items' counts by status


def view_of_result(result: RunResult) -> RunView:
    """The report view of a run that just ended."""
    errors = {name: (type(exc).__name__, _text(exc)) for name, exc in result.errors.items()}
    return RunView(result.workflow.name, result.run_id, str(result.status), result.workflow.names,
                   result.statuses, result.attempts, result.started, result.ended, errors,
                   wall_seconds=result.wall_seconds, cancel_reason=result.cancel_reason,
                   restored_attempts=result.restored_attempts,
                   items={result.workflow.names[node]: _count_codes(result.items(node).statuses.tolist())
                          for node, kind in result.workflow.kinds.items() if kind.kind == "map"} or None)


def view_of_state(state: RunState) -> RunView:
    """The report view of a run loaded from a store."""
    errors = {state.node_names[i]: (record.type, record.message) for i, record in sorted(state.errors.items())}
    return RunView(state.workflow, state.run_id, state.run_status, state.node_names, state.statuses,
                   state.attempts, state.started, state.ended, errors,
                   started_at=state.started_at, updated_at=state.updated_at,
                   items={state.node_names[node]: _count_codes(r.status for r in records.values())
                          for node, records in sorted(state.items.items())} or None)


def _count_codes(codes: Any) -> dict[str, int]:
    counts = np.bincount(np.fromiter(codes, dtype=np.int64), minlength=len(NodeStatus))
    return {str(status): int(counts[status]) for status in NodeStatus}


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the report
        return f"<unprintable {type(exc).__name__}>"


def one_line(text: str, width: int = _MESSAGE_WIDTH) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``width`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def format_seconds(seconds: float) -> str:
    """A duration, readable at any scale: ``850 us``, ``12.5 ms``, ``3.201 s``."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.3f} s"


def format_time(epoch: float) -> str:
    """Epoch seconds as local ``YYYY-MM-DD HH:MM:SS``."""
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def iso_time(epoch: float) -> str:
    """Epoch seconds as ISO 8601 in UTC (``2025-01-31T12:00:00+00:00``)."""
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(timespec="seconds")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()) -> str:
    """A plain-text table: a header line, then one line per row, columns padded to fit;
    the columns whose indexes are in ``right`` are right-aligned (numbers)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


# -- one run ---------------------------------------------------------------------------------------


def _counts(view: RunView) -> dict[str, int]:
    counts = np.bincount(view.statuses, minlength=len(NodeStatus))
    return {str(status): int(counts[status]) for status in NodeStatus}


def _failures(view: RunView) -> list[dict[str, Any]]:
    bad = np.flatnonzero(np.isin(view.statuses, _FAILED))
    out = []
    for i in bad.tolist():
        name = view.names[i]
        kind, message = view.errors.get(name, ("", ""))
        out.append({"node": name, "status": str(NodeStatus(int(view.statuses[i]))),
                    "attempts": int(view.attempts[i]), "error_type": kind, "message": message})
    return out


def _slowest(view: RunView, limit: int) -> list[dict[str, Any]]:
    durations = view.ended - view.started
    ran = np.flatnonzero(np.isfinite(durations))
    if not ran.size:
        return []
    order = ran[np.argsort(-durations[ran], kind="stable")][:limit]
    return [{"node": view.names[i], "status": str(NodeStatus(int(view.statuses[i]))),
             "seconds": float(durations[i])} for i in order.tolist()]


def _node_seconds(view: RunView) -> float:
    durations = view.ended - view.started
    finite = durations[np.isfinite(durations)]
    return float(finite.sum()) if finite.size else 0.0


def summary_json(view: RunView, slowest: int = 5) -> dict[str, Any]:
    """The report of one run as a JSON-ready dict (full error messages, no NaN)."""
    report: dict[str, Any] = {
        "run_id": view.run_id,
        "workflow": view.workflow,
        "status": view.status,
        "nodes": len(view.names),
        "counts": _counts(view),
        "attempts": int(view.attempts.sum()) - view.restored_attempts,
        "node_seconds": _node_seconds(view),
    }
    if view.wall_seconds is not None:
        report["wall_seconds"] = view.wall_seconds
    if view.started_at is not None and view.updated_at is not None:
        report.update(started_at=view.started_at, started_at_iso=iso_time(view.started_at),
                      updated_at=view.updated_at, updated_at_iso=iso_time(view.updated_at),
                      elapsed_seconds=max(0.0, view.updated_at - view.started_at))
    if view.items:
        report["items"] = view.items
    report["failures"] = _failures(view)
    report["slowest"] = _slowest(view, slowest)
    if view.cancel_reason:
        report["cancel_reason"] = view.cancel_reason
    return report


def summary_text(view: RunView, slowest: int = 5, max_failures: int = 20) -> str:
    """The report of one run as text: a headline, the timings, a table of node status
    counts, the failures (node, status, attempts, error) and the slowest nodes."""
    report = summary_json(view, slowest)
    lines = [f"run {view.run_id} of workflow {view.workflow!r}: {view.status}"]
    if view.wall_seconds is not None:
        lines.append(f"wall time {format_seconds(view.wall_seconds)}, node time "
                     f"{format_seconds(report['node_seconds'])}, {report['attempts']} attempt(s)")
    if view.started_at is not None and view.updated_at is not None:
        lines.append(f"started {format_time(view.started_at)}, updated {format_time(view.updated_at)} "
                     f"({format_seconds(report['elapsed_seconds'])} later); node time "
                     f"{format_seconds(report['node_seconds'])}, {report['attempts']} attempt(s)")
    if view.cancel_reason:
        lines.append(f"cancelled: {one_line(view.cancel_reason)}")
    rows = [(status, count) for status, count in report["counts"].items() if count]
    rows.append(("total", report["nodes"]))
    lines += ["", format_table(("status", "nodes"), rows, right=(1,))]
    if view.items:
        used = [str(s) for s in NodeStatus if any(c[str(s)] for c in view.items.values())]
        lines += ["", "map items"]
        lines.append(format_table(("map", *used, "total"),
                                  [(node, *(c[s] for s in used), sum(c.values())) for node, c in view.items.items()],
                                  right=tuple(range(1, len(used) + 2))))
    failures = report["failures"]
    if failures:
        shown = failures[:max_failures]
        lines += ["", f"failures ({len(failures)})"]
        lines.append(format_table(
            ("node", "status", "attempts", "error"),
            [(f["node"], f["status"], f["attempts"],
              one_line(f"{f['error_type']}: {f['message']}" if f["error_type"] else "(no error recorded)"))
             for f in shown], right=(2,)))
        if len(failures) > len(shown):
            lines.append(f"... and {len(failures) - len(shown)} more")
    if report["slowest"]:
        lines += ["", "slowest nodes"]
        lines.append(format_table(("node", "status", "time"),
                                  [(s["node"], s["status"], format_seconds(s["seconds"])) for s in report["slowest"]],
                                  right=(2,)))
    return "\n".join(lines)


# -- run lists -------------------------------------------------------------------------------------


def _latest_first(runs: Sequence[RunInfo]) -> list[RunInfo]:
    return sorted(runs, key=lambda r: (-r.updated_at if math.isfinite(r.updated_at) else math.inf, r.run_id))


def runs_json(runs: Sequence[RunInfo]) -> list[dict[str, Any]]:
    """The runs of a store as JSON-ready dicts, most recently updated first; a corrupt or
    crashed run has a ``reason``; an unknown update time is ``null``."""
    out = []
    for r in _latest_first(runs):
        known = math.isfinite(r.updated_at)
        item: dict[str, Any] = {"run_id": r.run_id, "workflow": r.workflow, "status": r.run_status,
                                "updated_at": r.updated_at if known else None,
                                "updated_at_iso": iso_time(r.updated_at) if known else None}
        if r.reason:
            item["reason"] = r.reason
        out.append(item)
    return out


def runs_table(runs: Sequence[RunInfo]) -> str:
    """The runs of a store as a text table (run id, workflow, status, updated at, and why
    when a run is corrupt or crashed), most recently updated first."""
    ordered = _latest_first(runs)
    headers: tuple[str, ...] = ("run id", "workflow", "status", "updated at")
    rows: list[tuple[str, ...]] = [(r.run_id, r.workflow or "?", r.run_status,
                                    format_time(r.updated_at) if math.isfinite(r.updated_at) else "?")
                                   for r in ordered]
    if any(r.reason for r in ordered):
        headers += ("why",)
        rows = [(*row, one_line(r.reason, 100)) for row, r in zip(rows, ordered)]
    return format_table(headers, rows)


def corrupt_json(run_id: str, reason: str) -> dict[str, Any]:
    """The report of a run whose saved state is damaged, as a JSON-ready dict."""
    return {"run_id": run_id, "status": CORRUPT, "reason": reason}


def corrupt_text(run_id: str, reason: str) -> str:
    """The report of a run whose saved state is damaged: its status and why."""
    return f"run {run_id}: {CORRUPT}: {one_line(reason)}"
