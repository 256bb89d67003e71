"""OpenTelemetry tracing: spans for the request, retrieval, rerank, the LLM call and the
ingestion stages when an endpoint is configured; none at all when it is not."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from rag.core import tracing
from rag.core.config import TracingSettings
from rag.core.errors import ConfigError
from rag.services import Services
from tests.conftest import FakeLLM, upload, wait_document

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

TEXT = "# 年假\n\n入职满一年的员工每年享有十天带薪年假。\n\n# 报销\n\n三十天内提交。\n".encode()
ON = TracingSettings(otlp_endpoint="http://127.0.0.1:4318")


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    yield memory
    tracing.shutdown()


class Longest:
    model_name = "fake"

    def score(self, query: str, passages: list[str]) -> list[float]:
        return [float(len(p)) for p in passages]


def _ingest_and_ask(client: TestClient, services: Services) -> tuple[str, httpx.Response]:
    kb = client.post("/v1/knowledge-bases", json={"name": "hr"}).json()["id"]
    doc = upload(client, kb, "hr.md", TEXT).json()
    assert wait_document(client, kb, doc["id"])["status"] == "ready"
    services._reranker = Longest()
    services.settings.retrieval.rerank = True  # /ask has no per-request switch
    resp = client.post(
        f"/v1/knowledge-bases/{kb}/ask",
        json={"question": "年假有几天？"},
        headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )
    assert resp.status_code == 200, resp.text
    search = client.post(f"/v1/knowledge-bases/{kb}/search", json={"query": "年假", "rerank": True})
    assert search.status_code == 200
    return kb, resp


def test_spans_cover_request_retrieval_llm_and_ingestion(
    client: TestClient,
    services: Services,
    fake_llm: FakeLLM,
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert tracing.configure(ON, exporter=exporter)
    sent: list[httpx.Request] = []
    handler = fake_llm.handler

    def recording(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return handler(request)

    services.llm._transport = httpx.MockTransport(recording)
    services.llm._ahttp = None  # rebuilt on next use, with the recording transport
    caplog.set_level(logging.DEBUG, logger="rag.generation.llm")
    _ingest_and_ask(client, services)
    spans = exporter.get_finished_spans()
    names = {s.name for s in spans}
    for stage in ("parse", "chunk", "embed", "store", "index"):
        assert f"ingest.{stage}" in names, names
    assert {"POST /v1/knowledge-bases/{kb_id}/ask", "retrieve", "rerank", "prompt"} <= names
    assert "llm.complete" in names

    # One trace per request, continuing the caller's: retrieve and the LLM call are children.
    ask = next(s for s in spans if s.name == "POST /v1/knowledge-bases/{kb_id}/ask")
    trace_id = 0x0AF7651916CD43DD8448EB211C80319C
    assert ask.context.trace_id == trace_id
    assert ask.attributes is not None and ask.attributes["http.response.status_code"] == 200
    in_ask = [s for s in spans if s.context.trace_id == trace_id]
    assert {"retrieve", "rerank", "prompt", "llm.complete"} <= {s.name for s in in_ask}
    llm = next(s for s in in_ask if s.name == "llm.complete")
    assert llm.parent is not None and llm.parent.span_id == ask.context.span_id
    # The upstream gets the trace context, so vLLM's spans join the same trace.
    chat = [r for r in sent if r.url.path.endswith("/chat/completions")]
    assert chat and chat[-1].headers["traceparent"].startswith(f"00-{trace_id:032x}-")
    # Log records made inside a span carry its trace id.
    answered = [
        r for r in caplog.records if r.name == "rag.generation.llm" and "answered" in r.message
    ]
    assert answered and getattr(answered[-1], "trace_id", None) == f"{trace_id:032x}"


def test_streamed_answer_span_ends_with_the_stream(
    client: TestClient, services: Services, exporter: InMemorySpanExporter
) -> None:
    assert tracing.configure(ON, exporter=exporter)
    kb = client.post("/v1/knowledge-bases", json={"name": "hr"}).json()["id"]
    doc = upload(client, kb, "hr.md", TEXT).json()
    assert wait_document(client, kb, doc["id"])["status"] == "ready"
    body = {"question": "报销？", "stream": True}
    with client.stream("POST", f"/v1/knowledge-bases/{kb}/ask", json=body) as resp:
        assert "event: done" in resp.read().decode()
    stream = [s for s in exporter.get_finished_spans() if s.name == "llm.stream"]
    assert len(stream) == 1 and stream[0].attributes is not None
    assert stream[0].attributes["llm.completion_tokens"] > 0


def test_no_spans_without_an_endpoint(
    client: TestClient, services: Services, exporter: InMemorySpanExporter
) -> None:
    assert tracing.configure(TracingSettings(), exporter=exporter) is False
    assert not tracing.enabled()
    _ingest_and_ask(client, services)
    assert exporter.get_finished_spans() == ()
    headers: dict[str, str] = {}
    tracing.inject(headers)
    assert headers == {}  # nothing sent upstream either


def test_an_endpoint_without_the_sdk_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(ConfigError, match="otel"):
        tracing.configure(ON)
    assert not tracing.enabled()


def test_the_otlp_url_gets_the_traces_path() -> None:
    assert tracing._traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert tracing._traces_url("http://c:4318/v1/traces/") == "http://c:4318/v1/traces"
    with pytest.raises(ValueError):
        TracingSettings(otlp_endpoint="collector:4318")
