"""Answers to repeated questions, served from a cache while the knowledge base is unchanged.

    request ──(cache off, conversation, history?)──────────────────────────> answer as usual
       └─ key = sha256(tenant, kb, kb_state, normalised question, options, settings)
            ├─ hit ──> the stored answer (cached=true, usage 0), replayable as a stream
            └─ miss ─> answer as usual ──(complete, sound?)──> stored under the key, with a TTL

No write path needs a hook: any change to the knowledge base changes `kb_state` and so makes
new keys. Identical whole questions asked at once are generated once (`InFlight`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from typing import Any, TypeVar

import anyio
from sqlalchemy import ColumnElement, Select, bindparam, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from rag.core.config import Settings
from rag.qa.answer import Answer, AskSpec, Citation
from rag.qa.cache_backends import Backend, MemoryBackend, RedisBackend
from rag.qa.prompt import load_templates
from rag.retrieval.retriever import Passage
from rag.store.models import (
    Chunk,
    ChunkTombstone,
    Document,
    DocumentStatus,
    IndexVersion,
    KnowledgeBase,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
PAYLOAD_FORMAT = 1  # bump when the stored shape changes; older entries then read as misses
NO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

# --- the key ----------------------------------------------------------------------------------


def kb_state(session: Session, kb_id: str) -> str:
    """Changes whenever the knowledge base's searchable content can have changed.

    The knowledge base's content generation, read from SQL in one statement: the live index
    version and when it went live (a re-index switch or a rollback changes both), the newest
    chunk of the live version (every document that becomes ready commits its chunks with a new
    commit-ordered sequence number) and the newest tombstone (every deletion, of a document or
    of a failed build, records one). The document id and chunk id beside each sequence number
    keep a state unique even where sequence numbers repeat (a database restored from a backup
    hands them out again), and the knowledge base's settings version (its user dictionary and
    threshold). So any change makes new keys, and old entries age out (TTL, and LRU in process).
    """
    return kb_state_and_ready(session, kb_id)[0]


def first_ready_document(kb_id: ColumnElement[str] | InstrumentedAttribute[str]) -> Select[Any]:
    """The id of one ready document of the knowledge base `kb_id`, if it has one. The status is
    compared as an expression: SQLite then walks this knowledge base's documents
    (ix_documents_kb_id) to the first ready one, not every ready document (ix_documents_status)."""
    return (
        select(Document.id)
        .where(Document.kb_id == kb_id, Document.status.concat("") == DocumentStatus.ready.value)
        .limit(1)
    )


def kb_state_and_ready(session: Session, kb_id: str) -> tuple[str, bool]:
    """`kb_state`, and whether the knowledge base has a ready document, in one statement: the
    lookup before every answer checks both (rag/qa/service.py `require_ready`)."""
    row = session.execute(_kb_state_statement(), {"kb_id": kb_id}).one_or_none()
    if row is None:
        return "missing", False
    *state, ready = row
    return ":".join("-" if part is None else str(part) for part in state), ready is not None


@lru_cache(maxsize=1)
def _kb_state_statement() -> Select[Any]:
    """Built once: composing these subqueries costs more Python time than running them, and
    the lookup runs before every fresh answer (it adds to the time to first token)."""
    kb = KnowledgeBase
    newest_chunk = (
        select(Chunk.seq, Chunk.document_id)
        .where(Chunk.kb_id == kb.id, Chunk.version == kb.live_version)
        .order_by(Chunk.seq.desc())
        .limit(1)
        .correlate(kb)
    )
    newest_tombstone = (
        select(ChunkTombstone.seq, ChunkTombstone.chunk_id)
        .where(ChunkTombstone.kb_id == kb.id)
        .order_by(ChunkTombstone.seq.desc())
        .limit(1)
        .correlate(kb)
    )
    activated = (
        select(IndexVersion.activated_at)
        .where(IndexVersion.kb_id == kb.id, IndexVersion.number == kb.live_version)
        .correlate(kb)
    )
    ready_document = first_ready_document(kb.id).correlate(kb)
    # One statement, so the parts come from one snapshot.
    return select(
        kb.live_version,
        activated.scalar_subquery(),
        newest_chunk.with_only_columns(Chunk.seq).scalar_subquery(),
        newest_chunk.with_only_columns(Chunk.document_id).scalar_subquery(),
        newest_tombstone.with_only_columns(ChunkTombstone.seq).scalar_subquery(),
        newest_tombstone.with_only_columns(ChunkTombstone.chunk_id).scalar_subquery(),
        # Bumped by each change of the user dictionary or the relevance threshold, which change
        # what is retrieved and which questions are refused.
        kb.settings_version,
        ready_document.scalar_subquery(),
    ).where(kb.id == bindparam("kb_id"))


def normalise(question: str) -> str:
    """Full-width and half-width forms, case and spacing do not make another question."""
    return " ".join(unicodedata.normalize("NFKC", question).split()).casefold()


def cache_key(tenant: str, kb_id: str, state: str, question: str, options: dict[str, Any]) -> str:
    """The key covers everything an answer depends on: tenant, knowledge base and its
    `kb_state`, the normalised question, and the request's options with the settings."""
    material = json.dumps(
        {"t": tenant, "kb": kb_id, "state": state, "q": normalise(question), "o": options},
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(material.encode()).hexdigest()


def settings_fingerprint(settings: Settings) -> str:
    """What the configuration contributes to an answer: models and routes, retrieval, prompt
    templates and language, the link allowlist of the sanitizer. Replicas configured
    differently never share entries."""
    material = {
        "llm": settings.llm.model_dump(mode="json"),
        "retrieval": settings.retrieval.model_dump(mode="json"),
        "embedding": settings.embedding.model_dump(mode="json"),
        "tokenizer": settings.tokenizer.model_dump(mode="json"),
        "links": settings.security.link_allowlist,
        "templates": load_templates(settings.llm.prompt_dir),
    }
    raw = json.dumps(material, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def request_options(settings: Settings, spec: AskSpec) -> dict[str, Any]:
    return {
        "top_k": spec.top_k or settings.retrieval.top_k,
        "search": spec.search_options,  # mode, filters, rerank as the request gave them
        "format": spec.response_format,  # structured output: keyed on the schema
        "max_tokens": spec.max_tokens,
        "temperature": spec.temperature,
        # An assistant's version changes with every edit of its settings: an answer made under
        # older settings is never served; its settings are keyed too, for answers made without
        # a version (a caller filling the fields itself).
        "assistant": [spec.assistant_id, spec.assistant_version],
        "assistant_settings": [
            spec.system_prompt,
            spec.refusal_text,
            spec.top_p,
            spec.relevance_threshold,
            spec.language,
        ],
        "settings": settings_fingerprint(settings),
    }


def cacheable(spec: AskSpec, *, stream: bool = False) -> bool:
    # Only stand-alone questions are cached. A follow-up (a conversation id, or earlier turns
    # sent to the OpenAI endpoint) depends on the conversation so far (the question alone is
    # not the key), and a conversation must record every turn. The requests answer.plan or
    # open_stream refuse (an empty question, structured output streamed) must reach them, not a
    # stored answer.
    if spec.conversation_id or spec.history or not spec.question.strip():
        return False
    return not (stream and spec.response_format is not None)


def complete(result: Answer) -> bool:
    """Only whole, sound answers are kept: not retrieval-only results, not empty text, not text
    cut off at max_tokens ("length") or by a content filter, not a degenerate generation (an
    echo of the prompt, a loop: asking again may go better), not a fallback's stand-in answer
    (the route it stood in for answers better once it is back)."""
    return (
        not result.retrieval_only
        and bool((result.answer or "").strip())
        and result.finish_reason in (None, "stop")
        and result.degenerate is None
        and result.fallback_from is None
    )


# --- backends ---------------------------------------------------------------------------------


class InFlight:
    """Answers being generated in this process, by key: the future of the request generating
    it (the leader), which settles with the kept answer or None. Futures belong to the event
    loop that made them; a request on another loop neither waits for nor replaces one.

    Single flight: while an answer is being generated, the same question under the same key,
    asked whole (not streamed), waits for that answer instead of asking the LLM again, so a
    burst of one question costs one generation. Per process: replicas sharing Redis each
    generate once. If the leader fails or its answer is not kept (cut off, interrupted), the
    waiting ones generate their own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, asyncio.Future[Answer | None]] = {}

    def leader(self, key: str) -> asyncio.Future[Answer | None] | None:
        with self._lock:
            flight = self._pending.get(key)
        return flight if _awaitable_here(flight) else None

    def lead(self, key: str) -> asyncio.Future[Answer | None] | None:
        """A future for this request to settle, or None when another request leads already."""
        with self._lock:
            if _awaitable_here(self._pending.get(key)):
                return None
            flight: asyncio.Future[Answer | None] = asyncio.get_running_loop().create_future()
            self._pending[key] = flight
        return flight

    def settle(
        self, key: str, flight: asyncio.Future[Answer | None], result: Answer | None
    ) -> None:
        with self._lock:
            if self._pending.get(key) is flight:
                del self._pending[key]
        if not flight.done():
            flight.set_result(result)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


def _awaitable_here(flight: asyncio.Future[Answer | None] | None) -> bool:
    """Unsettled, and of the running event loop (a future of another loop cannot be awaited)."""
    return (
        flight is not None and not flight.done() and flight.get_loop() is asyncio.get_running_loop()
    )


class AnswerCache:
    def __init__(self, backend: Backend, ttl_s: float = 3600.0) -> None:
        self.backend = backend
        self.ttl_s = ttl_s
        self.inflight = InFlight()
        # Network round trips (Redis) stay off the event loop; the in-process dict need not.
        self.blocking = not isinstance(backend, MemoryBackend)

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self.backend.get(key)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            log.warning("answer cache: unreadable entry %s ignored", key)
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, payload: dict[str, Any]) -> None:
        self.backend.put(key, json.dumps(payload, ensure_ascii=False).encode(), self.ttl_s)

    def close(self) -> None:
        self.backend.close()


def build_cache(redis_url: str | None, max_entries: int, ttl_s: float) -> AnswerCache:
    """In process (LRU, `max_entries`) by default; in Redis (`RAG_CACHE__REDIS_URL`) when
    replicas share the cache."""
    backend: Backend = RedisBackend(redis_url) if redis_url else MemoryBackend(max_entries)
    return AnswerCache(backend, ttl_s)


# --- stored answers ---------------------------------------------------------------------------


def to_payload(result: Answer) -> dict[str, Any]:
    stored = asdict(result)
    for per_turn in ("conversation_id", "message_id"):
        stored.pop(per_turn, None)
    return {"format": PAYLOAD_FORMAT, "answer": stored}


def from_payload(payload: dict[str, Any]) -> Answer | None:
    """The stored answer, or None for an entry of another format or shape (a miss)."""
    if payload.get("format") != PAYLOAD_FORMAT:
        return None
    try:
        data = dict(payload["answer"])
        citations = [
            Citation(
                index=int(c["index"]),
                passage=Passage(
                    **{**c["passage"], "heading_path": tuple(c["passage"]["heading_path"])}
                ),
                cited=bool(c["cited"]),
            )
            for c in data.pop("citations")
        ]
        known = {f.name for f in fields(Answer)}
        return Answer(citations=citations, **{k: v for k, v in data.items() if k in known})
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("answer cache: entry of an older shape ignored (%s)", exc)
        return None


# --- one request ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """What one request may do with the cache: body `"cache": false` turns it off both ways;
    `Cache-Control: no-cache` asks for a fresh answer (which is then stored), `no-store`
    for neither."""

    read: bool = True
    write: bool = True

    @classmethod
    def of(cls, enabled: bool = True, cache_control: str | None = None) -> Policy:
        directives = {
            part.split("=", 1)[0].strip().lower() for part in (cache_control or "").split(",")
        }
        if not enabled or "no-store" in directives:
            return cls(read=False, write=False)
        if "no-cache" in directives:
            return cls(read=False, write=True)
        return cls()


@dataclass(frozen=True)
class Lookup:
    """The outcome of a lookup: a hit to answer with, or the key to keep the answer under
    (and, for the request that generates it, the flight identical requests wait on)."""

    cache: AnswerCache | None = None
    key: str | None = None
    hit: Answer | None = None
    write: bool = False
    flight: asyncio.Future[Answer | None] | None = None

    async def keep(self, result: Answer) -> None:
        try:
            if self.cache is None or self.key is None or not self.write or self.hit is not None:
                return
            if complete(result):
                cache, key, payload = self.cache, self.key, to_payload(result)
                if cache.blocking:
                    await anyio.to_thread.run_sync(lambda: cache.put(key, payload))
                else:  # a dict under a lock: a thread hop would cost more than the put
                    cache.put(key, payload)
        finally:
            self.release(result)

    def release(self, result: Answer | None = None) -> None:
        """Hand the answer to the requests waiting on this one; None (failed, interrupted, or
        not kept) sends them to generate their own. Idempotent; every path must reach it."""
        if self.flight is not None and self.cache is not None and self.key is not None:
            kept = result if result is not None and complete(result) else None
            self.cache.inflight.settle(self.key, self.flight, kept)


def as_served(result: Answer) -> Answer:
    # Usage says what this request cost: no tokens; the turn ids were the leader's.
    return replace(result, usage=dict(NO_USAGE), conversation_id=None, message_id=None)


async def answer_of(
    inflight: InFlight, key: str, leader: asyncio.Future[Answer | None], timeout_s: float
) -> Answer | None:
    """The leader's kept answer; None when it has none or takes longer than timeout_s."""
    try:
        return await asyncio.wait_for(asyncio.shield(leader), timeout_s)
    except TimeoutError:
        # A leader this late is presumed lost (a response never sent never releases it): end
        # its flight, so that neither its other followers nor later requests wait on it.
        log.warning("answer cache: no answer after %.0f s from an identical request", timeout_s)
        inflight.settle(key, leader, None)
        return None


class Replay:
    """A cached answer with the interface of answer.LiveAnswer, so a hit streams as
    deltas, then citations and done, like a fresh answer."""

    piece_chars = 200

    def __init__(self, result: Answer) -> None:
        self.result = result

    async def deltas(self) -> AsyncIterator[str]:
        text = self.result.answer or ""
        for start in range(0, len(text), self.piece_chars):
            yield text[start : start + self.piece_chars]

    async def finish(self) -> Answer:
        return self.result

    async def aclose(self) -> None:
        return None
