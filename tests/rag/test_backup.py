"""Backup while documents are being ingested, restore into an empty installation: the restored
knowledge base is exactly the source as of the backup's snapshot, and searches agree."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from ingest.upload import stage_upload
from rag.core.errors import InvalidInput
from rag.generation.llm import LLMClient
from rag.services import Services
from rag.store.backup import backup, restore
from rag.store.models import Chunk, Document, DocumentStatus
from tests.conftest import FakeLLM, make_settings, postgres_schema, wait_for

TOPICS = ["年假", "报销", "加班", "出差", "培训", "保密", "考勤", "福利", "绩效", "离职"]


def _services(data_dir: Path, url: str | None) -> Services:
    settings = make_settings(data_dir, url)
    return Services.create(
        settings, llm=LLMClient(settings.llm, transport=httpx.MockTransport(FakeLLM().handler))
    )


def _stage(svc: Services, kb_id: str, i: int) -> str:
    topic = TOPICS[i % len(TOPICS)]
    path = svc.settings.data_dir / "incoming" / f"doc-{i}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"第{i}号制度：关于{topic}的规定。" + f"{topic}的细则第{i}条。" * 80)
    with path.open("rb") as fh:
        staged = stage_upload(fh, path.name, svc.settings.data_dir, 10**7)
    return svc.knowledge.add_document(kb_id, staged)[0].id


@pytest.fixture
def other_database_url(database_url: str) -> Iterator[str | None]:
    """An empty database of the same kind as `database_url` to restore into."""
    if database_url.startswith("sqlite"):
        yield None  # the restore target's own data dir holds its SQLite file
        return
    with postgres_schema("r") as url:
        yield url


def test_backup_during_ingestion_restores_the_snapshot(
    tmp_path: Path, database_url: str, other_database_url: str | None
) -> None:
    source = _services(tmp_path / "source", database_url)
    kb = source.knowledge.create_kb("handbook").id
    for i in range(6):
        _stage(source, kb, i)
    worker = source.worker()
    while worker.run_once():
        pass
    later = [_stage(source, kb, i) for i in range(6, 14)]  # still queued when the backup starts

    stop = threading.Event()

    def ingest() -> None:
        while not stop.is_set() and worker.run_once():
            pass

    thread = threading.Thread(target=ingest)
    thread.start()
    try:
        report = backup(source.settings, tmp_path / "backup")
    finally:
        thread.join()
    while worker.run_once():  # the source moves on after the backup
        pass
    assert report.rows["documents"] == 14 and report.files >= 14

    target = _services(tmp_path / "target", other_database_url)
    target.close()  # restore needs the installation idle; it was only created (migrated)
    restore(target.settings, tmp_path / "backup")
    restored = _services(tmp_path / "target", other_database_url)
    try:
        with restored.db.read() as session:
            docs = {
                d.id: d.status
                for d in session.execute(select(Document).where(Document.kb_id == kb)).scalars()
            }
            restored_chunks = {
                (c.id, c.document_id, c.text, c.embedding)
                for c in session.execute(select(Chunk).where(Chunk.kb_id == kb)).scalars()
            }
        assert len(docs) == 14
        ready = [d for d, status in docs.items() if status == DocumentStatus.ready]
        assert len(ready) >= 6
        with source.db.read() as session:
            source_chunks = {
                (c.id, c.document_id, c.text, c.embedding)
                for c in session.execute(
                    select(Chunk).where(Chunk.document_id.in_(ready))
                ).scalars()
            }
        assert restored_chunks == source_chunks  # the snapshot's ready documents, exactly
        assert restored.indexes.check(kb)["consistent"]
        for topic in TOPICS:
            got = [p.chunk_id for p in restored.retriever.search(kb, f"{topic}的规定", 5)]
            want = [
                p.chunk_id
                for p in source.retriever.search(
                    kb, f"{topic}的规定", 5, filters={"document_ids": ready}
                )
            ]
            assert got == want, topic
        for doc_id in set(docs) - set(ready):  # caught mid-flight: the worker finishes them
            assert doc_id in later
        worker2 = restored.worker()

        def statuses() -> set[str]:
            while worker2.run_once():
                pass
            with restored.db.read() as session:
                query = select(Document.status).where(Document.kb_id == kb)
                return set(session.execute(query).scalars())

        # a job caught running keeps its lease in the backup: taken over once it expires
        wait_for(lambda: statuses() == {DocumentStatus.ready}, timeout=60, interval=0.2)
    finally:
        restored.close()
        source.close()


def test_restore_refuses_a_non_empty_installation(tmp_path: Path) -> None:
    svc = _services(tmp_path / "a", None)
    svc.knowledge.create_kb("kb")
    svc.close()
    backup(svc.settings, tmp_path / "backup")
    with pytest.raises(InvalidInput, match="not empty"):
        backup(svc.settings, tmp_path / "backup")
    with pytest.raises(InvalidInput, match="not empty"):
        restore(svc.settings, tmp_path / "backup")
    with pytest.raises(InvalidInput, match="not a backup"):
        restore(make_settings(tmp_path / "b"), tmp_path / "nowhere")


def test_cli_backup_and_restore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from rag.cli.main import app

    svc = _services(tmp_path / "a", None)
    kb = svc.knowledge.create_kb("kb").id
    _stage(svc, kb, 1)
    svc.close()
    runner = CliRunner()
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "a"))
    made = runner.invoke(app, ["backup", str(tmp_path / "bk")])
    assert made.exit_code == 0 and "1 documents" in made.output, made.output
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "b"))
    back = runner.invoke(app, ["restore", str(tmp_path / "bk"), "--yes"])
    assert back.exit_code == 0 and "restored 1 documents" in back.output, back.output
    again = runner.invoke(app, ["restore", str(tmp_path / "bk"), "--yes"])
    assert again.exit_code == 1 and "not empty" in again.output
