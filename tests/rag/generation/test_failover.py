"""Fallback routes: a route that is down (circuit open, failed health check, unreachable) hands
its requests to its fallback, the answer says who answered, and the route gets them back once a
health check passes. Upstreams are faked at the transport, by host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from rag.core.config import LLMRoute, LLMSettings, load_settings
from rag.core.errors import ConfigError
from rag.generation.failover import RouteHealth
from rag.generation.llm import LLMClient
from rag.generation.model_routes import Router
from rag.services import Services
from tests.llm_script import ScriptedLLM, app_with, english_kb, events

CPU = {
    "name": "cpu",
    "model": "gguf/SmolLM2-135M-Instruct.Q4_1",
    "base_url": "http://cpu:8080/v1",
    "max_model_len": 4096,
    "max_tokens": 256,
}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Upstreams:
    """Two servers by host: 127.0.0.1 (the primary) and cpu (the fallback); either can be down."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.calls: list[str] = []
        self.primary = ScriptedLLM("The primary says so [1].")
        self.fallback = ScriptedLLM("The fallback says so [1].")

    def handler(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.calls.append(f"{host}{request.url.path}")
        if host in self.down:
            raise httpx.ConnectError("connection refused")
        return (self.fallback if host == "cpu" else self.primary).handler(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)


def settings(**llm: Any) -> LLMSettings:
    llm.setdefault("routes", [LLMRoute(**CPU)])
    return LLMSettings(fallback="cpu", max_retries=0, **llm)


def router(up: Upstreams, clock: Clock, **llm: Any) -> Router:
    cfg = settings(**llm)
    transport = up.transport()
    return Router(
        cfg, LLMClient(cfg, transport), transport, spawn=lambda check: check(), clock=clock
    )


def failovers(route: str = "default", fallback: str = "cpu") -> float:
    value = REGISTRY.get_sample_value(
        "rag_llm_failovers_total", {"route": route, "fallback": fallback}
    )
    return value or 0.0


# --- settings --------------------------------------------------------------------------------


def test_a_route_without_rules_is_allowed_only_as_a_fallback() -> None:
    cfg = settings()
    assert cfg.fallback == "cpu" and not cfg.routes[0].has_rule
    row = {**CPU, "name": "code", "preset": "code", "fallback": "cpu"}
    assert LLMSettings(routes=[LLMRoute(**row), LLMRoute(**CPU)]).routes[0].fallback == "cpu"


@pytest.mark.parametrize(
    ("fallback", "table", "message"),
    [
        ("gpu2", [CPU], "names no other route"),
        (None, [CPU], "needs keywords, a pattern"),
        (None, [{**CPU, "preset": "code", "fallback": "cpu"}], "names no other route"),
        (None, [{**CPU, "preset": "code", "fallback": "nowhere"}], "names no other route"),
    ],
)
def test_bad_fallbacks_fail_at_startup(
    fallback: str | None, table: list[dict[str, Any]], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_LLM__ROUTES", json.dumps(table))
    if fallback:
        monkeypatch.setenv("RAG_LLM__FALLBACK", fallback)
    with pytest.raises(ConfigError, match=f"RAG_LLM__ROUTES.*{message}"):
        load_settings(_env_file=None)


# --- health ----------------------------------------------------------------------------------


def test_health_is_checked_once_per_interval_and_follows_the_probe() -> None:
    clock, answers = Clock(), [True, False, True]
    probes: list[float] = []

    def probe() -> bool:
        probes.append(clock.now)
        return answers[len(probes) - 1]

    health = RouteHealth("gpu", probe, 5.0, spawn=lambda check: check(), clock=clock)
    assert health.up() and health.up() and len(probes) == 1  # fresh: no second probe
    clock.now += 5
    assert not health.up() and not health.up() and len(probes) == 2
    clock.now += 5
    assert health.up() and probes == [100.0, 105.0, 110.0]


def test_a_failed_call_marks_the_server_down_until_the_next_check() -> None:
    clock = Clock()
    health = RouteHealth("gpu", lambda: True, 5.0, spawn=lambda check: check(), clock=clock)
    assert health.up()
    health.down()
    clock.now += 4.9
    assert not health.up()  # no probe yet: the failed call is the latest news
    clock.now += 0.1
    assert health.up()


def test_a_probe_that_raises_counts_as_down() -> None:
    def probe() -> bool:
        raise RuntimeError("resolver broke")

    health = RouteHealth("gpu", probe, 5.0, spawn=lambda check: check(), clock=Clock())
    assert not health.up()


def test_checks_run_in_the_background_by_default() -> None:
    import threading

    release, started = threading.Event(), threading.Event()

    def probe() -> bool:
        started.set()
        release.wait(5)
        return False

    health = RouteHealth("gpu", probe, 5.0)
    assert health.up()  # the probe is still running: nobody waits for it
    assert started.wait(5)
    release.set()


# --- choosing the route ----------------------------------------------------------------------


def test_the_fallback_answers_while_the_health_check_fails_and_recovery_returns() -> None:
    up, clock = Upstreams(), Clock()
    r = router(up, clock)
    assert r.available(r.default) is r.default
    up.down.add("127.0.0.1")
    assert r.available(r.default) is r.default  # the last check is still fresh
    clock.now += 5
    before = failovers()
    chosen = r.available(r.default)
    assert chosen.name == "cpu" and chosen.replaces == "default"
    assert chosen.settings.max_model_len == 4096 and failovers() == before + 1
    up.down.clear()
    clock.now += 5
    assert r.available(r.default) is r.default


def test_an_open_circuit_sends_requests_to_the_fallback() -> None:
    up, clock = Upstreams(), Clock()
    r = router(up, clock, breaker_failures=1)
    r.default.client.breaker.failure()
    assert r.available(r.default).name == "cpu"
    fallback_breaker = r.routes[0].client.breaker
    fallback_breaker.failure()  # both down: the primary's own error is the one to see
    assert r.available(r.default) is r.default


def test_a_failed_call_turns_to_the_fallback_at_once() -> None:
    up, clock = Upstreams(), Clock()
    r = router(up, clock)
    stand_in = r.failed(r.default)
    assert stand_in is not None and stand_in.name == "cpu" and stand_in.replaces == "default"
    assert r.available(r.default).name == "cpu"  # marked down until the next check
    assert r.failed(stand_in) is None  # one hop: a fallback has no fallback of its own


def test_routes_without_a_fallback_are_not_checked() -> None:
    up, clock = Upstreams(), Clock()
    cfg = LLMSettings(routes=[LLMRoute(**{**CPU, "preset": "code"})])
    r = Router(cfg, LLMClient(cfg, up.transport()), up.transport(), clock=clock)
    assert r.available(r.default) is r.default and r.failed(r.default) is None
    assert not up.calls


# --- the answer says who answered ------------------------------------------------------------


def test_answers_fail_over_and_come_back(tmp_path: Path) -> None:
    up, clock = Upstreams(), Clock()

    def routed(svc: Services) -> None:
        svc._router = Router(
            svc.settings.llm,
            LLMClient(svc.settings.llm, up.transport()),
            up.transport(),
            spawn=lambda check: check(),
            clock=clock,
        )

    with app_with(
        tmp_path, up.primary, services=routed, fallback="cpu", routes=[CPU], max_retries=0
    ) as (client, _):
        kb = english_kb(client)
        url = f"/v1/knowledge-bases/{kb}/ask"
        question = {"question": "How do I reset my access key?", "cache": True}
        first = client.post(url, json=question).json()
        assert first["route"] == "default" and first["fallback_from"] is None

        up.down.add("127.0.0.1")  # killed between two health checks: the call fails over
        body = client.post(url, json={**question, "question": "Rotate my key?"}).json()
        assert body["route"] == "cpu" and body["fallback_from"] == "default"
        assert body["model"] == CPU["model"] and body["answer"].startswith("The fallback")
        assert up.fallback.requests[-1]["max_tokens"] <= 256  # the fallback's own limits

        streamed = client.post(url, json={**question, "question": "Stream it?", "stream": True})
        done = dict(events(streamed.text))["done"]
        assert done["route"] == "cpu" and done["fallback_from"] == "default"

        again = client.post(url, json={**question, "question": "Rotate my key?"}).json()
        assert again["cached"] is False and again["route"] == "cpu"  # stand-ins are not kept

        up.down.clear()
        clock.now += 5  # the next health check passes
        back = client.post(url, json={**question, "question": "Rotate my key?"}).json()
        assert back["route"] == "default" and back["fallback_from"] is None
        assert back["answer"].startswith("The primary") and back["cached"] is False


def test_without_a_fallback_the_failure_is_the_clients(tmp_path: Path) -> None:
    up = Upstreams()
    up.down.add("127.0.0.1")

    def routed(svc: Services) -> None:
        svc._router = Router(
            svc.settings.llm, LLMClient(svc.settings.llm, up.transport()), up.transport()
        )

    with app_with(tmp_path, up.primary, services=routed, max_retries=0) as (client, _):
        kb = english_kb(client)
        failed = client.post(f"/v1/knowledge-bases/{kb}/ask", json={"question": "Key?"})
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "llm_unavailable"
