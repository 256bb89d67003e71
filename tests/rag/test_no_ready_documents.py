"""A question to a knowledge base with no ready document is refused before any LLM call (no
condensing, no generation, no cache), with a message that counts its documents; asking for
passages only just finds none."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ingest.upload import stage_upload
from rag.core.errors import Conflict, NoReadyDocuments
from rag.qa.answer import AskSpec
from rag.qa.answer_cache import Policy
from rag.services import Services
from rag.store.models import Document, DocumentStatus
from tests.conftest import FakeLLM

HISTORY = [{"role": "user", "content": "年假？"}, {"role": "assistant", "content": "十天 [1]。"}]


def _stage(svc: Services, kb_id: str, name: str, text: str) -> str:
    path = svc.settings.data_dir / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    with path.open("rb") as fh:
        staged = stage_upload(fh, name, svc.settings.data_dir, 10**7)
    return svc.knowledge.add_document(kb_id, staged)[0].id


def _set_status(svc: Services, doc_id: str, status: str) -> None:
    with svc.db.write() as session:
        doc = session.get(Document, doc_id)
        assert doc is not None
        doc.status = status


def _ask(svc: Services, spec: AskSpec, **kw: object) -> object:
    return asyncio.run(svc.qa.ask(spec, **kw))  # type: ignore[arg-type]


def test_no_ready_document_refuses_before_any_llm_call(
    services: Services, fake_llm: FakeLLM
) -> None:
    kb = services.knowledge.create_kb("handbook").id
    asks = [
        AskSpec(kb, "年假有多少天？"),
        AskSpec(kb, "那病假呢？", history=HISTORY),  # a follow-up would be condensed first
    ]
    for spec in asks:
        for policy in (Policy(), Policy(read=False, write=False)):  # with and without the cache
            for stream in (False, True):
                with pytest.raises(NoReadyDocuments) as info:
                    _ask(services, spec, policy=policy, stream=stream)
                assert info.value.status_code == 409 and info.value.code == "no_ready_documents"
                assert isinstance(info.value, Conflict)
    assert "'handbook'" in str(info.value) and "upload documents first" in str(info.value)
    assert fake_llm.requests == []  # neither condensed nor generated
    # Passages only: none, and no error.
    found = asyncio.run(services.qa.retrieve_only(AskSpec(kb, "年假有多少天？")))
    assert found.retrieval_only and found.citations == []


def test_the_message_counts_documents_by_status(services: Services, fake_llm: FakeLLM) -> None:
    kb = services.knowledge.create_kb("handbook").id
    docs = [_stage(services, kb, f"{i}.txt", f"第 {i} 章。年假十天。" * 30) for i in range(4)]
    _set_status(services, docs[1], DocumentStatus.processing)
    _set_status(services, docs[2], DocumentStatus.failed)
    _set_status(services, docs[3], DocumentStatus.failed)
    with pytest.raises(NoReadyDocuments) as info:
        _ask(services, AskSpec(kb, "年假有多少天？"))
    message = str(info.value)
    assert "1 queued, 1 processing, 2 failed" in message and "once they are ready" in message
    assert info.value.counts == {"queued": 1, "processing": 1, "failed": 2}
    for doc in docs[:2]:
        _set_status(services, doc, DocumentStatus.failed)
    with pytest.raises(NoReadyDocuments) as info:
        _ask(services, AskSpec(kb, "年假有多少天？"))
    assert "0 queued, 0 processing, 4 failed" in str(info.value)
    assert "upload them again" in str(info.value)
    assert fake_llm.requests == []


def test_one_ready_document_is_enough(services: Services, fake_llm: FakeLLM) -> None:
    kb = services.knowledge.create_kb("handbook").id
    _stage(services, kb, "a.txt", "年假：入职满一年的员工每年享有十天带薪年假。" * 20)
    worker = services.worker()
    while worker.run_once():
        pass
    _stage(services, kb, "b.txt", "还在排队的文件。" * 20)  # queued: does not matter
    reply = asyncio.run(services.qa.ask(AskSpec(kb, "年假有多少天？")))
    assert reply.answer is not None and reply.answer.answer
    assert len(fake_llm.requests) == 1


def test_over_http_it_is_a_409_with_its_code(services: Services, fake_llm: FakeLLM) -> None:
    with TestClient(create_app(services=services, start_worker=False)) as client:
        kb = client.post("/v1/knowledge-bases", json={"name": "empty"}).json()["id"]
        for body in ({"question": "年假？"}, {"question": "年假？", "stream": True}):
            resp = client.post(f"/v1/knowledge-bases/{kb}/ask", json=body)
            assert resp.status_code == 409, resp.text
            error = resp.json()["error"]
            assert error["code"] == "no_ready_documents" and "0 queued" in error["message"]
        chat = client.post(
            "/v1/chat/completions",
            json={"model": f"kb:{kb}", "messages": [{"role": "user", "content": "年假？"}]},
        )
        assert chat.status_code == 409 and chat.json()["error"]["code"] == "no_ready_documents"
        only = client.post(
            f"/v1/knowledge-bases/{kb}/ask", json={"question": "年假？", "retrieval_only": True}
        )
        assert only.status_code == 200 and only.json()["citations"] == []
    assert fake_llm.requests == []


def test_the_check_is_one_cheap_query(services: Services) -> None:
    """Among many queued documents and other knowledge bases' ready ones, the check still
    finds the one ready document (the index on kb_id keeps it cheap; timing is not asserted)."""
    from rag.qa.service import require_ready
    from rag.store.models import KnowledgeBase

    kb = services.knowledge.create_kb("big").id
    other = services.knowledge.create_kb("other").id
    with services.db.write() as session:
        for i in range(300):
            for target, status in ((kb, DocumentStatus.queued), (other, DocumentStatus.ready)):
                session.add(
                    Document(
                        kb_id=target,
                        filename=f"{i}.txt",
                        media_type="text/plain",
                        size_bytes=1,
                        sha256=f"{target}{i}",
                        status=status,
                        storage_path=f"x/{target}/{i}",
                    )
                )
    with services.db.read() as session:
        big = session.get(KnowledgeBase, kb)
        assert big is not None
        with pytest.raises(NoReadyDocuments) as info:
            require_ready(session, big)
    assert info.value.counts["queued"] == 300
