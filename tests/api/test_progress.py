"""Visible ingestion progress over HTTP: queue position, stage, pages and ETA of documents and
jobs, moving as the worker works; upload priority and its validation; the typed client."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from rag.client import Client
from rag.ml.embedding import FakeEmbedder
from rag.services import Services
from rag.store.models import IngestStage
from tests.conftest import upload, wait_document, wait_for

FIELDS = ("queue_position", "stage", "pages_done", "pages_total", "eta_s")


@pytest.fixture
def idle(services: Services) -> Iterator[TestClient]:
    """No background worker: jobs stay queued until the test runs one."""
    with TestClient(create_app(services=services, start_worker=False)) as c:
        yield c


def _kb(c: TestClient, name: str = "progress") -> str:
    return c.post("/v1/knowledge-bases", json={"name": name}).json()["id"]


def _text(i: int) -> bytes:
    return f"第 {i} 份文件：年假十天，病假五天。".encode() * (10 + i)


def _docs(c: TestClient, kb: str) -> dict[str, dict[str, Any]]:
    return {
        d["filename"]: d for d in c.get(f"/v1/knowledge-bases/{kb}/documents").json()["documents"]
    }


def test_queue_position_moves_up_and_eta_appears_as_documents_finish(
    idle: TestClient, services: Services
) -> None:
    kb = _kb(idle)
    ids = [upload(idle, kb, f"d{i}.txt", _text(i)).json()["id"] for i in range(3)]
    docs = _docs(idle, kb)
    assert [docs[f"d{i}.txt"]["queue_position"] for i in range(3)] == [1, 2, 3]
    # Nothing has finished yet: the speed, and so any ETA, is unknown.
    assert all(d["eta_s"] is None and d["stage"] is None for d in docs.values())
    assert all(d["pages_done"] == 0 and d["pages_total"] is None for d in docs.values())

    assert services.worker().run_once()
    docs = _docs(idle, kb)
    first = docs["d0.txt"]
    assert first["status"] == "ready"
    assert all(first[f] is None for f in FIELDS)  # only documents in flight carry progress
    assert docs["d1.txt"]["queue_position"] == 1 and docs["d2.txt"]["queue_position"] == 2
    eta1, eta2 = docs["d1.txt"]["eta_s"], docs["d2.txt"]["eta_s"]
    assert eta1 is not None and eta2 is not None and 0 < eta1 < eta2

    one = idle.get(f"/v1/knowledge-bases/{kb}/documents/{ids[2]}").json()
    assert one["queue_position"] == 2 and one["eta_s"] == pytest.approx(eta2)

    assert services.worker().run_once()
    assert _docs(idle, kb)["d2.txt"]["queue_position"] == 1


def test_job_shows_file_priority_stage_pages_and_position(idle: TestClient) -> None:
    kb = _kb(idle)
    batch = upload(idle, kb, "bulk.txt", _text(1), data={"priority": "batch"}).json()
    mine = upload(idle, kb, "mine.txt", _text(2)).json()
    jobs = {j["document_id"]: j for j in idle.get("/v1/jobs", params={"kb_id": kb}).json()["jobs"]}
    job = idle.get(f"/v1/jobs/{jobs[batch['id']]['id']}").json()
    assert job["filename"] == "bulk.txt" and job["priority"] == "batch"
    assert job["stage"] is None and job["pages_done"] == 0 and job["pages_total"] is None
    # Uploaded first, but a batch upload: the interactive one runs before it.
    assert job["queue_position"] == 2
    assert jobs[mine["id"]]["queue_position"] == 1 and jobs[mine["id"]]["priority"] == "interactive"
    docs = _docs(idle, kb)
    assert docs["mine.txt"]["queue_position"] == 1 and docs["bulk.txt"]["queue_position"] == 2
    rebuild = idle.post(f"/v1/knowledge-bases/{kb}/rebuild-index").json()
    assert rebuild["priority"] == "background"
    assert idle.get(f"/v1/jobs/{rebuild['id']}").json()["queue_position"] == 3


@pytest.mark.parametrize("value", ["urgent", "0", "background", "Interactive"])
def test_an_unknown_priority_is_invalid_input(idle: TestClient, value: str) -> None:
    kb = _kb(idle)
    resp = upload(idle, kb, "a.txt", _text(0), data={"priority": value})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "invalid_input"
    assert "priority" in resp.json()["error"]["message"]
    assert idle.get(f"/v1/knowledge-bases/{kb}/documents").json()["documents"] == []


class GatedEmbedder(FakeEmbedder):
    """Embeds only once the test opens the gate, so documents stay in flight meanwhile."""

    def __init__(self) -> None:
        super().__init__(64)
        self.gate = threading.Event()

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        self.gate.wait(60)
        return super().embed_passages(texts)


def test_stage_and_pages_while_processing(client: TestClient, services: Services) -> None:
    embedder = GatedEmbedder()
    services._embedder = embedder
    kb = _kb(client)
    doc = upload(client, kb, "slow.txt", _text(3)).json()
    url = f"/v1/knowledge-bases/{kb}/documents/{doc['id']}"
    seen: dict[str, Any] = {}

    stages: list[str] = []

    def embedding() -> bool:
        seen.update(client.get(url).json())
        if seen["stage"] and seen["stage"] not in stages:
            stages.append(seen["stage"])
        return seen["stage"] == IngestStage.embed  # held there by the gate

    try:
        wait_for(embedding, timeout=30)
        assert set(stages) <= set(IngestStage)
        assert seen["status"] == "processing" and seen["queue_position"] is None
        assert seen["pages_total"] == 1 and seen["pages_done"] == 1  # a text file: one page
        job = client.get("/v1/jobs", params={"kb_id": kb}).json()["jobs"][0]
        assert job["status"] == "running" and job["stage"] == "embed"
        assert job["pages_done"] == job["pages_total"] == 1
    finally:
        embedder.gate.set()
    done = wait_document(client, kb, doc["id"])
    assert done["status"] == "ready" and all(done[f] is None for f in FIELDS)


def test_the_client_reads_progress_and_sends_priority(idle: TestClient) -> None:
    def app(request: httpx.Request) -> httpx.Response:
        resp = idle.request(
            request.method, str(request.url), headers=request.headers, content=request.read()
        )
        return httpx.Response(resp.status_code, headers=resp.headers, content=resp.content)

    kb = _kb(idle)
    with Client("http://testserver", transport=httpx.MockTransport(app)) as kbqa:
        first = kbqa.upload(kb, _text(0), filename="a.txt", priority="batch")
        second = kbqa.upload(kb, _text(1), filename="b.txt")
        docs = {d.id: d for d in kbqa.list_documents(kb)}
        assert docs[second.id].queue_position == 1 and docs[first.id].queue_position == 2
        assert docs[first.id].pages_done == 0 and docs[first.id].eta_s is None
        jobs = {j.document_id: j for j in kbqa.list_jobs(kb_id=kb)}
        assert jobs[first.id].priority == "batch" and jobs[first.id].filename == "a.txt"
        assert kbqa.get_job(jobs[second.id].id).queue_position == 1
