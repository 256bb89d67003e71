"""Curated answers and golden rows made from logged questions.

A curated answer is returned verbatim for its question (no retrieval, no LLM call): questions
match after `normalise` (NFKC, case folded, whitespace collapsed, trailing punctuation dropped)
and the log's redaction, so the question an admin curated from the log matches when asked again.
A golden row is a line of rag/evaluation/golden.py's JSONL format, for `rag eval`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rag.core import tenancy
from rag.core.errors import InvalidInput, NotFound
from rag.kb.knowledge import get_kb
from rag.qa.answer import Answer
from rag.qa.question_log import QuestionLog, visible
from rag.store.db import Database, as_utc
from rag.store.models import Chunk, CuratedAnswer, Document, GoldenRow, QuestionRecord

_SPACE = re.compile(r"\s+")
# Trailing marks a question may or may not end with: ASCII and full-width.
_TRAILING = "?？!！.。,，;；:：~～…、 "
MAX_CURATED_CHARS = 20_000
EXCERPT_CHARS = 200


def normalise(question: str) -> str:
    text = unicodedata.normalize("NFKC", question).casefold()
    return _SPACE.sub(" ", text).strip().rstrip(_TRAILING).strip()


def question_key(question: str) -> str:
    return hashlib.sha256(normalise(question).encode()).hexdigest()


@dataclass(frozen=True)
class CuratedOut:
    id: str
    kb_id: str
    question: str
    answer: str
    source_question_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: CuratedAnswer) -> CuratedOut:
        return cls(
            row.id,
            row.kb_id,
            row.question,
            row.answer,
            row.source_question_id,
            as_utc(row.created_at),
        )


@dataclass(frozen=True)
class GoldenOut:
    id: int
    kb_id: str
    question: str
    answer_excerpt: str | None
    filename: str | None
    pages: list[int]
    source_question_id: str | None

    @classmethod
    def of(cls, row: GoldenRow) -> GoldenOut:
        return cls(
            row.id,
            row.kb_id,
            row.question,
            row.answer_excerpt,
            row.filename,
            list(row.pages or []),
            row.source_question_id,
        )

    def as_golden(self) -> dict[str, Any]:
        """The JSONL line (rag/evaluation/golden.py `GoldenItem.parse` reads it)."""
        line: dict[str, Any] = {"id": f"log-{self.id}", "question": self.question}
        if self.answer_excerpt:
            line["answer_excerpt"] = self.answer_excerpt
        if self.filename:
            line["filename"] = self.filename
        if self.pages:
            line["pages"] = self.pages
        return line


class Curation:
    """Admin operations on curated answers and golden rows, tenant-checked like the log."""

    def __init__(self, db: Database, journal: QuestionLog) -> None:
        self.db = db
        self.journal = journal

    # --- the answer path -------------------------------------------------------------------

    def find(self, session: Session, kb_id: str, question: str) -> Answer | None:
        """The curated answer to `question` as an Answer (curated=True), or None; the caller
        has checked that the knowledge base may be seen (rag/qa/service.py)."""
        key = question_key(self.journal.redact(question))
        row = session.execute(
            select(CuratedAnswer).where(
                CuratedAnswer.kb_id == kb_id, CuratedAnswer.question_key == key
            )
        ).scalar_one_or_none()
        if row is None:
            return None
        return Answer(
            row.answer,
            [],
            None,
            {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            question=question,
            finish_reason="stop",
            curated=True,
        )

    # --- curated answers -------------------------------------------------------------------

    def curate(self, answer_id: str, answer: str) -> CuratedOut:
        """The curated answer for a logged question (replacing an earlier one for the same
        question of the same knowledge base)."""
        text = answer.strip()
        if not text:
            raise InvalidInput("a curated answer cannot be empty")
        if len(text) > MAX_CURATED_CHARS:
            raise InvalidInput(f"a curated answer has at most {MAX_CURATED_CHARS} characters")
        with self.db.write() as session:
            record = self._record(session, answer_id)
            key = question_key(record.question)
            row = session.execute(
                select(CuratedAnswer)
                .where(CuratedAnswer.kb_id == record.kb_id, CuratedAnswer.question_key == key)
                .with_for_update()
            ).scalar_one_or_none()
            if row is None:
                row = CuratedAnswer(
                    tenant_id=record.tenant_id,
                    kb_id=record.kb_id,
                    question=record.question,
                    question_key=key,
                    answer=text,
                    citations=[],
                    source_question_id=record.id,
                )
                session.add(row)
            else:
                row.answer = text
                row.source_question_id = record.id
            session.flush()
            return CuratedOut.of(row)

    def curated(self, kb_id: str) -> list[CuratedOut]:
        with self.db.read() as session:
            get_kb(session, kb_id)
            rows = session.execute(
                select(CuratedAnswer)
                .where(CuratedAnswer.kb_id == kb_id)
                .order_by(CuratedAnswer.created_at, CuratedAnswer.id)
            ).scalars()
            return [CuratedOut.of(r) for r in rows]

    def uncurate(self, curated_id: str) -> None:
        with self.db.write() as session:
            row = session.get(CuratedAnswer, curated_id)
            principal = tenancy.current()
            if row is None or (
                principal is not None and not principal.sees(row.kb_id, row.tenant_id)
            ):
                raise NotFound(f"curated answer {curated_id} does not exist")
            session.delete(row)

    # --- golden rows -----------------------------------------------------------------------

    def golden_row(self, answer_id: str, chunk_id: int) -> GoldenOut:
        """A golden row from a logged question and a passage of its knowledge base: the
        passage's file and pages, and the start of its text as the answer excerpt."""
        with self.db.write() as session:
            record = self._record(session, answer_id)
            found = session.execute(
                select(Chunk, Document.filename)
                .join(Document, Document.id == Chunk.document_id)
                .where(Chunk.id == chunk_id, Chunk.kb_id == record.kb_id)
            ).one_or_none()
            if found is None:
                raise InvalidInput(
                    f"chunk {chunk_id} is not a passage of this answer's knowledge base"
                )
            chunk, filename = found
            excerpt = _SPACE.sub(" ", chunk.text).strip()[:EXCERPT_CHARS] or None
            row = GoldenRow(
                kb_id=record.kb_id,
                question=record.question,
                answer_excerpt=excerpt,
                filename=filename,
                pages=list(range(chunk.page_start, max(chunk.page_start, chunk.page_end) + 1)),
                source_question_id=record.id,
            )
            session.add(row)
            session.flush()
            return GoldenOut.of(row)

    def golden(self, kb_id: str) -> list[GoldenOut]:
        with self.db.read() as session:
            get_kb(session, kb_id)
            rows = session.execute(
                select(GoldenRow).where(GoldenRow.kb_id == kb_id).order_by(GoldenRow.id)
            ).scalars()
            return [GoldenOut.of(r) for r in rows]

    def _record(self, session: Session, answer_id: str) -> QuestionRecord:
        if not self.journal.enabled:
            raise NotFound(f"answer {answer_id} does not exist: the question log is off")
        return visible(session.get(QuestionRecord, answer_id), answer_id)
