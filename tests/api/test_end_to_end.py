"""The public HTTP contract end to end: fake embedder, LLM faked at the transport."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from rag.services import Services
from tests.conftest import FILES, FakeLLM, upload, wait_document

FAQ = (FILES / "debian-faq.zh-cn.txt").read_bytes()


@pytest.fixture
def kb(client: TestClient) -> str:
    resp = client.post("/v1/knowledge-bases", json={"name": "faq", "description": "Debian"})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


@pytest.fixture
def faq_doc(client: TestClient, kb: str) -> dict:
    resp = upload(client, kb, "debian-faq.zh-cn.txt", FAQ, data={"metadata": '{"team": "it"}'})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["status"] in ("queued", "processing", "ready")
    assert body["duplicate"] is False
    done = wait_document(client, kb, body["id"])
    assert done["status"] == "ready", done
    return done


def test_knowledge_base_lifecycle(client: TestClient) -> None:
    created = client.post("/v1/knowledge-bases", json={"name": "hr"}).json()
    assert client.post("/v1/knowledge-bases", json={"name": "hr"}).status_code == 409
    listed = client.get("/v1/knowledge-bases").json()["knowledge_bases"]
    assert [k["name"] for k in listed] == ["hr"]
    one = client.get(f"/v1/knowledge-bases/{created['id']}").json()
    assert one["documents"] == 0 and one["chunks"] == 0
    assert client.delete(f"/v1/knowledge-bases/{created['id']}").status_code == 204
    assert client.get(f"/v1/knowledge-bases/{created['id']}").status_code == 404
    missing = client.get("/v1/knowledge-bases/nope")
    assert missing.status_code == 404 and "does not exist" in missing.json()["error"]["message"]


def test_upload_ingest_search_ask(
    client: TestClient, kb: str, faq_doc: dict, fake_llm: FakeLLM
) -> None:
    assert faq_doc["chunks"] > 50 and faq_doc["pages"] == 1
    assert faq_doc["metadata"] == {"team": "it"}
    assert len(faq_doc["sha256"]) == 64

    stats = client.get(f"/v1/knowledge-bases/{kb}").json()
    assert stats["documents"] == 1 and stats["chunks"] == faq_doc["chunks"]

    hits = client.post(
        f"/v1/knowledge-bases/{kb}/search", json={"query": "什么是 Debian GNU/Linux？", "top_k": 3}
    ).json()["results"]
    assert len(hits) == 3
    assert all(h["filename"] == "debian-faq.zh-cn.txt" and h["page"] == 1 for h in hits)
    assert hits[0]["score"] >= hits[-1]["score"]

    resp = client.post(f"/v1/knowledge-bases/{kb}/ask", json={"question": "什么是 Debian？"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["answer"] == fake_llm.reply
    assert [c["index"] for c in body["citations"]] == list(range(1, len(body["citations"]) + 1))
    assert body["citations"][0]["cited"] is True
    assert body["usage"]["completion_tokens"] == 10
    sent = fake_llm.requests[-1]["messages"]
    assert sent[0]["role"] == "system" and "[1]" in sent[0]["content"]
    assert "<references>" in sent[1]["content"] and "[1] debian-faq.zh-cn.txt" in sent[1]["content"]
    assert sent[1]["content"].rstrip().endswith("什么是 Debian？")


def test_system_prompt_is_byte_identical_across_requests(
    client: TestClient, kb: str, faq_doc: dict, fake_llm: FakeLLM
) -> None:
    for q in ("什么是 Debian？", "如何安装软件包？"):
        client.post(f"/v1/knowledge-bases/{kb}/ask", json={"question": q})
    first, second = (r["messages"][0]["content"] for r in fake_llm.requests[-2:])
    assert first == second


def test_duplicate_upload_returns_existing(client: TestClient, kb: str, faq_doc: dict) -> None:
    again = upload(client, kb, "renamed.txt", FAQ)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True and again.json()["id"] == faq_doc["id"]
    docs = client.get(f"/v1/knowledge-bases/{kb}/documents").json()["documents"]
    assert len(docs) == 1


def test_llm_down_is_503_with_url_and_retrieval_only_still_works(
    client: TestClient, kb: str, faq_doc: dict, fake_llm: FakeLLM
) -> None:
    fake_llm.fail_with = httpx.ConnectError("connection refused")
    resp = client.post(f"/v1/knowledge-bases/{kb}/ask", json={"question": "什么是 Debian？"})
    assert resp.status_code == 503
    assert "Retry-After" in resp.headers
    message = resp.json()["error"]["message"]
    assert "http://127.0.0.1:8000/v1" in message and "vllm serve" in message
    only = client.post(
        f"/v1/knowledge-bases/{kb}/ask",
        json={"question": "什么是 Debian？", "retrieval_only": True},
    )
    assert only.status_code == 200
    assert only.json()["answer"] is None and len(only.json()["citations"]) == 5


def test_stream_sends_deltas_then_citations_then_done(
    client: TestClient, kb: str, faq_doc: dict, fake_llm: FakeLLM
) -> None:
    fake_llm.reply = "Debian is an OS [1] built by volunteers."
    with client.stream(
        "POST",
        f"/v1/knowledge-bases/{kb}/ask",
        json={"question": "What is Debian?", "stream": True},
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = "".join(resp.iter_text())
    events = [block.split("\n", 1) for block in raw.strip().split("\n\n")]
    names = [e[0].removeprefix("event: ") for e in events]
    assert names[-2:] == ["citations", "done"] and set(names[:-2]) == {"delta"}
    text = "".join(json.loads(e[1].removeprefix("data: "))["text"] for e in events[:-2])
    assert text.strip() == fake_llm.reply
    citations = json.loads(events[-2][1].removeprefix("data: "))
    assert citations[0]["cited"] is True and citations[0]["filename"] == "debian-faq.zh-cn.txt"


def test_delete_document_removes_its_chunks_for_good(
    services: Services, client: TestClient, kb: str, faq_doc: dict
) -> None:
    other = upload(client, kb, "note.txt", "Debian 安装笔记：使用 apt 安装软件包。".encode())
    other_doc = wait_document(client, kb, other.json()["id"])
    assert other_doc["status"] == "ready"
    query = {"query": "什么是 Debian GNU/Linux？", "top_k": 50}
    before = client.post(f"/v1/knowledge-bases/{kb}/search", json=query).json()["results"]
    assert any(h["document_id"] == faq_doc["id"] for h in before)

    assert client.delete(f"/v1/knowledge-bases/{kb}/documents/{faq_doc['id']}").status_code == 204
    assert client.get(f"/v1/knowledge-bases/{kb}/documents/{faq_doc['id']}").status_code == 404
    after = client.post(f"/v1/knowledge-bases/{kb}/search", json=query).json()["results"]
    assert after and all(h["document_id"] == other_doc["id"] for h in after)

    # A restart loads the (older) snapshot and must still never return the deleted chunks.
    services.indexes.save_dirty()
    fresh = Services.create(services.settings, llm=services.llm)
    try:
        with TestClient(create_app(services=fresh, start_worker=False)) as c2:
            hits = c2.post(f"/v1/knowledge-bases/{kb}/search", json=query).json()["results"]
            assert hits and all(h["document_id"] == other_doc["id"] for h in hits)
    finally:
        fresh.db.dispose()


def test_reindex_job(client: TestClient, kb: str, faq_doc: dict) -> None:
    job = client.post(f"/v1/knowledge-bases/{kb}/reindex")
    assert job.status_code == 202
    job_id = job.json()["job_id"]
    from tests.conftest import wait_for

    assert job.json()["version"] == 2
    wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded")
    result = client.get(f"/v1/jobs/{job_id}").json()["result"]
    # Same settings: a new version with as many chunks, checked and switched live.
    assert (result["version"], result["previous"]) == (2, 1)
    assert result["checks"]["vectors"] == faq_doc["chunks"] and result["checks"]["ok"]
    rebuild = client.post(f"/v1/knowledge-bases/{kb}/rebuild-index")
    assert rebuild.status_code == 202 and rebuild.json()["kind"] == "rebuild-index"
    rebuild_id = rebuild.json()["job_id"]
    wait_for(lambda: client.get(f"/v1/jobs/{rebuild_id}").json()["status"] == "succeeded")
    assert client.get(f"/v1/jobs/{rebuild_id}").json()["result"]["vectors"] == faq_doc["chunks"]
    assert client.get("/v1/jobs/unknown").status_code == 404


def test_health_ready_metrics(client: TestClient, kb: str, faq_doc: dict) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["database"]["ok"] and checks["index"]["ok"] and checks["llm"]["ok"]
    text = client.get("/metrics").text
    assert 'rag_documents{status="ready"} 1.0' in text
    assert "rag_ingest_stage_duration_seconds_count" in text
    assert 'rag_http_requests_total{method="POST",route="/v1/knowledge-bases",status="201"}' in text
    assert client.get("/docs").status_code == 200
    assert "/v1/knowledge-bases/{kb_id}/ask" in client.get("/openapi.json").json()["paths"]
