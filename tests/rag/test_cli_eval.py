"""`rag eval` sends a golden set to the server, prints a table per mode and writes the JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli.main import app
from tests.cli_live import live_server

runner = CliRunner()


def test_eval_prints_a_table_and_writes_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = tmp_path / "手册.txt"
    doc.write_text("员工手册\n\n第一章 年假\n\n员工每年享有十天带薪年假。\n", encoding="utf-8")
    golden = tmp_path / "golden.jsonl"
    lines = [
        {"id": "a", "question": "年假几天", "answer_excerpt": "员工每年享有十天带薪年假"},
        {"id": "b", "question": "年假", "filename": "手册.txt", "page": 1},
    ]
    golden.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines), encoding="utf-8")
    out = tmp_path / "report.json"
    with live_server(tmp_path, monkeypatch):
        ingested = runner.invoke(app, ["ingest", str(doc), "--kb", "hb", "--create", "--wait"])
        assert ingested.exit_code == 0, ingested.output
        args = ["eval", "--kb", "hb", "--golden", str(golden), "--json", str(out)]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        for word in ("mode", "hit@1", "MRR", "nDCG@10", "p95 ms", "lexical", "dense", "hybrid"):
            assert word in result.output
        report = json.loads(out.read_text())
        assert report["questions"] == 2 and report["golden"] == str(golden)
        assert report["modes"]["lexical"]["hit_at"]["1"] == 1.0

        args = ["eval", "--kb", "hb", "--golden", str(golden), "--modes", "lexical"]
        only = runner.invoke(app, args)
        assert only.exit_code == 0 and "dense" not in only.output

        args = ["eval", "--kb", "hb", "--golden", str(golden), "--baselines", "--json", str(out)]
        beside = runner.invoke(app, args)
        assert beside.exit_code == 0, beside.output
        modes = json.loads(out.read_text())["modes"]
        assert list(modes) == ["naive-bm25", "naive-dense", "lexical", "dense", "hybrid"]
        assert modes["naive-bm25"]["hit_at"]["1"] == 1.0  # the one window holds the answer
        assert "naive-bm25" in beside.output and "naive-dense" in beside.output
        args = ["eval", "--kb", "hb", "--golden", str(golden), "--baselines", "--modes", "hybrid"]
        one = runner.invoke(app, args)
        assert one.exit_code == 0 and "naive-bm25" in one.output and "lexical" not in one.output

        golden.write_text('{"id": "a", "question": "年假"}\nnot json\n', encoding="utf-8")
        broken = runner.invoke(app, ["eval", "--kb", "hb", "--golden", str(golden)])
        assert broken.exit_code == 1 and "golden.jsonl:2: not JSON" in broken.output
