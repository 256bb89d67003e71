"""CORS for the embeddable widget only: off everywhere else.

Only requests under /v1/widget/ may be cross-origin, and only from an origin that some active
widget key allows (rag/security/widget_keys.py; cached for RAG_WIDGET__CACHE_S). For those this
middleware answers the preflight itself and adds Access-Control-Allow-Origin to the response,
refusals included, so the widget can read why it was refused; the route then checks that the
key it was sent allows that origin. No other path ever gets an Access-Control-* header.
"""

from __future__ import annotations

from anyio import to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import route_policy
from api.deps import Root
from api.errors import error_response

WIDGET_PREFIX = "/v1/widget/"
# What the widget sends: JSON bodies and its key; what it reads besides the body.
ALLOW_METHODS = "GET, POST"
ALLOW_HEADERS = "Content-Type, X-Widget-Key"
EXPOSE_HEADERS = "Retry-After, X-Request-ID, X-Highlight-Count"
# Browsers may reuse a preflight this long; the request itself is still checked every time.
PREFLIGHT_MAX_AGE_S = 60


class WidgetCorsMiddleware:
    """Placed outside AuthMiddleware, which would refuse a preflight (an OPTIONS request no
    route takes) for want of a key, and inside ObserveMiddleware, so preflights are counted
    and carry the request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not route_policy.route_path(scope).startswith(WIDGET_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        if origin is None:  # not a cross-origin browser request: nothing to add
            await self.app(scope, receive, send)
            return
        allowed = await _allowed(scope, origin)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await _preflight(scope, receive, send, origin, allowed)
            return
        vary = [(b"vary", b"Origin")]
        added = vary
        if allowed:
            added = [
                *vary,
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-expose-headers", EXPOSE_HEADERS.encode("latin-1")),
            ]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *added]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _allowed(scope: Scope, origin: str) -> bool:
    services: Root | None = getattr(scope["app"].state, "services", None)
    if services is None:
        return False
    keys = services.widget_keys
    cached = keys.origin_allowed_cached(origin)
    if cached is not None:
        return cached
    return await to_thread.run_sync(keys.origin_allowed, origin)


async def _preflight(scope: Scope, receive: Receive, send: Send, origin: str, ok: bool) -> None:
    if not ok:
        # No Access-Control-* header: the browser stops the request it asked about.
        refusal = error_response(
            403, "forbidden", "no widget key allows this origin", headers={"Vary": "Origin"}
        )
        await refusal(scope, receive, send)
        return
    await send(
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [
                (b"vary", b"Origin"),
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-methods", ALLOW_METHODS.encode("latin-1")),
                (b"access-control-allow-headers", ALLOW_HEADERS.encode("latin-1")),
                (b"access-control-max-age", str(PREFLIGHT_MAX_AGE_S).encode("latin-1")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
