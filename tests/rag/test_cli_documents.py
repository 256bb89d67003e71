"""`rag documents`: a knowledge base's queue with position, stage, pages and ETA."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ingest.upload import stage_upload
from rag.cli.main import app
from rag.core.config import load_settings
from rag.services import Services
from rag.store.models import JobPriority

runner = CliRunner()


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBEDDING__MODEL", "fake:64")


def test_documents_lists_the_queue_in_the_order_it_will_run(tmp_path: Path) -> None:
    svc = Services.create(load_settings())
    kb = svc.knowledge.create_kb("handbook")
    for name, priority in (
        ("bulk.txt", JobPriority.batch),
        ("urgent.txt", JobPriority.interactive),
    ):
        source = tmp_path / name
        source.write_bytes(f"{name} 的内容。".encode() * 20)
        with source.open("rb") as fh:
            staged = stage_upload(fh, name, svc.settings.data_dir, 10**6)
        svc.knowledge.add_document(kb.id, staged, priority=priority)
    svc.close()

    listed = runner.invoke(app, ["documents", "--kb", "handbook", "--status", "queued"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].startswith("queued") and "#1" in lines[0] and "urgent.txt" in lines[0]
    assert "#2" in lines[1] and "bulk.txt" in lines[1]

    none = runner.invoke(app, ["documents", "--kb", "handbook", "--status", "ready"])
    assert none.exit_code == 0 and "no ready documents in handbook" in none.output
    bad = runner.invoke(app, ["documents", "--kb", "handbook", "--status", "done"])
    assert bad.exit_code == 1 and "--status must be one of" in bad.output
