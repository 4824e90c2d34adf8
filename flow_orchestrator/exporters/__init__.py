"""Exporters of runs and metrics to monitoring systems (optional extras).

* :mod:`flow_orchestrator.exporters.prometheus`: a ``prometheus_client`` collector that
  reads a :class:`~flow_orchestrator.metrics.MetricsRegistry` at scrape time
  (``pip install flow-orchestrator[prometheus]``).
* :mod:`flow_orchestrator.exporters.otel`: an observer that makes OpenTelemetry spans,
  one per run and one per node attempt (``pip install flow-orchestrator[otel]``).

Import the submodule you need: this package imports neither, so that
``import flow_orchestrator`` never pulls in an optional dependency.

Where it sits: layer L6 (interfaces).
"""
