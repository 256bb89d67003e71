"""The one way a question is answered (every channel calls it): curated answers, the cache, single
flight, planning, generation, streaming, logging (`answer_id`); close a stream (`aclose`).

    ask(spec) ─ curated answer for the question? ───────────────> Reply(it, verbatim, no LLM)
        ├─ no ready document? ──────────────────────────────────> NoReadyDocuments (409, no LLM)
        ├─ cache hit ───────────────────────────────────────────> Reply(answer | replayed stream)
        └─ miss ─ (lead the flight) ─ plan ─ generate ─ keep ──> Reply(answer)
                                          ├─ open stream ───────> Reply(stream: kept on finish)
                                          └─ not covered ───────> Reply(fixed refusal, no LLM)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import anyio
from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.orm import Session

from rag.core import metrics
from rag.core.config import Settings
from rag.core.errors import NoReadyDocuments
from rag.kb.knowledge import get_kb
from rag.qa.answer import Answer, Answerer, AskSpec, LiveAnswer
from rag.qa.answer_cache import (
    AnswerCache,
    Lookup,
    Policy,
    Replay,
    answer_of,
    as_served,
    cache_key,
    cacheable,
    first_ready_document,
    from_payload,
    kb_state_and_ready,
    request_options,
)
from rag.qa.question_log import QuestionLog
from rag.store.db import Database
from rag.store.models import Document, KnowledgeBase

log = logging.getLogger(__name__)
# The curated answer to (kb_id, question) in a SQL session whose caller has checked the
# knowledge base, or None (rag/qa/curated.py `Curation.find`).
CuratedLookup = Callable[[Session, str, str], Answer | None]


def require_ready(session: Session, kb: KnowledgeBase) -> None:
    """Raise NoReadyDocuments unless the knowledge base has a ready document: without one, an
    answer could only come from the model's own memory. One indexed lookup that stops at the
    first ready document; the counts for the message are read only when there is none."""
    if session.execute(_ready_statement(), {"kb_id": kb.id}).first() is not None:
        return
    # (The answer cache's lookup asks the same in its own statement: kb_state_and_ready.)
    rows = session.execute(
        select(Document.status, func.count())
        .where(Document.kb_id == kb.id)
        .group_by(Document.status)
    )
    counts = {status: 0 for status in ("queued", "processing", "failed")}
    counts.update({str(status): int(n) for status, n in rows})
    pending = counts["queued"] + counts["processing"]
    if pending:
        advice = "ask again once they are ready (the documents list shows each one's status)"
    elif counts["failed"]:
        advice = "each failed document's error says why; fix and upload them again"
    else:
        advice = "upload documents first"
    raise NoReadyDocuments(
        f"knowledge base {kb.name!r} has no ready document to answer from "
        f"({counts['queued']} queued, {counts['processing']} processing, "
        f"{counts['failed']} failed): {advice}",
        counts=counts,
    )


@lru_cache(maxsize=1)
def _ready_statement() -> Select[Any]:
    """Built once: it runs before every answer the cache does not look up."""
    return first_ready_document(bindparam("kb_id"))


class AnswerStream:
    """Deltas, then the finished answer, which is kept in the cache when complete.

    It must be closed (`aclose`) however the response ends: that closes the upstream and hands
    the outcome to identical requests waiting on this one. api/streaming.py's `EventStream`
    does it for every streamed response.
    """

    def __init__(
        self,
        source: LiveAnswer | Replay,
        found: Lookup,
        *,
        cached: bool,
        logged: Callable[[Answer], Awaitable[Answer]] | None = None,
    ) -> None:
        self._source = source
        self._found = found
        self.cached = cached
        self._logged = logged

    def deltas(self) -> AsyncIterator[str]:
        return self._source.deltas()

    async def finish(self) -> Answer:
        result = await self._source.finish()
        # Kept only here: a stream that failed or that the client left never reaches this.
        await self._found.keep(result)
        return await self._logged(result) if self._logged is not None else result

    async def aclose(self) -> None:
        """Idempotent; an answer not kept by `finish` sends the waiting requests to generate
        their own."""
        try:
            await self._source.aclose()
        finally:
            self._found.release()


@dataclass(frozen=True)
class Reply:
    """A whole answer (`answer`) or one to stream (`stream`); `cached` when from the cache."""

    answer: Answer | None = None
    stream: AnswerStream | None = None
    cached: bool = False


class AnswerService:
    """Answers questions through `answerer`, with the answer cache (None: caching is off), the
    question log (`journal`; None: answers are not logged) and curated answers (`curated`)."""

    def __init__(
        self,
        answerer: Answerer,
        db: Database,
        *,
        cache: AnswerCache | None,
        settings: Settings,
        journal: QuestionLog | None = None,
        curated: CuratedLookup | None = None,
    ) -> None:
        self.answerer = answerer
        self.db = db
        self.cache = cache
        # The whole configuration is part of every cache key (answer_cache.settings_fingerprint).
        self.settings = settings
        self.journal = journal
        self.curated = curated

    async def ask(
        self, spec: AskSpec, policy: Policy | None = None, *, stream: bool = False
    ) -> Reply:
        started = time.perf_counter()
        policy = policy or Policy()
        # Before the cache: a curated answer written (or deleted) since takes effect at once.
        found, curated = await self._lookup(spec, policy, stream=stream, curated=True)
        if curated is not None:
            curated = await self._in_conversation(spec, curated)
            if stream:
                logged = self._logger(spec, started, cached=False)
                return Reply(
                    stream=AnswerStream(Replay(curated), found, cached=False, logged=logged)
                )
            return Reply(answer=await self._log(spec, curated, started, cached=False))
        if found.hit is not None:
            if stream:
                logged = self._logger(spec, started, cached=True)
                return Reply(
                    stream=AnswerStream(Replay(found.hit), found, cached=True, logged=logged),
                    cached=True,
                )
            return Reply(answer=await self._log(spec, found.hit, started, cached=True), cached=True)
        try:
            # The cache's lookup has checked the knowledge base in its SQL session; without the
            # cache, retrieval checks it in its own (no session, no thread hop of its own).
            admitted = self._cached(spec, policy, stream=stream)
            plan = await self.answerer.plan(spec, None if admitted else require_ready)
            if not plan.covered:  # the knowledge base does not cover it: no LLM call
                refusal = await self.answerer.refuse(plan)
                if stream:
                    logged = self._logger(spec, started, cached=False)
                    return Reply(
                        stream=AnswerStream(Replay(refusal), found, cached=False, logged=logged)
                    )
                await found.keep(refusal)
                return Reply(answer=await self._log(spec, refusal, started, cached=False))
            if not stream:
                result = await self.answerer.generate(plan)
                await found.keep(result)
                return Reply(answer=await self._log(spec, result, started, cached=False))
            live = await self.answerer.open_stream(plan)
        except BaseException:
            # Failed before an answer or a stream existed: the waiting requests go on alone.
            found.release()
            raise
        logged = self._logger(spec, started, cached=False)
        return Reply(stream=AnswerStream(live, found, cached=False, logged=logged))

    def _curated_lookup(self, spec: AskSpec) -> CuratedLookup | None:
        """How to find a curated answer to this question; None: none applies (structured output
        asks for JSON, a curated answer is free text)."""
        if spec.response_format is not None or not spec.question.strip():
            return None
        return self.curated

    async def _curated(self, spec: AskSpec) -> Answer | None:
        """The curated answer to the question, in a session of its own (the cache is not
        consulted, so its lookup's session is not there to share)."""
        find = self._curated_lookup(spec)
        if find is None:
            return None

        def look() -> Answer | None:
            with self.db.read() as session:
                kb = get_kb(session, spec.kb_id)  # the tenancy check answering makes
                return find(session, kb.id, spec.question)

        return await anyio.to_thread.run_sync(look)

    async def _in_conversation(self, spec: AskSpec, found: Answer) -> Answer:
        """A curated answer in a conversation: the turn is recorded as an answered one is."""
        conversation_id = spec.conversation_id
        if not conversation_id:
            return found
        conversations = self.answerer.conversations

        def record() -> int:
            conversations.history(conversation_id, spec.kb_id)  # its knowledge base's, or 404
            recorded = conversations.record(
                conversation_id,
                spec.question,
                None,
                found.answer or "",
                citations=[],
                model=None,
                usage=found.usage,
            )
            return recorded.answer_id

        message_id = await anyio.to_thread.run_sync(record)
        return replace(found, conversation_id=conversation_id, message_id=message_id)

    async def _log(self, spec: AskSpec, result: Answer, started: float, *, cached: bool) -> Answer:
        """`result` with its question-log id (the log records it once, with its latency)."""
        journal = self.journal
        if journal is None or not journal.enabled:
            return result
        latency_ms = int((time.perf_counter() - started) * 1000)
        try:
            answer_id = await anyio.to_thread.run_sync(
                lambda: journal.record(spec, result, latency_ms=latency_ms, cached=cached)
            )
        except Exception:
            # The user still gets the answer, only without an id to rate it by.
            log.exception("question log: the answer was not recorded")
            return result
        return replace(result, answer_id=answer_id)

    def _logger(
        self, spec: AskSpec, started: float, *, cached: bool
    ) -> Callable[[Answer], Awaitable[Answer]]:
        """For a stream: logs its answer once it has finished."""

        async def logged(result: Answer) -> Answer:
            return await self._log(spec, result, started, cached=cached)

        return logged

    async def retrieve_only(self, spec: AskSpec) -> Answer:
        return await self.answerer.retrieve_only(spec)

    def ask_blocking(
        self, kb_id: str, question: str, *, top_k: int | None = None, retrieval_only: bool = False
    ) -> Answer:
        """For the CLI and scripts (not inside an event loop): a whole answer, cache unused."""
        spec = AskSpec(kb_id, question, top_k, channel="cli")
        if retrieval_only:
            return asyncio.run(self.retrieve_only(spec))
        reply = asyncio.run(self.ask(spec, Policy(read=False, write=False)))
        assert reply.answer is not None
        return reply.answer

    async def lookup(self, spec: AskSpec, policy: Policy, *, stream: bool = False) -> Lookup:
        """The cache's answer or the key to keep ours under; first of all, in the same SQL
        session, the tenancy check and `require_ready` (so no LLM is called, not even to
        condense a follow-up, for a knowledge base with nothing ready)."""
        found, _ = await self._lookup(spec, policy, stream=stream, curated=False)
        return found

    async def _lookup(
        self, spec: AskSpec, policy: Policy, *, stream: bool, curated: bool
    ) -> tuple[Lookup, Answer | None]:
        """`lookup`, and with `curated` the curated answer first (in the same session when the
        cache is consulted; then there is no flight to lead)."""
        cache = self.cache
        if cache is None or not self._cached(spec, policy, stream=stream):
            # `ask` has planning check the knowledge base
            return Lookup(), await self._curated(spec) if curated else None
        find_curated = self._curated_lookup(spec) if curated else None

        def find() -> tuple[str, dict[str, Any] | None, Answer | None]:
            with self.db.read() as session:
                # The tenancy check planning would make: a hit must not skip it.
                kb = get_kb(session, spec.kb_id)
                answer = find_curated(session, kb.id, spec.question) if find_curated else None
                if answer is not None:
                    return "", None, answer
                state, ready = kb_state_and_ready(session, kb.id)
                if not ready:
                    require_ready(session, kb)  # raises, counting the documents
                tenant = kb.tenant_id
            # The state is read before retrieval, so an answer can only be newer than its key.
            options = request_options(self.settings, spec)
            key = cache_key(tenant, kb.id, state, spec.question, options)
            return key, cache.get(key) if policy.read else None, None

        key, payload, answer = await anyio.to_thread.run_sync(find)
        if answer is not None:
            return Lookup(), answer
        return await self._joined(cache, key, payload, policy, stream=stream), None

    async def _joined(
        self,
        cache: AnswerCache,
        key: str,
        payload: dict[str, Any] | None,
        policy: Policy,
        *,
        stream: bool,
    ) -> Lookup:
        """The hit, the leader's answer, or the flight this request leads."""
        hit = from_payload(payload) if policy.read and payload is not None else None
        # No await between looking for a leader and becoming one: on one event loop, the first
        # of simultaneous identical requests leads and the others wait for it. A stream does not
        # wait: its first token would come only once the leader's whole answer had.
        leader = cache.inflight.leader(key) if hit is None and policy.read and not stream else None
        if leader is not None:
            metrics.ANSWER_CACHE.labels("joined").inc()
            timeout_s = self.settings.llm.read_timeout_s
            shared = await answer_of(cache.inflight, key, leader, timeout_s)
            if shared is not None:
                return Lookup(cache, key, as_served(shared), policy.write)
            return Lookup(cache, key, None, policy.write)  # generate our own, leading nobody
        if policy.read:
            metrics.ANSWER_CACHE.labels("hit" if hit is not None else "miss").inc()
        if hit is not None:
            return Lookup(cache, key, as_served(hit), policy.write)
        flight = cache.inflight.lead(key) if policy.write else None
        return Lookup(cache, key, None, policy.write, flight)

    def _cached(self, spec: AskSpec, policy: Policy, *, stream: bool) -> bool:
        """Whether `lookup` consults the cache (and so checks the knowledge base)."""
        return (
            self.cache is not None
            and (policy.read or policy.write)
            and cacheable(spec, stream=stream)
        )
