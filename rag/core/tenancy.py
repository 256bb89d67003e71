"""Who is asking: the principal behind the current request, and what it may touch.

The API's auth middleware sets the principal from the API key, never from the request body;
the knowledge-base lookups in rag/kb/knowledge.py read it, so every route that reaches a knowledge
base is filtered by tenant without each route repeating the check. Code outside a request (the
worker, the CLI) runs with no principal and sees everything.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

DEFAULT_TENANT = "default"
SCOPES = ("admin", "ingest", "query")


@dataclass(frozen=True)
class Principal:
    actor: str  # "key:<id>", or "open" when the server runs without keys on loopback
    tenant_id: str
    scopes: frozenset[str]
    kb_ids: frozenset[str] | None = None  # None: all of the tenant's knowledge bases
    key_id: str | None = None
    requests_per_minute: int | None = None
    concurrent_generations: int | None = None
    upload_bytes_per_day: int | None = None

    def allows(self, scope: str) -> bool:
        """admin implies every scope; "read" (listing, fetching) needs any scope at all."""
        if "admin" in self.scopes:
            return True
        return bool(self.scopes) if scope == "read" else scope in self.scopes

    def sees(self, kb_id: str, kb_tenant: str) -> bool:
        if kb_tenant != self.tenant_id:
            return False
        return self.kb_ids is None or kb_id in self.kb_ids


OPEN = Principal(actor="open", tenant_id=DEFAULT_TENANT, scopes=frozenset({"admin"}))

_current: ContextVar[Principal | None] = ContextVar("kbqa_principal", default=None)


def current() -> Principal | None:
    return _current.get()


@contextmanager
def acting_as(principal: Principal | None) -> Iterator[None]:
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)
