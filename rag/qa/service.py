"""The one way a question is answered: the answer cache, single flight, planning, generation,
streaming, and keeping or releasing the answer. The HTTP routes and the CLI call only this.
A streamed reply must be closed (`AnswerStream.aclose`) however the response ends.

    ask(spec) ─ no ready document? ─────────────────────────────> NoReadyDocuments (409, no LLM)
        ├─ cache hit ───────────────────────────────────────────> Reply(answer | replayed stream)
        └─ miss ─ (lead the flight) ─ plan ─ generate ─ keep ──> Reply(answer)
                                          ├─ open stream ───────> Reply(stream: kept on finish)
                                          └─ not covered ───────> Reply(fixed refusal, no LLM)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
from rag.store.db import Database
from rag.store.models import Document, KnowledgeBase


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

    def __init__(self, source: LiveAnswer | Replay, found: Lookup, *, cached: bool) -> None:
        self._source = source
        self._found = found
        self.cached = cached

    def deltas(self) -> AsyncIterator[str]:
        return self._source.deltas()

    async def finish(self) -> Answer:
        result = await self._source.finish()
        # Kept only here: a stream that failed or that the client left never reaches this.
        await self._found.keep(result)
        return result

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
    """Answers questions through `answerer`, with the answer cache (None: caching is off)."""

    def __init__(
        self,
        answerer: Answerer,
        db: Database,
        *,
        cache: AnswerCache | None,
        settings: Settings,
    ) -> None:
        self.answerer = answerer
        self.db = db
        self.cache = cache
        # The whole configuration is part of every cache key (answer_cache.settings_fingerprint).
        self.settings = settings

    async def ask(
        self, spec: AskSpec, policy: Policy | None = None, *, stream: bool = False
    ) -> Reply:
        policy = policy or Policy()
        found = await self.lookup(spec, policy, stream=stream)
        if found.hit is not None:
            if stream:
                return Reply(
                    stream=AnswerStream(Replay(found.hit), found, cached=True), cached=True
                )
            return Reply(answer=found.hit, cached=True)
        try:
            # The cache's lookup has checked the knowledge base in its SQL session; without the
            # cache, retrieval checks it in its own (no session, no thread hop of its own).
            admitted = self._cached(spec, policy, stream=stream)
            plan = await self.answerer.plan(spec, None if admitted else require_ready)
            if not plan.covered:  # the knowledge base does not cover it: no LLM call
                refusal = await self.answerer.refuse(plan)
                if stream:
                    return Reply(stream=AnswerStream(Replay(refusal), found, cached=False))
                await found.keep(refusal)
                return Reply(answer=refusal)
            if not stream:
                result = await self.answerer.generate(plan)
                await found.keep(result)
                return Reply(answer=result)
            live = await self.answerer.open_stream(plan)
        except BaseException:
            # Failed before an answer or a stream existed: the waiting requests go on alone.
            found.release()
            raise
        return Reply(stream=AnswerStream(live, found, cached=False))

    async def retrieve_only(self, spec: AskSpec) -> Answer:
        return await self.answerer.retrieve_only(spec)

    def ask_blocking(
        self, kb_id: str, question: str, *, top_k: int | None = None, retrieval_only: bool = False
    ) -> Answer:
        """For the CLI and scripts (not inside an event loop): a whole answer, cache unused."""
        spec = AskSpec(kb_id, question, top_k)
        if retrieval_only:
            return asyncio.run(self.retrieve_only(spec))
        reply = asyncio.run(self.ask(spec, Policy(read=False, write=False)))
        assert reply.answer is not None
        return reply.answer

    async def lookup(self, spec: AskSpec, policy: Policy, *, stream: bool = False) -> Lookup:
        """The cache's answer or the key to keep ours under; first of all, in the same SQL
        session, the tenancy check and `require_ready` (so no LLM is called, not even to
        condense a follow-up, for a knowledge base with nothing ready)."""
        cache = self.cache
        if cache is None or not self._cached(spec, policy, stream=stream):
            return Lookup()  # `ask` has planning check the knowledge base

        def find() -> tuple[str, dict[str, Any] | None]:
            with self.db.read() as session:
                # The tenancy check planning would make: a hit must not skip it.
                kb = get_kb(session, spec.kb_id)
                state, ready = kb_state_and_ready(session, kb.id)
                if not ready:
                    require_ready(session, kb)  # raises, counting the documents
                tenant = kb.tenant_id
            # The state is read before retrieval, so an answer can only be newer than its key.
            options = request_options(self.settings, spec)
            key = cache_key(tenant, kb.id, state, spec.question, options)
            return key, cache.get(key) if policy.read else None

        key, payload = await anyio.to_thread.run_sync(find)
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
