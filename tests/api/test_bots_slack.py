"""The Slack bot against a fake Slack: url_verification, a signed app_mention acknowledged
before chat.postMessage answers in the thread with the sources listed, a follow-up in the
thread continuing the conversation, 👎 (":-1:") reaching the question log, Slack's retries
answered once, the bot's own messages ignored, and forged, stale and replayed requests refused."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from rag.store.models import BotNonce, QuestionRecord
from tests.api.bot_fakes import FakeSlack, bot_env
from tests.conftest import wait_for
from tests.llm_script import ScriptedLLM

FIRST = "How do I reset my access key?"
FOLLOW_UP = "How long does the old one keep working?"
CONDENSED = "How long does the old access key keep working after it is rotated?"


def _script() -> ScriptedLLM:
    return ScriptedLLM(
        "Open the console and press Rotate [1].",
        f"Standalone question: {CONDENSED}",
        "For 24 hours [1].",
    )


def test_slack_acknowledges_first_answers_in_the_thread_and_continues(tmp_path: Path) -> None:
    fake = FakeSlack()
    with bot_env(tmp_path, _script(), "slack", fake) as env:
        client, bot = env.client, env.bot_id
        fake.gate.clear()
        root = "1700000000.000100"
        acked = fake.event(FIRST, ts=root).send(client, bot)
        assert acked.status_code == 200
        assert fake.sent == []
        fake.gate.set()
        first = fake.wait_sent(1)[0]
        assert first["channel"] == "C0HELP" and first["thread_ts"] == root
        assert first["text"].startswith("Open the console and press Rotate [1].")
        assert "• [1] product-faq.md" in first["text"]

        reply_ts = "1700000000.000200"
        fake.event(FOLLOW_UP, ts=reply_ts, thread_ts=root).send(client, bot)
        second = fake.wait_sent(2)[1]
        assert second["thread_ts"] == root and second["text"].startswith("For 24 hours [1].")
        condense = env.script.requests[1]["messages"][1]["content"]
        assert FIRST in condense and condense.endswith(f"Follow-up question: {FOLLOW_UP}")

        fake.event(":-1:", ts="1700000000.000300", thread_ts=root).send(client, bot)
        assert "feedback was recorded" in fake.wait_sent(3)[2]["text"]
        with env.services.db.read() as session:
            rows = session.query(QuestionRecord).order_by(QuestionRecord.created_at).all()
        assert [(r.channel, r.rating) for r in rows] == [("slack", None), ("slack", -1)]
        assert fake.problems == []


def test_slack_verification_retries_own_messages_and_refusals(
    tmp_path: Path, database_url: str
) -> None:
    fake = FakeSlack()
    with bot_env(tmp_path, _script(), "slack", fake, database_url) as env:
        client, bot = env.client, env.bot_id
        challenge = fake.url_verification()
        got = challenge.send(client, bot)
        assert got.status_code == 200
        assert got.json() == {"challenge": json.loads(challenge.body)["challenge"]}

        assert fake.event(FIRST, forge=True).send(client, bot).status_code == 401
        stale = str(int(time.time()) - 600)
        assert fake.event(FIRST, timestamp=stale).send(client, bot).status_code == 401
        own = fake.event("I am the bot", kind="message", bot_id="B0BOT")
        assert own.send(client, bot).status_code == 200
        channel_chatter = fake.event("no mention here", kind="message")
        assert channel_chatter.send(client, bot).status_code == 200
        # Signed but of a shape no Slack event has: refused, never a 5xx Slack would retry.
        odd = fake.signed({"type": "event_callback", "event": "x"}, None, False)
        assert odd.send(client, bot).status_code == 401
        assert env.services.bots.running == 0 and env.script.requests == []

        call = fake.event(FIRST, event_id="Ev0001")
        assert call.send(client, bot).status_code == 200
        fake.wait_sent(1)
        wait_for(lambda: env.services.bots.running == 0)
        retry = client.post(
            f"/v1/bots/{bot}/callback",
            headers={**call.headers, "x-slack-retry-num": "1", "x-slack-retry-reason": "timeout"},
            content=call.body,
        )
        assert retry.status_code == 200  # Slack retrying: acknowledged, not answered again
        assert call.send(client, bot).status_code == 401  # replayed without Slack's retry mark
        assert env.services.bots.running == 0 and len(env.script.requests) == 1
        assert len(fake.sent) == 1


def test_slack_answers_in_flight_are_cancelled_on_shutdown(tmp_path: Path) -> None:
    fake = FakeSlack()
    with bot_env(tmp_path, _script(), "slack", fake) as env:
        fake.gate.clear()  # the answer's chat.postMessage hangs at Slack
        assert fake.event(FIRST).send(env.client, env.bot_id).status_code == 200
        wait_for(lambda: fake.arrived == 1)
        runner = env.services.bots
        assert runner.running == 1
        (task,) = runner._tasks
    assert task.cancelled() and runner.running == 0  # the app stopped: cancelled, not left


def test_old_nonces_are_purged_and_replays_within_the_retention_refused(tmp_path: Path) -> None:
    fake = FakeSlack()
    with bot_env(tmp_path, _script(), "slack", fake) as env:
        store = env.services.bots.store
        assert store.claim(env.bot_id, ("event:Ev1",)) is True
        assert store.claim(env.bot_id, ("event:Ev1",)) is False
        assert store.claim(env.bot_id, ("event:Ev2", "event:Ev1")) is False
        assert store.claim(env.bot_id, ("event:Ev2",)) is True  # nothing kept of the refusal
        with env.services.db.write() as session:
            old = datetime.now(UTC) - timedelta(seconds=store.nonce_retention_s + 60)
            session.execute(update(BotNonce).values(seen_at=old))
        store._purged_at = None  # the purge runs at most once a minute
        assert store.claim(env.bot_id, ("event:Ev3",)) is True
        with env.services.db.read() as session:
            left = sorted(n for (n,) in session.execute(select(BotNonce.nonce)))
        assert left == ["event:Ev3"]
