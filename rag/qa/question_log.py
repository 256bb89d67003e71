"""The question log: every answer given (any channel) with its flags, latency and citations,
redacted by pattern; feedback and hand-offs by answer id; the retention purge.

Each write emits its webhook event (answer.given, feedback.received, handoff.requested) in
the same transaction, so an event exists exactly when its row does. Reads and writes by answer
id see only the current principal's tenant and knowledge bases (another's: NotFound).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from rag.core import tenancy
from rag.core.config import AnalyticsSettings
from rag.core.errors import InvalidInput, NotFound
from rag.kb import events
from rag.qa.answer import Answer, AskSpec
from rag.store.db import Database, as_utc, rowcount
from rag.store.models import KnowledgeBase, QuestionRecord, new_id, utcnow

log = logging.getLogger(__name__)

# Where a question came from (AskSpec.channel).
CHANNELS = ("api", "openai", "console", "widget", "cli", "wecom", "dingtalk", "feishu", "slack")
REDACTED = "[REDACTED]"
MAX_COMMENT_CHARS = 2_000
MAX_REASON_CHARS = 2_000
PURGE_BATCH = 500


@dataclass(frozen=True)
class QuestionRecordOut:
    """A logged question as the API and other channels see it."""

    id: str
    tenant_id: str
    kb_id: str
    assistant_id: str | None
    channel: str
    question: str
    answer: str | None
    citations: list[dict[str, Any]]
    model: str | None
    latency_ms: int
    grounded: bool
    covered: bool
    cached: bool
    curated: bool
    conversation_id: str | None
    rating: int | None
    comment: str | None
    handoff_requested: bool
    handoff_reason: str | None
    created_at: datetime

    @property
    def answered(self) -> bool:
        """What the analytics count as answered: curated, or covered and grounded."""
        return self.curated or (self.covered and self.grounded)

    @classmethod
    def of(cls, row: QuestionRecord) -> QuestionRecordOut:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            kb_id=row.kb_id,
            assistant_id=row.assistant_id,
            channel=row.channel,
            question=row.question,
            answer=row.answer,
            citations=list(row.citations or []),
            model=row.model,
            latency_ms=row.latency_ms,
            grounded=row.grounded,
            covered=row.covered,
            cached=row.cached,
            curated=row.curated,
            conversation_id=row.conversation_id,
            rating=row.rating,
            comment=row.comment,
            handoff_requested=row.handoff_at is not None,
            handoff_reason=row.handoff_reason,
            created_at=as_utc(row.created_at),
        )


class Redactor:
    """Replaces every match of the configured patterns with [REDACTED]."""

    def __init__(self, patterns: list[str]) -> None:
        try:
            self._patterns = [re.compile(p) for p in patterns]
        except re.error as exc:
            raise InvalidInput(f"RAG_ANALYTICS__REDACT_PATTERNS has a bad pattern: {exc}") from exc

    def __call__(self, text: str) -> str:
        for pattern in self._patterns:
            text = pattern.sub(REDACTED, text)
        return text


def visible(row: QuestionRecord | None, answer_id: str) -> QuestionRecord:
    """The row if the current principal may see its knowledge base (NotFound otherwise)."""
    principal = tenancy.current()
    if row is None or (principal is not None and not principal.sees(row.kb_id, row.tenant_id)):
        raise NotFound(f"answer {answer_id} does not exist")
    return row


def _citation(c: dict[str, Any]) -> dict[str, Any]:
    keys = ("chunk_id", "document_id", "filename", "page", "cited")
    return {k: c.get(k) for k in keys}


class QuestionLog:
    """Records answers and what users said of them; `purge` drops rows past retention."""

    def __init__(self, db: Database, settings: AnalyticsSettings) -> None:
        self.db = db
        self.settings = settings
        self.redact = Redactor(settings.redact_patterns)

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def record(
        self,
        spec: AskSpec,
        result: Answer,
        *,
        tenant_id: str | None = None,
        latency_ms: int,
        cached: bool,
    ) -> str | None:
        """Log one answer and emit answer.given; its id (None: the log is off). `tenant_id`
        None: the knowledge base's."""
        if not self.enabled:
            return None
        question = self.redact(spec.question)
        answer = self.redact(result.answer) if result.answer is not None else None
        citations = [_citation(c.as_dict()) for c in result.citations]
        with self.db.write() as session:
            tenant = tenant_id or self._tenant_of(session, spec.kb_id)
            row = QuestionRecord(
                id=new_id(),
                tenant_id=tenant,
                kb_id=spec.kb_id,
                assistant_id=spec.assistant_id,
                channel=spec.channel,
                question=question,
                answer=answer,
                citations=citations,
                model=result.model,
                latency_ms=max(0, int(latency_ms)),
                grounded=result.grounded,
                covered=result.covered,
                cached=cached,
                curated=result.curated,
                conversation_id=result.conversation_id or spec.conversation_id,
                created_at=utcnow(),
            )
            session.add(row)
            data = {
                "answer_id": row.id,
                "assistant_id": row.assistant_id,
                "channel": row.channel,
                "question": question,
                "answer": answer,
                "citations": citations,
                "grounded": row.grounded,
                "covered": row.covered,
                "cached": cached,
                "curated": row.curated,
                "handoff_suggested": result.needs_handoff,
                "latency_ms": row.latency_ms,
            }
            events.emit(session, tenant, events.ANSWER_GIVEN, data, kb_id=spec.kb_id)
            return row.id

    @staticmethod
    def _tenant_of(session: Session, kb_id: str) -> str:
        tenant = session.execute(
            select(KnowledgeBase.tenant_id).where(KnowledgeBase.id == kb_id)
        ).scalar_one_or_none()
        if tenant is None:
            raise NotFound(f"knowledge base {kb_id} does not exist")
        return tenant

    def _row(self, session: Session, answer_id: str, *, lock: bool = False) -> QuestionRecord:
        if not self.enabled:
            raise NotFound(
                f"answer {answer_id} does not exist: the question log is off "
                "(RAG_ANALYTICS__ENABLED=false)"
            )
        stmt = select(QuestionRecord).where(QuestionRecord.id == answer_id)
        if lock:
            stmt = stmt.with_for_update()
        return visible(session.execute(stmt).scalar_one_or_none(), answer_id)

    def get(self, answer_id: str) -> QuestionRecordOut:
        with self.db.read() as session:
            return QuestionRecordOut.of(self._row(session, answer_id))

    def feedback(
        self, answer_id: str, rating: int, comment: str | None = None
    ) -> QuestionRecordOut:
        """Rate an answer +1 (up) or -1 (down), replacing an earlier rating; emits
        feedback.received. A down-rating does not itself request a hand-off."""
        if rating not in (1, -1):
            raise InvalidInput(f"a rating is +1 (up) or -1 (down), not {rating!r}")
        comment = (comment or "").strip() or None
        if comment is not None and len(comment) > MAX_COMMENT_CHARS:
            raise InvalidInput(
                f"the comment has {len(comment)} characters; at most {MAX_COMMENT_CHARS}"
            )
        with self.db.write() as session:
            row = self._row(session, answer_id, lock=True)
            row.rating = rating
            row.comment = self.redact(comment) if comment else None
            row.rated_at = utcnow()
            data = {
                "answer_id": row.id,
                "assistant_id": row.assistant_id,
                "channel": row.channel,
                "rating": "up" if rating > 0 else "down",
                "comment": row.comment,
                "question": row.question,
            }
            events.emit(session, row.tenant_id, events.FEEDBACK_RECEIVED, data, kb_id=row.kb_id)
            session.flush()
            return QuestionRecordOut.of(row)

    def handoff(self, answer_id: str, reason: str | None = None) -> QuestionRecordOut:
        """Ask for a person to take over; emits handoff.requested once (a second request for
        the same answer changes nothing and emits nothing)."""
        reason = (reason or "").strip() or None
        if reason is not None and len(reason) > MAX_REASON_CHARS:
            raise InvalidInput(
                f"the reason has {len(reason)} characters; at most {MAX_REASON_CHARS}"
            )
        with self.db.write() as session:
            row = self._row(session, answer_id)
            # Compare-and-set: of simultaneous requests (any replica), exactly one emits.
            claimed = session.execute(
                update(QuestionRecord)
                .where(QuestionRecord.id == row.id, QuestionRecord.handoff_at.is_(None))
                .values(
                    handoff_at=utcnow(),
                    handoff_reason=self.redact(reason) if reason else None,
                )
                .execution_options(synchronize_session=False)
            )
            session.refresh(row)
            if rowcount(claimed) == 1:
                data = {
                    "answer_id": row.id,
                    "assistant_id": row.assistant_id,
                    "channel": row.channel,
                    "conversation_id": row.conversation_id,
                    "reason": row.handoff_reason,
                    "question": row.question,
                    "answer": row.answer,
                    "grounded": row.grounded,
                    "covered": row.covered,
                    "rating": row.rating,
                    "comment": row.comment,
                }
                events.emit(session, row.tenant_id, events.HANDOFF_REQUESTED, data, kb_id=row.kb_id)
            return QuestionRecordOut.of(row)

    def purge(self, now: datetime | None = None, *, batch: int = PURGE_BATCH) -> int:
        """Delete rows older than `retention_days` (0: keep forever), `batch` rows per
        transaction so that writers are never blocked for long; how many were deleted."""
        days = self.settings.retention_days
        if days <= 0:
            return 0
        cutoff = (now or utcnow()) - timedelta(days=days)
        deleted = 0
        while True:
            with self.db.write() as session:
                ids = list(
                    session.execute(
                        select(QuestionRecord.id)
                        .where(QuestionRecord.created_at < cutoff)
                        .limit(batch)
                    ).scalars()
                )
                if ids:
                    # The cutoff again: only expired rows go, whatever happened since.
                    session.execute(
                        delete(QuestionRecord)
                        .where(QuestionRecord.id.in_(ids), QuestionRecord.created_at < cutoff)
                        .execution_options(synchronize_session=False)
                    )
            deleted += len(ids)
            if len(ids) < batch:
                return deleted


class Purger:
    """Runs `QuestionLog.purge` every `purge_interval_s` on a thread until `stop`."""

    def __init__(self, journal: QuestionLog) -> None:
        self.journal = journal
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="question-log", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        interval = self.journal.settings.purge_interval_s
        while True:
            try:
                purged = self.journal.purge()
                if purged:
                    log.info("question log: %d expired row(s) purged", purged)
            except Exception:
                log.exception("question log purge failed")
            if self._stop.wait(interval):
                return
