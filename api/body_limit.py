"""The upload size limit, enforced while the body arrives.

A declared Content-Length over the limit is answered 413 before anything is read. A body sent
without one (chunked) is counted as it streams in: at the first byte over the limit the app is
told the client went away, and the client gets 413 — the rest is never read or spooled to disk.
It applies to the routes that declare the upload limit class (api/route_policy.py).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import route_policy
from api.errors import error_response

ENVELOPE = 1024 * 1024  # multipart headers and boundaries around the file itself


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not route_policy.resolve(scope).upload:
            await self.app(scope, receive, send)
            return
        file_limit = scope["app"].state.services.settings.ingest.max_upload_bytes
        limit = file_limit + ENVELOPE
        too_large = error_response(
            413,
            "payload_too_large",
            f"the upload exceeds the limit of {file_limit} bytes",
            headers={"Connection": "close"},
        )
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await too_large(scope, receive, send)
            return

        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # whatever the app says after the cut-off, the answer is 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise  # a real failure, not the disconnect we staged
        if exceeded and not started:
            await too_large(scope, receive, send)
