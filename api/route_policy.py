"""Who may call a route and which per-key limits it counts against, declared on the route.

    @router.post("/search", openapi_extra=access("query"))
    @router.post("/ask", openapi_extra=access("query", GENERATION))

The declaration is route metadata: it appears in the OpenAPI schema (`x-kbqa-access`) and moves
with the route. The auth middleware (api/auth.py) and the upload limit (api/body_limit.py) find
it with `resolve`. A route without a declaration needs the admin scope (fail closed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import fastapi.routing
from starlette.routing import WebSocketRoute
from starlette.types import Scope

from rag.core.tenancy import SCOPES

PUBLIC = "public"
READ = "read"
GENERATION = "generation"
UPLOAD = "upload"
LIMITS = (GENERATION, UPLOAD)
EXTENSION = "x-kbqa-access"  # the key in a route's openapi_extra
_SCOPE_KEY = "kbqa.access"  # the resolved Access, cached in the ASGI scope for the request
_STATE_KEY = "route_access_table"  # the table, on app.state


@dataclass(frozen=True)
class Access:
    """What a route needs.

    `scope`: "public" (no key: probes, the console), "read" (any key), or one of
    rag/core/tenancy.py SCOPES ("admin" implies all). Every non-public request also counts
    against the key's requests per minute. `limits`, the limit classes on top of that:

    - GENERATION: holds one of the key's concurrent answer slots while the response runs;
    - UPLOAD: the body is capped at RAG_INGEST__MAX_UPLOAD_BYTES as it streams, and a declared
      Content-Length is charged to the key's upload bytes per day.
    """

    scope: str
    limits: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.scope not in (PUBLIC, READ, *SCOPES):
            raise ValueError(f"unknown scope {self.scope!r}: one of {(PUBLIC, READ, *SCOPES)}")
        unknown = set(self.limits) - set(LIMITS)
        if unknown:
            raise ValueError(f"unknown limit class(es) {sorted(unknown)}: any of {LIMITS}")
        if self.scope == PUBLIC and self.limits:
            raise ValueError("per-key limits need a key: a public route cannot have them")

    @property
    def public(self) -> bool:
        return self.scope == PUBLIC

    @property
    def generation(self) -> bool:
        return GENERATION in self.limits

    @property
    def upload(self) -> bool:
        return UPLOAD in self.limits

    def as_extension(self) -> dict[str, Any]:
        declared: dict[str, Any] = {"scope": self.scope}
        if self.limits:
            declared["limits"] = sorted(self.limits)
        return {EXTENSION: declared}


# The OpenAPI security scheme every keyed route names, so /docs offers "Authorize" for a key.
SECURITY_SCHEME_NAME = "apiKey"
SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key (`rag keys create`, or POST /v1/keys): "
    "`Authorization: Bearer <key>`. Not needed in open mode (no key exists, loopback only).",
}


def access(scope: str, *limits: str, **openapi_extra: Any) -> dict[str, Any]:
    """A route's `openapi_extra`, declaring its scope and limit classes (checked here, so a
    misspelt scope fails at import), and for a keyed route the security scheme it takes. Other
    openapi_extra entries may be passed along."""
    declared = Access(scope, frozenset(limits))
    security: dict[str, Any] = {} if declared.public else {"security": [{SECURITY_SCHEME_NAME: []}]}
    return {**openapi_extra, **security, **declared.as_extension()}


def declared(route: Any) -> Access | None:
    """The access a route (an APIRoute, or FastAPI's view of an included one) declares."""
    extra = getattr(route, "openapi_extra", None) or {}
    found = extra.get(EXTENSION)
    if not isinstance(found, dict):
        return None
    return Access(found["scope"], frozenset(found.get("limits", ())))


# Requests no route takes (404, 405): under /v1 they need a key ("read" for GET and HEAD, "admin"
# otherwise), so probing unknown paths reveals nothing before the key is checked; elsewhere the
# router answers (404) without one.
_UNMATCHED_READ = Access(READ)
_UNMATCHED_WRITE = Access("admin")
_UNMATCHED_ELSEWHERE = Access(PUBLIC)
# A route that declares nothing (fail closed); tests/api/test_route_scopes.py fails on one.
_UNDECLARED = Access("admin")


def leaf_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """Every route an app serves, with its full path, included routers flattened. Recent
    FastAPI keeps an included router as one entry of app.routes (`iter_route_contexts` flattens
    them, as the OpenAPI schema does); older versions copied every included route there."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    return iter(flatten(list(routes))) if flatten is not None else iter(routes)


def framework_routes(app: Any) -> frozenset[str]:
    """Paths of the routes FastAPI adds itself (the OpenAPI schema and its viewers): public, as
    declared by the FastAPI(...) arguments that create them."""
    docs = getattr(app, "docs_url", None)
    urls = (
        getattr(app, "openapi_url", None),
        docs,
        getattr(app, "redoc_url", None),
        getattr(app, "swagger_ui_oauth2_redirect_url", None) if docs else None,
    )
    return frozenset(url for url in urls if url)


@dataclass(frozen=True)
class _Entry:
    pattern: re.Pattern[str]
    methods: frozenset[str] | None  # None: any method (a mount)
    access: Access


_NAMED_GROUP = re.compile(r"\(\?P<\w+>")


class _Alternatives:
    """Routes' path patterns as the alternatives of one regex, in order: `re` tries them left
    to right, so the first route that matches wins, as in the router, and a lookup is one
    regex call instead of one per route (about a microsecond for this app's 40 routes)."""

    def __init__(self, entries: list[_Entry]) -> None:
        self._access = [entry.access for entry in entries]
        # Path parameters lose their names (a name may repeat across routes); each route's
        # pattern becomes group r<i>, which identifies the route that matched.
        self._regex = re.compile(
            "|".join(
                f"(?P<r{i}>{_NAMED_GROUP.sub('(?:', entry.pattern.pattern)})"
                for i, entry in enumerate(entries)
            )
            or r"(?!)"
        )

    def match(self, path: str) -> Access | None:
        found = self._regex.match(path)
        if found is None or found.lastgroup is None:
            return None
        return self._access[int(found.lastgroup[1:])]


class RouteTable:
    """The app's routes in matching order, each with its access, looked up by method and path.

    Built once per app from app.routes (`table`), with the routes' own path patterns, so no copy
    of a route's path lives anywhere else: rename the path and the rule still applies.
    """

    def __init__(self, entries: list[_Entry]) -> None:
        methods = {method for entry in entries for method in entry.methods or ()}
        self._by_method = {
            method: _Alternatives([e for e in entries if e.methods is None or method in e.methods])
            for method in methods
        }
        self._other_methods = _Alternatives([e for e in entries if e.methods is None])

    @classmethod
    def of(cls, app: Any) -> RouteTable:
        framework = framework_routes(app)
        entries: list[_Entry] = []
        for route in leaf_routes(app.routes):
            pattern = getattr(route, "path_regex", None)
            websocket = isinstance(getattr(route, "original_route", route), WebSocketRoute)
            if pattern is None or websocket:
                continue  # not an HTTP route matched by path (a Host, a websocket)
            found = declared(route)
            if found is None:
                found = Access(PUBLIC) if route.path in framework else _UNDECLARED
            methods = getattr(route, "methods", None)
            entries.append(_Entry(pattern, frozenset(methods) if methods else None, found))
        return cls(entries)

    def lookup(self, method: str, path: str) -> Access | None:
        """The access of the first route that takes this request; None when none does (the
        router answers 404, or 405 for a path whose routes take other methods)."""
        return self._by_method.get(method, self._other_methods).match(path)


def route_path(scope: Scope) -> str:
    """The path the router matches routes against: the request path without the root path."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


def table(app: Any) -> RouteTable:
    """The app's table, built on its first request (every route is included by then)."""
    built: RouteTable | None = getattr(app.state, _STATE_KEY, None)
    if built is None:
        built = RouteTable.of(app)
        setattr(app.state, _STATE_KEY, built)
    return built


def resolve(scope: Scope) -> Access:
    """What the HTTP request in `scope` needs; looked up once, then cached in the scope."""
    found: Access | None = scope.get(_SCOPE_KEY)
    if found is not None:
        return found
    method = scope["method"]
    path = route_path(scope)
    found = table(scope["app"]).lookup(method, path)
    if found is None:
        if not path.startswith("/v1/"):
            found = _UNMATCHED_ELSEWHERE
        else:
            found = _UNMATCHED_READ if method in ("GET", "HEAD") else _UNMATCHED_WRITE
    scope[_SCOPE_KEY] = found
    return found
