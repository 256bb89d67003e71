"""Jobs: list, progress with rate and ETA, cancel (queued and running)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from rag.services import Services
from rag.store.models import Chunk
from tests.conftest import REPO, upload, wait_document, wait_for

SAMPLE = (REPO / "tests" / "fixtures" / "员工手册.md").read_bytes()


@pytest.fixture
def idle(services: Services) -> Iterator[TestClient]:
    """An app without a background worker, so jobs stay where the test puts them."""
    with TestClient(create_app(services=services, start_worker=False)) as c:
        yield c


def _kb(c: TestClient) -> str:
    return c.post("/v1/knowledge-bases", json={"name": "jobs"}).json()["id"]


def _job_of(c: TestClient, doc_id: str) -> dict:
    jobs = c.get("/v1/jobs", params={"kind": "ingest"}).json()["jobs"]
    return next(j for j in jobs if j["document_id"] == doc_id)


def test_progress_rate_and_eta_of_a_finished_ingest(client: TestClient) -> None:
    kb = _kb(client)
    doc = upload(client, kb, "handbook.md", SAMPLE).json()
    assert wait_document(client, kb, doc["id"])["status"] == "ready"
    job = _job_of(client, doc["id"])
    wait_for(lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded")
    job = client.get(f"/v1/jobs/{job['id']}").json()
    assert job["progress"]["done"] == job["progress"]["total"] == 4
    assert job["progress"]["rate_per_s"] > 0 and job["progress"]["eta_s"] == 0
    assert client.get("/v1/jobs", params={"status": "succeeded", "kb_id": kb}).json()["jobs"]
    assert client.get("/v1/jobs", params={"status": "queued", "kb_id": kb}).json()["jobs"] == []


def test_cancel_a_queued_job(idle: TestClient) -> None:
    kb = _kb(idle)
    doc = upload(idle, kb, "handbook.md", SAMPLE).json()
    job = _job_of(idle, doc["id"])
    assert job["status"] == "queued"
    cancelled = idle.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    state = idle.get(f"/v1/knowledge-bases/{kb}/documents/{doc['id']}").json()
    assert state["status"] == "failed" and state["error"] == "ingestion cancelled"
    assert idle.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409
    assert idle.post("/v1/jobs/nope/cancel").status_code == 404


def test_cancel_a_running_job_stops_at_a_stage_boundary(
    idle: TestClient, services: Services
) -> None:
    kb = _kb(idle)
    doc = upload(idle, kb, "handbook.md", SAMPLE).json()
    worker = services.worker()
    job = worker.claim()
    assert job is not None and job.document_id == doc["id"]
    assert idle.get(f"/v1/jobs/{job.id}").json()["status"] == "running"
    requested = idle.post(f"/v1/jobs/{job.id}/cancel").json()
    assert requested["status"] == "running" and requested["cancel_requested"] is True
    worker.execute(job)
    assert idle.get(f"/v1/jobs/{job.id}").json()["status"] == "cancelled"
    state = idle.get(f"/v1/knowledge-bases/{kb}/documents/{doc['id']}").json()
    assert state["status"] == "failed" and state["chunks"] == 0
    with services.db.read() as session:
        assert session.execute(select(func.count()).select_from(Chunk)).scalar_one() == 0
    assert len(services.indexes.get(kb)) == 0


def test_idempotency_key_replays_the_first_upload_response(idle: TestClient) -> None:
    kb = _kb(idle)
    headers = {"Idempotency-Key": "upload-42"}
    first = upload(idle, kb, "handbook.md", SAMPLE, headers=headers)
    again = upload(idle, kb, "handbook.md", SAMPLE, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.json()["duplicate"] is False
    # Without the key, the same bytes are a duplicate, answered 200.
    assert upload(idle, kb, "handbook.md", SAMPLE).json()["duplicate"] is True
    # The key reused for a different file is refused rather than answered with the wrong one.
    other = upload(idle, kb, "other.md", b"# other\n\nanother file", headers=headers)
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["error"]["message"]
    assert not list((idle.app.state.services.settings.data_dir / "tmp").iterdir())
    docs = idle.get(f"/v1/knowledge-bases/{kb}/documents").json()["documents"]
    assert len(docs) == 1


def test_idempotency_key_on_job_creation(idle: TestClient) -> None:
    kb = _kb(idle)
    headers = {"Idempotency-Key": "reindex-1"}
    first = idle.post(f"/v1/knowledge-bases/{kb}/reindex", headers=headers)
    second = idle.post(f"/v1/knowledge-bases/{kb}/reindex", headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["job_id"] == second.json()["job_id"]
    assert first.json()["version"] == second.json()["version"] == 2
    # Without the key it is a new request: refused while version 2 is still building.
    assert idle.post(f"/v1/knowledge-bases/{kb}/reindex").status_code == 409
    # The key reused with another body is another request.
    other = idle.post(
        f"/v1/knowledge-bases/{kb}/reindex", headers=headers, json={"chunk_tokens": 128}
    )
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["error"]["message"]
    assert idle.post(f"/v1/jobs/{first.json()['job_id']}/cancel").status_code == 202
    third = idle.post(f"/v1/knowledge-bases/{kb}/reindex")
    assert third.status_code == 202 and third.json()["job_id"] != first.json()["job_id"]
    assert third.json()["version"] == 3
    assert len(idle.get("/v1/jobs", params={"kind": "reindex"}).json()["jobs"]) == 2
    rebuilds = [
        idle.post(f"/v1/knowledge-bases/{kb}/rebuild-index", headers={"Idempotency-Key": "r"})
        for _ in range(2)
    ]
    assert rebuilds[0].json()["job_id"] == rebuilds[1].json()["job_id"]
