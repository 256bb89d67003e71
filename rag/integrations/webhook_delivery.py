"""Delivering webhook events from the outbox (rag/kb/events.py): signed POSTs, retried with
exponential backoff, given up ("dead", replayable) after `max_attempts`.

Every replica may run a dispatcher: a delivery is claimed by moving its `next_attempt_at` past
the send's timeout with a compare-and-set, so one replica sends it at a time, and a replica that
dies mid-send leaves it due again after the lease. Receivers can therefore see an event twice
(at-least-once): `X-Kbqa-Delivery` is the id to deduplicate on. Sends run on a small thread
pool with a timeout, so a receiver that hangs holds one sender for `timeout_s`, not the loop.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy import select, update

from rag.core.config import WebhookSettings
from rag.store.db import Database, rowcount
from rag.store.models import DeliveryStatus, Webhook, WebhookDelivery

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Kbqa-Signature"  # t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">
DELIVERY_HEADER = "X-Kbqa-Delivery"
EVENT_HEADER = "X-Kbqa-Event"
_ERROR_CHARS = 500


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, now: float, tolerance_s: float = 300) -> bool:
    """What a receiver checks: a signature of this body by this secret, made within
    `tolerance_s` of `now` (a replayed old request fails the time check)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split(",", 1)[1]
    return hmac.compare_digest(expected, f"v1={parts.get('v1', '')}")


@dataclass(frozen=True)
class _Claimed:
    id: str
    url: str
    secret: str
    event: str
    payload: dict[str, object]
    attempts: int  # including this one


@dataclass
class DispatchCount:
    delivered: int = 0
    retried: int = 0
    dead: int = 0


class WebhookDispatcher:
    """Sends due deliveries. `run_once` is one pass (tests call it); `start` runs passes every
    `poll_interval_s` on a thread until `stop`. `transport` is the test seam (httpx)."""

    def __init__(
        self,
        db: Database,
        settings: WebhookSettings,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self._client = httpx.Client(
            transport=transport, timeout=settings.timeout_s, follow_redirects=False
        )
        self._pool = ThreadPoolExecutor(settings.senders, thread_name_prefix="webhook")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def backoff_s(self, attempts: int) -> float:
        """Seconds before the next try after `attempts` failed ones: doubling, capped."""
        cfg = self.settings
        return float(min(cfg.max_backoff_s, cfg.backoff_s * 2 ** (attempts - 1)))

    def run_once(self) -> DispatchCount:
        claimed = self._claim()
        count = DispatchCount()
        for delivery, result in zip(claimed, self._pool.map(self._send, claimed), strict=True):
            status = self._settle(delivery, *result)
            if status == DeliveryStatus.delivered:
                count.delivered += 1
            elif status == DeliveryStatus.dead:
                count.dead += 1
            else:
                count.retried += 1
        return count

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="webhooks", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.timeout_s + 5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.poll_interval_s):
            try:
                while not self._stop.is_set() and self._busy(self.run_once()):
                    pass  # a full batch: there may be more due at once
            except Exception:
                log.exception("webhook dispatch failed")

    def _busy(self, count: DispatchCount) -> bool:
        return count.delivered + count.retried + count.dead >= self.settings.batch_size

    def _claim(self) -> list[_Claimed]:
        """Due deliveries, each taken with a compare-and-set on next_attempt_at (the lease)."""
        now = self.db.now()
        lease = now + timedelta(seconds=self.settings.timeout_s * 2 + 5)
        claimed: list[_Claimed] = []
        with self.db.write() as session:
            rows = session.execute(
                select(WebhookDelivery, Webhook)
                .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .where(
                    WebhookDelivery.status == DeliveryStatus.pending,
                    WebhookDelivery.next_attempt_at <= now,
                )
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(self.settings.batch_size)
            ).all()
            for delivery, hook in rows:
                result = session.execute(
                    update(WebhookDelivery)
                    .where(
                        WebhookDelivery.id == delivery.id,
                        WebhookDelivery.status == DeliveryStatus.pending,
                        WebhookDelivery.next_attempt_at == delivery.next_attempt_at,
                    )
                    .values(next_attempt_at=lease, attempts=WebhookDelivery.attempts + 1)
                    .execution_options(synchronize_session=False)
                )
                taken = rowcount(result)
                if taken == 1:
                    claimed.append(
                        _Claimed(
                            delivery.id,
                            hook.url,
                            hook.secret,
                            delivery.event,
                            dict(delivery.payload),
                            delivery.attempts + 1,
                        )
                    )
        return claimed

    def _send(self, delivery: _Claimed) -> tuple[int | None, str | None]:
        """(HTTP status, error): a 2xx is delivered; anything else is a failed attempt."""
        body = json.dumps(delivery.payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(delivery.secret, int(time.time()), body),
            DELIVERY_HEADER: delivery.id,
            EVENT_HEADER: delivery.event,
            "User-Agent": "kbqa-webhooks",
        }
        try:
            response = self._client.post(delivery.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{exc.__class__.__name__}: {exc}"[:_ERROR_CHARS]
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"HTTP {response.status_code}: {response.text}"[:_ERROR_CHARS]

    def _settle(self, delivery: _Claimed, code: int | None, error: str | None) -> DeliveryStatus:
        now = self.db.now()
        if error is None:
            status, values = DeliveryStatus.delivered, {"delivered_at": now}
        elif delivery.attempts >= self.settings.max_attempts:
            status, values = DeliveryStatus.dead, {}
            log.warning(
                "webhook delivery %s is dead after %d attempts: %s",
                delivery.id,
                delivery.attempts,
                error,
            )
        else:
            retry_at = now + timedelta(seconds=self.backoff_s(delivery.attempts))
            status, values = DeliveryStatus.pending, {"next_attempt_at": retry_at}
        with self.db.write() as session:
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery.id)
                .values(status=status, last_status_code=code, last_error=error, **values)
                .execution_options(synchronize_session=False)
            )
        return status
