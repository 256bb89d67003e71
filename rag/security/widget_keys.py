"""Publishable widget keys: bound to one assistant and to the origins allowed to use them.

A widget key ("pk_" + random) sits in a page's HTML, so it is no secret: what it grants is
limited by the Origin header a browser sends (exact origins; a loopback host may take any port
with "http://localhost:*"), by its own requests per minute and by its assistant's knowledge base.
`WidgetKeys.authorize` checks all three for each widget request; `origin_allowed` tells the CORS
middleware whether any active key allows an origin. Both cache what they read for
RAG_WIDGET__CACHE_S seconds, so a revocation takes effect everywhere within that time.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from sqlalchemy import select

from rag.core import tenancy
from rag.core.config import WidgetSettings
from rag.core.errors import Forbidden, InvalidInput, NotFound, RateLimited, Unauthorized
from rag.security import audit
from rag.security.ratelimit import Limiter
from rag.store.db import Database
from rag.store.models import Assistant, WidgetKey

PREFIX = "pk_"
MAX_ORIGINS = 50
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
ANY_PORT = ":*"


def normalize_origin(value: str) -> str:
    """`value` as a browser sends it in Origin: lower-case scheme://host[:port], the default
    port left out, no path. "scheme://loopback-host:*" (any port) is allowed for development;
    other wildcards, paths, credentials and non-web schemes are refused with InvalidInput."""
    text = value.strip()
    if text.lower().endswith(ANY_PORT):
        base = normalize_origin(text[: -len(ANY_PORT)])
        if base.split("://", 1)[1] not in _LOOPBACK_HOSTS:
            raise InvalidInput(
                f"origin {value!r}: any port (':*') is allowed only for localhost, 127.0.0.1 "
                "and [::1]; list other origins exactly"
            )
        return base + ANY_PORT
    if "*" in text:
        raise InvalidInput(f"origin {value!r}: wildcards are not allowed; list each origin")
    parts = urlsplit(text)
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        raise InvalidInput(f"origin {value!r} must look like https://help.example.com[:port]")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidInput(f"origin {value!r} must not carry credentials, a query or a fragment")
    if parts.path not in ("", "/"):
        raise InvalidInput(f"origin {value!r} must not have a path: only scheme://host[:port]")
    try:
        port = parts.port
        host = parts.hostname.encode("idna").decode("ascii").lower()
    except (ValueError, UnicodeError) as exc:
        raise InvalidInput(f"origin {value!r} is not a valid origin: {exc}") from None
    scheme = parts.scheme.lower()
    if ":" in host:  # an IPv6 address, bracketed as in a URL
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_matches(pattern: str, origin: str) -> bool:
    """Whether a browser's Origin (normalised) is allowed by one stored pattern."""
    if pattern.endswith(ANY_PORT):
        base = pattern[: -len(ANY_PORT)]
        return origin == base or (
            origin.startswith(base + ":") and origin[len(base) + 1 :].isdigit()
        )
    return origin == pattern


def _browser_origin(origin: str | None) -> str | None:
    """The Origin header normalised, or None when absent, "null" or malformed."""
    if not origin or origin == "null":
        return None
    try:
        return normalize_origin(origin)
    except InvalidInput:
        return None


@dataclass(frozen=True)
class WidgetGrant:
    """What a verified widget key may do: answer as one assistant, on its knowledge base."""

    key_id: str
    tenant_id: str
    assistant_id: str
    kb_id: str
    allowed_origins: tuple[str, ...]
    requests_per_minute: int
    revoked: bool

    def principal(self) -> tenancy.Principal:
        """The principal widget requests act as: a query-only caller of one knowledge base."""
        return tenancy.Principal(
            actor=f"widget:{self.key_id}",
            tenant_id=self.tenant_id,
            scopes=frozenset({"query"}),
            kb_ids=frozenset({self.kb_id}),
        )


class WidgetKeys:
    """Create, list and revoke widget keys, and authorise the widget's requests."""

    def __init__(self, db: Database, settings: WidgetSettings, limiter: Limiter) -> None:
        self._db = db
        self._settings = settings
        self._limiter = limiter
        self._lock = threading.Lock()
        self._grants: dict[str, tuple[float, WidgetGrant | None]] = {}
        self._origins: tuple[float, tuple[str, ...]] | None = None

    # --- administration (admin API; tenant-scoped) -----------------------------------------

    def create(
        self,
        *,
        tenant_id: str,
        assistant_id: str,
        allowed_origins: list[str],
        requests_per_minute: int | None = None,
        name: str = "",
    ) -> WidgetKey:
        origins = sorted({normalize_origin(o) for o in allowed_origins})
        if not origins or len(origins) > MAX_ORIGINS:
            raise InvalidInput(f"allowed_origins must list 1 to {MAX_ORIGINS} origins")
        with self._db.write() as session:
            assistant = session.get(Assistant, assistant_id)
            if assistant is None or assistant.tenant_id != tenant_id:
                raise NotFound(f"assistant {assistant_id} does not exist")
            row = WidgetKey(
                id=PREFIX + secrets.token_urlsafe(18),
                tenant_id=tenant_id,
                assistant_id=assistant_id,
                name=name.strip(),
                allowed_origins=origins,
                requests_per_minute=requests_per_minute
                or self._settings.default_requests_per_minute,
            )
            session.add(row)
            audit.record(
                session,
                "widget_key.create",
                row.id,
                tenant_id=tenant_id,
                assistant_id=assistant_id,
                allowed_origins=origins,
                requests_per_minute=row.requests_per_minute,
            )
        self.forget()
        return row

    def listing(self, tenant_id: str) -> list[WidgetKey]:
        query = select(WidgetKey).where(WidgetKey.tenant_id == tenant_id)
        with self._db.read() as session:
            return list(session.execute(query.order_by(WidgetKey.created_at)).scalars())

    def revoke(self, key_id: str, tenant_id: str) -> WidgetKey:
        """Revoke a key of this tenant (idempotent); another tenant's key does not exist."""
        with self._db.write() as session:
            row = session.get(WidgetKey, key_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound(f"widget key {key_id} does not exist")
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
                audit.record(session, "widget_key.revoke", key_id, tenant_id=tenant_id)
        self.forget()
        return row

    def forget(self) -> None:
        """Drop the caches (after a change through this process)."""
        with self._lock:
            self._grants.clear()
            self._origins = None

    # --- the widget's requests --------------------------------------------------------------

    def authorize(self, key_id: str | None, origin: str | None) -> WidgetGrant:
        """The grant of a widget request: 401 for a missing, unknown or revoked key, 403 for an
        Origin the key does not allow (or none), 429 once the key's rate is spent. Reads the
        database at most once per key every RAG_WIDGET__CACHE_S; call it from a thread."""
        if not key_id:
            raise Unauthorized("a widget key is required: the header 'X-Widget-Key: pk_...'")
        grant = self._grant(key_id.strip())
        if grant is None:
            raise Unauthorized("this widget key is not valid")
        if grant.revoked:
            raise Unauthorized("this widget key has been revoked")
        seen = _browser_origin(origin)
        if seen is None:
            raise Forbidden("a widget request must come from a web page (an Origin header)")
        if not any(origin_matches(p, seen) for p in grant.allowed_origins):
            raise Forbidden(f"this widget key is not allowed on {seen}")
        decision = self._limiter.rate(f"widget:{grant.key_id}", grant.requests_per_minute, 60.0)
        if not decision.allowed:
            raise RateLimited(
                f"more than {grant.requests_per_minute} requests per minute for this widget key",
                retry_after_s=decision.retry_after_s,
            )
        return grant

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether any active key allows this Origin (the CORS middleware asks); may read the
        database, so call it from a thread unless `origin_allowed_cached` answered."""
        patterns = self._cached_origins()
        if patterns is None:
            patterns = self._load_origins()
        return _any_match(patterns, origin)

    def origin_allowed_cached(self, origin: str | None) -> bool | None:
        """`origin_allowed` when it needs no database read; None when it does."""
        patterns = self._cached_origins()
        return None if patterns is None else _any_match(patterns, origin)

    def _cached_origins(self) -> tuple[str, ...] | None:
        cached = self._origins
        if cached is not None and time.monotonic() - cached[0] < self._settings.cache_s:
            return cached[1]
        return None

    def _load_origins(self) -> tuple[str, ...]:
        with self._db.read() as session:
            lists = session.execute(
                select(WidgetKey.allowed_origins).where(WidgetKey.revoked_at.is_(None))
            ).scalars()
            patterns = tuple(sorted({p for origins in lists for p in origins}))
        with self._lock:
            self._origins = (time.monotonic(), patterns)
        return patterns

    def _grant(self, key_id: str) -> WidgetGrant | None:
        now = time.monotonic()
        cached = self._grants.get(key_id)
        if cached is not None and now - cached[0] < self._settings.cache_s:
            return cached[1]
        grant: WidgetGrant | None = None
        if key_id.startswith(PREFIX) and len(key_id) <= 40:
            with self._db.read() as session:
                found = session.execute(
                    select(WidgetKey, Assistant.kb_id)
                    .join(Assistant, Assistant.id == WidgetKey.assistant_id)
                    .where(WidgetKey.id == key_id)
                ).first()
            if found is not None:
                row, kb_id = found
                grant = WidgetGrant(
                    key_id=row.id,
                    tenant_id=row.tenant_id,
                    assistant_id=row.assistant_id,
                    kb_id=kb_id,
                    allowed_origins=tuple(row.allowed_origins),
                    requests_per_minute=row.requests_per_minute,
                    revoked=row.revoked_at is not None,
                )
        with self._lock:
            if len(self._grants) > 10_000:  # unknown keys sent at random must not grow it
                self._grants.clear()
            self._grants[key_id] = (now, grant)
        return grant


def _any_match(patterns: tuple[str, ...], origin: str | None) -> bool:
    seen = _browser_origin(origin)
    return seen is not None and any(origin_matches(p, seen) for p in patterns)
