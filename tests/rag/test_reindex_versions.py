"""Versioned re-indexing: a new version is built beside the live one, checked, switched live at
once; the old one stays for rollback; models are never mixed (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from ingest import pipeline, reindex
from ingest.upload import stage_upload
from rag.core.errors import Conflict
from rag.kb import job_control, versions
from rag.ml.embedding import FakeEmbedder
from rag.services import Services
from rag.store.models import Chunk, Document, Job, JobStatus, KnowledgeBase

TOPICS = {
    "leave.txt": "年假制度：员工每年享有十五天带薪年假，需提前两周申请。",
    "expense.txt": "报销流程：差旅费用须在出差结束后三十天内提交发票报销。",
    "security.txt": "信息安全：密码每九十天更换一次，禁止在公共网络传输机密文件。",
    "onboarding.txt": "入职指南：新员工第一天领取工牌和电脑，参加安全培训。",
    "meeting.txt": "会议室预订：通过内部系统预订，每次最长四小时，取消需提前通知。",
}
QUERIES = ["年假怎么申请", "差旅发票报销", "密码多久更换", "新员工领取工牌", "预订会议室"]


@pytest.fixture
def svc(db_services: Services) -> Services:
    return db_services


def _body(name: str, text: str) -> str:
    # Long enough for several chunks, with numbered lines so chunk texts differ.
    return "\n".join(f"{text}（第 {i} 条，{name}）" for i in range(40))


def _add(svc: Services, kb_id: str, name: str, text: str) -> str:
    path = svc.settings.data_dir / "incoming" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_body(name, text))
    with path.open("rb") as fh:
        staged = stage_upload(fh, name, svc.settings.data_dir, 10**7)
    doc, _ = svc.knowledge.add_document(kb_id, staged)
    worker = svc.worker()
    while worker.run_once():
        pass
    return doc.id


@pytest.fixture
def kb(svc: Services) -> str:
    kb_id = svc.knowledge.create_kb("handbook").id
    for name, text in TOPICS.items():
        _add(svc, kb_id, name, text)
    return kb_id


def _results(svc: Services, kb_id: str) -> list[list[int]]:
    return [[p.chunk_id for p in svc.retriever.search(kb_id, q, top_k=5)] for q in QUERIES]


def _chunk_ids(svc: Services, kb_id: str, version: int) -> set[int]:
    with svc.db.read() as session:
        return set(
            session.execute(
                select(Chunk.id).where(Chunk.kb_id == kb_id, Chunk.version == version)
            ).scalars()
        )


def _versions(svc: Services, kb_id: str) -> dict[int, versions.VersionInfo]:
    with svc.db.write() as session:
        versions.settle_abandoned(session, kb_id)
        session.flush()
        return {v.number: v for v in versions.list_versions(session, kb_id)}


def _job(svc: Services, job_id: str) -> Job:
    with svc.db.read() as session:
        return job_control.get_job(session, job_id)


def _reindex(svc: Services, kb_id: str, **settings: Any) -> tuple[int, Job]:
    version, job = svc.versions.start_reindex(kb_id, **settings)
    assert svc.worker().run_job(job.id)
    return version.number, _job(svc, job.id)


def test_new_chunk_size_becomes_live_and_the_old_version_is_retired(svc: Services, kb: str) -> None:
    v1_ids = _chunk_ids(svc, kb, 1)
    number, job = _reindex(svc, kb, chunk_tokens=64)
    assert number == 2 and job.status == JobStatus.succeeded, job.error
    assert job.result["checks"]["ok"] and job.result["checks"]["dense_hit_rate"] >= 0.8
    listed = _versions(svc, kb)
    assert (listed[1].status, listed[2].status) == ("retired", "live")
    assert (listed[2].chunk_tokens, listed[1].chunk_tokens) == (64, 256)
    assert listed[2].documents == listed[1].documents == len(TOPICS)
    v2_ids = _chunk_ids(svc, kb, 2)
    assert len(v2_ids) > len(v1_ids) and not v2_ids & v1_ids
    # Searches answer from version 2's chunks only.
    for hits in _results(svc, kb):
        assert hits and set(hits) <= v2_ids
    check = svc.indexes.check(kb)
    assert check["consistent"] and check["version"] == 2 and check["vectors"] == len(v2_ids)
    with svc.db.read() as session:
        counts = dict(session.execute(select(Document.id, Document.chunk_count)).all())
        per_doc = dict(
            session.execute(
                select(Chunk.document_id, func.count())
                .where(Chunk.version == 2)
                .group_by(Chunk.document_id)
            ).all()
        )
    assert counts == per_doc  # documents report the live version's chunks


def test_new_model_gets_its_own_index_and_vectors_never_mix(svc: Services, kb: str) -> None:
    _, job = _reindex(svc, kb, embedding_model="fake:32")
    assert job.status == JobStatus.succeeded, job.error
    assert svc.indexes.get(kb).dim == 32
    assert svc.indexes.check(kb, version=1)["dim"] == 64
    assert svc.indexes.check(kb)["consistent"]
    with svc.db.read() as session:
        kb_row = session.get(KnowledgeBase, kb)
        assert kb_row is not None
        assert (kb_row.embedding_model, kb_row.embedding_dim, kb_row.live_version) == (
            "fake:32",
            32,
            2,
        )
        rows = session.execute(
            select(Chunk.version, Chunk.embedding_model, func.length(Chunk.embedding)).distinct()
        ).all()
    assert sorted(rows) == [(1, "fake:64", 64 * 4), (2, "fake:32", 32 * 4)]
    # A document added now is chunked and embedded for the live version only, with its model.
    new = _add(svc, kb, "parking.txt", "停车规定：员工车辆停放在地下二层，访客车位在一层。")
    with svc.db.read() as session:
        got = session.execute(
            select(Chunk.version, Chunk.embedding_model).where(Chunk.document_id == new).distinct()
        ).all()
    assert got == [(2, "fake:32")]
    hits = svc.retriever.search(kb, "访客车位停在哪里", top_k=3)
    assert hits[0].document_id == new


def test_searches_answer_from_v1_while_building_and_late_uploads_reach_v2(
    svc: Services, kb: str
) -> None:
    before = _results(svc, kb)
    _, job = svc.versions.start_reindex(kb, chunk_tokens=64)
    claimed = svc.worker().claim(job.id)
    assert claimed is not None
    seen: list[tuple[int, int]] = []
    late: list[str] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if done >= 2 and not late:
            # Mid-build: the live version answers exactly as before.
            assert _results(svc, kb) == before
            assert svc.indexes.check(kb)["version"] == 1
            late.append(_add(svc, kb, "late.txt", "迟到的文件：周末加班需要部门经理批准。"))

    outcome = svc.reindexer.run(claimed, progress)
    assert outcome.ok, outcome.error
    assert late and seen[-1][0] == seen[-1][1] == len(TOPICS) + 1
    v2_ids = _chunk_ids(svc, kb, 2)
    with svc.db.read() as session:
        late_v2 = session.execute(
            select(func.count()).where(Chunk.document_id == late[0], Chunk.version == 2)
        ).scalar_one()
    assert late_v2 > 0
    hits = svc.retriever.search(kb, "周末加班批准", top_k=3)
    assert hits[0].document_id == late[0] and {h.chunk_id for h in hits} <= v2_ids


def test_rollback_makes_v1_live_with_documents_added_since(svc: Services, kb: str) -> None:
    before = _results(svc, kb)
    _reindex(svc, kb, chunk_tokens=64)
    added = _add(svc, kb, "late.txt", "迟到的文件：周末加班需要部门经理批准。")
    version, job = svc.versions.start_rollback(kb)
    assert version.number == 1
    assert svc.worker().run_job(job.id)
    job = _job(svc, job.id)
    assert job.status == JobStatus.succeeded, job.error
    listed = _versions(svc, kb)
    assert (listed[1].status, listed[2].status) == ("live", "retired")
    assert listed[1].documents == len(TOPICS) + 1
    v1_ids = _chunk_ids(svc, kb, 1)
    # The original documents answer exactly as before the re-index.
    assert _results(svc, kb) == before
    hits = svc.retriever.search(kb, "周末加班批准", top_k=3)
    assert hits[0].document_id == added and {h.chunk_id for h in hits} <= v1_ids
    assert svc.indexes.check(kb)["consistent"]
    # And forward again: v2 is the most recent retired version.
    again, _ = svc.versions.start_rollback(kb)
    assert again.number == 2


def test_cancel_marks_the_version_cancelled_and_leaves_v1(
    svc: Services, kb: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _results(svc, kb)
    _, job = svc.versions.start_reindex(kb, chunk_tokens=64)
    real = reindex.Reindexer._document

    def then_cancel(*args: Any) -> str | None:
        out = real(*args)
        job_control.cancel(svc.db, job.id)  # asked while running: stops at the next document
        return out

    monkeypatch.setattr(reindex.Reindexer, "_document", then_cancel)
    assert svc.worker().run_job(job.id)
    assert _job(svc, job.id).status == JobStatus.cancelled
    listed = _versions(svc, kb)
    assert (listed[1].status, listed[2].status) == ("live", "cancelled")
    assert not _chunk_ids(svc, kb, 2)  # tombstoned
    assert _results(svc, kb) == before
    assert svc.indexes.check(kb)["consistent"]
    # A job cancelled before it ran leaves no version blocking the next one.
    _, job3 = svc.versions.start_reindex(kb, chunk_tokens=128)
    job_control.cancel(svc.db, job3.id)
    assert _versions(svc, kb)[3].status == "cancelled"
    version4, _ = svc.versions.start_reindex(kb, chunk_tokens=128)
    assert version4.number == 4


class _BadQueries(FakeEmbedder):
    """Passages embed fine, queries land anywhere: the sample check must catch it."""

    def embed_query(self, text: str) -> np.ndarray:
        rng = np.random.default_rng(len(text))
        v = rng.standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)


def test_failed_check_leaves_v1_live(svc: Services, kb: str) -> None:
    before = _results(svc, kb)
    svc._other_embedders["fake:32"] = _BadQueries(32)
    _, job = _reindex(svc, kb, embedding_model="fake:32")
    assert job.status == JobStatus.failed and "checks failed" in (job.error or "")
    assert "dense search found only" in (job.error or "")
    listed = _versions(svc, kb)
    assert (listed[1].status, listed[2].status) == ("live", "failed")
    assert listed[2].checks["dense_hit_rate"] < 0.8
    assert not _chunk_ids(svc, kb, 2)
    assert _results(svc, kb) == before
    with svc.db.read() as session:
        kb_row = session.get(KnowledgeBase, kb)
        assert kb_row is not None and kb_row.embedding_model == "fake:64"


def test_one_building_version_at_a_time(svc: Services, kb: str) -> None:
    svc.versions.start_reindex(kb, chunk_tokens=64)
    with pytest.raises(Conflict):
        svc.versions.start_reindex(kb, chunk_tokens=128)
    with pytest.raises(Conflict):
        svc.versions.start_rollback(kb)


def test_rollback_needs_a_retired_version(svc: Services, kb: str) -> None:
    with pytest.raises(Conflict, match="no earlier index version"):
        svc.versions.start_rollback(kb)


def test_deleting_a_document_removes_its_chunks_from_every_version(svc: Services, kb: str) -> None:
    _reindex(svc, kb, chunk_tokens=64)
    with svc.db.read() as session:
        doc_id = session.execute(
            select(Document.id).where(Document.filename == "leave.txt")
        ).scalar_one()
        assert {
            v
            for (v,) in session.execute(
                select(Chunk.version).where(Chunk.document_id == doc_id).distinct()
            )
        } == {1, 2}
    svc.knowledge.delete_document(kb, doc_id)
    with svc.db.read() as session:
        left = session.execute(select(func.count()).where(Chunk.document_id == doc_id)).scalar_one()
    assert left == 0
    _, job = svc.versions.start_rollback(kb)
    assert svc.worker().run_job(job.id)
    assert _job(svc, job.id).status == JobStatus.succeeded
    assert all(p.document_id != doc_id for p in svc.retriever.search(kb, "年假怎么申请", top_k=10))
    assert svc.indexes.check(kb)["consistent"]


def test_a_document_prepared_for_the_old_version_is_prepared_again(svc: Services, kb: str) -> None:
    path = svc.settings.data_dir / "incoming" / "race.txt"
    path.write_text(_body("race.txt", "竞态文件：切换版本时正在处理的文档。"))
    with path.open("rb") as fh:
        staged = stage_upload(fh, "race.txt", svc.settings.data_dir, 10**7)
    doc, _ = svc.knowledge.add_document(kb, staged)
    completed: list[Any] = []
    begun = svc.pipeline.begin(doc.id, lambda s, o: completed.append(o))
    assert begun is not None
    item = svc.pipeline.prepare(*begun, lambda n: None)
    [vectors] = svc.pipeline.embed_prepared([item])
    assert item.version == 1
    # A re-index to another model switches while the document waits to be stored.
    _, job = _reindex(svc, kb, embedding_model="fake:32")
    assert job.status == JobStatus.succeeded
    with pytest.raises(pipeline.VersionChanged):
        svc.pipeline.store(item, vectors, lambda s, o: completed.append(o))
    assert not completed
    worker = svc.worker()
    while worker.run_once():
        pass
    with svc.db.read() as session:
        got = session.execute(
            select(Chunk.version, Chunk.embedding_model).where(Chunk.document_id == doc.id)
        ).all()
        status = session.get(Document, doc.id).status  # type: ignore[union-attr]
    assert status == "ready" and got and set(got) == {(2, "fake:32")}


def test_migration_gives_existing_knowledge_bases_a_live_version_1(database_url: str) -> None:
    from alembic import command
    from sqlalchemy import text

    from rag.store import schema
    from rag.store.db import Database

    db = Database(database_url)
    try:
        cfg = schema.alembic_config(database_url)
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0003")
            conn.execute(
                text(
                    "INSERT INTO knowledge_bases (id, name, description, embedding_model, "
                    "embedding_dim, created_at) VALUES ('k1', 'old', '', 'fake:64', 64, "
                    "CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO documents (id, kb_id, filename, media_type, size_bytes, sha256, "
                    "status, chunk_count, warnings, metadata, storage_path, created_at, "
                    "updated_at) VALUES ('d1', 'k1', 'a.txt', 'text/plain', 1, 'x', 'ready', 1, "
                    "'[]', '{}', 'files/k1/d1', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO chunks (kb_id, document_id, ordinal, text, text_sha256, "
                    "page_start, page_end, char_start, char_end, heading_path, token_count, "
                    "embedding, embedding_model, seq) VALUES ('k1', 'd1', 0, 't', 'h', 1, 1, 0, "
                    "1, '[]', 1, :e, 'fake:64', 1)"
                ),
                {"e": b"\0" * 256},
            )
        schema.upgrade(db.engine, chunking=(300, 20))
        with db.read() as session:
            kb_row = session.get(KnowledgeBase, "k1")
            assert kb_row is not None and kb_row.live_version == 1
            [v] = versions.list_versions(session, "k1")
            assert (v.number, v.status, v.embedding_model, v.embedding_dim) == (
                1,
                "live",
                "fake:64",
                64,
            )
            assert (v.chunk_tokens, v.overlap_tokens, v.chunks, v.documents) == (300, 20, 1, 1)
    finally:
        db.dispose()


def test_a_reindex_job_given_up_fails_its_version(svc: Services, kb: str) -> None:
    _, job = svc.versions.start_reindex(kb, chunk_tokens=64)
    with svc.db.write() as session:
        row = session.get(Job, job.id)
        assert row is not None
        row.attempts = svc.settings.ingest.max_attempts
    assert svc.worker().claim() is None  # gives it up
    listed = _versions(svc, kb)
    assert listed[2].status == "failed" and "gave up" in (listed[2].error or "")
    assert listed[1].status == "live"


def test_a_stopping_worker_hands_the_reindex_back(svc: Services, kb: str) -> None:
    _, job = svc.versions.start_reindex(kb, chunk_tokens=64)
    stopping = svc.worker()
    stopping._stop.set()  # as after stop(): the job yields at its first progress point
    assert stopping.run_job(job.id)
    state = _job(svc, job.id)
    assert state.status == JobStatus.queued and state.attempts == 0
    assert _versions(svc, kb)[2].status == "building"
    assert svc.worker().run_job(job.id)
    assert _job(svc, job.id).status == JobStatus.succeeded
    assert _versions(svc, kb)[2].status == "live"
