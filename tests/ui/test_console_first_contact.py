"""The console as a new user meets it (issue 16), in headless Chromium against a real server
in open mode (loopback, no key created):

- a mistyped key is refused, in open mode too, and the refusal is shown;
- every view fits a 1366 px wide screen, with long names, ids and errors; job details are
  readable (no "[object HTMLElement]");
- errors are shown by their code in the user's language, with the fields at fault;
- document warnings are short sentences, translated;
- an answer's flags (not grounded, cut off, degenerate) and "no ready documents" are shown.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ingest.parsers.notices import MESSAGES
from tests.ui.conftest import ANSWER, LiveServer, PacedLLM, artifacts_dir
from tests.ui.pdf import make_pdf

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TIMEOUT_MS = 60_000
WIDTH, HEIGHT = 1366, 768
KB_NAME = "Employee handbooks of the Shenzhen, Hangzhou and Chengdu offices (2025 edition)"
LONG_PDF = "xinghe-cloud-employee-handbook-shenzhen-hangzhou-chengdu-2025-final-approved.pdf"
UNBROKEN = "x" * 90 + ".txt"  # no place to break: it must wrap or clip, not widen the page
PAGES = [
    ["Chapter 1. Installation.", "Place the machine on a flat, dry surface near a socket."],
    [
        "Chapter 2. Cleaning.",
        "The descaling program runs for 42 minutes and uses one blue tablet per cycle.",
    ],
    ["Chapter 3. Warranty.", "The warranty lasts 24 months from the date of sale."],
]
STATUS_ZH = {"succeeded": "成功", "failed": "失败"}
GOLDEN = [{"question": "How long does the descaling program run?", "answer_excerpt": "42 minutes"}]

# Everything that sticks out to the right: the page itself, any table past the viewport or
# past the box it sits in.
OVERFLOW = """() => {
    const root = document.documentElement;
    const out = [];
    if (root.scrollWidth > root.clientWidth) {
        out.push(`page ${root.scrollWidth} > ${root.clientWidth}`);
    }
    for (const table of document.querySelectorAll("table")) {
        const name = table.dataset.test || table.className;
        const right = table.getBoundingClientRect().right;
        if (right > root.clientWidth + 0.5) out.push(`${name} ends at ${right}`);
        const room = table.parentElement.clientWidth;
        if (table.offsetWidth > room + 0.5) out.push(`${name} ${table.offsetWidth} > ${room}`);
    }
    return out;
}"""


def _wait(predicate: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _bad_xref_pdf() -> bytes:
    good = make_pdf(PAGES)
    return good[: good.rindex(b"startxref")] + b"startxref\n999\n%%EOF\n"


@pytest.fixture(scope="module")
def api(live_server: LiveServer) -> Iterator[httpx.Client]:
    # Open mode: no key is sent (one would be refused).
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def seeded(api: httpx.Client) -> dict[str, Any]:
    """A knowledge base with a long name; a ready PDF with a long name, a file name with no
    place to break, a broken PDF (failed, with an error) and a repaired PDF (a warning); a
    finished re-index and evaluation."""
    resp = api.post("/v1/knowledge-bases", json={"name": KB_NAME})
    assert resp.status_code == 201, resp.text
    kb = resp.json()["id"]
    files = {
        LONG_PDF: (make_pdf(PAGES), "application/pdf"),
        UNBROKEN: (b"Support hours are 9:00 to 17:00 on working days.\n", "text/plain"),
        "broken.pdf": (b"%PDF-1.7\nthis is not really a PDF\n", "application/pdf"),
        "repaired.pdf": (_bad_xref_pdf(), "application/pdf"),
    }
    docs = {}
    for name, (data, kind) in files.items():
        resp = api.post(f"/v1/knowledge-bases/{kb}/documents", files={"file": (name, data, kind)})
        assert resp.status_code == 202, resp.text
        docs[name] = resp.json()["id"]

    def settled() -> list[dict[str, Any]] | None:
        listed = api.get(f"/v1/knowledge-bases/{kb}/documents").json()["documents"]
        return listed if all(d["status"] in ("ready", "failed") for d in listed) else None

    states = {d["filename"]: d for d in _wait(settled, "ingestion")}
    assert states["broken.pdf"]["status"] == "failed"
    assert states["repaired.pdf"]["warnings"] == [MESSAGES["pdf_repaired"]]
    jobs = [
        api.post(f"/v1/knowledge-bases/{kb}/reindex", json={"chunk_tokens": 64}).json()["job_id"],
        api.post(
            f"/v1/knowledge-bases/{kb}/eval", json={"golden": GOLDEN, "modes": ["lexical"]}
        ).json()["job_id"],
    ]
    for job in jobs:
        _wait(
            lambda job=job: api.get(f"/v1/jobs/{job}").json()["status"] == "succeeded",
            f"job {job}",
        )
    return {"kb": kb, "docs": docs}


def _console(browser: Any, server: LiveServer, lang: str = "en") -> tuple[Any, Any, list[str]]:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(
        viewport={"width": WIDTH, "height": HEIGHT}, locale="zh-CN" if lang == "zh" else "en-US"
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/ui/")
    return context, page, errors


def _enter_open(page: Any, kb: str | None = None) -> None:
    from playwright.sync_api import expect

    page.locator(".open-note button").click()
    expect(page.locator("header.topbar")).to_be_visible()
    if kb:
        page.select_option("#kb-picker", kb)


def _shot(page: Any, name: str) -> None:
    page.wait_for_timeout(300)
    page.evaluate("window.scrollTo(0, 0)")  # else the sticky header lands mid-page
    page.screenshot(path=str(artifacts_dir() / f"first-contact-{name}.png"), full_page=True)


def test_a_bogus_key_is_refused_in_open_mode(browser: Any, live_server: LiveServer) -> None:
    from playwright.sync_api import expect

    context, page, errors = _console(browser, live_server)
    try:
        # Open mode: the server offers to go on without a key...
        expect(page.locator(".open-note button")).to_have_text("Continue without a key")
        # ...but a key that is typed in is checked, and refused: none is valid.
        page.fill("#api-key", "kbqa_not-a-real-key")
        page.click("form.signin button[type=submit]")
        refusal = page.locator(".form-error")
        expect(refusal).to_have_attribute("data-state", "rejected")
        expect(refusal).to_contain_text("The key was rejected")
        expect(refusal).to_contain_text("No key is valid on this server yet")
        expect(page.locator("header.topbar")).to_have_count(0)
        assert page.evaluate("sessionStorage.getItem('kbqa.key')") is None
        _shot(page, "bogus-key-en")

        page.click("form.signin button.lang")
        page.fill("#api-key", "kbqa_not-a-real-key")
        page.click("form.signin button[type=submit]")
        expect(refusal).to_have_attribute("data-state", "rejected")
        expect(refusal).to_have_text(
            "密钥被拒绝：此服务器还没有创建任何密钥，因此没有有效的密钥：请不使用密钥继续，"
            "或用下面的命令创建一个密钥。"
        )
        _shot(page, "bogus-key-zh")
        page.click("form.signin button.lang")

        _enter_open(page)
        assert page.evaluate("sessionStorage.getItem('kbqa.key')") == ""
    finally:
        context.close()
    assert errors == []


def _open_every_job(page: Any, ids: list[str]) -> None:
    """Open each job's details. The table is redrawn as it polls, and a row that opens moves
    the rows below it: a click may land on a neighbour, so go round until all are open."""
    from playwright.sync_api import expect

    page.select_option("#job-filter", "all")
    for job_id in ids:
        expect(page.locator(f"tr.job-row[data-job='{job_id}']")).to_be_visible()
    for _ in range(5):
        closed = [
            job_id
            for job_id in ids
            if page.locator(f"tr.job-detail[data-detail-of='{job_id}']").count() == 0
        ]
        if not closed:
            return
        for job_id in closed:
            page.locator(f"tr.job-row[data-job='{job_id}'] [data-test=job-open]").click()
            page.wait_for_timeout(200)
    raise AssertionError(f"job details would not stay open: {closed}")


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_job_details_are_readable_and_every_view_fits_1366px(
    browser: Any, live_server: LiveServer, api: httpx.Client, seeded: dict[str, Any], lang: str
) -> None:
    from playwright.sync_api import expect

    kb = seeded["kb"]
    context, page, errors = _console(browser, live_server, lang)
    try:
        _enter_open(page, kb)
        for view in ("kbs", "documents"):
            page.click(f"nav.tabs a[data-view={view}]")
            expect(page.locator("table.data").first).to_be_visible()
            page.wait_for_timeout(500)
            assert page.evaluate(OVERFLOW) == [], view
            _shot(page, f"{view}-{lang}")
        rows = page.locator("table[data-test=doc-table] tbody tr")
        expect(rows).to_have_count(4)

        page.click("nav.tabs a[data-view=jobs]")
        jobs = api.get("/v1/jobs", params={"kb_id": kb, "limit": 200}).json()["jobs"]
        assert {j["kind"] for j in jobs} >= {"ingest", "reindex", "eval"}
        _open_every_job(page, [j["id"] for j in jobs])
        for job in jobs:
            detail = page.locator(f"tr.job-detail[data-detail-of='{job['id']}']")
            text = detail.inner_text()
            assert "[object" not in text, text
            facts = detail.locator("[data-test=job-details]").first
            expect(facts).to_contain_text(job["id"])
            status = STATUS_ZH[job["status"]] if lang == "zh" else job["status"]
            expect(facts.locator(".badge").first).to_have_text(status)
            if job["error"]:
                expect(facts.locator(".error-text")).to_have_text(job["error"])
            if job.get("filename"):
                expect(facts).to_contain_text(job["filename"])
            if job["kind"] == "reindex":
                expect(facts).to_contain_text(f"v{job['result']['version']}")
            if job["kind"] == "eval":
                expect(detail.locator("table[data-test=eval-table] tbody tr")).to_have_count(1)
        page.wait_for_timeout(300)
        assert page.evaluate(OVERFLOW) == [], "jobs"
        _shot(page, f"jobs-details-{lang}")

        page.click("nav.tabs a[data-view=ask]")
        page.fill("#question", "How long does the descaling program run?")
        page.press("#question", "Enter")
        reply = page.locator(".msg[data-role=assistant]").last
        expect(reply).to_have_attribute("data-state", "done")
        reply.locator("button.chip").first.click()
        expect(page.locator("[data-test=citation-panel]")).to_be_visible()
        assert page.evaluate(OVERFLOW) == [], "ask"
        _shot(page, f"ask-{lang}")
    finally:
        context.close()
    assert errors == []


def test_document_warnings_are_short_and_translated(
    browser: Any, live_server: LiveServer, seeded: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    context, page, errors = _console(browser, live_server)
    try:
        _enter_open(page, seeded["kb"])
        page.click("nav.tabs a[data-view=documents]")
        row = page.locator("table[data-test=doc-table] tr[data-filename='repaired.pdf']")
        warning = row.locator("[data-test=doc-warning]")
        expect(warning).to_have_text(MESSAGES["pdf_repaired"])
        page.click("header.topbar button.lang")
        expect(warning).to_have_text("此 PDF 文件已损坏，读取时已自动修复；部分文字可能缺失。")
        _shot(page, "warnings-zh")
        # Every sentence of the server's catalogue has its translation in the console.
        translated = page.evaluate(
            r"""async (messages) => {
                const { warningText } = await import("./js/i18n.js");
                return Object.fromEntries(
                    Object.entries(messages).map(([code, text]) => [
                        code,
                        warningText(
                                text.replaceAll("{pages}", "2–4").replace(/\{\w+\}/g, "3"),
                            ),
                    ]),
                );
            }""",
            MESSAGES,
        )
        for code, text in translated.items():
            assert text != MESSAGES[code] and not any("a" <= c <= "z" for c in text), (code, text)
        assert translated["pdf_page_empty"].startswith("第 2–4 页")
        page.click("header.topbar button.lang")
    finally:
        context.close()
    assert errors == []


def test_errors_are_shown_by_code_in_the_users_language(
    browser: Any, live_server: LiveServer, seeded: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    context, page, errors = _console(browser, live_server, "zh")
    try:
        _enter_open(page, seeded["kb"])
        expect(page.locator("nav.tabs a[data-view=kbs]")).to_have_text("知识库")

        # A name already taken: the server's conflict, in Chinese, for this form.
        page.fill("form[data-test=create-kb] input[name=name]", KB_NAME)
        page.click("form[data-test=create-kb] button[type=submit]")
        expect(page.locator("#toast")).to_have_text("错误：已有同名的知识库。")

        # Uploads: an empty file (refused in the page) and a type the server refuses (415).
        page.click("nav.tabs a[data-view=documents]")
        page.set_input_files(
            "#file-input",
            files=[
                {"name": "empty.txt", "mimeType": "text/plain", "buffer": b""},
                {"name": "tool.exe", "mimeType": "application/octet-stream", "buffer": b"MZ\0"},
            ],
        )
        empty = page.locator("ul[data-test=uploads] li[data-file='empty.txt']")
        exe = page.locator("ul[data-test=uploads] li[data-file='tool.exe']")
        expect(empty).to_have_attribute("data-state", "failed")
        expect(exe).to_have_attribute("data-state", "failed")
        expect(empty.locator(".upload-state")).to_have_text("上传失败：文件为空")
        expect(exe.locator(".upload-state")).to_have_text("上传失败：不支持此类型的文件")
        # The server's own sentence is kept for the curious, in the tooltip.
        assert "not supported" in (exe.locator(".upload-state").get_attribute("title") or "")
        assert page.evaluate(OVERFLOW) == [], "uploads"
        _shot(page, "upload-errors-zh")

        # A validation error from the real server: every field at fault, in Chinese.
        shown = page.evaluate(
            """async () => {
                const { errorFrom } = await import("./js/api.js");
                const { errorText } = await import("./js/errors.js");
                const resp = await fetch("../v1/knowledge-bases", {
                    method: "POST",
                    headers: { "Content-Type": "application/json" },
                    body: JSON.stringify({ name: "", colour: "blue" }),
                });
                const body = await resp.json();
                return { status: resp.status, body, text: errorText(errorFrom(resp.status, body)) };
            }"""
        )
        assert shown["status"] == 422 and shown["body"]["error"]["code"] == "validation_error"
        fields = {d["field"]: d["type"] for d in shown["body"]["error"]["details"]}
        assert fields.get("body.colour") == "extra_forbidden", fields
        assert shown["text"].startswith("请求中有字段不符合要求。 请检查：")
        assert "colour：未知字段" in shown["text"]
        # A code the console does not know: the server's sentence.
        unknown = page.evaluate(
            """async () => {
                const { errorFrom } = await import("./js/api.js");
                const { errorText } = await import("./js/errors.js");
                const body = { error: { code: "brand_new", message: "something new happened" } };
                return errorText(errorFrom(418, body));
            }"""
        )
        assert unknown == "something new happened"
        page.click("header.topbar button.lang")
        expect(page.locator("nav.tabs a[data-view=kbs]")).to_have_text("Knowledge bases")
    finally:
        context.close()
    assert errors == []


def _ask(page: Any, question: str) -> Any:
    from playwright.sync_api import expect

    page.fill("#question", question)
    page.press("#question", "Enter")
    reply = page.locator(".msg[data-role=assistant]").last
    expect(reply).not_to_have_attribute("data-state", "streaming")
    return reply


def test_answer_flags_are_shown(
    browser: Any, live_server: LiveServer, seeded: dict[str, Any], paced_llm: PacedLLM
) -> None:
    from playwright.sync_api import expect

    context, page, errors = _console(browser, live_server)
    try:
        _enter_open(page, seeded["kb"])
        page.click("nav.tabs a[data-view=ask]")

        # A sound answer: no notice.
        reply = _ask(page, "How long does the descaling program run?")
        expect(reply.locator(".msg-text")).to_have_text(ANSWER)
        expect(reply.locator(".notice")).to_have_count(0)

        # The model cites nothing: not grounded.
        paced_llm.reply = "It runs for a while and uses a tablet."
        reply = _ask(page, "How long does the descaling program run, roughly?")
        expect(reply.locator("[data-flag=ungrounded]")).to_contain_text("cites none")
        expect(reply.locator("details.more-sources")).to_have_attribute("open", "")

        # Cut off at the length limit.
        paced_llm.reply, paced_llm.finish_reason = "The descaling program runs for [1]", "length"
        reply = _ask(page, "Describe the descaling program in detail.")
        expect(reply.locator("[data-flag=truncated]")).to_contain_text("cut off")
        expect(reply.locator("[data-flag=ungrounded]")).to_have_count(0)
        _shot(page, "flags-en")
    finally:
        paced_llm.reply, paced_llm.finish_reason = ANSWER, "stop"
        context.close()
    assert errors == []


def _sse(events: list[tuple[str, Any]]) -> str:
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_degenerate_answer_is_marked_unreliable(
    browser: Any, live_server: LiveServer, seeded: dict[str, Any], lang: str
) -> None:
    """The stand-in model's echo of its prompt, as the server flags it in `done` (routed: the
    fake upstream here cannot be made to echo on demand)."""
    from playwright.sync_api import expect

    citation = {
        "index": 1,
        "chunk_id": 1,
        "document_id": "d",
        "filename": LONG_PDF,
        "page": 2,
        "page_end": 2,
        "text": "The descaling program runs for 42 minutes.",
        "score": 0.9,
        "cited": False,
    }
    done = {"model": "stand-in", "usage": {}, "cached": False, "grounded": False}
    body = _sse(
        [
            ("delta", {"text": "You are a helpful assistant. Answer only from the passages"}),
            ("citations", [citation]),
            ("done", {**done, "truncated": True, "degenerate": "echo"}),
        ]
    )
    context, page, errors = _console(browser, live_server, lang)
    try:
        _enter_open(page, seeded["kb"])
        page.click("nav.tabs a[data-view=ask]")
        page.route(
            "**/ask",
            lambda route: route.fulfill(
                status=200, headers={"Content-Type": "text/event-stream"}, body=body
            ),
        )
        reply = _ask(page, "年假有多少天？")
        flag = reply.locator("[data-flag=degenerate]")
        expect(flag).to_have_text(
            {
                "en": "The model repeated its instructions instead of answering: this answer is "
                "unreliable. Read the retrieved passages below instead.",
                "zh": "模型复述了自己的指令而没有作答：此回答不可靠，请直接阅读下方检索到的段落。",
            }[lang]
        )
        expect(reply.locator("[data-flag=truncated]")).to_be_visible()
        expect(reply.locator("[data-flag=ungrounded]")).to_have_count(0)  # said once is enough
        expect(reply.locator(".msg-text.unreliable")).to_be_visible()
        expect(reply.locator("details.more-sources")).to_have_attribute("open", "")
        _shot(page, f"degenerate-{lang}")
    finally:
        context.close()
    assert errors == []


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_asking_a_knowledge_base_with_nothing_ready_says_what_to_do(
    browser: Any, live_server: LiveServer, api: httpx.Client, paced_llm: PacedLLM, lang: str
) -> None:
    from playwright.sync_api import expect

    kb = api.post("/v1/knowledge-bases", json={"name": f"empty-{lang}"}).json()["id"]
    calls = len(paced_llm.requests)
    context, page, errors = _console(browser, live_server, lang)
    try:
        _enter_open(page, kb)
        page.click("nav.tabs a[data-view=ask]")
        reply = _ask(page, "年假有多少天？")
        notice = reply.locator("[data-flag=no-ready-documents]")
        expect(notice).to_contain_text({"en": "upload documents first", "zh": "请先上传文档"}[lang])
        expect(reply.locator(".error-text")).to_have_count(0)
        _shot(page, f"no-ready-{lang}")
        notice.locator("[data-test=go-documents]").click()
        expect(page.locator("[data-test=dropzone]")).to_be_visible()
    finally:
        context.close()
    assert errors == []
    assert len(paced_llm.requests) == calls  # refused before the LLM
