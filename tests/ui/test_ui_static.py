"""The console's files as the API serves them (no browser): routes, headers, offline assets,
interface text present in both languages, and the console's words for the server's error codes
and document warnings."""

from __future__ import annotations

import json
import re

from fastapi.testclient import TestClient

from api.routes.ui import UI_DIR
from ingest.parsers.notices import MESSAGES

# The codes of the API's error envelope (docs/api.md): the console words each of them.
ERROR_CODES = {
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "conflict",
    "no_ready_documents",
    "payload_too_large",
    "unsupported_media_type",
    "validation_error",
    "invalid_json",
    "invalid_input",
    "rate_limited",
    "internal_error",
    "llm_error",
    "llm_bad_response",
    "llm_context_length_exceeded",
    "invalid_structured_output",
    "llm_unavailable",
    "llm_circuit_open",
    "llm_timeout",
}

IMPORT = re.compile(r"""(?:import|from)\s*(?:[^"']*?\s+from\s+)?["'](\.{1,2}/[^"']+)["']""")
REFERENCE = re.compile(r"""(?:src|href)="([^"]+)\"""")


def _assets(client: TestClient) -> dict[str, str]:
    """Every file reachable from index.html (its links and the ES module import graph)."""
    seen: dict[str, str] = {}
    todo = [f"ui/{ref}" for ref in REFERENCE.findall(client.get("/ui/").text)]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        resp = client.get(f"/{path}")
        assert resp.status_code == 200, f"{path} is referenced but not served"
        seen[path] = resp.headers["content-type"]
        if path.endswith(".js"):
            base = path.rsplit("/", 1)[0]
            for ref in IMPORT.findall(resp.text):
                parts = f"{base}/{ref}".split("/")
                stack: list[str] = []
                for part in parts:
                    if part == "..":
                        stack.pop()
                    elif part != ".":
                        stack.append(part)
                todo.append("/".join(stack))
    return seen


def test_ui_redirects_to_the_page_and_serves_it_with_a_strict_policy(client: TestClient) -> None:
    resp = client.get("/ui", follow_redirects=False)
    assert resp.status_code == 307 and resp.headers["location"] == "ui/"
    page = client.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    assert '<script type="module" src="js/app.js">' in page.text
    assert client.get("/ui/index.html").text == page.text


def test_every_asset_the_page_needs_is_served_with_its_type(client: TestClient) -> None:
    assets = _assets(client)
    scripts = [p for p in assets if p.endswith(".js")]
    # The shell, the API client, the helpers, the texts and the four views.
    assert len(scripts) >= 8, scripts
    assert all(assets[p].startswith("text/javascript") for p in scripts)
    assert assets["ui/style.css"].startswith("text/css")
    assert assets["ui/favicon.svg"].startswith("image/svg+xml")


def test_files_outside_the_console_are_not_served(client: TestClient) -> None:
    assert client.get("/ui/js/missing.js").status_code == 404
    assert client.get("/ui/..%2Froutes%2Fui.py").status_code == 404
    assert client.get("/ui/%2E%2E/%2E%2E/pyproject.toml").status_code == 404


def test_nothing_is_fetched_from_elsewhere() -> None:
    # Offline sites: no CDN, web font or remote script anywhere in the console's files (an
    # SVG namespace is a name, not a fetch).
    for path in UI_DIR.rglob("*"):
        if path.is_file():
            text = re.sub(r'xmlns="[^"]*"', "", path.read_text(encoding="utf-8"))
            remote = re.findall(r"(?:https?:)?//[\w.-]+\.\w+/", text)
            assert not remote, f"{path.relative_to(UI_DIR)} refers to {remote}"
            assert "@import" not in text and "@font-face" not in text


def test_the_console_is_public_while_the_api_needs_a_key(client: TestClient) -> None:
    created = client.post("/v1/keys", json={"name": "first", "scopes": ["admin"]})
    assert created.status_code == 201, created.text
    assert client.get("/v1/knowledge-bases").status_code == 401
    assert client.get("/ui/").status_code == 200
    assert client.get("/ui/js/app.js").status_code == 200
    key = created.json()["key"]
    authorised = client.get("/v1/knowledge-bases", headers={"Authorization": f"Bearer {key}"})
    assert authorised.status_code == 200


def test_the_console_is_not_part_of_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/ui")]


def _keys(block: str) -> set[str]:
    # "key": "text" (a formatter leaves keys that are plain names unquoted)
    return set(re.findall(r'^\s+"?([\w.\-]+)"?:\s*"', block, re.M))


def test_every_interface_text_exists_in_both_languages() -> None:
    source = (UI_DIR / "js" / "i18n.js").read_text(encoding="utf-8")
    en_block, zh_block = source.split("\n  zh: {", 1)
    en, zh = _keys(en_block), _keys(zh_block.split("\n};", 1)[0])
    assert len(en) > 100
    assert en == zh, {"only in English": en - zh, "only in Chinese": zh - en}
    used: set[str] = set()
    for path in (UI_DIR / "js").rglob("*.js"):
        used |= set(re.findall(r"""\bt\(\s*"([\w.\-]+)\"""", path.read_text(encoding="utf-8")))
    assert used and used <= en, f"texts used but not defined: {used - en}"


def _texts(block: str, prefix: str) -> dict[str, str]:
    pairs = re.findall(rf'"({re.escape(prefix)}[\w.\-]+)":\s*"((?:[^"\\]|\\.)*)"', block)
    return {key[len(prefix) :]: json.loads(f'"{text}"') for key, text in pairs}


def test_the_console_knows_every_document_warning_word_for_word() -> None:
    """A stored warning is recognised by its English template (api/ui/js/i18n.js warningText):
    the console's templates are the server's catalogue, each with a Chinese translation."""
    source = (UI_DIR / "js" / "i18n.js").read_text(encoding="utf-8")
    en_block, zh_block = source.split("\n  zh: {", 1)
    assert _texts(en_block, "warning.") == MESSAGES
    zh = _texts(zh_block, "warning.")
    assert set(zh) == set(MESSAGES)
    for code, text in zh.items():
        placeholders = set(re.findall(r"\{(\w+)\}", MESSAGES[code]))
        assert set(re.findall(r"\{(\w+)\}", text)) == placeholders, code


def test_every_error_code_of_the_api_has_a_text_in_both_languages() -> None:
    source = (UI_DIR / "js" / "i18n.js").read_text(encoding="utf-8")
    en_block, zh_block = source.split("\n  zh: {", 1)
    for block in (en_block, zh_block):
        assert set(_texts(block, "error.")) >= ERROR_CODES
