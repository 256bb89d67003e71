"""OpenAI-compatible chat client for vLLM (or `transformers serve`, Ollama, llama.cpp server).

Faults are handled here, once (`LLMClient`): timeouts, bounded retries, a circuit breaker per
upstream, and the mapping of upstream failures to rag.core.errors. The test seam is the
transport (httpx.MockTransport). Generation is async (a client that goes away must cancel the
upstream request at once); ping and model_info are sync for health checks and the CLI.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from rag.core import metrics, request_context, tracing
from rag.core.circuit import CircuitBreaker
from rag.core.config import LLMSettings
from rag.core.errors import (
    LLMBadResponse,
    LLMCircuitOpen,
    LLMContextLengthExceeded,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
)
from rag.generation.stream_transport import STREAM_EXTENSION, StreamTransport

log = logging.getLogger(__name__)
_RETRYABLE_STATUS = {429, 502, 503, 504}
# vLLM and llama-cpp-python word it as OpenAI does; llama.cpp's own llama-server says "exceeds
# the available context size" and adds n_ctx and n_prompt_tokens to the error object.
_CONTEXT_ERROR = re.compile(
    r"maximum context length|context length|context window|max_model_len|too many tokens"
    r"|reduce the length|context size",
    re.IGNORECASE,
)
_MAX_CONTEXT = re.compile(r"maximum context length is (\d+)|\"n_ctx\":\s*(\d+)", re.IGNORECASE)
_PROMPT_TOKENS = re.compile(
    r"(\d+) in the messages|(\d+) input tokens|\"n_prompt_tokens\":\s*(\d+)", re.IGNORECASE
)
Messages = list[dict[str, str]]
_PENALTIES = ("repetition_penalty", "frequency_penalty", "presence_penalty")
_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
# Streamed answers read through stream_transport (plain http only); False: httpx's own path.
FAST_STREAMS = True


def _tag(request: httpx.Request) -> None:
    """Tie the upstream request to ours: the request id, and the trace while tracing is on."""
    request_id = request_context.current()
    if request_id is not None:
        request.headers[request_context.HEADER] = request_id
    tracing.inject(request.headers)


async def _atag(request: httpx.Request) -> None:
    _tag(request)


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    usage: dict[str, int] = field(default_factory=dict)
    finish_reason: str | None = None


def how_to_start(settings: LLMSettings) -> str:
    return (
        "Start the model server with `rag llm serve` (vLLM on a GPU host, `transformers serve` "
        f"with a small local model elsewhere) or e.g. `vllm serve {settings.model} --port "
        "8000`, set RAG_LLM__BASE_URL to its /v1 URL, or ask with retrieval_only=true to get "
        "the passages without an answer."
    )


def _as_json_object(fmt: Any) -> Any:
    """A `json_schema` response_format in the `json_object` + `schema` form older OpenAI-like
    servers take (llama-cpp-python); anything else unchanged."""
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return {"type": "json_object", "schema": fmt["json_schema"]["schema"]}
    return fmt


def _usage(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool)}


class SSEDecoder:
    """Incremental Server-Sent Events decoder: bytes in, `data:` payloads out."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        payloads = (line[5:].strip() for line in lines if line.startswith(b"data:"))
        return [p.decode("utf-8", "replace") for p in payloads if p]


class LLMStream:
    """An upstream stream whose headers said 200. Iterate deltas(); model, usage and
    finish_reason fill in as chunks arrive. Closing it (or cancelling the task that iterates
    it) closes the upstream connection, which makes vLLM abort the generation."""

    def __init__(
        self,
        response: httpx.Response,
        client: LLMClient,
        *,
        started: float | None = None,
        span: Any = None,
    ) -> None:
        self._response = response
        self._client = client
        self._decoder = SSEDecoder()
        self._done = False
        self._error: LLMBadResponse | None = None  # raised after the text before it is out
        self.model = client.settings.model
        self.usage: dict[str, int] = {}
        self.finish_reason: str | None = None
        # For the metrics: when the request was sent, first and last text, content chunks
        # (one token each from vLLM; the usage count replaces it when the server sends one).
        self._started = time.perf_counter() if started is None else started
        self._first_at: float | None = None
        self._last_at = 0.0
        self._pieces = 0
        self._span = span
        self._observed = False

    async def deltas(self) -> AsyncGenerator[str, None]:
        """Text as it arrives.

        A reader task only collects the upstream's bytes; this generator decodes whatever has
        arrived each time its consumer comes back for more. While the client path keeps up
        that is one chunk, passed on at once; when the upstream is faster, the chunks that
        piled up are decoded in one go and sent as one piece, so per-token costs stay off the
        path to the client (HTTP parsing of each upstream chunk is all that remains).
        """
        arrived: list[bytes] = []
        wake = asyncio.Event()
        outcome: list[Exception | None] = []  # set once the upstream has finished

        async def pump() -> None:
            try:
                async for chunk in self._response.aiter_bytes():
                    arrived.append(chunk)
                    if not wake.is_set():  # the consumer is waiting: let it pass this on now
                        wake.set()
                        await asyncio.sleep(0)
                outcome.append(None)
            except Exception as exc:  # handed to the consumer, raised there
                outcome.append(self._mapped(exc))
            finally:
                wake.set()

        reader = asyncio.ensure_future(pump())
        try:
            while not self._done:
                if arrived:
                    data = b"".join(arrived)
                    arrived.clear()
                    text = self._decode(data)
                    if text:
                        self._last_at = time.perf_counter()
                        if self._first_at is None:
                            self._first_at = self._last_at
                            metrics.LLM_TTFT_SECONDS.labels(self._client.name).observe(
                                self._last_at - self._started
                            )
                        yield text
                    if self._error is not None:
                        metrics.LLM_ERRORS.labels(kind="stream_error").inc()
                        raise self._error
                    continue
                if outcome:
                    if outcome[0] is not None:
                        raise outcome[0]
                    return
                wake.clear()
                await wake.wait()
        except Exception as exc:  # a stream the consumer abandons is observed by aclose()
            self._observe(error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            with anyio.CancelScope(shield=True):
                if self._done and not reader.done():
                    # Read the few bytes after [DONE] (the body's end), so the connection goes
                    # back to the pool instead of being closed: the next request skips a connect.
                    await asyncio.wait([reader], timeout=1.0)
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            await self.aclose()

    def _decode(self, data: bytes) -> str:
        payloads = self._decoder.feed(data)
        if "[DONE]" in payloads:
            self._done = True
            payloads = payloads[: payloads.index("[DONE]")]
        if not payloads:
            return ""
        try:  # one parse for the whole batch; per payload only to find a bad one
            chunks = json.loads("[" + ",".join(payloads) + "]")
        except ValueError:
            chunks = None
        texts = []
        try:
            for i, payload in enumerate(payloads):
                texts.append(self._take(chunks[i] if chunks else self._parse(payload)))
        except LLMBadResponse as exc:
            self._error = exc
        return "".join(texts)

    @staticmethod
    def _parse(payload: str) -> Any:
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise LLMBadResponse(f"unexpected stream chunk: {payload[:200]}") from exc

    def _take(self, data: Any) -> str:
        if not isinstance(data, dict):
            raise LLMBadResponse(f"unexpected stream chunk: {str(data)[:200]}")
        if data.get("error"):
            error = data["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise LLMBadResponse(f"the LLM failed while answering: {message}")
        if data.get("model"):
            self.model = data["model"]
        if data.get("usage"):
            self.usage = _usage(data["usage"])
        choices = data.get("choices")
        if not choices:
            return ""
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        content = (choice.get("delta") or {}).get("content")
        if isinstance(content, str) and content:
            self._pieces += 1
            return content
        return ""

    def _mapped(self, exc: Exception) -> Exception:
        if isinstance(exc, httpx.TimeoutException):
            self._client.breaker.failure()
            metrics.LLM_ERRORS.labels(kind="stream_timeout").inc()
            timeout = self._client.settings.read_timeout_s
            error: Exception = LLMTimeout(
                f"the LLM at {self._client.url} stopped sending tokens for {timeout:g} s"
            )
        elif isinstance(exc, httpx.TransportError):
            self._client.breaker.failure()
            metrics.LLM_ERRORS.labels(kind="stream_broken").inc()
            error = LLMBadResponse(
                f"the stream from the LLM at {self._client.url} broke off "
                f"({exc.__class__.__name__})"
            )
        else:
            return exc
        error.__cause__ = exc
        return error

    def _observe(self, error: str | None = None) -> None:
        """Metrics and span of the finished (or abandoned) stream; once."""
        if self._observed:
            return
        self._observed = True
        now = time.perf_counter()
        route = self._client.name
        tokens = self.usage.get("completion_tokens") or self._pieces
        metrics.LLM_SECONDS.observe(now - self._started)
        metrics.LLM_COMPLETION_TOKENS.labels(route).inc(tokens)
        if self._first_at is not None and tokens > 1 and self._last_at > self._first_at:
            # The first token ends the prefill; speed is what came after it.
            speed = (tokens - 1) / (self._last_at - self._first_at)
            metrics.LLM_TOKENS_PER_SECOND.labels(route).observe(speed)
        ttft = None if self._first_at is None else self._first_at - self._started
        log.debug(
            "LLM stream from %s ended: %d tokens in %.3f s, first after %s s%s",
            self._client.url,
            tokens,
            now - self._started,
            "-" if ttft is None else f"{ttft:.3f}",
            f" ({error})" if error else "",
        )
        tracing.end(
            self._span,
            {"llm.completion_tokens": tokens, "llm.model": self.model},
            error=error,
        )

    async def aclose(self) -> None:
        self._observe()
        # Shielded: when the downstream client disconnects, this runs inside a cancelled scope,
        # and the upstream connection must still be closed, not left to the garbage collector.
        with anyio.CancelScope(shield=True):
            await self._response.aclose()


class LLMClient:
    """The chat client of one upstream (one model route).

    Faults: connect and read timeouts, bounded retries with jittered exponential backoff for
    what is worth retrying (connection failures, connect timeouts, 429 and 502-504), a circuit
    breaker per upstream, and the mapping of httpx errors and upstream statuses to
    rag.core.errors. A read timeout is not retried: the server may still be generating, and a
    second request would double its load.

    Generation is async (the API streams; a client that goes away must cancel the upstream
    request at once); ping and model_info are sync for health checks and the CLI. Every request
    carries the current request id as X-Request-ID (vLLM logs it), and the trace context while
    tracing is on (`_tag`). Metrics: call time, time to first token and tokens/s per route, and
    every failure by kind (rag/core/metrics.py).
    """

    def __init__(
        self,
        settings: LLMSettings,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        *,
        name: str = "default",
    ) -> None:
        self.settings = settings
        self.name = name
        self.url = f"{settings.base_url}/chat/completions"
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)
        self._transport = transport
        self._timeout = httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s)
        self._headers = {"Authorization": f"Bearer {settings.api_key}"}
        self._http = httpx.Client(
            base_url=settings.base_url,
            timeout=self._timeout,
            transport=transport if isinstance(transport, httpx.BaseTransport) else None,
            headers=self._headers,
            event_hooks={"request": [_tag]},
        )
        self._ahttp: httpx.AsyncClient | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._refused_repetition_penalty = False
        self._refused_json_schema = False

    def _aclient(self) -> httpx.AsyncClient:
        # Pooled connections belong to one event loop; the CLI and tests may run several.
        loop = asyncio.get_running_loop()
        if self._ahttp is None or self._aloop is not loop:
            transport = self._transport
            if not isinstance(transport, httpx.AsyncBaseTransport):
                transport = httpx.AsyncHTTPTransport(limits=_LIMITS)
                if FAST_STREAMS:  # streamed answers over plain http skip httpx's chunk parsing
                    transport = StreamTransport(transport)
            self._ahttp = httpx.AsyncClient(
                base_url=self.settings.base_url,
                timeout=self._timeout,
                transport=transport,
                headers=self._headers,
                event_hooks={"request": [_atag]},
            )
            self._aloop = loop
        return self._ahttp

    def close(self) -> None:
        self._http.close()
        ahttp, self._ahttp = self._ahttp, None
        if ahttp is not None and self._aloop is not None and not self._aloop.is_closed():
            try:
                if asyncio.get_running_loop() is self._aloop:
                    self._aloop.create_task(ahttp.aclose())
            except RuntimeError:  # no running loop here: the connections die with their loop
                pass

    # --- sync helpers for health checks and the CLI -----------------------------------------

    def ping(self) -> bool:
        try:
            return self._http.get("/models", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def model_info(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The /models entry for our model (vLLM includes max_model_len), if it answers."""
        try:
            data = self._http.get("/models", timeout=timeout).json().get("data") or []
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        for entry in data:
            if isinstance(entry, dict) and entry.get("id") == self.settings.model:
                return entry
        return data[0] if data and isinstance(data[0], dict) else None

    # --- generation ----------------------------------------------------------------------------

    def body(self, messages: Messages, *, stream: bool, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": messages,
            "max_tokens": self.settings.max_tokens,
            "temperature": self.settings.temperature,
            "stream": stream,
        }
        if stream and self.settings.stream_usage:
            body["stream_options"] = {"include_usage": True}
        body.update(self._penalties())
        body.update({k: v for k, v in extra.items() if v is not None})
        if self._refused_json_schema and "response_format" in body:
            body["response_format"] = _as_json_object(body["response_format"])
        return body

    def _penalties(self) -> dict[str, float]:
        """The configured repetition penalties (docs/generation.md). Once the server has refused
        vLLM's repetition_penalty, it goes as frequency_penalty = repetition_penalty - 1, which
        `transformers serve` turns back into that repetition penalty (and OpenAI's additive
        penalty of that size is as mild)."""
        cfg = self.settings
        penalties = {
            "repetition_penalty": cfg.repetition_penalty,
            "frequency_penalty": cfg.frequency_penalty,
            "presence_penalty": cfg.presence_penalty,
        }
        if self._refused_repetition_penalty:
            rp = penalties.pop("repetition_penalty")
            if penalties["frequency_penalty"] is None and rp is not None:
                penalties["frequency_penalty"] = round(rp - 1.0, 6)
        return {k: v for k, v in penalties.items() if v is not None}

    def _refuses_penalty(self, response: httpx.Response, body: dict[str, Any]) -> bool:
        """The server refused the request for carrying repetition_penalty (strict OpenAI
        schemas: `transformers serve` answers 422 "Unexpected fields", OpenAI 400
        "Unrecognized request argument"): from now on this client sends the OpenAI field."""
        if (
            response.status_code not in (400, 422)
            or "repetition_penalty" not in body
            or "repetition_penalty" not in response.text
        ):
            return False
        if not self._refused_repetition_penalty:
            log.warning(
                "the LLM at %s refuses repetition_penalty; sending frequency_penalty instead",
                self.url,
            )
        self._refused_repetition_penalty = True
        return True

    def _refuses_json_schema(self, response: httpx.Response, body: dict[str, Any]) -> bool:
        """The server refused a `json_schema` response_format (llama-cpp-python's server takes
        only `json_object`, with the schema beside it, and answers 500 naming the field): from
        now on this client sends that form, which it turns into a grammar all the same."""
        fmt = body.get("response_format")
        if (
            response.status_code not in (400, 422, 500)
            or not isinstance(fmt, dict)
            or fmt.get("type") != "json_schema"
            or "response_format" not in response.text
            or "json_schema" not in response.text
        ):
            return False
        if not self._refused_json_schema:
            log.warning(
                "the LLM at %s refuses json_schema; sending json_object with the schema", self.url
            )
        self._refused_json_schema = True
        return True

    async def complete(self, messages: Messages, **extra: Any) -> Completion:
        started = time.perf_counter()
        with tracing.span("llm.complete", self._span_attributes()) as span:
            response = await self._send(self.body(messages, stream=False, **extra), stream=False)
            try:
                data = response.json()
                choice = data["choices"][0]
                text = choice["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                metrics.LLM_ERRORS.labels(kind="bad_response").inc()
                raise LLMBadResponse(
                    f"the LLM at {self.url} answered in an unexpected format: {response.text[:300]}"
                ) from exc
            elapsed = time.perf_counter() - started
            usage = _usage(data.get("usage"))
            tokens = usage.get("completion_tokens", 0)
            metrics.LLM_SECONDS.observe(elapsed)
            metrics.LLM_COMPLETION_TOKENS.labels(self.name).inc(tokens)
            if tokens and elapsed > 0:  # the prefill is inside: no first-token time to split at
                metrics.LLM_TOKENS_PER_SECOND.labels(self.name).observe(tokens / elapsed)
            tracing.set_attributes(span, {"llm.completion_tokens": tokens})
            log.debug("LLM at %s answered: %d tokens in %.3f s", self.url, tokens, elapsed)
        return Completion(
            text, data.get("model") or self.settings.model, usage, choice.get("finish_reason")
        )

    async def stream(self, messages: Messages, **extra: Any) -> LLMStream:
        """Open a stream; raises the mapped error if the upstream refuses before any token."""
        started = time.perf_counter()
        # The span lasts until the stream ends, so it is started here and ended by LLMStream.
        span = tracing.start("llm.stream", self._span_attributes())
        try:
            with tracing.activate(span):
                response = await self._send(self.body(messages, stream=True, **extra), stream=True)
        except BaseException as exc:
            tracing.end(span, error=f"{type(exc).__name__}: {exc}")
            raise
        return LLMStream(response, self, started=started, span=span)

    def _span_attributes(self) -> tracing.Attributes:
        return {"llm.route": self.name, "llm.model": self.settings.model, "llm.url": self.url}

    async def count_tokens(self, messages: Messages) -> int | None:
        """The server's own prompt token count (vLLM's /tokenize), None where unsupported."""
        root = self.settings.base_url.removesuffix("/v1")
        try:
            response = await self._aclient().post(
                f"{root}/tokenize",
                json={"model": self.settings.model, "messages": messages},
                timeout=self.settings.connect_timeout_s,
            )
            count = response.json().get("count") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return count if isinstance(count, int) else None

    async def _send(self, body: dict[str, Any], *, stream: bool) -> httpx.Response:
        wait = self.breaker.acquire()
        if wait is not None:
            metrics.LLM_ERRORS.labels(kind="circuit_open").inc()
            raise LLMCircuitOpen(
                f"the LLM at {self.url} failed {self.breaker.threshold} times in a row; not "
                f"trying it again for {wait:.0f} s. " + how_to_start(self.settings),
                retry_after_s=wait,
            )
        client = self._aclient()
        attempts = self.settings.max_retries + 1
        attempt = 0
        while True:
            try:
                request = client.build_request(
                    "POST",
                    "/chat/completions",
                    json=body,
                    # Whole answers take the lean transport too: httpx's async stack costs
                    # about 1 ms per call here, which is most of a short call's overhead.
                    extensions={STREAM_EXTENSION: True},
                )
                response = await client.send(request, stream=stream)
            except httpx.HTTPError as exc:
                failure = self._transport_failure(exc)
            else:
                if response.status_code < 400:
                    self.breaker.success()
                    return response
                await response.aread()
                await response.aclose()
                if self._refuses_penalty(response, body):
                    # Not a failed attempt: the same request at once, in the server's dialect.
                    body = {k: v for k, v in body.items() if k not in _PENALTIES}
                    body.update(self._penalties())
                    continue
                if self._refuses_json_schema(response, body):
                    body = {**body, "response_format": _as_json_object(body["response_format"])}
                    continue
                failure = self._status_failure(response)
            delay = self._delay(attempt, failure) if attempt + 1 < attempts else None
            if delay is None:
                if failure.unhealthy:
                    self.breaker.failure()
                else:
                    self.breaker.release()
                raise failure.error
            log.info(
                "LLM call failed (%s); retry %d in %.2f s", failure.error.code, attempt + 1, delay
            )
            await asyncio.sleep(delay)
            attempt += 1

    def _delay(self, attempt: int, failure: _Failure) -> float | None:
        """Backoff before the next attempt; None when not retryable, or when the upstream
        asks for a longer wait than we would spend inside one request."""
        if not failure.retryable:
            return None
        cfg = self.settings
        delay = min(cfg.retry_backoff_max_s, cfg.retry_backoff_s * 2**attempt)
        delay *= 0.5 + random.random() / 2
        if failure.asked_wait_s is not None:
            if failure.asked_wait_s > cfg.retry_backoff_max_s:
                return None
            delay = max(delay, failure.asked_wait_s)
        return delay

    def _transport_failure(self, exc: httpx.HTTPError) -> _Failure:
        if isinstance(exc, httpx.ConnectTimeout):
            metrics.LLM_ERRORS.labels(kind="connect_timeout").inc()
            message = (
                f"could not connect to the LLM at {self.url} within "
                f"{self.settings.connect_timeout_s:g} s. "
            )
            return _Failure(LLMUnavailable(message + how_to_start(self.settings), retry_after_s=10))
        if isinstance(exc, httpx.TimeoutException):
            metrics.LLM_ERRORS.labels(kind="timeout").inc()
            message = (
                f"the LLM at {self.url} did not answer within {self.settings.read_timeout_s:g} s"
            )
            # Not retried: the server may still be generating, and a second request would
            # double its load.
            return _Failure(LLMTimeout(message), retryable=False)
        metrics.LLM_ERRORS.labels(kind="unreachable").inc()
        message = f"cannot reach the LLM at {self.url} ({exc.__class__.__name__}). "
        return _Failure(
            LLMUnavailable(message + how_to_start(self.settings), retry_after_s=10),
            retryable=isinstance(exc, httpx.TransportError),
        )

    def _status_failure(self, response: httpx.Response) -> _Failure:
        status = response.status_code
        detail = response.text[:500]
        metrics.LLM_ERRORS.labels(kind=f"http_{status}").inc()
        if status in _RETRYABLE_STATUS:
            header = response.headers.get("retry-after", "").strip()
            asked = float(header) if header.replace(".", "", 1).isdigit() else None
            error = LLMUnavailable(
                f"the LLM at {self.url} is overloaded or starting (HTTP {status}): {detail}",
                retry_after_s=asked if asked is not None else 5,
            )
            return _Failure(error, asked_wait_s=asked)
        if status in (400, 413, 422) and _CONTEXT_ERROR.search(detail):
            limit = _MAX_CONTEXT.search(detail)
            counted = _PROMPT_TOKENS.search(detail)
            context_error = LLMContextLengthExceeded(
                f"the prompt is longer than the LLM's context: {detail}",
                max_context=int(next(g for g in limit.groups() if g)) if limit else None,
                prompt_tokens=int(next(g for g in counted.groups() if g)) if counted else None,
            )
            return _Failure(context_error, retryable=False, unhealthy=False)
        if status in (401, 403):
            message = (
                f"the LLM at {self.url} refused our credentials (HTTP {status}); check "
                "RAG_LLM__API_KEY"
            )
            return _Failure(LLMBadResponse(message), retryable=False, unhealthy=False)
        return _Failure(
            LLMBadResponse(f"the LLM at {self.url} answered HTTP {status}: {detail}"),
            retryable=False,
            unhealthy=status >= 500,
        )


@dataclass(frozen=True)
class _Failure:
    error: LLMError
    retryable: bool = True
    unhealthy: bool = True  # counts against the circuit breaker
    asked_wait_s: float | None = None  # the upstream's Retry-After
