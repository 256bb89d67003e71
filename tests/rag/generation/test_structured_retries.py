"""JSON answers are asked for again, with the validation error, until valid or out of retries
(RAG_LLM__JSON_RETRIES, default 3); then 422 names the last error. The retries are counted in
the response and in the metrics."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from rag.core.config import LLMSettings
from rag.core.errors import InvalidStructuredOutput
from rag.generation import structured
from rag.generation.llm import Completion, LLMClient, Messages
from tests.llm_script import ScriptedLLM, app_with, english_kb

SCHEMA = {
    "type": "object",
    "properties": {
        "steps": {"type": "array", "items": {"type": "string"}},
        "hours": {"type": "integer"},
    },
    "required": ["steps", "hours"],
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "rotation", "schema": SCHEMA}}
VALID = json.dumps({"steps": ["Open the console [1]"], "hours": 24})
# Two invalid answers of two kinds: not JSON at all, then JSON that fails the schema.
INVALID_TWICE = [
    "Sure! Here are the steps: open the console.",
    '{"steps": "open it", "hours": 24}',
    VALID,
]


def counter(name: str, route: str = "default") -> float:
    return REGISTRY.get_sample_value(name, {"route": route}) or 0.0


class Model:
    """Answers with the next reply in order; records the messages of every call."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.asked: list[Messages] = []

    async def ask(self, messages: Messages) -> Completion:
        self.asked.append(messages)
        return Completion(self.replies.pop(0), "m", {"completion_tokens": 5})


def feedback(bad: str, problem: str) -> Messages:
    return [{"role": "assistant", "content": bad}, {"role": "user", "content": problem}]


def run(model: Model, retries: int) -> structured.Valid:
    first = Completion(model.replies.pop(0), "m")
    return asyncio.run(
        structured.until_valid(
            first, model.ask, feedback, structured.check_format(FORMAT) or {}, retries=retries
        )
    )


def test_invalid_json_twice_then_valid_takes_two_retries() -> None:
    model = Model(INVALID_TWICE)
    before = counter("rag_llm_structured_retries_total")
    valid = run(model, retries=3)
    assert valid.value == json.loads(VALID) and valid.retries == 2
    assert [c.text for c in valid.completions] == INVALID_TWICE
    # Each retry is told what was wrong with the answer before it.
    assert "did not answer with JSON" in model.asked[0][-1]["content"]
    assert "fails the schema at steps" in model.asked[1][-1]["content"]
    assert counter("rag_llm_structured_retries_total") == before + 2


def test_out_of_retries_fails_with_the_last_validation_error() -> None:
    model = Model(INVALID_TWICE)
    failures = counter("rag_llm_structured_failures_total")
    with pytest.raises(InvalidStructuredOutput) as caught:
        run(model, retries=1)
    error = caught.value
    assert error.status_code == 422 and error.retries == 1
    assert "after 1 retry" in str(error) and "fails the schema at steps" in str(error)
    assert len(model.asked) == 1 and model.replies == [VALID]  # the third answer never asked for
    assert counter("rag_llm_structured_failures_total") == failures + 1


def test_no_retries_means_the_first_answer_decides() -> None:
    with pytest.raises(InvalidStructuredOutput, match="after 0 retries"):
        run(Model(INVALID_TWICE), retries=0)
    assert run(Model([VALID]), retries=0).retries == 0


def test_the_setting_defaults_to_three() -> None:
    assert LLMSettings().json_retries == 3


# --- through the API -------------------------------------------------------------------------


def test_ask_retries_until_valid_and_says_how_often(tmp_path: Path) -> None:
    script = ScriptedLLM()
    with app_with(tmp_path, script) as (client, _):
        kb = english_kb(client)
        url = f"/v1/knowledge-bases/{kb}/ask"
        script.requests.clear()
        script.steps = list(INVALID_TWICE)
        body = client.post(url, json={"question": "Rotate?", "response_format": FORMAT}).json()
        assert body["parsed"] == json.loads(VALID) and body["structured_retries"] == 2
        assert len(script.requests) == 3
        assert "fails the schema" in script.requests[2]["messages"][-1]["content"]
        assert body["usage"]["completion_tokens"] == 30  # three calls of 10 tokens

        script.requests.clear()
        script.steps = ["still not JSON"]
        again = {"question": "Rotate again?", "response_format": FORMAT}
        failed = client.post(url, json=again)
        assert failed.status_code == 422 and len(script.requests) == 4  # 1 + 3 retries
        error = failed.json()["error"]
        assert error["code"] == "invalid_structured_output"
        assert (
            "after 3 retries" in error["message"] and "did not answer with JSON" in error["message"]
        )


def test_the_retry_limit_is_a_setting(tmp_path: Path) -> None:
    script = ScriptedLLM()
    with app_with(tmp_path, script, json_retries=1) as (client, _):
        kb = english_kb(client)
        script.requests.clear()
        script.steps = list(INVALID_TWICE)
        failed = client.post(
            f"/v1/knowledge-bases/{kb}/ask", json={"question": "Q?", "response_format": FORMAT}
        )
    assert failed.status_code == 422 and len(script.requests) == 2


# --- a server that takes only json_object (llama-cpp-python) ---------------------------------


def test_a_server_refusing_json_schema_gets_json_object_with_the_schema() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if body["response_format"]["type"] != "json_object":
            # what llama-cpp-python 0.3.36 answers: its validation error, as a 500
            message = "1 validation error: {'loc': ('body', 'response_format', 'type'), "
            message += "'input': 'json_schema'}"
            return httpx.Response(500, json={"error": {"message": message}})
        message = {"role": "assistant", "content": VALID}
        return httpx.Response(200, json={"choices": [{"message": message}], "model": "gguf/x"})

    client = LLMClient(LLMSettings(), httpx.MockTransport(handler))
    fmt = structured.check_format(FORMAT)

    async def twice() -> None:
        for _ in range(2):
            done = await client.complete([{"role": "user", "content": "Q"}], response_format=fmt)
            assert done.text == VALID

    asyncio.run(twice())
    assert [b["response_format"]["type"] for b in bodies] == [
        "json_schema",
        "json_object",
        "json_object",
    ]
    assert bodies[1]["response_format"]["schema"] == SCHEMA  # llama.cpp builds a grammar from it
