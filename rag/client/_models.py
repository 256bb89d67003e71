"""Results, stream events and errors of the kbqa client (rag/client/_client.py): frozen dataclasses
read from the API's JSON. Only httpx, httpx-sse and the standard library, like the client itself."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar

import httpx
from httpx_sse import EventSource

T = TypeVar("T")


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ErrorDetail:
    """One field at fault in a request: `field` is the dotted path ("body.top_k"), `loc` the
    same as a list, `type` the validator's name for the fault (e.g. "extra_forbidden")."""

    field: str
    message: str
    loc: list[str | int] = dataclasses.field(default_factory=list)  # `field` is taken here
    type: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ErrorDetail:
        loc = list(data.get("loc") or [])
        name = data.get("field") or ".".join(str(part) for part in loc)
        message = data.get("message") or data.get("msg") or ""
        return cls(field=str(name), message=str(message), loc=loc, type=str(data.get("type", "")))


class ApiError(Exception):
    """The API answered with an error status (every non-2xx answer raises it).

    `status` is the HTTP status; `code`, `message` and `details` come from the API's error
    envelope `{"error": {"code", "message", "details"}}`: `details` lists the fields at fault
    (empty when none is). For a body that is not an envelope, `code` is "http_<status>" and
    `message` the body's text. `retry_after` is the seconds to wait from `Retry-After` (429 and
    503 only; None when absent); `request_id` the server's X-Request-ID, for its logs.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: list[ErrorDetail] | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.retry_after = retry_after
        self.request_id = request_id
        self.body = body

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        code, message = f"http_{response.status_code}", str(body)[:2000]
        details: list[ErrorDetail] = []
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error = body["error"]
            code = str(error.get("code", code))
            message = str(error.get("message", message))
            details = _details(error.get("details"))
        elif isinstance(body, dict) and "detail" in body:  # a server older than the envelope
            details = _details(body["detail"])
            message = (
                "; ".join(f"{d.field}: {d.message}" for d in details)
                if details
                else json.dumps(body["detail"], ensure_ascii=False)
            )
        retry_after = None
        if response.status_code in (429, 503):
            retry_after = _retry_after_seconds(response.headers.get("retry-after"))
        return cls(
            response.status_code,
            code,
            message,
            details=details,
            retry_after=retry_after,
            request_id=response.headers.get("x-request-id"),
            body=body,
        )


def _details(value: Any) -> list[ErrorDetail]:
    if not isinstance(value, list):
        return []
    return [ErrorDetail.from_json(d) for d in value if isinstance(d, Mapping)]


class DocumentFailed(Exception):
    """`wait_until_ready` saw the document fail; `document.error` says why."""

    def __init__(self, document: Document) -> None:
        super().__init__(f"document {document.filename!r} failed: {document.error}")
        self.document = document


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # the HTTP-date form
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# --------------------------------------------------------------------------- results


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _build(cls: type[T], data: Mapping[str, Any], **converted: Any) -> T:
    """Make `cls` from a JSON object: known fields only (newer servers may add fields), the
    converted ones replaced, the whole object kept in `raw` where the class has it."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    kwargs = {k: v for k, v in data.items() if k in names}
    kwargs.update(converted)
    if "raw" in names:
        kwargs["raw"] = dict(data)
    return cls(**kwargs)


@dataclass(frozen=True)
class KnowledgeBase:
    id: str
    name: str
    description: str = ""
    embedding_model: str = ""
    embedding_dim: int = 0
    created_at: datetime | None = None
    documents: int | None = None
    chunks: int | None = None
    documents_by_status: dict[str, int] | None = None
    # /ask refuses below this relevance; None: the server's default.
    relevance_threshold: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KnowledgeBase:
        return _build(cls, data, created_at=_time(data.get("created_at")))


@dataclass(frozen=True)
class LexiconChange:
    """A knowledge base's user dictionary after a change, and what changed."""

    terms: list[str]
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reindexed: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LexiconChange:
        return _build(cls, data)


@dataclass(frozen=True)
class TermSuggestion:
    """A term learned from the knowledge base: how the analyser cuts it today, how often it
    occurs, how much its pieces stick together (normalised PMI)."""

    term: str
    pieces: list[str] = field(default_factory=list)
    count: int = 0
    cohesion: float = 0.0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TermSuggestion:
        return _build(cls, data)


@dataclass(frozen=True)
class Calibration:
    """A relevance threshold measured on answerable questions and questions on other topics."""

    threshold: float
    previous: float | None = None
    applied: bool = False
    source: str = ""  # "golden" or "headings"
    positives: int = 0
    negatives: int = 0
    answered: float = 0.0
    refused: float = 0.0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        return _build(cls, data)


@dataclass(frozen=True)
class Document:
    id: str
    kb_id: str
    filename: str
    status: str  # queued | processing | ready | failed | superseded
    error: str | None = None
    pages: int | None = None
    chunks: int = 0
    media_type: str = ""
    size_bytes: int = 0
    sha256: str = ""
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    duplicate: bool = False  # the same bytes were already in the knowledge base
    # Versions: the key they share (external_id, else the filename), this one's number, and
    # whether it is the current one (a newer version is not current until it is ready).
    key: str | None = None
    external_id: str | None = None
    version: int = 1
    current: bool = True
    # Ingestion progress while queued or processing (None otherwise): the place in the queue
    # (1 runs next), the stage and its pages, and the seconds until ready (None until known).
    queue_position: int | None = None
    stage: str | None = None
    pages_done: int | None = None
    pages_total: int | None = None
    eta_s: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Document:
        return _build(
            cls,
            data,
            created_at=_time(data.get("created_at")),
            updated_at=_time(data.get("updated_at")),
        )


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document as stored: `disabled` ones are left out of search and answers."""

    id: int
    document_id: str
    ordinal: int
    text: str
    page_start: int
    page_end: int
    version: int = 1
    page_marks: list[list[int]] = field(default_factory=list)
    heading_path: list[str] = field(default_factory=list)
    token_count: int = 0
    disabled: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Chunk:
        return _build(cls, data)


@dataclass(frozen=True)
class ChunkPage:
    """One page of a document's chunks (live index version, document order) and the total."""

    chunks: list[Chunk]
    total: int
    offset: int = 0
    limit: int = 0
    version: int = 1

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChunkPage:
        return _build(cls, data, chunks=[Chunk.from_json(c) for c in data.get("chunks", [])])


@dataclass(frozen=True)
class PageImage:
    """A PDF page rendered as PNG; `highlights`: rectangles drawn over the chunk's text."""

    png: bytes
    highlights: int = 0


@dataclass(frozen=True)
class Passage:
    """A search result: `page` is 1-based, as a PDF viewer counts: the page of the passage's
    best-matching sentence; `page_start`..`page_end` is the passage's whole span."""

    chunk_id: int
    document_id: str
    filename: str
    page: int
    text: str
    score: float
    page_end: int | None = None
    heading_path: list[str] = field(default_factory=list)
    relevance: float | None = None  # absolute, in [0, 1], comparable across queries (search)
    page_start: int | None = None
    title: str = ""  # the document's title; heading_path starts with it

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Passage:
        return _build(cls, data)


@dataclass(frozen=True)
class Citation(Passage):
    """A numbered reference of an answer; `cited` when the text uses its `[index]`."""

    index: int = 0
    cited: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Citation:
        return _build(cls, data)


@dataclass(frozen=True)
class Answer:
    answer: str | None
    citations: list[Citation]
    model: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    retrieval_only: bool = False
    route: str | None = None
    question: str | None = None  # the standalone question retrieval used
    parsed: Any = None  # the validated JSON when response_format was given
    finish_reason: str | None = None
    conversation_id: str | None = None
    message_id: int | None = None
    cached: bool = False  # served from the server's answer cache (usage is then 0)
    # What the answer says about itself: it cites at least one passage; it was cut off at the
    # token limit; the generation went wrong ("echo" of the prompt, "repetition"; None: sound).
    grounded: bool = False
    truncated: bool = False
    degenerate: str | None = None
    # False: the knowledge base does not cover the question; `answer` is the server's fixed
    # message, no citations, no LLM called.
    covered: bool = True
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Answer:
        citations = _citations(data.get("citations") or [])
        return _build(cls, data, citations=citations, **_flags(data, citations))


def _flags(data: Mapping[str, Any], citations: list[Citation]) -> dict[str, Any]:
    """`grounded` and `truncated` as the server sent them; a server that predates them is
    read the same way it would have computed them."""
    grounded = data.get("grounded")
    truncated = data.get("truncated")
    return {
        "grounded": any(c.cited for c in citations) if grounded is None else bool(grounded),
        "truncated": data.get("finish_reason") == "length" if truncated is None else truncated,
    }


def _citations(items: Iterable[Mapping[str, Any]]) -> list[Citation]:
    return [Citation.from_json(c) for c in items]


@dataclass(frozen=True)
class Message:
    id: int
    role: str
    content: str
    standalone: str | None = None
    citations: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Message:
        return _build(cls, data, created_at=_time(data.get("created_at")))


@dataclass(frozen=True)
class Conversation:
    id: str
    kb_id: str
    title: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    messages: list[Message] = field(default_factory=list)  # filled by get_conversation

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Conversation:
        return _build(
            cls,
            data,
            created_at=_time(data.get("created_at")),
            updated_at=_time(data.get("updated_at")),
            messages=[Message.from_json(m) for m in data.get("messages") or []],
        )


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    status: str  # queued | running | succeeded | failed | cancelled ...
    kb_id: str | None = None
    document_id: str | None = None
    filename: str | None = None  # ingest jobs: the document's file name
    priority: str = "interactive"  # interactive | batch | background
    stage: str | None = None  # running ingest jobs: parse | ocr | chunk | embed | store
    pages_done: int = 0
    pages_total: int | None = None
    queue_position: int | None = None  # queued jobs: 1 runs next
    progress: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None
    attempts: int = 0
    cancel_requested: bool = False
    result: dict[str, Any] = field(default_factory=dict)
    version: int | None = None  # the index version a reindex job builds
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        return _build(
            cls,
            data,
            created_at=_time(data.get("created_at")),
            started_at=_time(data.get("started_at")),
            finished_at=_time(data.get("finished_at")),
        )


@dataclass(frozen=True)
class IndexVersion:
    """One index version of a knowledge base; `status` is building, live, retired, failed or
    pruned; `checks` are the measurements that let it go live."""

    number: int
    status: str
    embedding_model: str = ""
    embedding_dim: int = 0
    chunk_tokens: int = 0
    overlap_tokens: int = 0
    chunks: int = 0
    documents: int = 0
    job_id: str | None = None
    error: str | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    activated_at: datetime | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IndexVersion:
        return _build(
            cls,
            data,
            created_at=_time(data.get("created_at")),
            activated_at=_time(data.get("activated_at")),
        )


# Events of a streamed answer, in order: DeltaEvent..., CitationsEvent, DoneEvent; or an
# ErrorEvent that ends the stream (failures before the first token raise ApiError instead).


@dataclass(frozen=True)
class DeltaEvent:
    text: str
    type: Literal["delta"] = "delta"


@dataclass(frozen=True)
class CitationsEvent:
    citations: list[Citation]
    type: Literal["citations"] = "citations"


@dataclass(frozen=True)
class DoneEvent:
    model: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    route: str | None = None
    question: str | None = None
    finish_reason: str | None = None
    conversation_id: str | None = None
    message_id: int | None = None
    cached: bool = False  # the answer was replayed from the server's answer cache
    grounded: bool = False  # the answer cites at least one passage
    truncated: bool = False  # cut off at the token limit
    degenerate: str | None = None  # "echo" or "repetition"; None: sound
    covered: bool = True  # False: the fixed "not covered" answer, no LLM called
    type: Literal["done"] = "done"


@dataclass(frozen=True)
class ErrorEvent:
    code: str
    message: str
    type: Literal["error"] = "error"


StreamEvent = DeltaEvent | CitationsEvent | DoneEvent | ErrorEvent


def _stream_event(name: str, data: str) -> StreamEvent | None:
    """One SSE event of /ask as a typed event; None for events this client does not know."""
    value = json.loads(data)
    if name == "delta":
        return DeltaEvent(text=value.get("text", ""))
    if name == "citations":
        return CitationsEvent(citations=_citations(value))
    if name == "done":
        return _build(DoneEvent, {k: v for k, v in value.items() if k != "type"})
    if name == "error":
        return ErrorEvent(code=str(value.get("code", "error")), message=str(value.get("message")))
    return None


def _stream_events(response: httpx.Response) -> Iterator[StreamEvent]:
    """The typed events of an /ask stream, parsed by httpx-sse.

    An event without data is no event (as the SSE format has it); an event this client does
    not know is skipped; an event the stream ends in the middle of (no blank line after it) is
    dropped, as the format says, rather than parsed half-received."""
    for sse in EventSource(response).iter_sse():
        if sse.data and (event := _stream_event(sse.event, sse.data)):
            yield event


async def _astream_events(response: httpx.Response) -> AsyncGenerator[StreamEvent, None]:
    """`_stream_events` for an async response."""
    async with aclosing(EventSource(response).aiter_sse()) as events:
        async for sse in events:
            if sse.data and (event := _stream_event(sse.event, sse.data)):
                yield event
