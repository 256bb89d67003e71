"""The API docs (Swagger UI at /docs, ReDoc at /redoc) render in headless Chromium from a real
server while every request for another host is refused and recorded: they load nothing from
elsewhere, and their Content-Security-Policy blocks nothing of this origin they need (it does
block ReDoc's sidebar logo from cdn.redoc.ly, before any request is made)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.ui.conftest import LiveServer, artifacts_dir

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TIMEOUT_MS = 60_000
TITLE = "Knowledge-base QA"
_FOREIGN_URL = re.compile(r"'https?://(?!127\.0\.0\.1[:/]|localhost[:/])")


class Offline:
    """A page for which only loopback exists: other hosts are aborted and remembered, as are
    the page's script errors and the policy's refusals."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.foreign: list[str] = []
        self.errors: list[str] = []
        self.refused: list[str] = []
        page.route("**/*", self._route)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._console)

    def _route(self, route: Any) -> None:
        url = route.request.url
        host = urlsplit(url).hostname
        if url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort()

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.refused.append(message.text)

    def check(self) -> None:
        assert self.foreign == [], f"requests for other hosts: {self.foreign}"
        assert self.errors == [], f"script errors: {self.errors}"
        # What the policy refused is another host's (a URL that is not loopback), never this
        # server's files nor the inline script, blob worker or data: images the viewers need.
        own = [text for text in self.refused if not _FOREIGN_URL.search(text)]
        assert own == [], f"refused by the page's policy: {own}"


@pytest.fixture
def offline(browser: Any) -> Iterator[Offline]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    try:
        yield Offline(context.new_page())
    finally:
        context.close()


def test_swagger_ui_renders_offline(live_server: LiveServer, offline: Offline) -> None:
    from playwright.sync_api import expect

    page = offline.page
    response = page.goto(f"{live_server.url}/docs")
    assert response is not None and response.status == 200
    # The operation list is built from /openapi.json by the bundled script.
    operation = page.locator(".opblock-summary-path", has_text="/v1/knowledge-bases/{kb_id}/ask")
    expect(operation.first).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator(".info .title")).to_contain_text(TITLE, timeout=TIMEOUT_MS)
    # An operation opens, with the error envelope among its documented responses.
    operation.first.click()
    expect(page.locator(".opblock.is-open .response-col_status", has_text="4XX")).to_be_visible(
        timeout=TIMEOUT_MS
    )
    page.screenshot(path=str(artifacts_dir() / "api-docs-swagger.png"))
    offline.check()


def test_redoc_renders_offline(live_server: LiveServer, offline: Offline) -> None:
    from playwright.sync_api import expect

    page = offline.page
    response = page.goto(f"{live_server.url}/redoc")
    assert response is not None and response.status == 200
    expect(page.locator("h1", has_text=TITLE)).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("/v1/knowledge-bases/{kb_id}/search").first).to_be_attached(
        timeout=TIMEOUT_MS
    )
    page.screenshot(path=str(artifacts_dir() / "api-docs-redoc.png"))
    offline.check()


def test_the_pages_name_no_other_host(live_server: LiveServer) -> None:
    """What the browser would fetch first, checked without it: local URLs only, and a policy
    that keeps scripts, styles and requests on this origin."""
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        page = httpx.get(f"{live_server.url}{path}", timeout=30)
        assert page.status_code == 200, path
        assert "http://" not in page.text and "https://" not in page.text, path
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        if "<script>" in page.text:  # an inline script runs by its hash, not 'unsafe-inline'
            assert "'sha256-" in policy and "unsafe-inline'" not in policy.split("style-src")[0]
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        assert httpx.get(f"{live_server.url}/docs/assets/{asset}", timeout=30).status_code == 200
    home = httpx.get(f"{live_server.url}/", timeout=30, follow_redirects=True)
    assert home.status_code == 200 and home.url.path == "/ui/"
