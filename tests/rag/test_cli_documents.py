"""`rag documents`: a knowledge base's queue with position, stage, pages and ETA, read from a
live server."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli.main import app
from rag.client import Client
from tests.cli_live import live_server

runner = CliRunner()


def test_documents_lists_the_queue_in_the_order_it_will_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with live_server(tmp_path, monkeypatch) as live:
        live.app.state.worker.stop()  # everything stays queued
        with Client(live.url) as client:
            client.create_kb("handbook")
            for name, priority in (("bulk.txt", "batch"), ("urgent.txt", "interactive")):
                content = f"{name} 的内容。".encode() * 20
                client.upload("handbook", content, filename=name, priority=priority)  # type: ignore[arg-type]

        listed = runner.invoke(app, ["documents", "--kb", "handbook", "--status", "queued"])
        assert listed.exit_code == 0, listed.output
        lines = listed.output.splitlines()
        assert lines[0].startswith("queued") and "#1" in lines[0] and "urgent.txt" in lines[0]
        assert "#2" in lines[1] and "bulk.txt" in lines[1]

        none = runner.invoke(app, ["documents", "--kb", "handbook", "--status", "ready"])
        assert none.exit_code == 0 and "no ready documents in handbook" in none.output
        bad = runner.invoke(app, ["documents", "--kb", "handbook", "--status", "done"])
        assert bad.exit_code == 1 and "--status must be one of" in bad.output
        unknown = runner.invoke(app, ["documents", "--kb", "handbok"])
        assert unknown.exit_code == 1 and "Did you mean 'handbook'?" in unknown.output
