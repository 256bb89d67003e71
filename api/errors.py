"""Domain exceptions -> HTTP responses, in one place."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rag.core.errors import RagError

log = logging.getLogger(__name__)


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


async def _rag_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RagError)
    headers = {}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None and exc.status_code in (429, 503):
        headers["Retry-After"] = str(int(max(1, math.ceil(retry_after))))
    if exc.status_code >= 500:
        log.warning("%s: %s", exc.code, exc)
    return JSONResponse(error_body(exc.code, str(exc)), exc.status_code, headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RagError, _rag_error)
