"""The package is the compiled build: extension present, typed, debug flag honoured."""

from __future__ import annotations

import importlib.resources
import os
import pathlib

import flow_orchestrator
from flow_orchestrator import _ext


def test_core_is_compiled():
    path = pathlib.Path(_ext.__file__)
    assert path.suffix in (".so", ".pyd"), f"_ext was not compiled: {path}"
    assert path.parent == pathlib.Path(flow_orchestrator.__file__).parent


def test_debug_build_matches_request():
    # CI sets FLOW_ORCHESTRATOR_EXPECT_DEBUG=1 when it tests the debug build, so that
    # a release build cannot pass for a debug one unnoticed.
    expected = os.environ.get("FLOW_ORCHESTRATOR_EXPECT_DEBUG")
    if expected is not None:
        assert _ext.DEBUG_BUILD == (expected == "1")
    assert isinstance(_ext.DEBUG_BUILD, bool)


def test_typed_package_ships_marker_and_stubs():
    root = importlib.resources.files("flow_orchestrator")
    assert root.joinpath("py.typed").is_file()
    assert root.joinpath("_ext.pyi").is_file()


def test_import_configures_no_logging_handlers():
    import logging

    handlers = logging.getLogger("flow_orchestrator").handlers
    assert all(isinstance(h, logging.NullHandler) for h in handlers)
    assert not logging.getLogger().handlers or all(
        not h.__module__.startswith("flow_orchestrator") for h in logging.getLogger().handlers)


def test_every_public_name_has_a_docstring():
    import flow_orchestrator.dag
    import flow_orchestrator.data
    import flow_orchestrator.engine
    import flow_orchestrator.errors
    import flow_orchestrator.exporters.otel
    import flow_orchestrator.exporters.prometheus
    import flow_orchestrator.graphlib
    import flow_orchestrator.metrics
    import flow_orchestrator.middleware
    import flow_orchestrator.observers
    import flow_orchestrator.progress
    import flow_orchestrator.status
    import flow_orchestrator.workflow

    for module in (flow_orchestrator, flow_orchestrator.dag, flow_orchestrator.errors,
                   flow_orchestrator.workflow, flow_orchestrator.engine, flow_orchestrator.data,
                   flow_orchestrator.status, flow_orchestrator.graphlib, flow_orchestrator.metrics,
                   flow_orchestrator.middleware, flow_orchestrator.observers,
                   flow_orchestrator.progress, flow_orchestrator.exporters.prometheus,
                   flow_orchestrator.exporters.otel):
        assert module.__doc__, module.__name__
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj) or isinstance(obj, type):
                assert obj.__doc__, f"{module.__name__}.{name} has no docstring"


def test_import_loads_no_optional_dependency():
    import subprocess
    import sys

    code = ("import sys, flow_orchestrator, flow_orchestrator.middleware, flow_orchestrator.observers; "
            "print(sorted(m for m in ('prometheus_client', 'opentelemetry', 'tqdm', 'structlog') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd="/")
    assert out.stdout.strip() == "[]"
