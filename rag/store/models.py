"""SQLAlchemy 2.0 models: SQL is the source of truth; FAISS is derived from `chunks`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from rag.core import request_context
from rag.core.tenancy import DEFAULT_TENANT

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class DocumentStatus(StrEnum):
    queued = "queued"
    processing = "processing"
    ready = "ready"
    failed = "failed"
    # An older version of its key (`Document.doc_key`): its chunks are gone, its file kept for
    # a restore until pruned (RAG_INGEST__KEEP_DOCUMENT_VERSIONS).
    superseded = "superseded"


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


JOB_REQUEST_ID = "request_id"  # the payload key of the request that queued a job


class JobPriority:
    """Lower runs first: a person waiting on an upload goes before a batch, and both before
    background jobs (re-index, evaluation, rebuild)."""

    interactive = 0
    batch = 5
    background = 10


class IngestStage(StrEnum):
    """Where a processing document is (Job.stage); queued documents have none."""

    parse = "parse"
    ocr = "ocr"
    chunk = "chunk"
    embed = "embed"
    store = "store"


class JobKind(StrEnum):
    ingest = "ingest"
    # Build a new index version (re-chunk, re-embed), check it, switch it live.
    reindex = "reindex"
    # Rebuild the live version's FAISS/BM25 cache from the vectors in SQL.
    rebuild_index = "rebuild-index"
    # Make a knowledge base equal to a folder or a list of URLs (rag/kb/sync.py).
    sync = "sync"


class VersionStatus(StrEnum):
    building = "building"
    live = "live"
    retired = "retired"  # was live; kept for rollback
    pruned = "pruned"  # was retired; its chunks and index files deleted (versions.prune)
    failed = "failed"
    cancelled = "cancelled"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}  # noqa: RUF012


class KnowledgeBase(Base):
    __tablename__ = "knowledge_bases"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_knowledge_bases_tenant_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # The owner (rag/core/tenancy.py): names are unique per tenant, never visible across tenants.
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # The embedding model and dimension every vector of this knowledge base was made with.
    embedding_model: Mapped[str] = mapped_column(String(500))
    embedding_dim: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The index version queries use (index_versions.number); embedding_model/dim above always
    # describe it, since they change in the same transaction as this.
    live_version: Mapped[int] = mapped_column(Integer, default=1)
    # Domain terms the lexical analyser keeps whole for this knowledge base (user dictionary).
    lexical_terms: Mapped[list[str]] = mapped_column(default=list)
    # Below this relevance (rag/retrieval/relevance.py) /ask says the knowledge base does not
    # cover the question, without calling the LLM; None: the configured default.
    relevance_threshold: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)
    # Bumped by every change of a setting that changes answers (the lexical terms, the
    # threshold): part of the answer cache's key (rag/qa/answer_cache.py kb_state).
    settings_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class IndexVersion(Base):
    """One generation of a knowledge base's chunks: its chunking, its model, its state."""

    __tablename__ = "index_versions"
    __table_args__ = (UniqueConstraint("kb_id", "number", name="uq_index_versions_kb_number"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    embedding_model: Mapped[str] = mapped_column(String(500))
    embedding_dim: Mapped[int] = mapped_column(Integer)
    chunk_tokens: Mapped[int] = mapped_column(Integer)
    overlap_tokens: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=VersionStatus.building)
    job_id: Mapped[str | None] = mapped_column(String(32), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # What the switch checks measured (counts, sample queries).
    checks: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        # The same bytes are one document: among the versions that are not superseded (an
        # older version's bytes may come back as a new version, or by a restore).
        Index(
            "uq_documents_kb_sha256_unsuperseded",
            "kb_id",
            "sha256",
            unique=True,
            sqlite_where=text("status != 'superseded'"),
            postgresql_where=text("status != 'superseded'"),
        ),
        # One current version per key.
        Index(
            "uq_documents_kb_key_current",
            "kb_id",
            "doc_key",
            unique=True,
            sqlite_where=text("is_current"),
            postgresql_where=text("is_current"),
        ),
        Index("uq_documents_kb_key_revision", "kb_id", "doc_key", "revision", unique=True),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id"), index=True)
    filename: Mapped[str] = mapped_column(String(500))
    media_type: Mapped[str] = mapped_column(String(200))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=DocumentStatus.queued, index=True)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    pages: Mapped[int | None] = mapped_column(Integer, default=None)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    warnings: Mapped[list[str]] = mapped_column(default=list)
    user_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    # Server-generated path relative to the data dir; the user's filename is only metadata.
    storage_path: Mapped[str] = mapped_column(String(500))
    # The stable key of a document across its versions (rag/kb/knowledge.py): the caller's
    # external_id, else the filename. None: a document without versions (an attachment).
    doc_key: Mapped[str | None] = mapped_column(String(500), nullable=True, default=None)
    external_id: Mapped[str | None] = mapped_column(String(500), nullable=True, default=None)
    # 1, 2, ... within a key. The current version is the one listed and, once ready, searched;
    # a newer one waits (not current) until it is ready and replaces it in one commit.
    revision: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    is_current: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=true(), nullable=False
    )
    # The document this one was extracted from (a mail's attachment); None for an upload.
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("documents.id", name="fk_documents_parent_id"),
        nullable=True,
        default=None,
        index=True,
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint(
            "document_id", "version", "ordinal", name="uq_chunks_document_version_ordinal"
        ),
        Index("ix_chunks_kb_seq", "kb_id", "seq"),
        Index("ix_chunks_kb_version_seq", "kb_id", "version", "seq"),
        Index("ix_chunks_model_text", "embedding_model", "text_sha256"),
    )

    # The FAISS id: never reused, never positional.
    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id"))
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id"), index=True)
    # The index version this chunk belongs to (each version chunks every document again).
    version: Mapped[int] = mapped_column(Integer, default=1)
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    # sha256 of the embedded text, so identical text is never embedded twice.
    text_sha256: Mapped[str] = mapped_column(String(64))
    page_start: Mapped[int] = mapped_column(Integer)
    page_end: Mapped[int] = mapped_column(Integer)
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    heading_path: Mapped[list[str]] = mapped_column(default=list)
    # Where a chunk spanning pages changes page: [[char offset in `text`, page], ...] after the
    # first page (empty for a one-page chunk), so a hit can name the page of its best sentence.
    page_marks: Mapped[list[list[int]]] = mapped_column(JSON, default=list)
    token_count: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian
    embedding_model: Mapped[str] = mapped_column(String(500))
    # Commit-ordered sequence (rag/store/sequence.py): the index replays rows above its last seq.
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    # Disabled by an operator: kept in SQL, left out of every index and every search.
    disabled: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false(), nullable=False
    )


class ChunkTombstone(Base):
    """A deleted chunk id, so every index replica drops it during catch-up."""

    __tablename__ = "chunk_tombstones"
    __table_args__ = (Index("ix_tombstones_kb_seq", "kb_id", "seq"),)

    chunk_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kb_id: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(BigInteger)


class Counter(Base):
    """Named counters; updating a row locks it, which makes `seq` follow commit order."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_run_after", "status", "run_after"),
        Index("ix_jobs_status_priority", "status", "priority", "created_at"),
        # The fair order looks up when each knowledge base was last served.
        Index("ix_jobs_started_at", "started_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))
    kb_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    document_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued)
    # JobPriority: lower first; fairness across knowledge bases applies within one priority.
    priority: Mapped[int] = mapped_column(Integer, default=JobPriority.interactive)
    # The document's file name, for operators reading the queue (ingest jobs only).
    filename: Mapped[str | None] = mapped_column(String(500), default=None)
    # IngestStage of a running ingest job, and how many of its pages that stage has done.
    stage: Mapped[str | None] = mapped_column(String(16), default=None)
    pages_done: Mapped[int] = mapped_column(Integer, default=0)
    pages_total: Mapped[int | None] = mapped_column(Integer, default=None)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    worker_id: Mapped[str | None] = mapped_column(String(200), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    run_after: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    def __init__(self, **kw: Any) -> None:
        if "priority" not in kw and kw.get("kind", JobKind.ingest) != JobKind.ingest:
            kw["priority"] = JobPriority.background
        super().__init__(**kw)
        # The request that queued the job travels with it, so that the worker's log records
        # for the job (another thread, maybe another process) carry the same request id.
        queued_by = request_context.current()
        if queued_by is not None:
            self.payload = {**(self.payload or {}), JOB_REQUEST_ID: queued_by}

    @property
    def request_id(self) -> str | None:
        value = (self.payload or {}).get(JOB_REQUEST_ID)
        return value if isinstance(value, str) else None


class Conversation(Base):
    """A multi-turn conversation with one knowledge base; deleted with it."""

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_kb_updated", "kb_id", "updated_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Message(Base):
    """One turn: the user's question, or the assistant's answer with its citations."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_conversation_id", "conversation_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))  # user | assistant
    content: Mapped[str] = mapped_column(Text)
    # The standalone question retrieval used (user turns that were condensed).
    standalone: Mapped[str | None] = mapped_column(Text, default=None)
    citations: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    model: Mapped[str | None] = mapped_column(String(500), default=None)
    usage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IdempotencyRecord(Base):
    """The first response to a request carrying an Idempotency-Key, replayed for repeats."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # Route and knowledge base: the same key sent to another route is another request.
    scope: Mapped[str] = mapped_column(String(300), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# Tables of the security layer: API keys (stored hashed) and the audit log.


class ApiKey(Base):
    """An integration's key. Only the SHA-256 of its secret is kept: the secret is 32 random
    bytes, so a fast hash is safe, and verification stays cheap on every request."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_tenant", "tenant_id"),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # public part of the key
    name: Mapped[str] = mapped_column(String(200), default="")
    tenant_id: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # None: every knowledge base of the tenant; else only these ids.
    kb_ids: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # None: the service defaults (RAG_SECURITY__*).
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrent_generations: Mapped[int | None] = mapped_column(Integer, nullable=True)
    upload_bytes_per_day: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class AuditEvent(Base):
    """Who did what to keys, tenants and knowledge bases. Never holds a secret."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_tenant_at", "tenant_id", "at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(80))  # "key:<id>", "cli", "open"
    tenant_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))  # key.create, kb.delete, ...
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# Webhooks: subscriptions and their deliveries (a transactional outbox, rag/kb/events.py).


class DeliveryStatus(StrEnum):
    pending = "pending"  # due at next_attempt_at (a first try, or a retry after a failure)
    delivered = "delivered"
    dead = "dead"  # given up after the subscription's attempts; replayable


class Webhook(Base):
    """A tenant's subscription: events POSTed to `url`, signed with `secret`. The secret signs
    every body (HMAC), so unlike an API key it is kept as given, not hashed."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_tenant", "tenant_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(200))
    events: Mapped[list[str]] = mapped_column(JSON)  # event names; ["*"] for every event
    # None: every knowledge base of the tenant; else only events of these.
    kb_ids: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base):
    """One event for one subscription, written in the same commit as the change it reports."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook", "webhook_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# Helpdesk: assistants, the question log with feedback and hand-offs, curated answers, golden
# rows, widget keys and chat-platform bots (issue 19).


class Assistant(Base):
    """A knowledge base's face to its users: prompt, greeting, refusal text, retrieval and
    sampling settings (`config`, validated by rag/qa/assistants.py). Every change bumps
    `version` and keeps the old config in `assistant_versions`; the answer cache keys on it."""

    __tablename__ = "assistants"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_assistants_tenant_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    name: Mapped[str] = mapped_column(String(200))
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class AssistantVersion(Base):
    """One saved configuration of an assistant, kept for the history and for restoring."""

    __tablename__ = "assistant_versions"

    assistant_id: Mapped[str] = mapped_column(
        ForeignKey("assistants.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    actor: Mapped[str] = mapped_column(String(80), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class QuestionRecord(Base):
    """One question asked through any channel and what it got; its id is the answer id that
    feedback and hand-offs name. The question is kept redacted (RAG_ANALYTICS__REDACT_PATTERNS)."""

    __tablename__ = "question_log"
    __table_args__ = (
        Index("ix_question_log_tenant_at", "tenant_id", "created_at"),
        Index("ix_question_log_kb_at", "kb_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"))
    # Not a foreign key: the log outlives a deleted assistant.
    assistant_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    channel: Mapped[str] = mapped_column(String(32), default="api")
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    citations: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    model: Mapped[str | None] = mapped_column(String(500), nullable=True)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    grounded: Mapped[bool] = mapped_column(Boolean, default=False)
    # False: the knowledge base did not cover the question (the refusal, no LLM call).
    covered: Mapped[bool] = mapped_column(Boolean, default=True)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    curated: Mapped[bool] = mapped_column(Boolean, default=False)
    conversation_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)  # +1 up, -1 down
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    rated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    handoff_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    handoff_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CuratedAnswer(Base):
    """An answer an admin wrote for one question, returned verbatim (no retrieval, no LLM)
    when that question is asked again; `question_key` is the normalised question's digest."""

    __tablename__ = "curated_answers"
    __table_args__ = (UniqueConstraint("kb_id", "question_key", name="uq_curated_kb_question"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"))
    question: Mapped[str] = mapped_column(Text)
    question_key: Mapped[str] = mapped_column(String(64))
    answer: Mapped[str] = mapped_column(Text)
    citations: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    source_question_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GoldenRow(Base):
    """A golden-set row for `rag eval` (rag/evaluation/golden.py's format), made from a logged
    question and the passage an admin chose."""

    __tablename__ = "golden_rows"
    __table_args__ = (Index("ix_golden_rows_kb", "kb_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"))
    question: Mapped[str] = mapped_column(Text)
    answer_excerpt: Mapped[str | None] = mapped_column(Text, nullable=True)
    filename: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    pages: Mapped[list[int]] = mapped_column(JSON, default=list)
    source_question_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WidgetKey(Base):
    """A publishable key for the embeddable widget: not a secret (it sits in a page's HTML), so
    it is bound to one assistant and to the origins allowed to use it, with its own limit."""

    __tablename__ = "widget_keys"
    __table_args__ = (Index("ix_widget_keys_tenant", "tenant_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # "pk_" + random
    tenant_id: Mapped[str] = mapped_column(String(64))
    assistant_id: Mapped[str] = mapped_column(ForeignKey("assistants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="")
    allowed_origins: Mapped[list[str]] = mapped_column(JSON)
    requests_per_minute: Mapped[int] = mapped_column(Integer, default=30)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Bot(Base):
    """A chat-platform bot (wecom, dingtalk, feishu, slack) answering as one assistant.
    `credentials` hold the platform's secrets and are never returned by the API; `api_base`
    is the platform's message API (None: the platform's public address)."""

    __tablename__ = "bots"
    __table_args__ = (Index("ix_bots_tenant", "tenant_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    assistant_id: Mapped[str] = mapped_column(ForeignKey("assistants.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    credentials: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    api_base: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BotThread(Base):
    """The conversation a bot keeps for one chat thread (a chat, a channel thread)."""

    __tablename__ = "bot_threads"

    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), primary_key=True)
    thread_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class BotNonce(Base):
    """A callback's nonce or event id, seen once: a replayed callback finds it and is refused.
    The primary key makes that hold across replicas; old rows are purged by age."""

    __tablename__ = "bot_nonces"
    __table_args__ = (Index("ix_bot_nonces_seen", "seen_at"),)

    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(200), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
