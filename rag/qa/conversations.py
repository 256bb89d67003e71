"""Conversations in SQL: create, list, read with messages, delete; history for follow-ups.

A conversation belongs to one knowledge base and goes when it goes (ON DELETE CASCADE). A
question and its answer are written together, after the answer is complete, so a stream the
client abandoned leaves no half turn behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select

from rag.core.errors import Conflict, NotFound
from rag.kb.knowledge import get_kb, list_kbs
from rag.store.db import Database
from rag.store.models import Conversation, Message, new_id

# Messages read back for a follow-up; the token budget trims further (rag/qa/prompt.py).
HISTORY_MESSAGES = 40
TITLE_CHARS = 80


@dataclass(frozen=True)
class Recorded:
    conversation_id: str
    question_id: int
    answer_id: int


def _get(session: Any, conversation_id: str) -> Conversation:
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise NotFound(f"conversation {conversation_id} does not exist")
    try:
        get_kb(session, conversation.kb_id)  # another tenant's conversation does not exist
    except NotFound:
        raise NotFound(f"conversation {conversation_id} does not exist") from None
    return conversation


class Conversations:
    """Conversations and their messages in one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, kb_id: str, title: str = "") -> Conversation:
        conversation = Conversation(id=new_id(), kb_id=kb_id, title=title.strip()[:200])
        with self.db.write() as session:
            get_kb(session, kb_id)
            session.add(conversation)
        return conversation

    def list_conversations(self, kb_id: str | None = None, limit: int = 100) -> list[Conversation]:
        query = select(Conversation).order_by(Conversation.updated_at.desc()).limit(limit)
        with self.db.read() as session:
            if kb_id is not None:
                get_kb(session, kb_id)
                query = query.where(Conversation.kb_id == kb_id)
            else:
                visible = [kb.id for kb in list_kbs(session)]
                query = query.where(Conversation.kb_id.in_(visible))
            return list(session.execute(query).scalars())

    def get(self, conversation_id: str) -> tuple[Conversation, list[Message]]:
        with self.db.read() as session:
            conversation = _get(session, conversation_id)
            messages = session.execute(
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .order_by(Message.id)
            ).scalars()
            return conversation, list(messages)

    def delete_conversation(self, conversation_id: str) -> None:
        with self.db.write() as session:
            _get(session, conversation_id)
            # Explicit, not only ON DELETE CASCADE: SQLite enforces it only with foreign_keys on.
            session.execute(delete(Message).where(Message.conversation_id == conversation_id))
            session.execute(delete(Conversation).where(Conversation.id == conversation_id))

    def history(self, conversation_id: str, kb_id: str) -> list[dict[str, str]]:
        """The newest messages of a conversation of this knowledge base, oldest first."""
        with self.db.read() as session:
            conversation = _get(session, conversation_id)
            if conversation.kb_id != kb_id:
                raise Conflict(
                    f"conversation {conversation_id} belongs to knowledge base "
                    f"{conversation.kb_id}, not {kb_id}"
                )
            rows = session.execute(
                select(Message.role, Message.content)
                .where(Message.conversation_id == conversation_id)
                .order_by(Message.id.desc())
                .limit(HISTORY_MESSAGES)
            ).all()
        return [{"role": role, "content": content} for role, content in reversed(rows)]

    def record(
        self,
        conversation_id: str,
        question: str,
        standalone: str | None,
        answer: str,
        *,
        citations: list[dict[str, Any]],
        model: str | None,
        usage: dict[str, int],
    ) -> Recorded:
        with self.db.write() as session:
            conversation = _get(session, conversation_id)
            asked = Message(
                conversation_id=conversation_id,
                role="user",
                content=question,
                standalone=standalone if standalone != question else None,
            )
            answered = Message(
                conversation_id=conversation_id,
                role="assistant",
                content=answer,
                citations=citations,
                model=model,
                usage=usage,
            )
            session.add(asked)
            session.flush()  # ids in insertion order: the question before its answer
            session.add(answered)
            session.flush()
            if not conversation.title:
                conversation.title = question.strip()[:TITLE_CHARS]
            conversation.updated_at = self.db.now()
            return Recorded(conversation_id, asked.id, answered.id)
