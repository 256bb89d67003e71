"""Bots in SQL: create, list, read, update and delete them (tenant-scoped, audited), the
conversation each chat thread continues, and the nonces seen (a second sighting is a replay).
Nonces and threads idle past their retention are purged by the same pass.

Credentials are stored as given (checked by the platform's adapter) and never leave this
module except inside a `BotConfig` for the adapter; what callers list shows their names only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from rag.core import tenancy
from rag.core.errors import InvalidInput, NotFound
from rag.integrations.bots.adapter import PLATFORMS, BotConfig
from rag.qa.assistants import find_assistant
from rag.security import audit
from rag.store.db import Database, rowcount
from rag.store.models import Assistant, Bot, BotNonce, BotThread, Conversation, QuestionRecord

# The callback path a platform is given (the API serves it; docs/bots.md).
CALLBACK_PATH = "/v1/bots/{bot_id}/callback"
# A thread in use is marked used at most this often (its retention counts from the mark).
TOUCH_INTERVAL = timedelta(hours=1)


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

    def __init__(
        self, db: Database, *, nonce_retention_s: float, thread_retention_days: float = 30.0
    ) -> None:
        self.db = db
        self.nonce_retention_s = nonce_retention_s
        self.thread_retention = timedelta(days=thread_retention_days)
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

    def update(
        self,
        bot_id: str,
        check: Callable[[Mapping[str, Any]], dict[str, Any]],
        *,
        active: bool | None = None,
        name: str | None = None,
        credentials: dict[str, Any] | None = None,
        api_base: str | None = None,
        clear_api_base: bool = False,
    ) -> BotInfo:
        """Change what is given (None: kept); new credentials replace the old ones whole, after
        `check` (the platform adapter's); `clear_api_base` returns to the public API."""
        kept = None if credentials is None else check(credentials)
        base = _check_base(api_base)
        with self.db.write() as session:
            bot, assistant = self._visible(session, bot_id)
            changed: list[str] = []
            if active is not None and active != bot.active:
                bot.active = active
                changed.append("active")
            if name is not None:
                bot.name = name.strip()[:200]
                changed.append("name")
            if kept is not None:
                bot.credentials = kept
                changed.append("credentials")
            if base is not None or clear_api_base:
                bot.api_base = base
                changed.append("api_base")
            audit.record(
                session,
                "bot.update",
                bot_id,
                tenant_id=bot.tenant_id,
                changed=changed,
                active=bot.active,
                credential_names=sorted(kept) if kept is not None else None,
            )
            session.flush()
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
        """The bot with this id, for its callback (NotFound: unknown); the runner refuses an
        inactive one."""
        with self.db.read() as session:
            row = session.execute(
                select(Bot, Assistant.kb_id)
                .join(Assistant, Assistant.id == Bot.assistant_id)
                .where(Bot.id == bot_id)
            ).first()
        if row is None:
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
            active=bot.active,
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
        """Delete nonces and threads older than their retentions, at most once a minute per
        process (each callback with a nonce calls it)."""
        now = self.db.now()
        if self._purged_at is not None and now - self._purged_at < timedelta(seconds=60):
            return
        self._purged_at = now
        self.purge(now)

    def purge(self, now: datetime) -> tuple[int, int]:
        """Delete nonces past their retention and threads not used within theirs; how many of
        each. A thread used meanwhile was marked used first, or is written again by its user
        (`thread_conversation`), so a purge never loses a live thread's conversation."""
        nonce_cutoff = now - timedelta(seconds=self.nonce_retention_s)
        thread_cutoff = now - self.thread_retention
        with self.db.write() as session:
            nonces = session.execute(delete(BotNonce).where(BotNonce.seen_at < nonce_cutoff))
            threads = session.execute(delete(BotThread).where(BotThread.updated_at < thread_cutoff))
            return rowcount(nonces), rowcount(threads)

    def thread_conversation(
        self, bot: BotConfig, thread_key: str, create: Callable[[str, str], str]
    ) -> str:
        """The conversation chat thread `thread_key` continues; a new one (made by `create`
        from the knowledge base id and a title) for a new thread or one whose conversation
        was deleted."""
        key = thread_key[:300]
        now = self.db.now()
        with self.db.read() as session:
            found = session.execute(
                select(BotThread.conversation_id, BotThread.updated_at < now - TOUCH_INTERVAL)
                .join(Conversation, Conversation.id == BotThread.conversation_id)
                .where(BotThread.bot_id == bot.id, BotThread.thread_key == key)
            ).first()
        if found is not None:
            conversation_id, stale = found
            if stale:
                self._touch(bot.id, key, conversation_id, now)
            return str(conversation_id)
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

    def _touch(self, bot_id: str, key: str, conversation_id: str, now: datetime) -> None:
        """Mark a thread used now; one purged since it was read is written back."""
        try:
            with self.db.write() as session:
                touched = session.execute(
                    update(BotThread)
                    .where(BotThread.bot_id == bot_id, BotThread.thread_key == key)
                    .values(updated_at=now)
                )
                if rowcount(touched) == 0:
                    session.add(
                        BotThread(
                            bot_id=bot_id,
                            thread_key=key,
                            conversation_id=conversation_id,
                            updated_at=now,
                        )
                    )
        except IntegrityError:  # written back by another message of the thread: theirs stands
            pass

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
