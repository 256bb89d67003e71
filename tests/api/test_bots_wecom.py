"""The WeCom (企业微信) bot against a fake WeCom: URL verification, the encrypted callback
acknowledged before the answer goes out through gettoken + message/send with its sources, a
follow-up continuing the user's conversation, 👎 and 转人工 reaching the question log, forged,
stale and replayed callbacks refused, and a failed send retried."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from rag.integrations.bots.adapter import BotConfig, Reply
from rag.integrations.bots.wecom import open_sealed, render
from rag.security import keys
from rag.store.models import QuestionRecord
from tests.api.bot_fakes import FakeWeCom, bot_env
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


def test_wecom_verifies_the_url_and_refuses_forged_stale_and_replayed_callbacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rag.integrations.bots")
    fake = FakeWeCom()
    with bot_env(tmp_path, _script(), "wecom", fake) as env:
        client, bot = env.client, env.bot_id
        shown = client.get(f"/v1/bots/{bot}").json()
        assert shown["callback_path"] == f"/v1/bots/{bot}/callback"
        assert "corp_secret" in shown["credentials_set"]
        assert fake.corp_secret not in client.get("/v1/bots").text  # never shown again

        verified = fake.verify_url("echo-1234567")
        got = verified.send(client, bot)
        assert got.status_code == 200 and got.text == "echo-1234567"

        assert fake.message(FIRST, forge=True).send(client, bot).status_code == 403
        stale = str(int(time.time()) - 3600)
        assert fake.message(FIRST, timestamp=stale).send(client, bot).status_code == 403
        other = FakeWeCom()  # another corp's key: does not decrypt, or not for this corp
        try:
            other.token, other.corp_id = fake.token, fake.corp_id
            assert other.message(FIRST).send(client, bot).status_code == 403
        finally:
            other.close()
        assert env.services.bots.running == 0 and env.script.requests == []

        call = fake.message(FIRST)
        assert call.send(client, bot).status_code == 200
        fake.wait_sent(1)
        wait_for(lambda: env.services.bots.running == 0)
        assert call.send(client, bot).status_code == 403  # the same nonce again: a replay
        assert env.services.bots.running == 0 and len(env.script.requests) == 1
        refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 4 and all(bot in m for m in refusals)
        assert any("bad signature" in m for m in refusals)
        assert any("stale timestamp" in m for m in refusals)
        assert any("replayed nonce" in m for m in refusals)
        assert client.get("/v1/bots/nope/callback").status_code == 404


def test_wecom_acknowledges_first_answers_with_sources_and_continues_the_thread(
    tmp_path: Path,
) -> None:
    fake = FakeWeCom()
    with bot_env(tmp_path, _script(), "wecom", fake) as env:
        client, bot = env.client, env.bot_id
        fake.gate.clear()  # the message API holds its answers
        acked = fake.message(FIRST, user="lisi").send(client, bot)
        assert acked.status_code == 200 and acked.text == ""
        assert fake.sent == []  # acknowledged before the answer was sent
        fake.gate.set()
        first = fake.wait_sent(1)[0]
        assert first["touser"] == "lisi" and first["msgtype"] == "markdown"
        content = first["markdown"]["content"]
        assert content.startswith("Open the console and press Rotate [1].")
        assert "> [1] product-faq.md" in content
        assert fake.problems == []

        fake.message(FOLLOW_UP, user="lisi").send(client, bot)
        second = fake.wait_sent(2)[1]
        assert second["markdown"]["content"].startswith("For 24 hours [1].")
        condense = env.script.requests[1]["messages"][1]["content"]
        assert FIRST in condense and condense.endswith(f"Follow-up question: {FOLLOW_UP}")

        with env.services.db.read() as session:
            logged = session.query(QuestionRecord).order_by(QuestionRecord.created_at).all()
        assert [r.channel for r in logged] == ["wecom", "wecom"]
        assert logged[0].conversation_id == logged[1].conversation_id

        fake.message("👎", user="lisi").send(client, bot)
        assert "feedback was recorded" in fake.wait_sent(3)[2]["markdown"]["content"]
        fake.message("转人工", user="lisi").send(client, bot)
        assert "已转人工" in fake.wait_sent(4)[3]["markdown"]["content"]
        with env.services.db.read() as session:
            rated = session.get(QuestionRecord, logged[1].id)
            assert rated is not None and rated.rating == -1 and rated.handoff_at is not None
        assert len(env.script.requests) == 3  # feedback asks no LLM

        fake.message("👍", user="wangwu").send(client, bot)  # a thread with no answer yet
        assert "no answer" in fake.wait_sent(5)[4]["markdown"]["content"]


def test_wecom_send_failures_are_retried(tmp_path: Path) -> None:
    fake = FakeWeCom()
    with bot_env(tmp_path, _script(), "wecom", fake) as env:
        fake.fail_next = 2  # the bot tries 3 times (RAG_BOTS__SEND_ATTEMPTS in bot_env)
        assert fake.message(FIRST).send(env.client, env.bot_id).status_code == 200
        assert fake.wait_sent(1)[0]["markdown"]["content"].startswith("Open the console")
        assert fake.problems == []


def test_wecom_long_answers_are_cut_to_fit_keeping_their_sources() -> None:
    bot = BotConfig("b1", "default", "wecom", "a1", "kb1", {"agent_id": 7})
    reply = Reply("重置密钥需要管理员确认 [1]。" * 300, ["[1] faq.md p.2", "[2] guide.pdf p.3-4"])
    message = render(bot, {"touser": "u1"}, reply)
    content = message["markdown"]["content"]
    assert len(content.encode()) <= 2048 and content.startswith("重置密钥")
    assert content.endswith("…\n\n> [1] faq.md p.2\n> [2] guide.pdf p.3-4")
    assert message["agentid"] == 7 and message["touser"] == "u1"


def test_wecom_credentials_are_checked(tmp_path: Path) -> None:
    fake = FakeWeCom()
    with bot_env(tmp_path, _script(), "wecom", fake) as env:
        bad = {**fake.credentials(), "encoding_aes_key": "short"}
        made = env.client.post(
            "/v1/bots", json={"platform": "wecom", "assistant": "helpdesk", "credentials": bad}
        )
        assert made.status_code in (400, 422) and "encoding_aes_key" in made.text
        missing = {"corp_id": fake.corp_id}
        made = env.client.post(
            "/v1/bots", json={"platform": "wecom", "assistant": "helpdesk", "credentials": missing}
        )
        assert made.status_code in (400, 422) and "corp_secret" in made.text
        made = env.client.post(
            "/v1/bots",
            json={"platform": "wecom", "assistant": "nobody", "credentials": fake.credentials()},
        )
        assert made.status_code == 404
        assert env.client.delete(f"/v1/bots/{env.bot_id}").status_code == 204
        assert env.client.get(f"/v1/bots/{env.bot_id}").status_code == 404
        assert fake.message(FIRST).send(env.client, env.bot_id).status_code == 404


def test_wecom_ciphertext_round_trip() -> None:
    from rag.integrations.bots.wecom import seal

    key = "a" * 43
    sealed = seal(key, "你好".encode(), "corp", b"r" * 16)
    assert open_sealed(key, sealed) == ("你好".encode(), "corp")


def test_bots_are_admin_only_tenant_scoped_and_audited(tmp_path: Path) -> None:
    fake = FakeWeCom()
    with bot_env(tmp_path, _script(), "wecom", fake) as env:
        client, svc = env.client, env.services
        with svc.db.write() as session:
            _, admin = keys.create(session, tenant_id="default", scopes=["admin"])
            _, query = keys.create(session, tenant_id="default", scopes=["query"])
            _, other = keys.create(session, tenant_id="globex", scopes=["admin"])
        client.app.state.guard.forget()  # type: ignore[attr-defined]
        body = {"platform": "wecom", "assistant": "helpdesk", "credentials": fake.credentials()}
        as_query = client.post("/v1/bots", json=body, headers=_auth(query))
        assert as_query.status_code == 403
        assert client.get("/v1/bots", headers=_auth(query)).status_code == 403
        # Another tenant neither sees the bot nor can bind the assistant.
        assert client.get(f"/v1/bots/{env.bot_id}", headers=_auth(other)).status_code == 404
        assert client.delete(f"/v1/bots/{env.bot_id}", headers=_auth(other)).status_code == 404
        assert client.get("/v1/bots", headers=_auth(other)).json() == []
        assert client.post("/v1/bots", json=body, headers=_auth(other)).status_code == 404
        mine = client.get("/v1/bots", headers=_auth(admin)).json()
        assert [b["id"] for b in mine] == [env.bot_id]
        # The callback needs no key: the platform's signature stands in for it.
        assert fake.message(FIRST).send(client, env.bot_id).status_code == 200
        fake.wait_sent(1)
        audit = client.get("/v1/audit", headers=_auth(admin)).text
        assert "bot.create" in audit and fake.corp_secret not in audit


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}
