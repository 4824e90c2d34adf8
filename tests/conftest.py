"""Test configuration: hypothesis profiles.

The suite runs against the compiled extension (see ``test_build.py``); ``tests/`` is
put on ``sys.path`` by pyproject's ``pythonpath`` so that ``import flow_orchestrator``
finds the installed package, never the uncompiled source tree.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
