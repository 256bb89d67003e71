"""Conversations in SQL (SQLite and PostgreSQL): CRUD, follow-ups condensed before retrieval,
history in the prompt, turns recorded whole."""

from __future__ import annotations

from pathlib import Path

from rag.qa.prompt import load_templates
from tests.llm_script import ScriptedLLM, app_with, english_kb, events

FIRST = "How do I reset my access key?"
FOLLOW_UP = "How long does the old one keep working?"
CONDENSED = "How long does the old access key keep working after it is rotated?"


def test_conversation_crud(tmp_path: Path, database_url: str) -> None:
    with app_with(tmp_path, ScriptedLLM(), database_url=database_url) as (client, _):
        kb = client.post("/v1/knowledge-bases", json={"name": "hr"}).json()["id"]
        other = client.post("/v1/knowledge-bases", json={"name": "it"}).json()["id"]
        assert client.post("/v1/conversations", json={"kb_id": "nope"}).status_code == 404
        made = client.post("/v1/conversations", json={"kb_id": kb, "title": "Leave"})
        assert made.status_code == 201
        conv = made.json()
        assert conv["kb_id"] == kb and conv["title"] == "Leave"
        client.post("/v1/conversations", json={"kb_id": other})
        listed = client.get("/v1/conversations", params={"kb_id": kb}).json()["conversations"]
        assert [c["id"] for c in listed] == [conv["id"]]
        assert len(client.get("/v1/conversations").json()["conversations"]) == 2
        one = client.get(f"/v1/conversations/{conv['id']}").json()
        assert one["messages"] == [] and one["title"] == "Leave"
        assert client.delete(f"/v1/conversations/{conv['id']}").status_code == 204
        assert client.get(f"/v1/conversations/{conv['id']}").status_code == 404
        assert client.delete(f"/v1/conversations/{conv['id']}").status_code == 404


def test_follow_up_is_condensed_answered_with_history_and_recorded(
    tmp_path: Path, database_url: str
) -> None:
    script = ScriptedLLM(
        "Open the console and press Rotate [1].",  # first answer
        f"Standalone question: {CONDENSED}",  # the condensing call
        "For 24 hours [1].",  # the follow-up's answer (streamed)
    )
    with app_with(tmp_path, script, database_url=database_url) as (client, _):
        kb = english_kb(client)
        conv = client.post("/v1/conversations", json={"kb_id": kb}).json()["id"]
        url = f"/v1/knowledge-bases/{kb}/ask"

        first = client.post(url, json={"question": FIRST, "conversation_id": conv}).json()
        assert first["conversation_id"] == conv and first["question"] == FIRST
        assert len(script.requests) == 1  # no history yet: nothing to condense

        with client.stream(
            "POST", url, json={"question": FOLLOW_UP, "conversation_id": conv, "stream": True}
        ) as resp:
            got = events("".join(resp.iter_text()))
        done = dict(got)["done"]
        assert done["question"] == CONDENSED and done["conversation_id"] == conv

        condense, answer = script.requests[1], script.requests[2]
        assert condense["messages"][0]["content"] == load_templates()["condense_en"]
        assert condense["messages"][1]["content"] == (
            f"User: {FIRST}\nAssistant: Open the console and press Rotate.\n\n"
            f"Follow-up question: {FOLLOW_UP}"
        )
        assert condense["temperature"] == 0 and condense["stream"] is False
        roles = [m["role"] for m in answer["messages"]]
        assert roles == ["system", "user", "assistant", "user"]
        assert answer["messages"][1]["content"] == FIRST
        assert answer["messages"][-1]["content"].endswith(f"Question: {FOLLOW_UP}")

        stored = client.get(f"/v1/conversations/{conv}").json()
        assert stored["title"] == FIRST
        messages = stored["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
        assert messages[2]["content"] == FOLLOW_UP and messages[2]["standalone"] == CONDENSED
        assert messages[3]["content"] == "For 24 hours [1]."
        assert messages[3]["id"] == done["message_id"]
        assert messages[3]["citations"][0]["cited"] is True
        assert messages[3]["model"] == "Qwen/Qwen2.5-7B-Instruct"
        assert messages[3]["usage"]["completion_tokens"] > 0

        # A conversation belongs to its knowledge base; unknown ids are 404.
        other = client.post("/v1/knowledge-bases", json={"name": "other"}).json()["id"]
        wrong = client.post(
            f"/v1/knowledge-bases/{other}/ask", json={"question": "x", "conversation_id": conv}
        )
        assert wrong.status_code == 409
        missing = client.post(url, json={"question": "x", "conversation_id": "nope"})
        assert missing.status_code == 404

        # Conversations go with their knowledge base.
        assert client.delete(f"/v1/knowledge-bases/{kb}").status_code == 204
        assert client.get(f"/v1/conversations/{conv}").status_code == 404


def test_history_is_trimmed_to_the_token_budget(tmp_path: Path) -> None:
    # ~125 tokens by the estimate: two turns fit in 300, three do not. 100 different words: the
    # same word 100 times is a runaway repetition, cut short (rag/qa/degenerate.py).
    answer = "".join(f"{a}{b}rd " for a in "abcdefghij" for b in "klmnopqrst")
    script = ScriptedLLM(answer.strip())
    with app_with(tmp_path, script, history_max_tokens=300) as (client, _):
        kb = english_kb(client)
        conv = client.post("/v1/conversations", json={"kb_id": kb}).json()["id"]
        url = f"/v1/knowledge-bases/{kb}/ask"
        for i in range(4):
            resp = client.post(url, json={"question": f"Question {i}?", "conversation_id": conv})
            assert resp.status_code == 200, resp.text
        answered = [
            r
            for r in script.requests
            if r["messages"][0]["role"] == "system"
            and r["messages"][-1]["content"].endswith("Question 3?")
        ]
        history = answered[-1]["messages"][1:-1]
        assert [m["content"] for m in history if m["role"] == "user"] == [
            "Question 1?",
            "Question 2?",
        ]
        assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
