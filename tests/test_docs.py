"""The project's documentation: README.md stays short and starts with the two quickstart
commands, docs/configuration.md matches what scripts/gen_config_docs.py generates from
rag/core/config.py, and the MkDocs site builds with --strict (broken links and nav entries fail)."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_config_docs", ROOT / "scripts" / "gen_config_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(language, lines) of every fenced code block, in order."""
    blocks: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    language = ""
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\S*)", line)
        if fence and current is None:
            language, current = fence.group(1), []
        elif fence:
            blocks.append((language, current or []))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_configuration_reference_is_up_to_date() -> None:
    generated = _generator().render()
    current = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert current == generated, (
        "docs/configuration.md is out of date with rag/core/config.py: run "
        "`.venv/bin/python scripts/gen_config_docs.py` and commit the result"
    )


def test_every_setting_has_a_description() -> None:
    """A new setting needs a comment in rag/core/config.py (or a note in the generator)."""
    rows = [
        line
        for line in _generator().render().splitlines()
        if line.startswith("| `") and line.count("|") >= 6
    ]
    assert len(rows) > 50
    undocumented = [row.split("|")[1].strip() for row in rows if not row.split("|")[5].strip()]
    assert not undocumented, f"settings without a description: {undocumented}"


def test_generator_check_mode() -> None:
    assert _generator().main(["--check"]) == 0


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move details into docs/"


def test_readme_starts_with_the_quickstart_and_test_commands() -> None:
    """CI and users run the README's first two commands: keep them first, in a bash block."""
    blocks = _fenced_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no code block"
    language, lines = blocks[0]
    assert language == "bash", "the README's first code block must be a bash block"
    commands = [
        line.split("#", 1)[0].strip()
        for line in lines
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands[:2] == ["bash scripts/quickstart.sh", "bash scripts/test.sh"]


def test_readme_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+://", target) or target.startswith("#"):
            continue
        path = (ROOT / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"README.md links to {target}, which does not exist"


def test_docs_cite_nothing_outside_the_repository() -> None:
    sources = [p for top in ("rag", "api", "ingest", "bench") for p in (ROOT / top).rglob("*.py")]
    for page in [README, *sorted(DOCS.glob("*.md")), *sorted(sources)]:
        text = page.read_text(encoding="utf-8")
        for outside in ("DESIGN.md", "../shared", "shared/"):
            assert outside not in text, f"{page.name} refers to {outside}"


MAX_MODULE_DOCSTRING_LINES = 10
# The exception tree is the module's docstring on purpose (as in httpx's _exceptions.py).
LONG_DOCSTRING_EXEMPT = {"rag/core/errors.py"}


def test_module_docstrings_are_short() -> None:
    """A module docstring says what the module is for in at most 10 lines, counted from the
    opening quotes to the closing ones; details belong on the class or function they describe,
    or in docs/."""
    offenders = []
    for top in ("rag", "api", "ingest"):
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith("rag/store/migrations/versions/"):
                continue
            if relative in LONG_DOCSTRING_EXEMPT:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=relative)
            if ast.get_docstring(tree, clean=False) is None:
                continue
            node = tree.body[0]
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_MODULE_DOCSTRING_LINES:
                offenders.append(f"{relative} ({lines} lines)")
    assert not offenders, (
        f"module docstrings longer than {MAX_MODULE_DOCSTRING_LINES} lines: "
        + ", ".join(offenders)
        + "; move the details to the class or function they describe, or to docs/"
    )


def test_every_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in sorted(DOCS.glob("*.md")):
        assert re.search(rf":\s*{re.escape(page.name)}\s*$", config, re.M), (
            f"docs/{page.name} is not in mkdocs.yml's nav"
        )


def test_site_builds_strictly_and_offline(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra")
    pytest.importorskip("material", reason="mkdocs-material is in the dev extra")
    # No --quiet: mkdocs counts the warnings that --strict turns into a failure only while it
    # logs them, so a quiet build passes with broken links.
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "index.html").is_file()
    assert (site / "configuration.html").is_file()
    for page in site.glob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in html, f"{page.name} loads web fonts"
        assert "fonts.gstatic.com" not in html, f"{page.name} loads web fonts"
