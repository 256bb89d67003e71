"""The embeddable widget in headless Chromium, on pages of other origins than the API's.

The API runs on 127.0.0.1:P1 with a paced fake LLM; a tiny static server on another port serves
a host page with the one script tag (and hostile CSS the widget's shadow root must withstand).
Opened as http://localhost:P2, an origin the key allows: the bubble opens with the assistant's
greeting, a question's answer streams in with its citation, the citation opens its rendered
page, thumbs-down reaches the question log and the hand-off button asks for a person. Opened as
http://127.0.0.1:P2, an origin no key allows: the browser's CORS check stops every request and
the widget says so, in Chinese as its tag asks. Screenshots go to var/ui-artifacts/.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from rag.core.config import Settings
from rag.generation.llm import LLMClient
from rag.services import Services
from rag.store.models import Assistant, QuestionRecord
from tests.conftest import wait_for
from tests.integration.service_process import free_port
from tests.ui.conftest import ANSWER, LLM_MODEL, LiveServer, PacedLLM, artifacts_dir
from tests.ui.pdf import make_pdf

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TIMEOUT_MS = 60_000
QUESTION = "How long does the descaling program run?"
GREETING = "Hello! Ask me anything about your coffee machine."
PAGES = [
    ["Chapter 1. Installation. Place the machine on a flat, dry surface near a socket."],
    ["Chapter 2. Cleaning. The descaling program runs for 42 minutes and uses one blue tablet."],
]
HOST_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Support site</title>
<style>
  /* A page whose CSS would break a widget drawn in its own DOM. */
  * {{ color: #f0f !important; font-size: 40px; }}
  button {{ display: none !important; }}
  div {{ border: 9px solid lime; }}
</style></head>
<body><h1>Coffee machine support</h1>
<script src="{api}/widget.js" data-key="{key}"{lang} async></script>
</body></html>
"""


@dataclass
class Widget:
    api: LiveServer
    services: Services
    admin: dict[str, str]
    key: str
    static_port: int


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve_static(directory: Path) -> tuple[ThreadingHTTPServer, int]:
    port = free_port()
    handler = functools.partial(_Quiet, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


@pytest.fixture(scope="module")
def widget(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Widget]:
    root = tmp_path_factory.mktemp("widget")
    settings = Settings(
        data_dir=root / "data",
        embedding={"model": "fake:256"},
        ingest={"poll_interval_s": 0.05, "lease_s": 2.0, "parse_timeout_s": 60},
        index_sync_interval_s=0.2,
        chunking={"chunk_tokens": 48},
        llm={"model": LLM_MODEL, "retry_backoff_s": 0.001},
    )
    llm = PacedLLM(ANSWER)
    services = Services.create(
        settings, llm=LLMClient(settings.llm, transport=httpx.MockTransport(llm.handler))
    )
    api = LiveServer(services)
    api.start()
    static, port = _serve_static(root)
    try:
        # Open mode (loopback, no key yet) lets the first admin key be made through the API.
        made = httpx.post(f"{api.url}/v1/keys", json={"scopes": ["admin"]}, timeout=30)
        admin = {"Authorization": f"Bearer {made.json()['key']}"}
        with httpx.Client(base_url=api.url, headers=admin, timeout=30) as client:
            kb = client.post("/v1/knowledge-bases", json={"name": "coffee"}).json()["id"]
            files = {"file": ("manual.pdf", make_pdf(PAGES))}
            doc = client.post(f"/v1/knowledge-bases/{kb}/documents", files=files).json()["id"]
            url = f"/v1/knowledge-bases/{kb}/documents/{doc}"
            wait_for(lambda: client.get(url).json()["status"] in ("ready", "failed"), 120)
            assert client.get(url).json()["status"] == "ready"
            with services.db.write() as session:
                config = {"greeting": GREETING, "language": "en"}
                session.add(
                    Assistant(tenant_id="default", name="Coffee help", kb_id=kb, config=config)
                )
            body = {"assistant": "Coffee help", "allowed_origins": [f"http://localhost:{port}"]}
            key = client.post("/v1/widget-keys", json=body).json()["id"]
        for name, lang in (("allowed.html", ""), ("refused.html", ' data-lang="zh"')):
            page = HOST_PAGE.format(api=api.url, key=key, lang=lang)
            (root / name).write_text(page, encoding="utf-8")
        yield Widget(api, services, admin, key, port)
    finally:
        static.shutdown()
        api.stop()
        services.close()


def _questions(services: Services) -> int:
    with services.db.read() as session:
        return int(session.execute(select(func.count()).select_from(QuestionRecord)).scalar_one())


# Records each length the answer's text had, to see it grow while it streams.
_WATCH_ANSWER = """() => {
  const root = document.querySelector('#kbqa-widget').shadowRoot;
  window.__lengths = [];
  new MutationObserver(() => {
    const text = root.querySelector('[data-test=answer-text]');
    if (text) window.__lengths.push(text.textContent.length);
  }).observe(root, { subtree: true, childList: true, characterData: true });
}"""


def test_the_widget_answers_on_an_allowed_origin(browser: Any, widget: Widget) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1200, "height": 860}, locale="en-US")
    page = context.new_page()
    try:
        page.goto(f"http://localhost:{widget.static_port}/allowed.html")
        bubble = page.locator("[data-test=bubble]")
        expect(bubble).to_be_visible()  # the page's `button {display: none}` does not reach it
        page.evaluate(_WATCH_ANSWER)
        bubble.click()
        expect(page.locator("[data-test=assistant-name]")).to_have_text("Coffee help")
        expect(page.locator("[data-test=greeting]")).to_have_text(GREETING)

        page.locator("[data-test=question]").fill(QUESTION)
        page.locator("[data-test=send]").click()
        answer = page.locator("[data-test=answer]")
        expect(answer.locator("[data-test=answer-text]")).to_have_text(ANSWER)
        # The page's `* {color: #f0f !important; font-size: 40px}` and `div {border}` stop at
        # the widget's host element.
        look = answer.evaluate(
            "a => [getComputedStyle(a).color, getComputedStyle(a).fontSize,"
            " getComputedStyle(a.getRootNode().host).borderTopWidth]"
        )
        assert look == ["rgb(31, 35, 40)", "14px", "0px"], look
        lengths = page.evaluate("window.__lengths")
        assert len({n for n in lengths if 0 < n < len(ANSWER)}) >= 3, lengths  # it streamed
        citation = answer.locator("[data-test=citation]")
        expect(citation).to_have_count(1)
        expect(citation).to_contain_text("manual.pdf")
        expect(citation).to_contain_text("p. 2")
        page.screenshot(path=str(artifacts_dir() / "widget-answer.png"))

        # The citation's page, rendered with the passage highlighted, through the widget key.
        citation.click()
        viewer = page.locator("[data-test=source-viewer]")
        expect(viewer.locator("[data-test=source-image]")).to_be_visible()
        expect(viewer.locator("[data-test=source-text]")).to_contain_text("42 minutes")
        natural = viewer.locator("[data-test=source-image]").evaluate("img => img.naturalWidth")
        assert natural > 100
        page.screenshot(path=str(artifacts_dir() / "widget-source.png"))
        viewer.locator("button").click()
        expect(viewer).to_have_count(0)

        answer_id = answer.get_attribute("data-answer-id")
        assert answer_id
        answer.locator("[data-test=thumbs-down]").click()
        expect(answer.locator("[data-test=note]")).to_have_text("Thanks for your feedback.")
        expect(answer.locator("[data-test=thumbs-down]")).to_have_attribute("aria-pressed", "true")
        record = widget.services.question_log.get(answer_id)
        assert record.rating == -1 and record.channel == "widget"
        assert record.question == QUESTION

        handoff = answer.locator("[data-test=handoff]")
        expect(handoff).to_be_visible()  # rated down: a person may take over
        handoff.click()
        expect(answer.locator("[data-test=note]")).to_contain_text("A person has been asked")
        assert widget.services.question_log.get(answer_id).handoff_requested
    finally:
        context.close()


def test_a_refused_origin_gets_no_answer(browser: Any, widget: Widget) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    asked_before = _questions(widget.services)
    context = browser.new_context(viewport={"width": 1200, "height": 860}, locale="en-US")
    page = context.new_page()
    try:
        # The same page from another origin (another host name for the same server).
        page.goto(f"http://127.0.0.1:{widget.static_port}/refused.html")
        page.locator("[data-test=bubble]").click()
        error = page.locator("[data-test=widget-error]")
        expect(error.first).to_contain_text("无法从此页面连接助手")  # data-lang="zh"
        expect(page.locator("[data-test=greeting]")).to_have_count(0)

        page.locator("[data-test=question]").fill(QUESTION)
        page.locator("[data-test=send]").click()
        expect(error).to_have_count(2)
        expect(page.locator("[data-test=answer]")).to_have_count(0)
        page.screenshot(path=str(artifacts_dir() / "widget-refused.png"))
    finally:
        context.close()
    assert _questions(widget.services) == asked_before  # nothing reached the answer path

    # What the browser saw: the preflight refused, with no CORS header to let it through.
    resp = httpx.options(
        f"{widget.api.url}/v1/widget/ask",
        headers={
            "Origin": f"http://127.0.0.1:{widget.static_port}",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-widget-key",
        },
    )
    assert resp.status_code == 403 and "access-control-allow-origin" not in resp.headers
