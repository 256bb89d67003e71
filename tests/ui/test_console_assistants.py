"""The console's assistant settings page in headless Chromium against a real HTTP server: create
an assistant, edit its system prompt (a new version), run the playground and see the composed
prompt carry the new system prompt beside the retrieved passages and the answer, restore the
first version from the history, and read the page in Chinese. Screenshots go to
var/ui-artifacts/ (or RAG_TEST_ARTIFACTS)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.ui.conftest import ANSWER, LiveServer, PacedLLM, artifacts_dir

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TIMEOUT_MS = 60_000
PROMPT = "You are the Aurora support desk. Answer in one friendly sentence."
QUESTION = "How long does the descaling program run?"
MANUAL = (
    "Aurora coffee machine manual. The descaling program runs for 42 minutes and uses one "
    "blue tablet per cycle. Place the machine on a flat, dry surface.\n"
)


@pytest.fixture
def api_key(live_server: LiveServer) -> str:
    # Open mode (loopback, no keys yet) lets the first key be made through the API.
    resp = httpx.post(
        f"{live_server.url}/v1/keys", json={"name": "console", "scopes": ["admin"]}, timeout=30
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


def _ready_kb(api: httpx.Client) -> str:
    kb = api.post("/v1/knowledge-bases", json={"name": "Aurora support"}).json()
    files = {"file": ("manual.txt", MANUAL.encode(), "text/plain")}
    doc = api.post(f"/v1/knowledge-bases/{kb['id']}/documents", files=files).json()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = api.get(f"/v1/knowledge-bases/{kb['id']}/documents/{doc['id']}").json()
        if state["status"] in ("ready", "failed"):
            break
        time.sleep(0.1)
    assert state["status"] == "ready", state
    return str(kb["id"])


def test_assistant_settings_and_playground(
    browser: Any, live_server: LiveServer, api_key: str, paced_llm: PacedLLM
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    api = httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    )
    kb_id = _ready_kb(api)
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, locale="en-US")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    shots = artifacts_dir()
    try:
        page.goto(f"{live_server.url}/ui")
        page.fill("#api-key", api_key)
        page.click("form.signin button[type=submit]")
        expect(page.locator("header.topbar")).to_be_visible()
        page.select_option("#kb-picker", kb_id)
        page.click("nav.tabs a[data-view=assistants]")
        expect(page.locator("h1")).to_have_text("Assistants of Aurora support")

        # Create: it is listed and selected, at version 1.
        page.fill("form[data-test=assistant-create] input[name=assistant-name]", "aurora-desk")
        page.click("form[data-test=assistant-create] button[type=submit]")
        expect(page.locator("[data-test=assistant-list] button")).to_have_text("aurora-desk v1")
        made = api.get("/v1/assistants/aurora-desk").json()
        assert made["kb_id"] == kb_id and made["version"] == 1

        # Edit the system prompt and a sampling setting: version 2, on the server too.
        form = page.locator("form[data-test=assistant-form]")
        form.locator("textarea[name=system_prompt]").fill(PROMPT)
        form.locator("input[name=top_p]").fill("0.8")
        form.locator("[data-test=assistant-save]").click()
        expect(page.locator("[data-test=assistant-list] button")).to_have_text("aurora-desk v2")
        saved = api.get("/v1/assistants/aurora-desk").json()
        assert saved["settings"]["system_prompt"] == PROMPT
        assert saved["settings"]["sampling"]["top_p"] == 0.8
        expect(form.locator("textarea[name=system_prompt]")).to_have_value(PROMPT)
        versions = page.locator("[data-test=assistant-versions] tbody tr")
        expect(versions).to_have_count(2)

        # The playground: the prompt as composed, the passages and the answer side by side.
        asked = len(paced_llm.requests)
        page.fill("input[name=playground-question]", QUESTION)
        page.click("form[data-test=playground] button[type=submit]")
        prompt = page.locator("[data-test=playground-prompt]")
        expect(prompt).to_contain_text(PROMPT)
        expect(prompt).to_contain_text(QUESTION)
        expect(page.locator("[data-test=playground-passages]")).to_contain_text("42 minutes")
        expect(page.locator("[data-test=playground-answer]")).to_contain_text(ANSWER)
        expect(page.locator("[data-test=playground-answer]")).to_contain_text("top-p 0.8")
        assert len(paced_llm.requests) == asked + 1
        sent = paced_llm.requests[-1]
        assert sent["messages"][0]["content"].startswith(PROMPT) and sent["top_p"] == 0.8
        page.wait_for_timeout(300)
        page.evaluate("window.scrollTo(0, 0)")  # the sticky header would cover the middle
        page.screenshot(path=str(shots / "assistants-playground-en.png"), full_page=True)

        # Restore version 1 from the history: a new version 3 without the prompt.
        versions.filter(has=page.locator("td.num", has_text="1")).locator("button").click()
        expect(page.locator("[data-test=assistant-list] button")).to_have_text("aurora-desk v3")
        restored = api.get("/v1/assistants/aurora-desk").json()
        assert restored["settings"]["system_prompt"] is None
        expect(page.locator("[data-test=assistant-versions] tbody tr")).to_have_count(3)

        # The same page in Chinese.
        page.click("button.lang")
        expect(page.locator("h1")).to_have_text("Aurora support 的助手")
        expect(page.locator("[data-test=assistant-save]")).to_have_text("保存为新版本")
        page.wait_for_timeout(300)
        page.evaluate("window.scrollTo(0, 0)")  # the sticky header would cover the middle
        page.screenshot(path=str(shots / "assistants-zh.png"), full_page=True)
    finally:
        api.close()
        context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"
