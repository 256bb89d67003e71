"""The bots' one path: verify a callback, acknowledge it at once, answer in the background.

    callback ─ adapter.receive ─ Refused ──────────────> the platform's refusal (logged)
       ├─ nonce seen before (replay) ──────────────────> the platform's refusal (logged)
       ├─ event seen before (the platform retrying) ───> ack, nothing answered again
       └─ ack now ── task: feedback command? ── QuestionLog.feedback / handoff ── send
                           └─ question ── thread's conversation ── AnswerService.ask ── send

The task acts as the bot (`BotRunner._handle`); a failed send is retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import anyio
import httpx

from rag.core import tenancy
from rag.core.config import BotSettings
from rag.core.errors import NotFound, RagError
from rag.integrations.bots.adapter import (
    Adapter,
    BotConfig,
    Callback,
    Message,
    Refused,
    Reply,
    Response,
    SendFailed,
    plain,
)
from rag.integrations.bots.dingtalk import DingTalkAdapter
from rag.integrations.bots.feishu import FeishuAdapter
from rag.integrations.bots.slack import SlackAdapter
from rag.integrations.bots.store import BotStore
from rag.integrations.bots.wecom import WeComAdapter
from rag.qa.answer import Answer, AskSpec, Citation
from rag.qa.assistants import spec_for
from rag.qa.conversations import Conversations
from rag.qa.question_log import QuestionLog
from rag.qa.service import AnswerService

log = logging.getLogger(__name__)

# A message that is exactly one of these rates the thread's last answer, or asks for a person.
UP = frozenset({"👍", "+1", ":+1:", ":thumbsup:", "有用"})
DOWN = frozenset({"👎", "-1", ":-1:", ":thumbsdown:", "没用"})
HUMAN = frozenset({"转人工", "human"})
MAX_LAST_ANSWERS = 10_000  # the in-memory thread -> last answer id map; the log backs it


def _zh(text: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in text)


def _notice(kind: str, zh: bool) -> str:
    notices = {
        "rated": ("谢谢反馈，已记录。", "Thanks, your feedback was recorded."),
        "handoff": ("已转人工，稍后会有同事联系你。", "A person will take over and follow up."),
        "nothing": ("这个会话里还没有可评价的回答。", "There is no answer in this thread yet."),
        "failed": ("抱歉，暂时无法回答，请稍后再试。", "Sorry, I cannot answer right now."),
        "handoff_hint": (
            "（回复“转人工”可联系人工客服）",
            "(Reply 'human' to reach a person.)",
        ),
    }
    return notices[kind][0 if zh else 1]


def source_line(c: Citation) -> str:
    """ "[n] file p.X" (p.X-Y over several pages)."""
    p = c.passage
    first = p.first_page
    pages = ""
    if first > 0:
        pages = f" p.{first}" if p.page_end <= first else f" p.{first}-{p.page_end}"
    return f"[{c.index}] {p.filename}{pages}"


def reply_of(answer: Answer, zh: bool) -> Reply:
    text = answer.answer or ""
    if answer.needs_handoff:
        text = f"{text}\n{_notice('handoff_hint', zh)}"
    return Reply(text, [source_line(c) for c in answer.citations if c.cited])


class BotRunner:
    """Callbacks of every platform for one process: the store, the adapters, the tasks."""

    def __init__(
        self,
        store: BotStore,
        qa: Callable[[], AnswerService],
        conversations: Conversations,
        journal: QuestionLog,
        settings: BotSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self.qa = qa  # a provider: building the answer service may connect to the cache
        self.conversations = conversations
        self.journal = journal
        self.settings = settings
        self.adapters: dict[str, Adapter] = {
            a.platform: a
            for a in (WeComAdapter(), DingTalkAdapter(), FeishuAdapter(), SlackAdapter())
        }
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: dict[tuple[str, str], str] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}  # bot id -> its concurrent answers

    def adapter(self, platform: str) -> Adapter:
        found = self.adapters.get(platform)
        if found is None:
            raise NotFound(f"no adapter for platform {platform!r}")
        return found

    # --- the callback ------------------------------------------------------------------------

    async def callback(self, bot_id: str, call: Callback) -> Response:
        """The response to a platform's callback; any answer follows in a background task."""
        try:
            bot = await anyio.to_thread.run_sync(self.store.config, bot_id)
        except NotFound:
            log.warning("bot %s: callback for an unknown bot refused", bot_id)
            raise  # the API's 404
        adapter = self.adapter(bot.platform)
        if not bot.active:
            # Switched off: the platform's refusal to everything, URL verification included,
            # never a 5xx (which platforms retry) and nothing answered.
            log.warning("bot %s (%s): callback refused: the bot is inactive", bot.id, bot.platform)
            return adapter.refusal("inactive")
        try:
            inbound = adapter.receive(bot, call, time.time(), self.settings.timestamp_tolerance_s)
        except Refused as refused:
            log.warning("bot %s (%s): callback refused: %s", bot.id, bot.platform, refused.reason)
            return refused.response
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # A body of an unexpected shape: refused like a forgery, never a 5xx to retry.
            log.warning("bot %s (%s): callback refused: malformed (%r)", bot.id, bot.platform, exc)
            return adapter.refusal("malformed")
        if not await anyio.to_thread.run_sync(self.store.claim, bot.id, inbound.nonces):
            log.warning("bot %s (%s): callback refused: replayed nonce", bot.id, bot.platform)
            return adapter.refusal("replayed nonce")
        if inbound.dedupe is not None and not await anyio.to_thread.run_sync(
            self.store.claim, bot.id, (inbound.dedupe,)
        ):
            log.info(
                "bot %s (%s): %s delivered again, not answered twice",
                bot.id,
                bot.platform,
                inbound.dedupe,
            )
            return inbound.ack
        if inbound.message is not None and inbound.message.text.strip():
            self._spawn(bot, inbound.message)
        return inbound.ack

    def _spawn(self, bot: BotConfig, message: Message) -> None:
        task = asyncio.get_running_loop().create_task(self._handle(bot, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Cancel the answers still running and close the HTTP client (shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def running(self) -> int:
        """How many answers are being generated or sent now."""
        return len(self._tasks)

    # --- answering ---------------------------------------------------------------------------

    async def _handle(self, bot: BotConfig, message: Message) -> None:
        """Answer (or act on a feedback command) as Principal("bot:<id>"): the bot's tenant,
        scope query, its assistant's knowledge base only; then send the reply."""
        principal = tenancy.Principal(
            actor=f"bot:{bot.id}",
            tenant_id=bot.tenant_id,
            scopes=frozenset({"query"}),
            kb_ids=frozenset({bot.kb_id}),
        )
        text = plain(message.text)
        zh = _zh(text)
        try:
            with tenancy.acting_as(principal):
                if text in UP or text in DOWN or text.lower() in HUMAN:
                    reply = Reply(await self._command(bot, message, text, zh))
                else:
                    reply = await self._answer(bot, message, text, zh)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            level = logging.WARNING if isinstance(exc, RagError) else logging.ERROR
            log.log(
                level,
                "bot %s (%s): could not answer: %s",
                bot.id,
                bot.platform,
                exc,
                exc_info=not isinstance(exc, RagError),
            )
            reply = Reply(_notice("failed", zh))
        await self._send(bot, message.target, reply)

    async def _answer(self, bot: BotConfig, message: Message, text: str, zh: bool) -> Reply:
        slots = self._slots.setdefault(bot.id, asyncio.Semaphore(self.settings.concurrent_answers))
        async with slots:
            return await self._generate(bot, message, text, zh)

    async def _generate(self, bot: BotConfig, message: Message, text: str, zh: bool) -> Reply:
        conversation = await anyio.to_thread.run_sync(
            self.store.thread_conversation, bot, message.thread_key, self._new_conversation
        )

        def spec() -> AskSpec:
            with self.store.db.read() as session:
                asked = AskSpec(bot.kb_id, text, conversation_id=conversation)
                return replace(spec_for(session, bot.assistant_id, asked), channel=bot.platform)

        result = await self.qa().ask(await anyio.to_thread.run_sync(spec))
        assert result.answer is not None  # not streamed
        if result.answer.answer_id is not None:
            self._remember((bot.id, message.thread_key), result.answer.answer_id)
        return reply_of(result.answer, zh)

    def _new_conversation(self, kb_id: str, title: str) -> str:
        return self.conversations.create(kb_id, title).id

    def _remember(self, key: tuple[str, str], answer_id: str) -> None:
        self._last.pop(key, None)
        self._last[key] = answer_id
        while len(self._last) > MAX_LAST_ANSWERS:  # the oldest first: dicts keep their order
            self._last.pop(next(iter(self._last)))

    async def _command(self, bot: BotConfig, message: Message, text: str, zh: bool) -> str:
        answer_id = self._last.get((bot.id, message.thread_key))
        if answer_id is None:  # another replica answered, or this one restarted: ask the log
            answer_id = await anyio.to_thread.run_sync(self._logged_answer, bot, message)
        if answer_id is None:
            return _notice("nothing", zh)
        if text.lower() in HUMAN:
            await anyio.to_thread.run_sync(
                self.journal.handoff, answer_id, f"asked on {bot.platform}"
            )
            return _notice("handoff", zh)
        await anyio.to_thread.run_sync(self.journal.feedback, answer_id, 1 if text in UP else -1)
        return _notice("rated", zh)

    def _logged_answer(self, bot: BotConfig, message: Message) -> str | None:
        conversation = self.store.known_thread(bot.id, message.thread_key)
        return None if conversation is None else self.store.last_answer(conversation)

    # --- sending -----------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.settings.send_timeout_s, transport=self._transport
            )
        return self._http

    async def _send(self, bot: BotConfig, target: Mapping[str, Any], reply: Reply) -> None:
        adapter = self.adapter(bot.platform)
        attempts = self.settings.send_attempts
        for attempt in range(1, attempts + 1):
            try:
                await adapter.send(self._client(), bot, target, reply)
                return
            except (SendFailed, httpx.HTTPError, ValueError) as exc:
                retry = not isinstance(exc, SendFailed) or exc.retry
                log.warning(
                    "bot %s (%s): send failed (attempt %d of %d): %s",
                    bot.id,
                    bot.platform,
                    attempt,
                    attempts,
                    exc,
                )
                if not retry or attempt == attempts:
                    log.error(
                        "bot %s (%s): reply dropped after %d attempt(s)",
                        bot.id,
                        bot.platform,
                        attempt,
                    )
                    return
                after = exc.after_s if isinstance(exc, SendFailed) else None
                await asyncio.sleep(after or self.settings.send_backoff_s * 2 ** (attempt - 1))
