"""Every error the API returns has one shape, {"error": {"code", "message", "details"?}}, with
the request id header: validation, malformed JSON, unknown routes, wrong methods, the limits of
the middlewares, domain errors, LLM failures and unhandled exceptions alike; and the OpenAPI
schema documents that shape on every operation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.body_limit import ENVELOPE
from api.errors import INTERNAL_MESSAGE, Error
from api.route_policy import PUBLIC, access
from rag.core.config import Settings
from rag.security import keys
from rag.services import Services
from tests.conftest import FakeLLM, upload, wait_document

SECRET = "hunter2-internal-detail"


def _failing_router() -> APIRouter:
    router = APIRouter()

    @router.get("/probe/boom", openapi_extra=access(PUBLIC))
    def boom() -> None:
        raise RuntimeError(f"database password is {SECRET}")

    return router


@pytest.fixture
def app(services: Services) -> FastAPI:
    app = create_app(services=services, warm_up=False)
    app.include_router(_failing_router())
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def kb(client: TestClient) -> str:
    kb_id: str = client.post("/v1/knowledge-bases", json={"name": "errors"}).json()["id"]
    return kb_id


def envelope(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error of a response, checked against the one shape."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers.get("x-request-id"), "every answer carries the request id"
    body = resp.json()
    assert set(body) == {"error"}, body
    Error.model_validate(body)
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, error
    assert error["message"].strip()
    assert "details" not in error or error["details"], "details only when fields are at fault"
    return error


def test_request_errors(client: TestClient, kb: str) -> None:
    search = f"/v1/knowledge-bases/{kb}/search"
    # malformed JSON: 400, not a validation error
    broken = client.post(
        search, content=b'{"query": ', headers={"content-type": "application/json"}
    )
    assert "JSON" in envelope(broken, 400, "invalid_json")["message"]

    # a field out of range: 422, with the field's location
    error = envelope(client.post(search, json={"query": "x", "top_k": 0}), 422, "validation_error")
    [detail] = error["details"]
    assert detail["field"] == "body.top_k" and detail["loc"] == ["body", "top_k"]
    assert detail["type"] == "greater_than_equal" and detail["message"]
    assert "body.top_k" in error["message"]

    # a missing field and a wrong type, both listed
    error = envelope(client.post(search, json={"top_k": "many"}), 422, "validation_error")
    assert {d["field"] for d in error["details"]} == {"body.query", "body.top_k"}

    # a query parameter
    error = envelope(
        client.get(f"/v1/knowledge-bases/{kb}/documents?limit=0"), 422, "validation_error"
    )
    assert error["details"][0]["loc"] == ["query", "limit"]

    # a domain check: 422 invalid_input, no field details
    resp = upload(client, kb, "a.txt", b"hello", data={"metadata": "{not json"})
    assert "metadata" in envelope(resp, 422, "invalid_input")["message"]


def test_an_unknown_field_is_refused_by_name(client: TestClient, kb: str) -> None:
    resp = client.post(f"/v1/knowledge-bases/{kb}/search", json={"query": "x", "topk": 1})
    error = envelope(resp, 422, "validation_error")
    assert error["details"] == [
        {
            "field": "body.topk",
            "loc": ["body", "topk"],
            "message": "unknown field 'topk'",
            "type": "extra_forbidden",
        }
    ]
    assert "topk" in error["message"]
    # every request body, not only search's
    for path, body in [
        ("/v1/knowledge-bases", {"name": "n", "colour": "red"}),
        (f"/v1/knowledge-bases/{kb}/ask", {"question": "q", "retrieval_only": True, "k": 1}),
        ("/v1/conversations", {"kb_id": kb, "topic": "x"}),
        (f"/v1/knowledge-bases/{kb}/reindex", {"chunk_size": 100}),
    ]:
        error = envelope(client.post(path, json=body), 422, "validation_error")
        assert [d["type"] for d in error["details"]] == ["extra_forbidden"], path
    # the OpenAI-compatible endpoint keeps accepting the parameters the SDKs send
    chat = client.post(
        "/v1/chat/completions",
        json={"model": "kb:nope", "messages": [{"role": "user", "content": "q"}], "top_p": 0.9},
    )
    envelope(chat, 404, "not_found")


def test_routing_errors(client: TestClient, kb: str) -> None:
    for path in ("/v1/no-such-route", "/no-such-page"):
        assert path in envelope(client.get(path), 404, "not_found")["message"]
    wrong = client.delete("/v1/knowledge-bases")
    error = envelope(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "GET, POST"  # every method the path takes
    assert "DELETE" in error["message"]
    envelope(client.get("/v1/knowledge-bases/missing"), 404, "not_found")
    envelope(client.get("/v1/jobs/missing"), 404, "not_found")
    envelope(client.post("/v1/knowledge-bases", json={"name": "errors"}), 409, "conflict")


def test_upload_limits(client: TestClient, kb: str, settings: Settings) -> None:
    settings.ingest.max_upload_bytes = 1000
    # refused by the middleware as it streams in, and by the stager after it arrived
    envelope(upload(client, kb, "big.txt", b"a" * (ENVELOPE + 2000)), 413, "payload_too_large")
    envelope(upload(client, kb, "big.txt", b"a" * 5000), 413, "payload_too_large")
    settings.ingest.max_upload_bytes = 10_000_000
    exe = upload(client, kb, "tool.exe", b"MZ\x90\x00" + b"\x00" * 100)
    envelope(exe, 415, "unsupported_media_type")


def test_key_errors(client: TestClient, app: FastAPI) -> None:
    svc: Services = app.state.services
    with svc.db.write() as session:
        _, secret = keys.create(
            session,
            tenant_id="default",
            scopes=["ingest"],
            limits=keys.KeyLimits(requests_per_minute=2),
        )
    app.state.guard.forget()
    auth = {"Authorization": f"Bearer {secret}"}
    missing = client.get("/v1/knowledge-bases")
    envelope(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    envelope(
        client.get("/v1/knowledge-bases", headers={"Authorization": "Bearer x"}),
        401,
        "unauthorized",
    )
    envelope(client.get("/v1/keys", headers=auth), 403, "forbidden")
    statuses = [client.get("/v1/knowledge-bases", headers=auth) for _ in range(3)]
    limited = statuses[-1]  # two a minute (the refusals above are not counted): the third
    envelope(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1


def test_open_mode_refuses_a_key_it_cannot_know(client: TestClient) -> None:
    """With no key on the server, a request without one is served; one that presents a key is
    refused, since no key is valid (a mistyped key must not look accepted)."""
    assert client.get("/readyz").json()["checks"]["auth"]["mode"] == "open"
    assert client.get("/v1/knowledge-bases").status_code == 200
    for token in ("bogus", "kbqa_000000000000_guess"):
        resp = client.get("/v1/knowledge-bases", headers={"Authorization": f"Bearer {token}"})
        assert "not valid" in envelope(resp, 401, "unauthorized")["message"]
    envelope(
        client.get("/v1/knowledge-bases", headers={"Authorization": "Basic eDp5"}),
        401,
        "unauthorized",
    )
    assert client.get("/healthz").status_code == 200  # public routes take no key at all


def test_an_unhandled_exception_leaks_nothing(client: TestClient) -> None:
    resp = client.get("/probe/boom", headers={"X-Request-ID": "trace-me-42"})
    error = envelope(resp, 500, "internal_error")
    assert error["message"].startswith(INTERNAL_MESSAGE) and "trace-me-42" in error["message"]
    assert resp.headers["x-request-id"] == "trace-me-42"
    assert SECRET not in resp.text and "RuntimeError" not in resp.text
    assert "Traceback" not in resp.text
    assert client.get("/healthz").status_code == 200  # and the server goes on


def test_llm_failures(client: TestClient, kb: str, fake_llm: FakeLLM) -> None:
    doc = upload(client, kb, "a.txt", "年假有十天。".encode())
    assert wait_document(client, kb, doc.json()["id"])["status"] == "ready"
    ask = f"/v1/knowledge-bases/{kb}/ask"
    question = {"question": "年假有几天？", "cache": False}
    fake_llm.fail_with = 401  # the LLM refuses our credentials
    envelope(client.post(ask, json=question), 502, "llm_bad_response")
    fake_llm.fail_with = httpx.ReadTimeout("slow")
    envelope(client.post(ask, json=question), 504, "llm_timeout")
    fake_llm.fail_with = httpx.ConnectError("connection refused")
    resp = client.post(ask, json=question)
    assert resp.status_code == 503 and int(resp.headers["retry-after"]) >= 1
    envelope(resp, 503, resp.json()["error"]["code"])
    assert resp.json()["error"]["code"] in ("llm_unavailable", "llm_circuit_open")


def test_the_schema_documents_the_envelope(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components  # FastAPI's own shape is gone
    assert components["Error"]["required"] == ["error"]
    info = components["ErrorInfo"]
    assert set(info["required"]) == {"code", "message"} and "details" in info["properties"]
    assert set(components["ErrorDetail"]["required"]) == {"field", "loc", "message", "type"}
    operations = [
        (method, path, op)
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if path.startswith("/v1/")
    ]
    assert len(operations) >= 30
    for method, path, op in operations:
        for status in ("4XX", "5XX"):
            content = op["responses"][status]["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path)
