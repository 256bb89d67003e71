"""The DingTalk (钉钉) robot against a fake DingTalk: the signed outgoing callback acknowledged
with {} before the markdown answer goes to the sessionWebhook with its sources, a follow-up in
the same conversation continuing it, 👎 reaching the question log, and forged, stale (DingTalk's
hour, or the stricter setting) and replayed callbacks refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rag.integrations.bots.adapter import BotConfig, Callback, Refused, Reply
from rag.integrations.bots.dingtalk import DingTalkAdapter, render, sign
from rag.integrations.bots.runner import reply_of
from rag.qa.answer import Answer, Citation
from rag.retrieval.retriever import Passage
from rag.store.models import QuestionRecord
from tests.api.bot_fakes import FakeDingTalk, bot_env
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


def test_dingtalk_acknowledges_first_answers_with_sources_and_continues(tmp_path: Path) -> None:
    fake = FakeDingTalk()
    with bot_env(tmp_path, _script(), "dingtalk", fake) as env:
        client, bot = env.client, env.bot_id
        fake.gate.clear()
        acked = fake.message(FIRST, conversation="cid-a").send(client, bot)
        assert acked.status_code == 200 and acked.json() == {}
        assert fake.sent == []
        fake.gate.set()
        first = fake.wait_sent(1)[0]
        assert first["msgtype"] == "markdown"
        assert first["markdown"]["title"].startswith("Open the console")
        text = first["markdown"]["text"]
        assert text.startswith("Open the console and press Rotate [1].")
        assert "- [1] product-faq.md" in text

        fake.message(FOLLOW_UP, conversation="cid-a").send(client, bot)
        assert fake.wait_sent(2)[1]["markdown"]["text"].startswith("For 24 hours [1].")
        condense = env.script.requests[1]["messages"][1]["content"]
        assert FIRST in condense and condense.endswith(f"Follow-up question: {FOLLOW_UP}")

        fake.message("👎", conversation="cid-a").send(client, bot)
        assert "feedback was recorded" in fake.wait_sent(3)[2]["markdown"]["text"]
        with env.services.db.read() as session:
            rows = session.query(QuestionRecord).order_by(QuestionRecord.created_at).all()
        assert [(r.channel, r.rating) for r in rows] == [("dingtalk", None), ("dingtalk", -1)]
        assert fake.problems == []


def test_dingtalk_refuses_forged_stale_and_replayed_callbacks(tmp_path: Path) -> None:
    fake = FakeDingTalk()
    with bot_env(tmp_path, _script(), "dingtalk", fake) as env:
        client, bot = env.client, env.bot_id
        forged = fake.message(FIRST, forge=True).send(client, bot)
        assert forged.status_code == 403 and forged.json()["errcode"] == 403
        # Within DingTalk's hour but past RAG_BOTS__TIMESTAMP_TOLERANCE_S (300 s): stale.
        old = int((time.time() - 1200) * 1000)
        assert fake.message(FIRST, timestamp_ms=old).send(client, bot).status_code == 403
        missing = fake.message(FIRST)
        headers = {k: v for k, v in missing.headers.items() if k != "sign"}
        sent = client.post(f"/v1/bots/{bot}/callback", headers=headers, content=missing.body)
        assert sent.status_code == 403
        # A sessionWebhook elsewhere than the DingTalk API is never called.
        call = fake.message(FIRST)
        body = json.loads(call.body)
        body["sessionWebhook"] = "http://127.0.0.1:9/steal"
        moved = client.post(
            f"/v1/bots/{bot}/callback", headers=call.headers, content=json.dumps(body).encode()
        )
        assert moved.status_code == 403
        assert env.services.bots.running == 0 and env.script.requests == []

        call = fake.message(FIRST, msg_id="msg-1")
        assert call.send(client, bot).status_code == 200
        fake.wait_sent(1)
        wait_for(lambda: env.services.bots.running == 0)
        assert call.send(client, bot).status_code == 403  # the same message again
        assert env.services.bots.running == 0 and len(env.script.requests) == 1


def test_dingtalk_never_accepts_more_than_its_hour() -> None:
    adapter = DingTalkAdapter()
    bot = BotConfig("b1", "default", "dingtalk", "a1", "kb1", {"app_secret": "s3cret"})
    body = {
        "msgtype": "text",
        "text": {"content": "hi"},
        "msgId": "m1",
        "conversationId": "c1",
        "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=x",
    }
    now = time.time()
    for age_s, accepted in ((30, True), (5400, False)):
        ts = str(int((now - age_s) * 1000))
        headers = {"timestamp": ts, "sign": sign("s3cret", ts)}
        call = Callback("POST", {}, headers, json.dumps(body).encode())
        if accepted:  # a tolerance of two hours still leaves DingTalk's one
            assert adapter.receive(bot, call, now, 7200).message is not None
        else:
            with pytest.raises(Refused, match="stale"):
                adapter.receive(bot, call, now, 7200)


def _citation(index: int, page: int, page_end: int, *, cited: bool = True) -> Citation:
    passage = Passage(index, "d1", "guide.pdf", page, page_end, "text", 0.9, ())
    return Citation(index, passage, cited)


def test_replies_list_cited_sources_and_offer_a_person_when_unsure() -> None:
    sure = Answer(
        "Rotate it [1][2].",
        [_citation(1, 3, 3), _citation(2, 4, 6), _citation(3, 9, 9, cited=False)],
        "m",
    )
    assert reply_of(sure, zh=False) == Reply(
        "Rotate it [1][2].", ["[1] guide.pdf p.3", "[2] guide.pdf p.4-6"]
    )
    uncovered = Answer("资料中没有相关内容。", [], "m", covered=False)
    reply = reply_of(uncovered, zh=True)
    assert reply.sources == [] and reply.text.endswith("（回复“转人工”可联系人工客服）")
    rendered = render(reply_of(sure, zh=False))
    assert rendered["msgtype"] == "markdown"
    assert rendered["markdown"]["text"].endswith("- [1] guide.pdf p.3\n- [2] guide.pdf p.4-6")
