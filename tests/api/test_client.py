"""rag.client against a live server (uvicorn on a loopback port, the LLM faked at the
transport): every method, sync and async, the answer stream, errors and Retry-After."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from rag.client import (
    Answer,
    ApiError,
    AsyncClient,
    CitationsEvent,
    Client,
    DeltaEvent,
    DocumentFailed,
    DoneEvent,
    ErrorEvent,
    StreamEvent,
)
from rag.generation.llm import LLMClient
from rag.services import Services
from tests.conftest import REPO, FakeLLM, make_settings, serving

SAMPLES = REPO / "data" / "samples"
HANDBOOK = SAMPLES / "员工手册.pdf"
FAQ = SAMPLES / "product-faq.md"
QUESTION = "年假有多少天？"


@dataclass
class Live:
    url: str
    app: FastAPI
    llm: FakeLLM


@contextmanager
def live_server(tmp_path: Path, **settings: Any) -> Iterator[Live]:
    """Our app with its ingestion worker on a real loopback socket."""
    fake = FakeLLM()
    config = make_settings(tmp_path / "data", **settings)
    svc = Services.create(
        config, llm=LLMClient(config.llm, transport=httpx.MockTransport(fake.handler))
    )
    app = create_app(services=svc)
    try:
        with serving(app) as url:
            yield Live(url, app, fake)
    finally:
        svc.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_server(tmp_path, llm={"max_retries": 0}) as server:
        yield server


def _check_stream(events: list[StreamEvent], reply: str) -> None:
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["citations", "done"] and set(kinds[:-2]) == {"delta"}
    text = "".join(e.text for e in events if isinstance(e, DeltaEvent))
    assert text.strip() == reply
    citations = events[-2]
    assert isinstance(citations, CitationsEvent) and citations.citations
    assert citations.citations[0].index == 1 and citations.citations[0].filename
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.model and done.usage and done.route


def _check_answer(answer: Answer, reply: str) -> None:
    assert answer.answer == reply and not answer.retrieval_only
    assert answer.citations and answer.citations[0].index == 1
    assert answer.citations[0].cited and answer.citations[0].page >= 1
    assert answer.usage["prompt_tokens"] == 100 and answer.model


def test_sync_client_covers_every_method(live: Live) -> None:
    with Client(live.url, timeout=30) as kbqa:
        assert kbqa.health() == {"status": "ok"}
        kb = kbqa.create_kb("handbook", "HR documents")
        assert kb.name == "handbook" and kb.description == "HR documents"
        assert kb.created_at is not None and kb.created_at.tzinfo is not None
        assert [k.id for k in kbqa.list_kbs()] == [kb.id]

        # A path, and bytes with metadata and an idempotency key.
        handbook = kbqa.upload(kb.id, HANDBOOK)
        assert handbook.filename == "员工手册.pdf" and handbook.status in ("queued", "processing")
        faq = kbqa.upload(
            kb.id,
            FAQ.read_bytes(),
            filename="faq.md",
            metadata={"team": "support"},
            idempotency_key="faq-upload-1",
        )
        assert faq.metadata == {"team": "support"} and not faq.duplicate
        again = kbqa.upload(kb.id, FAQ.read_bytes(), filename="faq.md", idempotency_key="faq-2")
        assert again.duplicate and again.id == faq.id

        for doc in (handbook, faq):
            ready = kbqa.wait_until_ready(kb.id, doc.id, timeout=60, poll_interval=0.05)
            assert ready.status == "ready" and ready.chunks > 0
        assert kbqa.get_document(kb.id, faq.id).sha256 == faq.sha256
        assert {d.id for d in kbqa.list_documents(kb.id)} == {handbook.id, faq.id}
        assert [d.id for d in kbqa.list_documents(kb.id, status="failed")] == []
        stats = kbqa.get_kb(kb.id)
        assert stats.documents == 2 and stats.chunks and stats.chunks > 0

        hits = kbqa.search(kb.id, QUESTION, top_k=3, mode="hybrid")
        assert 1 <= len(hits) <= 3 and all(h.page >= 1 for h in hits)
        only_faq = kbqa.search(kb.id, QUESTION, mode="lexical", filters={"filename": "faq.md"})
        assert {h.document_id for h in only_faq} <= {faq.id}
        per_document = kbqa.search(kb.id, QUESTION, top_k=5, aggregate="document")
        assert len({h.document_id for h in per_document}) == len(per_document) >= 1
        assert all(h.page_start is not None and h.page_start <= h.page for h in per_document)

        _check_answer(kbqa.ask(kb.id, QUESTION, top_k=3), live.llm.reply)
        passages = kbqa.ask(kb.id, QUESTION, retrieval_only=True)
        assert passages.retrieval_only and passages.answer is None and passages.citations
        # cache=False: the same question again would be replayed from the answer cache.
        _check_stream(list(kbqa.ask_stream(kb.id, QUESTION, top_k=3, cache=False)), live.llm.reply)
        assert live.llm.requests[-1]["stream"] is True

        conv = kbqa.create_conversation(kb.id, title="leave")
        assert conv.kb_id == kb.id and conv.title == "leave"
        followed = kbqa.ask(kb.id, QUESTION, conversation_id=conv.id)
        assert followed.conversation_id == conv.id
        assert [c.id for c in kbqa.list_conversations(kb_id=kb.id)] == [conv.id]
        detail = kbqa.get_conversation(conv.id)
        assert [m.role for m in detail.messages] == ["user", "assistant"]
        assert detail.messages[1].content == live.llm.reply
        kbqa.delete_conversation(conv.id)
        assert kbqa.list_conversations() == []

        job = kbqa.reindex(kb.id, chunk_tokens=128, idempotency_key="reindex-1")
        assert job.kind and job.version == 2 and job.kb_id == kb.id
        assert kbqa.get_job(job.id).id == job.id
        assert job.id in {j.id for j in kbqa.list_jobs(kb_id=kb.id)}
        finished = kbqa.wait_for_job(job.id, timeout=60, poll_interval=0.05)
        assert finished.status == "succeeded", finished.error
        with pytest.raises(ApiError) as done_already:
            kbqa.cancel_job(job.id)
        assert done_already.value.status == 409 and done_already.value.code == "conflict"

        # With the worker stopped a new job stays queued, so cancelling it is immediate.
        live.app.state.worker.stop()
        queued = kbqa.reindex(kb.id, chunk_tokens=256)
        cancelled = kbqa.cancel_job(queued.id)
        assert cancelled.id == queued.id and cancelled.status == "cancelled"
        assert queued.id in {j.id for j in kbqa.list_jobs(status="cancelled")}

        kbqa.delete_document(kb.id, faq.id)
        with pytest.raises(ApiError) as gone:
            kbqa.get_document(kb.id, faq.id)
        assert gone.value.status == 404
        kbqa.delete_kb(kb.id)
        assert kbqa.list_kbs() == []


def test_async_client_covers_every_method(live: Live) -> None:
    async def scenario() -> None:
        async with AsyncClient(live.url, timeout=30) as kbqa:
            assert await kbqa.health() == {"status": "ok"}
            kb = await kbqa.create_kb("async-kb")
            assert [k.id for k in await kbqa.list_kbs()] == [kb.id]
            assert (await kbqa.get_kb(kb.id)).name == "async-kb"
            doc = await kbqa.upload(kb.id, HANDBOOK, metadata={"team": "hr"})
            raw = await kbqa.upload(kb.id, FAQ.read_bytes(), filename="faq.md")
            for d in (doc, raw):
                ready = await kbqa.wait_until_ready(kb.id, d.id, timeout=60, poll_interval=0.05)
                assert ready.status == "ready"
            assert (await kbqa.get_document(kb.id, doc.id)).metadata == {"team": "hr"}
            assert len(await kbqa.list_documents(kb.id, status="ready")) == 2

            hits = await kbqa.search(kb.id, QUESTION, top_k=2, mode="dense")
            assert 1 <= len(hits) <= 2
            _check_answer(await kbqa.ask(kb.id, QUESTION), live.llm.reply)
            events = [e async for e in kbqa.ask_stream(kb.id, QUESTION)]
            _check_stream(events, live.llm.reply)
            # Leaving early through aclosing closes the response.
            async with aclosing(kbqa.ask_stream(kb.id, QUESTION)) as stream:
                async for first in stream:
                    assert isinstance(first, DeltaEvent)
                    break

            conv = await kbqa.create_conversation(kb.id)
            await kbqa.ask(kb.id, QUESTION, conversation_id=conv.id)
            assert len((await kbqa.get_conversation(conv.id)).messages) == 2
            assert [c.id for c in await kbqa.list_conversations()] == [conv.id]
            await kbqa.delete_conversation(conv.id)
            with pytest.raises(ApiError) as missing:
                await kbqa.get_conversation(conv.id)
            assert missing.value.status == 404

            job = await kbqa.reindex(kb.id, overlap_tokens=16)
            assert job.version == 2 and (await kbqa.get_job(job.id)).id == job.id
            assert job.id in {j.id for j in await kbqa.list_jobs(kind=job.kind)}
            assert (await kbqa.wait_for_job(job.id, timeout=60)).status == "succeeded"
            with pytest.raises(ApiError):
                await kbqa.cancel_job(job.id)
            live.app.state.worker.stop()
            queued = await kbqa.reindex(kb.id, overlap_tokens=0)
            assert (await kbqa.cancel_job(queued.id)).status == "cancelled"

            await kbqa.delete_document(kb.id, raw.id)
            assert [d.id for d in await kbqa.list_documents(kb.id)] == [doc.id]
            await kbqa.delete_kb(kb.id)
            with pytest.raises(ApiError) as gone:
                await kbqa.get_kb(kb.id)
            assert gone.value.status == 404 and gone.value.code == "not_found"

    asyncio.run(scenario())


def test_errors_carry_status_code_message_and_retry_after(live: Live) -> None:
    with Client(live.url) as kbqa:
        with pytest.raises(ApiError) as unknown:
            kbqa.get_kb("no-such-kb")
        err = unknown.value
        assert err.status == 404 and err.code == "not_found" and err.message
        assert err.retry_after is None and "404" in str(err)

        with pytest.raises(ValueError, match="filename"):
            kbqa.upload("any", b"bytes without a name")

        kb = kbqa.create_kb("down")
        doc = kbqa.upload(kb.id, HANDBOOK)
        kbqa.wait_until_ready(kb.id, doc.id, timeout=60, poll_interval=0.05)
        live.llm.fail_with = httpx.ConnectError("connection refused")
        with pytest.raises(ApiError) as down:
            kbqa.ask(kb.id, QUESTION)
        assert down.value.status == 503 and down.value.retry_after is not None
        assert down.value.retry_after > 0 and "127.0.0.1:8000" in down.value.message
        with pytest.raises(ApiError) as down_stream:  # refused before the first token
            list(kbqa.ask_stream(kb.id, QUESTION))
        assert down_stream.value.status == 503 and down_stream.value.retry_after is not None

        with pytest.raises(ApiError) as invalid:  # a validation error of the framework
            kbqa.search(kb.id, "")
        assert invalid.value.status in (400, 422)

        bad = kbqa.upload(kb.id, b"%PDF-1.7 this is not really a PDF", filename="broken.pdf")
        with pytest.raises(DocumentFailed) as failed:
            kbqa.wait_until_ready(kb.id, bad.id, timeout=60, poll_interval=0.05)
        assert failed.value.document.status == "failed" and failed.value.document.error


def test_rate_limit_is_429_with_retry_after(tmp_path: Path) -> None:
    with live_server(tmp_path, security={"requests_per_minute": 3}) as server:

        async def scenario() -> ApiError:
            async with AsyncClient(server.url) as kbqa:
                for _ in range(10):
                    try:
                        await kbqa.list_kbs()
                    except ApiError as exc:
                        return exc
            raise AssertionError("no request was limited")

        limited = asyncio.run(scenario())
    assert limited.status == 429 and limited.code == "rate_limited"
    assert limited.retry_after is not None and limited.retry_after > 0


def test_api_key_is_sent_as_bearer_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"knowledge_bases": []})

    with Client("http://kbqa.test/", api_key="s3cret", transport=httpx.MockTransport(handler)) as c:
        assert c.list_kbs() == []
    assert seen[0].headers["authorization"] == "Bearer s3cret"
    assert str(seen[0].url) == "http://kbqa.test/v1/knowledge-bases"


def test_stream_decoding_of_error_events_comments_and_http_dates() -> None:
    body = (
        ": a comment line\n\n"
        'event: delta\ndata: {"text": "部分"}\n\n'
        "event: unknown\ndata: {}\n\n"
        'event: error\ndata: {"code": "llm_timeout",\ndata:  "message": "slow"}\n\n'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["stream"] is True
        return httpx.Response(
            200, content=body.encode(), headers={"content-type": "text/event-stream"}
        )

    with Client("http://kbqa.test", transport=httpx.MockTransport(handler)) as c:
        events = list(c.ask_stream("kb", "q"))
    assert events == [DeltaEvent("部分"), ErrorEvent("llm_timeout", "slow")]

    def busy(request: httpx.Request) -> httpx.Response:
        headers = {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}  # a date in the past
        return httpx.Response(503, text="upstream busy", headers=headers)

    with (
        Client("http://kbqa.test", transport=httpx.MockTransport(busy)) as c,
        pytest.raises(ApiError) as exc,
    ):
        c.get_job("j")
    assert exc.value.code == "http_503" and exc.value.message == "upstream busy"
    assert exc.value.retry_after == 0.0


def test_importing_the_client_loads_no_server_dependencies() -> None:
    heavy = ["fastapi", "starlette", "torch", "sqlalchemy", "pydantic", "numpy", "api", "ingest"]
    code = (
        "import sys, json, rag.client; "
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


def test_error_envelope_with_fields_at_fault_and_request_id() -> None:
    envelope = {
        "error": {
            "code": "validation_error",
            "message": "1 field is invalid",
            "details": [
                {
                    "field": "body.topk",
                    "loc": ["body", "topk"],
                    "message": "Extra inputs are not permitted",
                    "type": "extra_forbidden",
                }
            ],
        }
    }
    legacy = {"detail": [{"loc": ["body", "query"], "msg": "Field required", "type": "missing"}]}

    def handler(request: httpx.Request) -> httpx.Response:
        body = envelope if request.url.path.endswith("/search") else legacy
        return httpx.Response(422, json=body, headers={"X-Request-ID": "req-1"})

    with Client("http://kbqa.test", transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(ApiError) as new:
            c.search("kb", "q")
        with pytest.raises(ApiError) as old:
            c.ask("kb", "q")
    err = new.value
    assert (err.status, err.code, err.message) == (422, "validation_error", "1 field is invalid")
    assert [(d.field, d.loc, d.type) for d in err.details] == [
        ("body.topk", ["body", "topk"], "extra_forbidden")
    ]
    assert err.details[0].message == "Extra inputs are not permitted"
    assert err.request_id == "req-1"
    # A server older than the envelope: FastAPI's list read the same way.
    assert old.value.code == "http_422" and old.value.details[0].field == "body.query"
    assert old.value.message == "body.query: Field required"


def test_knowledge_bases_by_name_are_one_path_segment() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json={"results": []})

    with Client("http://kbqa.test", transport=httpx.MockTransport(handler)) as c:
        assert c.search("HR/手册 2024?", "q") == []
    assert seen == ["/v1/knowledge-bases/HR%2F%E6%89%8B%E5%86%8C%202024%3F/search"]


def test_answer_flags_are_read_or_derived() -> None:
    cited = {"index": 1, "cited": True, "chunk_id": 1, "document_id": "d", "filename": "f"}
    cited |= {"page": 1, "text": "t", "score": 1.0}
    sent = Answer.from_json(
        {
            "answer": "x",
            "citations": [cited],
            "grounded": False,
            "truncated": True,
            "degenerate": "repetition",
            "finish_reason": "stop",
        }
    )
    assert (sent.grounded, sent.truncated, sent.degenerate) == (False, True, "repetition")
    older = Answer.from_json({"answer": "x", "citations": [cited], "finish_reason": "length"})
    assert (older.grounded, older.truncated, older.degenerate) == (True, True, None)


def test_knowledge_bases_by_name_versions_and_evaluation(live: Live) -> None:
    with Client(live.url, timeout=30) as kbqa:
        kbqa.create_kb("员工 手册")
        doc = kbqa.upload("员工 手册", HANDBOOK)
        kbqa.wait_until_ready("员工 手册", doc.id, timeout=60, poll_interval=0.05)
        assert kbqa.search("员工 手册", QUESTION, top_k=1)
        answer = kbqa.ask("员工 手册", QUESTION)
        assert answer.grounded and not answer.truncated and answer.degenerate is None

        rebuilt = kbqa.wait_for_job(kbqa.rebuild_index("员工 手册").id, timeout=60)
        assert rebuilt.status == "succeeded" and rebuilt.result["vectors"] > 0
        built = kbqa.reindex("员工 手册", chunk_tokens=64)
        assert kbqa.wait_for_job(built.id, timeout=60).status == "succeeded"
        versions = kbqa.list_versions("员工 手册")
        assert [(v.number, v.status) for v in versions] == [(1, "retired"), (2, "live")]
        assert versions[1].chunk_tokens == 64 and versions[1].checks
        back = kbqa.rollback("员工 手册")
        assert back.version == 1
        assert kbqa.wait_for_job(back.id, timeout=60).status == "succeeded"
        assert kbqa.prune_versions("员工 手册", keep=1) == [2]

        golden = [{"id": "a", "question": QUESTION, "filename": HANDBOOK.name, "page": 1}]
        job = kbqa.evaluate("员工 手册", golden, modes=["lexical"])
        report = kbqa.wait_for_job(job.id, timeout=60).result
        assert report["questions"] == 1 and list(report["modes"]) == ["lexical"]

    async def scenario() -> None:
        async with AsyncClient(live.url, timeout=30) as kbqa:
            assert next(v.status for v in await kbqa.list_versions("员工 手册")) == "live"
            assert await kbqa.prune_versions("员工 手册") == []
            job = await kbqa.rebuild_index("员工 手册")
            assert (await kbqa.wait_for_job(job.id, timeout=60)).status == "succeeded"

    asyncio.run(scenario())
