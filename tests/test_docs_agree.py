"""Docs that must agree with the code (issue 13, item 13): loggers, exit statuses, extras."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from flow_orchestrator.cli import texts

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flow_orchestrator"


def _loggers_that_log() -> set[str]:
    """Names of the loggers the package writes to: ``X = logging.getLogger(NAME)`` whose
    ``X`` is then called (``X.error(...)``...) or used again (a ``logger=`` default), or a
    logger handed to structlog."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for var, name in re.findall(r"^(\w+) = logging\.getLogger\(([^)]*)\)", text, re.MULTILINE):
            name = module if name == "__name__" else ast.literal_eval(name)
            calls = re.search(rf"\b{var}\.(debug|info|warning|error|exception|critical|log)\(", text)
            if calls or len(re.findall(rf"\b{var}\b", text)) > 1:  # called, or the default of a logger=
                found.add(name)
        found.update(re.findall(r"wrap_logger\(logging\.getLogger\(\"([\w.]+)\"\)", text))
    return found


def test_the_loggers_listed_in_the_observability_guide_all_log():
    text = (ROOT / "docs" / "observability.md").read_text()
    paragraph = text[text.index("The loggers are"):].split("\n\n")[0]
    listed = {name if name.startswith("flow_orchestrator") else "flow_orchestrator" + name
              for name in re.findall(r"`(\.?[\w.]+)`", paragraph) if "orchestrator" in name or name.startswith(".")}
    assert listed and listed <= _loggers_that_log(), listed - _loggers_that_log()
    assert _loggers_that_log() <= listed, _loggers_that_log() - listed


def test_the_readme_does_not_call_the_benchmark_runner_a_future_milestone():
    readme = (ROOT / "README.md").read_text()
    assert "next\nmilestone" not in readme and "next milestone" not in readme
    assert (ROOT / "bench" / "run.py").exists()


def test_exit_statuses_agree_between_the_guide_and_the_help():
    guide = (ROOT / "docs" / "cli.md").read_text()
    table = guide[guide.index("## Exit status and errors"):].split("\n\n")[1]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.MULTILINE)}
    assert documented == {0, 1, 2, 130}
    for epilog in (texts.HELP_MAIN_EPILOG, texts.HELP_RUN_EPILOG, texts.HELP_RESUME_EPILOG, texts.HELP_STATUS_EPILOG,
                   texts.HELP_DELETE_EPILOG):
        said = epilog[epilog.index("exit status:"):]
        assert {int(code) for code in re.findall(r"(?:^|[;:] ?|\n)(\d+) ", said)} == documented, said


def test_tests_that_need_an_extra_skip_naming_it():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for path in (ROOT / "tests").glob("test_*.py"):
        if path.name == Path(__file__).name:
            continue
        for call in re.findall(r"importorskip\((.*)\)", path.read_text()):
            named = re.findall(r"the '(\w+)' extra", call)
            assert named and set(named) <= extras, f"{path.name}: importorskip({call}) names no extra"
