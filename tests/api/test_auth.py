"""API keys, scopes, open/locked modes, per-key limits and the audit log, through the API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from rag.cli.main import app as cli_app
from rag.generation.llm import LLMClient
from rag.security import keys
from rag.services import Services
from tests.conftest import REDIS_URL, FakeLLM, make_settings, redis_reason, upload, wait_for

Factory = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Factory]:
    """Apps over one data dir; several may run at once (like replicas)."""
    opened: list[tuple[TestClient, Services]] = []

    def build(**settings: Any) -> TestClient:
        cfg = make_settings(tmp_path / "data", **settings)
        llm = LLMClient(cfg.llm, transport=httpx.MockTransport(FakeLLM().handler))
        svc = Services.create(cfg, llm=llm)
        client = TestClient(create_app(services=svc, warm_up=False))
        client.__enter__()
        opened.append((client, svc))
        return client

    yield build
    for client, svc in opened:
        client.__exit__(None, None, None)
        svc.close()


def _key(client: TestClient, scopes: list[str], **kw: Any) -> str:
    svc: Services = client.app.state.services  # type: ignore[attr-defined]
    with svc.db.write() as session:
        _, secret = keys.create(
            session,
            tenant_id=kw.pop("tenant_id", "default"),
            scopes=scopes,
            expires_in=kw.pop("expires_in", None),
            limits=keys.KeyLimits(**kw),
        )
    client.app.state.guard.forget()  # type: ignore[attr-defined]
    return secret


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_loopback_without_keys_is_open_and_says_so(make_client: Factory) -> None:
    client = make_client()
    assert client.post("/v1/knowledge-bases", json={"name": "kb"}).status_code == 201
    ready = client.get("/readyz").json()
    assert ready["checks"]["auth"]["mode"] == "open"


def test_beyond_loopback_a_key_is_always_required(make_client: Factory) -> None:
    client = make_client(host="0.0.0.0")
    resp = client.get("/v1/knowledge-bases")
    assert resp.status_code == 401 and "rag keys create" in resp.json()["error"]["message"]
    assert resp.headers["www-authenticate"] == "Bearer"
    assert client.get("/readyz").json()["checks"]["auth"]["mode"] == "locked"
    assert client.get("/healthz").status_code == 200  # probes stay open
    secret = _key(client, ["admin"])
    assert client.get("/v1/knowledge-bases", headers=_auth(secret)).status_code == 200


def test_wrong_expired_and_revoked_keys_are_401(make_client: Factory) -> None:
    client = make_client()
    good = _key(client, ["admin"])
    assert client.get("/v1/knowledge-bases").status_code == 401  # keys exist: no more open mode
    for header in (
        {"Authorization": "Bearer kbqa_000000000000_nope"},
        {"Authorization": good[:-2] + "xx"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        _auth(good[:-2] + "xx"),
    ):
        assert client.get("/v1/knowledge-bases", headers=header).status_code == 401, header
    expired = _key(client, ["admin"], expires_in=timedelta(seconds=-1))
    resp = client.get("/v1/knowledge-bases", headers=_auth(expired))
    assert resp.status_code == 401 and "expired" in resp.json()["error"]["message"]

    made = client.post("/v1/keys", json={"scopes": ["query"]}, headers=_auth(good)).json()
    assert client.get("/v1/knowledge-bases", headers=_auth(made["key"])).status_code == 200
    assert client.delete(f"/v1/keys/{made['id']}", headers=_auth(good)).status_code == 204
    resp = client.get("/v1/knowledge-bases", headers=_auth(made["key"]))
    assert resp.status_code == 401 and "revoked" in resp.json()["error"]["message"]


def test_scopes(make_client: Factory) -> None:
    client = make_client()
    admin, ingest, query = (_key(client, [s]) for s in ("admin", "ingest", "query"))
    kb = client.post("/v1/knowledge-bases", json={"name": "kb"}, headers=_auth(admin)).json()
    kb_id = kb["id"]
    # query keys read and ask, but do not write documents or administer
    assert upload(client, kb_id, "a.txt", b"hello", headers=_auth(query)).status_code == 403
    resp = client.post("/v1/knowledge-bases", json={"name": "x"}, headers=_auth(query))
    assert resp.status_code == 403 and "admin" in resp.json()["error"]["message"]
    assert client.get("/v1/keys", headers=_auth(query)).status_code == 403
    assert client.get(f"/v1/knowledge-bases/{kb_id}", headers=_auth(query)).status_code == 200
    search = {"query": "hello"}
    url = f"/v1/knowledge-bases/{kb_id}/search"
    assert client.post(url, json=search, headers=_auth(query)).status_code == 200
    # ingest keys upload but do not search
    assert upload(client, kb_id, "a.txt", b"hello", headers=_auth(ingest)).status_code == 202
    assert client.post(url, json=search, headers=_auth(ingest)).status_code == 403
    assert client.delete(f"/v1/knowledge-bases/{kb_id}", headers=_auth(ingest)).status_code == 403
    # an unknown route under /v1 needs admin: new routes are closed until classified
    assert client.post("/v1/not-a-route", headers=_auth(query)).status_code == 403


def test_api_keys_are_shown_once_and_managed_per_tenant(make_client: Factory) -> None:
    client = make_client()
    admin = _key(client, ["admin"], tenant_id="acme")
    other = _key(client, ["admin"], tenant_id="globex")
    # the tenant comes from the key, never from the body: a tenant_id there is refused
    spoofed = client.post(
        "/v1/keys",
        json={"name": "helpdesk", "scopes": ["query"], "tenant_id": "globex"},
        headers=_auth(admin),
    )
    assert spoofed.status_code == 422
    assert spoofed.json()["error"]["details"][0]["field"] == "body.tenant_id"
    made = client.post(
        "/v1/keys", json={"name": "helpdesk", "scopes": ["query"]}, headers=_auth(admin)
    ).json()
    assert made["tenant_id"] == "acme"
    assert made["key"].startswith(f"kbqa_{made['id']}_")
    listed = client.get("/v1/keys", headers=_auth(admin)).json()["keys"]
    assert {k["id"] for k in listed} >= {made["id"]}
    assert all("key" not in k and "secret_sha256" not in k for k in listed)
    assert all(k["tenant_id"] == "acme" for k in listed)
    assert client.delete(f"/v1/keys/{made['id']}", headers=_auth(other)).status_code == 404
    bad = client.post("/v1/keys", json={"scopes": ["root"]}, headers=_auth(admin))
    assert bad.status_code == 422

    events = client.get("/v1/audit", headers=_auth(admin)).json()["events"]
    assert [e["action"] for e in events][:1] == ["key.create"]
    assert events[0]["actor"].startswith("key:") and events[0]["target"] == made["id"]
    assert all(e["tenant_id"] == "acme" for e in events)
    assert made["key"].split("_", 2)[2] not in str(events)  # the secret is never logged


def test_request_rate_limit_is_429_with_retry_after(make_client: Factory) -> None:
    client = make_client()
    secret = _key(client, ["query"], requests_per_minute=3)
    statuses = [
        client.get("/v1/knowledge-bases", headers=_auth(secret)).status_code for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    resp = client.get("/v1/knowledge-bases", headers=_auth(secret))
    assert resp.status_code == 429 and 1 <= int(resp.headers["retry-after"]) <= 20
    other = _key(client, ["query"], requests_per_minute=3)  # limits are per key
    assert client.get("/v1/knowledge-bases", headers=_auth(other)).status_code == 200


def test_rate_limit_is_shared_by_replicas_through_redis(make_client: Factory) -> None:
    reason = redis_reason()
    if reason:
        pytest.skip(reason)
    prefix_db = f"{REDIS_URL.rsplit('/', 1)[0]}/14"  # a database of its own, flushed below
    first = make_client(security={"redis_url": prefix_db})
    second = make_client(security={"redis_url": prefix_db})
    first.app.state.guard.limiter._client.flushdb()  # type: ignore[attr-defined]
    secret = _key(first, ["query"], requests_per_minute=4)
    second.app.state.guard.forget()  # type: ignore[attr-defined]
    got = [
        c.get("/v1/knowledge-bases", headers=_auth(secret)).status_code
        for c in (first, second, first, second, first, second)
    ]
    assert got == [200, 200, 200, 200, 429, 429]
    assert second.get("/readyz").json()["checks"]["auth"]["limits"] == "RedisLimiter"


def test_concurrent_generations_per_key(make_client: Factory) -> None:
    client = make_client()
    secret = _key(client, ["admin"], concurrent_generations=1)
    kb_id = client.post("/v1/knowledge-bases", json={"name": "kb"}, headers=_auth(secret)).json()
    # A ready document: a knowledge base with none is refused before any generation (409).
    doc = upload(
        client, kb_id["id"], "leave.txt", "年假十天。".encode() * 20, headers=_auth(secret)
    )
    doc_url = f"/v1/knowledge-bases/{kb_id['id']}/documents/{doc.json()['id']}"
    wait_for(lambda: client.get(doc_url, headers=_auth(secret)).json()["status"] == "ready")
    guard = client.app.state.guard  # type: ignore[attr-defined]
    key_id = secret.split("_", 2)[1]
    held = guard.limiter.acquire(key_id, 1, 60)  # another answer for this key is running
    assert held is not None
    url = f"/v1/knowledge-bases/{kb_id['id']}/ask"
    resp = client.post(url, json={"question": "你好"}, headers=_auth(secret))
    assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
    assert "at a time" in resp.json()["error"]["message"]
    guard.limiter.release(key_id, held)
    assert client.post(url, json={"question": "你好"}, headers=_auth(secret)).status_code == 200
    # the slot of a finished answer is free again
    assert client.post(url, json={"question": "你好"}, headers=_auth(secret)).status_code == 200


def test_upload_bytes_per_day(make_client: Factory) -> None:
    client = make_client()
    secret = _key(client, ["admin"], upload_bytes_per_day=2000)
    kb = client.post("/v1/knowledge-bases", json={"name": "kb"}, headers=_auth(secret)).json()
    body = "每日上传配额测试。".encode() * 45  # 1215 bytes: the second upload is over 2000
    first = upload(client, kb["id"], "a.txt", body, headers=_auth(secret))
    assert first.status_code == 202
    second = upload(client, kb["id"], "b.txt", body + b"!", headers=_auth(secret))
    assert second.status_code == 429 and int(second.headers["retry-after"]) > 0
    assert "per day" in second.json()["error"]["message"]


def test_cli_creates_lists_and_revokes(
    make_client: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client()
    svc: Services = client.app.state.services  # type: ignore[attr-defined]
    monkeypatch.setenv("RAG_DATA_DIR", str(svc.settings.data_dir))
    runner = CliRunner()
    made = runner.invoke(cli_app, ["keys", "create", "--tenant", "acme", "--scopes", "query"])
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip().splitlines()[-1]
    client.app.state.guard.forget()  # type: ignore[attr-defined]
    assert client.get("/v1/knowledge-bases", headers=_auth(secret)).status_code == 200
    listed = runner.invoke(cli_app, ["keys", "list", "--tenant", "acme"])
    assert secret.split("_", 2)[1] in listed.stdout and secret.split("_", 2)[2] not in listed.stdout
    revoked = runner.invoke(cli_app, ["keys", "revoke", secret.split("_", 2)[1], "--yes"])
    assert revoked.exit_code == 0
    client.app.state.guard.forget()  # type: ignore[attr-defined]
    assert client.get("/v1/knowledge-bases", headers=_auth(secret)).status_code == 401
    # revoking the last key does not re-open the API
    assert client.get("/v1/knowledge-bases").status_code == 401
    bad = runner.invoke(cli_app, ["keys", "create", "--scopes", "root"])
    assert bad.exit_code == 1 and "scopes" in bad.output
