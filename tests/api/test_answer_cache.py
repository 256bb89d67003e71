"""The answer cache over HTTP: a repeated question is answered from the cache (whole, streamed,
and through the OpenAI-compatible endpoint) until the knowledge base changes: an upload, a
deletion, a re-index switch, a rollback. Per-request opt-out, what is never cached, and a
cache shared by two replicas through Redis."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from api.app import create_app
from rag.client import Client
from rag.client._models import DoneEvent
from rag.generation.llm import LLMClient
from rag.services import Services
from tests.conftest import (
    REDIS_URL,
    REPO,
    FakeLLM,
    make_settings,
    redis_reason,
    upload,
    wait_document,
    wait_for,
)

HANDBOOK = (REPO / "tests" / "fixtures" / "员工手册.md").read_bytes()
FAQ = (REPO / "data" / "samples" / "product-faq.md").read_bytes()
QUESTION = "年假有多少天？"


class LLM(FakeLLM):
    """FakeLLM that can also cut an answer off (finish_reason "length") or break a stream."""

    def __init__(self) -> None:
        super().__init__()
        self.finish_reason = "stop"
        self.break_stream = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        response = super().handler(request)
        if request.url.path.endswith("/models") or self.fail_with is not None:
            return response
        if json.loads(request.content).get("stream"):
            if self.break_stream:
                return httpx.Response(
                    200,
                    stream=_Broken(response.content),
                    headers={"content-type": "text/event-stream"},
                )
            return response
        body = response.json()
        body["choices"][0]["finish_reason"] = self.finish_reason
        return httpx.Response(200, json=body)

    @property
    def calls(self) -> int:
        return len(self.requests)


class _Broken(httpx.AsyncByteStream):
    """The upstream's first event, then a dropped connection."""

    def __init__(self, content: bytes) -> None:
        self.first = content.split(b"\n\n")[0] + b"\n\n"

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.first
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


class _Held(httpx.MockTransport):
    """The LLM's transport, holding every chat completion until `gate` is set."""

    def __init__(self, llm: LLM) -> None:
        super().__init__(llm.handler)
        self.gate = threading.Event()
        self.held = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/chat/completions"):
            self.held += 1
            while not self.gate.is_set():
                await asyncio.sleep(0.005)
        return await super().handle_async_request(request)


def _app(
    data_dir: Path,
    llm: LLM,
    *,
    worker: bool = True,
    transport: httpx.MockTransport | None = None,
    **settings: Any,
) -> tuple[Services, TestClient]:
    cfg = make_settings(data_dir, **settings)
    transport = transport or httpx.MockTransport(llm.handler)
    svc = Services.create(cfg, llm=LLMClient(cfg.llm, transport=transport))
    return svc, TestClient(create_app(services=svc, warm_up=False, start_worker=worker))


@pytest.fixture
def llm() -> LLM:
    return LLM()


@contextmanager
def _handbook(
    data_dir: Path, llm: LLM, transport: httpx.MockTransport | None = None
) -> Iterator[tuple[TestClient, Services, str]]:
    svc, client = _app(data_dir, llm, transport=transport)
    with client:
        kb = client.post("/v1/knowledge-bases", json={"name": "handbook"}).json()["id"]
        _add(client, kb, "handbook.md", HANDBOOK)
        yield client, svc, kb
    svc.close()


@pytest.fixture
def env(tmp_path: Path, llm: LLM) -> Iterator[tuple[TestClient, Services, str]]:
    with _handbook(tmp_path / "data", llm) as running:
        yield running


@pytest.fixture
def held(llm: LLM) -> _Held:
    return _Held(llm)


@pytest.fixture
def held_env(tmp_path: Path, llm: LLM, held: _Held) -> Iterator[tuple[TestClient, str]]:
    """The handbook service with every chat completion held until `held.gate` is set."""
    with _handbook(tmp_path / "data", llm, held) as (client, _, kb):
        yield client, kb


def _add(client: TestClient, kb: str, name: str, content: bytes) -> str:
    resp = upload(client, kb, name, content)
    assert resp.status_code == 202, resp.text
    assert wait_document(client, kb, resp.json()["id"])["status"] == "ready"
    return str(resp.json()["id"])


def _ask(client: TestClient, kb: str, question: str = QUESTION, **extra: Any) -> dict[str, Any]:
    headers = extra.pop("headers", None)
    resp = client.post(
        f"/v1/knowledge-bases/{kb}/ask", json={"question": question, **extra}, headers=headers
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _stream(client: TestClient, kb: str, question: str = QUESTION) -> list[tuple[str, Any]]:
    with client.stream(
        "POST", f"/v1/knowledge-bases/{kb}/ask", json={"question": question, "stream": True}
    ) as resp:
        assert resp.status_code == 200
        raw = "".join(resp.iter_text())
    out = []
    for block in raw.strip().split("\n\n"):
        head, data = block.split("\n", 1)
        out.append((head.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def _lookups(result: str) -> float:
    return REGISTRY.get_sample_value("rag_answer_cache_requests_total", {"result": result}) or 0.0


def _finished(client: TestClient, job_id: str) -> None:
    final = ("succeeded", "failed", "cancelled")
    wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] in final)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job


def test_cache_hit_then_invalidation_after_an_upload_and_a_delete(
    env: tuple[TestClient, Services, str], llm: LLM
) -> None:
    client, _, kb = env
    hits, misses = _lookups("hit"), _lookups("miss")
    first = _ask(client, kb)
    assert first["cached"] is False and first["answer"] == llm.reply and llm.calls == 1
    assert first["usage"]["completion_tokens"] == 10

    llm.reply = "这是另一个答案 [1]。"  # a fresh answer would now differ from the stored one
    again = _ask(client, kb, "  年假有多少天？ ")  # spacing does not make another question
    assert again["cached"] is True and llm.calls == 1
    assert again["answer"] == first["answer"] and again["citations"] == first["citations"]
    assert again["model"] == first["model"] and again["question"] == first["question"]
    assert again["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert (_lookups("hit") - hits, _lookups("miss") - misses) == (1, 1)

    faq = _add(client, kb, "faq.md", FAQ)
    after_upload = _ask(client, kb)
    assert after_upload["cached"] is False and after_upload["answer"] == llm.reply
    assert llm.calls == 2
    assert _ask(client, kb)["cached"] is True and llm.calls == 2

    assert client.delete(f"/v1/knowledge-bases/{kb}/documents/{faq}").status_code == 204
    llm.reply = "删除之后的答案 [1]。"
    after_delete = _ask(client, kb)
    assert after_delete["cached"] is False and after_delete["answer"] == llm.reply
    assert all(c["document_id"] != faq for c in after_delete["citations"])
    assert _ask(client, kb)["cached"] is True and llm.calls == 3


def test_reindex_switch_and_rollback_invalidate(
    env: tuple[TestClient, Services, str], llm: LLM
) -> None:
    client, _, kb = env
    assert _ask(client, kb)["cached"] is False
    assert _ask(client, kb)["cached"] is True and llm.calls == 1

    job = client.post(f"/v1/knowledge-bases/{kb}/reindex", json={"chunk_tokens": 64}).json()
    _finished(client, job["job_id"])
    switched = _ask(client, kb)
    assert switched["cached"] is False and llm.calls == 2
    assert _ask(client, kb)["cached"] is True and llm.calls == 2

    back = client.post(f"/v1/knowledge-bases/{kb}/versions/rollback").json()
    _finished(client, back["job_id"])
    # Version 1 is live again, but answers kept before the switch are not trusted blindly:
    # the rollback is a change of its own.
    assert _ask(client, kb)["cached"] is False and llm.calls == 3
    assert _ask(client, kb)["cached"] is True and llm.calls == 3


def test_a_new_user_dictionary_or_threshold_invalidates(
    env: tuple[TestClient, Services, str], llm: LLM
) -> None:
    """Both change what is retrieved or refused, so an answer kept before either is not reused."""
    client, _, kb = env
    assert _ask(client, kb)["cached"] is False
    assert _ask(client, kb)["cached"] is True and llm.calls == 1
    assert client.put(f"/v1/knowledge-bases/{kb}/lexicon", json={"terms": ["年假"]}).is_success
    assert _ask(client, kb)["cached"] is False and llm.calls == 2
    assert _ask(client, kb)["cached"] is True and llm.calls == 2
    # The same terms again change nothing, so the answer stays cached.
    assert client.put(f"/v1/knowledge-bases/{kb}/lexicon", json={"terms": ["年假"]}).is_success
    assert _ask(client, kb)["cached"] is True and llm.calls == 2
    patched = client.patch(f"/v1/knowledge-bases/{kb}", json={"relevance_threshold": 0.05})
    assert patched.is_success, patched.text
    assert _ask(client, kb)["cached"] is False and llm.calls == 3


def test_a_cached_answer_streams_like_a_fresh_one(
    env: tuple[TestClient, Services, str], llm: LLM
) -> None:
    client, _, kb = env
    fresh = _stream(client, kb)
    assert [name for name, _ in fresh][-2:] == ["citations", "done"]
    assert fresh[-1][1]["cached"] is False and llm.calls == 1

    replayed = _stream(client, kb)
    names = [name for name, _ in replayed]
    assert set(names[:-2]) == {"delta"} and names[-2:] == ["citations", "done"]
    text = "".join(data["text"] for name, data in replayed if name == "delta")
    assert text == "".join(data["text"] for name, data in fresh if name == "delta")
    assert replayed[-2][1] == fresh[-2][1]  # the same citations
    assert replayed[-1][1]["cached"] is True and llm.calls == 1
    # Streamed and whole answers share entries.
    whole = _ask(client, kb)
    assert whole["cached"] is True and whole["answer"] == text and llm.calls == 1


def _join(pool: ThreadPoolExecutor, n: int, call: Callable[..., Any], *args: Any) -> list[Any]:
    """Submit n identical requests; return once each of them waits on the leader."""
    joined = _lookups("joined")
    futures = [pool.submit(call, *args) for _ in range(n)]
    wait_for(lambda: _lookups("joined") - joined == n)
    return futures


def test_identical_questions_at_once_are_generated_once(
    held_env: tuple[TestClient, str], llm: LLM, held: _Held
) -> None:
    client, kb = held_env
    with ThreadPoolExecutor(4) as pool:
        leader = pool.submit(_stream, client, kb)  # a stream can lead...
        wait_for(lambda: held.held == 1)
        alone = pool.submit(_stream, client, kb)  # ...but does not wait: its first token would
        wait_for(lambda: held.held == 2)  # come only with the leader's last
        followers = _join(pool, 2, _ask, client, kb)
        held.gate.set()
        streamed, whole = leader.result(), [f.result() for f in followers]
        assert alone.result()[-1][1]["cached"] is False
    assert llm.calls == 2 and held.held == 2
    text = "".join(data["text"] for name, data in streamed if name == "delta")
    assert streamed[-1][1]["cached"] is False
    for answer in whole:
        assert answer["cached"] is True and answer["answer"] == text
        assert answer["citations"] == streamed[-2][1]
        assert answer["usage"]["total_tokens"] == 0


def test_a_leader_that_fails_leaves_its_followers_to_answer(
    held_env: tuple[TestClient, str], llm: LLM, held: _Held
) -> None:
    client, kb = held_env
    llm.break_stream = True
    with ThreadPoolExecutor(3) as pool:
        leader = pool.submit(_stream, client, kb)
        wait_for(lambda: held.held == 1)
        followers = _join(pool, 2, _ask, client, kb)
        held.gate.set()
        assert leader.result()[-1][0] == "error"  # broke off: nothing to share
        answers = [f.result() for f in followers]
    assert llm.calls == 3  # whole answers read no stream: theirs do not break
    assert all(a["cached"] is False and a["answer"] == llm.reply for a in answers)


def test_chat_completions_asked_at_once_are_generated_once(
    held_env: tuple[TestClient, str], llm: LLM, held: _Held
) -> None:
    client, _ = held_env
    with ThreadPoolExecutor(3) as pool:
        leader = pool.submit(_chat_stream, client)
        wait_for(lambda: held.held == 1)
        followers = _join(pool, 2, _chat, client)
        held.gate.set()
        chunks, whole = leader.result(), [f.result() for f in followers]
    assert llm.calls == 1
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    for answer in whole:
        assert answer["cached"] is True and answer["choices"][0]["message"]["content"] == text
        assert answer["usage"]["total_tokens"] == 0


def test_off_per_request(env: tuple[TestClient, Services, str], llm: LLM) -> None:
    client, _, kb = env
    # "cache": false neither reads nor writes.
    assert _ask(client, kb, cache=False)["cached"] is False
    assert _ask(client, kb)["cached"] is False and llm.calls == 2
    assert _ask(client, kb, cache=False)["cached"] is False and llm.calls == 3
    assert _ask(client, kb)["cached"] is True and llm.calls == 3

    # no-cache: a fresh answer, which then replaces the stored one; no-store: no cache at all.
    llm.reply = "更新后的答案 [1]。"
    fresh = _ask(client, kb, headers={"Cache-Control": "no-cache"})
    assert fresh["cached"] is False and fresh["answer"] == llm.reply and llm.calls == 4
    assert _ask(client, kb)["answer"] == llm.reply
    stored = _ask(client, kb, headers={"Cache-Control": "no-store"})
    assert stored["cached"] is False and llm.calls == 5


def test_the_key_covers_the_request_options(
    env: tuple[TestClient, Services, str], llm: LLM
) -> None:
    client, _, kb = env
    assert _ask(client, kb)["cached"] is False
    variants: list[dict[str, Any]] = [
        {"top_k": 2},
        {"filters": {"filename": "*.md"}},
        {"max_tokens": 50},
        {"temperature": 0.7},
    ]
    for n, options in enumerate(variants, start=2):
        assert _ask(client, kb, **options)["cached"] is False, options
        assert llm.calls == n
        assert _ask(client, kb, **options)["cached"] is True, options
    assert _ask(client, kb, "年假有多少天？请简要回答。")["cached"] is False


def test_what_is_never_cached(env: tuple[TestClient, Services, str], llm: LLM) -> None:
    client, _, kb = env
    # A conversation's follow-up depends on its history: never from the cache.
    conv = client.post("/v1/conversations", json={"kb_id": kb}).json()["id"]
    for _ in range(2):
        assert _ask(client, kb, conversation_id=conv)["cached"] is False
    assert llm.calls == 3  # two answers, and the follow-up condensed first

    # Errors are not kept.
    llm.fail_with = 503
    failed = client.post(f"/v1/knowledge-bases/{kb}/ask", json={"question": "病假？"})
    assert failed.status_code == 503
    llm.fail_with = None
    assert _ask(client, kb, "病假？")["cached"] is False

    # An answer cut off at max_tokens is not kept.
    llm.finish_reason = "length"
    assert _ask(client, kb, "加班？")["finish_reason"] == "length"
    llm.finish_reason = "stop"
    assert _ask(client, kb, "加班？")["cached"] is False

    # Nor a stream that broke off.
    llm.break_stream = True
    broken = _stream(client, kb, "报销？")
    assert broken[-1][0] == "error"
    llm.break_stream = False
    calls = llm.calls
    assert _ask(client, kb, "报销？")["cached"] is False and llm.calls == calls + 1


def _chat(client: TestClient, **body: Any) -> dict[str, Any]:
    headers = body.pop("headers", None)
    payload = {"model": "kb:handbook", "messages": [{"role": "user", "content": QUESTION}]}
    resp = client.post("/v1/chat/completions", json={**payload, **body}, headers=headers)
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


def _chat_stream(client: TestClient) -> list[dict[str, Any]]:
    body = {
        "model": "kb:handbook",
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        lines = [line.removeprefix("data: ") for line in resp.iter_lines() if line]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_chat_completions_use_the_cache(env: tuple[TestClient, Services, str], llm: LLM) -> None:
    client, _, _ = env
    first = _chat(client)
    assert first["cached"] is False and llm.calls == 1
    second = _chat(client)
    assert second["cached"] is True and llm.calls == 1
    assert second["choices"][0]["message"] == first["choices"][0]["message"]
    assert second["citations"] == first["citations"]
    assert second["usage"]["total_tokens"] == 0

    chunks = _chat_stream(client)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == first["choices"][0]["message"]["content"] and llm.calls == 1
    last = [c for c in chunks if c["choices"]][-1]
    assert last["cached"] is True and last["citations"] == first["citations"]
    assert chunks[-1]["usage"]["total_tokens"] == 0

    # Opt-outs: the extra body field and the header.
    assert _chat(client, cache=False)["cached"] is False and llm.calls == 2
    assert _chat(client, headers={"Cache-Control": "no-cache"})["cached"] is False
    assert llm.calls == 3
    # Earlier turns make it a conversation: not cached.
    turns = [
        {"role": "user", "content": "病假呢？"},
        {"role": "assistant", "content": "病假按规定 [1]。"},
        {"role": "user", "content": QUESTION},
    ]
    assert _chat(client, messages=turns)["cached"] is False
    assert _chat(client, messages=turns)["cached"] is False


def test_two_replicas_share_answers_through_redis(tmp_path: Path) -> None:
    reason = redis_reason()
    if reason:
        pytest.skip(reason)
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    cache = {"redis_url": REDIS_URL, "ttl_s": 120}
    one_llm, two_llm = LLM(), LLM()
    one, one_client = _app(tmp_path / "one", one_llm, database_url=database, cache=cache)
    # The second replica runs no ingestion worker: it only reads what the first one wrote.
    two, two_client = _app(
        tmp_path / "two", two_llm, worker=False, database_url=database, cache=cache
    )
    with one_client, two_client:
        kb = one_client.post("/v1/knowledge-bases", json={"name": "shared"}).json()["id"]
        _add(one_client, kb, "handbook.md", HANDBOOK)
        assert _ask(one_client, kb)["cached"] is False and one_llm.calls == 1
        shared = _ask(two_client, kb)
        assert shared["cached"] is True and two_llm.calls == 0
        assert shared["answer"] == one_llm.reply

        _add(one_client, kb, "faq.md", FAQ)  # written through one, seen by two
        assert _ask(two_client, kb)["cached"] is False and two_llm.calls == 1
        assert _ask(one_client, kb)["cached"] is True and one_llm.calls == 1
    one.close()
    two.close()


def test_the_client_exposes_cached_and_sends_the_flag(
    env: tuple[TestClient, Services, str], llm: LLM
) -> None:
    client, _, kb = env
    sent: list[dict[str, Any]] = []

    def relay(request: httpx.Request) -> httpx.Response:
        """The typed client's requests, answered by the app in this process."""
        sent.append(json.loads(request.content))
        answer = client.post(request.url.path, content=request.content, headers=request.headers)
        return httpx.Response(
            answer.status_code, content=answer.content, headers=dict(answer.headers)
        )

    with Client("http://kbqa.test", transport=httpx.MockTransport(relay)) as kbqa:
        assert kbqa.ask(kb, QUESTION).cached is False
        assert kbqa.ask(kb, QUESTION).cached is True
        assert kbqa.ask(kb, QUESTION, cache=False).cached is False
        done = list(kbqa.ask_stream(kb, QUESTION))[-1]
        assert isinstance(done, DoneEvent) and done.cached is True
    assert [body.get("cache") for body in sent] == [None, None, False, None]
    assert llm.calls == 2
