"""The web console end to end in headless Chromium against a real HTTP server.

Sign in with a real API key, create a knowledge base, drop several files (a PDF whose pages we
wrote, a text file, a broken PDF), watch them become ready or fail, ask a question and watch the
answer stream in, open the citation and check its page, start a re-index, run a retrieval
evaluation from a JSONL golden set and read its report, list the index versions and roll back,
switch to Chinese, delete the document, sign out. A screenshot of every page, in both
languages, goes to var/ui-artifacts/ (or RAG_TEST_ARTIFACTS).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.ui.conftest import ANSWER, LLM_MODEL, LiveServer, PacedLLM, artifacts_dir
from tests.ui.pdf import make_pdf

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FILLER = (
    "This manual belongs to the Aurora home appliance series. Read every section before use, "
    "keep it near the appliance, and hand it on with the appliance to any later owner. "
)
# The fact the question asks about sits in the middle of page 2, after enough text that the
# chunk holding it starts on page 2 as well.
PAGES = [
    ["Chapter 1. Installation.", FILLER * 3, "Place the machine on a flat, dry surface."],
    [
        "Chapter 2. Cleaning.",
        FILLER * 3,
        "The descaling program runs for 42 minutes and uses one blue tablet per cycle.",
        FILLER,
    ],
    ["Chapter 3. Warranty.", FILLER * 3, "The warranty lasts 24 months from the date of sale."],
]
FACT_PAGE = 2
QUESTION = "How long does the descaling program run, and which tablet does it use?"
TIMEOUT_MS = 60_000


def _files() -> list[dict[str, str]]:
    raw = {
        "aurora-manual.pdf": (make_pdf(PAGES), "application/pdf"),
        "notes.txt": (b"Support hours are 9:00 to 17:00 on working days.\n", "text/plain"),
        "broken.pdf": (b"%PDF-1.7\nthis is not really a PDF\n", "application/pdf"),
    }
    return [
        {"name": name, "type": kind, "b64": base64.b64encode(data).decode()}
        for name, (data, kind) in raw.items()
    ]


class Console:
    """The page plus the checks every step shares: screenshots, errors, where requests go."""

    def __init__(self, page: Any, server: LiveServer) -> None:
        self.page = page
        self.server = server
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.dir = artifacts_dir()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("request", self._request)

    def _request(self, request: Any) -> None:
        if not request.url.startswith(self.server.url):
            self.foreign.append(request.url)

    def shot(self, name: str) -> None:
        self.page.wait_for_timeout(300)  # let the toast and transitions settle
        # From the top: the sticky header of a scrolled page would cover the middle of it.
        self.page.evaluate("window.scrollTo(0, 0)")
        self.page.screenshot(path=str(self.dir / f"{name}.png"), full_page=True)

    def shot_of(self, locator: Any, name: str) -> None:
        """A screenshot of one part of the page, at full size, for reading it closely."""
        self.page.wait_for_timeout(300)
        locator.screenshot(path=str(self.dir / f"{name}.png"))

    def tab(self, view: str) -> None:
        self.page.click(f"nav.tabs a[data-view={view}]")


@pytest.fixture
def api_key(live_server: LiveServer) -> str:
    # Open mode (loopback, no keys yet) lets the first key be made through the API; from then
    # on every /v1 request needs a key.
    resp = httpx.post(
        f"{live_server.url}/v1/keys", json={"name": "console", "scopes": ["admin"]}, timeout=30
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


def test_console_end_to_end(
    browser: Any, live_server: LiveServer, api_key: str, paced_llm: PacedLLM
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1360, "height": 900}, locale="en-US")
    page = context.new_page()
    ui = Console(page, live_server)
    api = httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    )
    try:
        sign_in(ui, api_key)
        kb_id = create_kb(ui, api)
        doc_id = upload_documents(ui, api, kb_id)
        ask_question(ui, api, kb_id, paced_llm)
        run_reindex(ui, api, kb_id)
        run_evaluation(ui, api, kb_id)
        versions_and_rollback(ui, api, kb_id)
        chinese_pages(ui, api, kb_id)
        delete_document(ui, api, kb_id, doc_id)
        delete_kb(ui, api, kb_id)
        sign_out(ui)
    finally:
        api.close()
        context.close()
    assert ui.errors == [], f"uncaught errors in the page: {ui.errors}"
    assert ui.foreign == [], f"the console fetched from elsewhere: {ui.foreign}"


def sign_in(ui: Console, key: str) -> None:
    from playwright.sync_api import expect

    page = ui.page
    page.goto(f"{ui.server.url}/ui")
    assert page.url == f"{ui.server.url}/ui/"
    expect(page.locator("form.signin h2")).to_have_text("Sign in")
    # A key exists now, so the server no longer offers to go on without one.
    expect(page.get_by_role("button", name="Continue without a key")).to_have_count(0)
    ui.shot("01-signin-en")

    page.fill("#api-key", "kbqa_not-a-real-key")
    page.click("form.signin button[type=submit]")
    expect(page.locator(".form-error")).to_contain_text("The key was rejected")
    assert page.evaluate("sessionStorage.getItem('kbqa.key')") is None

    page.fill("#api-key", key)
    page.click("form.signin button[type=submit]")
    expect(page.locator("header.topbar")).to_be_visible()
    # The key lives in this tab's session storage only.
    assert page.evaluate("sessionStorage.getItem('kbqa.key')") == key
    stored = page.evaluate("JSON.stringify(Object.values(localStorage))")
    assert key not in stored


def create_kb(ui: Console, api: httpx.Client) -> str:
    from playwright.sync_api import expect

    page = ui.page
    expect(page.locator("nav.tabs a.active")).to_have_text("Knowledge bases")
    page.fill("form[data-test=create-kb] input[name=name]", "Aurora manuals")
    page.fill("form[data-test=create-kb] input[name=description]", "Appliance manuals")
    page.click("form[data-test=create-kb] button[type=submit]")
    row = page.locator("table[data-test=kb-table] tbody tr", has_text="Aurora manuals")
    expect(row).to_have_count(1)
    kb_id = row.get_attribute("data-kb")
    assert kb_id
    created = api.get(f"/v1/knowledge-bases/{kb_id}").json()
    assert created["name"] == "Aurora manuals"
    expect(row.locator("td[data-col=documents]")).to_have_text("0")
    expect(row.locator("td[data-col=chunks]")).to_have_text("0")
    expect(page.locator("#kb-picker")).to_have_value(kb_id)
    return kb_id


def upload_documents(ui: Console, api: httpx.Client, kb_id: str) -> str:
    from playwright.sync_api import expect

    page = ui.page
    ui.tab("documents")
    expect(page.locator("[data-test=dropzone]")).to_be_visible()
    files = _files()
    transfer = page.evaluate_handle(
        """(files) => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name, { type: f.type }));
            }
            return dt;
        }""",
        files,
    )
    page.dispatch_event("[data-test=dropzone]", "dragover", {"dataTransfer": transfer})
    page.dispatch_event("[data-test=dropzone]", "drop", {"dataTransfer": transfer})

    # One progress row per file; every upload is accepted (the broken PDF fails later, in the
    # worker, with a reason).
    for f in files:
        item = page.locator(f"ul[data-test=uploads] li[data-file='{f['name']}']")
        expect(item).to_have_attribute("data-state", "accepted")
        expect(item.locator(".progress-fill")).to_have_attribute("style", "width: 100%;")

    rows = page.locator("table[data-test=doc-table] tbody tr")
    expect(rows).to_have_count(3)
    manual = rows.filter(has_text="aurora-manual.pdf")
    broken = rows.filter(has_text="broken.pdf")
    # Live updates: the table follows the worker without a reload.
    expect(manual).to_have_attribute("data-status", "ready")
    expect(broken).to_have_attribute("data-status", "failed")
    expect(rows.filter(has_text="notes.txt")).to_have_attribute("data-status", "ready")

    doc_id = manual.get_attribute("data-doc")
    doc = api.get(f"/v1/knowledge-bases/{kb_id}/documents/{doc_id}").json()
    assert doc["pages"] == len(PAGES) and doc["chunks"] > len(PAGES)
    expect(manual.locator("td[data-col=pages]")).to_have_text(str(doc["pages"]))
    expect(manual.locator("td[data-col=chunks]")).to_have_text(str(doc["chunks"]))
    stats = api.get(f"/v1/knowledge-bases/{kb_id}").json()
    expect(page.locator("[data-test=doc-summary]")).to_contain_text(f"{stats['chunks']} chunks")
    ui.shot("03-documents-en")

    page.check("#failed-only")
    expect(rows).to_have_count(1)
    failed = api.get(f"/v1/knowledge-bases/{kb_id}/documents", params={"status": "failed"})
    (failed_doc,) = failed.json()["documents"]
    assert failed_doc["filename"] == "broken.pdf" and failed_doc["error"]
    expect(rows.first).to_have_attribute("data-filename", "broken.pdf")
    expect(rows.first.locator(".error-text")).to_have_text(failed_doc["error"])
    ui.shot("04-documents-failed-en")
    page.uncheck("#failed-only")
    expect(rows).to_have_count(3)

    ui.tab("kbs")
    row = page.locator(f"table[data-test=kb-table] tr[data-kb='{kb_id}']")
    expect(row.locator("td[data-col=documents]")).to_have_text(str(stats["documents"]))
    expect(row.locator("td[data-col=chunks]")).to_have_text(str(stats["chunks"]))
    ui.shot("02-knowledge-bases-en")
    return str(doc_id)


def ask_question(ui: Console, api: httpx.Client, kb_id: str, llm: PacedLLM) -> None:
    from playwright.sync_api import expect

    page = ui.page
    ui.tab("ask")
    page.fill("#question", QUESTION)
    page.press("#question", "Enter")
    reply = page.locator(".msg[data-role=assistant]").last
    # Streaming: the answer is on screen, still growing, before the stream ends.
    partial = page.wait_for_function(
        """() => {
            const m = [...document.querySelectorAll('.msg[data-role=assistant]')].pop();
            const growing = m && m.dataset.state === 'streaming' && Number(m.dataset.deltas) >= 2;
            return growing && m.querySelector('.msg-text').innerText;
        }""",
        timeout=TIMEOUT_MS,
    ).json_value()
    assert partial and ANSWER.startswith(partial.strip()) and len(partial.strip()) < len(ANSWER)
    page.screenshot(path=str(ui.dir / "05a-ask-streaming-en.png"), full_page=True)
    expect(reply).to_have_attribute("data-state", "done")
    expect(reply.locator(".msg-text")).to_have_text(ANSWER)
    expect(reply.locator("[data-test=model]")).to_contain_text(LLM_MODEL)

    chip = reply.locator("[data-test=sources] button.chip[data-index='1']")
    expect(chip).to_have_attribute("data-filename", "aurora-manual.pdf")
    expect(chip).to_have_attribute("data-page", str(FACT_PAGE))
    expect(chip).to_contain_text(f"p. {FACT_PAGE}")
    chip.click()
    panel = page.locator("[data-test=citation-panel]")
    expect(panel).to_be_visible()
    expect(panel.locator("[data-test=cite-file]")).to_have_text("aurora-manual.pdf")
    expect(panel.locator("[data-test=cite-page]")).to_have_text(f"p. {FACT_PAGE}")
    expect(panel.locator("[data-test=cite-text]")).to_contain_text("descaling program")
    # The [1] in the answer opens the same passage.
    panel.locator("button.link").click()
    expect(panel).to_be_hidden()
    reply.locator("button.marker", has_text="[1]").click()
    expect(panel.locator("[data-test=cite-page]")).to_have_text(f"p. {FACT_PAGE}")

    # The conversation is kept by the server and listed.
    conversations = api.get("/v1/conversations", params={"kb_id": kb_id}).json()["conversations"]
    assert len(conversations) == 1
    detail = api.get(f"/v1/conversations/{conversations[0]['id']}").json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]
    assert detail["messages"][1]["content"] == ANSWER
    expect(page.locator("[data-test=conversations] li.active")).to_contain_text(QUESTION[:20])
    ui.shot("05-ask-en")

    # Retrieval only: passages without calling the LLM.
    calls = len(llm.requests)
    page.check("#retrieval-only")
    page.fill("#question", "blue tablet descaling")
    page.click("[data-test=send]")
    passages = page.locator(".msg[data-role=assistant]").last
    expect(passages).to_have_attribute("data-state", "done")
    expect(passages.locator("button.chip").first).to_be_visible()
    assert len(llm.requests) == calls
    ui.shot("05b-ask-retrieval-only-en")
    page.uncheck("#retrieval-only")

    # History: a new conversation is empty; opening the old one brings its messages back.
    page.click("[data-test=new-conversation]")
    expect(page.locator(".msg")).to_have_count(0)
    page.click(f"button.conv[data-conversation='{conversations[0]['id']}']")
    expect(page.locator(".msg")).to_have_count(2)
    old = page.locator(".msg[data-role=assistant]").last
    expect(old.locator(".msg-text")).to_have_text(ANSWER)
    expect(old.locator("button.chip[data-index='1']")).to_have_attribute(
        "data-page", str(FACT_PAGE)
    )
    old.locator("button.chip[data-index='1']").click()
    expect(page.locator("[data-test=citation-panel]")).to_be_visible()


def run_reindex(ui: Console, api: httpx.Client, kb_id: str) -> None:
    from playwright.sync_api import expect

    page = ui.page
    ui.tab("jobs")
    page.fill("#chunk-tokens", "64")
    page.click("form[data-test=reindex-form] button[type=submit]")
    row = page.locator("table[data-test=job-table] tbody tr[data-kind=reindex]")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-status", "succeeded")
    job = api.get(f"/v1/jobs/{row.get_attribute('data-job')}").json()
    assert job["kb_id"] == kb_id and job["status"] == "succeeded"
    done, total = job["progress"]["done"], job["progress"]["total"]
    assert total and done == total
    expect(row.locator(".progress-text")).to_have_text(f"{int(done)} / {int(total)}")
    # Its details, readable: the job's own fields and what the re-index did.
    row.locator("[data-test=job-open]").click()
    facts = page.locator(f"tr.job-detail[data-detail-of='{job['id']}'] [data-test=job-details]")
    expect(facts).to_contain_text(job["id"])
    expect(facts).to_contain_text(f"v{job['result']['version']}")
    assert "[object" not in facts.inner_text()
    row.locator("[data-test=job-open]").click()
    expect(facts).to_have_count(0)
    # Ingestion jobs are behind the filter, not mixed in.
    expect(page.locator("table[data-test=job-table] tr[data-kind=ingest]")).to_have_count(0)
    ui.shot("06-jobs-en")


# A golden set whose evidence is in the uploaded PDF: answer excerpts and pages. The last two
# make the metrics differ: a vague question whose page is found further down, and a question
# the manual does not answer (a miss in every mode).
GOLDEN = [
    {
        "id": "descaling",
        "question": "How long does the descaling program run?",
        "answer_excerpt": "The descaling program runs for 42 minutes",
    },
    {
        "id": "warranty",
        "question": "How long does the warranty last after the date of sale?",
        "answer_excerpt": "The warranty lasts 24 months from the date of sale.",
    },
    {
        "id": "placement",
        "question": "Where should the machine be placed during installation?",
        "filename": "aurora-manual.pdf",
        "page": 1,
    },
    {
        "id": "keep-manual",
        "question": "Who should keep this manual, and where?",
        "filename": "aurora-manual.pdf",
        "page": 3,
    },
    {
        "id": "not-in-manual",
        "question": "What colour is the power cable?",
        "answer_excerpt": "The power cable is orange and two metres long.",
    },
]
EVAL_MODES = ["lexical", "dense", "hybrid"]
# The report's numeric columns: data-metric, the key in the job's result, decimals shown.
METRICS = [
    ("hit@1", ("hit_at", "1"), 3),
    ("hit@5", ("hit_at", "5"), 3),
    ("hit@10", ("hit_at", "10"), 3),
    ("mrr", ("mrr",), 3),
    ("ndcg@10", ("ndcg_at_10",), 3),
    ("p50_ms", ("latency_p50_ms",), 1),
    ("p95_ms", ("latency_p95_ms",), 1),
]


def _jsonl(items: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def _metric(report: dict[str, Any], path: tuple[str, ...]) -> float:
    value: Any = report
    for key in path:
        value = value[key]
    return float(value)


def run_evaluation(ui: Console, api: httpx.Client, kb_id: str) -> None:
    from playwright.sync_api import expect

    page = ui.page
    form = page.locator("form[data-test=eval-form]")
    status = form.locator("[data-test=golden-status]")
    start = form.locator("[data-test=eval-start]")
    expect(start).to_be_disabled()
    # The default modes: the three that need nothing more on the server.
    for mode in EVAL_MODES:
        expect(form.locator(f"input[name=eval-mode][value='{mode}']")).to_be_checked()
    expect(form.locator("input[name=eval-mode][value='hybrid+rerank']")).not_to_be_checked()

    # A broken file is refused in the page, with the line that is wrong.
    bad = _jsonl(GOLDEN[:1]) + b"{not json\n"
    page.set_input_files(
        "#golden-file", files=[{"name": "bad.jsonl", "mimeType": "text/plain", "buffer": bad}]
    )
    expect(status).to_have_attribute("data-state", "error")
    expect(status).to_contain_text("line 2 is not JSON")
    expect(start).to_be_disabled()

    page.set_input_files(
        "#golden-file",
        files=[{"name": "golden.jsonl", "mimeType": "text/plain", "buffer": _jsonl(GOLDEN)}],
    )
    expect(status).to_have_text(f"{len(GOLDEN)} questions read from golden.jsonl.")
    expect(start).to_be_enabled()
    ui.shot_of(form, "06b-jobs-eval-form-en")
    before = {j["id"] for j in api.get("/v1/jobs", params={"kind": "eval"}).json()["jobs"]}
    start.click()

    row = page.locator("table[data-test=job-table] tbody tr[data-kind=eval]")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-status", "succeeded")
    job_id = row.get_attribute("data-job")
    assert job_id and job_id not in before
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["kind"] == "eval" and job["kb_id"] == kb_id and job["status"] == "succeeded"
    result = job["result"]
    assert result["questions"] == len(GOLDEN)
    assert list(result["modes"]) == EVAL_MODES
    # The golden set's evidence is in the PDF: BM25 finds it.
    assert result["modes"]["lexical"]["hit_at"]["10"] > 0
    done, total = job["progress"]["done"], job["progress"]["total"]
    assert total == len(GOLDEN) * len(EVAL_MODES) and done == total
    expect(row.locator(".progress-text")).to_have_text(f"{int(done)} / {int(total)}")
    expect(row.locator("td.kind")).to_contain_text("evaluation")

    # Opening the row shows the report: one row per mode, every number as the API has it.
    detail = page.locator(f"tr.job-detail[data-detail-of='{job_id}']")
    expect(detail).to_have_count(0)
    row.locator("[data-test=job-open]").click()
    expect(row.locator("[data-test=job-open]")).to_have_attribute("aria-expanded", "true")
    table = detail.locator("table[data-test=eval-table]")
    expect(table.locator("tbody tr")).to_have_count(len(EVAL_MODES))
    expect(detail).to_contain_text(f"{len(GOLDEN)} questions")
    for mode, report in result["modes"].items():
        cells = table.locator(f"tbody tr[data-mode='{mode}']")
        for key, path, digits in METRICS:
            value = _metric(report, path)
            cell = cells.locator(f"td[data-metric='{key}']")
            # The exact number behind the rounded text (JS and Python print 1.0 differently).
            assert float(cell.get_attribute("data-value") or "nan") == value, (mode, key)
            if digits == 3:
                expect(cell).to_have_text(f"{value:.3f}")
            else:
                assert abs(float(cell.inner_text()) - value) <= 0.05 + 1e-9
        misses = cells.locator("td[data-metric=misses]")
        expect(misses).to_have_text(", ".join(report["misses"]) or "none")
    hit5 = table.locator("tbody tr[data-mode=lexical] td[data-metric='hit@5']")
    expect(hit5).to_have_text(f"{result['modes']['lexical']['hit_at']['5']:.3f}")
    ui.shot("06c-jobs-eval-report-en")
    ui.shot_of(detail, "06d-eval-report-en")


def _versions(api: httpx.Client, kb_id: str) -> dict[str, Any]:
    resp = api.get(f"/v1/knowledge-bases/{kb_id}/versions")
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def versions_and_rollback(ui: Console, api: httpx.Client, kb_id: str) -> None:
    from playwright.sync_api import expect

    page = ui.page
    panel = page.locator("[data-test=versions]")
    rows = panel.locator("table[data-test=versions-table] tbody tr")
    expect(rows).to_have_count(2)
    listed = _versions(api, kb_id)
    assert listed["live"] == 2
    by_number = {v["number"]: v for v in listed["versions"]}
    assert by_number[1]["status"] == "retired" and by_number[2]["status"] == "live"
    for number, version in by_number.items():
        r = panel.locator(f"tr[data-version='{number}']")
        expect(r).to_have_attribute("data-status", version["status"])
        expect(r.locator("td[data-col=model]")).to_have_text(version["embedding_model"])
        expect(r.locator("td[data-col=dim]")).to_have_text(str(version["embedding_dim"]))
        expect(r.locator("td[data-col=chunking]")).to_have_text(
            f"{version['chunk_tokens']} tokens, overlap {version['overlap_tokens']}"
        )
        expect(r.locator("td[data-col=chunks]")).to_have_text(str(version["chunks"]))
    expect(panel.locator("tr[data-version='2'] .badge")).to_have_text("live")
    expect(panel.locator("tr[data-version='1'] .badge")).to_have_text("retired")
    assert by_number[2]["chunk_tokens"] == 64
    # The rollback goes to the most recent retired version: its row has the button.
    expect(panel.locator("[data-test=rollback]")).to_have_count(1)
    button = panel.locator("tr[data-version='1'] [data-test=rollback]")
    expect(button).to_have_text("Roll back to v1")
    ui.shot_of(panel, "06e-jobs-versions-en")

    button.click()
    dialog = page.locator(".modal[role=dialog]")
    expect(dialog).to_contain_text("Make index version 1 live again instead of version 2?")
    ui.shot("06f-rollback-confirm-en")
    dialog.locator("button.danger").click()
    expect(dialog).to_have_count(0)

    # The rollback runs as a re-index job of version 1; the table follows it to the switch.
    expect(panel.locator("tr[data-version='1']")).to_have_attribute("data-status", "live")
    expect(panel.locator("tr[data-version='2']")).to_have_attribute("data-status", "retired")
    listed = _versions(api, kb_id)
    assert listed["live"] == 1
    statuses = {v["number"]: v["status"] for v in listed["versions"]}
    assert statuses == {1: "live", 2: "retired"}
    job_id = {v["number"]: v for v in listed["versions"]}[1]["job_id"]
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["result"]["previous"] == 2
    rollback_row = page.locator(f"table[data-test=job-table] tr[data-job='{job_id}']")
    expect(rollback_row).to_have_attribute("data-status", "succeeded")
    expect(rollback_row.locator("td.kind")).to_contain_text("v1, rolled back from v2")
    expect(panel.locator("tr[data-version='2'] [data-test=rollback]")).to_have_text(
        "Roll back to v2"
    )
    ui.shot("06g-jobs-after-rollback-en")


def jobs_in_chinese(ui: Console, api: httpx.Client, kb_id: str) -> None:
    from playwright.sync_api import expect

    page = ui.page
    panel = page.locator("[data-test=versions]")
    expect(panel.locator("h2")).to_have_text("索引版本")
    expect(panel.locator("tr[data-version='1'] .badge")).to_have_text("线上")
    expect(panel.locator("tr[data-version='2'] .badge")).to_have_text("已退役")
    expect(panel.locator("tr[data-version='1'] td[data-col=chunking]")).to_contain_text("词元")
    form = page.locator("form[data-test=eval-form]")
    expect(form.locator("[data-test=eval-start]")).to_have_text("开始评测")
    # The evaluation opened before is still open, its report in Chinese.
    report = page.locator("tr.job-detail table[data-test=eval-table]")
    expect(report.locator("th").first).to_have_text("模式")
    expect(report.locator("tr[data-mode=lexical] th")).to_have_text("词法（BM25）")
    ui.shot("10-jobs-zh")
    ui.shot_of(page.locator("tr.job-detail"), "10b-eval-report-zh")

    # The confirmation in Chinese; cancelling it leaves everything as it was.
    jobs_before = len(api.get("/v1/jobs", params={"kind": "reindex"}).json()["jobs"])
    panel.locator("tr[data-version='2'] [data-test=rollback]").click()
    dialog = page.locator(".modal[role=dialog]")
    expect(dialog).to_contain_text("让索引版本 2 重新上线")
    ui.shot("10c-rollback-confirm-zh")
    dialog.get_by_role("button", name="取消").click()
    expect(dialog).to_have_count(0)
    page.wait_for_timeout(500)
    assert _versions(api, kb_id)["live"] == 1
    assert len(api.get("/v1/jobs", params={"kind": "reindex"}).json()["jobs"]) == jobs_before


def chinese_pages(ui: Console, api: httpx.Client, kb_id: str) -> None:
    from playwright.sync_api import expect

    page = ui.page
    page.click("header.topbar button.lang")
    expect(page.locator("nav.tabs a[data-view=kbs]")).to_have_text("知识库")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    ui.tab("kbs")
    expect(page.locator("table[data-test=kb-table] th").first).to_have_text("名称")
    ui.shot("07-knowledge-bases-zh")
    ui.tab("documents")
    expect(page.locator("table[data-test=doc-table] .badge").first).to_be_visible()
    expect(page.locator("table[data-test=doc-table] th").first).to_have_text("文件")
    ui.shot("08-documents-zh")
    ui.tab("ask")
    chip = page.locator(".msg[data-role=assistant] button.chip[data-index='1']").last
    expect(chip).to_contain_text(f"第 {FACT_PAGE} 页")
    chip.click()
    expect(page.locator("[data-test=cite-page]")).to_have_text(f"第 {FACT_PAGE} 页")
    ui.shot("09-ask-zh")
    ui.tab("jobs")
    expect(
        page.locator("table[data-test=job-table] tr[data-kind=reindex] .badge").first
    ).to_have_text("成功")
    jobs_in_chinese(ui, api, kb_id)
    page.click("header.topbar button.lang")
    expect(page.locator("nav.tabs a[data-view=kbs]")).to_have_text("Knowledge bases")


def delete_document(ui: Console, api: httpx.Client, kb_id: str, doc_id: str) -> None:
    from playwright.sync_api import expect

    page = ui.page
    ui.tab("documents")
    row = page.locator(f"table[data-test=doc-table] tr[data-doc='{doc_id}']")
    row.locator("button.danger").click()
    dialog = page.locator(".modal[role=dialog]")
    expect(dialog).to_contain_text("aurora-manual.pdf")
    ui.shot("11-delete-confirm-en")
    dialog.locator("button.danger").click()
    expect(row).to_have_count(0)
    expect(page.locator("table[data-test=doc-table] tbody tr")).to_have_count(2)
    assert api.get(f"/v1/knowledge-bases/{kb_id}/documents/{doc_id}").status_code == 404
    # Its passages are gone from retrieval too.
    hits = api.post(
        f"/v1/knowledge-bases/{kb_id}/search", json={"query": "descaling program blue tablet"}
    ).json()["results"]
    assert all(h["document_id"] != doc_id for h in hits)


def delete_kb(ui: Console, api: httpx.Client, kb_id: str) -> None:
    from playwright.sync_api import expect

    page = ui.page
    ui.tab("kbs")
    page.locator(f"table[data-test=kb-table] tr[data-kb='{kb_id}'] button.danger").click()
    page.locator(".modal[role=dialog] button.danger").click()
    expect(page.locator("p.empty")).to_have_text("No knowledge bases yet. Create one above.")
    assert api.get(f"/v1/knowledge-bases/{kb_id}").status_code == 404


def sign_out(ui: Console) -> None:
    from playwright.sync_api import expect

    page = ui.page
    page.click("header.topbar button.link")
    expect(page.locator("form.signin")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('kbqa.key')") is None
    page.click("form.signin button.lang")
    expect(page.locator("form.signin h2")).to_have_text("登录")
    ui.shot("12-signin-zh")
    page.click("form.signin button.lang")
