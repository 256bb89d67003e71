"""Model routing: rules pick a route; each route has its own backend; answers say who answered."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from rag.core.config import LLMRoute, LLMSettings, load_settings
from rag.core.errors import ConfigError
from rag.generation.llm import LLMClient
from rag.generation.model_routes import Router
from rag.services import Services
from tests.llm_script import ScriptedLLM, app_with, english_kb

ROUTES = [
    {
        "name": "code",
        "preset": "code",
        "model": "Qwen/Qwen2.5-Coder-7B-Instruct",
        "base_url": "http://coder:8000/v1",
    },
    {
        "name": "math",
        "preset": "math",
        "keywords": ["quota"],
        "model": "Qwen/Qwen2.5-Math-7B-Instruct",
        "base_url": "http://math:8000/v1",
        "max_model_len": 4096,
    },
    {"name": "billing", "pattern": r"\binvoice|账单", "model": "Qwen/Qwen2.5-7B-Instruct"},
]


def router(routes: list[dict] = ROUTES) -> Router:
    settings = LLMSettings(routes=[LLMRoute(**r) for r in routes])
    return Router(settings, LLMClient(settings))


@pytest.mark.parametrize(
    ("question", "route"),
    [
        ("How do I fix this Python traceback?", "code"),
        ("```\nSELECT * FROM buckets\n```", "code"),
        ("这段代码为什么报错？", "code"),
        ("What is 17 * 23?", "math"),
        ("How big is my QUOTA?", "math"),  # keywords match whole words, any case
        ("如何计算存储费用？", "math"),
        ("Where is my invoice?", "billing"),
        ("How do I reset my access key?", "default"),
        ("Is the quotation ready?", "default"),  # "quota" is not a word of it
    ],
)
def test_rules_pick_the_first_matching_route(question: str, route: str) -> None:
    assert router().pick(question).name == route


def test_default_is_one_route_to_qwen() -> None:
    r = Router(LLMSettings(), LLMClient(LLMSettings()))
    assert r.routes == [] and r.pick("anything").settings.model == "Qwen/Qwen2.5-7B-Instruct"


def test_routes_inherit_and_override_settings() -> None:
    r = router()
    code, math, billing = r.routes
    assert code.settings.base_url == "http://coder:8000/v1" and code.settings.max_model_len == 32768
    assert math.settings.max_model_len == 4096
    assert billing.client is r.default.client  # same server and model: same client and breaker
    assert code.client is not r.default.client


def test_bad_routing_tables_fail_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    for table in (
        '[{"name": "x", "model": "m"}]',  # no rule
        '[{"name": "x", "model": "m", "pattern": "("}]',  # bad regex
        '[{"name": "x", "model": "m", "keywords": ["a"]},'
        ' {"name": "x", "model": "n", "keywords": ["b"]}]',  # duplicate names
    ):
        monkeypatch.setenv("RAG_LLM__ROUTES", table)
        with pytest.raises(ConfigError, match="RAG_LLM__ROUTES"):
            load_settings(_env_file=None)


def test_the_answer_records_the_route_and_the_model_that_answered(tmp_path: Path) -> None:
    script = ScriptedLLM("It depends [1].")
    transport = script.transport()

    def routed(svc: Services) -> None:
        svc._router = Router(svc.settings.llm, svc.llm, transport=transport)

    with app_with(tmp_path, script, services=routed, routes=ROUTES[:2]) as (client, _):
        kb = english_kb(client)
        url = f"/v1/knowledge-bases/{kb}/ask"
        code = client.post(url, json={"question": "Why does my Python script fail?"}).json()
        plain = client.post(url, json={"question": "How do I reset my access key?"}).json()
    assert code["route"] == "code" and code["model"] == "Qwen/Qwen2.5-Coder-7B-Instruct"
    assert plain["route"] == "default" and plain["model"] == "Qwen/Qwen2.5-7B-Instruct"
    chats = [path for path in script.paths if path.endswith("/chat/completions")]
    assert chats[-2:] == ["coder/v1/chat/completions", "127.0.0.1/v1/chat/completions"]
    assert code["routing"] == {"route": "code", "source": "rule", "label": None, "confidence": None}
    assert plain["routing"]["source"] == "default"


def test_a_failing_route_opens_only_its_own_circuit(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "coder":
            raise httpx.ConnectError("down")
        return ScriptedLLM("Fine [1].").handler(request)

    def routed(svc: Services) -> None:
        svc._router = Router(svc.settings.llm, svc.llm, transport=httpx.MockTransport(handler))

    with app_with(
        tmp_path,
        ScriptedLLM(),
        services=routed,
        routes=ROUTES[:1],
        max_retries=0,
        breaker_failures=1,
    ) as (client, _):
        kb = english_kb(client)
        url = f"/v1/knowledge-bases/{kb}/ask"
        assert client.post(url, json={"question": "Python error?"}).status_code == 503
        second = client.post(url, json={"question": "Python error?"})
        assert second.json()["error"]["code"] == "llm_circuit_open"
        assert client.post(url, json={"question": "Access key?"}).status_code == 200
