"""Orchestration: (condense) -> route -> retrieve -> prompt -> generate -> citations (-> record).

    history? ── condense with the LLM ──> standalone question ──> route ──> retrieve
    prompt(system, history, references, question) ──> LLM (stream or not)
      └─ "context too long" ──> repack smaller, once; route down ──> its fallback route ──> LLM
    answer ──> sanitised, stopped if it degenerates ──> [n] markers -> citations ──> SQL

Async, because streaming must be: a client that disconnects cancels the task, which closes
the upstream connection. Blocking work (retrieval, SQL) runs in worker threads.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import anyio

from rag.core import tracing
from rag.core.config import LLMSettings
from rag.core.errors import InvalidInput, LLMContextLengthExceeded, LLMUnavailable
from rag.generation import structured
from rag.generation.llm import LLMStream
from rag.generation.model_routes import Route, Router
from rag.ml.tokens import TokenCounter
from rag.qa.conversations import Conversations
from rag.qa.degenerate import AnswerGuard, guard
from rag.qa.prompt import (
    NOT_COVERED,
    Prompt,
    build_condense_prompt,
    build_prompt,
    count_chat,
    detect_language,
    load_templates,
)
from rag.qa.sanitize import AnswerSanitizer
from rag.retrieval.relevance import RelevanceJudge, Verdict
from rag.retrieval.retriever import KbCheck, Passage, Retriever

log = logging.getLogger(__name__)
_MARKER = re.compile(r"\[(\d{1,3})\]")
_LABEL_PREFIX = re.compile(
    r"^\s*(?:standalone question|rewritten question|question|问题|改写后的问题)\s*[:：]\s*", re.I
)
T = TypeVar("T")


@dataclass(frozen=True)
class Citation:
    index: int
    passage: Passage
    cited: bool  # the answer text refers to it with [index]

    def as_dict(self) -> dict[str, Any]:
        p = self.passage
        return {
            "index": self.index,
            "chunk_id": p.chunk_id,
            "document_id": p.document_id,
            "filename": p.filename,
            "page": p.page,
            "page_end": p.page_end,
            "text": p.text,
            "score": p.score,
            "cited": self.cited,
        }


@dataclass(frozen=True)
class Answer:
    answer: str | None
    citations: list[Citation]
    model: str | None
    usage: dict[str, int] = field(default_factory=dict)
    retrieval_only: bool = False
    route: str | None = None
    question: str | None = None  # the standalone question retrieval used
    parsed: Any = None  # the validated JSON value, with a response_format
    finish_reason: str | None = None
    conversation_id: str | None = None
    message_id: int | None = None
    # Why the generation was stopped or judged useless ("echo", "repetition"); None: it looks sound.
    degenerate: str | None = None
    # False: the best hit's relevance was below the KB's threshold, so the answer is the fixed
    # "not covered" message and no LLM was called (rag/retrieval/relevance.py).
    covered: bool = True
    # The route that was down when its fallback (`route`) answered instead; None: it was up.
    fallback_from: str | None = None
    # How often a structured answer was asked for again before its JSON passed the schema.
    structured_retries: int = 0
    # How the route was chosen: {route, source (rule, classifier, default), label, confidence}.
    routing: dict[str, Any] | None = None
    # The question log's id for this answer (rag/qa/question_log.py): feedback and hand-offs
    # name it. None: not logged (retrieval-only results, the CLI).
    answer_id: str | None = None
    # Returned verbatim from a curated answer an admin wrote (no retrieval, no LLM call).
    curated: bool = False

    @property
    def grounded(self) -> bool:
        """The answer cites at least one retrieved passage with [n]."""
        return any(c.cited for c in self.citations)

    @property
    def truncated(self) -> bool:
        """Generation hit the token limit (finish_reason "length"): the answer is cut off."""
        return self.finish_reason == "length"

    @property
    def needs_handoff(self) -> bool:
        """A person should take over: the knowledge base did not cover the question, or the
        answer cites nothing. A curated answer (written by a person) and a retrieval-only
        result (no answer at all) never suggest it."""
        if self.curated or self.retrieval_only:
            return False
        return not self.covered or not self.grounded


@dataclass(frozen=True)
class AskSpec:
    kb_id: str
    question: str
    top_k: int | None = None
    conversation_id: str | None = None
    # Earlier turns sent by the caller (the OpenAI endpoint); a conversation loads its own.
    history: list[dict[str, str]] = field(default_factory=list)
    response_format: dict[str, Any] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    search_options: dict[str, Any] = field(default_factory=dict)
    # Set from an assistant (rag/qa/assistants.py `AssistantSettings.apply`); None: the defaults.
    assistant_id: str | None = None
    assistant_version: int | None = None
    system_prompt: str | None = None  # replaces the language template's system message
    refusal_text: str | None = None  # replaces the fixed "not covered" text
    top_p: float | None = None
    relevance_threshold: float | None = None  # replaces the knowledge base's threshold
    language: str | None = None  # "zh" or "en" fixed by the assistant; None: RAG_LLM__LANGUAGE
    # Where the question came from (rag/qa/question_log.py CHANNELS): api, openai, console, ...
    channel: str = "api"


@dataclass
class Plan:
    spec: AskSpec
    standalone: str
    history: list[dict[str, str]]
    route: Route
    passages: list[Passage]
    prompt: Prompt
    answer_tokens: int
    verdict: Verdict | None = None  # None: the refusal is off
    routing: dict[str, Any] | None = None  # the RouteDecision, as the answer reports it

    @property
    def covered(self) -> bool:
        return self.verdict is None or self.verdict.covered

    def extra(self) -> dict[str, Any]:
        return {
            "max_tokens": self.answer_tokens,
            "temperature": self.spec.temperature,
            "top_p": self.spec.top_p,  # None: the server's default (left out of the request)
            "response_format": self.spec.response_format,
        }


def _answer_tokens(spec: AskSpec, route: Route) -> int:
    return min(spec.max_tokens or route.settings.max_tokens, route.settings.max_tokens)


def citations_for(prompt: Prompt, text: str) -> list[Citation]:
    used = {int(n) for n in _MARKER.findall(text)}
    return [Citation(i, p, i in used) for i, p in enumerate(prompt.passages, start=1)]


# --- planning ---------------------------------------------------------------------------------


def _checked(spec: AskSpec) -> AskSpec:
    if not spec.question.strip():
        raise InvalidInput("the question is empty")
    fmt = structured.check_format(spec.response_format)
    return spec if fmt is spec.response_format else replace(spec, response_format=fmt)


# --- generating -------------------------------------------------------------------------------


@dataclass
class LiveAnswer:
    """A streaming answer: iterate deltas(), then finish() for citations, usage and record."""

    answerer: Answerer
    plan: Plan
    prompt: Prompt
    upstream: LLMStream
    parts: list[str] = field(default_factory=list)
    guard: AnswerGuard = field(init=False)

    def __post_init__(self) -> None:
        self.guard = guard(self.answerer._sanitizer(self.prompt))

    async def deltas(self) -> AsyncIterator[str]:
        source = self.upstream.deltas()
        try:
            async for delta in source:
                safe = self.guard.feed(delta)
                if safe:
                    self.parts.append(safe)
                    yield safe
                if self.guard.stopped:
                    break
        except Exception:
            rest = self.guard.finish()  # what was held back, cleaned, before the error event
            if rest:
                self.parts.append(rest)
                yield rest
            raise
        if self.guard.stopped:
            # Closing the source closes the upstream response: the server stops generating.
            log.warning("answer stopped early: %s", self.guard.degenerate)
            await source.aclose()
        rest = self.guard.finish()
        if rest:
            self.parts.append(rest)
            yield rest

    async def finish(self) -> Answer:
        text = "".join(self.parts)
        result = Answer(
            text,
            citations_for(self.prompt, text),
            self.upstream.model,
            self.answerer._usage(self.prompt, text, self.upstream.usage),
            route=self.plan.route.name,
            question=self.plan.standalone,
            finish_reason=self.upstream.finish_reason,
            degenerate=self.guard.degenerate,
            fallback_from=self.plan.route.replaces,
        )
        return await self.answerer._record(self.plan, result)

    async def aclose(self) -> None:
        await self.upstream.aclose()


# --- entry points -----------------------------------------------------------------------------


async def _thread(func: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(lambda: func(*args))


class Answerer:
    """Plans and generates answers: retrieval, the prompt, the routed LLM, citations, the
    conversation record. `router` and `tokens` are called on first use (they load files and
    open connections). `relevance`: the judge behind the "not covered" refusal (None: off)."""

    def __init__(
        self,
        retriever: Retriever,
        conversations: Conversations,
        *,
        router: Callable[[], Router],
        tokens: Callable[[], TokenCounter],
        llm_settings: LLMSettings,
        link_allowlist: list[str],
        relevance: RelevanceJudge | None = None,
    ) -> None:
        self.retriever = retriever
        self.relevance = relevance
        self.conversations = conversations
        self.router = router
        self.tokens = tokens
        self.llm_settings = llm_settings
        self.link_allowlist = link_allowlist

    async def condense(self, question: str, history: list[dict[str, str]]) -> str:
        """A follow-up rewritten by the LLM into a question retrieval can use on its own."""
        if not history:
            return question
        cfg = self.llm_settings
        messages = build_condense_prompt(
            question,
            history,
            self.tokens(),
            budget=min(cfg.history_max_tokens, cfg.max_model_len // 2),
            language=cfg.language,
            templates=load_templates(cfg.prompt_dir),
        )
        router = self.router()
        route = router.available(router.default)
        options: dict[str, Any] = {"max_tokens": cfg.condense_max_tokens, "temperature": 0.0}
        try:
            completion = await route.client.complete(messages, **options)
        except LLMUnavailable:
            fallback = router.failed(route)
            if fallback is None:
                raise
            completion = await fallback.client.complete(messages, **options)
        lines = [line.strip() for line in completion.text.strip().splitlines() if line.strip()]
        rewritten = _LABEL_PREFIX.sub("", lines[0]).strip(" \"'“”「」") if lines else ""
        # An empty or rambling rewrite helps retrieval less than the follow-up itself.
        if not rewritten or len(rewritten) > 4 * len(question) + 200:
            return question
        return rewritten

    async def plan(self, spec: AskSpec, admit: KbCheck | None = None) -> Plan:
        """`admit`: a check on the knowledge base that must pass before any LLM call (it has a
        ready document); run in retrieval's own SQL session, or alone before a condensation."""
        spec = _checked(spec)
        history = list(spec.history)
        if spec.conversation_id:
            history = await _thread(self.conversations.history, spec.conversation_id, spec.kb_id)
        if history and admit is not None:  # condensing calls the LLM: check before it
            await _thread(self.retriever.admit, spec.kb_id, admit)
            admit = None
        standalone = await self.condense(spec.question, history)
        router = self.router()
        decision = await _thread(router.decide, standalone)  # may embed the question
        route = router.available(decision.route)
        passages = await _thread(
            lambda: self.retriever.search(
                spec.kb_id, standalone, spec.top_k, check=admit, **spec.search_options
            )
        )
        verdict = None
        if self.relevance is not None:
            judge = self.relevance
            verdict = await _thread(
                lambda: judge.verdict(
                    spec.kb_id, standalone, passages, threshold=spec.relevance_threshold
                )
            )
        answer_tokens = _answer_tokens(spec, route)
        with tracing.span("prompt", {"passages": len(passages), "route": route.name}):
            prompt = self._build(spec, history, route, passages, answer_tokens)
        plan = Plan(spec, standalone, history, route, passages, prompt, answer_tokens, verdict)
        plan.routing = decision.as_dict()
        return plan

    async def refuse(self, plan: Plan) -> Answer:
        """The fixed "not covered" answer in the question's language (or the assistant's own
        refusal text): no LLM call, no citation."""
        language = self._language(plan.spec)
        log.info(
            "not covered: relevance %.3f below %.3f",
            plan.verdict.relevance if plan.verdict else 0.0,
            plan.verdict.threshold if plan.verdict else 0.0,
        )
        result = Answer(
            plan.spec.refusal_text or NOT_COVERED[language],
            [],
            None,
            {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            route=plan.route.name,
            question=plan.standalone,
            finish_reason="stop",
            covered=False,
        )
        return await self._record(plan, result)

    def _build(
        self,
        spec: AskSpec,
        history: list[dict[str, str]],
        route: Route,
        passages: list[Passage],
        answer_tokens: int,
        *,
        max_model_len: int | None = None,
        context_max_tokens: int | None = None,
    ) -> Prompt:
        cfg = self.llm_settings
        return build_prompt(
            spec.question,
            passages,
            self.tokens(),
            max_model_len=max_model_len or route.settings.max_model_len,
            answer_tokens=answer_tokens,
            history=history,
            history_max_tokens=cfg.history_max_tokens,
            context_max_tokens=context_max_tokens,
            language=spec.language or cfg.language,
            templates=load_templates(cfg.prompt_dir),
            system_prompt=spec.system_prompt,
        )

    def _language(self, spec: AskSpec) -> str:
        """The answer's language: the assistant's, else the configured one, else the question's."""
        language = spec.language or self.llm_settings.language
        return detect_language(spec.question) if language == "auto" else language

    async def _repacked(self, plan: Plan, error: LLMContextLengthExceeded) -> Prompt:
        """A smaller prompt after the server refused ours as too long.

        The server's count can exceed ours (another tokenizer, another chat template), so scale
        by the ratio it reported (or by vLLM's /tokenize) and keep a margin; the references shrink
        by a quarter at least, so the second try is always smaller than the first.
        """
        prompt = plan.prompt
        limit = min(
            error.max_context or plan.route.settings.max_model_len,
            plan.route.settings.max_model_len,
        )
        theirs = error.prompt_tokens or await plan.route.client.count_tokens(prompt.messages)
        ratio = max(1.0, theirs / prompt.prompt_tokens) if theirs else 1.0
        max_model_len = plan.answer_tokens + int((limit - plan.answer_tokens) / ratio * 0.95)
        log.warning(
            "the LLM refused a %d-token prompt (server: %s tokens, limit %s); repacking to %d",
            prompt.prompt_tokens,
            theirs,
            error.max_context,
            max_model_len,
        )
        return self._build(
            plan.spec,
            plan.history,
            plan.route,
            plan.passages,
            plan.answer_tokens,
            max_model_len=max_model_len,
            context_max_tokens=prompt.context_tokens * 3 // 4,
        )

    async def _with_repack(
        self, plan: Plan, call: Callable[[Prompt], Awaitable[T]]
    ) -> tuple[Prompt, T]:
        try:
            return plan.prompt, await call(plan.prompt)
        except LLMContextLengthExceeded as error:
            smaller = await self._repacked(plan, error)
            return smaller, await call(smaller)

    async def _calling(
        self, plan: Plan, call: Callable[[Plan, Prompt], Awaitable[T]]
    ) -> tuple[Plan, Prompt, T]:
        """The call on the plan's route; where its server cannot be reached and the route has
        a fallback, the call again on the fallback, with the prompt rebuilt for that route."""
        try:
            prompt, result = await self._with_repack(plan, lambda p: call(plan, p))
            return plan, prompt, result
        except LLMUnavailable as error:
            fallback = self.router().failed(plan.route)
            if fallback is None:
                raise
            log.warning("route %s failed (%s); %s answers", plan.route.name, error, fallback.name)
        answer_tokens = _answer_tokens(plan.spec, fallback)
        moved = replace(
            plan,
            route=fallback,
            answer_tokens=answer_tokens,
            prompt=self._build(plan.spec, plan.history, fallback, plan.passages, answer_tokens),
        )
        prompt, result = await self._with_repack(moved, lambda p: call(moved, p))
        return moved, prompt, result

    async def generate(self, plan: Plan) -> Answer:
        plan, prompt, completion = await self._calling(
            plan, lambda on, p: on.route.client.complete(p.messages, **on.extra())
        )
        usage = self._usage(prompt, completion.text, completion.usage)
        parsed = degenerate = None
        retries = 0
        fmt = plan.spec.response_format
        if fmt is None:
            # The stream's checks on the whole text: cut where a stream would have stopped.
            checked = guard(self._sanitizer(prompt))
            text = checked.feed(completion.text) + checked.finish()
            degenerate = checked.degenerate
        else:
            client = plan.route.client
            valid = await structured.until_valid(
                completion,
                lambda messages: client.complete(messages, **plan.extra()),
                lambda bad, problem: self._corrective(plan, prompt, bad, problem),
                fmt,
                retries=plan.route.settings.json_retries,
                clean=self._sanitizer(prompt).clean,
                route=plan.route.name,
            )
            for again in valid.completions[1:]:
                more = self._usage(prompt, again.text, again.usage)
                usage = {k: usage.get(k, 0) + more.get(k, 0) for k in usage.keys() | more.keys()}
            completion, parsed, retries = valid.completion, valid.value, valid.retries
            # The checked (and cleaned) value, not the raw reply: no code fence, nothing removed
            # from `parsed` still present in the text.
            text = json.dumps(parsed, ensure_ascii=False)
        result = Answer(
            text,
            citations_for(prompt, text),
            completion.model,
            usage,
            route=plan.route.name,
            question=plan.standalone,
            parsed=parsed,
            finish_reason=completion.finish_reason,
            degenerate=degenerate,
            fallback_from=plan.route.replaces,
            structured_retries=retries,
        )
        if degenerate:
            log.warning("answer cut: %s", degenerate)
        return await self._record(plan, result)

    def _corrective(
        self, plan: Plan, prompt: Prompt, bad: str, problem: str
    ) -> list[dict[str, str]]:
        """The prompt plus the invalid answer and what was wrong with it, if that still fits."""
        messages = [
            *prompt.messages,
            {"role": "assistant", "content": bad},
            {"role": "user", "content": f"{problem}. Reply again with only the JSON."},
        ]
        fits = (
            count_chat(self.tokens(), messages) + plan.answer_tokens
            <= plan.route.settings.max_model_len
        )
        return messages if fits else prompt.messages

    def _sanitizer(self, prompt: Prompt) -> AnswerSanitizer:
        """What a planted instruction could make the model write (links out, the system prompt)
        is removed from the answer before anyone sees it (rag/qa/sanitize.py)."""
        system = next((m["content"] for m in prompt.messages if m["role"] == "system"), "")
        return AnswerSanitizer(system, self.link_allowlist)

    def _usage(self, prompt: Prompt, text: str, upstream: dict[str, int]) -> dict[str, int]:
        """The server's counts where it sent them, ours (Qwen's tokenizer) otherwise."""
        usage = dict(upstream)
        usage.setdefault("prompt_tokens", prompt.prompt_tokens)
        usage.setdefault("completion_tokens", self.tokens().count(text))
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return usage

    async def open_stream(self, plan: Plan) -> LiveAnswer:
        """Start generating; errors before the first token raise here (and become HTTP statuses)."""
        if plan.spec.response_format is not None:
            raise InvalidInput(
                "structured output (response_format) is not streamed; ask without stream"
            )
        plan, prompt, upstream = await self._calling(
            plan, lambda on, p: on.route.client.stream(p.messages, **on.extra())
        )
        return LiveAnswer(self, plan, prompt, upstream)

    async def _record(self, plan: Plan, result: Answer) -> Answer:
        result = replace(result, routing=plan.routing)
        conversation_id = plan.spec.conversation_id
        if not conversation_id or result.answer is None:
            return result
        recorded = await _thread(
            lambda: self.conversations.record(
                conversation_id,
                plan.spec.question,
                plan.standalone,
                result.answer or "",
                citations=[c.as_dict() for c in result.citations],
                model=result.model,
                usage=result.usage,
            )
        )
        return replace(result, conversation_id=conversation_id, message_id=recorded.answer_id)

    async def retrieve_only(self, spec: AskSpec) -> Answer:
        passages = await _thread(
            lambda: self.retriever.search(
                spec.kb_id, spec.question, spec.top_k, **spec.search_options
            )
        )
        citations = [Citation(i, p, False) for i, p in enumerate(passages, 1)]
        return Answer(None, citations, None, retrieval_only=True, question=spec.question)

    async def answer(self, spec: AskSpec) -> Answer:
        return await self.generate(await self.plan(spec))
