"""The LLM servers and the GPU on our /metrics, read at scrape time.

Each route's vLLM server: its /metrics (KV-cache usage, running and waiting requests, prompt and
generation token counters, preemptions), parsed with prometheus_client's text parser and
re-exported with the route as a label. The GPUs of this host: utilisation and memory through
NVML (nvidia-ml-py's `pynvml`), where a driver is present. A scrape never fails for them: a
server that does not answer within the timeout reports rag_upstream_up 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from rag.core.config import LLMSettings

log = logging.getLogger(__name__)

# Our gauge -> the vLLM sample names it is read from (either, by version: vLLM 0.10 renamed
# gpu_cache_usage_perc to kv_cache_usage_perc) and how several engines' samples combine.
_GAUGES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "rag_upstream_kv_cache_usage_ratio": (
        "KV-cache blocks in use on the LLM server (1 = full; new requests wait or preempt)",
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        "max",
    ),
    "rag_upstream_requests_running": (
        "Requests the LLM server is generating for",
        ("vllm:num_requests_running",),
        "sum",
    ),
    "rag_upstream_requests_waiting": (
        "Requests queued on the LLM server, not yet scheduled",
        ("vllm:num_requests_waiting",),
        "sum",
    ),
}
# Counters keep vLLM's totals: Grafana takes rate() of them (tokens/s, preemptions/s).
_COUNTERS: dict[str, tuple[str, str]] = {
    "rag_upstream_prompt_tokens": (
        "Prompt tokens the LLM server prefilled",
        "vllm:prompt_tokens_total",
    ),
    "rag_upstream_generation_tokens": (
        "Tokens the LLM server generated",
        "vllm:generation_tokens_total",
    ),
    "rag_upstream_preemptions": (
        "Requests the LLM server preempted for want of KV cache (recomputed later)",
        "vllm:num_preemptions_total",
    ),
}


@dataclass
class Upstream:
    """One server's metrics URL and the routes that use it."""

    url: str
    routes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return ",".join(self.routes)


def metrics_url(base_url: str) -> str:
    """vLLM serves /metrics at its root, beside /v1."""
    root = base_url.rstrip("/")
    return (root[: -len("/v1")] if root.endswith("/v1") else root) + "/metrics"


def upstreams_of(settings: LLMSettings) -> list[Upstream]:
    """The default route and each row of the routing table, one entry per distinct server."""
    by_url: dict[str, Upstream] = {}
    pairs = [("default", settings.base_url)]
    pairs += [(row.name, row.base_url or settings.base_url) for row in settings.routes]
    for name, base_url in pairs:
        url = metrics_url(base_url)
        by_url.setdefault(url, Upstream(url)).routes.append(name)
    return list(by_url.values())


def parse_vllm(text: str) -> tuple[dict[str, float], dict[str, float]]:
    """(gauges, counters) by our metric name from a vLLM /metrics payload; absent ones left out."""
    samples: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(float(sample.value))
    gauges: dict[str, float] = {}
    for ours, (_, names, combine) in _GAUGES.items():
        values = next((samples[n] for n in names if n in samples), None)
        if values:
            gauges[ours] = max(values) if combine == "max" else sum(values)
    counters = {
        ours: sum(samples[name]) for ours, (_, name) in _COUNTERS.items() if name in samples
    }
    return gauges, counters


def load_nvml() -> Any | None:
    """pynvml, initialised, where nvidia-ml-py and an NVIDIA driver are present; else None."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no package, no driver, no GPU: no GPU metrics
        log.debug("no NVML: %s", exc)
        return None
    return pynvml


class UpstreamCollector(Collector):
    """Collected at scrape time. `nvml`: the pynvml module (or a fake with its functions);
    `transport`: the HTTP transport (tests pass a MockTransport)."""

    def __init__(
        self,
        upstreams: list[Upstream],
        *,
        timeout_s: float = 1.0,
        nvml: Any | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.upstreams = upstreams
        self.timeout_s = timeout_s
        self.nvml: Any = nvml  # None: no GPU metrics
        self._transport = transport
        self._http: httpx.Client | None = None  # made on the first scrape
        self._took: dict[str, float] = {}  # seconds of each server's last scrape

    @classmethod
    def for_settings(cls, settings: LLMSettings, *, nvml: Any | None = None) -> UpstreamCollector:
        return cls(upstreams_of(settings), timeout_s=settings.upstream_metrics_timeout_s, nvml=nvml)

    def describe(self) -> Iterable[Metric]:
        return []  # nothing at registration: collect() scrapes the servers

    def collect(self) -> Iterator[Metric]:
        yield from self._llm_servers()
        yield from self._gpus()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout_s, transport=self._transport)
        return self._http

    def _scrape(
        self, http: httpx.Client, upstream: Upstream
    ) -> tuple[dict[str, float], dict[str, float]] | None:
        started = time.perf_counter()
        try:
            response = http.get(upstream.url)
            response.raise_for_status()
            return parse_vllm(response.text)
        except Exception as exc:  # down, slow, not vLLM (no /metrics), or a garbled payload
            log.debug("scraping %s failed: %s", upstream.url, exc)
            return None
        finally:
            self._took[upstream.url] = time.perf_counter() - started

    def _llm_servers(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "rag_upstream_up",
            "1 when the route's LLM server answered its /metrics within the timeout",
            labels=["route"],
        )
        seconds = GaugeMetricFamily(
            "rag_upstream_scrape_seconds",
            "Time to read the LLM server's /metrics",
            labels=["route"],
        )
        gauges = {
            name: GaugeMetricFamily(name, help_, labels=["route"])
            for name, (help_, _, _) in _GAUGES.items()
        }
        counters = {
            name: CounterMetricFamily(name, help_, labels=["route"])
            for name, (help_, _) in _COUNTERS.items()
        }
        pool = ThreadPoolExecutor(max_workers=max(1, len(self.upstreams)))
        http = self._client()
        futures = {pool.submit(self._scrape, http, u): u for u in self.upstreams}
        done, _ = wait(futures, timeout=self.timeout_s + 0.5)
        pool.shutdown(wait=False)  # a server still trickling bytes is not waited for
        for future, upstream in futures.items():
            result = future.result() if future in done else None
            up.add_metric([upstream.label], 0 if result is None else 1)
            took = self._took.get(upstream.url) if future in done else self.timeout_s
            seconds.add_metric([upstream.label], took or 0.0)
            if result is None:
                continue
            for name, value in result[0].items():
                gauges[name].add_metric([upstream.label], value)
            for name, value in result[1].items():
                counters[name].add_metric([upstream.label], value)
        yield up
        yield seconds
        yield from gauges.values()
        yield from counters.values()

    def _gpus(self) -> Iterator[Metric]:
        nvml = self.nvml
        labels = ["gpu", "name"]
        util = GaugeMetricFamily(
            "rag_gpu_utilization_ratio",
            "Share of time a GPU kernel was running (NVML)",
            labels=labels,
        )
        used = GaugeMetricFamily(
            "rag_gpu_memory_used_bytes", "GPU memory in use (NVML)", labels=labels
        )
        total = GaugeMetricFamily("rag_gpu_memory_total_bytes", "GPU memory (NVML)", labels=labels)
        try:
            count = 0 if nvml is None else int(nvml.nvmlDeviceGetCount())
        except Exception as exc:
            log.debug("NVML failed: %s", exc)
            count = 0
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                name = nvml.nvmlDeviceGetName(handle)
                name = name.decode() if isinstance(name, bytes) else str(name)
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:  # one GPU that does not answer leaves the others
                log.debug("NVML failed on GPU %d: %s", index, exc)
                continue
            key = [str(index), name]
            util.add_metric(key, rates.gpu / 100.0)
            used.add_metric(key, float(memory.used))
            total.add_metric(key, float(memory.total))
        yield util
        yield used
        yield total
