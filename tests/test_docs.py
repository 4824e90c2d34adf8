"""The user guide (docs/*.md): its Python examples run, its links resolve, and the
generated parts (docs/api.md, the status table of docs/execution.md) are up to date.

The ``python`` blocks of a page run in order in one namespace (a later block may use
what an earlier one defined), in a temporary working directory.  A block may be skipped
only when it needs a server the suite does not start, by an HTML comment on the line
before it: ``<!-- no-test: needs a PostgreSQL server -->``; there may be at most
``MAX_SKIPPED`` such blocks in the whole guide.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys
from dataclasses import dataclass

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
GENERATED = {"api.md"}
MAX_SKIPPED = 3
_NO_TEST = re.compile(r"^<!-- no-test: (needs an? .*server.*) -->$")

# An sdist carries the tests but (as MANIFEST.in stands) not the guide.
pytestmark = pytest.mark.skipif(not (DOCS / "index.md").is_file(), reason="no docs/ here (an unpacked sdist?)")


@dataclass(frozen=True)
class Block:
    page: pathlib.Path
    line: int  # 1-based line of the first line of code
    code: str
    skip: str | None


def blocks(page: pathlib.Path) -> list[Block]:
    """The ```python blocks of a page, with the skip reason of those marked no-test."""
    lines = page.read_text(encoding="utf-8").split("\n")
    found: list[Block] = []
    previous = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == "```python":
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            assert end < len(lines), f"{page.name}:{i + 1}: unclosed ```python block"
            marker = _NO_TEST.match(previous.strip())
            assert marker or not previous.strip().startswith("<!-- no-test"), \
                f"{page.name}:{i}: a no-test marker must say which server the block needs"
            found.append(Block(page, i + 2, "\n".join(lines[i + 1:end]) + "\n",
                               marker.group(1) if marker else None))
            i = end + 1
            previous = ""
            continue
        if line.strip():
            previous = line
        i += 1
    return found


def load_gen_api():
    spec = importlib.util.spec_from_file_location("docs_gen_api", DOCS / "gen_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


def test_the_guide_has_its_pages():
    names = {page.name for page in PAGES}
    assert {"index.md", "concepts.md", "workflows.md", "actions.md", "execution.md", "failures.md",
            "middleware.md", "observability.md", "durability.md", "executors.md", "cli.md",
            "internals.md", "api.md", "dynamic.md"} <= names


def test_every_guide_page_has_examples():
    for page in PAGES:
        if page.name not in GENERATED:
            assert blocks(page), f"{page.name} has no python example"


def test_few_examples_are_skipped():
    skipped = [f"{b.page.name}:{b.line}" for page in PAGES for b in blocks(page) if b.skip]
    assert len(skipped) <= MAX_SKIPPED, f"too many no-test blocks: {skipped}"


def test_python_code_is_fenced_as_python():
    """No Python hides from the examples test behind another fence name."""
    other = re.compile(r"^```\s*(py|python3|pycon|ipython|python-console)\s*$", re.MULTILINE)
    for page in PAGES:
        assert not other.findall(page.read_text(encoding="utf-8")), f"{page.name}: fence Python as ```python"


def test_generated_pages_hold_no_python_blocks():
    for name in GENERATED:
        assert not blocks(DOCS / name), f"{name} is generated: its code blocks must not be python"


@pytest.mark.parametrize("page", [p for p in PAGES if p.name not in GENERATED], ids=lambda p: p.name)
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # examples may import modules they wrote
    modules = set(sys.modules)
    namespace = {"__name__": f"docs_{page.stem}"}
    try:
        for block in blocks(page):
            if block.skip:
                continue
            # Line numbers of tracebacks are the page's: the code is compiled at its place.
            code = compile("\n" * (block.line - 1) + block.code, str(page), "exec")
            exec(code, namespace)  # noqa: S102 - running the examples is the point
    finally:
        for name in set(sys.modules) - modules:  # forget the modules they wrote
            if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(tmp_path)):
                del sys.modules[name]


# -- generated parts ---------------------------------------------------------------------------


def test_api_reference_is_up_to_date():
    """docs/api.md is what docs/gen_api.py generates now (run it to refresh the file).

    Without dask the dask_executor section cannot be generated: it is left out of the
    comparison (the committed file, generated with dask installed, keeps it, and
    ``gen_api.py`` run without dask keeps the committed section).
    """
    gen_api = load_gen_api()
    committed = (DOCS / "api.md").read_text(encoding="utf-8")
    fresh = gen_api.api_markdown()
    if importlib.util.find_spec("distributed") is None:
        committed = gen_api.without_section(committed, "flow_orchestrator.dask_executor")
        fresh = gen_api.without_section(fresh, "flow_orchestrator.dask_executor")
    assert fresh == committed, "docs/api.md is stale: run `python docs/gen_api.py`"


def test_status_table_is_up_to_date():
    gen_api = load_gen_api()
    page = (DOCS / "execution.md").read_text(encoding="utf-8")
    assert gen_api.TABLE_START in page
    assert gen_api.with_status_table(page) == page, "the status table is stale: run `python docs/gen_api.py`"


def test_status_table_needs_a_description_of_every_transition():
    gen_api = load_gen_api()
    gen_api.TRIGGERS = {k: v for k, v in gen_api.TRIGGERS.items() if k != ("RUNNING", "PENDING")}
    with pytest.raises(SystemExit, match="RUNNING.*PENDING"):
        gen_api.status_table()


def test_api_generation_is_deterministic():
    gen_api = load_gen_api()
    assert gen_api.api_markdown() == gen_api.api_markdown()


# -- links -------------------------------------------------------------------------------------


def _slug(heading: str) -> str:
    """MkDocs' default heading id (the toc extension's slugify)."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[-\s]+", "-", text).strip("-")


def _anchors(page: pathlib.Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    ids = set(re.findall(r'<a id="([^"]+)"></a>', text))
    in_code = False
    for line in text.split("\n"):
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            ids.add(_slug(line.lstrip("#")))
    return ids


def test_links_between_pages_resolve():
    link = re.compile(r"\]\(([^)\s]+?)\)")
    problems = []
    for page in [*PAGES, ROOT / "README.md"]:
        for target in link.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # an external URL
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                problems.append(f"{page.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                problems.append(f"{page.name}: {target} (no such anchor)")
    assert not problems, problems


def test_mkdocs_nav_lists_every_page():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = re.findall(r":\s*(\S+\.md)\s*$", config, flags=re.MULTILINE)
    assert sorted(listed) == sorted(page.name for page in PAGES)
    assert len(listed) == len(set(listed))


def test_readme_links_the_guide():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Documentation", 1)[1].split("\n## ", 1)[0]
    for page in PAGES:
        assert f"(docs/{page.name})" in section, f"README's Documentation section does not link {page.name}"
