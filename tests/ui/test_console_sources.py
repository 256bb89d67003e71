"""The console shows the source behind a citation, in headless Chromium against a real server.

A real Chinese PDF (the sample handbook) and a text file are uploaded through the API. In the
Documents view, a document's chunks are listed page by page with their pages, heading path and
token counts; one chunk is disabled (and search stops finding it), enabled again, and opened on
its rendered page with its text highlighted. In the Ask view, a citation opens on its page with
the passage highlighted and its heading path shown. Screenshots go to var/ui-artifacts/.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, wait_for
from tests.ui.conftest import ANSWER, LiveServer
from tests.ui.test_console_e2e import Console, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

HANDBOOK = REPO / "data" / "samples" / "员工手册.pdf"
QUESTION = "入职满五年的员工每年有几天带薪年假？"
FACT = "十五天带薪年"
TIMEOUT_MS = 60_000
PAGE_SIZE = 20  # chunks per page in the console (api/ui/js/views/sources.js)


@pytest.fixture
def api_key(live_server: LiveServer) -> str:
    # Open mode (loopback, no key yet) lets the first key be made through the API.
    resp = httpx.post(
        f"{live_server.url}/v1/keys", json={"name": "sources", "scopes": ["admin"]}, timeout=30
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


@pytest.fixture
def api(live_server: LiveServer, api_key: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=live_server.url, headers=headers, timeout=30) as client:
        yield client


def _ready(api: httpx.Client, kb: str, name: str, data: bytes) -> dict[str, Any]:
    resp = api.post(f"/v1/knowledge-bases/{kb}/documents", files={"file": (name, data)})
    assert resp.status_code == 202, resp.text
    url = f"/v1/knowledge-bases/{kb}/documents/{resp.json()['id']}"
    wait_for(lambda: api.get(url).json()["status"] in ("ready", "failed"), timeout=120)
    doc: dict[str, Any] = api.get(url).json()
    assert doc["status"] == "ready", doc
    return doc


def _chunks(api: httpx.Client, kb: str, doc_id: str) -> list[dict[str, Any]]:
    url = f"/v1/knowledge-bases/{kb}/documents/{doc_id}/chunks"
    return list(api.get(url, params={"limit": 500}).json()["chunks"])


def test_chunk_list_and_highlighted_pages(
    browser: Any, live_server: LiveServer, api: httpx.Client, api_key: str
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    kb = api.post("/v1/knowledge-bases", json={"name": "Handbook"}).json()["id"]
    pdf = _ready(api, kb, "员工手册.pdf", HANDBOOK.read_bytes())
    notes = _ready(api, kb, "notes.txt", "值班电话是 8001，工作日九点到五点。\n".encode())
    chunks = _chunks(api, kb, pdf["id"])
    assert len(chunks) > PAGE_SIZE, "small chunks: the list needs a second page"
    (fact,) = [c for c in chunks if FACT in c["text"]]

    context = browser.new_context(viewport={"width": 1360, "height": 900}, locale="en-US")
    page = context.new_page()
    ui = Console(page, live_server)
    try:
        sign_in(ui, api_key)
        ui.tab("documents")
        rows = page.locator("table[data-test=doc-table] tbody tr")
        expect(rows).to_have_count(2)

        # The chunk list: the first page of chunks in document order, then the next page.
        rows.filter(has_text="员工手册.pdf").locator("[data-test=open-chunks]").click()
        panel = page.locator("[data-test=chunk-panel]")
        expect(panel).to_have_attribute("data-doc", pdf["id"])
        items = panel.locator("li.chunk")
        expect(items).to_have_count(PAGE_SIZE)
        expect(panel.locator("[data-test=chunk-range]")).to_have_text(
            f"1–{PAGE_SIZE} of {len(chunks)}"
        )
        first = items.first
        expect(first).to_have_attribute("data-chunk", str(chunks[0]["id"]))
        expect(first.locator(".chunk-ordinal")).to_have_text("#1")
        expect(first.locator(".chunk-meta")).to_contain_text(f"{chunks[0]['token_count']} tokens")
        expect(panel.locator("[data-test=chunks-prev]")).to_be_disabled()
        panel.locator("[data-test=chunks-next]").click()
        expect(items.first).to_have_attribute("data-chunk", str(chunks[PAGE_SIZE]["id"]))
        expect(items.first.locator(".chunk-ordinal")).to_have_text(f"#{PAGE_SIZE + 1}")

        # To the page with the fact; its heading path is shown as the API has it.
        target = fact["ordinal"] // PAGE_SIZE
        for _ in range(1 - target):
            panel.locator("[data-test=chunks-prev]").click()
        for shown in range(2, target + 1):
            panel.locator("[data-test=chunks-next]").click()
            # Each page is in before the next click.
            expect(panel.locator("[data-test=chunk-range]")).to_contain_text(
                f"{shown * PAGE_SIZE + 1}–"
            )
        expect(items.first).to_have_attribute("data-chunk", str(chunks[target * PAGE_SIZE]["id"]))
        item = panel.locator(f"li.chunk[data-chunk='{fact['id']}']")
        expect(item).to_have_count(1)
        assert fact["heading_path"], fact
        expect(item.locator("[data-test=heading-path]")).to_have_text(
            " › ".join(fact["heading_path"])
        )

        # Disable: marked in the list, gone from search; enable: back.
        item.locator("[data-test=toggle-chunk]").click()
        expect(item).to_have_attribute("data-disabled", "true")
        expect(item.locator(".badge-disabled")).to_have_text("Disabled")
        assert _chunk_state(api, kb, pdf["id"], fact["id"]) is True
        assert fact["id"] not in _search(api, kb)
        ui.shot("sources-01-chunk-disabled-en")
        item.locator("[data-test=toggle-chunk]").click()
        expect(item).to_have_attribute("data-disabled", "false")
        assert _chunk_state(api, kb, pdf["id"], fact["id"]) is False
        assert fact["id"] in _search(api, kb)

        # The chunk on its rendered page, highlighted.
        item.locator("[data-test=show-page]").first.click()
        view = panel.locator("[data-test=page-view]")
        expect(view).to_have_attribute("data-state", "ready")
        expect(view).to_have_attribute("data-page", str(fact["page_start"]))
        highlights = int(view.locator("[data-test=page-image]").get_attribute("data-highlights"))
        assert highlights > 0
        expect(view.locator("[data-test=page-note]")).to_contain_text("highlighted")
        page.wait_for_function(
            "() => (document.querySelector('[data-test=page-image]')?.naturalWidth || 0) > 500"
        )
        ui.shot_of(panel.locator(".chunk-viewer"), "sources-02-chunk-page-en")

        # A text file has chunks but no pages to show.
        rows.filter(has_text="notes.txt").locator("[data-test=open-chunks]").click()
        expect(panel).to_have_attribute("data-doc", notes["id"])
        expect(panel.locator("li.chunk")).to_have_count(1)
        expect(panel.locator("[data-test=show-page]")).to_have_count(0)

        # Ask: the citation opens on its page with the passage highlighted and its section.
        cited = api.post(
            f"/v1/knowledge-bases/{kb}/ask", json={"question": QUESTION, "retrieval_only": True}
        ).json()["citations"][0]
        ui.tab("ask")
        page.fill("#question", QUESTION)
        page.press("#question", "Enter")
        reply = page.locator(".msg[data-role=assistant]").last
        expect(reply).to_have_attribute("data-state", "done")
        expect(reply.locator(".msg-text")).to_have_text(ANSWER)
        chip = reply.locator("[data-test=sources] button.chip[data-index='1']")
        expect(chip).to_have_attribute("data-page", str(cited["page"]))
        chip.click()
        cite = page.locator("[data-test=citation-panel]")
        expect(cite).to_be_visible()
        if cited["heading_path"]:
            expect(cite.locator("[data-test=cite-heading]")).to_have_text(
                " › ".join(cited["heading_path"])
            )
        shown = cite.locator("[data-test=page-view]")
        expect(shown).to_have_attribute("data-page", str(cited["page"]))
        expect(shown).to_have_attribute("data-state", "ready")
        assert int(shown.get_attribute("data-highlights") or 0) > 0
        expect(cite.locator("[data-test=download]")).to_be_visible()
        ui.shot("sources-03-citation-page-en")

        # The same in Chinese.
        page.click("[data-test=lang]")
        ui.tab("documents")
        page.locator("table[data-test=doc-table] tbody tr", has_text="员工手册.pdf").locator(
            "[data-test=open-chunks]"
        ).click()
        expect(page.locator("[data-test=chunk-panel] h2")).to_contain_text("的分块")
        expect(page.locator("[data-test=chunk-range]")).to_contain_text(f"共 {len(chunks)} 个")
        ui.shot("sources-04-chunks-zh")
    finally:
        context.close()
    assert ui.errors == [], f"uncaught errors in the page: {ui.errors}"
    assert ui.foreign == [], f"the console fetched from elsewhere: {ui.foreign}"


def _chunk_state(api: httpx.Client, kb: str, doc_id: str, chunk_id: int) -> bool:
    (chunk,) = [c for c in _chunks(api, kb, doc_id) if c["id"] == chunk_id]
    return bool(chunk["disabled"])


def _search(api: httpx.Client, kb: str) -> list[int]:
    body = {"query": QUESTION, "top_k": 50, "mode": "lexical"}
    resp = api.post(f"/v1/knowledge-bases/{kb}/search", json=body)
    return [r["chunk_id"] for r in resp.json()["results"]]
