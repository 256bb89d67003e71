"""`rag eval` prints a table per mode and writes the JSON report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBEDDING__MODEL", "fake:64")


def test_eval_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    doc = tmp_path / "手册.txt"
    doc.write_text("员工手册\n\n第一章 年假\n\n员工每年享有十天带薪年假。\n", encoding="utf-8")
    assert runner.invoke(app, ["ingest", str(doc), "--kb", "hb"]).exit_code == 0
    golden = tmp_path / "golden.jsonl"
    lines = [
        {"id": "a", "question": "年假几天", "answer_excerpt": "员工每年享有十天带薪年假"},
        {"id": "b", "question": "年假", "filename": "手册.txt", "page": 1},
    ]
    golden.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines), encoding="utf-8")
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["eval", "--kb", "hb", "--golden", str(golden), "--json", str(out)])
    assert result.exit_code == 0, result.output
    for word in ("mode", "hit@1", "MRR", "nDCG@10", "p95 ms", "lexical", "dense", "hybrid"):
        assert word in result.output
    report = json.loads(out.read_text())
    assert report["questions"] == 2
    assert report["modes"]["lexical"]["hit_at"]["1"] == 1.0

    only = runner.invoke(app, ["eval", "--kb", "hb", "--golden", str(golden), "--modes", "lexical"])
    assert only.exit_code == 0 and "dense" not in only.output
