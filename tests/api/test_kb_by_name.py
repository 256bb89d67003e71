"""A knowledge base is addressed by its id or its name on every route: each /v1 operation with a
{kb_id} segment in the OpenAPI schema is called with the name and finds the knowledge base; the
name of another tenant's knowledge base is 404 there; no name may look like an id, and an id
wins over an older name that does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from rag.generation.llm import LLMClient
from rag.security import keys
from rag.services import Services
from rag.store.models import KnowledgeBase, new_id
from tests.conftest import FakeLLM, make_settings, upload, wait_document

NAME = "员工 手册"  # a name that needs URL-encoding
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/knowledge-bases/{kb_id}/search"): {"query": "年假"},
    ("post", "/v1/knowledge-bases/{kb_id}/ask"): {"question": "年假有几天？", "cache": False},
    ("post", "/v1/knowledge-bases/{kb_id}/eval"): {
        "golden": [{"id": "q1", "question": "年假", "answer_excerpt": "十天"}]
    },
    ("post", "/v1/knowledge-bases/{kb_id}/reindex"): {},
}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    cfg = make_settings(tmp_path / "data")
    svc = Services.create(
        cfg, llm=LLMClient(cfg.llm, transport=httpx.MockTransport(FakeLLM().handler))
    )
    with TestClient(create_app(services=svc, warm_up=False)) as client:
        world: dict[str, Any] = {"client": client, "services": svc}
        for tenant, name in (("acme", NAME), ("globex", "globex-kb")):
            with svc.db.write() as session:
                _, secret = keys.create(session, tenant_id=tenant, scopes=["admin"])
            client.app.state.guard.forget()  # type: ignore[attr-defined]
            auth = {"Authorization": f"Bearer {secret}"}
            kb = client.post("/v1/knowledge-bases", json={"name": name}, headers=auth).json()
            shared = client.post("/v1/knowledge-bases", json={"name": "docs"}, headers=auth)
            doc = upload(client, kb["id"], "hr.txt", "年假有十天。".encode(), headers=auth)
            client.headers.update(auth)  # wait_document sends no headers of its own
            assert wait_document(client, kb["id"], doc.json()["id"])["status"] == "ready"
            chunks = client.get(
                f"/v1/knowledge-bases/{kb['id']}/documents/{doc.json()['id']}/chunks"
            )
            world[tenant] = {
                "chunk_id": str(chunks.json()["chunks"][0]["id"]),
                "auth": auth,
                "name": name,
                "kb_id": kb["id"],
                "doc_id": doc.json()["id"],
                "docs_id": shared.json()["id"],
            }
        client.headers.pop("Authorization")
        yield world
    svc.close()


def _kb_operations(client: TestClient) -> list[tuple[str, str]]:
    """Every /v1 operation with a {kb_id} segment; deletions last, the knowledge base's own
    deletion at the very end."""
    paths = client.get("/openapi.json").json()["paths"]
    found = [
        (method, path)
        for path, item in paths.items()
        for method in item
        if path.startswith("/v1/") and "{kb_id}" in path
    ]
    return sorted(found, key=lambda op: (op[0] == "delete", op[1].endswith("{kb_id}")))


def _call(
    client: TestClient, method: str, path: str, kb: str, ids: dict[str, Any], auth: dict[str, str]
) -> httpx.Response:
    url = path.replace("{kb_id}", quote(kb, safe="")).replace("{doc_id}", ids["doc_id"])
    url = url.replace("{chunk_id}", ids["chunk_id"]).replace("{page}", "1")
    assert "{" not in url, f"a path parameter this test does not know: {path}"
    if (method, path) == ("post", "/v1/knowledge-bases/{kb_id}/documents"):
        return client.post(url, files={"file": ("more.txt", "病假另计。".encode())}, headers=auth)
    body = BODIES.get((method, path))
    if method == "post" and body is None:
        body = {}
    return client.request(method.upper(), url, json=body, headers=auth)


def test_every_kb_route_takes_the_name(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    acme, globex = world["acme"], world["globex"]
    operations = _kb_operations(client)
    assert len(operations) >= 15, operations

    # another tenant's name is not found, on every route
    for method, path in operations:
        resp = _call(client, method, path, acme["name"], globex, globex["auth"])
        assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
        assert resp.json()["error"]["code"] == "not_found"

    # the owner's name finds the knowledge base, on every route
    for method, path in operations:
        resp = _call(client, method, path, acme["name"], acme, acme["auth"])
        assert resp.status_code != 404, (method, path, resp.text)
        assert resp.status_code < 500, (method, path, resp.status_code, resp.text)
        if (method, path) == ("get", "/v1/knowledge-bases/{kb_id}"):
            assert resp.json()["id"] == acme["kb_id"]
    # the deletion by name deleted it
    gone = client.get(f"/v1/knowledge-bases/{acme['kb_id']}", headers=acme["auth"])
    assert gone.status_code == 404


def test_names_elsewhere_in_the_api(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    acme, globex = world["acme"], world["globex"]
    # "docs" exists in both tenants: each key finds its own
    for tenant in (acme, globex):
        got = client.get("/v1/knowledge-bases/docs", headers=tenant["auth"]).json()
        assert got["id"] == tenant["docs_id"]
    # a conversation, and the conversations and jobs of a knowledge base, by name
    conv = client.post("/v1/conversations", json={"kb_id": NAME}, headers=acme["auth"])
    assert conv.status_code == 201 and conv.json()["kb_id"] == acme["kb_id"]
    listed = client.get("/v1/conversations", params={"kb_id": NAME}, headers=acme["auth"])
    assert [c["id"] for c in listed.json()["conversations"]] == [conv.json()["id"]]
    jobs = client.get("/v1/jobs", params={"kb_id": NAME}, headers=acme["auth"]).json()["jobs"]
    assert jobs and {j["kb_id"] for j in jobs} == {acme["kb_id"]}
    other = client.post("/v1/conversations", json={"kb_id": NAME}, headers=globex["auth"])
    assert other.status_code == 404
    # the OpenAI-compatible model, by name and by id
    question = [{"role": "user", "content": "年假有几天？"}]
    for model in (f"kb:{NAME}", f"kb:{acme['kb_id']}"):
        chat = client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": question},
            headers=acme["auth"],
        )
        assert chat.status_code == 200, (model, chat.text)
        assert chat.json()["citations"][0]["document_id"] == acme["doc_id"]
    chat = client.post(
        "/v1/chat/completions",
        json={"model": f"kb:{NAME}", "messages": question},
        headers=globex["auth"],
    )
    assert chat.status_code == 404


def test_an_id_wins_over_a_name_like_it(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    acme = world["acme"]
    auth = acme["auth"]
    # No name may look like an id, so a segment shaped like one is never a name ...
    refused = client.post("/v1/knowledge-bases", json={"name": acme["kb_id"]}, headers=auth)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_input"
    assert "look like an id" in refused.json()["error"]["message"]
    # ... but a row named so before that rule (written here straight to SQL) loses to the id.
    impostor_id = new_id()
    with world["services"].db.write() as session:
        owner = session.get(KnowledgeBase, acme["kb_id"])
        session.add(
            KnowledgeBase(
                id=impostor_id,
                tenant_id="acme",
                name=acme["kb_id"],
                embedding_model=owner.embedding_model,
                embedding_dim=owner.embedding_dim,
            )
        )
    got = client.get(f"/v1/knowledge-bases/{acme['kb_id']}", headers=auth).json()
    assert got["id"] == acme["kb_id"] and got["name"] == NAME
    hits = client.post(
        f"/v1/knowledge-bases/{acme['kb_id']}/search", json={"query": "年假"}, headers=auth
    ).json()["results"]
    assert hits and hits[0]["document_id"] == acme["doc_id"]
    model = client.get(f"/v1/models/kb:{acme['kb_id']}", headers=auth).json()
    assert model["id"] == f"kb:{NAME}"
    # the impostor is still reachable by its own id
    assert client.get(f"/v1/knowledge-bases/{impostor_id}", headers=auth).json()["id"] == (
        impostor_id
    )
