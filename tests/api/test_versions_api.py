"""Index versions over HTTP: reindex with new settings, the versions list, rollback,
rebuild-index."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import REPO, upload, wait_document, wait_for

SAMPLE = (REPO / "tests" / "fixtures" / "员工手册.md").read_bytes()


def _finished(client: TestClient, job_id: str) -> dict:
    final = ("succeeded", "failed", "cancelled")
    wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] in final)
    return client.get(f"/v1/jobs/{job_id}").json()


def _kb_with_a_document(client: TestClient) -> str:
    kb = client.post("/v1/knowledge-bases", json={"name": "versions"}).json()["id"]
    doc = upload(client, kb, "handbook.md", SAMPLE).json()
    assert wait_document(client, kb, doc["id"])["status"] == "ready"
    return kb


def _search(client: TestClient, kb: str) -> list[int]:
    body = {"query": "年假有多少天", "top_k": 3}
    return [
        r["chunk_id"]
        for r in client.post(f"/v1/knowledge-bases/{kb}/search", json=body).json()["results"]
    ]


def test_reindex_with_new_settings_then_roll_back(client: TestClient) -> None:
    kb = _kb_with_a_document(client)
    before = _search(client, kb)
    listed = client.get(f"/v1/knowledge-bases/{kb}/versions").json()
    assert listed["live"] == 1 and [v["status"] for v in listed["versions"]] == ["live"]
    v1 = listed["versions"][0]
    assert (v1["embedding_model"], v1["embedding_dim"], v1["chunk_tokens"]) == ("fake:64", 64, 256)
    assert v1["chunks"] > 0 and v1["documents"] == 1

    resp = client.post(
        f"/v1/knowledge-bases/{kb}/reindex",
        json={"embedding_model": "fake:32", "chunk_tokens": 64, "overlap_tokens": 8},
    )
    assert resp.status_code == 202 and resp.json()["version"] == 2
    assert resp.json()["kind"] == "reindex"
    job = _finished(client, resp.json()["job_id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["done"] == job["progress"]["total"] == 1

    listed = client.get(f"/v1/knowledge-bases/{kb}/versions").json()
    assert listed["live"] == 2
    by_number = {v["number"]: v for v in listed["versions"]}
    assert (by_number[1]["status"], by_number[2]["status"]) == ("retired", "live")
    v2 = by_number[2]
    assert (v2["embedding_model"], v2["embedding_dim"]) == ("fake:32", 32)
    assert (v2["chunk_tokens"], v2["overlap_tokens"]) == (64, 8)
    assert v2["chunks"] > v1["chunks"] and v2["checks"]["ok"] and v2["activated_at"]
    kb_out = client.get(f"/v1/knowledge-bases/{kb}").json()
    assert (kb_out["embedding_model"], kb_out["embedding_dim"]) == ("fake:32", 32)
    assert kb_out["chunks"] == v2["chunks"]
    index = client.get(f"/v1/knowledge-bases/{kb}/index").json()
    assert index["consistent"] and index["version"] == 2 and index["dim"] == 32
    after = _search(client, kb)
    assert after and not set(after) & set(before)

    back = client.post(f"/v1/knowledge-bases/{kb}/versions/rollback")
    assert back.status_code == 202 and back.json()["version"] == 1
    assert _finished(client, back.json()["job_id"])["status"] == "succeeded"
    listed = client.get(f"/v1/knowledge-bases/{kb}/versions").json()
    assert listed["live"] == 1
    assert _search(client, kb) == before
    assert client.get(f"/v1/knowledge-bases/{kb}").json()["embedding_model"] == "fake:64"


def test_reindex_refusals(client: TestClient) -> None:
    kb = _kb_with_a_document(client)
    assert client.post("/v1/knowledge-bases/nope/reindex").status_code == 404
    assert client.get("/v1/knowledge-bases/nope/versions").status_code == 404
    bad = client.post(f"/v1/knowledge-bases/{kb}/reindex", json={"chunk_tokens": 8})
    assert bad.status_code == 422
    overlap = client.post(
        f"/v1/knowledge-bases/{kb}/reindex", json={"chunk_tokens": 64, "overlap_tokens": 64}
    )
    assert overlap.status_code in (400, 422) and "overlap" in overlap.text
    # Nothing to roll back to yet.
    assert client.post(f"/v1/knowledge-bases/{kb}/versions/rollback").status_code == 409
    assert [
        v["number"] for v in client.get(f"/v1/knowledge-bases/{kb}/versions").json()["versions"]
    ] == [1]


def test_rebuild_index_rebuilds_the_live_cache(client: TestClient) -> None:
    kb = _kb_with_a_document(client)
    chunks = client.get(f"/v1/knowledge-bases/{kb}").json()["chunks"]
    resp = client.post(f"/v1/knowledge-bases/{kb}/rebuild-index")
    assert resp.status_code == 202
    job = _finished(client, resp.json()["job_id"])
    assert job["kind"] == "rebuild-index" and job["status"] == "succeeded"
    assert job["result"]["vectors"] == chunks
    # No new version: the cache of the live one was rebuilt.
    assert len(client.get(f"/v1/knowledge-bases/{kb}/versions").json()["versions"]) == 1
    assert client.post("/v1/knowledge-bases/nope/rebuild-index").status_code == 404
