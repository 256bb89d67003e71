"""Documents by status, read from SQL at scrape time (so every replica reports the truth)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from rag.store.db import Database
from rag.store.models import Chunk, Document


class DocumentStatusCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        docs = GaugeMetricFamily("rag_documents", "Documents by status", labels=["status"])
        chunks = GaugeMetricFamily("rag_chunks", "Chunks stored in SQL")
        try:
            with self.db.read() as session:
                rows = session.execute(
                    select(Document.status, func.count()).group_by(Document.status)
                ).all()
                total = session.execute(select(func.count()).select_from(Chunk)).scalar_one()
        except Exception:
            return
        counts = {"queued": 0, "processing": 0, "ready": 0, "failed": 0}
        counts.update({status: n for status, n in rows})
        for status, n in counts.items():
            docs.add_metric([status], n)
        chunks.add_metric([], total)
        yield docs
        yield chunks
