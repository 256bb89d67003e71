"""schemathesis against the OpenAPI schema: generated requests to every operation never get a
5xx, and responses with a documented status match their documented schema.

The requests go through a TestClient whose lifespan is running (services, worker, auth guard),
so the operations are driven here rather than by schemathesis's own ASGI transport.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from api.app import create_app
from rag.services import Services

_HTTPX_ARGS = {"method", "url", "params", "headers", "json", "data", "files", "content", "cookies"}


def test_no_server_errors_and_documented_shapes(services: Services) -> None:
    app = create_app(services=services, warm_up=False)
    with TestClient(app) as client:
        kb = client.post("/v1/knowledge-bases", json={"name": "fuzz"}).json()["id"]
        client.post(
            f"/v1/knowledge-bases/{kb}/documents",
            files={"file": ("a.txt", "模式测试文档。".encode())},
        )
        schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 20
        calls = [_fuzz(client, operation) for operation in operations]
        assert min(calls) >= 1 and sum(calls) >= 10 * len(operations), calls


def _fuzz(client: TestClient, operation: Any) -> int:
    calls = 0

    @settings(
        max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        nonlocal calls
        calls += 1
        kwargs = case.as_transport_kwargs(base_url="http://testserver")
        request = {k: v for k, v in kwargs.items() if k in _HTTPX_ARGS}
        if request.get("files"):  # generated parts may be numbers or null: send their text
            request["files"] = [
                (name, (filename, v if isinstance(v, str | bytes) else str(v)))
                for name, (filename, v, *_) in request["files"]
            ]
        response = client.request(**request)
        response.request.read()  # multipart bodies are streamed; the report wants the bytes
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    try:
        run()
    except Exception as exc:
        pytest.fail(f"{operation.method.upper()} {operation.path}: {exc}")
    return calls
