"""The retention purge deletes exactly the rows past retention, in bounded batches, while
writers keep recording: no new row is lost, no row inside retention is touched (SQLite and
PostgreSQL). Retention 0 keeps everything; the background purger runs it and stops."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select, update

from rag.core.config import AnalyticsSettings
from rag.qa.answer import Answer, AskSpec
from rag.qa.question_log import Purger, QuestionLog
from rag.services import Services
from rag.store.models import QuestionRecord, utcnow
from tests.conftest import wait_for

WRITERS = 4
PER_WRITER = 15


def _journal(svc: Services, **settings: object) -> tuple[QuestionLog, str]:
    kb = svc.knowledge.create_kb("hr")
    cfg = AnalyticsSettings(**{"retention_days": 30, **settings})  # type: ignore[arg-type]
    return QuestionLog(svc.db, cfg), kb.id


def _answer() -> Answer:
    return Answer("答案", [], "m", {}, finish_reason="stop")


def _seed(journal: QuestionLog, kb_id: str, n: int, *, age: timedelta, prefix: str) -> list[str]:
    ids = []
    for i in range(n):
        ids.append(
            journal.record(AskSpec(kb_id, f"{prefix}-{i}"), _answer(), latency_ms=1, cached=False)
            or ""
        )
    with journal.db.write() as session:
        session.execute(
            update(QuestionRecord)
            .where(QuestionRecord.id.in_(ids))
            .values(created_at=utcnow() - age)
        )
    return ids


def test_purge_with_writers_recording(db_services: Services) -> None:
    journal, kb_id = _journal(db_services)
    expired = _seed(journal, kb_id, 23, age=timedelta(days=31), prefix="old")
    kept = _seed(journal, kb_id, 5, age=timedelta(days=29), prefix="recent")
    written: list[str] = []
    lock = threading.Lock()
    go = threading.Event()

    def writer(w: int) -> None:
        go.wait()
        for i in range(PER_WRITER):
            answer_id = journal.record(
                AskSpec(kb_id, f"new-{w}-{i}"), _answer(), latency_ms=2, cached=False
            )
            with lock:
                written.append(answer_id or "")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    go.set()
    purged = 0
    while any(t.is_alive() for t in threads) or purged < len(expired):
        purged += journal.purge(batch=4)  # many small batches, interleaved with the writers
    for t in threads:
        t.join()
    assert purged == len(expired)
    with db_services.db.read() as session:
        left = set(session.execute(select(QuestionRecord.id)).scalars())
    assert len(written) == WRITERS * PER_WRITER
    assert left == set(kept) | set(written)  # every new and recent row, no expired one
    assert not left & set(expired)
    assert journal.purge() == 0  # nothing left to do


def test_retention_zero_keeps_everything(db_services: Services) -> None:
    journal, kb_id = _journal(db_services, retention_days=0)
    _seed(journal, kb_id, 3, age=timedelta(days=3650), prefix="ancient")
    assert journal.purge() == 0
    with db_services.db.read() as session:
        assert session.execute(select(func.count()).select_from(QuestionRecord)).scalar() == 3


def test_the_background_purger(db_services: Services) -> None:
    journal, kb_id = _journal(db_services, purge_interval_s=0.05)
    _seed(journal, kb_id, 3, age=timedelta(days=40), prefix="old")
    kept = _seed(journal, kb_id, 2, age=timedelta(days=1), prefix="new")

    def remaining() -> set[str]:
        with db_services.db.read() as session:
            return set(session.execute(select(QuestionRecord.id)).scalars())

    purger = Purger(journal)
    purger.start()
    try:
        wait_for(lambda: remaining() == set(kept), timeout=20)
    finally:
        purger.stop()
    assert purger._thread is None
