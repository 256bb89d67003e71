"""The answer cache's key follows the knowledge base's content; backends keep and expire;
stored answers come back whole; a hit still goes through the tenancy check."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from ingest.upload import stage_upload
from rag.core import metrics
from rag.core.errors import NotFound
from rag.core.tenancy import Principal, acting_as
from rag.qa.answer import Answer, AskSpec, Citation
from rag.qa.answer_cache import (
    AnswerCache,
    Lookup,
    MemoryBackend,
    Policy,
    RedisBackend,
    cache_key,
    cacheable,
    complete,
    from_payload,
    kb_state,
    request_options,
    to_payload,
)
from rag.retrieval.retriever import Passage
from rag.services import Services
from rag.store.models import KnowledgeBase
from tests.conftest import REDIS_URL, redis_reason


def _add(svc: Services, kb_id: str, name: str, text: str) -> str:
    path = svc.settings.data_dir / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    with path.open("rb") as fh:
        staged = stage_upload(fh, name, svc.settings.data_dir, 10**7)
    doc_id = svc.knowledge.add_document(kb_id, staged)[0].id
    _work(svc)
    return doc_id


def _work(svc: Services) -> None:
    worker = svc.worker()
    while worker.run_once():
        pass


def _state(svc: Services, kb_id: str) -> str:
    with svc.db.read() as session:
        return kb_state(session, kb_id)


def test_state_changes_with_every_content_change(db_services: Services) -> None:
    svc = db_services  # SQLite and PostgreSQL: the state is one statement of subqueries
    kb = svc.knowledge.create_kb("kb").id
    other = svc.knowledge.create_kb("other").id
    seen = [_state(svc, kb)]
    doc = _add(svc, kb, "a.txt", "年假十天。" * 50)
    seen.append(_state(svc, kb))
    _add(svc, other, "b.txt", "别的知识库。" * 50)
    assert _state(svc, kb) == seen[-1]  # another knowledge base's change does not matter
    svc.knowledge.delete_document(kb, doc)
    seen.append(_state(svc, kb))
    _add(svc, kb, "c.txt", "病假五天。" * 50)
    seen.append(_state(svc, kb))
    assert len(set(seen)) == len(seen), seen


def test_state_follows_the_live_version(db_services: Services) -> None:
    svc = db_services
    kb = svc.knowledge.create_kb("kb").id
    _add(svc, kb, "a.txt", "年假十天。" * 50)
    before = _state(svc, kb)

    svc.versions.start_reindex(kb, chunk_tokens=64)
    _work(svc)
    with svc.db.read() as session:
        assert session.get(KnowledgeBase, kb).live_version == 2  # type: ignore[union-attr]
    switched = _state(svc, kb)
    assert switched != before

    svc.versions.start_rollback(kb)
    _work(svc)
    with svc.db.read() as session:
        assert session.get(KnowledgeBase, kb).live_version == 1  # type: ignore[union-attr]
    # The same version as before, live again: still a state of its own.
    assert _state(svc, kb) not in (before, switched)


def test_key_normalises_the_question_and_covers_the_options() -> None:
    base = cache_key("t", "kb", "1:5", "年假 有几天？", {"top_k": 5})
    assert cache_key("t", "kb", "1:5", "  年假\n有几天? ", {"top_k": 5}) == base  # NFKC ？→?
    assert cache_key("t", "kb", "1:6", "年假 有几天？", {"top_k": 5}) != base
    assert cache_key("t", "kb", "1:5", "年假 有几天？", {"top_k": 6}) != base
    assert cache_key("t", "kb2", "1:5", "年假 有几天？", {"top_k": 5}) != base
    assert cache_key("t2", "kb", "1:5", "年假 有几天？", {"top_k": 5}) != base
    assert cache_key("t", "kb", "1:5", "ANNUAL leave?", {}) == cache_key(
        "t", "kb", "1:5", "annual LEAVE?", {}
    )


def test_options_cover_settings_that_change_answers(services: Services) -> None:
    spec = AskSpec("kb", "年假？")
    base = request_options(services.settings, spec)
    assert request_options(services.settings, AskSpec("kb", "年假？", top_k=5)) == base  # default
    services.settings.llm.model = "another-model"
    assert request_options(services.settings, spec) != base
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    assert request_options(services.settings, AskSpec("kb", "年假？", response_format=fmt)) != (
        request_options(services.settings, spec)
    )


def test_what_is_cacheable() -> None:
    assert cacheable(AskSpec("kb", "年假？"))
    assert not cacheable(AskSpec("kb", "年假？", conversation_id="c1"))
    assert not cacheable(AskSpec("kb", "年假？", history=[{"role": "user", "content": "hi"}]))
    assert not cacheable(AskSpec("kb", "   "))
    fmt = {"type": "json_object"}
    assert cacheable(AskSpec("kb", "年假？", response_format=fmt))
    assert not cacheable(AskSpec("kb", "年假？", response_format=fmt), stream=True)
    answer = Answer("十天 [1]。", [], "m", finish_reason="stop")
    assert complete(answer)
    assert not complete(Answer("十天", [], "m", finish_reason="length"))
    assert not complete(Answer("  ", [], "m"))
    assert not complete(Answer(None, [], None, retrieval_only=True))
    assert not complete(Answer("年假十天。年假十天。", [], "m", degenerate="repetition"))
    assert not complete(Answer("你是", [], "m", finish_reason="stop", degenerate="echo"))


def test_degenerate_or_truncated_answers_are_not_kept(services: Services) -> None:
    kb = services.knowledge.create_kb("kb").id
    _add(services, kb, "a.txt", "年假十天。" * 50)
    spec = AskSpec(kb, "年假？")
    for unsound in (
        Answer("年假十天。" * 3, [], "m", finish_reason="stop", degenerate="repetition"),
        Answer("你是", [], "m", finish_reason="stop", degenerate="echo"),
        Answer("年假十", [], "m", finish_reason="length"),
    ):
        found = asyncio.run(services.qa.lookup(spec, Policy()))
        assert found.hit is None and found.key
        asyncio.run(found.keep(unsound))
        assert services.answer_cache is not None and services.answer_cache.get(found.key) is None
    sound = Answer("十天 [1]。", [], "m", finish_reason="stop")
    asyncio.run(asyncio.run(services.qa.lookup(spec, Policy())).keep(sound))
    assert asyncio.run(services.qa.lookup(spec, Policy())).hit is not None


def test_policy_from_flag_and_header() -> None:
    assert Policy.of() == Policy(read=True, write=True)
    assert Policy.of(False) == Policy(read=False, write=False)
    assert Policy.of(True, "no-cache") == Policy(read=False, write=True)
    assert Policy.of(True, "max-age=0, No-Store") == Policy(read=False, write=False)
    assert Policy.of(True, "max-age=0") == Policy()


def test_payload_round_trip() -> None:
    passage = Passage(7, "doc", "a.pdf", 3, 4, "年假十天。", 0.5, ("员工手册", "假期"))
    answer = Answer(
        "十天 [1]。",
        [Citation(1, passage, True)],
        "qwen",
        {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
        route="default",
        question="年假？",
        parsed={"days": 10},
        finish_reason="stop",
        conversation_id="c",
        message_id=4,
        degenerate="echo",  # never kept; stored as any field would be
    )
    back = from_payload(to_payload(answer))
    assert back is not None
    assert back == Answer(**{**answer.__dict__, "conversation_id": None, "message_id": None})
    assert from_payload({**to_payload(answer), "format": 0}) is None
    assert from_payload({"format": 1, "answer": {"answer": "x"}}) is None


def test_memory_backend_expires_and_evicts() -> None:
    cache = AnswerCache(MemoryBackend(max_entries=2), ttl_s=0.2)
    cache.put("a", {"answer": "一"})
    cache.put("b", {"answer": "二"})
    assert cache.get("a") == {"answer": "一"}
    cache.put("c", {"answer": "三"})  # evicts the least recently used: b
    assert cache.get("b") is None and cache.get("c") == {"answer": "三"}
    time.sleep(0.25)
    assert cache.get("a") is None


def test_a_hit_still_checks_the_tenant(services: Services) -> None:
    kb = services.knowledge.create_kb("kb").id
    _add(services, kb, "a.txt", "年假十天。" * 50)
    spec = AskSpec(kb, "年假？")
    first = asyncio.run(services.qa.lookup(spec, Policy()))
    assert first.hit is None and first.key
    asyncio.run(first.keep(Answer("十天 [1]。", [], "m", {"total_tokens": 5})))
    hit = asyncio.run(services.qa.lookup(spec, Policy())).hit
    assert hit is not None and hit.answer == "十天 [1]。" and hit.usage["total_tokens"] == 0
    stranger = Principal(actor="key:x", tenant_id="globex", scopes=frozenset({"query"}))
    with acting_as(stranger), pytest.raises(NotFound):
        asyncio.run(services.qa.lookup(spec, Policy()))


def test_identical_lookups_at_once_share_one_answer(services: Services) -> None:
    kb = services.knowledge.create_kb("kb").id
    _add(services, kb, "a.txt", "年假十天。" * 50)
    spec = AskSpec(kb, "年假？")
    answer = Answer("十天 [1]。", [], "m", {"total_tokens": 5}, conversation_id="c1", message_id=3)

    async def scenario() -> tuple[list[Answer | None], int]:
        leader = await services.qa.lookup(spec, Policy())
        assert leader.hit is None and leader.flight is not None
        # A stream and a no-cache request do not wait: each generates its own, leading nobody.
        for own in (
            await services.qa.lookup(spec, Policy(), stream=True),
            await services.qa.lookup(spec, Policy.of(cache_control="no-cache")),
        ):
            assert own.hit is None and own.flight is None
        followers = [asyncio.create_task(services.qa.lookup(spec, Policy())) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert not any(task.done() for task in followers)  # waiting on the leader
        await leader.keep(answer)
        found = [(await task).hit for task in followers]
        return found, len(services.answer_cache.inflight)

    found, pending = asyncio.run(scenario())
    assert pending == 0
    for hit in found:
        assert hit is not None and hit.answer == "十天 [1]。"
        assert hit.usage["total_tokens"] == 0  # this request cost nothing
        assert hit.conversation_id is None and hit.message_id is None  # the leader's turn


def _joined() -> float:
    return metrics.ANSWER_CACHE.labels("joined")._value.get()


def test_followers_of_a_failed_leader_generate_their_own(services: Services) -> None:
    kb = services.knowledge.create_kb("kb").id
    _add(services, kb, "a.txt", "年假十天。" * 50)
    spec = AskSpec(kb, "年假？")

    async def scenario(end: str) -> list[Lookup]:
        leader = await services.qa.lookup(spec, Policy())
        joined = _joined()
        followers = [asyncio.create_task(services.qa.lookup(spec, Policy())) for _ in range(2)]
        # Both wait on the leader before it ends (their SQL lookups run in threads first).
        deadline = time.monotonic() + 10
        while _joined() - joined < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if end == "failed":
            leader.release()
        else:  # cut off at max_tokens: not kept, so not shared either
            await leader.keep(Answer("十", [], "m", finish_reason="length"))
        return [await task for task in followers]

    for end in ("failed", "cut off"):
        for follower in asyncio.run(scenario(end)):
            assert follower.hit is None and follower.flight is None, end
            assert follower.write  # its own answer may still be kept
    assert len(services.answer_cache.inflight) == 0


def test_a_lost_leader_is_waited_for_only_until_the_timeout(services: Services) -> None:
    services.settings.llm.read_timeout_s = 0.2
    kb = services.knowledge.create_kb("kb").id
    _add(services, kb, "a.txt", "年假十天。" * 50)
    spec = AskSpec(kb, "年假？")

    async def scenario() -> tuple[Lookup, Lookup]:
        lost = await services.qa.lookup(spec, Policy())  # never kept nor released
        assert lost.flight is not None
        waited = await services.qa.lookup(spec, Policy())
        # The lost flight was ended: the next request leads instead of waiting in turn.
        return waited, await services.qa.lookup(spec, Policy())

    waited, after = asyncio.run(scenario())
    assert waited.hit is None and waited.flight is None
    assert after.flight is not None


def test_a_flight_of_another_event_loop_is_neither_joined_nor_blocking(
    services: Services,
) -> None:
    kb = services.knowledge.create_kb("kb").id
    _add(services, kb, "a.txt", "年假十天。" * 50)
    spec = AskSpec(kb, "年假？")
    first = asyncio.run(services.qa.lookup(spec, Policy()))  # its loop is closed now
    second = asyncio.run(services.qa.lookup(spec, Policy()))
    assert first.flight is not None and second.flight is not None
    assert second.hit is None and second.flight is not first.flight


def test_disabled_cache_is_never_consulted(services: Services) -> None:
    services.settings.cache.enabled = False
    assert services.answer_cache is None
    kb = services.knowledge.create_kb("kb").id
    _add(services, kb, "a.txt", "年假十天。" * 50)
    found = asyncio.run(services.qa.lookup(AskSpec(kb, "年假？"), Policy()))
    assert found.key is None and found.hit is None
    # Asking still checks the knowledge base (planning does, before any LLM call).
    with pytest.raises(NotFound):
        asyncio.run(services.qa.ask(AskSpec("no-such-kb", "年假？"), Policy()))


def test_redis_backend_shares_answers() -> None:
    reason = redis_reason()
    if reason:
        pytest.skip(reason)
    prefix = f"kbqa-test-answers:{uuid.uuid4().hex}"
    one = AnswerCache(RedisBackend(REDIS_URL, prefix), ttl_s=5)
    two = AnswerCache(RedisBackend(REDIS_URL, prefix), ttl_s=5)
    one.put("k", {"answer": "共享", "citations": []})
    assert two.get("k") == {"answer": "共享", "citations": []}
    one.close()
    two.close()


def test_redis_outage_is_a_miss_and_is_not_retried_at_once() -> None:
    backend = RedisBackend("redis://127.0.0.1:9/0", retry_s=60)
    broken = AnswerCache(backend, ttl_s=5)
    broken.put("k", {"answer": "x"})  # fails: logged, not raised
    started = time.monotonic()
    assert broken.get("k") is None
    assert time.monotonic() - started < 0.05  # Redis is left alone for retry_s
    broken.close()
