"""The LLM servers' metrics and the GPU on our /metrics: recorded vLLM payloads, a fake NVML, and
a scrape that never fails or waits for a server that does not answer."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from rag.core.config import LLMRoute, LLMSettings
from rag.generation.upstream_metrics import (
    Upstream,
    UpstreamCollector,
    metrics_url,
    parse_vllm,
    upstreams_of,
)
from rag.services import Services

PAYLOADS = Path(__file__).resolve().parents[1] / "fixtures" / "vllm_metrics"


def samples(collector: UpstreamCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[Any, float], metric: str, /, **labels: str) -> float:
    return found[(metric, tuple(sorted(labels.items())))]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("v1.txt", (0.4375, 7, 2, 1_834_512, 245_760, 3)),
        ("v0.txt", (0.0125, 1, 0, 5_120, 833, 0)),  # gpu_cache_usage_perc, *_created samples
    ],
)
def test_recorded_vllm_payloads_parse(payload: str, expected: tuple[float, ...]) -> None:
    gauges, counters = parse_vllm((PAYLOADS / payload).read_text())
    assert (
        gauges["rag_upstream_kv_cache_usage_ratio"],
        gauges["rag_upstream_requests_running"],
        gauges["rag_upstream_requests_waiting"],
        counters["rag_upstream_prompt_tokens"],
        counters["rag_upstream_generation_tokens"],
        counters["rag_upstream_preemptions"],
    ) == expected


def test_engines_combine_and_foreign_payloads_give_nothing() -> None:
    two_engines = (
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0"} 3\nvllm:num_requests_running{engine="1"} 4\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{engine="0"} 0.2\nvllm:kv_cache_usage_perc{engine="1"} 0.9\n'
    )
    gauges, _ = parse_vllm(two_engines)
    assert gauges == {
        "rag_upstream_requests_running": 7,  # summed
        "rag_upstream_kv_cache_usage_ratio": 0.9,  # the fullest engine
    }
    assert parse_vllm("# TYPE llamacpp:tokens_predicted_total counter\n") == ({}, {})


def test_routes_sharing_a_server_share_one_series() -> None:
    settings = LLMSettings(
        base_url="http://vllm:8000/v1",
        routes=[
            LLMRoute(name="code", model="coder", preset="code"),  # the default's server
            LLMRoute(name="math", model="m", preset="math", base_url="http://gpu3:9000/v1"),
        ],
    )
    found = upstreams_of(settings)
    assert [(u.url, u.label) for u in found] == [
        ("http://vllm:8000/metrics", "default,code"),
        ("http://gpu3:9000/metrics", "math"),
    ]
    assert metrics_url("http://ollama:11434") == "http://ollama:11434/metrics"


class FakeNvml:
    """pynvml's functions for two GPUs; the second fails its utilisation query once asked to."""

    def __init__(self, *, broken: bool = False) -> None:
        self.broken = broken

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes | str:
        return b"NVIDIA GeForce RTX 4090" if handle == 0 else "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        if self.broken and handle == 1:
            raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
        return SimpleNamespace(gpu=[87, 3][handle], memory=40)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        total = [24 * 1024**3, 80 * 1024**3][handle]
        return SimpleNamespace(total=total, used=total // 2, free=total // 2)


def _serving(payload: str) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/metrics":
            return httpx.Response(200, text=(PAYLOADS / payload).read_text())
        return httpx.Response(404)

    return httpx.MockTransport(handler)


def test_our_metrics_carry_vllm_and_the_gpus_with_the_route_as_label() -> None:
    upstream = Upstream("http://vllm:8000/metrics", ["default", "code"])
    found = samples(UpstreamCollector([upstream], nvml=FakeNvml(), transport=_serving("v1.txt")))
    route = {"route": "default,code"}
    assert value(found, "rag_upstream_up", **route) == 1
    assert value(found, "rag_upstream_kv_cache_usage_ratio", **route) == 0.4375
    assert value(found, "rag_upstream_requests_running", **route) == 7
    assert value(found, "rag_upstream_requests_waiting", **route) == 2
    assert value(found, "rag_upstream_prompt_tokens_total", **route) == 1_834_512
    assert value(found, "rag_upstream_generation_tokens_total", **route) == 245_760
    assert value(found, "rag_upstream_preemptions_total", **route) == 3
    gpu0 = {"gpu": "0", "name": "NVIDIA GeForce RTX 4090"}
    gpu1 = {"gpu": "1", "name": "NVIDIA H100 80GB HBM3"}
    assert value(found, "rag_gpu_utilization_ratio", **gpu0) == 0.87
    assert value(found, "rag_gpu_utilization_ratio", **gpu1) == 0.03
    assert value(found, "rag_gpu_memory_total_bytes", **gpu1) == 80 * 1024**3
    assert value(found, "rag_gpu_memory_used_bytes", **gpu0) == 12 * 1024**3


def test_a_server_that_is_down_or_not_vllm_reports_up_0() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    down = samples(
        UpstreamCollector(
            [Upstream("http://vllm:8000/metrics", ["default"])],
            transport=httpx.MockTransport(refuse),
        )
    )
    assert value(down, "rag_upstream_up", route="default") == 0
    assert not [k for k in down if k[0] == "rag_upstream_kv_cache_usage_ratio"]
    ollama = samples(
        UpstreamCollector(
            [Upstream("http://ollama:11434/metrics", ["default"])],
            transport=httpx.MockTransport(lambda request: httpx.Response(404)),
        )
    )
    assert value(ollama, "rag_upstream_up", route="default") == 0


def test_a_slow_server_costs_the_scrape_the_timeout_not_more() -> None:
    release = threading.Event()

    def stall(request: httpx.Request) -> httpx.Response:
        release.wait(10)  # a MockTransport ignores httpx's timeouts: the collector's own wait
        return httpx.Response(200, text=(PAYLOADS / "v1.txt").read_text())

    slow = Upstream("http://slow:8000/metrics", ["slow"])
    fast = Upstream("http://fast:8000/metrics", ["fast"])

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == "slow":
            return stall(request)
        return httpx.Response(200, text=(PAYLOADS / "v0.txt").read_text())

    collector = UpstreamCollector([slow, fast], timeout_s=0.2, transport=httpx.MockTransport(route))
    started = time.perf_counter()
    found = samples(collector)
    took = time.perf_counter() - started
    release.set()
    assert took < 5  # the stalled server is given up on after its timeout (+0.5 s)
    assert value(found, "rag_upstream_up", route="slow") == 0
    assert value(found, "rag_upstream_up", route="fast") == 1


def test_a_broken_gpu_or_no_nvml_leaves_the_rest() -> None:
    found = samples(UpstreamCollector([], nvml=FakeNvml(broken=True), transport=_serving("v1.txt")))
    gpus = {dict(k[1])["gpu"] for k in found if k[0] == "rag_gpu_utilization_ratio"}
    assert gpus == {"0"}
    assert not [k for k in samples(UpstreamCollector([])) if k[0].startswith("rag_gpu")]


def test_the_api_exposes_them_on_metrics(services: Services) -> None:
    """The app registers the collector: whatever the LLM server does, the scrape succeeds."""
    with TestClient(create_app(services=services, start_worker=False)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert re.search(r'^rag_upstream_up\{route="default"\} [01]\.0$', response.text, re.M)
    assert "# TYPE rag_gpu_utilization_ratio gauge" in response.text
