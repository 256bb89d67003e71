"""The job queue, read from SQL at scrape time: every replica and worker shares one queue, so
only SQL knows its depth (a worker's own counters would miss jobs other processes queued)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from rag.store.db import Database
from rag.store.models import Job, JobKind, JobStatus


class JobQueueCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "rag_job_queue_depth", "Jobs queued and not yet claimed, by kind", labels=["kind"]
        )
        running = GaugeMetricFamily(
            "rag_jobs_running", "Jobs claimed by a worker and running, by kind", labels=["kind"]
        )
        active = (JobStatus.queued, JobStatus.running)
        try:
            with self.db.read() as session:
                rows = session.execute(
                    select(Job.status, Job.kind, func.count())
                    .where(Job.status.in_(active))
                    .group_by(Job.status, Job.kind)
                ).all()
        except Exception:  # a scrape must not fail because the database is away
            return
        counts: dict[tuple[str, str], int] = {
            (status.value, kind.value): 0 for status in active for kind in JobKind
        }
        counts.update({(status, kind): n for status, kind, n in rows})
        for (status, kind), n in sorted(counts.items()):
            (depth if status == JobStatus.queued else running).add_metric([kind], n)
        yield depth
        yield running
