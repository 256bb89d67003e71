"""The pipelined worker: many documents through parse | embed | store, failures isolated,
cancellation honoured, the index equal to SQL at the end; intake running ahead so batches and
commits span documents; each job's stage and pages visible as it moves."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from ingest import pipeline
from ingest.pipeline import STAGES
from ingest.upload import stage_upload
from rag.kb import job_control
from rag.ml.embedding import FakeEmbedder
from rag.services import Services
from rag.store.models import Chunk, Document, Job
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
        doc, _ = svc.knowledge.add_document(
            kb_id, stage_upload(fh, name, svc.settings.data_dir, 10**7)
        )
    return doc.id


def _statuses(svc: Services) -> dict[str, str]:
    with svc.db.read() as session:
        return dict(session.execute(select(Document.filename, Document.status)).all())


def test_many_documents_flow_through_and_batch_across_documents(services: Services) -> None:
    embedder = BatchRecordingEmbedder()
    services._embedder = embedder
    kb = services.knowledge.create_kb("kb")
    for i in range(30):
        _add(services, kb.id, f"d{i}.txt", f"第 {i} 份文件。内容 {i}。".encode() * (i + 1))
    _add(services, kb.id, "broken.pdf", b"%PDF-1.4\n" + b"x" * 300)
    worker = services.pipelined_worker(threads=2)
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
    kb = services.knowledge.create_kb("kb")
    doc_id = _add(services, kb.id, "a.txt", "需要取消的文件。".encode() * 50)
    with services.db.read() as session:
        job_id = session.execute(select(Job.id).where(Job.document_id == doc_id)).scalar_one()
    worker = services.pipelined_worker(threads=1)
    job = worker.claim()
    assert job is not None
    job_control.cancel(services.db, job_id)
    worker._prepare(job)  # parse stage notices the request at its boundary
    with services.db.read() as session:
        assert session.get(Job, job_id).status == "cancelled"
        assert session.get(Document, doc_id).status == "failed"
        assert session.execute(select(func.count()).select_from(Chunk)).scalar_one() == 0


class GatedEmbedder(FakeEmbedder):
    """Holds its first call until `release` is set; records each call's size."""

    def __init__(self) -> None:
        super().__init__(64)
        self.batches: list[int] = []
        self.first = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        if not self.batches:
            self.first = len(texts)
            self.entered.set()
            self.release.wait(60)
        self.batches.append(len(texts))
        return super().embed_passages(texts)


def _job_of(svc: Services, doc_id: str) -> Job:
    with svc.db.read() as session:
        return session.execute(select(Job).where(Job.document_id == doc_id)).scalar_one()


def test_intake_runs_ahead_so_one_batch_and_one_commit_span_many_documents(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedder = GatedEmbedder()
    services._embedder = embedder
    kb = services.knowledge.create_kb("kb")
    for i in range(12):  # one chunk each
        _add(services, kb.id, f"n{i}.txt", f"第 {i} 号通知：请于周{i}前提交材料。".encode())
    groups: list[int] = []
    store_group = pipeline.Pipeline.store_group

    def recorded(self: pipeline.Pipeline, group: Sequence[pipeline.Stored], **kw: Any) -> Any:
        groups.append(len(group))
        return store_group(self, group, **kw)

    monkeypatch.setattr(pipeline.Pipeline, "store_group", recorded)
    syncs: list[str | None] = []
    sync = services.indexes.sync

    def counted_sync(kb_id: str | None = None) -> None:
        syncs.append(kb_id)
        sync(kb_id)

    monkeypatch.setattr(services.indexes, "sync", counted_sync)
    worker = services.pipelined_worker(threads=1)
    worker.start()
    try:
        # While the first call embeds, the other documents are parsed, chunked and queued (the
        # old bounded queue held two), so the next call embeds them all together.
        assert embedder.entered.wait(30)
        wait_for(lambda: worker._to_embed.qsize() == 12 - embedder.first)
        embedder.release.set()
        wait_for(lambda: set(_statuses(services).values()) == {"ready"})
    finally:
        embedder.release.set()
        worker.stop()
    assert embedder.batches == [embedder.first, 12 - embedder.first]
    # Stored in at most two transactions (one, when the second batch was embedded before the
    # store thread took the first), and the index caught up once per transaction.
    assert sum(groups) == 12 and len(groups) <= 2
    assert syncs == [kb.id] * len(groups)
    with services.db.read() as session:
        assert set(services.indexes.get(kb.id).ids().tolist()) == set(
            session.scalars(select(Chunk.id))
        )


def test_stage_and_pages_move_through_parse_chunk_embed_store(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    pause = 1.2  # each stage takes this long, so a poll sees it (stage writes flush in 0.5 s)

    def slow(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kw: Any) -> Any:
            time.sleep(pause)
            return fn(*args, **kw)

        return wrapper

    class SlowEmbedder(FakeEmbedder):
        def embed_passages(self, texts: list[str]) -> np.ndarray:
            time.sleep(pause)
            return super().embed_passages(texts)

    services._embedder = SlowEmbedder(64)
    for name in ("parse_document", "chunk_parsed", "store_group"):
        monkeypatch.setattr(pipeline.Pipeline, name, slow(getattr(pipeline.Pipeline, name)))
    kb = services.knowledge.create_kb("kb")
    doc_id = _add(services, kb.id, "stages.txt", "分阶段处理的文件。".encode() * 30)
    seen: list[tuple[Any, ...]] = []
    worker = services.pipelined_worker(threads=1)
    worker.start()
    try:

        def finished() -> bool:
            job = _job_of(services, doc_id)
            row = (job.stage, job.pages_done, job.pages_total, job.progress_done)
            if not seen or seen[-1] != row:
                seen.append(row)
            return job.status in ("succeeded", "failed")

        wait_for(finished, interval=0.02)
    finally:
        worker.stop()
    stages = [row[0] for row in seen if row[0] is not None]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == [
        "parse",
        "chunk",
        "embed",
        "store",
    ]
    by_stage = {row[0]: row for row in seen}
    assert by_stage["parse"][1:] == (0, None, 0)
    assert by_stage["chunk"][1:] == (1, 1, 1)  # parsed: one page of one
    assert by_stage["embed"][1:] == (1, 1, 2)
    final = _job_of(services, doc_id)
    assert final.status == "succeeded"
    assert (final.stage, final.pages_done, final.pages_total) == ("store", 1, 1)
    assert (final.progress_done, final.progress_total) == (STAGES, STAGES)


def test_cancel_while_embedding_is_honoured_before_storing(services: Services) -> None:
    embedder = GatedEmbedder()
    services._embedder = embedder
    kb = services.knowledge.create_kb("kb")
    doc_id = _add(services, kb.id, "a.txt", "嵌入时取消的文件。".encode() * 30)
    worker = services.pipelined_worker(threads=1)
    worker.start()
    try:
        assert embedder.entered.wait(30)
        job_control.cancel(services.db, _job_of(services, doc_id).id)
        embedder.release.set()
        wait_for(lambda: _job_of(services, doc_id).status == "cancelled")
    finally:
        embedder.release.set()
        worker.stop()
    assert _statuses(services) == {"a.txt": "failed"}
    with services.db.read() as session:
        assert session.execute(select(func.count()).select_from(Chunk)).scalar_one() == 0


def test_the_plain_worker_records_stage_and_pages_too(services: Services) -> None:
    kb = services.knowledge.create_kb("kb")
    doc_id = _add(services, kb.id, "a.txt", "普通工作进程处理的文件。".encode() * 30)
    assert services.worker().run_once()
    job = _job_of(services, doc_id)
    assert (job.status, job.stage, job.pages_done, job.pages_total) == ("succeeded", "store", 1, 1)
    assert job.progress_done == job.progress_total == STAGES
