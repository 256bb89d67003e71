"""The pipelined worker: many documents through parse | embed | store, failures isolated,
cancellation honoured, the index equal to SQL at the end."""

from __future__ import annotations

import numpy as np
from sqlalchemy import func, select

from ingest.embedding import FakeEmbedder
from ingest.pipelined_worker import PipelinedWorker
from ingest.upload import stage_upload
from rag import job_control, knowledge
from rag.models import Chunk, Document, Job
from rag.services import Services
from tests.conftest import wait_for


class BatchRecordingEmbedder(FakeEmbedder):
    def __init__(self) -> None:
        super().__init__(64)
        self.batches: list[int] = []

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        self.batches.append(len(texts))
        return super().embed_passages(texts)


def _add(svc: Services, kb_id: str, name: str, data: bytes) -> str:
    path = svc.settings.data_dir / "incoming" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    with path.open("rb") as fh:
        doc, _ = knowledge.add_document(
            svc, kb_id, stage_upload(fh, name, svc.settings.data_dir, 10**7)
        )
    return doc.id


def _statuses(svc: Services) -> dict[str, str]:
    with svc.db.read() as session:
        return dict(session.execute(select(Document.filename, Document.status)).all())


def test_many_documents_flow_through_and_batch_across_documents(services: Services) -> None:
    embedder = BatchRecordingEmbedder()
    services._embedder = embedder
    kb = knowledge.create_kb(services, "kb")
    for i in range(30):
        _add(services, kb.id, f"d{i}.txt", f"第 {i} 份文件。内容 {i}。".encode() * (i + 1))
    _add(services, kb.id, "broken.pdf", b"%PDF-1.4\n" + b"x" * 300)
    worker = PipelinedWorker(services, threads=2)
    worker.start()
    try:
        wait_for(lambda: all(s in ("ready", "failed") for s in _statuses(services).values()))
    finally:
        worker.stop()
    statuses = _statuses(services)
    assert statuses.pop("broken.pdf") == "failed"
    assert set(statuses.values()) == {"ready"} and len(statuses) == 30
    with services.db.read() as session:
        sql_ids = set(session.execute(select(Chunk.id)).scalars())
        total = session.execute(select(func.sum(Document.chunk_count))).scalar_one()
    assert len(sql_ids) == total
    assert set(services.indexes.get(kb.id).ids().tolist()) == sql_ids
    assert sum(embedder.batches) == total


def test_cancel_while_queued_in_the_pipeline(services: Services) -> None:
    kb = knowledge.create_kb(services, "kb")
    doc_id = _add(services, kb.id, "a.txt", "需要取消的文件。".encode() * 50)
    with services.db.read() as session:
        job_id = session.execute(select(Job.id).where(Job.document_id == doc_id)).scalar_one()
    worker = PipelinedWorker(services, threads=1)
    job = worker.claim()
    assert job is not None
    job_control.cancel(services.db, job_id)
    worker._prepare(job)  # parse stage notices the request at its boundary
    with services.db.read() as session:
        assert session.get(Job, job_id).status == "cancelled"
        assert session.get(Document, doc_id).status == "failed"
        assert session.execute(select(func.count()).select_from(Chunk)).scalar_one() == 0
