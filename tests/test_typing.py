"""The package type-checks (it ships ``py.typed`` and stubs for the compiled core)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

SEAM = pathlib.Path(__file__).with_name("typing_seam.py")

# Objects that do not fit the core's Protocols, one way each: mypy must refuse every one.
MISFITS = '''
from typing import Any, Callable
from flow_orchestrator._ext import CallbackTimer, CheckpointWriter, NodeEventSink

class Sink:
    def node_start(self, node: int, attempt: int) -> None: ...

class Writer:
    def encode(self, node: int, output: Any) -> str: return ""
    def node_ended(self, node: int, status: int, attempt: int, started: float, ended: float,
                   value: Any) -> None: ...

class Timer:
    def schedule(self, due: float, fn: Callable[[], object]) -> None: ...

events: NodeEventSink = Sink()          # misfit: no node_success... node_timeout
checkpoint: CheckpointWriter = Writer()  # misfit: encode gives str, not bytes
timer: CallbackTimer = Timer()          # misfit: schedule takes no arguments for fn
'''


def mypy(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", *args, "--ignore-missing-imports",
         "--no-incremental", "--cache-dir", str(cwd / "cache")],
        capture_output=True, text=True, cwd=cwd, timeout=600)


def test_package_passes_mypy(tmp_path):
    # Checks the installed package, stubs included, from outside the source tree.
    done = mypy("-p", "flow_orchestrator", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_python_side_of_the_core_seam_satisfies_its_protocols(tmp_path):
    # typing_seam.py assigns Dispatcher, RunWriter, Timer... to the Protocols of _ext.pyi;
    # the misfits prove those Protocols are strict enough to refuse what does not fit.
    misfits = tmp_path / "misfits.py"
    misfits.write_text(MISFITS)
    done = mypy(str(SEAM), str(misfits), cwd=tmp_path)
    errors = re.findall(r"^(.+?):(\d+): error: (.*)$", done.stdout, re.M)
    assert [e for e in errors if not e[0].endswith("misfits.py")] == [], done.stdout + done.stderr
    expected = {n for n, line in enumerate(MISFITS.split("\n"), 1) if "# misfit" in line}
    assert {int(line) for _, line, _ in errors} == expected, done.stdout + done.stderr
    assert all("Incompatible types in assignment" in message for *_, message in errors), done.stdout
