"""The embeddable widget's API: publishable keys (admin, tenant-scoped, audited), the widget's own
routes (key and Origin checked on each request, refusals 401/403/404/429), the answer streamed
as SSE through the one answer path into the question log, feedback and hand-off on it, a cited
page rendered for it, and CORS: absent by default, present only on /v1/widget/* for an origin
some active key allows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from rag.security import keys
from rag.services import Services
from rag.store.models import Assistant
from tests.conftest import FakeLLM, upload, wait_document
from tests.ui.pdf import make_pdf

SITE = "https://help.example.com"
OTHER_SITE = "https://evil.example.net"
QUESTION = "How long does the descaling program run?"
PAGES = [
    ["Chapter one. Unpacking the coffee machine and placing it on a flat surface."],
    ["Chapter two. The descaling program runs for 42 minutes and uses one blue tablet."],
]


@dataclass
class Setup:
    client: TestClient
    services: Services
    admin: dict[str, str]  # headers of the default tenant's admin key
    kb_id: str
    assistant_id: str
    other_assistant_id: str  # on another knowledge base of the same tenant
    doc_id: str


def _admin_key(svc: Services, tenant: str) -> dict[str, str]:
    with svc.db.write() as session:
        _, secret = keys.create(session, tenant_id=tenant, scopes=["admin"])
    return {"Authorization": f"Bearer {secret}"}


def _assistant(svc: Services, name: str, kb_id: str, **config: Any) -> str:
    with svc.db.write() as session:
        row = Assistant(tenant_id="default", name=name, kb_id=kb_id, config=config)
        session.add(row)
        session.flush()
        return row.id


@pytest.fixture
def setup(services: Services) -> Iterator[Setup]:
    app = create_app(services=services, warm_up=False)
    with TestClient(app) as client:
        admin = _admin_key(services, "default")
        app.state.guard.forget()
        kb = client.post("/v1/knowledge-bases", json={"name": "manual"}, headers=admin).json()
        other = client.post("/v1/knowledge-bases", json={"name": "other"}, headers=admin).json()
        doc = upload(client, kb["id"], "manual.pdf", make_pdf(PAGES), headers=admin).json()
        client.headers.update(admin)
        assert wait_document(client, kb["id"], doc["id"])["status"] == "ready"
        client.headers.clear()
        assistant = _assistant(
            services, "coffee", kb["id"], greeting="Hello, ask me about the machine.", language="en"
        )
        other_assistant = _assistant(services, "elsewhere", other["id"])
        yield Setup(client, services, admin, kb["id"], assistant, other_assistant, doc["id"])


def _make_key(s: Setup, assistant: str = "coffee", **extra: Any) -> dict[str, Any]:
    body = {"assistant": assistant, "allowed_origins": [SITE], **extra}
    resp = s.client.post("/v1/widget-keys", json=body, headers=s.admin)
    assert resp.status_code == 201, resp.text
    out: dict[str, Any] = resp.json()
    return out


def _widget(key: str, origin: str | None = SITE) -> dict[str, str]:
    headers = {"X-Widget-Key": key}
    if origin is not None:
        headers["Origin"] = origin
    return headers


def _events(text: str) -> list[tuple[str, Any]]:
    found = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        found.append((lines["event"], json.loads(lines["data"])))
    return found


def _ask(s: Setup, key: str, question: str = QUESTION) -> list[tuple[str, Any]]:
    resp = s.client.post("/v1/widget/ask", json={"question": question}, headers=_widget(key))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    return _events(resp.text)


def test_keys_are_created_listed_and_revoked_by_their_tenant(setup: Setup) -> None:
    s = setup
    origins = ["https://Help.Example.com:443/", "http://localhost:*", "http://127.0.0.1:8080"]
    key = _make_key(s, allowed_origins=origins, name="support site")
    assert key["id"].startswith("pk_") and key["assistant_id"] == s.assistant_id
    # stored as browsers send them: lower case, default port and trailing slash dropped
    assert key["allowed_origins"] == ["http://127.0.0.1:8080", "http://localhost:*", SITE]
    assert key["requests_per_minute"] == s.services.settings.widget.default_requests_per_minute
    assert f'data-key="{key["id"]}"' in key["embed"] and "/widget.js" in key["embed"]
    by_id = _make_key(s, assistant=s.assistant_id, requests_per_minute=5)
    assert by_id["requests_per_minute"] == 5

    listed = s.client.get("/v1/widget-keys", headers=s.admin).json()["keys"]
    assert [k["id"] for k in listed] == [key["id"], by_id["id"]]
    events = s.client.get("/v1/audit", headers=s.admin).json()["events"]
    assert {"widget_key.create"} <= {e["action"] for e in events}

    # another tenant neither sees, revokes nor uses this tenant's keys and assistants
    stranger = _admin_key(s.services, "acme")
    s.client.app.state.guard.forget()  # type: ignore[attr-defined]
    assert s.client.get("/v1/widget-keys", headers=stranger).json() == {"keys": []}
    assert s.client.delete(f"/v1/widget-keys/{key['id']}", headers=stranger).status_code == 404
    body = {"assistant": "coffee", "allowed_origins": [SITE]}
    assert s.client.post("/v1/widget-keys", json=body, headers=stranger).status_code == 404

    assert s.client.delete(f"/v1/widget-keys/{key['id']}", headers=s.admin).status_code == 204
    listed = s.client.get("/v1/widget-keys", headers=s.admin).json()["keys"]
    assert listed[0]["revoked_at"] is not None and listed[1]["revoked_at"] is None
    events = s.client.get("/v1/audit", headers=s.admin).json()["events"]
    assert "widget_key.revoke" in {e["action"] for e in events}


@pytest.mark.parametrize(
    "origin",
    [
        "https://*.example.com",  # no wildcard hosts
        "https://example.com:*",  # any port only for loopback hosts
        "https://example.com/help",  # an origin has no path
        "ftp://example.com",
        "https://user@example.com",
        "example.com",
        "null",
    ],
)
def test_bad_origins_are_refused_and_nothing_is_created(setup: Setup, origin: str) -> None:
    s = setup
    body = {"assistant": "coffee", "allowed_origins": [SITE, origin]}
    resp = s.client.post("/v1/widget-keys", json=body, headers=s.admin)
    assert resp.status_code == 422, resp.text
    assert "origin" in resp.json()["error"]["message"]
    assert s.client.get("/v1/widget-keys", headers=s.admin).json() == {"keys": []}


def test_the_widget_asks_rates_and_hands_off(setup: Setup, fake_llm: FakeLLM) -> None:
    s = setup
    key = _make_key(s)["id"]
    config = s.client.get("/v1/widget/config", headers=_widget(key))
    assert config.status_code == 200, config.text
    assert config.json() == {
        "assistant": "coffee",
        "greeting": "Hello, ask me about the machine.",
        "language": "en",
    }

    events = _ask(s, key)
    kinds = [kind for kind, _ in events]
    assert kinds[-2:] == ["citations", "done"] and set(kinds[:-2]) == {"delta"}
    answer = "".join(data["text"] for kind, data in events if kind == "delta")
    assert "这是答案" in answer  # the fake LLM's reply, streamed
    citations, done = events[-2][1], events[-1][1]
    assert citations and citations[0]["document_id"] == s.doc_id
    assert {"filename", "page", "chunk_id", "text"} <= set(citations[0])
    assert done["answer_id"] and done["conversation_id"]

    record = s.services.question_log.get(done["answer_id"])
    assert record.channel == "widget" and record.assistant_id == s.assistant_id
    assert record.question == QUESTION and record.kb_id == s.kb_id

    # a follow-up continues the visitor's conversation: the LLM is shown the first exchange
    sent_before = len(fake_llm.requests)
    follow = s.client.post(
        "/v1/widget/ask",
        json={"question": "And how many tablets?", "conversation_id": done["conversation_id"]},
        headers=_widget(key),
    )
    assert _events(follow.text)[-1][1]["conversation_id"] == done["conversation_id"]
    assert QUESTION in json.dumps(fake_llm.requests[sent_before:], ensure_ascii=False)
    # another visitor's same first question is a question on its own: the answer cache serves it
    again = _ask(s, key)[-1][1]
    assert again["conversation_id"] != done["conversation_id"]
    assert s.services.question_log.get(again["answer_id"]).cached

    rated = s.client.post(
        "/v1/widget/feedback",
        json={"answer_id": done["answer_id"], "rating": -1, "comment": "too vague"},
        headers=_widget(key),
    )
    assert rated.status_code == 200, rated.text
    assert rated.json()["rating"] == -1 and rated.json()["handoff_suggested"] is True
    record = s.services.question_log.get(done["answer_id"])
    assert record.rating == -1 and record.comment == "too vague"
    assert not record.handoff_requested  # a thumbs-down alone does not hand off

    handed = s.client.post(
        "/v1/widget/handoff", json={"answer_id": done["answer_id"]}, headers=_widget(key)
    )
    assert handed.status_code == 200 and handed.json()["handoff_requested"] is True
    assert s.services.question_log.get(done["answer_id"]).handoff_requested

    bad = s.client.post(
        "/v1/widget/feedback",
        json={"answer_id": done["answer_id"], "rating": 5},
        headers=_widget(key),
    )
    assert bad.status_code == 422


def test_a_cited_page_opens_through_the_widget(setup: Setup) -> None:
    s = setup
    key = _make_key(s)["id"]
    citations = _ask(s, key)[-2][1]
    cite = citations[0]
    assert cite["page"] in (1, 2)
    url = f"/v1/widget/sources/{cite['document_id']}/pages/{cite['page']}.png"
    resp = s.client.get(url, params={"chunk_id": cite["chunk_id"]}, headers=_widget(key))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png" and resp.content[:4] == b"\x89PNG"
    assert int(resp.headers["x-highlight-count"]) >= 1
    # the same document through a key of an assistant on another knowledge base: not there
    other = _make_key(s, assistant="elsewhere")["id"]
    assert s.client.get(url, headers=_widget(other)).status_code == 404
    assert s.client.get(url, headers=_widget(key, OTHER_SITE)).status_code == 403


def test_refusals(setup: Setup) -> None:
    s = setup
    key = _make_key(s)["id"]
    other = _make_key(s, assistant="elsewhere")["id"]
    config = "/v1/widget/config"

    resp = s.client.get(config, headers={"Origin": SITE})
    assert resp.status_code == 401 and "X-Widget-Key" in resp.json()["error"]["message"]
    assert s.client.get(config, headers=_widget("pk_unknown")).status_code == 401
    assert s.client.get(config, headers=_widget("kbqa_x_y")).status_code == 401
    # no Origin (not a browser page), another site, an origin that is only similar
    assert s.client.get(config, headers=_widget(key, None)).status_code == 403
    resp = s.client.get(config, headers=_widget(key, OTHER_SITE))
    assert resp.status_code == 403 and OTHER_SITE in resp.json()["error"]["message"]
    assert s.client.get(config, headers=_widget(key, "http://help.example.com")).status_code == 403
    assert s.client.get(config, headers=_widget(key, "null")).status_code == 403
    resp = s.client.post(
        "/v1/widget/ask", json={"question": QUESTION}, headers=_widget(key, OTHER_SITE)
    )
    assert resp.status_code == 403

    # an answer of another assistant is not this key's to rate or hand off, nor the reverse
    journal = s.services.question_log
    answer_id = _ask(s, key)[-1][1]["answer_id"]
    assert journal.get(answer_id).assistant_id == s.assistant_id
    for path, body in (
        ("/v1/widget/feedback", {"answer_id": answer_id, "rating": 1}),
        ("/v1/widget/handoff", {"answer_id": answer_id}),
    ):
        resp = s.client.post(path, json=body, headers=_widget(other))
        assert resp.status_code == 404, resp.text
    assert journal.get(answer_id).rating is None and not journal.get(answer_id).handoff_requested
    resp = s.client.post(
        "/v1/widget/feedback", json={"answer_id": "nope", "rating": 1}, headers=_widget(key)
    )
    assert resp.status_code == 404

    # revoked: refused at once in this process
    assert s.client.delete(f"/v1/widget-keys/{key}", headers=s.admin).status_code == 204
    resp = s.client.get(config, headers=_widget(key))
    assert resp.status_code == 401 and "revoked" in resp.json()["error"]["message"]


def test_each_key_has_its_own_rate_limit(setup: Setup) -> None:
    s = setup
    slow = _make_key(s, requests_per_minute=2)["id"]
    fast = _make_key(s)["id"]
    for _ in range(2):
        assert s.client.get("/v1/widget/config", headers=_widget(slow)).status_code == 200
    resp = s.client.get("/v1/widget/config", headers=_widget(slow))
    assert resp.status_code == 429 and resp.json()["error"]["code"] == "rate_limited"
    assert int(resp.headers["retry-after"]) >= 1
    assert resp.headers["access-control-allow-origin"] == SITE  # the widget can read why
    assert s.client.get("/v1/widget/config", headers=_widget(fast)).status_code == 200


def _cors(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower().startswith("access-control-")}


def _preflight(s: Setup, path: str, origin: str) -> Any:
    return s.client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-widget-key",
        },
    )


def test_cors_is_off_except_for_widget_routes_and_allowed_origins(setup: Setup) -> None:
    s = setup
    # no key allows any origin yet: no route says anything of CORS
    assert _cors(_preflight(s, "/v1/widget/ask", SITE).headers) == {}
    key = _make_key(s)["id"]

    resp = _preflight(s, "/v1/widget/ask", SITE)
    assert resp.status_code == 204
    cors = _cors(resp.headers)
    assert cors["access-control-allow-origin"] == SITE
    assert set(cors["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
    assert cors["access-control-allow-headers"].lower() == "content-type, x-widget-key"
    assert "access-control-allow-credentials" not in cors
    assert "origin" in resp.headers["vary"].lower()

    refused = _preflight(s, "/v1/widget/ask", OTHER_SITE)
    assert refused.status_code == 403 and _cors(refused.headers) == {}

    # the actual requests: the header for the allowed origin, refusals included
    ok = s.client.get("/v1/widget/config", headers=_widget(key))
    assert ok.headers["access-control-allow-origin"] == SITE
    denied = s.client.get("/v1/widget/config", headers=_widget("pk_unknown"))
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == SITE
    elsewhere = s.client.get("/v1/widget/config", headers=_widget(key, OTHER_SITE))
    assert elsewhere.status_code == 403 and _cors(elsewhere.headers) == {}

    # nowhere else, even for an allowed origin
    for method, path in (
        ("GET", "/v1/knowledge-bases"),
        ("GET", "/healthz"),
        ("GET", "/widget.js"),
        ("GET", "/v1/widget-keys"),
        ("OPTIONS", "/v1/knowledge-bases"),
        ("OPTIONS", "/v1/widget-keys"),
    ):
        headers = {"Origin": SITE, "Access-Control-Request-Method": "GET", **s.admin}
        resp = s.client.request(method, path, headers=headers)
        assert _cors(resp.headers) == {}, (method, path, resp.headers)

    # revoking the last key that allows the origin closes CORS for it at once here (and within
    # RAG_WIDGET__CACHE_S in other processes)
    assert s.client.delete(f"/v1/widget-keys/{key}", headers=s.admin).status_code == 204
    assert _cors(_preflight(s, "/v1/widget/ask", SITE).headers) == {}


def test_the_script_is_served_whole_from_the_api(setup: Setup) -> None:
    resp = setup.client.get("/widget.js")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/javascript")
    assert resp.headers["x-content-type-options"] == "nosniff"
    script = resp.text
    assert "attachShadow" in script and "X-Widget-Key" in script and "/v1/widget/ask" in script
    # nothing loaded from elsewhere: the only addresses are the example in the opening comment
    code = script.split("*/", 1)[1]
    for outside in ("http://", "https://", "@import", "url(", "//cdn"):
        assert outside not in code, outside
