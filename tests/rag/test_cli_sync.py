"""`rag sync`, `rag documents versions` and `restore`, and the client calls behind them, against
a live server with its worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli.main import app
from rag.client import Client
from tests.cli_live import live_server

runner = CliRunner()


def _text(tag: str) -> bytes:
    return (f"{tag} 的条款\n\n" + f"这是{tag}的条款正文。" * 20).encode()


def test_versions_and_restore_through_client_and_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with live_server(tmp_path, monkeypatch) as live, Client(live.url) as client:
        client.create_kb("rules")
        first = client.upload("rules", _text("一"), filename="a.txt", external_id="rule-a")
        client.wait_until_ready("rules", first.id, timeout=60)
        second = client.upload("rules", _text("二"), filename="a2.txt", external_id="rule-a")
        assert (second.key, second.version, second.current) == ("rule-a", 2, False)
        client.wait_until_ready("rules", second.id, timeout=60)
        versions = client.document_versions("rules", first.id)
        assert [(v.version, v.status, v.current) for v in versions] == [
            (2, "ready", True),
            (1, "superseded", False),
        ]
        assert [d.id for d in client.list_documents("rules", external_id="rule-a")] == [second.id]
        assert len(client.list_documents("rules", all_versions=True)) == 2

        listed = runner.invoke(app, ["documents", "versions", second.id, "--kb", "rules"])
        assert listed.exit_code == 0, listed.output
        lines = listed.output.splitlines()
        assert lines[0].startswith("* v2") and lines[1].startswith("  v1")
        restored = runner.invoke(app, ["documents", "restore", "a2.txt", "--kb", "rules"])
        assert restored.exit_code == 0, restored.output
        assert "queued as version 3" in restored.output
        third = client.document_versions("rules", second.id)[0]
        client.wait_until_ready("rules", third.id, timeout=60)
        assert third.sha256 == first.sha256
        again = client.restore_document("rules", third.id, version=3)
        assert again.duplicate and again.id == third.id


def test_rag_sync_prints_its_report_and_schedules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "share"
    source.mkdir()
    (source / "a.txt").write_bytes(_text("甲"))
    (source / "b.txt").write_bytes(_text("乙"))
    settings = {"sync": {"folders": [str(source)], "min_interval_s": 60}}
    with live_server(tmp_path, monkeypatch, **settings) as live, Client(live.url) as client:
        client.create_kb("share")
        done = runner.invoke(app, ["sync", "--kb", "share", "--folder", str(source)])
        assert done.exit_code == 0, done.output
        assert "2 listed" in done.output and "2 added" in done.output
        assert "added    a.txt" in done.output

        (source / "b.txt").unlink()
        scheduled = runner.invoke(
            app, ["sync", "--kb", "share", "--folder", str(source), "--every", "3600"]
        )
        assert scheduled.exit_code == 0, scheduled.output
        assert "deleted  b.txt" in scheduled.output and "next run: job" in scheduled.output
        waiting = client.list_jobs(kind="sync", status="queued")
        assert len(waiting) == 1
        # A new sync of the knowledge base replaces the schedule.
        client.sync("share", folder=str(source))
        assert client.get_job(waiting[0].id).status == "cancelled"

        refused = runner.invoke(app, ["sync", "--kb", "share", "--folder", str(tmp_path)])
        assert refused.exit_code == 1 and "RAG_SYNC__FOLDERS" in refused.output
        neither = runner.invoke(app, ["sync", "--kb", "share"])
        assert neither.exit_code == 1 and "either --folder" in neither.output
