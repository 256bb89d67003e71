"""Answers to repeated questions, served from a cache while the knowledge base is unchanged.

The key covers everything an answer depends on: the knowledge base's state (its live index
version and the newest sequence number among its chunks and tombstones, so any upload,
deletion or re-index changes it), the normalised question, the retrieval and generation
options, the model and the system prompts. Nothing needs invalidating: a change makes new keys,
and old entries age out (TTL, and LRU in process). Only stand-alone questions are cached; a
conversation's follow-up depends on its history.

In process by default; in Redis (`RAG_CACHE__REDIS_URL`) when several replicas should share it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import asdict
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rag.models import Chunk, ChunkTombstone, KnowledgeBase

log = logging.getLogger(__name__)


def kb_state(session: Session, kb_id: str) -> str:
    """Changes whenever the knowledge base's searchable content can have changed."""
    live = session.execute(
        select(KnowledgeBase.live_version).where(KnowledgeBase.id == kb_id)
    ).scalar_one_or_none()
    chunk_seq = session.execute(
        select(func.max(Chunk.seq)).where(Chunk.kb_id == kb_id)
    ).scalar_one_or_none()
    gone_seq = session.execute(
        select(func.max(ChunkTombstone.seq)).where(ChunkTombstone.kb_id == kb_id)
    ).scalar_one_or_none()
    return f"{live}:{chunk_seq or 0}:{gone_seq or 0}"


def cache_key(kb_id: str, state: str, question: str, options: dict[str, Any]) -> str:
    normalised = " ".join(question.split()).casefold()
    material = json.dumps(
        {"kb": kb_id, "state": state, "q": normalised, "o": options},
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(material.encode()).hexdigest()


class Backend(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes, ttl_s: float) -> None: ...


class MemoryBackend:
    def __init__(self, max_entries: int = 10_000) -> None:
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] < time.monotonic():
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        with self._lock:
            self._items[key] = (time.monotonic() + ttl_s, value)
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)


class RedisBackend:
    """Shared by replicas. A Redis outage makes every lookup a miss, never an error."""

    def __init__(self, url: str, prefix: str = "kbqa:answers") -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._prefix = prefix

    def get(self, key: str) -> bytes | None:
        import redis

        try:
            value = self._client.get(f"{self._prefix}:{key}")
        except redis.RedisError as exc:
            log.warning("answer cache: Redis unavailable (%s); answering without it", exc)
            return None
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        import redis

        try:
            self._client.set(f"{self._prefix}:{key}", value, px=int(ttl_s * 1000))
        except redis.RedisError as exc:
            log.warning("answer cache: could not store an answer (%s)", exc)


class AnswerCache:
    def __init__(self, backend: Backend, ttl_s: float = 3600.0) -> None:
        self.backend = backend
        self.ttl_s = ttl_s
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self.backend.get(key)
        if raw is None:
            self.misses += 1
            return None
        self.hits += 1
        value: dict[str, Any] = json.loads(raw)
        return value

    def put(self, key: str, payload: dict[str, Any]) -> None:
        self.backend.put(key, json.dumps(payload, ensure_ascii=False).encode(), self.ttl_s)


def build_cache(redis_url: str | None, max_entries: int, ttl_s: float) -> AnswerCache:
    backend: Backend = RedisBackend(redis_url) if redis_url else MemoryBackend(max_entries)
    return AnswerCache(backend, ttl_s)


def plain(value: Any) -> Any:
    """Dataclasses (answers, citations, passages) as JSON-ready values."""
    return asdict(value) if hasattr(value, "__dataclass_fields__") else value
