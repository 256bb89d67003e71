"""SQL is the source of truth; FAISS follows it. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, update

from ingest.upload import stage_upload
from rag.ml.embedding import FakeEmbedder
from rag.services import Services
from rag.store.models import Base, Chunk, Document, Job, JobStatus
from tests.conftest import make_settings

TEXTS = {
    f"doc{i}.txt": (f"第 {i} 号文档\n\n" + f"这是第 {i} 份测试文档，主题编号 {i}。" * 40).encode()
    for i in range(4)
}


@pytest.fixture
def svc(tmp_path: Path, database_url: str) -> Services:
    s = Services.create(make_settings(tmp_path / "data", database_url))
    yield s
    s.close()


def _add(svc: Services, kb_id: str, name: str, data: bytes, tmp: Path) -> str:
    path = tmp / name
    path.write_bytes(data)
    with path.open("rb") as fh:
        staged = stage_upload(fh, name, svc.settings.data_dir, 10**8)
    doc, _ = svc.knowledge.add_document(kb_id, staged)
    return doc.id


def _drain(svc: Services) -> None:
    worker = svc.worker()
    while worker.run_once():
        pass


def _sql_ids(svc: Services, kb_id: str) -> set[int]:
    with svc.db.read() as session:
        return set(session.execute(select(Chunk.id).where(Chunk.kb_id == kb_id)).scalars())


def _ready_chunk_ids(svc: Services, kb_id: str) -> set[int]:
    with svc.db.read() as session:
        return set(
            session.execute(
                select(Chunk.id)
                .join(Document)
                .where(Document.kb_id == kb_id, Document.status == "ready")
            ).scalars()
        )


def test_migrations_match_models(svc: Services) -> None:
    with svc.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_index_equals_sql_after_ingest_delete_restart(svc: Services, tmp_path: Path) -> None:
    kb = svc.knowledge.create_kb("kb")
    ids = [_add(svc, kb.id, n, d, tmp_path) for n, d in TEXTS.items()]
    _drain(svc)
    assert set(svc.indexes.get(kb.id).ids().tolist()) == _ready_chunk_ids(svc, kb.id)
    svc.indexes.save_dirty()

    with svc.db.read() as session:
        gone = set(session.execute(select(Chunk.id).where(Chunk.document_id == ids[0])).scalars())
    svc.knowledge.delete_document(kb.id, ids[0])
    assert gone and not gone & set(svc.indexes.get(kb.id).ids().tolist())

    # Restart: the snapshot on disk predates the delete; catch-up must drop the ids.
    again = Services.create(svc.settings)
    try:
        index_ids = set(again.indexes.get(kb.id).ids().tolist())
        assert index_ids == _sql_ids(again, kb.id) == _ready_chunk_ids(again, kb.id)
        assert not gone & index_ids
        hits = again.retriever.search(kb.id, "第 0 份测试文档", top_k=20)
        assert all(h.document_id != ids[0] for h in hits)
    finally:
        again.db.dispose()


def test_replica_catches_up_from_sql(svc: Services, tmp_path: Path) -> None:
    kb = svc.knowledge.create_kb("kb")
    replica = Services.create(svc.settings)
    try:
        assert len(replica.indexes.get(kb.id)) == 0
        doc = _add(svc, kb.id, "doc1.txt", TEXTS["doc1.txt"], tmp_path)
        _drain(svc)
        replica.indexes.sync()
        assert set(replica.indexes.get(kb.id).ids().tolist()) == _sql_ids(svc, kb.id)
        svc.knowledge.delete_document(kb.id, doc)
        replica.indexes.sync()
        assert len(replica.indexes.get(kb.id)) == 0
    finally:
        replica.db.dispose()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "manifest"])
def test_damaged_snapshot_is_quarantined_and_rebuilt(
    svc: Services, tmp_path: Path, damage: str
) -> None:
    kb = svc.knowledge.create_kb("kb")
    _add(svc, kb.id, "doc1.txt", TEXTS["doc1.txt"], tmp_path)
    _drain(svc)
    svc.indexes.get(kb.id)
    assert svc.indexes.save_dirty() == 1
    directory = svc.indexes.directory(kb.id)
    files = list(directory.glob("vectors-*.faiss"))
    assert files
    for f in files:
        data = f.read_bytes()
        if damage == "garbage":
            f.write_bytes(b"garbage")
        elif damage == "truncated":
            f.write_bytes(data[: len(data) // 2])
        else:
            (directory / "manifest.json").write_text('{"format_version": 1, "kb_id"')
    expected_hits = [h.chunk_id for h in svc.retriever.search(kb.id, "第 1 份测试文档", top_k=5)]
    again = Services.create(svc.settings)
    try:
        assert set(again.indexes.get(kb.id).ids().tolist()) == _sql_ids(svc, kb.id)
        quarantined = list(directory.parent.glob(f"{directory.name}.corrupt-*"))
        assert quarantined and any(quarantined[0].iterdir())  # moved aside, not deleted
        hits = [h.chunk_id for h in again.retriever.search(kb.id, "第 1 份测试文档", top_k=5)]
        assert hits == expected_hits
    finally:
        again.db.dispose()


def test_dead_workers_job_is_taken_over(svc: Services, tmp_path: Path) -> None:
    kb = svc.knowledge.create_kb("kb")
    doc_id = _add(svc, kb.id, "doc1.txt", TEXTS["doc1.txt"], tmp_path)
    dead = svc.worker(worker_id="dead-host:1:x")
    job = dead.claim()
    assert job is not None  # claimed, then the process "died": no heartbeat any more
    assert svc.worker().claim() is None  # the lease still holds
    with svc.db.write() as session:
        session.execute(
            update(Job).values(
                heartbeat_at=svc.db.now() - timedelta(seconds=svc.settings.ingest.lease_s + 1)
            )
        )
    _drain(svc)
    with svc.db.read() as session:
        assert session.get(Document, doc_id).status == "ready"
        assert session.get(Job, job.id).status == JobStatus.succeeded


def test_poison_job_gives_up_and_fails_document(svc: Services, tmp_path: Path) -> None:
    kb = svc.knowledge.create_kb("kb")
    doc_id = _add(svc, kb.id, "doc1.txt", TEXTS["doc1.txt"], tmp_path)
    with svc.db.write() as session:
        session.execute(update(Job).values(attempts=svc.settings.ingest.max_attempts))
    _drain(svc)
    with svc.db.read() as session:
        doc = session.get(Document, doc_id)
        assert doc.status == "failed" and "gave up" in doc.error


class CountingEmbedder(FakeEmbedder):
    def __init__(self) -> None:
        super().__init__(64)
        self.embedded = 0

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        self.embedded += len(texts)
        return super().embed_passages(texts)


def test_same_text_is_never_embedded_twice(tmp_path: Path, database_url: str) -> None:
    embedder = CountingEmbedder()
    svc = Services.create(make_settings(tmp_path / "data", database_url), embedder=embedder)
    try:
        a = svc.knowledge.create_kb("a")
        b = svc.knowledge.create_kb("b")
        _add(svc, a.id, "doc1.txt", TEXTS["doc1.txt"], tmp_path)
        _drain(svc)
        first = embedder.embedded
        assert first > 0
        _add(svc, b.id, "doc1.txt", TEXTS["doc1.txt"], tmp_path)
        _drain(svc)
        assert embedder.embedded == first
        assert len(svc.indexes.get(b.id)) == len(svc.indexes.get(a.id))
    finally:
        svc.close()
