"""Bots in SQL: create, list, read and delete them (tenant-scoped, audited), the conversation
each chat thread continues, and the nonces seen (a second sighting is a replay).

Credentials are stored as given (checked by the platform's adapter) and never leave this
module except inside a `BotConfig` for the adapter; what callers list shows their names only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from rag.core import tenancy
from rag.core.errors import InvalidInput, NotFound
from rag.integrations.bots.adapter import PLATFORMS, BotConfig
from rag.qa.assistants import find_assistant
from rag.security import audit
from rag.store.db import Database
from rag.store.models import Assistant, Bot, BotNonce, BotThread, Conversation, QuestionRecord

# The callback path a platform is given (the API serves it; docs/bots.md).
CALLBACK_PATH = "/v1/bots/{bot_id}/callback"


@dataclass(frozen=True)
class BotInfo:
    """A bot as the admin API shows it: the names of its credentials, never their values."""

    id: str
    platform: str
    name: str
    assistant_id: str
    kb_id: str
    credential_names: list[str]
    api_base: str | None
    active: bool
    created_at: datetime

    @property
    def callback_path(self) -> str:
        return CALLBACK_PATH.format(bot_id=self.id)


def _info(bot: Bot, kb_id: str) -> BotInfo:
    return BotInfo(
        id=bot.id,
        platform=bot.platform,
        name=bot.name,
        assistant_id=bot.assistant_id,
        kb_id=kb_id,
        credential_names=sorted(bot.credentials or {}),
        api_base=bot.api_base,
        active=bot.active,
        created_at=bot.created_at,
    )


def _tenant() -> str | None:
    principal = tenancy.current()
    return None if principal is None else principal.tenant_id


def _check_base(api_base: str | None) -> str | None:
    if api_base is None:
        return None
    base = api_base.strip().rstrip("/")
    if not base.startswith(("https://", "http://")) or len(base) > 2000:
        raise InvalidInput(f"api_base must be an http(s) URL; got {api_base!r}")
    return base


class BotStore:
    """Bots, threads and nonces in one database."""

    def __init__(self, db: Database, *, nonce_retention_s: float) -> None:
        self.db = db
        self.nonce_retention_s = nonce_retention_s
        self._purged_at: datetime | None = None

    # --- administration (the current principal's tenant) ----------------------------------

    def create(
        self,
        platform: str,
        assistant: str,
        credentials: dict[str, Any],
        check: Callable[[Mapping[str, Any]], dict[str, Any]],
        *,
        name: str = "",
        api_base: str | None = None,
    ) -> BotInfo:
        """A new bot answering as `assistant` (id or name); `check` is the platform adapter's
        credential check."""
        if platform not in PLATFORMS:
            raise InvalidInput(f"unknown platform {platform!r}: one of {list(PLATFORMS)}")
        kept = check(credentials)
        base = _check_base(api_base)
        with self.db.write() as session:
            found = find_assistant(session, assistant)
            bot = Bot(
                tenant_id=found.tenant_id,
                assistant_id=found.id,
                platform=platform,
                name=name.strip()[:200],
                credentials=kept,
                api_base=base,
            )
            session.add(bot)
            session.flush()
            audit.record(
                session,
                "bot.create",
                bot.id,
                tenant_id=bot.tenant_id,
                platform=platform,
                assistant_id=found.id,
                credential_names=sorted(kept),
            )
            return _info(bot, found.kb_id)

    def _visible(self, session: Any, bot_id: str) -> tuple[Bot, Assistant]:
        bot = session.get(Bot, bot_id)
        tenant = _tenant()
        if bot is None or (tenant is not None and bot.tenant_id != tenant):
            raise NotFound(f"bot {bot_id} does not exist")
        assistant = session.get(Assistant, bot.assistant_id)
        if assistant is None:
            raise NotFound(f"bot {bot_id} does not exist")
        return bot, assistant

    def list_bots(self) -> list[BotInfo]:
        stmt = (
            select(Bot, Assistant.kb_id)
            .join(Assistant, Assistant.id == Bot.assistant_id)
            .order_by(Bot.created_at)
        )
        tenant = _tenant()
        if tenant is not None:
            stmt = stmt.where(Bot.tenant_id == tenant)
        with self.db.read() as session:
            return [_info(bot, kb_id) for bot, kb_id in session.execute(stmt)]

    def get(self, bot_id: str) -> BotInfo:
        with self.db.read() as session:
            bot, assistant = self._visible(session, bot_id)
            return _info(bot, assistant.kb_id)

    def delete(self, bot_id: str) -> None:
        with self.db.write() as session:
            bot, _ = self._visible(session, bot_id)
            # Explicit, not only ON DELETE CASCADE: SQLite enforces it only with foreign_keys on.
            session.execute(delete(BotThread).where(BotThread.bot_id == bot_id))
            session.execute(delete(BotNonce).where(BotNonce.bot_id == bot_id))
            session.delete(bot)
            audit.record(session, "bot.delete", bot_id, tenant_id=bot.tenant_id)

    # --- callbacks (no principal: the bot id in the path, verified by the adapter) --------

    def config(self, bot_id: str) -> BotConfig:
        """The active bot with this id, for its callback (NotFound: unknown or inactive)."""
        with self.db.read() as session:
            row = session.execute(
                select(Bot, Assistant.kb_id)
                .join(Assistant, Assistant.id == Bot.assistant_id)
                .where(Bot.id == bot_id)
            ).first()
        if row is None or not row[0].active:
            raise NotFound(f"bot {bot_id} does not exist")
        bot, kb_id = row
        return BotConfig(
            id=bot.id,
            tenant_id=bot.tenant_id,
            platform=bot.platform,
            assistant_id=bot.assistant_id,
            kb_id=kb_id,
            credentials=dict(bot.credentials or {}),
            api_base=bot.api_base,
        )

    def claim(self, bot_id: str, keys: tuple[str, ...]) -> bool:
        """Record `keys` as seen; False when any was seen before (nothing is recorded then).
        The primary key decides, so two replicas cannot both claim one nonce."""
        if not keys:
            return True
        self._purge()
        try:
            with self.db.write() as session:
                for key in keys:
                    session.add(BotNonce(bot_id=bot_id, nonce=key[:200]))
                session.flush()
        except IntegrityError:
            return False
        return True

    def _purge(self) -> None:
        """Delete nonces older than the retention, at most once a minute per process."""
        now = self.db.now()
        if self._purged_at is not None and now - self._purged_at < timedelta(seconds=60):
            return
        self._purged_at = now
        cutoff = now - timedelta(seconds=self.nonce_retention_s)
        with self.db.write() as session:
            session.execute(delete(BotNonce).where(BotNonce.seen_at < cutoff))

    def thread_conversation(
        self, bot: BotConfig, thread_key: str, create: Callable[[str, str], str]
    ) -> str:
        """The conversation chat thread `thread_key` continues; a new one (made by `create`
        from the knowledge base id and a title) for a new thread or one whose conversation
        was deleted."""
        key = thread_key[:300]
        with self.db.read() as session:
            thread = session.get(BotThread, (bot.id, key))
            if thread is not None and session.get(Conversation, thread.conversation_id) is not None:
                return thread.conversation_id
        conversation_id = create(bot.kb_id, f"{bot.platform} {key}"[:200])
        try:
            with self.db.write() as session:
                thread = session.get(BotThread, (bot.id, key))
                if thread is None:
                    session.add(
                        BotThread(bot_id=bot.id, thread_key=key, conversation_id=conversation_id)
                    )
                else:
                    thread.conversation_id = conversation_id
                    thread.updated_at = self.db.now()
        except IntegrityError:  # another message of the new thread got there first
            with self.db.read() as session:
                won = session.get(BotThread, (bot.id, key))
                if won is not None:
                    return won.conversation_id
            raise
        return conversation_id

    def known_thread(self, bot_id: str, thread_key: str) -> str | None:
        """The conversation of a thread the bot has answered in (None: none yet)."""
        with self.db.read() as session:
            thread = session.get(BotThread, (bot_id, thread_key[:300]))
            return None if thread is None else thread.conversation_id

    def last_answer(self, conversation_id: str) -> str | None:
        """The question log's newest record of this conversation (its id is the answer id)."""
        with self.db.read() as session:
            return session.execute(
                select(QuestionRecord.id)
                .where(QuestionRecord.conversation_id == conversation_id)
                .order_by(QuestionRecord.created_at.desc())
                .limit(1)
            ).scalar()
