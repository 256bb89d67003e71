"""The upstream contract: what LLMClient needs of an OpenAI-compatible server, checked against a
fake of each server we document (vLLM, Ollama, llama.cpp's server through llama-cpp-python).

Each fake answers in its server's own shapes, taken from the servers' code and, for llama.cpp,
recorded from a real llama-cpp-python 0.3.36 server (tests/integration/test_llm_failover.py
checks the same contract against the real one): the /v1/models listing, whole and streamed
answers (with or without usage), the context-length refusal, the
structured-output dialect, the unknown-model error and overload. One set of tests, three fakes.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from rag.core.config import LLMSettings
from rag.core.errors import LLMBadResponse, LLMContextLengthExceeded, LLMUnavailable
from rag.generation import structured
from rag.generation.llm import LLMClient

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
FORMAT = structured.check_format(
    {"type": "json_schema", "json_schema": {"name": "count", "schema": SCHEMA}}
)
MESSAGES = [{"role": "user", "content": "How many?"}]


@dataclass(frozen=True)
class Dialect:
    name: str
    base_url: str
    model: str  # what RAG_LLM__MODEL names
    models: dict[str, Any]  # GET /v1/models
    stream_usage: bool  # usage in the last chunk when stream_options asks for it
    context_error: tuple[int, Any] | None  # None: the server truncates instead (Ollama)
    unknown_model: tuple[int, Any] | None  # None: it answers any model name
    takes_json_schema: bool  # else only {"type": "json_object", "schema": ...}
    role_chunk: dict[str, Any] = field(default_factory=lambda: {"role": "assistant"})


VLLM = Dialect(
    "vllm",
    "http://gpu:8000/v1",
    "Qwen/Qwen2.5-7B-Instruct",
    {
        "object": "list",
        "data": [
            {
                "id": "Qwen/Qwen2.5-7B-Instruct",
                "object": "model",
                "owned_by": "vllm",
                "root": "Qwen/Qwen2.5-7B-Instruct",
                "max_model_len": 32768,
            }
        ],
    },
    stream_usage=True,
    context_error=(
        400,
        {
            "object": "error",
            "message": "This model's maximum context length is 32768 tokens. However, you "
            "requested 33792 tokens (33024 in the messages, 768 in the completion). Please "
            "reduce the length of the messages or completion.",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    ),
    unknown_model=(
        404,
        {
            "object": "error",
            "message": "The model `qwen` does not exist.",
            "type": "NotFoundError",
            "param": None,
            "code": 404,
        },
    ),
    takes_json_schema=True,
    role_chunk={"role": "assistant", "content": ""},
)
OLLAMA = Dialect(
    "ollama",
    "http://ollama:11434/v1",
    "qwen2.5:7b-instruct",
    {
        "object": "list",
        "data": [
            {"id": "qwen2.5:7b-instruct", "object": "model", "created": 1, "owned_by": "library"}
        ],
    },
    stream_usage=True,
    context_error=None,
    unknown_model=(
        404,
        {
            "error": {
                "message": 'model "qwen" not found, try pulling it first',
                "type": "not_found_error",
                "param": None,
                "code": None,
            }
        },
    ),
    takes_json_schema=True,
)
LLAMACPP = Dialect(
    "llamacpp",
    "http://cpu:8080/v1",
    "gguf/SmolLM2-135M-Instruct.Q4_1",
    {
        "object": "list",
        "data": [
            {
                "id": "gguf/SmolLM2-135M-Instruct.Q4_1",
                "object": "model",
                "owned_by": "me",
                "permissions": [],
            }
        ],
    },
    stream_usage=False,
    context_error=(
        400,
        {
            "error": {
                "message": "This model's maximum context length is 4096 tokens. However, you "
                "requested 4864 tokens (4096 in the messages, 768 in the completion). Please "
                "reduce the length of the messages or completion.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
    ),
    unknown_model=None,
    takes_json_schema=False,
)
DIALECTS = [VLLM, OLLAMA, LLAMACPP]


class FakeServer:
    """One dialect's server at the transport; `overloaded` answers 503 to chat calls."""

    def __init__(self, dialect: Dialect, reply: str = "Forty-two [1].") -> None:
        self.d = dialect
        self.reply = reply
        self.bodies: list[dict[str, Any]] = []
        self.overloaded = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path.endswith("/models"):
            return httpx.Response(200, json=self.d.models)
        if not path.endswith("/chat/completions"):
            return httpx.Response(404, json={"detail": "Not Found"})
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.overloaded:
            return httpx.Response(503, json={"error": {"message": "busy"}})
        refused = self._refusal(body)
        if refused is not None:
            return refused
        if body.get("stream"):
            return httpx.Response(
                200, text=self._sse(body), headers={"content-type": "text/event-stream"}
            )
        return httpx.Response(200, json=self._whole(body))

    def _refusal(self, body: dict[str, Any]) -> httpx.Response | None:
        d = self.d
        if d.unknown_model and body["model"] != d.model:
            return httpx.Response(d.unknown_model[0], json=d.unknown_model[1])
        if d.context_error and len(body["messages"][-1]["content"]) > 1000:
            return httpx.Response(d.context_error[0], json=d.context_error[1])
        fmt = body.get("response_format")
        if fmt and fmt["type"] == "json_schema" and not d.takes_json_schema:
            # recorded from llama-cpp-python 0.3.36: its request validation error, as a 500
            message = (
                "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', "
                "'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", "
                "'input': 'json_schema', 'ctx': {'expected': \"'text' or 'json_object'\"}}"
            )
            error = {"message": message, "type": "internal_server_error", "param": None}
            return httpx.Response(500, json={"error": {**error, "code": None}})
        return None

    def _whole(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": body["model"],  # all three name the model as it was asked for
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.reply},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
        }

    def _sse(self, body: dict[str, Any]) -> str:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body["model"],
                "choices": [choice],
            }

        words = self.reply.split(" ")
        chunks = [chunk(self.d.role_chunk)]
        chunks += [chunk({"content": w + " " * (i < len(words) - 1)}) for i, w in enumerate(words)]
        chunks.append(chunk({}, "stop"))
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        if self.d.stream_usage and wants_usage:
            usage = {"prompt_tokens": 12, "completion_tokens": len(words), "total_tokens": 16}
            chunks.append({**chunk({}), "choices": [], "usage": usage})
        return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def client_for(server: FakeServer, **settings: Any) -> LLMClient:
    settings.setdefault("retry_backoff_s", 0.001)
    cfg = LLMSettings(base_url=server.d.base_url, model=server.d.model, **settings)
    return LLMClient(cfg, httpx.MockTransport(server.handler))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(params=DIALECTS, ids=lambda d: d.name)
def server(request: pytest.FixtureRequest) -> FakeServer:
    return FakeServer(request.param)


def test_health_check_and_model_listing(server: FakeServer) -> None:
    client = client_for(server)
    assert client.ping()
    assert (client.model_info() or {})["id"] == server.d.model


def test_whole_answer(server: FakeServer) -> None:
    done = run(client_for(server).complete(MESSAGES))
    assert done.text == "Forty-two [1]." and done.model == server.d.model
    assert done.usage["completion_tokens"] == 4 and done.finish_reason == "stop"
    sent = server.bodies[-1]
    assert sent["model"] == server.d.model and sent["messages"] == MESSAGES


def test_streamed_answer(server: FakeServer) -> None:
    async def read() -> tuple[str, Any]:
        stream = await client_for(server).stream(MESSAGES)
        text = "".join([d async for d in stream.deltas()])
        return text, stream

    text, stream = run(read())
    assert text == "Forty-two [1]." and stream.model == server.d.model
    assert stream.finish_reason == "stop"
    # Usage only where the server sends it; the answer path counts tokens itself otherwise.
    assert bool(stream.usage) == server.d.stream_usage
    assert server.bodies[-1]["stream_options"] == {"include_usage": True}


def test_vllm_fields_are_sent_and_never_break_the_others(server: FakeServer) -> None:
    run(client_for(server).complete(MESSAGES))
    # vLLM applies repetition_penalty; Ollama and llama-cpp-python ignore the field.
    assert server.bodies[-1]["repetition_penalty"] == 1.05 and len(server.bodies) == 1


def test_a_prompt_over_the_context_is_recognised(server: FakeServer) -> None:
    long = [{"role": "user", "content": "x " * 1000}]
    if server.d.context_error is None:  # Ollama cuts the prompt to its num_ctx, silently
        assert run(client_for(server).complete(long)).text
        return
    with pytest.raises(LLMContextLengthExceeded) as caught:
        run(client_for(server).complete(long))
    limit = 32768 if server.d is VLLM else 4096
    assert caught.value.max_context == limit and caught.value.prompt_tokens


def test_structured_output_in_the_servers_dialect(server: FakeServer) -> None:
    server.reply = '{"n": 42}'
    client = client_for(server)
    for _ in range(2):
        done = run(client.complete(MESSAGES, response_format=FORMAT))
        assert structured.parse(done.text, FORMAT or {}) == {"n": 42}
    kinds = [b["response_format"]["type"] for b in server.bodies]
    if server.d.takes_json_schema:
        assert kinds == ["json_schema", "json_schema"]
    else:  # refused once, then the json_object form with the schema, for good
        assert kinds == ["json_schema", "json_object", "json_object"]
        assert server.bodies[-1]["response_format"]["schema"] == SCHEMA


def test_an_unknown_model_is_a_bad_response_naming_it(server: FakeServer) -> None:
    client = client_for(server)
    client.settings = client.settings.model_copy(update={"model": "qwen"})
    if server.d.unknown_model is None:  # llama-cpp-python answers any name with its model
        assert run(client.complete(MESSAGES)).model == "qwen"
        return
    with pytest.raises(LLMBadResponse, match="qwen"):
        run(client.complete(MESSAGES))


def test_overload_is_retried_then_unavailable(server: FakeServer) -> None:
    server.overloaded = True
    with pytest.raises(LLMUnavailable):
        run(client_for(server, max_retries=2).complete(MESSAGES))
    assert len(server.bodies) == 3
