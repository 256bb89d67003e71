"""The answer cache's key follows the knowledge base's content; backends keep and expire."""

from __future__ import annotations

import time
import uuid

import pytest

from ingest.jobs import Worker
from ingest.upload import stage_upload
from rag import knowledge
from rag.answer_cache import AnswerCache, MemoryBackend, RedisBackend, cache_key, kb_state
from rag.services import Services
from tests.conftest import REDIS_URL, redis_reason


def _add(svc: Services, kb_id: str, name: str, text: str) -> str:
    path = svc.settings.data_dir / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    with path.open("rb") as fh:
        staged = stage_upload(fh, name, svc.settings.data_dir, 10**7)
    doc_id = knowledge.add_document(svc, kb_id, staged)[0].id
    worker = Worker(svc)
    while worker.run_once():
        pass
    return doc_id


def test_state_changes_with_every_content_change(services: Services) -> None:
    kb = knowledge.create_kb(services, "kb").id
    other = knowledge.create_kb(services, "other").id

    def state() -> str:
        with services.db.read() as session:
            return kb_state(session, kb)

    empty = state()
    doc = _add(services, kb, "a.txt", "年假十天。" * 50)
    after_upload = state()
    assert after_upload != empty
    _add(services, other, "b.txt", "别的知识库。" * 50)
    assert state() == after_upload  # another knowledge base's change does not matter
    knowledge.delete_document(services, kb, doc)
    assert state() not in (empty, after_upload)


def test_key_normalises_the_question_and_covers_the_options() -> None:
    base = cache_key("kb", "1:5:0", "年假 有几天？", {"top_k": 5})
    assert cache_key("kb", "1:5:0", "  年假\n有几天？ ", {"top_k": 5}) == base
    assert cache_key("kb", "1:6:0", "年假 有几天？", {"top_k": 5}) != base
    assert cache_key("kb", "1:5:0", "年假 有几天？", {"top_k": 6}) != base
    assert cache_key("kb2", "1:5:0", "年假 有几天？", {"top_k": 5}) != base
    assert cache_key("kb", "1:5:0", "ANNUAL leave?", {}) == cache_key(
        "kb", "1:5:0", "annual LEAVE?", {}
    )


def test_memory_backend_expires_and_evicts() -> None:
    cache = AnswerCache(MemoryBackend(max_entries=2), ttl_s=0.2)
    cache.put("a", {"answer": "一"})
    cache.put("b", {"answer": "二"})
    assert cache.get("a") == {"answer": "一"}
    cache.put("c", {"answer": "三"})  # evicts the least recently used: b
    assert cache.get("b") is None and cache.get("c") == {"answer": "三"}
    time.sleep(0.25)
    assert cache.get("a") is None
    assert (cache.hits, cache.misses) == (2, 2)


def test_redis_backend_shares_answers() -> None:
    reason = redis_reason()
    if reason:
        pytest.skip(reason)
    prefix = f"kbqa-test-answers:{uuid.uuid4().hex}"
    one = AnswerCache(RedisBackend(REDIS_URL, prefix), ttl_s=5)
    two = AnswerCache(RedisBackend(REDIS_URL, prefix), ttl_s=5)
    one.put("k", {"answer": "共享", "citations": []})
    assert two.get("k") == {"answer": "共享", "citations": []}
    broken = AnswerCache(RedisBackend("redis://127.0.0.1:9/0"), ttl_s=5)
    broken.put("k", {"answer": "x"})
    assert broken.get("k") is None  # an outage is a miss, not an error
