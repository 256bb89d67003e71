"""The fair order of the job queue (rag/kb/scheduling.py) as workers claim jobs: priorities,
rounds across knowledge bases and tenants, positions equal to the claim order, concurrent
claims; on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from ingest.upload import stage_upload
from rag.core import tenancy
from rag.generation.llm import LLMClient
from rag.kb import scheduling
from rag.services import Services
from rag.store.models import Document, DocumentStatus, Job, JobKind, JobPriority, JobStatus
from tests.conftest import FakeLLM, make_settings, wait_for

T0 = datetime(2024, 1, 1, 9, 0)


@pytest.fixture
def svc(tmp_path: Path, database_url: str) -> Iterator[Services]:
    """Services on SQLite and PostgreSQL with a long lease, so that no claimed job turns stale
    (and claimable again) while a slow shared machine runs the test."""
    cfg = make_settings(tmp_path / "data", database_url)
    cfg = cfg.model_copy(update={"ingest": cfg.ingest.model_copy(update={"lease_s": 600.0})})
    s = Services.create(
        cfg, llm=LLMClient(cfg.llm, transport=httpx.MockTransport(FakeLLM().handler))
    )
    yield s
    s.close()


def _kb(svc: Services, name: str, tenant: str | None = None) -> str:
    if tenant is None:
        return svc.knowledge.create_kb(name).id
    principal = tenancy.Principal(actor="test", tenant_id=tenant, scopes=frozenset({"admin"}))
    with tenancy.acting_as(principal):
        return svc.knowledge.create_kb(name).id


def _queue(
    svc: Services,
    kb_id: str,
    n: int,
    *,
    start: int = 0,
    priority: int = JobPriority.interactive,
    files: bool = False,
) -> list[str]:
    """Queue `n` text documents in one transaction (500 uploads one by one would be slow);
    created_at is T0 + `start` + i seconds. With `files`, each has a real file to ingest."""
    ids: list[str] = []
    with svc.db.write() as session:
        for i in range(n):
            text = f"知识库 {kb_id} 的第 {start + i} 份文件。内容 {i}。".encode()
            doc = Document(
                kb_id=kb_id,
                filename=f"f{start + i}.txt",
                media_type="text/plain",
                size_bytes=len(text),
                sha256=hashlib.sha256(text).hexdigest(),
                status=DocumentStatus.queued,
                storage_path=f"files/{kb_id}/{kb_id}-{start + i}",
                created_at=T0 + timedelta(seconds=start + i),
            )
            if files:
                path = svc.settings.data_dir / doc.storage_path
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(text)
            session.add(doc)
            session.flush()
            job = Job(
                kind=JobKind.ingest,
                kb_id=kb_id,
                document_id=doc.id,
                priority=priority,
                filename=doc.filename,
                created_at=doc.created_at,
                run_after=doc.created_at,
            )
            session.add(job)
            session.flush()
            ids.append(job.id)
    return ids


def _claims(svc: Services, n: int) -> list[Job]:
    worker = svc.worker()
    claimed = []
    for _ in range(n):
        job = worker.claim()
        if job is None:
            break
        claimed.append(job)
    return claimed


def test_an_upload_is_not_stuck_behind_another_knowledge_bases_batch(svc: Services) -> None:
    big, other, third = _kb(svc, "big"), _kb(svc, "other"), _kb(svc, "third")
    _queue(svc, big, 500)
    mine = _queue(svc, third, 2, start=1000)  # uploaded after the whole batch
    one = _queue(svc, other, 1, start=2000)
    order = [j.id for j in _claims(svc, 6)]
    # Round 1: the oldest job of each knowledge base; round 2: the next of each.
    assert order.index(mine[0]) < 3 and order.index(one[0]) < 3
    assert order.index(mine[1]) < 6


def test_rounds_turn_when_each_job_finishes_before_the_next_claim(svc: Services) -> None:
    # One worker, nothing left running between claims: only the record of which knowledge
    # base was served last keeps the batch (whose next job is always the oldest) from leading.
    big, small = _kb(svc, "big"), _kb(svc, "small")
    _queue(svc, big, 50)
    mine = set(_queue(svc, small, 3, start=1000))
    worker = svc.worker()
    order = []
    for _ in range(6):
        job = worker.claim()
        assert job is not None
        order.append(job.id in mine)
        with svc.db.write() as session:
            worker._mark(session, job.id, JobStatus.succeeded)
    assert order == [False, True, False, True, False, True]


def test_priorities_interactive_then_batch_then_background(svc: Services) -> None:
    a, b = _kb(svc, "a"), _kb(svc, "b")
    with svc.db.write() as session:
        rebuild = Job(kind=JobKind.rebuild_index, kb_id=a, created_at=T0, run_after=T0)
        session.add(rebuild)
        session.flush()
        background = rebuild.id
    assert rebuild.priority == JobPriority.background  # non-ingest jobs default to it
    batch = _queue(svc, a, 3, start=10, priority=JobPriority.batch)
    interactive = _queue(svc, b, 2, start=20) + _queue(svc, a, 1, start=30)
    order = [j.id for j in _claims(svc, 10)]
    assert set(order[:3]) == set(interactive)
    assert order[3:6] == batch
    assert order[6:] == [background]


def test_tenants_take_turns_whatever_their_number_of_knowledge_bases(svc: Services) -> None:
    # Tenant "big" has three busy knowledge bases, tenant "small" one, queued later.
    busy = [_kb(svc, f"kb{i}", tenant="big") for i in range(3)]
    for n, kb_id in enumerate(busy):
        _queue(svc, kb_id, 10, start=n * 100)
    small = set(_queue(svc, _kb(svc, "kb", tenant="small"), 10, start=1000))
    order = _claims(svc, 8)
    # Turn by turn: big, small, big, small... (by knowledge bases alone, small would get 2/8).
    assert sum(j.id in small for j in order) == 4
    assert {j.kb_id for j in order if j.id not in small} == set(busy)


def test_positions_are_the_claim_order_and_computed_in_one_query(svc: Services) -> None:
    a, b = _kb(svc, "a", tenant="t1"), _kb(svc, "b", tenant="t2")
    jobs = _queue(svc, a, 20) + _queue(svc, b, 5, start=100, priority=JobPriority.batch)
    jobs += _queue(svc, b, 5, start=200)
    now = svc.db.now()
    with svc.db.read() as session:
        positions = scheduling.job_positions(session, jobs, now, 600)
    assert sorted(positions.values()) == list(range(1, 31))
    by_position = sorted(jobs, key=positions.__getitem__)
    assert [j.id for j in _claims(svc, 30)] == by_position


def test_a_job_whose_worker_died_is_claimed_again_in_its_turn(svc: Services) -> None:
    a = _kb(svc, "a")
    first, second = _queue(svc, a, 2)
    taken = svc.worker(worker_id="dead").claim()
    assert taken is not None and taken.id == first
    with svc.db.write() as session:  # its heartbeat stopped long ago
        session.get(Job, first).heartbeat_at = svc.db.now() - timedelta(hours=1)
    again = svc.worker(worker_id="alive").claim()
    assert again is not None and again.id == first and again.attempts == 2
    assert [j.id for j in _claims(svc, 2)] == [second]


def test_claim_keeps_its_filters(svc: Services) -> None:
    a = _kb(svc, "a")
    ingest = _queue(svc, a, 3)
    with svc.db.write() as session:
        session.add(Job(kind=JobKind.rebuild_index, kb_id=a, created_at=T0, run_after=T0))
    worker = svc.worker()
    only = worker.claim(kinds=[JobKind.rebuild_index])
    assert only is not None and only.kind == JobKind.rebuild_index
    picked = worker.claim(job_id=ingest[2])
    assert picked is not None and picked.id == ingest[2]
    assert worker.claim(job_id=ingest[2]) is None  # already ours
    with svc.db.write() as session:  # a job waiting out a retry delay is not runnable
        session.get(Job, ingest[0]).run_after = svc.db.now() + timedelta(hours=1)
    assert [j.id for j in _claims(svc, 5)] == [ingest[1]]


def test_concurrent_claims_never_take_the_same_job(svc: Services) -> None:
    kbs = [_kb(svc, f"kb{i}") for i in range(4)]
    queued = {j for n, kb_id in enumerate(kbs) for j in _queue(svc, kb_id, 15, start=n * 100)}
    workers = [svc.worker(worker_id=f"w{i}") for i in range(4)]
    start = threading.Barrier(len(workers))
    taken: list[list[str]] = [[] for _ in workers]

    def run(i: int) -> None:
        start.wait()
        while (job := workers[i].claim()) is not None:
            taken[i].append(job.id)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    claimed = [j for mine in taken for j in mine]
    assert len(claimed) == len(set(claimed)) == len(queued)
    assert set(claimed) == queued
    with svc.db.read() as session:
        attempts = session.execute(select(func.max(Job.attempts))).scalar_one()
    assert attempts == 1


def test_a_real_worker_ingests_the_single_upload_before_most_of_the_batch(svc: Services) -> None:
    big, small = _kb(svc, "big"), _kb(svc, "small")
    _queue(svc, big, 500, files=True)
    path = svc.settings.data_dir / "incoming" / "mine.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("两份需要尽快入库的文件之一。".encode() * 20)
    with path.open("rb") as fh:
        doc, _ = svc.knowledge.add_document(
            small, stage_upload(fh, "mine.txt", svc.settings.data_dir, 10**7)
        )

    def status() -> str:
        with svc.db.read() as session:
            return session.execute(
                select(Document.status).where(Document.id == doc.id)
            ).scalar_one()

    worker = svc.pipelined_worker(threads=1)
    worker.start()
    try:
        wait_for(lambda: status() in ("ready", "failed"), timeout=120)
    finally:
        worker.stop()
    assert status() == "ready"
    with svc.db.read() as session:
        still_queued = session.execute(
            select(func.count())
            .select_from(Job)
            .where(Job.kb_id == big, Job.status == JobStatus.queued)
        ).scalar_one()
    assert still_queued >= 450
