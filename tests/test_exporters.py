"""Optional integrations: the Prometheus collector (exposition parsed back), the
OpenTelemetry observer (spans captured by the SDK's in-memory exporter) and the progress
observer (tqdm into a StringIO, and the logging fallback)."""

from __future__ import annotations

import io
import logging
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from flow_orchestrator import CancellationToken, Engine, NodeStatus, RunStatus, WorkflowBuilder
from flow_orchestrator.errors import NodeCancelledError, NodeTimeoutError
from flow_orchestrator.metrics import BUCKET_BOUNDS, METRIC_COUNTS, MetricsRegistry
from flow_orchestrator.progress import ProgressObserver

from engine_helpers import fail, flaky, ok

NS = "flow_orchestrator"


def give_up():
    raise NodeCancelledError("giving up")


def hang(ctx):
    ctx.wait(30)


def mixed_workflow(name: str = "mixed"):
    """a ok; b flaky (retried once) after a; c fails after a; d after c (skipped)."""
    return (WorkflowBuilder(name).add("a", ok).add("b", flaky, depends_on="a", retries=1)
            .add("c", fail, depends_on="a").add("d", ok, depends_on="c").build())


def chain(name: str, n: int):
    flow = WorkflowBuilder(name)
    for i in range(n):
        flow.add(f"n{i}", ok, depends_on=[f"n{i - 1}"] if i else [])
    return flow.build()


def run_python(code: str, tmp_path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter, away from the source tree."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)


# -- optional dependencies stay optional -------------------------------------------------------


def test_importing_the_package_imports_no_optional_dependency(tmp_path):
    done = run_python("""
        import sys
        import flow_orchestrator, flow_orchestrator.exporters, flow_orchestrator.progress
        from flow_orchestrator.progress import ProgressObserver
        ProgressObserver(use_tqdm=False)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("prometheus_client", "opentelemetry", "tqdm"))
        assert not loaded, loaded
    """, tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("module, blocked, extra", [
    ("flow_orchestrator.exporters.prometheus", "prometheus_client", "prometheus"),
    ("flow_orchestrator.exporters.otel", "opentelemetry", "otel"),
])
def test_a_missing_extra_says_what_to_install(tmp_path, module, blocked, extra):
    done = run_python(f"""
        import sys
        sys.modules[{blocked!r}] = None  # as if it were not installed
        try:
            import {module}
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("imported without {blocked}")
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"pip install 'flow-orchestrator[{extra}]'" in done.stdout


# -- Prometheus ------------------------------------------------------------------------------------


@pytest.fixture
def prom():
    """``(prometheus_client, our exporter module)``."""
    client = pytest.importorskip("prometheus_client", reason="prometheus-client is not installed: the 'prometheus' extra (pip install 'flow-orchestrator[prometheus]')")
    from flow_orchestrator.exporters import prometheus

    return client, prometheus


def scrape(client, registry) -> dict[str, dict[frozenset, float]]:
    """Parse the exposition back: ``{sample name: {label set: value}}``; no label set twice."""
    from prometheus_client.parser import text_string_to_metric_families

    text = client.generate_latest(registry).decode()
    out: dict[str, dict[frozenset, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series = out.setdefault(sample.name, {})
            key = frozenset(sample.labels.items())
            assert key not in series, f"duplicate series {sample.name}{sample.labels}"
            series[key] = sample.value
    return out


def labels(**kw: str) -> frozenset:
    return frozenset(kw.items())


def histogram(samples, name: str, **kw: str) -> tuple[list[float], list[float], float, float]:
    """``(le bounds, cumulative counts, _count, _sum)`` of one histogram series."""
    buckets = sorted((float(dict(key)["le"]), value) for key, value in samples[f"{name}_bucket"].items()
                     if key - {("le", dict(key)["le"])} == labels(**kw))
    return ([le for le, _ in buckets], [v for _, v in buckets],
            samples[f"{name}_count"][labels(**kw)], samples[f"{name}_sum"][labels(**kw)])


def check_histogram(samples, name: str, hist_row: np.ndarray, total: float, **kw: str) -> None:
    bounds, cumulative, count, total_seen = histogram(samples, name, **kw)
    assert bounds == [*BUCKET_BOUNDS, math.inf]
    assert cumulative == np.cumsum(hist_row).tolist()
    assert cumulative == sorted(cumulative) and count == cumulative[-1]
    assert total_seen == pytest.approx(total)


def test_exposition_matches_the_snapshot(prom):
    client, exporter = prom
    registry = client.CollectorRegistry()
    with Engine(2, metrics=MetricsRegistry(node_histograms=True)) as engine:
        exporter.register(engine.metrics, registry)
        wf = mixed_workflow()
        for _ in range(2):
            engine.run(wf, continue_on_error=True, raise_on_failure=False)
        engine.run(chain("other", 3))
        samples = scrape(client, registry)
        snapshot = {m.workflow: m for m in engine.metrics.snapshot()}
    runs = samples[f"{NS}_workflow_runs_total"]
    assert runs == {labels(workflow=w, outcome=o): float(n)
                    for w, m in snapshot.items() for o, n in m.runs.items()}
    assert runs[labels(workflow="mixed", outcome="failed")] == 2
    events = samples[f"{NS}_node_events_total"]
    assert len(events) == 7 * (4 + 3)
    for w, m in snapshot.items():
        for i, node in enumerate(m.node_names):
            for j, event in enumerate(METRIC_COUNTS):
                assert events[labels(workflow=w, node=node, event=event)] == m.counts[i, j]
    b = {event: events[labels(workflow="mixed", node="b", event=event)] for event in METRIC_COUNTS}
    assert b == {"started": 4, "completed": 2, "failed": 0, "retried": 2, "timed_out": 0,
                 "skipped": 0, "cancelled": 0}
    assert events[labels(workflow="mixed", node="d", event="skipped")] == 2
    for w, m in snapshot.items():
        check_histogram(samples, f"{NS}_workflow_run_duration_seconds", m.run_duration_hist,
                        m.run_duration_sum, workflow=w)
        for i, node in enumerate(m.node_names):
            check_histogram(samples, f"{NS}_node_duration_seconds", m.duration_hist[i], m.duration_sum[i],
                            workflow=w, node=node)
            check_histogram(samples, f"{NS}_node_queue_wait_seconds", m.wait_hist[i], m.wait_sum[i],
                            workflow=w, node=node)
    assert histogram(samples, f"{NS}_node_duration_seconds", workflow="mixed", node="b")[2] == 4


def test_values_are_read_at_scrape_time(prom):
    client, exporter = prom
    registry = client.CollectorRegistry()
    metrics = MetricsRegistry(node_histograms=True)
    exporter.register(metrics, registry)
    assert f"{NS}_node_events_total" not in scrape(client, registry)
    wf = chain("later", 2)
    with Engine(1, executor="serial", metrics=metrics) as engine:
        engine.run(wf)
        first = scrape(client, registry)
        engine.run(wf)
        second = scrape(client, registry)
    key = labels(workflow="later", node="n1", event="completed")
    assert first[f"{NS}_node_events_total"][key] == 1
    assert second[f"{NS}_node_events_total"][key] == 2


def test_workflows_sharing_a_name_are_summed(prom):
    client, exporter = prom
    registry = client.CollectorRegistry()
    metrics = MetricsRegistry(node_histograms=True)
    exporter.register(metrics, registry)
    small, big = chain("same", 2), chain("same", 3)
    with Engine(1, executor="serial", metrics=metrics) as engine:
        engine.run(small)
        engine.run(big)
        engine.run(big)
    samples = scrape(client, registry)  # asserts that no series appears twice
    events = samples[f"{NS}_node_events_total"]
    assert events[labels(workflow="same", node="n0", event="started")] == 3
    assert events[labels(workflow="same", node="n2", event="started")] == 2
    assert samples[f"{NS}_workflow_runs_total"][labels(workflow="same", outcome="completed")] == 3
    assert samples[f"{NS}_workflow_run_duration_seconds_count"][labels(workflow="same")] == 3
    snapshots = metrics.snapshot()
    duration_n0 = sum(m.duration_sum[0] for m in snapshots)
    hist_n0 = sum(m.duration_hist[0] for m in snapshots)
    check_histogram(samples, f"{NS}_node_duration_seconds", hist_n0, duration_n0, workflow="same", node="n0")


@pytest.mark.parametrize("same_name", [False, True])
def test_without_node_histograms_one_histogram_per_workflow(prom, same_name):
    client, exporter = prom
    registry = client.CollectorRegistry()
    metrics = MetricsRegistry(node_histograms=False)
    exporter.register(metrics, registry)
    workflows = [chain("flat", 4), chain("flat" if same_name else "flat2", 3)]
    with Engine(2, metrics=metrics) as engine:
        for wf in workflows:
            engine.run(wf)
    samples = scrape(client, registry)
    snapshots = {m.workflow: [] for m in metrics.snapshot()}
    for m in metrics.snapshot():
        snapshots[m.workflow].append(m)
    for name, group in snapshots.items():
        hist = sum(m.duration_hist[0] for m in group)
        total = sum(float(m.duration_sum.sum()) for m in group)
        check_histogram(samples, f"{NS}_node_duration_seconds", hist, total, workflow=name)
        assert samples[f"{NS}_node_queue_wait_seconds_count"][labels(workflow=name)] == sum(
            m.counts[:, 0].sum() for m in group)
    assert {dict(key)["workflow"] for key in samples[f"{NS}_node_duration_seconds_count"]} == set(snapshots)
    assert all(set(dict(key)) == {"workflow"} for key in samples[f"{NS}_node_duration_seconds_count"])
    assert len(samples[f"{NS}_node_events_total"]) == 7 * (4 if same_name else 7)  # still per node


def test_namespace_and_validation(prom):
    client, exporter = prom
    registry = client.CollectorRegistry()
    metrics = MetricsRegistry(node_histograms=True)
    exporter.register(metrics, registry, namespace="myapp")
    with Engine(1, executor="serial", metrics=metrics) as engine:
        engine.run(chain("ns", 1))
    names = set(scrape(client, registry))
    assert "myapp_node_events_total" in names and all(name.startswith("myapp_") for name in names)
    with pytest.raises(ValueError, match="namespace"):
        exporter.FlowCollector(metrics, namespace="bad-name")
    with pytest.raises(TypeError, match="MetricsRegistry"):
        exporter.FlowCollector(None)


class CountingRegistry(MetricsRegistry):
    """Counts snapshots."""

    snapshots = 0

    def snapshot(self):
        self.snapshots += 1
        return super().snapshot()


def test_registering_takes_no_snapshot_and_describes_every_family(prom):
    client, exporter = prom
    registry = client.CollectorRegistry()
    metrics = CountingRegistry()
    collector = exporter.register(metrics, registry)
    assert metrics.snapshots == 0
    described = [(f.name, f.type) for f in collector.describe()]
    assert all(not f.samples for f in collector.describe())
    assert described == [(f.name, f.type) for f in collector.collect()]
    assert metrics.snapshots == 1
    assert described == [(f"{NS}_workflow_runs", "counter"), (f"{NS}_workflow_run_duration_seconds", "histogram"),
                         (f"{NS}_node_events", "counter"), (f"{NS}_node_duration_seconds", "histogram"),
                         (f"{NS}_node_queue_wait_seconds", "histogram")]
    with pytest.raises(ValueError):  # prometheus_client refuses the same names twice
        exporter.register(metrics, registry)


def test_register_defaults_to_the_global_registry(prom):
    client, exporter = prom
    collector = exporter.register(MetricsRegistry(node_histograms=True))
    try:
        assert f"{NS}_node_events_total" in client.generate_latest().decode()
    finally:
        client.REGISTRY.unregister(collector)


# -- OpenTelemetry ------------------------------------------------------------------------------------


@pytest.fixture
def otel():
    """``(observer class, tracer, in-memory exporter, our module)``."""
    pytest.importorskip("opentelemetry.trace", reason="opentelemetry-api is not installed: the 'otel' extra (pip install 'flow-orchestrator[otel]')")
    sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is not installed: the 'test' extra (pip install 'flow-orchestrator[test]')")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from flow_orchestrator.exporters import otel as module

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield module.OpenTelemetryObserver, provider.get_tracer("tests"), exporter, module
    provider.shutdown()


def split_spans(exporter, module):
    """``(run spans, node spans)`` as exported (so ended)."""
    spans = exporter.get_finished_spans()
    runs = [s for s in spans if module.NODE not in s.attributes]
    return runs, [s for s in spans if module.NODE in s.attributes]


def test_a_span_per_attempt_under_a_run_span(otel):
    Observer, tracer, exporter, module = otel
    from opentelemetry.trace import StatusCode

    with Engine(2, observers=[Observer(tracer)]) as engine:
        result = engine.run(mixed_workflow(), continue_on_error=True, raise_on_failure=False)
    (run,), nodes = split_spans(exporter, module)
    assert run.name == "mixed" and run.parent is None
    assert dict(run.attributes) == {
        module.WORKFLOW: "mixed", module.RUN_ID: result.run_id, module.STATUS: "failed",
        module.NODE_COUNT_PREFIX + "completed": 2, module.NODE_COUNT_PREFIX + "failed": 1,
        module.NODE_COUNT_PREFIX + "skipped": 1}
    assert run.status.status_code is StatusCode.ERROR
    assert sorted((s.name, s.attributes[module.ATTEMPT]) for s in nodes) == [
        ("a", 1), ("b", 1), ("b", 2), ("c", 1)]
    for span in nodes:
        assert span.parent.span_id == run.context.span_id
        assert span.context.trace_id == run.context.trace_id
        assert run.start_time <= span.start_time <= span.end_time <= run.end_time
        assert span.attributes[module.WORKFLOW] == "mixed" and span.attributes[module.RUN_ID] == result.run_id
        assert span.attributes[module.NODE] == span.name
    by_attempt = {(s.name, s.attributes[module.ATTEMPT]): s for s in nodes}
    expected = {("a", 1): ("completed", StatusCode.UNSET, None),
                ("b", 1): ("retrying", StatusCode.ERROR, "ConnectionError"),
                ("b", 2): ("completed", StatusCode.UNSET, None),
                ("c", 1): ("failed", StatusCode.ERROR, "ValueError")}
    for key, (status, code, exception) in expected.items():
        span = by_attempt[key]
        assert span.attributes[module.STATUS] == status and span.status.status_code is code, key
        raised = [e.attributes["exception.type"] for e in span.events if e.name == "exception"]
        assert raised == ([exception] if exception else []), key
    assert by_attempt[("b", 1)].attributes[module.RETRY_DELAY] == 0.0
    assert "fails" in by_attempt[("c", 1)].status.description


def test_a_successful_run_has_no_error_status(otel):
    Observer, tracer, exporter, module = otel
    from opentelemetry.trace import StatusCode

    with Engine(2) as engine:
        engine.run(chain("fine", 3), observers=[Observer(tracer)])
    spans = exporter.get_finished_spans()
    assert len(spans) == 4 and all(s.status.status_code is StatusCode.UNSET for s in spans)
    (run,), _ = split_spans(exporter, module)
    assert run.attributes[module.STATUS] == "completed"


def test_timed_out_attempts(otel):
    Observer, tracer, exporter, module = otel
    wf = WorkflowBuilder("slow").add("slow", hang, timeout=0.03, retries=1).build()
    with Engine(2) as engine:
        engine.run(wf, observers=[Observer(tracer)], raise_on_failure=False)
    _, nodes = split_spans(exporter, module)
    got = sorted((s.attributes[module.ATTEMPT], s.attributes[module.STATUS], s.status.status_code.name)
                 for s in nodes)
    assert got == [(1, "retrying", "ERROR"), (2, "timed_out", "ERROR")]
    retrying, timed_out = sorted(nodes, key=lambda s: s.attributes[module.ATTEMPT])
    (raised,) = [e.attributes["exception.type"] for e in retrying.events]
    assert raised.endswith(NodeTimeoutError.__name__)
    assert "timed_out" in timed_out.status.description


def test_a_node_cancelled_while_running(otel):
    Observer, tracer, exporter, module = otel
    wf = WorkflowBuilder("quit").add("quit", give_up).add("never", ok, depends_on="quit").build()
    with Engine(2) as engine:
        engine.run(wf, observers=[Observer(tracer)], raise_on_failure=False)
    (run,), (span,) = split_spans(exporter, module)
    assert span.name == "quit" and span.attributes[module.STATUS] == "cancelled"
    assert span.status.status_code.name == "UNSET"
    assert run.attributes[module.STATUS] == "cancelled"
    assert run.attributes[module.NODE_COUNT_PREFIX + "skipped"] == 1


def test_a_run_cancelled_beforehand_makes_only_its_run_span(otel):
    Observer, tracer, exporter, module = otel
    token = CancellationToken()
    token.cancel()
    with Engine(2) as engine:
        engine.run(chain("cancelled", 3), observers=[Observer(tracer)], cancel=token, raise_on_failure=False)
    (run,), nodes = split_spans(exporter, module)
    assert nodes == []
    assert run.attributes[module.STATUS] == "cancelled"
    assert run.attributes[module.NODE_COUNT_PREFIX + "cancelled"] == 3


def test_spans_of_concurrent_runs(otel):
    Observer, tracer, exporter, module = otel
    flow = WorkflowBuilder("concurrent")
    for i in range(100):
        flow.add(f"n{i}", flaky if i % 5 == 0 else ok, depends_on=[f"n{i // 2}"] if i else [], retries=1)
    wf = flow.build()
    with Engine(8, observers=[Observer(tracer)]) as engine:
        results = [h.result(timeout=120) for h in [engine.submit(wf) for _ in range(20)]]
    runs, nodes = split_spans(exporter, module)
    assert len(runs) == 20 and len(nodes) == sum(int(r.attempts.sum()) for r in results) == 20 * 120
    run_span = {s.attributes[module.RUN_ID]: s.context.span_id for s in runs}
    assert set(run_span) == {r.run_id for r in results}
    assert all(s.parent.span_id == run_span[s.attributes[module.RUN_ID]] for s in nodes)
    assert len({(s.attributes[module.RUN_ID], s.name, s.attributes[module.ATTEMPT]) for s in nodes}) == len(nodes)


def test_the_default_tracer_is_flow_orchestrators(otel, monkeypatch):
    Observer, tracer, exporter, module = otel
    asked = []

    def get_tracer(name, *args, **kwargs):
        asked.append(name)
        return tracer

    monkeypatch.setattr(module.trace, "get_tracer", get_tracer)
    with Engine(1, executor="serial") as engine:
        engine.run(chain("default", 2), observers=[Observer()])
    assert asked == ["flow_orchestrator"]
    assert len(exporter.get_finished_spans()) == 3


# -- progress ---------------------------------------------------------------------------------------


def progress_workflow():
    """4 nodes: a ok, b fails, c skipped after b, d ok (run with continue_on_error)."""
    return (WorkflowBuilder("prog").add("a", ok).add("b", fail).add("c", ok, depends_on="b")
            .add("d", ok).build())


def progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "flow_orchestrator.progress"]


def test_logging_fallback_logs_each_step_with_no_interval(caplog):
    caplog.set_level(logging.INFO, logger="flow_orchestrator.progress")
    observer = ProgressObserver(total=4, use_tqdm=False, interval=0)
    with Engine(1, executor="serial") as engine:
        result = engine.run(progress_workflow(), observers=[observer], continue_on_error=True,
                            raise_on_failure=False)
    prefix = f"workflow 'prog' run {result.run_id}: "
    lines = progress_lines(caplog)
    assert lines[:4] == [prefix + f"{i}/4 nodes (failed {int(i > 1)})" for i in range(1, 5)]
    assert lines[4].startswith(prefix + "4/4 nodes (failed 1), failed in ") and len(lines) == 5
    assert all(r.levelno == logging.INFO for r in caplog.records)


def test_logging_fallback_is_rate_limited_and_learns_the_total(caplog):
    caplog.set_level(logging.INFO, logger="flow_orchestrator.progress")
    observer = ProgressObserver(use_tqdm=False, interval=3600)
    with Engine(2) as engine:
        result = engine.run(chain("quiet", 50), observers=[observer])
    assert progress_lines(caplog) == [
        f"workflow 'quiet' run {result.run_id}: 50/50 nodes (failed 0), completed in {result.wall_seconds:.3f} s"]


def test_logging_fallback_without_total_and_to_a_given_logger(caplog):
    caplog.set_level(logging.INFO, logger="myapp")
    observer = ProgressObserver(use_tqdm=False, interval=0, logger=logging.getLogger("myapp"))
    with Engine(1, executor="serial") as engine:
        engine.run(chain("unknown", 2), observers=[observer])
    lines = [r.getMessage() for r in caplog.records if r.name == "myapp"]
    assert [line.split(": ", 1)[1][:len("1/? nodes")] for line in lines] == ["1/? nodes", "2/? nodes", "2/2 nodes"]


def test_one_progress_observer_follows_concurrent_runs(caplog):
    caplog.set_level(logging.INFO, logger="flow_orchestrator.progress")
    observer = ProgressObserver(use_tqdm=False, interval=0)
    with Engine(4, observers=[observer]) as engine:
        results = [h.result(timeout=120) for h in [engine.submit(chain("many", 30)) for _ in range(10)]]
    lines = progress_lines(caplog)
    for result in results:
        mine = [line for line in lines if f" run {result.run_id}: " in line]
        assert len(mine) == 31 and mine[-1].split(": ")[1].startswith("30/30 nodes (failed 0), completed")
        done = [int(line.split(": ")[1].split("/")[0]) for line in mine[:-1]]
        assert done == list(range(1, 31))


def test_progress_never_prints(capsys):
    with Engine(1, executor="serial") as engine:
        engine.run(chain("silent", 3), observers=[ProgressObserver(use_tqdm=False, interval=0)])
    assert capsys.readouterr() == ("", "")


def test_progress_validates_its_arguments():
    for bad in (dict(total=0), dict(total=True), dict(total=2.5), dict(interval=-1),
                dict(interval=float("nan")), dict(interval="1")):
        with pytest.raises(ValueError):
            ProgressObserver(use_tqdm=False, **bad)


def test_tqdm_bar_into_a_string_buffer():
    pytest.importorskip("tqdm", reason="tqdm is not installed: the 'progress' extra (pip install 'flow-orchestrator[progress]')")
    out = io.StringIO()
    observer = ProgressObserver(total=4, file=out)
    assert observer.uses_tqdm
    with Engine(1, executor="serial") as engine:
        result = engine.run(progress_workflow(), observers=[observer], continue_on_error=True,
                            raise_on_failure=False)
    text = out.getvalue()
    final = text.rsplit("\r", 1)[-1]
    assert f"prog {result.run_id} failed" in final and "4/4" in final and "failed=1" in final
    assert text.endswith("\n")


def test_tqdm_bars_of_concurrent_runs_learn_their_total():
    pytest.importorskip("tqdm", reason="tqdm is not installed: the 'progress' extra (pip install 'flow-orchestrator[progress]')")
    out = io.StringIO()
    observer = ProgressObserver(file=out, bar_options={"leave": True})
    with Engine(4, observers=[observer]) as engine:
        results = [h.result(timeout=120) for h in [engine.submit(chain("bars", 40)) for _ in range(8)]]
    text = out.getvalue()
    for result in results:
        assert any(f"bars {result.run_id} completed" in part and "40/40" in part for part in text.split("\r"))


def test_tqdm_writes_to_stderr_by_default(capsys):
    pytest.importorskip("tqdm", reason="tqdm is not installed: the 'progress' extra (pip install 'flow-orchestrator[progress]')")
    with Engine(1, executor="serial") as engine:
        engine.run(chain("stderr", 3), observers=[ProgressObserver(use_tqdm=True)])
    out, err = capsys.readouterr()
    assert out == "" and "3/3" in err


def test_tqdm_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    assert not ProgressObserver().uses_tqdm
    with pytest.raises(ImportError, match=r"pip install 'flow-orchestrator\[progress\]'"):
        ProgressObserver(use_tqdm=True)


def test_tqdm_can_be_declined():
    assert not ProgressObserver(use_tqdm=False).uses_tqdm


def test_a_failed_node_and_a_timeout_count_as_failed(caplog):
    caplog.set_level(logging.INFO, logger="flow_orchestrator.progress")
    wf = WorkflowBuilder("fails").add("slow", hang, timeout=0.03).add("bad", fail).add("fine", ok).build()
    with Engine(2) as engine:
        result = engine.run(wf, observers=[ProgressObserver(use_tqdm=False, interval=3600)],
                            continue_on_error=True, raise_on_failure=False)
    assert result.status_of("slow") is NodeStatus.TIMED_OUT and result.status is RunStatus.FAILED
    (line,) = progress_lines(caplog)
    assert "3/3 nodes (failed 2), failed in" in line
