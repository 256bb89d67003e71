"""Request and response bodies of the public HTTP contract.

Request bodies derive from `RequestBody`, which refuses unknown fields: a misspelt option
(`topk`) is a 422 naming it, not silently ignored. The OpenAI-compatible request is the
exception (api/routes/openai_compat.py): the SDKs send parameters it does not use."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.types import UtcDateTime
from rag.kb import job_control
from rag.kb.chunks import ChunkView
from rag.kb.knowledge import KBStats
from rag.kb.scheduling import QueueState, priority_name
from rag.kb.versions import VersionInfo
from rag.qa.answer import Answer, AskSpec
from rag.qa.assistants import AssistantSettings, RetrievalChoice, Sampling, settings_of
from rag.retrieval.retriever import Passage
from rag.store.models import (
    Assistant,
    AssistantVersion,
    Document,
    DocumentStatus,
    Job,
    KnowledgeBase,
)


class RequestBody(BaseModel):
    """Base of every request body: unknown fields are refused (422 `validation_error`)."""

    model_config = ConfigDict(extra="forbid")


class KnowledgeBaseCreate(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)


class KnowledgeBaseOut(BaseModel):
    id: str
    name: str
    description: str
    embedding_model: str
    embedding_dim: int
    created_at: UtcDateTime
    documents: int | None = None
    chunks: int | None = None
    documents_by_status: dict[str, int] | None = None
    relevance_threshold: float | None = Field(
        None,
        description="/ask refuses below this relevance; null: RAG_RETRIEVAL__RELEVANCE_DEFAULT_"
        "THRESHOLD (PATCH to set, POST …/relevance/calibrate to measure)",
    )

    @classmethod
    def of(cls, kb: KnowledgeBase, stats: KBStats | None = None) -> KnowledgeBaseOut:
        out = cls(
            id=kb.id,
            name=kb.name,
            description=kb.description,
            embedding_model=kb.embedding_model,
            embedding_dim=kb.embedding_dim,
            created_at=kb.created_at,
            relevance_threshold=kb.relevance_threshold,
        )
        if stats is not None:
            out.documents, out.chunks = stats.documents, stats.chunks
            out.documents_by_status = stats.by_status
        return out


class KnowledgeBaseList(BaseModel):
    knowledge_bases: list[KnowledgeBaseOut]


class KnowledgeBaseUpdate(RequestBody):
    """PATCH: only the fields given change."""

    relevance_threshold: float | None = Field(
        None, ge=0, le=1, description="0 never refuses; null: back to the configured default"
    )


class LexiconIn(RequestBody):
    terms: list[str] = Field(
        max_length=5000,
        description="domain words the lexical index keeps whole (each 1-32 characters, no "
        "whitespace); stored folded (NFKC, lower case, simplified), deduplicated and sorted",
    )


class LexiconPatch(RequestBody):
    add: list[str] = Field(default_factory=list, max_length=5000, description="terms to add")
    remove: list[str] = Field(default_factory=list, max_length=5000, description="terms to drop")


class LexiconOut(BaseModel):
    terms: list[str]


class LexiconChangeOut(LexiconOut):
    added: list[str]
    removed: list[str]
    reindexed: bool = Field(description="this server re-analysed the lexical index already")


class SuggestionsRequest(RequestBody):
    limit: int = Field(50, ge=1, le=1000)
    min_count: int = Field(5, ge=2, description="occurrences in the chunks read")
    min_cohesion: float = Field(
        0.5, ge=0, le=1, description="normalised PMI of the pieces (1: never apart)"
    )


class SuggestionOut(BaseModel):
    term: str
    pieces: list[str] = Field(description="how the lexical analyser cuts it today")
    count: int
    cohesion: float


class SuggestionList(BaseModel):
    suggestions: list[SuggestionOut]


class CalibrateRequest(RequestBody):
    golden: list[dict[str, Any]] | None = Field(
        None,
        max_length=10_000,
        description='answerable questions ({"question"} items, as for eval); default: the '
        "knowledge base's own section headings as pseudo-questions",
    )
    negatives: list[str] | None = Field(
        None,
        max_length=10_000,
        description="questions it must not answer; default: built-in questions on other topics",
    )
    min_answered: float = Field(
        0.9, ge=0, le=1, description="the share of answerable questions that must stay answered"
    )
    apply: bool = Field(True, description="store the threshold on the knowledge base")


class CalibrationOut(BaseModel):
    threshold: float
    previous: float | None = Field(description="the knowledge base's threshold before")
    applied: bool
    source: Literal["golden", "headings"]
    positives: int
    negatives: int
    answered: float = Field(description="share of the answerable questions at or above it")
    refused: float = Field(description="share of the negatives below it")


class DocumentOut(BaseModel):
    id: str
    kb_id: str
    filename: str
    media_type: str
    size_bytes: int
    sha256: str
    status: str
    error: str | None
    pages: int | None
    chunks: int
    warnings: list[str]
    metadata: dict[str, Any]
    created_at: UtcDateTime
    updated_at: UtcDateTime
    duplicate: bool = False
    key: str | None = Field(
        None, description="what versions of one document share: external_id, else the filename"
    )
    external_id: str | None = None
    parent_id: str | None = Field(
        None, description="the document this one was extracted from (a mail's attachment)"
    )
    version: int = Field(1, description="1, 2, ... within the key")
    current: bool = Field(
        True,
        description="the key's current version: listed, and searched once ready; a newer "
        "version is not current until it is ready",
    )
    # Ingestion progress, for queued and processing documents only (null otherwise).
    queue_position: int | None = Field(
        None, description="queued: 1-based place in the fair ingestion order (1 runs next)"
    )
    stage: str | None = Field(None, description="processing: parse, ocr, chunk, embed or store")
    pages_done: int | None = Field(None, description="pages the current stage has done")
    pages_total: int | None = None
    eta_s: float | None = Field(
        None, description="estimated seconds until ready, from recent throughput; null until known"
    )

    @classmethod
    def of(
        cls, doc: Document, duplicate: bool = False, queue: QueueState | None = None
    ) -> DocumentOut:
        out = cls(
            id=doc.id,
            kb_id=doc.kb_id,
            filename=doc.filename,
            media_type=doc.media_type,
            size_bytes=doc.size_bytes,
            sha256=doc.sha256,
            status=doc.status,
            error=doc.error,
            pages=doc.pages,
            chunks=doc.chunk_count,
            warnings=doc.warnings or [],
            metadata=doc.user_metadata or {},
            created_at=doc.created_at,
            updated_at=doc.updated_at,
            duplicate=duplicate,
            key=doc.doc_key,
            external_id=doc.external_id,
            parent_id=doc.parent_id,
            version=doc.revision,
            current=doc.is_current,
        )
        if queue is not None and doc.status in (DocumentStatus.queued, DocumentStatus.processing):
            out.queue_position, out.stage = queue.queue_position, queue.stage
            out.pages_done, out.pages_total = queue.pages_done, queue.pages_total
            out.eta_s = queue.eta_s
        return out


class DocumentList(BaseModel):
    documents: list[DocumentOut]


class DocumentVersions(BaseModel):
    key: str | None
    versions: list[DocumentOut] = Field(description="newest first")


class RestoreRequest(RequestBody):
    version: int | None = Field(
        None, ge=1, description="the version to restore; null: the newest superseded one"
    )


class SyncRequest(RequestBody):
    """Keep the knowledge base equal to a folder on the server, or to a list of URLs."""

    folder: str | None = Field(
        None, description="a folder the worker reads, inside one of RAG_SYNC__FOLDERS"
    )
    urls: list[str] | None = Field(
        None, description="URLs under one of RAG_SYNC__URL_PREFIXES", max_length=100_000
    )
    interval_s: float | None = Field(
        None,
        gt=0,
        description="run again this many seconds after each run ends, until the queued run "
        "is cancelled (at least RAG_SYNC__MIN_INTERVAL_S); null: once",
    )
    delete_missing: bool = Field(
        True, description="delete the documents the source no longer lists"
    )


class ChunkOut(BaseModel):
    id: int
    document_id: str
    version: int = Field(description="the index version the chunk belongs to")
    ordinal: int = Field(description="its place in the document, from 0")
    text: str
    page_start: int
    page_end: int
    page_marks: list[list[int]] = Field(
        description="[[offset in text, page], ...]: where the text moves to a later page"
    )
    heading_path: list[str]
    token_count: int
    disabled: bool = Field(description="kept in SQL, left out of search and answers")

    @classmethod
    def of(cls, chunk: ChunkView) -> ChunkOut:
        return cls(**asdict(chunk))


class ChunkList(BaseModel):
    version: int = Field(description="the live index version the chunks belong to")
    total: int
    offset: int
    limit: int
    chunks: list[ChunkOut]


class ChunkUpdate(RequestBody):
    disabled: bool = Field(description="true: leave search and answers; false: take part again")


class SearchRequest(RequestBody):
    query: str = Field(min_length=1, max_length=10_000)
    top_k: int | None = Field(None, ge=1, le=1000)
    mode: Literal["dense", "lexical", "hybrid"] | None = Field(
        None, description="retrieval method; default RAG_RETRIEVAL__MODE (hybrid)"
    )
    filters: dict[str, Any] | None = Field(
        None,
        description='{"document_ids": [...], "filename": "*.pdf", "metadata": {"team": "hr"}}; '
        "all given conditions must hold",
    )
    rerank: bool | None = Field(
        None, description="cross-encoder rerank; default RAG_RETRIEVAL__RERANK (off)"
    )
    aggregate: Literal["chunk", "document", "auto"] | None = Field(
        None,
        description='"document": rank documents by their best chunks, one hit (the best chunk) '
        'per document; "chunk": rank chunks; "auto": "document" in a knowledge base of many '
        "short documents (at least 20, of at most 10 chunks each on average), else chunk; "
        "default RAG_RETRIEVAL__DOC_AGGREGATE (auto)",
    )


class SearchResult(BaseModel):
    chunk_id: int
    document_id: str
    filename: str
    page: int = Field(description="the page of the chunk's sentence that best matches the query")
    page_start: int | None = Field(None, description="the chunk's first page")
    page_end: int
    text: str
    score: float
    title: str = Field("", description="the document's title (metadata title, else file name)")
    heading_path: list[str] = Field(
        description="document title › chapter › section: where the passage sits"
    )
    relevance: float | None = Field(
        None,
        description="absolute relevance in [0, 1], comparable across queries; null in a citation",
    )

    @classmethod
    def of(cls, p: Passage) -> SearchResult:
        return cls(
            chunk_id=p.chunk_id,
            document_id=p.document_id,
            filename=p.filename,
            page=p.page,
            page_start=p.first_page,
            page_end=p.page_end,
            text=p.text,
            score=p.score,
            title=p.title,
            heading_path=list(p.full_path),
        )


class SearchResponse(BaseModel):
    results: list[SearchResult]


class AskRequest(RequestBody):
    question: str = Field(min_length=1, max_length=20_000)
    top_k: int | None = Field(None, ge=1, le=1000)
    stream: bool = False
    conversation_id: str | None = Field(
        None, description="Continue this conversation: the follow-up is condensed, then recorded."
    )
    retrieval_only: bool = Field(False, description="Return the passages without calling the LLM.")
    response_format: dict[str, Any] | None = Field(
        None,
        description='OpenAI-style {"type": "json_schema", "json_schema": {"name", "schema"}}: '
        "guided decoding on vLLM; the answer is validated, asked for again with the validation "
        "error up to RAG_LLM__JSON_RETRIES times (422 after that), and returned in `parsed`.",
    )
    max_tokens: int | None = Field(None, ge=1, description="At most the configured answer length.")
    temperature: float | None = Field(None, ge=0, le=2)
    filters: dict[str, Any] | None = Field(None, description="Retrieval filters, as for search.")
    cache: bool = Field(
        True,
        description="Answer from the answer cache when the knowledge base is unchanged since the "
        "same question was answered, and keep this answer there; false: neither.",
    )

    def spec(self, kb_id: str) -> AskSpec:
        return AskSpec(
            kb_id,
            self.question,
            self.top_k,
            conversation_id=self.conversation_id,
            response_format=self.response_format,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            search_options={"filters": self.filters} if self.filters else {},
        )


class CitationOut(SearchResult):
    index: int
    cited: bool


class RoutingOut(BaseModel):
    """How the answering route was chosen (rag/generation/model_routes.py)."""

    route: str
    source: Literal["rule", "classifier", "default"] = Field(
        description="rule: a routing rule matched; classifier: the routing classifier's label "
        "was confident enough; default: neither"
    )
    label: str | None = Field(None, description="The classifier's label (kb, code, math, ...).")
    confidence: float | None = Field(None, description="The classifier's probability of label.")


class AskResponse(BaseModel):
    answer: str | None
    citations: list[CitationOut]
    model: str | None = Field(description="The model that answered (see routing).")
    usage: dict[str, int]
    retrieval_only: bool
    route: str | None = None
    question: str | None = Field(None, description="The standalone question retrieval used.")
    parsed: Any = Field(None, description="The validated JSON, when response_format was given.")
    finish_reason: str | None = None
    conversation_id: str | None = None
    message_id: int | None = None
    cached: bool = Field(False, description="Served from the answer cache (usage is then 0).")
    grounded: bool = Field(
        False, description="The answer cites at least one retrieved passage ([n])."
    )
    truncated: bool = Field(
        False, description='Cut off at the token limit (finish_reason "length").'
    )
    degenerate: str | None = Field(
        None,
        description='Why the generation looks useless: "echo" (it repeated the prompt) or '
        '"repetition" (a runaway loop, stopped early); null when it looks sound.',
    )
    covered: bool = Field(
        True,
        description="false: no passage was relevant enough, the answer is the fixed 'not "
        "covered' message, without citations and without an LLM call",
    )
    fallback_from: str | None = Field(
        None,
        description="The route that was down when its fallback (`route`, `model`) answered "
        "instead; null when the chosen route answered.",
    )
    structured_retries: int = Field(
        0, description="How often the structured answer was asked for again before it was valid."
    )
    routing: RoutingOut | None = Field(
        None, description="How the route was chosen; null without a generated answer."
    )
    answer_id: str | None = Field(
        None,
        description="The question log's id of this answer: POST /v1/answers/{answer_id}/feedback "
        "or /handoff name it; null when not logged (retrieval only, RAG_ANALYTICS__ENABLED=false).",
    )
    curated: bool = Field(
        False, description="A curated answer an admin wrote, returned verbatim (no LLM call)."
    )
    handoff_suggested: bool = Field(
        False,
        description="The knowledge base did not cover the question or the answer cites nothing: "
        "offer the user a person (POST /v1/answers/{answer_id}/handoff).",
    )

    @classmethod
    def of(cls, a: Answer, *, cached: bool = False) -> AskResponse:
        return cls(
            answer=a.answer,
            citations=citations_out(a),
            model=a.model,
            usage=a.usage,
            retrieval_only=a.retrieval_only,
            route=a.route,
            question=a.question,
            parsed=a.parsed,
            finish_reason=a.finish_reason,
            conversation_id=a.conversation_id,
            message_id=a.message_id,
            cached=cached,
            **answer_flags(a),
        )


def answer_flags(a: Answer) -> dict[str, Any]:
    """What the answer says about itself (rag/qa/answer.py): on the REST response, the SSE
    `done` event and the OpenAI-compatible response alike."""
    return {
        "grounded": a.grounded,
        "truncated": a.truncated,
        "degenerate": a.degenerate,
        "covered": a.covered,
        "fallback_from": a.fallback_from,
        "structured_retries": a.structured_retries,
        "routing": a.routing,
        "answer_id": a.answer_id,
        "curated": a.curated,
        "handoff_suggested": a.needs_handoff,
    }


def citations_out(a: Answer) -> list[CitationOut]:
    return [
        CitationOut(index=c.index, cited=c.cited, **SearchResult.of(c.passage).model_dump())
        for c in a.citations
    ]


class JobOut(BaseModel):
    id: str
    job_id: str
    kind: str
    kb_id: str | None
    document_id: str | None
    status: str
    filename: str | None = Field(None, description="the document's file name (ingest jobs)")
    priority: str = Field(
        "interactive", description="interactive, batch or background: the order jobs run in"
    )
    stage: str | None = Field(None, description="running ingest jobs: the IngestStage")
    pages_done: int = 0
    pages_total: int | None = None
    queue_position: int | None = Field(
        None, description="queued jobs: 1-based place in the fair order (1 runs next)"
    )
    progress: dict[str, float | None]
    error: str | None
    attempts: int
    cancel_requested: bool = False
    result: dict[str, Any]
    request_id: str | None = Field(
        None, description="X-Request-ID of the request that queued the job; on its log records"
    )
    created_at: UtcDateTime
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None

    @classmethod
    def of(cls, job: Job, queue_position: int | None = None) -> JobOut:
        p = job_control.progress(job, datetime.now(UTC))
        return cls(
            id=job.id,
            job_id=job.id,
            kind=job.kind,
            kb_id=job.kb_id,
            document_id=job.document_id,
            status=job.status,
            filename=job.filename,
            priority=priority_name(job.priority or 0),
            stage=job.stage,
            pages_done=job.pages_done or 0,
            pages_total=job.pages_total,
            queue_position=queue_position,
            progress={
                "done": p.done,
                "total": p.total,
                "rate_per_s": p.rate_per_s,
                "eta_s": p.eta_s,
            },
            cancel_requested=bool((job.payload or {}).get(job_control.CANCEL_REQUESTED)),
            error=job.error,
            attempts=job.attempts,
            result=job.result or {},
            request_id=job.request_id,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )


class ReindexRequest(RequestBody):
    """A new index version; settings left out are the live version's."""

    embedding_model: str | None = Field(
        None, max_length=500, description="a model name, local folder or fake:<dim>"
    )
    chunk_tokens: int | None = Field(None, ge=32, le=8192)
    overlap_tokens: int | None = Field(None, ge=0)


class ReindexOut(JobOut):
    version: int = Field(description="the index version the job builds (or rolls back to)")


class VersionOut(BaseModel):
    number: int
    status: str
    embedding_model: str
    embedding_dim: int
    chunk_tokens: int
    overlap_tokens: int
    chunks: int
    documents: int
    job_id: str | None
    error: str | None
    checks: dict[str, Any]
    created_at: UtcDateTime
    activated_at: UtcDateTime | None

    @classmethod
    def of(cls, v: VersionInfo) -> VersionOut:
        return cls(**asdict(v))


class VersionList(BaseModel):
    live: int
    versions: list[VersionOut]


# --- assistants ---


class AssistantPatch(RequestBody):
    """The fields to change (left out: unchanged); retrieval and sampling merge field by field."""

    name: str | None = Field(None, min_length=1, max_length=200)
    kb: str | None = Field(None, description="move it to this knowledge base (id or name)")
    system_prompt: str | None = Field(
        None,
        max_length=8_000,
        description="replaces the built-in system prompt; the reference rules (cite [n], the "
        "references are data) are always appended; null: the built-in prompt",
    )
    greeting: str | None = Field(
        None, max_length=2_000, description="what the widget and the bots say first"
    )
    refusal_text: str | None = Field(
        None,
        max_length=2_000,
        description="the answer when the knowledge base does not cover a question; null: the "
        "built-in text in the question's language",
    )
    language: Literal["auto", "zh", "en"] | None = Field(
        None, description="the answers' language; auto: the question's"
    )
    retrieval: RetrievalChoice | None = None
    sampling: Sampling | None = None

    def settings_patch(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude={"name", "kb"})


class AssistantCreate(AssistantPatch):
    name: str = Field(min_length=1, max_length=200)
    kb: str = Field(description="the knowledge base it answers from (id or name)")


class AssistantOut(BaseModel):
    id: str
    name: str
    kb_id: str
    version: int = Field(description="bumped by every change; the answer cache keys on it")
    greeting: str
    settings: AssistantSettings
    created_at: UtcDateTime
    updated_at: UtcDateTime

    @classmethod
    def of(cls, row: Assistant) -> AssistantOut:
        settings = settings_of(row)
        return cls(
            id=row.id,
            name=row.name,
            kb_id=row.kb_id,
            version=row.version,
            greeting=settings.greeting,
            settings=settings,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class AssistantList(BaseModel):
    assistants: list[AssistantOut]


class AssistantVersionOut(BaseModel):
    version: int
    settings: dict[str, Any]
    actor: str = Field(description="who saved it: key:<id>, cli or open")
    created_at: UtcDateTime

    @classmethod
    def of(cls, row: AssistantVersion) -> AssistantVersionOut:
        return cls(
            version=row.version, settings=row.config, actor=row.actor, created_at=row.created_at
        )


class AssistantVersionList(BaseModel):
    versions: list[AssistantVersionOut]


class PlaygroundRequest(RequestBody):
    question: str = Field(min_length=1, max_length=20_000)


class PlaygroundOut(BaseModel):
    """One question through an assistant, with what happened on the way (never cached)."""

    prompt: list[dict[str, str]] = Field(description="the messages as sent to the LLM")
    passages: list[SearchResult] = Field(
        description="the retrieved passages, best first, with score and relevance"
    )
    answer: AskResponse
    settings: dict[str, Any] = Field(
        description="the effective settings: the assistant's, with the defaults filled in"
    )
