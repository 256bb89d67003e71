"""Metrics (present and moving after an ingest and an ask), LLM failure kinds, JSON logs, and
the Grafana dashboard querying only metrics the service exports."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from rag.core import log_setup, request_context
from rag.core.config import LLMSettings
from rag.core.errors import LLMError
from rag.generation.llm import LLMClient
from rag.services import Services
from tests.conftest import REPO, FakeLLM, make_settings, upload, wait_document

DASHBOARD = REPO / "deploy" / "grafana" / "kbqa-dashboard.json"
ASK_ROUTE = "/v1/knowledge-bases/{kb_id}/ask"
TEXT = (
    "# 员工手册\n\n入职满一年的员工每年享有十天带薪年假。\n\n"
    "# 报销\n\n差旅费用在出差结束后三十天内提交报销。\n"
).encode()

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> Samples:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def exported_names(text: str) -> set[str]:
    """Every series name /metrics can carry, from its TYPE lines (a labelled metric that has
    not been used yet has a TYPE line but no samples)."""
    suffixes = {
        "counter": ("",),  # the TYPE line names a counter with its _total
        "histogram": ("_bucket", "_count", "_sum"),
        "gauge": ("",),
    }
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names.update(name + suffix for suffix in suffixes.get(kind, ("",)))
    return names


class PrefersLonger:
    model_name = "fake-reranker"

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        return [float(len(p)) for p in passages]


@pytest.fixture
def ready_kb(client: TestClient) -> str:
    kb = client.post("/v1/knowledge-bases", json={"name": "handbook"}).json()["id"]
    resp = upload(client, kb, "handbook.md", TEXT)
    assert resp.status_code == 202, resp.text
    assert wait_document(client, kb, resp.json()["id"])["status"] == "ready"
    return kb


def test_metrics_move_after_an_ingest_and_an_ask(
    client: TestClient, services: Services, fake_llm: FakeLLM
) -> None:
    before = scrape(client)
    kb = client.post("/v1/knowledge-bases", json={"name": "handbook"}).json()["id"]
    doc = upload(client, kb, "handbook.md", TEXT).json()
    assert wait_document(client, kb, doc["id"])["status"] == "ready"
    ask = f"/v1/knowledge-bases/{kb}/ask"
    assert client.post(ask, json={"question": "年假有多少天？"}).status_code == 200
    with client.stream("POST", ask, json={"question": "报销期限？", "stream": True}) as resp:
        assert resp.status_code == 200 and "event: done" in resp.read().decode()
    services._reranker = PrefersLonger()
    search = client.post(f"/v1/knowledge-bases/{kb}/search", json={"query": "年假", "rerank": True})
    assert search.status_code == 200
    fake_llm.fail_with = 400  # not retried: one failure of kind http_400
    assert client.post(ask, json={"question": "年假？"}).status_code >= 400
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    for stage in ("parse", "chunk", "embed", "store", "index"):
        assert moved("rag_ingest_stage_duration_seconds_count", stage=stage) >= 1, stage
    assert moved("rag_documents_ingested_total", status="ready") >= 1
    assert value(after, "rag_documents", status="ready") == 1
    assert value(after, "rag_documents", status="queued") == 0
    assert ("rag_job_queue_depth", frozenset({("kind", "ingest")})) in after
    assert ("rag_ingest_pipeline_queue_depth", frozenset({("queue", "embed")})) in after
    assert moved("rag_retrieval_duration_seconds_count") >= 3
    assert moved("rag_rerank_duration_seconds_count") == 1
    # Whole answer: tokens/s from the server's usage; stream: time to first token.
    assert moved("rag_llm_time_to_first_token_seconds_count", route="default") == 1
    assert moved("rag_llm_generation_tokens_per_second_count", route="default") >= 1
    assert moved("rag_llm_completion_tokens_total", route="default") >= 10
    assert moved("rag_llm_duration_seconds_count") >= 2
    assert moved("rag_llm_errors_total", kind="http_400") == 1
    assert moved("rag_http_stream_first_event_seconds_count", route=ASK_ROUTE) == 1
    assert moved("rag_http_requests_total", method="POST", route=ASK_ROUTE, status="200") == 2
    assert moved("rag_http_request_duration_seconds_count", method="POST", route=ASK_ROUTE) == 3


def test_queue_depth_counts_jobs_until_a_worker_takes_them(services: Services) -> None:
    with TestClient(create_app(services=services, start_worker=False)) as client:
        kb = client.post("/v1/knowledge-bases", json={"name": "queued"}).json()["id"]
        for n in range(2):
            assert upload(client, kb, f"doc{n}.md", TEXT + bytes([65 + n])).status_code == 202
        queued = scrape(client)
        assert value(queued, "rag_job_queue_depth", kind="ingest") == 2
        assert value(queued, "rag_documents", status="queued") == 2
        worker = services.worker()
        while worker.run_once():
            pass
        drained = scrape(client)
        assert value(drained, "rag_job_queue_depth", kind="ingest") == 0
        assert value(drained, "rag_jobs_running", kind="ingest") == 0
        assert value(drained, "rag_documents", status="ready") == 2


# --- the LLM client: time to first token, tokens/s, failures by kind ----------------------------


def _chunk(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"delta": {"content": text}}]}).encode() + b"\n\n"


class _Paced(httpx.AsyncByteStream):
    """An SSE body whose pieces arrive apart, as a real stream's do."""

    def __init__(self, pieces: list[bytes], gap_s: float) -> None:
        self._pieces = pieces
        self._gap_s = gap_s

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            await asyncio.sleep(self._gap_s)
            yield piece


def _client(handler: Callable[[httpx.Request], Any], **settings: Any) -> LLMClient:
    cfg = LLMSettings(max_retries=0, breaker_failures=0, **settings)
    return LLMClient(cfg, transport=httpx.MockTransport(handler), name="test-route")


def _metric(name: str, labels: dict[str, str]) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_stream_observes_time_to_first_token_and_tokens_per_second() -> None:
    pieces = [_chunk(f"t{i} ") for i in range(10)] + [b"data: [DONE]\n\n"]

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, stream=_Paced(pieces, 0.02))

    route = {"route": "test-route"}
    ttft = _metric("rag_llm_time_to_first_token_seconds_count", route)
    tps_count = _metric("rag_llm_generation_tokens_per_second_count", route)
    tps_sum = _metric("rag_llm_generation_tokens_per_second_sum", route)
    tokens = _metric("rag_llm_completion_tokens_total", route)

    async def run() -> str:
        stream = await _client(handler).stream([{"role": "user", "content": "hi"}])
        return "".join([d async for d in stream.deltas()])

    assert asyncio.run(run()).startswith("t0 t1")
    assert _metric("rag_llm_time_to_first_token_seconds_count", route) == ttft + 1
    assert _metric("rag_llm_generation_tokens_per_second_count", route) == tps_count + 1
    assert _metric("rag_llm_completion_tokens_total", route) == tokens + 10
    # 9 tokens after the first, at least 20 ms apart: at most 50 tokens/s (less when the
    # machine is busy), never the burst rate of a stream read in one piece.
    speed = _metric("rag_llm_generation_tokens_per_second_sum", route) - tps_sum
    assert 0 < speed < 60


def _sse(*payloads: bytes) -> httpx.Response:
    return _sse_stream(httpx.ByteStream(b"".join(payloads)))


def _sse_stream(body: httpx.AsyncByteStream | httpx.ByteStream) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)


class _BreaksOff(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield _chunk("partial ")
        raise httpx.ReadError("connection reset")


def _raises(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


# kind -> (upstream, streamed?)
FAILURES: dict[str, tuple[Callable[[httpx.Request], httpx.Response], bool]] = {
    "unreachable": (_raises(httpx.ConnectError("refused")), False),
    "connect_timeout": (_raises(httpx.ConnectTimeout("slow")), False),
    "timeout": (_raises(httpx.ReadTimeout("slow")), False),
    "http_503": (lambda r: httpx.Response(503, text="overloaded"), False),
    "http_500": (lambda r: httpx.Response(500, text="boom"), False),
    "bad_response": (lambda r: httpx.Response(200, text="not json"), False),
    "stream_error": (lambda r: _sse(_chunk("a"), b'data: {"error": "OOM"}\n\n'), True),
    "stream_broken": (lambda r: _sse_stream(_BreaksOff()), True),
}


@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_every_llm_failure_is_counted_by_kind(kind: str) -> None:
    handler, stream = FAILURES[kind]
    client = _client(handler)
    before = _metric("rag_llm_errors_total", {"kind": kind})

    async def run() -> None:
        messages = [{"role": "user", "content": "hi"}]
        if stream:
            live = await client.stream(messages)
            async for _ in live.deltas():
                pass
        else:
            await client.complete(messages)

    with pytest.raises(LLMError):
        asyncio.run(run())
    assert _metric("rag_llm_errors_total", {"kind": kind}) == before + 1


def test_stream_read_timeout_and_open_circuit_are_counted() -> None:
    class Stalls(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield _chunk("a")
            raise httpx.ReadTimeout("no token in time")

    def stalls(request: httpx.Request) -> httpx.Response:
        return _sse_stream(Stalls())

    before = _metric("rag_llm_errors_total", {"kind": "stream_timeout"})
    client = _client(stalls)

    async def consume() -> None:
        live = await client.stream([{"role": "user", "content": "hi"}])
        async for _ in live.deltas():
            pass

    with pytest.raises(LLMError):
        asyncio.run(consume())
    assert _metric("rag_llm_errors_total", {"kind": "stream_timeout"}) == before + 1

    cfg = LLMSettings(max_retries=0, breaker_failures=1, breaker_reset_s=60)
    refused = LLMClient(cfg, transport=httpx.MockTransport(lambda r: httpx.Response(502)))
    opened = _metric("rag_llm_errors_total", {"kind": "circuit_open"})
    for _ in range(2):  # the first failure opens the circuit, the second call is refused by it
        with pytest.raises(LLMError):
            asyncio.run(refused.complete([{"role": "user", "content": "hi"}]))
    assert _metric("rag_llm_errors_total", {"kind": "circuit_open"}) == opened + 1


# --- logs ---------------------------------------------------------------------------------------


def test_json_logs_carry_the_request_id_extras_and_exceptions(tmp_path: Path) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        log_setup.configure(make_settings(tmp_path, log={"format": "json"}), stream=stream)
        log = logging.getLogger("kbqa.test")
        with request_context.bound("req-42"):
            log.info("answered %s", "年假", extra={"kb_id": "kb1", "tokens": 12})
            try:
                raise ValueError("broken")
            except ValueError:
                log.exception("failed")
        log.warning("outside")
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    ours = [entry for entry in lines if entry["logger"] == "kbqa.test"]
    assert [e["message"] for e in ours] == ["answered 年假", "failed", "outside"]
    first, failed, outside = ours
    assert first["request_id"] == "req-42" and first["level"] == "INFO"
    assert first["kb_id"] == "kb1" and first["tokens"] == 12
    assert failed["request_id"] == "req-42" and "ValueError: broken" in failed["exc_info"]
    assert "request_id" not in outside


def test_text_logs_show_the_request_id() -> None:
    log_setup.install_record_factory()
    formatter = log_setup.TextFormatter()
    with request_context.bound("abc-1"):
        inside = logging.getLogger("kbqa.test").makeRecord(
            "kbqa.test", logging.INFO, __file__, 1, "hello", (), None
        )
    assert formatter.format(inside).endswith("kbqa.test [abc-1]: hello")


def test_log_settings_default_to_the_old_level_variable(tmp_path: Path) -> None:
    assert log_setup.level_of(make_settings(tmp_path, log_level="WARNING")) == "WARNING"
    both = make_settings(tmp_path, log_level="WARNING", log={"level": "DEBUG"})
    assert log_setup.level_of(both) == "DEBUG"


# --- the Grafana dashboard ------------------------------------------------------------------------


def _dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    exprs = [
        target["expr"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert exprs
    return exprs


def test_dashboard_queries_only_exported_metrics_and_covers_them(
    client: TestClient, ready_kb: str
) -> None:
    assert client.post(
        f"/v1/knowledge-bases/{ready_kb}/ask", json={"question": "年假？"}
    ).is_success
    exported = exported_names(client.get("/metrics").text)
    queried = {name for expr in _dashboard_queries() for name in re.findall(r"\brag_\w+", expr)}
    assert queried - exported == set(), "the dashboard queries metrics nobody exports"
    wanted = {
        "rag_ingest_stage_duration_seconds_bucket",
        "rag_retrieval_duration_seconds_bucket",
        "rag_rerank_duration_seconds_bucket",
        "rag_llm_time_to_first_token_seconds_bucket",
        "rag_http_stream_first_event_seconds_bucket",
        "rag_llm_generation_tokens_per_second_bucket",
        "rag_llm_completion_tokens_total",
        "rag_llm_errors_total",
        "rag_job_queue_depth",
        "rag_jobs_running",
        "rag_ingest_pipeline_queue_depth",
        "rag_documents",
        "rag_answer_cache_requests_total",
        "rag_http_requests_total",
        "rag_http_request_duration_seconds_bucket",
        "rag_documents_ingested_total",
        "rag_upstream_kv_cache_usage_ratio",
        "rag_upstream_requests_waiting",
        "rag_upstream_generation_tokens_total",
        "rag_upstream_preemptions_total",
        "rag_gpu_utilization_ratio",
        "rag_gpu_memory_used_bytes",
        "rag_route_decisions_total",
    }
    assert wanted - queried == set(), "metrics the dashboard does not chart"
