"""A bot's life after creation (against the fake Slack): switched off, its callbacks get Slack's
refusal and nothing is answered; switched on again, it answers; rotated credentials refuse the
old signature and accept the new; PATCH is admin-only, tenant-scoped and audited; and threads
idle past their retention are purged, while threads in use at the same time are kept."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from rag.security import keys
from rag.store.models import BotThread
from tests.api.bot_fakes import FakeSlack, bot_env
from tests.llm_script import ScriptedLLM


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_an_inactive_bot_refuses_callbacks_and_answers_again_when_reactivated(
    tmp_path: Path,
) -> None:
    fake = FakeSlack()
    with bot_env(tmp_path, ScriptedLLM("Press Rotate [1]."), "slack", fake) as env:
        client, bot = env.client, env.bot_id
        off = client.patch(f"/v1/bots/{bot}", json={"active": False})
        assert off.status_code == 200 and off.json()["active"] is False
        assert client.get(f"/v1/bots/{bot}").json()["active"] is False

        refused = fake.event("How do I reset my access key?").send(client, bot)
        assert refused.status_code == 401  # Slack's refusal: not a 5xx, not acknowledged
        assert fake.url_verification().send(client, bot).status_code == 401
        assert env.services.bots.running == 0 and env.script.requests == []

        on = client.patch(f"/v1/bots/{bot}", json={"active": True})
        assert on.status_code == 200 and on.json()["active"] is True
        assert fake.event("How do I reset my access key?").send(client, bot).status_code == 200
        assert fake.wait_sent(1)[0]["text"].startswith("Press Rotate [1].")
        assert len(fake.sent) == 1 and fake.problems == []


def test_rotated_credentials_refuse_the_old_signature_and_accept_the_new(tmp_path: Path) -> None:
    fake = FakeSlack()
    with bot_env(tmp_path, ScriptedLLM("Press Rotate [1]."), "slack", fake) as env:
        client, bot = env.client, env.bot_id
        old_secret = fake.signing_secret
        signed_before = fake.event("How do I reset my access key?")
        # Incomplete credentials are refused whole and the stored ones stay in force.
        partial = client.patch(f"/v1/bots/{bot}", json={"credentials": {"signing_secret": "x"}})
        assert partial.status_code == 422 and "bot_token" in partial.text

        new = {"signing_secret": secrets.token_hex(16), "bot_token": "xoxb-" + secrets.token_hex(8)}
        rotated = client.patch(f"/v1/bots/{bot}", json={"credentials": new, "name": "renamed"})
        assert rotated.status_code == 200, rotated.text
        shown = rotated.json()
        assert shown["name"] == "renamed" and shown["active"] is True
        assert sorted(shown["credentials_set"]) == ["bot_token", "signing_secret"]
        assert new["signing_secret"] not in rotated.text and new["bot_token"] not in rotated.text

        assert signed_before.send(client, bot).status_code == 401
        fake.signing_secret, fake.bot_token = new["signing_secret"], new["bot_token"]
        assert fake.event("How do I reset my access key?").send(client, bot).status_code == 200
        assert fake.wait_sent(1)[0]["text"].startswith("Press Rotate [1].")

        audit = client.get("/v1/audit").text
        assert "bot.update" in audit
        assert new["signing_secret"] not in audit and old_secret not in audit


def test_updating_a_bot_is_admin_only_and_tenant_scoped(tmp_path: Path) -> None:
    fake = FakeSlack()
    with bot_env(tmp_path, ScriptedLLM("Press Rotate [1]."), "slack", fake) as env:
        client, svc, bot = env.client, env.services, env.bot_id
        with svc.db.write() as session:
            _, admin = keys.create(session, tenant_id="default", scopes=["admin"])
            _, query = keys.create(session, tenant_id="default", scopes=["query"])
            _, other = keys.create(session, tenant_id="globex", scopes=["admin"])
        client.app.state.guard.forget()  # type: ignore[attr-defined]
        off = {"active": False}
        assert client.patch(f"/v1/bots/{bot}", json=off, headers=_auth(query)).status_code == 403
        assert client.patch(f"/v1/bots/{bot}", json=off, headers=_auth(other)).status_code == 404
        assert client.patch("/v1/bots/nope", json=off, headers=_auth(admin)).status_code == 404
        assert client.get(f"/v1/bots/{bot}", headers=_auth(admin)).json()["active"] is True
        bad = client.patch(f"/v1/bots/{bot}", json={"api_base": "ftp://x"}, headers=_auth(admin))
        assert bad.status_code == 422
        unknown = client.patch(f"/v1/bots/{bot}", json={"platform": "x"}, headers=_auth(admin))
        assert unknown.status_code == 422
        cleared = client.patch(f"/v1/bots/{bot}", json={"api_base": None}, headers=_auth(admin))
        assert cleared.status_code == 200 and cleared.json()["api_base"] is None


def test_idle_threads_are_purged_while_threads_in_use_are_kept(
    tmp_path: Path, database_url: str
) -> None:
    fake = FakeSlack()
    with bot_env(tmp_path, ScriptedLLM("Press Rotate [1]."), "slack", fake, database_url) as env:
        svc, runner = env.services, env.services.bots
        store = runner.store
        bot = store.config(env.bot_id)

        def new_conversation(kb_id: str, title: str) -> str:
            return svc.conversations.create(kb_id, title).id

        keys_of = {f"{kind}-{i}": kind for kind in ("idle", "fresh", "used") for i in range(20)}
        conversation = {
            key: store.thread_conversation(bot, key, new_conversation) for key in keys_of
        }
        old = datetime.now(UTC) - store.thread_retention - timedelta(hours=1)
        with svc.db.write() as session:
            session.execute(
                update(BotThread)
                .where(BotThread.thread_key.like("idle-%") | BotThread.thread_key.like("used-%"))
                .values(updated_at=old)
            )

        # While the purge runs, messages arrive in the old "used" threads and in new ones.
        errors: list[BaseException] = []
        continued: dict[str, str] = {}
        started = threading.Event()

        def messages() -> None:
            try:
                started.set()
                for i in range(20):
                    key = f"used-{i}"
                    continued[key] = store.thread_conversation(bot, key, new_conversation)
                    store.thread_conversation(bot, f"new-{i}", new_conversation)
            except BaseException as exc:  # reported by the test below
                errors.append(exc)

        writer = threading.Thread(target=messages)
        writer.start()
        started.wait()
        purged = [store.purge(datetime.now(UTC)) for _ in range(5)]
        writer.join()
        assert errors == []
        assert sum(threads for _, threads in purged) >= 20  # the idle ones, at least

        with svc.db.read() as session:
            left = {
                k: c
                for k, c in session.execute(select(BotThread.thread_key, BotThread.conversation_id))
            }
        assert not [k for k in left if k.startswith("idle-")]
        assert all(left[f"fresh-{i}"] == conversation[f"fresh-{i}"] for i in range(20))
        assert all(f"new-{i}" in left for i in range(20))
        # A message during the purge continued the conversation the map keeps for its thread
        # (its old one, or a new one when the purge took the idle thread first).
        assert all(left[f"used-{i}"] == continued[f"used-{i}"] for i in range(20))
        store.purge(datetime.now(UTC))  # once more: nothing used since goes
        with svc.db.read() as session:
            again = {
                k: c
                for k, c in session.execute(select(BotThread.thread_key, BotThread.conversation_id))
            }
        assert again == left
