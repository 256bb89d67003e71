"""Feedback and analytics in the console, in headless Chromium against a real HTTP server:
ask a question, rate the answer down with a comment and ask for a person; the analytics page
shows the figures and lists the question among the down-rated ones with its comment; from it,
make a golden-set row from a cited passage and a curated answer that the next ask returns.
Screenshots go to var/ui-artifacts/ (or RAG_TEST_ARTIFACTS)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.ui.conftest import ANSWER, LiveServer, artifacts_dir

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

QUESTION = "How long does the descaling program run?"
COMMENT = "It does not say which tablet to use."
CURATED = "Descaling takes 42 minutes with one blue tablet."
TIMEOUT_MS = 60_000


@pytest.fixture
def api(live_server: LiveServer) -> Iterator[Any]:
    # Open mode (loopback, no key yet) lets the first key be made through the API.
    resp = httpx.post(
        f"{live_server.url}/v1/keys", json={"name": "console", "scopes": ["admin"]}, timeout=30
    )
    assert resp.status_code == 201, resp.text
    key = str(resp.json()["key"])
    client = httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    kb = client.post("/v1/knowledge-bases", json={"name": "aurora"}).json()
    text = b"Cleaning. The descaling program runs for 42 minutes and uses one blue tablet.\n"
    doc = client.post(
        f"/v1/knowledge-bases/{kb['id']}/documents", files={"file": ("manual.txt", text)}
    ).json()
    for _ in range(600):
        state = client.get(f"/v1/knowledge-bases/{kb['id']}/documents/{doc['id']}").json()
        if state["status"] in ("ready", "failed"):
            break
        time.sleep(0.1)
    assert state["status"] == "ready", state
    client.key = key  # type: ignore[attr-defined]
    client.kb_id = kb["id"]  # type: ignore[attr-defined]
    yield client
    client.close()


def test_rate_down_and_find_it_in_analytics(
    browser: Any, live_server: LiveServer, api: Any
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    shots = artifacts_dir()
    context = browser.new_context(viewport={"width": 1360, "height": 900}, locale="en-US")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{live_server.url}/ui")
        page.fill("#api-key", api.key)
        page.click("form.signin button[type=submit]")
        expect(page.locator("header.topbar")).to_be_visible()

        # ask, then rate the answer down with a comment
        page.click("nav.tabs a[data-view=ask]")
        page.fill("#question", QUESTION)
        page.press("#question", "Enter")
        reply = page.locator(".msg[data-role=assistant]").last
        expect(reply).to_have_attribute("data-state", "done")
        expect(reply.locator(".msg-text")).to_have_text(ANSWER)
        bar = reply.locator("[data-test=feedback]")
        expect(bar).to_be_visible()
        answer_id = bar.get_attribute("data-answer-id")
        assert answer_id
        bar.locator("[data-test=rate-down]").click()
        reply = page.locator(".msg[data-role=assistant]").last
        reply.locator("[data-test=feedback-comment]").fill(COMMENT)
        reply.locator("[data-test=feedback-send]").click()
        reply = page.locator(".msg[data-role=assistant]").last
        expect(reply.locator("[data-test=feedback-done]")).to_be_visible()
        expect(reply.locator("[data-test=rate-down]")).to_have_attribute("aria-pressed", "true")
        reply.locator("[data-test=handoff]").click()
        expect(page.locator("[data-test=handoff-done]")).to_be_visible()
        page.screenshot(path=str(shots / "analytics-01-feedback-en.png"), full_page=True)
        logged = api.get(f"/v1/answers/{answer_id}").json()
        assert logged["rating"] == "down" and logged["comment"] == COMMENT
        assert logged["handoff_requested"] is True and logged["question"] == QUESTION

        # the analytics page: the figures, and the question among the down-rated ones
        page.click("nav.tabs a[data-view=analytics]")
        summary = page.locator("[data-test=summary]")
        expect(summary.locator("[data-stat=volume] .stat-value")).to_have_text("1")
        expect(summary.locator("[data-stat=down] .stat-value")).to_have_text("1")
        expect(summary.locator("[data-stat=handoffs] .stat-value")).to_have_text("1")
        expect(page.locator("[data-test=top-questions] li")).to_have_count(1)
        down = page.locator(f"[data-test=downrated] li.question[data-answer-id='{answer_id}']")
        expect(down).to_contain_text(QUESTION)
        expect(down.locator("[data-test=comment]")).to_have_text(COMMENT)
        page.screenshot(path=str(shots / "analytics-02-page-en.png"), full_page=True)

        # a golden-set row from the passage it cited
        down.locator("[data-test=make-golden]").click()
        form = down.locator("[data-test=golden-form]")
        expect(form.locator("[data-test=golden-passage] option")).to_have_count(1)
        expect(form.locator("[data-test=golden-passage] option")).to_contain_text("manual.txt")
        form.locator("button[type=submit]").click()
        expect(page.locator("#toast")).to_contain_text("Golden row added")
        lines = api.get(f"/v1/knowledge-bases/{api.kb_id}/golden").text.splitlines()
        [row] = [json.loads(line) for line in lines]
        assert row["question"] == QUESTION and row["filename"] == "manual.txt"

        # a curated answer, returned verbatim by the next ask
        down = page.locator(f"[data-test=downrated] li.question[data-answer-id='{answer_id}']")
        down.locator("[data-test=curate]").click()
        down.locator("[data-test=curated-answer]").fill(CURATED)
        down.locator("[data-test=curate-form] button[type=submit]").click()
        expect(page.locator("#toast")).to_contain_text("Curated answer saved")
        again = api.post(f"/v1/knowledge-bases/{api.kb_id}/ask", json={"question": QUESTION}).json()
        assert again["answer"] == CURATED and again["curated"] is True

        # in Chinese
        page.click("button.lang")
        expect(page.locator("nav.tabs a[data-view=analytics]")).to_have_text("统计")
        expect(page.locator("[data-test=summary] [data-stat=down]")).to_contain_text("差评")
        page.screenshot(path=str(shots / "analytics-03-page-zh.png"), full_page=True)
    finally:
        context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"
