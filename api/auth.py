"""Authentication, scopes and per-key limits for the API, in one ASGI middleware.

What a request needs is declared on its route (api/route_policy.py); `AuthMiddleware` enforces
it before the route reads the body, and sets the request's principal (rag/core/tenancy.py),
which the knowledge-base lookups use to filter by tenant. Open mode: while no key has ever been
created and the server is bound to loopback, requests without a key act as the default tenant's
admin (`Guard.mode`); one that presents a key is refused, since no key is valid.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from anyio import to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from api import route_policy
from api.errors import error_response
from rag.core import tenancy
from rag.core.config import SecuritySettings
from rag.core.errors import Forbidden, RagError, RateLimited, Unauthorized
from rag.security import keys
from rag.security.ratelimit import MemoryLimiter, RedisLimiter, build_limiter
from rag.store.db import Database

log = logging.getLogger(__name__)
T = TypeVar("T")

_VERIFIED_CACHE_S = 2.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Guard:
    """What the middleware needs, built once per app in the lifespan."""

    db: Database
    settings: SecuritySettings
    host: str
    limiter: MemoryLimiter | RedisLimiter
    active: keys.KeysConfigured
    # sha256(token) -> (when verified, principal): spares a database read per request.
    _verified: dict[str, tuple[float, tenancy.Principal]] = field(default_factory=dict)

    @classmethod
    def create(cls, db: Database, settings: SecuritySettings, host: str) -> Guard:
        return cls(db, settings, host, build_limiter(settings.redis_url), keys.KeysConfigured(db))

    def mode(self) -> str:
        """ "keys" (a key is required), "open" (loopback, no keys) or "locked" (no keys, but
        listening beyond loopback: nothing is served until a key is created).

        Open mode: while no key has ever been created and the server is bound to loopback,
        requests without a key act as the default tenant's admin, and /readyz and the log say
        so; a request presenting a key is refused (401), as no key is valid. On any
        other address, or once a key exists (even if later revoked), a key is always required.
        """
        return self._mode(self.active.any())

    def _mode(self, any_key: bool) -> str:
        if any_key:
            return "keys"
        return "open" if is_loopback(self.host) else "locked"

    @property
    def limits_in_process(self) -> bool:
        """The limiter is in memory: its calls take a lock for microseconds, no I/O."""
        return isinstance(self.limiter, MemoryLimiter)

    def authenticate(self, authorization: str | None) -> tenancy.Principal:
        """The caller's principal; may read the database, so call it from a thread."""
        principal = self._authenticate(authorization, self.mode(), cached_only=False)
        assert principal is not None
        return principal

    def authenticate_cached(self, authorization: str | None) -> tenancy.Principal | None:
        """What `authenticate` returns (or raises) when that needs no database read: the mode
        is cached and the key was verified within the last seconds. None when it needs one.
        This is every request but the first of a key in a while, so it runs on the event loop.
        """
        configured = self.active.peek()
        if configured is None:
            return None
        return self._authenticate(authorization, self._mode(configured), cached_only=True)

    def _authenticate(
        self, authorization: str | None, mode: str, *, cached_only: bool
    ) -> tenancy.Principal | None:
        token = ""
        if authorization:
            kind, _, token = authorization.partition(" ")
            if kind.lower() != "bearer" or not token.strip():
                raise Unauthorized("use the header 'Authorization: Bearer <API key>'")
            token = token.strip()
        if mode == "open":
            if token:
                # No key exists, so none is valid: a mistyped key must not look accepted.
                raise Unauthorized(
                    "this API key is not valid: no key exists on this server (open mode on "
                    "loopback); send no key, or create one with `rag keys create`"
                )
            return tenancy.OPEN
        if not token:
            if mode == "locked":
                raise Unauthorized(
                    f"this server listens on {self.host}, so every request needs an API key; "
                    "create one with `rag keys create`"
                )
            raise Unauthorized("an API key is required: 'Authorization: Bearer <API key>'")
        digest = hashlib.sha256(token.encode()).hexdigest()
        cached = self._verified.get(digest)
        if cached and time.monotonic() - cached[0] < _VERIFIED_CACHE_S:
            return cached[1]
        if cached_only:
            return None
        principal = keys.verify(self.db, token)
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[digest] = (time.monotonic(), principal)
        return principal

    def forget(self) -> None:
        """Drop cached verifications (after a revocation through this process)."""
        self._verified.clear()
        self.active.invalidate()

    def check_rate(self, principal: tenancy.Principal) -> None:
        limit = principal.requests_per_minute or self.settings.requests_per_minute
        decision = self.limiter.rate(_limit_key(principal), limit, 60.0)
        if not decision.allowed:
            raise RateLimited(
                f"more than {limit} requests per minute for this key",
                retry_after_s=decision.retry_after_s,
            )

    def spend_upload(self, principal: tenancy.Principal, size: int) -> None:
        limit = principal.upload_bytes_per_day or self.settings.upload_bytes_per_day
        decision = self.limiter.spend(_limit_key(principal), size, limit)
        if not decision.allowed:
            raise RateLimited(
                f"this upload would exceed the key's {limit} bytes per day "
                f"({decision.remaining} left today)",
                retry_after_s=decision.retry_after_s,
            )

    def take_generation_slot(self, principal: tenancy.Principal) -> str:
        limit = principal.concurrent_generations or self.settings.concurrent_generations
        token = self.limiter.acquire(_limit_key(principal), limit, lease_s=900.0)
        if token is None:
            raise RateLimited(f"at most {limit} answers at a time for this key", retry_after_s=1.0)
        return token

    def release_generation_slot(self, principal: tenancy.Principal, token: str) -> None:
        self.limiter.release(_limit_key(principal), token)


def _limit_key(principal: tenancy.Principal) -> str:
    return principal.key_id or principal.actor


class AuthMiddleware:
    """Looks the request's route up in a table built from app.routes (`route_policy.resolve`)
    and enforces what it declares: the scope, the key's request rate, and whether it holds a
    generation slot or spends upload quota. A route that declares nothing needs the admin scope
    (fail closed), and a request no route takes needs a key under /v1."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        access = route_policy.resolve(scope)
        if access.public:
            await self.app(scope, receive, send)
            return
        guard: Guard | None = getattr(scope["app"].state, "guard", None)
        if guard is None:  # lifespan not run (should not happen): refuse rather than open
            await _refuse(scope, receive, send, Unauthorized("the service is starting"))
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        slot: str | None = None
        # Database and Redis calls go to a thread; cached verifications and in-memory limits
        # take microseconds, and a thread hop for them would cost more than the work itself.
        try:
            authorization = headers.get("authorization")
            principal = guard.authenticate_cached(authorization)
            if principal is None:
                principal = await to_thread.run_sync(guard.authenticate, authorization)
            if not principal.allows(access.scope):
                raise Forbidden(f"this API key lacks the {access.scope!r} scope")
            await _limits(guard, guard.check_rate, principal)
            declared = headers.get("content-length", "")
            if access.upload and declared.isdigit():
                await _limits(guard, guard.spend_upload, principal, int(declared))
            if access.generation:
                slot = await _limits(guard, guard.take_generation_slot, principal)
        except RagError as exc:
            await _refuse(scope, receive, send, exc)
            return
        scope.setdefault("state", {})["principal"] = principal
        try:
            with tenancy.acting_as(principal):
                await self.app(scope, receive, send)
        finally:
            if slot is not None:
                await _limits(guard, guard.release_generation_slot, principal, slot)


async def _limits(guard: Guard, func: Callable[..., T], *args: Any) -> T:
    """A limiter call: in a thread for Redis, here for the in-memory limiter (never blocks)."""
    if guard.limits_in_process:
        return func(*args)
    return await to_thread.run_sync(func, *args)


async def _refuse(scope: Scope, receive: Receive, send: Send, exc: RagError) -> None:
    headers: dict[str, Any] = {}
    retry = getattr(exc, "retry_after_s", None)
    if retry is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    response = error_response(exc.status_code, exc.code, str(exc), headers=headers)
    await response(scope, receive, send)
