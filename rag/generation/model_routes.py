"""Model routing: classes of questions go to different OpenAI-compatible backends and models.

The table is RAG_LLM__ROUTES (see LLMRoute in rag/core/config.py): rules first (keywords, a
regular expression or a preset; first match wins), then the routing classifier's label, else the
default route (RAG_LLM__BASE_URL + RAG_LLM__MODEL); each decision is logged (`Router.decide`).
Each route has its own client, so a failing backend opens only its own circuit breaker. A route
with a `fallback` hands its requests to that route while it is down (`Router.available`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import httpx

from rag.core import metrics
from rag.core.config import LLMRoute, LLMSettings
from rag.generation.failover import RouteHealth
from rag.generation.llm import LLMClient
from rag.generation.route_classifier import Prediction

log = logging.getLogger(__name__)

DEFAULT_ROUTE = "default"
# How long a route's served context (from /models) is trusted; a server that did not answer is
# asked again sooner.
CONTEXT_RECHECK_S = 300.0
CONTEXT_RETRY_S = 10.0
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
    fallback: Route | None = None  # answers while this route is down (one hop)
    replaces: str | None = None  # on a fallback standing in: the route that is down

    @property
    def settings(self) -> LLMSettings:
        return self.client.settings


@dataclass(frozen=True)
class RouteDecision:
    """Why a question went where it went: a rule, the classifier (its label and confidence),
    or the default (no rule, and no confident label)."""

    route: Route
    source: Literal["rule", "classifier", "default"]
    label: str | None = None
    confidence: float | None = None

    def as_dict(self) -> dict[str, Any]:
        confidence = None if self.confidence is None else round(self.confidence, 4)
        return {
            "route": self.route.name,
            "source": self.source,
            "label": self.label,
            "confidence": confidence,
        }


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
        *,
        spawn: Callable[[Callable[[], None]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        classifier: Callable[[str], Prediction] | None = None,
    ) -> None:
        """`spawn` runs the background health checks (default: a daemon thread each);
        `classifier` labels questions no rule matched (None: rules only)."""
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
            self.routes.append(Route(row.name, client, compile_rule(row) if row.has_rule else None))
        self._health: dict[LLMClient, RouteHealth] = {}
        self._wire_fallbacks(settings, spawn, clock)
        self._classifier = classifier
        self._threshold = settings.route_threshold
        # label -> route; a label two rows list goes to the first, as with rules
        rows = reversed(settings.routes)
        self._by_label = {label: row.name for row in rows for label in row.labels}
        self._low_confidence = settings.route_default
        self._clock = clock
        self._context_checked: dict[LLMClient, float] = {}
        if self._by_label and classifier is None:
            log.warning(
                "routes list classifier labels (%s) but no route classifier is trained for this "
                "embedding model: run `rag routes train`; until then rules only",
                ", ".join(sorted(self._by_label)),
            )

    def _wire_fallbacks(
        self,
        settings: LLMSettings,
        spawn: Callable[[Callable[[], None]], None] | None,
        clock: Callable[[], float],
    ) -> None:
        """Each route that names a fallback on another server gets it, and a health check."""
        targets = {DEFAULT_ROUTE: settings.fallback} | {r.name: r.fallback for r in settings.routes}
        plain = {route.name: route for route in self.routes}  # one hop: targets without theirs

        def wired(route: Route) -> Route:
            target = plain.get(targets.get(route.name) or "")
            if target is None or target.client is route.client:  # nothing else to turn to
                return route
            if route.client not in self._health:
                self._health[route.client] = RouteHealth(
                    route.name,
                    route.client.ping,
                    settings.health_interval_s,
                    spawn=spawn,
                    clock=clock,
                )
            return replace(route, fallback=target)

        self.default = wired(self.default)
        self.routes = [wired(route) for route in self.routes]

    def pick(self, question: str) -> Route:
        """Where `question` goes: rules first, then the classifier, else the default."""
        return self._decide(question).route

    def decide(self, question: str) -> RouteDecision:
        """`pick` as the answer path takes it: the decision logged, counted, and the route's
        served context brought up to date. Blocking (embedding, a /models request now and
        then): call it off the event loop."""
        decision = self._decide(question)
        log.info(
            "routing: %s -> route %s (label %s, confidence %s)",
            decision.source,
            decision.route.name,
            decision.label or "-",
            "-" if decision.confidence is None else f"{decision.confidence:.3f}",
        )
        metrics.ROUTE_DECISIONS.labels(decision.route.name, decision.source).inc()
        self._follow_served_context(decision.route.client)
        return decision

    def _decide(self, question: str) -> RouteDecision:
        for route in self.routes:
            if route.rule is not None and route.rule.search(question):
                return RouteDecision(route, "rule")
        if self._classifier is None:
            return RouteDecision(self._named(self._low_confidence), "default")
        try:
            guess = self._classifier(question)
        except Exception:  # a broken classifier must not stop answers: rules and default only
            log.exception("route classifier failed; the default route answers")
            return RouteDecision(self._named(self._low_confidence), "default")
        if guess.confidence < self._threshold:
            route = self._named(self._low_confidence)
            return RouteDecision(route, "default", guess.label, guess.confidence)
        route = self._named(self._by_label.get(guess.label))
        return RouteDecision(route, "classifier", guess.label, guess.confidence)

    def _named(self, name: str | None) -> Route:
        return next((r for r in self.routes if r.name == name), self.default)

    def _follow_served_context(self, client: LLMClient) -> None:
        """The token budget follows the served model's real max-model-len: vLLM reports it in
        /models. Asked on first use and every CONTEXT_RECHECK_S (a restarted server may serve
        another length); a server that did not answer is asked again after CONTEXT_RETRY_S."""
        now = self._clock()
        due = self._context_checked.get(client)
        if due is not None and now < due:
            return
        self._context_checked[client] = now + CONTEXT_RETRY_S
        try:
            info = client.model_info(timeout=2.0)
        except Exception:  # whatever the upstream answers, the configured length stays
            info = None
        if info is None:
            return
        self._context_checked[client] = now + CONTEXT_RECHECK_S
        served = info.get("max_model_len")
        if isinstance(served, int) and served >= 512 and served != client.settings.max_model_len:
            log.info(
                "route %s: the server serves %d tokens of context (configured %d); following it",
                client.name,
                served,
                client.settings.max_model_len,
            )
            client.settings = client.settings.model_copy(update={"max_model_len": served})

    def available(self, route: Route) -> Route:
        """`route`, or its fallback standing in while route's circuit is open or its last
        health check failed. With the fallback's own circuit open too, `route` (its error is
        the one worth seeing)."""
        fallback = route.fallback
        if fallback is None:
            return route
        healthy = self._health[route.client].up()  # called always: it keeps the checks going
        if (healthy and route.client.breaker.state != "open") or _open(fallback):
            return route
        return self._stand_in(route, fallback)

    def failed(self, route: Route) -> Route | None:
        """A call to `route` could not reach its server: it is marked down and its fallback
        returned, or None where there is none to turn to."""
        fallback = route.fallback
        if fallback is None:
            return None
        self._health[route.client].down()
        return None if _open(fallback) else self._stand_in(route, fallback)

    @staticmethod
    def _stand_in(route: Route, fallback: Route) -> Route:
        metrics.LLM_FAILOVERS.labels(route.name, fallback.name).inc()
        return replace(fallback, replaces=route.name)

    def close(self) -> None:
        for route in self.routes:
            if route.client is not self.default.client:
                route.client.close()


def _open(route: Route) -> bool:
    return route.client.breaker.state == "open"
