"""Model routing: classes of questions go to different OpenAI-compatible backends and models.

The table is RAG_LLM__ROUTES (see LLMRoute in rag/core/config.py); rules are keywords, a regular
expression or a built-in preset, tried in order, first match wins. A question that matches no
row goes to the default route: RAG_LLM__BASE_URL + RAG_LLM__MODEL (Qwen2.5-7B-Instruct). Each
route has its own client, so a failing backend opens only its own circuit breaker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from rag.core.config import LLMRoute, LLMSettings
from rag.generation.llm import LLMClient

DEFAULT_ROUTE = "default"
# Deliberately plain rules: a router must be cheap and predictable, not clever.
PRESETS = {
    "code": (
        r"```|\b(?:def|class|import|return|function|const|lambda|printf|select|stack ?trace|"
        r"traceback|exception|segfault|compile[rd]?|syntax|regex|python|java(?:script)?|c\+\+|"
        r"golang|rust|bash|shell script|sql|json|yaml|api)\b|代码|函数|报错|编程|脚本|编译|正则"
    ),
    "math": (
        r"\d\s*[-+*/^=×÷]\s*\d|[∫∑√π≈≤≥]|\b(?:equation|integral|derivative|probability|"
        r"calculate|compute|solve|sum of|percentage|average of)\b"
        r"|方程|积分|导数|概率|计算|求解|公式"
    ),
}


@dataclass(frozen=True)
class Route:
    name: str
    client: LLMClient
    rule: re.Pattern[str] | None = None

    @property
    def settings(self) -> LLMSettings:
        return self.client.settings


def compile_rule(route: LLMRoute) -> re.Pattern[str]:
    parts = []
    for word in route.keywords:
        escaped = re.escape(word.strip())
        parts.append(
            rf"\b{escaped}\b" if re.fullmatch(r"[\w .+#-]+", word.strip(), re.A) else escaped
        )
    if route.pattern:
        parts.append(f"(?:{route.pattern})")
    if route.preset:
        parts.append(f"(?:{PRESETS[route.preset]})")
    return re.compile("|".join(parts), re.IGNORECASE)


class Router:
    def __init__(
        self,
        settings: LLMSettings,
        default: LLMClient,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.default = Route(DEFAULT_ROUTE, default)
        self.routes: list[Route] = []
        for row in settings.routes:
            effective = settings.model_copy(
                update={
                    "model": row.model,
                    "base_url": row.base_url or settings.base_url,
                    "api_key": row.api_key or settings.api_key,
                    "max_model_len": row.max_model_len or settings.max_model_len,
                    "max_tokens": row.max_tokens or settings.max_tokens,
                    "routes": [],
                }
            )
            same = (
                effective.model_dump()
                == default.settings.model_copy(update={"routes": []}).model_dump()
            )
            client = default if same else LLMClient(effective, transport, name=row.name)
            self.routes.append(Route(row.name, client, compile_rule(row)))

    def pick(self, question: str) -> Route:
        for route in self.routes:
            if route.rule is not None and route.rule.search(question):
                return route
        return self.default

    def close(self) -> None:
        for route in self.routes:
            if route.client is not self.default.client:
                route.client.close()
