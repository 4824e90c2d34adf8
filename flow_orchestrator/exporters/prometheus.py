"""Prometheus exposition of a :class:`~flow_orchestrator.metrics.MetricsRegistry`.

A custom ``prometheus_client`` collector: every scrape takes a fresh
:meth:`MetricsRegistry.snapshot` and turns it into metric families; nothing is kept in
``prometheus_client`` between scrapes, and the engine pays nothing for it::

    from flow_orchestrator.exporters.prometheus import register

    engine = Engine(metrics=True)
    register(engine.metrics)            # on prometheus_client's default REGISTRY

Metrics (``flow_orchestrator`` is the default namespace):

* ``flow_orchestrator_workflow_runs_total`` (counter; workflow, outcome): runs ended;
* ``flow_orchestrator_workflow_run_duration_seconds`` (histogram; workflow): run wall
  times;
* ``flow_orchestrator_node_events_total`` (counter; workflow, node, event);
* ``flow_orchestrator_node_duration_seconds`` (histogram; workflow, node): attempt
  durations;
* ``flow_orchestrator_node_queue_wait_seconds`` (histogram; workflow, node): time from
  ready to started.

``outcome`` is ``completed``, ``failed`` or ``cancelled``; ``event`` is one of
:data:`~flow_orchestrator.metrics.METRIC_COUNTS` (attempts ``started``, ``completed``,
``failed``, ``retried``, ``timed_out``; nodes ``skipped``, ``cancelled``).  With
``MetricsRegistry(node_histograms=False)`` the two node histograms have the
``workflow`` label only (one histogram per workflow); the counters stay per node.
Histogram buckets are :data:`~flow_orchestrator.metrics.BUCKET_BOUNDS` (powers of 4
from 1 microsecond) and ``+Inf``.

Workflows that share a name are summed (node by node name), so the exposition never
holds two series with the same labels.  Every node of every workflow makes series: for
workflows of many thousands of nodes, consider the cardinality before scraping them.

Requires ``prometheus-client`` (``pip install flow-orchestrator[prometheus]``).

Where it sits: layer L6 (interfaces): reads a metrics registry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import numpy as np

try:
    from prometheus_client.core import REGISTRY, CounterMetricFamily, HistogramMetricFamily, Metric
    from prometheus_client.registry import Collector, CollectorRegistry
    from prometheus_client.utils import floatToGoString
except ImportError as exc:
    raise ImportError(
        "flow_orchestrator.exporters.prometheus needs prometheus-client: "
        "pip install 'flow-orchestrator[prometheus]'") from exc

from ..metrics import BUCKET_BOUNDS, METRIC_COUNTS, MetricsRegistry, WorkflowMetrics

__all__ = ["FlowCollector", "register"]

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
#: Prometheus ``le`` labels of our buckets, the last one unbounded.
_LE = (*(floatToGoString(bound) for bound in BUCKET_BOUNDS), "+Inf")


class FlowCollector(Collector):
    """A ``prometheus_client`` collector reading ``registry`` at every scrape.

    Args:
        registry: the metrics to expose (``engine.metrics`` of an engine made with
            ``metrics=True``, or a registry shared by several engines).
        namespace: prefix of every metric name.
    """

    def __init__(self, registry: MetricsRegistry, namespace: str = "flow_orchestrator") -> None:
        if not isinstance(registry, MetricsRegistry):
            raise TypeError(f"expected a MetricsRegistry (e.g. Engine(metrics=True).metrics), got {registry!r}")
        if not isinstance(namespace, str) or not _METRIC_NAME.fullmatch(namespace):
            raise ValueError(f"namespace must be a valid Prometheus metric name prefix, got {namespace!r}")
        self.registry = registry
        self.namespace = namespace

    def describe(self) -> list[Metric]:
        """The metric families, without samples (so registering takes no snapshot)."""
        return list(_Families(self.namespace, self.registry.node_histograms))

    def collect(self) -> Iterator[Metric]:
        """The metric families of a snapshot taken now."""
        families = _Families(self.namespace, self.registry.node_histograms)
        for metrics in _merge_by_name(self.registry.snapshot(), self.registry.node_histograms):
            families.add(metrics)
        return iter(families)


def register(registry: MetricsRegistry, prometheus_registry: CollectorRegistry = REGISTRY, *,
             namespace: str = "flow_orchestrator") -> FlowCollector:
    """Expose ``registry`` on ``prometheus_registry`` (the default one unless given).

    Returns the collector, e.g. to ``prometheus_registry.unregister`` it later.
    """
    collector = FlowCollector(registry, namespace)
    prometheus_registry.register(collector)
    return collector


def _merge_by_name(snapshots: Iterable[WorkflowMetrics], node_histograms: bool) -> list[WorkflowMetrics]:
    """One :class:`WorkflowMetrics` per workflow name: those sharing a name are summed,
    node by node name (``node_histograms``: whether histograms have one row a node)."""
    groups: dict[str, list[WorkflowMetrics]] = {}
    for metrics in snapshots:
        groups.setdefault(metrics.workflow, []).append(metrics)
    return [group[0] if len(group) == 1 else _sum(name, group, node_histograms)
            for name, group in groups.items()]


def _sum(name: str, group: list[WorkflowMetrics], node_histograms: bool) -> WorkflowMetrics:
    names = list(dict.fromkeys(node for metrics in group for node in metrics.node_names))
    buckets = len(BUCKET_BOUNDS) + 1
    rows = len(names) if node_histograms else 1
    total = WorkflowMetrics(
        workflow=name, node_names=names, runs={}, run_duration_sum=0.0,
        run_duration_hist=np.zeros(buckets, dtype=np.int64),
        counts=np.zeros((len(names), len(METRIC_COUNTS)), dtype=np.int64),
        duration_sum=np.zeros(len(names)), wait_sum=np.zeros(len(names)),
        duration_hist=np.zeros((rows, buckets), dtype=np.int64),
        wait_hist=np.zeros((rows, buckets), dtype=np.int64))
    position = {node: i for i, node in enumerate(names)}
    for metrics in group:
        _add_into(total, metrics, np.array([position[n] for n in metrics.node_names], dtype=np.intp),
                  node_histograms)
    return total


def _add_into(total: WorkflowMetrics, metrics: WorkflowMetrics, rows: np.ndarray,
              node_histograms: bool) -> None:
    """Add ``metrics`` to ``total``, whose node ``rows[i]`` is ``metrics``' node ``i``
    (node names are unique within a workflow, so fancy-indexed ``+=`` is exact)."""
    for outcome, count in metrics.runs.items():
        total.runs[outcome] = total.runs.get(outcome, 0) + count
    total.run_duration_sum += metrics.run_duration_sum
    total.run_duration_hist += metrics.run_duration_hist
    total.counts[rows] += metrics.counts
    total.duration_sum[rows] += metrics.duration_sum
    total.wait_sum[rows] += metrics.wait_sum
    hist_rows = rows if node_histograms else slice(0, 1)
    total.duration_hist[hist_rows] += metrics.duration_hist
    total.wait_hist[hist_rows] += metrics.wait_hist


def _buckets(cumulative: list[int]) -> list[tuple[str, float]]:
    return list(zip(_LE, cumulative))


class _Families:
    """The metric families of one scrape, filled workflow by workflow."""

    def __init__(self, namespace: str, node_histograms: bool) -> None:
        self.node_histograms = node_histograms
        latency_labels = ["workflow", "node"] if node_histograms else ["workflow"]
        self.runs = CounterMetricFamily(
            f"{namespace}_workflow_runs", "Runs of a workflow that ended, by outcome.",
            labels=["workflow", "outcome"])
        self.run_seconds = HistogramMetricFamily(
            f"{namespace}_workflow_run_duration_seconds", "Wall time of the runs of a workflow.",
            labels=["workflow"])
        self.node_events = CounterMetricFamily(
            f"{namespace}_node_events", "Node events: attempts started, completed, failed, "
            "retried and timed out; nodes skipped and cancelled.", labels=["workflow", "node", "event"])
        self.node_seconds = HistogramMetricFamily(
            f"{namespace}_node_duration_seconds", "Duration of node attempts.", labels=latency_labels)
        self.wait_seconds = HistogramMetricFamily(
            f"{namespace}_node_queue_wait_seconds", "Time from a node being ready to its attempt "
            "starting.", labels=latency_labels)

    def __iter__(self) -> Iterator[Metric]:
        return iter((self.runs, self.run_seconds, self.node_events, self.node_seconds, self.wait_seconds))

    def add(self, metrics: WorkflowMetrics) -> None:
        """Add the samples of one workflow."""
        workflow = metrics.workflow
        for outcome, count in metrics.runs.items():
            self.runs.add_metric([workflow, outcome], count)
        self.run_seconds.add_metric([workflow], _buckets(np.cumsum(metrics.run_duration_hist).tolist()),
                                    metrics.run_duration_sum)
        for node, row in zip(metrics.node_names, metrics.counts.tolist()):
            for event, count in zip(METRIC_COUNTS, row):
                self.node_events.add_metric([workflow, node, event], count)
        self._add_latency(self.node_seconds, metrics, metrics.duration_hist, metrics.duration_sum)
        self._add_latency(self.wait_seconds, metrics, metrics.wait_hist, metrics.wait_sum)

    def _add_latency(self, family: HistogramMetricFamily, metrics: WorkflowMetrics,
                     hist: np.ndarray, sums: np.ndarray) -> None:
        cumulative = np.cumsum(hist, axis=1).tolist()
        if self.node_histograms:
            for node, row, total in zip(metrics.node_names, cumulative, sums.tolist()):
                family.add_metric([metrics.workflow, node], _buckets(row), total)
        else:
            family.add_metric([metrics.workflow], _buckets(cumulative[0]), float(sums.sum()))
