"""The outermost middleware: request id, HTTP metrics and the request's trace span.

Plain ASGI on purpose. Starlette's BaseHTTPMiddleware (`@app.middleware("http")`) runs the app
in a separate task and relays every body message through a memory stream, which delays each
streamed event; here a message costs one function call on its way out.

The request id is the caller's X-Request-ID when short and plain (rag/core/request_context.py),
else a new one; it is on the response, on every log record of the request and sent upstream to
the LLM. An exception no handler took is answered here (500 `internal_error`), with the id too.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import internal_error
from rag.core import metrics, request_context, tracing

log = logging.getLogger(__name__)
_HEADER = request_context.HEADER.lower().encode("latin-1")


class ObserveMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = next((v for k, v in scope["headers"] if k == _HEADER), None)
        request_id = request_context.accept(None if given is None else given.decode("latin-1"))
        scope.setdefault("state", {})["request_id"] = request_id
        raw_id = request_id.encode("latin-1")
        status = 500  # what is sent when the app raises before responding
        started_response = False
        first_event_pending = False  # an event stream whose first event is not sent yet

        async def send_observed(message: Message) -> None:
            nonlocal status, first_event_pending, started_response
            kind = message["type"]
            if kind == "http.response.start":
                status, started_response = message["status"], True
                headers = [*message.get("headers", ()), (_HEADER, raw_id)]
                message = {**message, "headers": headers}
                if any(
                    k == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers
                ):
                    first_event_pending = True
            elif first_event_pending and kind == "http.response.body" and message.get("body"):
                metrics.STREAM_FIRST_EVENT_SECONDS.labels(_route(scope)).observe(
                    time.perf_counter() - started
                )
                first_event_pending = False
            await send(message)

        method = scope["method"]
        token = request_context.set_current(request_id)
        with tracing.server_span(f"HTTP {method}", scope["headers"]) as span:
            try:
                await self.app(scope, receive, send_observed)
            except Exception:
                if started_response:
                    raise  # too late for an error response: the server drops the connection
                log.exception("unhandled error in %s %s", method, scope["path"])
                await internal_error(request_id)(scope, receive, send_observed)
            finally:
                route = _route(scope)
                metrics.REQUESTS.labels(method, route, str(status)).inc()
                metrics.REQUEST_SECONDS.labels(method, route).observe(time.perf_counter() - started)
                tracing.finish_server_span(span, method, route, status)
        # Reset only on success: when the app raises mid-response, the server logs the error
        # after this returns, in this request's own task, and that record should carry the id.
        request_context.reset_current(token)


def _route(scope: Scope) -> str:
    """The matched route's template (bounded label values); "unmatched" for 404s and for
    requests refused before routing (401, 413, 429)."""
    return getattr(scope.get("route"), "path", "unmatched")
