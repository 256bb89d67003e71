"""The `rag` command line, run in-process with the fake embedder."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli.main import app
from tests.conftest import REPO

runner = CliRunner()


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBEDDING__MODEL", "fake:64")
    monkeypatch.setenv("RAG_LLM__BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("RAG_LLM__MAX_RETRIES", "0")


def test_ingest_folder_search_ask_reindex(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    for src in (REPO / "data" / "samples").iterdir():
        (folder / "sub" / src.name).write_bytes(src.read_bytes())
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n" + b"garbage" * 50)
    (folder / "ignored.bin").write_bytes(b"\x00\x01")

    result = runner.invoke(app, ["ingest", str(folder), "--kb", "handbook"])
    assert result.exit_code == 2, result.output  # one failed document -> non-zero exit
    assert "ready: 2, failed: 1, duplicate: 0, rejected: 0" in result.output
    assert "failed" in result.output and "broken.pdf" in result.output

    again = runner.invoke(app, ["ingest", str(folder / "sub"), "--kb", "handbook"])
    assert again.exit_code == 0 and "duplicate: 2" in again.output

    listed = runner.invoke(app, ["kb", "list"])
    assert "handbook" in listed.output and "documents=3" in listed.output

    found = runner.invoke(app, ["search", "年假", "--kb", "handbook", "--top-k", "2"])
    assert found.exit_code == 0 and "员工手册.md p.1" in found.output

    only = runner.invoke(app, ["ask", "年假有多少天？", "--kb", "handbook", "--retrieval-only"])
    assert only.exit_code == 0 and only.output.startswith("[1] ")

    down = runner.invoke(app, ["ask", "年假有多少天？", "--kb", "handbook"])
    assert down.exit_code != 0

    rebuilt = runner.invoke(app, ["reindex", "--kb", "handbook", "--cache-only"])
    assert rebuilt.exit_code == 0 and "rebuilt index of handbook" in rebuilt.output

    reindexed = runner.invoke(app, ["reindex", "--kb", "handbook", "--chunk-size", "64"])
    assert reindexed.exit_code == 0, reindexed.output
    assert "building index version 2" in reindexed.output
    assert "dense_hit_rate=" in reindexed.output and "index version 2 is live" in reindexed.output
    listed = runner.invoke(app, ["reindex", "versions", "--kb", "handbook"])
    assert "v1  retired" in listed.output and "v2  live" in listed.output
    assert "64/0 tokens" in listed.output
    found = runner.invoke(app, ["search", "年假", "--kb", "handbook", "--top-k", "2"])
    assert found.exit_code == 0 and "员工手册.md p.1" in found.output

    back = runner.invoke(app, ["reindex", "rollback", "--kb", "handbook"])
    assert back.exit_code == 0 and "index version 1 is live" in back.output, back.output
    queued = runner.invoke(app, ["reindex", "--kb", "handbook", "--no-wait"])
    assert queued.exit_code == 0 and "queued" in queued.output
    busy = runner.invoke(app, ["reindex", "--kb", "handbook"])
    assert busy.exit_code != 0
    assert runner.invoke(app, ["reindex"]).exit_code != 0  # --kb is required


def test_kb_create_and_delete() -> None:
    assert runner.invoke(app, ["kb", "create", "hr"]).exit_code == 0
    assert runner.invoke(app, ["kb", "delete", "hr"]).exit_code == 0
    assert "hr" not in runner.invoke(app, ["kb", "list"]).output
