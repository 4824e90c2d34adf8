"""The package type-checks (it ships ``py.typed`` and stubs for the compiled core)."""

from __future__ import annotations

import subprocess
import sys


def test_package_passes_mypy(tmp_path):
    # Checks the installed package, stubs included, from outside the source tree.
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "-p", "flow_orchestrator", "--ignore-missing-imports",
         "--no-incremental", "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
