"""The id of the request being served, in a context variable.

The API's outer middleware sets it (the caller's X-Request-ID when it is short and plain, a new
one otherwise); every log record made while serving the request carries it (rag/core/log_setup.py),
and the LLM client sends it upstream as X-Request-ID, so one id ties the access log, our logs
and vLLM's logs together. Worker threads started through anyio/Starlette inherit it, since they
run in a copy of the caller's context.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

HEADER = "X-Request-ID"
# Accepted from callers as is: short, and nothing that could split a log line or a header.
_SAFE = re.compile(r"[A-Za-z0-9._:\-]{1,64}")

_current: ContextVar[str | None] = ContextVar("kbqa_request_id", default=None)


def is_valid(value: str) -> bool:
    return _SAFE.fullmatch(value) is not None


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept(value: str | None) -> str:
    """The caller's id when it is acceptable, otherwise a fresh one."""
    return value if value is not None and is_valid(value) else new_request_id()


def current() -> str | None:
    return _current.get()


def set_current(request_id: str | None) -> Token[str | None]:
    return _current.set(request_id)


def reset_current(token: Token[str | None]) -> None:
    _current.reset(token)


@contextmanager
def bound(request_id: str | None) -> Iterator[str | None]:
    """Make `request_id` current for the code inside (and the threads it starts via anyio)."""
    token = _current.set(request_id)
    try:
        yield request_id
    finally:
        _current.reset(token)
