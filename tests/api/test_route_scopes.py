"""Scopes and per-key limits are declared on each route (api/route_policy.py), and what a route
declares is what the auth and upload-limit middlewares enforce: no path patterns kept elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient

from api import route_policy
from api.app import create_app
from api.body_limit import ENVELOPE
from api.route_policy import GENERATION, PUBLIC, UPLOAD, access
from rag.core import tenancy
from rag.security import keys
from rag.services import Services

# What each endpoint needs, by handler rather than by path: a renamed path keeps its rule, and a
# changed rule shows up here.
EXPECTED: dict[str, tuple[str, frozenset[str]]] = {
    "knowledge_bases.create": ("admin", frozenset()),
    "knowledge_bases.list_all": ("read", frozenset()),
    "knowledge_bases.get_one": ("read", frozenset()),
    "knowledge_bases.delete": ("admin", frozenset()),
    "knowledge_bases.index_status": ("read", frozenset()),
    "knowledge_bases.update": ("admin", frozenset()),
    "knowledge_bases.get_lexicon": ("read", frozenset()),
    "knowledge_bases.put_lexicon": ("admin", frozenset()),
    "knowledge_bases.patch_lexicon": ("admin", frozenset()),
    "knowledge_bases.suggest_lexicon": ("admin", frozenset()),
    "knowledge_bases.calibrate_relevance": ("admin", frozenset()),
    "documents.upload": ("ingest", frozenset({UPLOAD})),
    "documents.list_all": ("read", frozenset()),
    "documents.get_one": ("read", frozenset()),
    "documents.delete": ("ingest", frozenset()),
    "documents.versions": ("read", frozenset()),
    "documents.restore": ("ingest", frozenset()),
    "sync.start": ("admin", frozenset()),
    "sources.get_file": ("read", frozenset()),
    "sources.get_page": ("read", frozenset()),
    "sources.list_chunks": ("read", frozenset()),
    "sources.update_chunk": ("ingest", frozenset()),
    "search.search": ("query", frozenset()),
    "search.evaluate": ("admin", frozenset()),
    "ask.ask": ("query", frozenset({GENERATION})),
    "assistants.create": ("admin", frozenset()),
    "assistants.list_all": ("read", frozenset()),
    "assistants.get_one": ("read", frozenset()),
    "assistants.update": ("admin", frozenset()),
    "assistants.delete": ("admin", frozenset()),
    "assistants.versions": ("read", frozenset()),
    "assistants.restore": ("admin", frozenset()),
    "assistants.ask": ("query", frozenset({GENERATION})),
    "assistants.playground": ("query", frozenset({GENERATION})),
    "conversations.create": ("query", frozenset()),
    "conversations.list_": ("read", frozenset()),
    "conversations.get": ("read", frozenset()),
    "conversations.delete": ("query", frozenset()),
    "openai_compat.list_models": ("read", frozenset()),
    "openai_compat.get_model": ("read", frozenset()),
    "openai_compat.chat_completions": ("query", frozenset({GENERATION})),
    "jobs.reindex": ("admin", frozenset()),
    "jobs.rebuild_index": ("admin", frozenset()),
    "jobs.list_jobs": ("read", frozenset()),
    "jobs.get_job": ("read", frozenset()),
    "jobs.cancel_job": ("ingest", frozenset()),
    "versions.list_versions": ("read", frozenset()),
    "versions.rollback": ("admin", frozenset()),
    "versions.prune": ("admin", frozenset()),
    "keys.create_key": ("admin", frozenset()),
    "keys.list_keys": ("admin", frozenset()),
    "keys.revoke_key": ("admin", frozenset()),
    "keys.audit_log": ("admin", frozenset()),
    "webhooks.create_webhook": ("admin", frozenset()),
    "webhooks.list_webhooks": ("admin", frozenset()),
    "webhooks.delete_webhook": ("admin", frozenset()),
    "webhooks.list_deliveries": ("admin", frozenset()),
    "webhooks.replay_delivery": ("admin", frozenset()),
    "bots.create_bot": ("admin", frozenset()),
    "bots.list_bots": ("admin", frozenset()),
    "bots.get_bot": ("admin", frozenset()),
    "bots.update_bot": ("admin", frozenset()),
    "bots.delete_bot": ("admin", frozenset()),
    "bots.verify_callback": ("public", frozenset()),
    "bots.receive_callback": ("public", frozenset()),
    "answers.get_answer": ("read", frozenset()),
    "answers.feedback": ("query", frozenset()),
    "answers.handoff": ("query", frozenset()),
    "analytics.summary": ("admin", frozenset()),
    "analytics.questions": ("admin", frozenset()),
    "analytics.top_questions": ("admin", frozenset()),
    "analytics.make_golden": ("admin", frozenset()),
    "analytics.make_curated": ("admin", frozenset()),
    "analytics.download_golden": ("admin", frozenset()),
    "analytics.list_curated": ("admin", frozenset()),
    "analytics.delete_curated": ("admin", frozenset()),
    "health.healthz": (PUBLIC, frozenset()),
    "health.readyz": (PUBLIC, frozenset()),
    "health.metrics": (PUBLIC, frozenset()),
    "ui.root": (PUBLIC, frozenset()),
    "ui.ui_root": (PUBLIC, frozenset()),
    "ui.ui_asset": (PUBLIC, frozenset()),
    "docs.swagger_ui": (PUBLIC, frozenset()),
    "docs.swagger_ui_redirect": (PUBLIC, frozenset()),
    "docs.redoc": (PUBLIC, frozenset()),
    "docs.docs_asset": (PUBLIC, frozenset()),
    "widget.create_widget_key": ("admin", frozenset()),
    "widget.list_widget_keys": ("admin", frozenset()),
    "widget.revoke_widget_key": ("admin", frozenset()),
    "widget.widget_script": (PUBLIC, frozenset()),
    "widget.widget_config": (PUBLIC, frozenset()),
    "widget.widget_ask": (PUBLIC, frozenset()),
    "widget.widget_feedback": (PUBLIC, frozenset()),
    "widget.widget_handoff": (PUBLIC, frozenset()),
    "widget.widget_source_page": (PUBLIC, frozenset()),
}


def _routes(app: FastAPI) -> list[Any]:
    return list(route_policy.leaf_routes(app.routes))


def _handler(route: Any) -> str:
    endpoint = route.endpoint
    return f"{endpoint.__module__.rsplit('.', 1)[-1]}.{endpoint.__name__}"


# /v1 routes public to the key check because they verify their callers by their own means.
OWN_AUTH = {
    "/v1/bots/{bot_id}/callback",  # the chat platform's signature (rag/integrations/bots/)
    # the widget's publishable key and the page's Origin (rag/security/widget_keys.py)
    "/v1/widget/config",
    "/v1/widget/ask",
    "/v1/widget/feedback",
    "/v1/widget/handoff",
    "/v1/widget/sources/{document_id}/pages/{page}.png",
}


def test_every_route_declares_its_scope() -> None:
    app = create_app(start_worker=False, warm_up=False)
    framework = route_policy.framework_routes(app)
    undeclared, public_api, seen = [], [], {}
    for route in _routes(app):
        if route.path in framework:
            continue  # /openapi.json: FastAPI's own, public by its arguments
        declared = route_policy.declared(route)
        if declared is None:
            undeclared.append(f"{sorted(route.methods or ())} {route.path}")
            continue
        if route.path.startswith("/v1") and declared.public and route.path not in OWN_AUTH:
            public_api.append(route.path)
        seen[_handler(route)] = (declared.scope, declared.limits)
    assert not undeclared, f"routes without access(...) in their decorator: {undeclared}"
    assert not public_api, f"/v1 routes must need a key: {public_api}"
    assert sum(path.startswith("/v1") for path in (r.path for r in _routes(app))) >= 30
    assert seen == EXPECTED
    # the declaration is in the schema too, for clients
    operation = app.openapi()["paths"]["/v1/knowledge-bases/{kb_id}/ask"]["post"]
    assert operation[route_policy.EXTENSION] == {"scope": "query", "limits": [GENERATION]}


def test_a_misspelt_declaration_fails_at_import() -> None:
    with pytest.raises(ValueError, match="unknown scope"):
        access("querry")
    with pytest.raises(ValueError, match="unknown limit"):
        access("query", "uploads")
    with pytest.raises(ValueError, match="need a key"):
        access(PUBLIC, UPLOAD)


def _key(app: FastAPI, scopes: list[str], **limits: Any) -> str:
    svc: Services = app.state.services
    with svc.db.write() as session:
        _, secret = keys.create(
            session, tenant_id="default", scopes=scopes, limits=keys.KeyLimits(**limits)
        )
    app.state.guard.forget()
    return secret


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def app(services: Services) -> Iterator[FastAPI]:
    yield create_app(services=services, start_worker=False, warm_up=False)


def test_the_declared_scope_is_what_is_enforced(app: FastAPI) -> None:
    with TestClient(app) as client:
        keyed = {scope: _key(app, [scope]) for scope in tenancy.SCOPES}
        kb = client.post("/v1/knowledge-bases", json={"name": "kb"}, headers=_auth(keyed["admin"]))
        search = f"/v1/knowledge-bases/{kb.json()['id']}/search"
        # a query key: refused on an admin route, accepted on a query route
        resp = client.get("/v1/keys", headers=_auth(keyed["query"]))
        assert resp.status_code == 403 and "'admin'" in resp.json()["error"]["message"]
        resp = client.post(search, json={"query": "x"}, headers=_auth(keyed["query"]))
        assert resp.status_code == 200
        resp = client.post(search, json={"query": "x"}, headers=_auth(keyed["ingest"]))
        assert resp.status_code == 403 and "'query'" in resp.json()["error"]["message"]

        # and so for every /v1 route and every scope, from the route's own declaration
        checked = 0
        for route in _routes(app):
            declared = route_policy.declared(route)
            if declared is None or declared.public:
                continue
            url = route.path.replace("{", "").replace("}", "")  # ids no route knows: 404s
            for method in sorted(route.methods):
                for scope, secret in keyed.items():
                    body = {"json": {}} if method == "POST" else {}
                    resp = client.request(method, url, headers=_auth(secret), **body)
                    principal = tenancy.Principal("t", "default", frozenset({scope}))
                    if principal.allows(declared.scope):
                        assert resp.status_code not in (401, 403), (method, url, scope, resp.text)
                    else:
                        assert resp.status_code == 403, (method, url, scope, resp.status_code)
                        message = resp.json()["error"]["message"]
                        assert repr(declared.scope) in message
                    checked += 1
        assert checked >= 30 * len(keyed)


def _probe_router() -> APIRouter:
    """Routes at paths no rule has ever named: only their declarations say what they need."""
    probe = APIRouter(prefix="/v1/renamed")

    @probe.post("/lookup", openapi_extra=access("query"))
    def lookup() -> dict[str, str]:
        return {"ok": "lookup"}

    @probe.get("/undeclared")
    def undeclared() -> dict[str, str]:
        return {"ok": "undeclared"}

    @probe.post("/answer", openapi_extra=access("query", GENERATION))
    async def answer() -> dict[str, str]:
        return {"ok": "answer"}

    @probe.post("/files", openapi_extra=access("ingest", UPLOAD))
    async def files(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    return probe


def test_rules_follow_the_route_declaration_not_its_path(app: FastAPI, services: Services) -> None:
    app.include_router(_probe_router())
    services.settings.ingest.max_upload_bytes = 1000
    with TestClient(app) as client:
        admin, ingest, query = (_key(app, [s]) for s in ("admin", "ingest", "query"))
        assert client.post("/v1/renamed/lookup", headers=_auth(query)).status_code == 200
        assert client.post("/v1/renamed/lookup", headers=_auth(ingest)).status_code == 403
        # a route that declares nothing needs admin (fail closed)
        resp = client.get("/v1/renamed/undeclared", headers=_auth(query))
        assert resp.status_code == 403 and "'admin'" in resp.json()["error"]["message"]
        assert client.get("/v1/renamed/undeclared", headers=_auth(admin)).status_code == 200

        # GENERATION: the route holds one of the key's answer slots
        one = _key(app, ["query"], concurrent_generations=1)
        guard = app.state.guard
        held = guard.limiter.acquire(one.split("_", 2)[1], 1, 60)
        resp = client.post("/v1/renamed/answer", headers=_auth(one))
        assert resp.status_code == 429 and "at a time" in resp.json()["error"]["message"]
        guard.limiter.release(one.split("_", 2)[1], held)
        assert client.post("/v1/renamed/answer", headers=_auth(one)).status_code == 200
        assert client.post("/v1/renamed/answer", headers=_auth(one)).status_code == 200

        # UPLOAD: the body limit and the key's bytes per day
        resp = client.post("/v1/renamed/files", content=b"x" * 600, headers=_auth(ingest))
        assert resp.status_code == 200 and resp.json() == {"size": 600}
        too_big = b"x" * (ENVELOPE + 2000)
        resp = client.post("/v1/renamed/files", content=too_big, headers=_auth(ingest))
        assert resp.status_code == 413
        small = _key(app, ["ingest", "query"], upload_bytes_per_day=500)
        resp = client.post("/v1/renamed/files", content=b"x" * 600, headers=_auth(small))
        assert resp.status_code == 429 and "per day" in resp.json()["error"]["message"]
        # ...and neither applies to a route that does not declare it
        resp = client.post("/v1/renamed/lookup", content=too_big, headers=_auth(small))
        assert resp.status_code == 200


def test_keyed_routes_name_the_bearer_scheme_in_the_openapi_schema() -> None:
    """/docs offers "Authorize" for an API key: every keyed operation names the scheme, which
    the schema defines; public ones (probes, the console, the docs) need none."""
    schema = create_app().openapi()
    scheme = schema["components"]["securitySchemes"][route_policy.SECURITY_SCHEME_NAME]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    keyed = public = 0
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            declared = op[route_policy.EXTENSION]["scope"]
            if declared == PUBLIC:
                assert "security" not in op, (method, path)
                public += 1
            else:
                assert op["security"] == [{route_policy.SECURITY_SCHEME_NAME: []}], (method, path)
                keyed += 1
    assert keyed > 20 and public >= 3
