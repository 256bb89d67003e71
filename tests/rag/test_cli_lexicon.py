"""`rag lexicon show|set|add|suggest` and `rag kb relevance` against a live server, and `rag ask`
saying when the knowledge base does not cover a question."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli.main import app
from rag.client import Client
from tests.cli_live import live_server
from tests.conftest import FIXTURES

runner = CliRunner()
TEXT = "\n\n".join(
    f"第{n}节：星河云盘的同步客户端支持断点续传。星河云盘管理员可以在控制台设置配额。"
    for n in range(8)
)


def _run(*args: str, stdin: str | None = None) -> str:
    result = runner.invoke(app, list(args), input=stdin)
    assert result.exit_code == 0, result.output
    return result.output


def test_lexicon_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with live_server(tmp_path, monkeypatch) as live:
        with Client(live.url) as client:
            client.create_kb("cloud")
            doc = client.upload("cloud", TEXT.encode(), filename="a.txt")
            client.wait_until_ready("cloud", doc.id)

        assert "no terms" in _run("lexicon", "show", "--kb", "cloud")
        assert "2 term(s): 2 added" in _run("lexicon", "set", "--kb", "cloud", "断点续传", "ＡＢＣ")
        assert "3 term(s): 1 added" in _run(
            "lexicon", "add", "--kb", "cloud", "--file", "-", stdin="配额控制\n\n"
        )
        assert _run("lexicon", "show", "--kb", "cloud").split() == ["abc", "断点续传", "配额控制"]

        suggested = _run("lexicon", "suggest", "--kb", "cloud", "--min-count", "3", "--add")
        assert suggested.splitlines()[0].startswith("星河云盘\t")
        assert "星河云盘" in _run("lexicon", "show", "--kb", "cloud").split()

        bad = runner.invoke(app, ["lexicon", "add", "--kb", "cloud", "x" * 40])
        assert bad.exit_code == 1 and "32 characters" in bad.output


def test_relevance_threshold_and_not_covered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with live_server(tmp_path, monkeypatch) as live:
        with Client(live.url) as client:
            client.create_kb("cloud")
            doc = client.upload("cloud", FIXTURES / "员工手册.md")
            client.wait_until_ready("cloud", doc.id)

        assert "the server's default" in _run("kb", "relevance", "cloud")
        # The fake embedder has no fitted model: the knowledge base refuses once calibrated.
        assert "headings" in _run("kb", "relevance", "cloud", "--calibrate")
        refused = runner.invoke(app, ["ask", "红烧肉怎么做才能肥而不腻？", "--kb", "cloud"])
        assert refused.exit_code == 0 and "does not cover" in refused.output
        assert live.llm.requests == []

        assert "threshold 0.0" in _run("kb", "relevance", "cloud", "--set", "0")
        assert "calibrate" not in _run("kb", "relevance", "cloud", "--default")
        out = _run("kb", "relevance", "cloud", "--calibrate", "--dry-run")
        assert "from " in out and "headings" in out and "not stored" in out
