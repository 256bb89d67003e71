"""Two tenants with canary documents: every route answers 404 for the other tenant's ids, and
search, ask and chat completions never return the other tenant's canary."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from rag.generation.llm import LLMClient
from rag.security import keys
from rag.services import Services
from tests.api.test_route_scopes import OWN_AUTH
from tests.conftest import FakeLLM, make_settings, upload, wait_document

CANARY = {
    "acme": "ACME-CANARY-7731 蓝鲸计划的预算是九百万。",
    "globex": "GLOBEX-CANARY-4410 赤狐项目",
}
# A valid body for each operation that takes one, so that 404 (not 422) is what answers.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/knowledge-bases/{kb_id}/search"): {"query": "预算"},
    ("post", "/v1/knowledge-bases/{kb_id}/ask"): {"question": "预算是多少？"},
    ("post", "/v1/knowledge-bases/{kb_id}/eval"): {
        "golden": [{"id": "q1", "question": "预算", "answer_excerpt": "九百万"}]
    },
    ("post", "/v1/knowledge-bases/{kb_id}/reindex"): {},
    ("post", "/v1/conversations"): {"kb_id": "{kb_id}"},
    ("post", "/v1/chat/completions"): {
        "model": "kb:acme-secret",
        "messages": [{"role": "user", "content": "预算是多少？"}],
    },
}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    fake = FakeLLM()
    cfg = make_settings(tmp_path / "data")
    svc = Services.create(cfg, llm=LLMClient(cfg.llm, transport=httpx.MockTransport(fake.handler)))
    with TestClient(create_app(services=svc, warm_up=False)) as client:
        world: dict[str, Any] = {"client": client, "fake": fake, "svc": svc}
        for tenant in ("acme", "globex"):
            with svc.db.write() as session:
                row, secret = keys.create(session, tenant_id=tenant, scopes=["admin"])
            client.app.state.guard.forget()  # type: ignore[attr-defined]
            auth = {"Authorization": f"Bearer {secret}"}
            name = "acme-secret" if tenant == "acme" else "globex-kb"
            kb = client.post("/v1/knowledge-bases", json={"name": name}, headers=auth).json()
            # both tenants may use the same knowledge-base name
            shared = client.post("/v1/knowledge-bases", json={"name": "docs"}, headers=auth)
            assert shared.status_code == 201, shared.text
            doc = upload(client, kb["id"], f"{tenant}.txt", CANARY[tenant].encode(), headers=auth)
            client.headers.update(auth)  # wait_document sends no headers of its own
            state = wait_document(client, kb["id"], doc.json()["id"])
            assert state["status"] == "ready", state
            upload(client, shared.json()["id"], "shared.txt", CANARY[tenant].encode(), headers=auth)
            conv = client.post("/v1/conversations", json={"kb_id": kb["id"]}, headers=auth)
            jobs = client.get("/v1/jobs", headers=auth).json()["jobs"]
            world[tenant] = {
                "auth": auth,
                "key_id": row.id,
                "kb_id": kb["id"],
                "doc_id": doc.json()["id"],
                "conversation_id": conv.json()["id"],
                "job_id": jobs[0]["id"],
                "model": "kb:acme-secret",
                "version": 1,
            }
        client.headers.pop("Authorization")  # every request below names its key
        yield world
    svc.close()


def _operations(client: TestClient) -> list[tuple[str, str]]:
    paths = client.get("/openapi.json").json()["paths"]
    return [(m, p) for p, item in paths.items() for m in item if p.startswith("/v1/")]


def test_every_route_hides_the_other_tenants_ids(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    acme, globex = world["acme"], world["globex"]
    checked = 0
    for method, path in _operations(client):
        params = set(re.findall(r"{(\w+)}", path))
        body = BODIES.get((method, path))
        if not params and body is None and not path.endswith("/documents"):
            continue  # collection routes: checked for leaks below
        if not params and "kb:acme-secret" not in str(body) and "{kb_id}" not in str(body):
            continue
        if path in OWN_AUTH:
            continue  # no API key is taken there: test_widget_api.py and test_bots_*.py
        url = path
        for name in params:
            url = url.replace("{" + name + "}", str(acme.get(name, acme["kb_id"])))
        payload = _fill(body, acme)
        if method in ("post", "put", "patch") and payload is None:
            payload = {}
        if (method, path) == ("post", "/v1/knowledge-bases/{kb_id}/documents"):
            resp = client.post(url, files={"file": ("x.txt", b"hi")}, headers=globex["auth"])
        else:
            resp = client.request(method.upper(), url, json=payload, headers=globex["auth"])
        assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
        checked += 1
    assert checked >= 15


def _fill(value: Any, ids: dict[str, Any]) -> Any:
    """The body with "{name}" placeholders replaced by the other tenant's ids."""
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, str):
        for name, known in ids.items():
            value = value.replace("{" + name + "}", str(known))
    return value


def test_collections_and_answers_never_show_the_other_tenant(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    acme, globex = world["acme"], world["globex"]
    auth = globex["auth"]
    listings = [
        client.get("/v1/knowledge-bases", headers=auth).text,
        client.get("/v1/models", headers=auth).text,
        client.get("/v1/jobs", headers=auth).text,
        client.get("/v1/conversations", headers=auth).text,
        client.get("/v1/keys", headers=auth).text,
        client.get("/v1/audit", headers=auth).text,
    ]
    for text in listings:
        for secret in (acme["kb_id"], acme["doc_id"], acme["job_id"], acme["key_id"]):
            assert secret not in text
        assert "acme-secret" not in text and "ACME-CANARY" not in text
    names = [
        kb["name"]
        for kb in client.get("/v1/knowledge-bases", headers=auth).json()["knowledge_bases"]
    ]
    assert sorted(names) == ["docs", "globex-kb"]

    fake: FakeLLM = world["fake"]
    fake.requests.clear()
    for kb_id in (globex["kb_id"],):
        hits = client.post(
            f"/v1/knowledge-bases/{kb_id}/search", json={"query": "蓝鲸计划 预算"}, headers=auth
        ).json()["results"]
        assert all("ACME" not in h["text"] for h in hits)
        client.post(
            f"/v1/knowledge-bases/{kb_id}/ask", json={"question": "蓝鲸计划预算"}, headers=auth
        )
    chat = client.post(
        "/v1/chat/completions",
        json={"model": "kb:docs", "messages": [{"role": "user", "content": "蓝鲸计划的预算？"}]},
        headers=auth,
    )
    assert chat.status_code == 200, chat.text
    assert "ACME" not in chat.text
    assert fake.requests and all("ACME-CANARY" not in str(r) for r in fake.requests)


def test_a_key_limited_to_one_knowledge_base(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    globex = world["globex"]
    svc: Services = world["svc"]
    with svc.db.write() as session:
        _, secret = keys.create(
            session, tenant_id="globex", scopes=["query"], kb_ids=[globex["kb_id"]]
        )
    auth = {"Authorization": f"Bearer {secret}"}
    kbs = client.get("/v1/knowledge-bases", headers=auth).json()["knowledge_bases"]
    assert [kb["id"] for kb in kbs] == [globex["kb_id"]]
    chat = client.post(
        "/v1/chat/completions",
        json={"model": "kb:docs", "messages": [{"role": "user", "content": "赤狐？"}]},
        headers=auth,
    )
    assert chat.status_code == 404
    url = f"/v1/knowledge-bases/{globex['kb_id']}/search"
    assert client.post(url, json={"query": "赤狐"}, headers=auth).status_code == 200
