"""The Feishu/Lark bot against a fake Feishu: the encrypted challenge, the signed encrypted
event acknowledged with {} before the reply (tenant_access_token, then a "post" reply to the
message with its sources), a follow-up in the same chat continuing the conversation, 👎 and a
hand-off reaching the question log, a redelivered event answered once, and forged, stale,
replayed and wrong-token callbacks refused."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from rag.core.errors import InvalidInput
from rag.integrations.bots.adapter import BotConfig, Callback, Refused
from rag.integrations.bots.feishu import FeishuAdapter, open_sealed
from rag.store.models import QuestionRecord
from tests.api.bot_fakes import FakeFeishu, bot_env
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


def _lines(sent: dict[str, Any]) -> list[str]:
    assert sent["msg_type"] == "post"
    rows = json.loads(sent["content"])["zh_cn"]["content"]
    return ["".join(el["text"] for el in row) for row in rows]


def test_feishu_challenge_and_refusals(tmp_path: Path) -> None:
    fake = FakeFeishu()
    with bot_env(tmp_path, _script(), "feishu", fake) as env:
        client, bot = env.client, env.bot_id
        challenge = fake.challenge()
        got = challenge.send(client, bot)
        sent = json.loads(open_sealed(fake.encrypt_key, json.loads(challenge.body)["encrypt"]))
        assert got.status_code == 200 and got.json() == {"challenge": sent["challenge"]}
        assert fake.challenge(token="wrong").send(client, bot).status_code == 401

        assert fake.message(FIRST, forge=True).send(client, bot).status_code == 401
        stale = str(int(time.time()) - 3600)
        assert fake.message(FIRST, timestamp=stale).send(client, bot).status_code == 401
        plain = client.post(f"/v1/bots/{bot}/callback", json={"type": "url_verification"})
        assert plain.status_code == 401  # an Encrypt Key is set: plaintext is refused
        assert env.services.bots.running == 0 and env.script.requests == []

        call = fake.message(FIRST, nonce="n-1")
        assert call.send(client, bot).status_code == 200
        fake.wait_sent(1)
        wait_for(lambda: env.services.bots.running == 0)
        assert call.send(client, bot).status_code == 401  # the same nonce: a replay
        # Feishu redelivering the event (a fresh nonce, the same event id): acknowledged once.
        again = fake.message(FIRST, event_id=json.loads(_event(fake, call))["header"]["event_id"])
        assert again.send(client, bot).status_code == 200
        assert env.services.bots.running == 0 and len(env.script.requests) == 1


def _event(fake: FakeFeishu, call: Any) -> str:
    return open_sealed(fake.encrypt_key, json.loads(call.body)["encrypt"]).decode()


def test_feishu_acknowledges_first_replies_with_sources_and_continues(
    tmp_path: Path, database_url: str
) -> None:
    fake = FakeFeishu()
    with bot_env(tmp_path, _script(), "feishu", fake, database_url) as env:
        client, bot = env.client, env.bot_id
        fake.gate.clear()
        call = fake.message(FIRST, chat_id="oc_a")
        acked = call.send(client, bot)
        assert acked.status_code == 200 and acked.json() == {}
        assert fake.sent == []
        fake.gate.set()
        first = fake.wait_sent(1)[0]
        asked = json.loads(_event(fake, call))["event"]["message"]["message_id"]
        assert first["message_id"] == asked  # a reply to the question
        lines = _lines(first)
        assert lines[0] == "Open the console and press Rotate [1]."
        assert any(line.startswith("[1] product-faq.md") for line in lines)

        fake.message(FOLLOW_UP, chat_id="oc_a").send(client, bot)
        assert _lines(fake.wait_sent(2)[1])[0] == "For 24 hours [1]."
        condense = env.script.requests[1]["messages"][1]["content"]
        assert FIRST in condense and condense.endswith(f"Follow-up question: {FOLLOW_UP}")

        fake.message("👎", chat_id="oc_a").send(client, bot)
        assert "feedback was recorded" in _lines(fake.wait_sent(3)[2])[0]
        fake.message("human", chat_id="oc_a").send(client, bot)
        fake.wait_sent(4)
        with env.services.db.read() as session:
            rows = session.query(QuestionRecord).order_by(QuestionRecord.created_at).all()
        assert [(r.channel, r.rating) for r in rows] == [("feishu", None), ("feishu", -1)]
        assert rows[1].handoff_at is not None and rows[0].handoff_at is None
        assert fake.problems == []


def test_feishu_without_an_encrypt_key_checks_the_verification_token() -> None:
    adapter = FeishuAdapter()
    creds = adapter.check_credentials(
        {"app_id": "cli_1", "app_secret": "s", "verification_token": "vt"}
    )
    bot = BotConfig("b1", "default", "feishu", "a1", "kb1", creds)

    def call(body: dict[str, Any]) -> Callback:
        return Callback("POST", {}, {}, json.dumps(body).encode())

    challenge = {"challenge": "c-1", "token": "vt", "type": "url_verification"}
    got = adapter.receive(bot, call(challenge), time.time(), 300)
    assert json.loads(got.ack.body) == {"challenge": "c-1"}
    with pytest.raises(Refused) as refused:
        adapter.receive(bot, call({**challenge, "token": "guess"}), time.time(), 300)
    assert refused.value.response.status == 401
    event = {
        "schema": "2.0",
        "header": {"event_id": "e-1", "token": "vt", "event_type": "im.message.receive_v1"},
        "event": {
            "sender": {"sender_type": "user"},
            "message": {
                "message_id": "om_1",
                "chat_id": "oc_1",
                "root_id": "om_0",
                "message_type": "text",
                "content": json.dumps({"text": "@_user_1 reset my key"}),
            },
        },
    }
    inbound = adapter.receive(bot, call(event), time.time(), 300)
    assert inbound.nonces == () and inbound.dedupe == "event:e-1"
    assert inbound.message is not None
    assert inbound.message.text == "reset my key" and inbound.message.thread_key == "oc_1:om_0"
    assert inbound.message.target == {"message_id": "om_1"}
    with pytest.raises(Refused):
        adapter.receive(bot, call({**event, "header": {**event["header"], "token": "x"}}), 0, 1)
    with pytest.raises(InvalidInput):
        adapter.check_credentials({"app_id": "cli_1", "app_secret": "s"})
