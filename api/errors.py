"""The one error shape of the API, and the handlers that give every error that shape.

    {"error": {"code": "validation_error", "message": "...", "details": [{"field", "loc",
               "message", "type"}]}}

`code` is stable and machine-readable (docs/api.md lists them); `details` is there only when
request fields are at fault. Domain errors (rag/core/errors.py), FastAPI's validation errors and
the router's 404 and 405 are mapped here; the auth and upload-limit middlewares build theirs with
`error_response`, and api/observe.py answers an unhandled exception with `internal_error`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from api import route_policy
from rag.core.errors import RagError

log = logging.getLogger(__name__)

# Codes for the statuses the framework itself answers with (HTTPException).
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
}
INTERNAL_MESSAGE = "the server failed to handle the request; its log has the details"


class ErrorDetail(BaseModel):
    field: str = Field(description='where, dotted: "body.top_k", "query.limit"')
    loc: list[str | int] = Field(description='the same as a path: ["body", "top_k"]')
    message: str
    type: str = Field(description='pydantic\'s error type: "missing", "extra_forbidden", ...')


class ErrorInfo(BaseModel):
    code: str = Field(description="stable and machine-readable: not_found, validation_error, ...")
    message: str = Field(description="a sentence for people (English)")
    details: list[ErrorDetail] | None = Field(
        None, description="the fields at fault; only present when there are any"
    )


class Error(BaseModel):
    """The body of every error response (4xx and 5xx)."""

    error: ErrorInfo


# Documented on every route (app.py includes each router with them).
RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": Error, "description": "The request was refused; `error.code` says why."},
    "5XX": {"model": Error, "description": "The server or its LLM failed; `error.code` says how."},
}


def error_body(
    code: str, message: str, details: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = list(details)
    return {"error": error}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status, headers=headers)


def internal_error(request_id: str | None) -> JSONResponse:
    """What an unhandled exception answers: nothing of the exception itself leaves."""
    suffix = f" (request {request_id})" if request_id else ""
    return error_response(500, "internal_error", INTERNAL_MESSAGE + suffix)


async def _rag_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RagError)
    headers = {}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None and exc.status_code in (429, 503):
        headers["Retry-After"] = str(int(max(1, math.ceil(retry_after))))
    if exc.status_code >= 500:
        log.warning("%s: %s", exc.code, exc)
    return error_response(exc.status_code, exc.code, str(exc), headers=headers)


def _detail(error: Mapping[str, Any]) -> dict[str, Any]:
    loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
    kind = str(error.get("type", "value_error"))
    message = str(error.get("msg", "invalid value"))
    if kind == "extra_forbidden" and loc:
        message = f"unknown field {loc[-1]!r}"
    return {"field": ".".join(map(str, loc)), "loc": loc, "message": message, "type": kind}


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    broken = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if broken is not None:
        reason = (broken.get("ctx") or {}).get("error", "not valid JSON")
        at = broken.get("loc", ())[-1:]
        where = f" at character {at[0]}" if at and isinstance(at[0], int) else ""
        return error_response(400, "invalid_json", f"the body is not valid JSON: {reason}{where}")
    details = [_detail(e) for e in errors]
    shown = "; ".join(f"{d['field']}: {d['message']}" for d in details[:3])
    more = f" (and {len(details) - 3} more)" if len(details) > 3 else ""
    return error_response(
        422, "validation_error", f"invalid request: {shown}{more}", details=details
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """The router's 404 (no route) and 405 (no such method), and HTTPExceptions raised in
    routes or by FastAPI (a body it cannot parse)."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status < 400:  # 304 and the like: not an error, and no body
        return Response(status_code=status, headers=exc.headers)
    code = _CODES.get(status, "internal_error" if status >= 500 else "bad_request")
    message = str(exc.detail)
    if status == 404 and message == HTTPStatus.NOT_FOUND.phrase:
        message = f"no such route: {request.url.path} (GET /openapi.json lists them)"
    headers = dict(exc.headers or {})
    if status == 405:
        # The router names the methods of the first route on the path only.
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
        message = f"{request.method} is not allowed here; allowed: {headers['Allow']}"
    return error_response(status, code, message, headers=headers)


def _allowed_methods(request: Request) -> str:
    path = route_policy.route_path(request.scope)
    methods: set[str] = set()
    for route in route_policy.leaf_routes(request.app.routes):
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and getattr(route, "methods", None) and pattern.match(path):
            methods.update(route.methods)
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    app.add_exception_handler(RagError, _rag_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
