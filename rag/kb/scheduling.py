"""The fair order of the job queue, and what it means for a waiting document: its position
and an estimate of when it will be done.

Jobs run by priority (interactive uploads, batch uploads, background jobs), then round robin
over tenants and, within a tenant, over its knowledge bases, so a long batch in one knowledge
base holds back an upload elsewhere by only about one job per other busy group. `_fair` spells
the order out; docs/architecture.md ("The job queue") gives the reasons. Positions and ETAs use
the same order, so position 1 is the job a worker claims next.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Subquery, and_, func, or_, select, true
from sqlalchemy.orm import Session

from rag.store.db import as_utc
from rag.store.models import IngestStage, Job, JobKind, JobPriority, JobStatus, KnowledgeBase

# Starts older than this do not count as service: such groups rank as never served.
SERVED_WITHIN = timedelta(hours=1)
# How far back finished ingest jobs count towards the throughput behind ETAs.
RECENT = timedelta(minutes=10)
_RECENT_JOBS = 1000  # at most this many of them, the newest

PRIORITIES = {"interactive": JobPriority.interactive, "batch": JobPriority.batch}


def priority_name(value: int) -> str:
    """The JobPriority band a stored priority falls in."""
    if value <= JobPriority.interactive:
        return "interactive"
    return "batch" if value <= JobPriority.batch else "background"


def stale_before(now: datetime, lease_s: float) -> datetime:
    """Running jobs whose last heartbeat is older than this have lost their worker."""
    return now - timedelta(seconds=lease_s)


def runnable(now: datetime, stale: datetime) -> ColumnElement[bool]:
    """Jobs a worker may claim now: queued and due, or running with a heartbeat older than
    the lease (their worker died)."""
    return or_(
        and_(Job.status == JobStatus.queued, Job.run_after <= now),
        and_(Job.status == JobStatus.running, Job.heartbeat_at < stale),
    )


def waiting(stale: datetime) -> ColumnElement[bool]:
    """Jobs in the queue: runnable ones and those waiting out a retry delay."""
    return or_(
        Job.status == JobStatus.queued,
        and_(Job.status == JobStatus.running, Job.heartbeat_at < stale),
    )


def _fair(where: ColumnElement[bool], now: datetime, rounds: int | None = None) -> Subquery:
    """The jobs matching `where` with what orders them (`_order`):

    1. `priority` (JobPriority): interactive uploads, then batch uploads, then background jobs.
    2. Within one priority, round robin over tenants, and within a tenant over its knowledge
       bases. A job's KB round is its place among its knowledge base's waiting jobs (oldest
       first). Its tenant round is its place among the tenant's waiting jobs taken round by
       round over the tenant's knowledge bases (by KB round, and within a round the knowledge
       base served least recently goes first). Jobs run by tenant round, and within a round the
       tenant served least recently goes first. So each tenant gets one job per round, each of
       its knowledge bases its turn, and 500 files queued in one knowledge base hold back an
       upload elsewhere by at most about one job per other busy tenant and knowledge base.
    3. Ties (never served, or not within `SERVED_WITHIN`) go to the group whose oldest waiting
       job is oldest, then to `id`.

    "Served" is the latest `started_at` of a job of the knowledge base (of the tenant) among
    jobs started within `SERVED_WITHIN`. It makes the rounds turn: rounds are counted among the
    jobs waiting now, so without it the long batch, whose next job is always the oldest, would
    lead every round. A job without a knowledge base is a group (and a tenant) of its own.

    With `rounds`, only the jobs of the first so many KB rounds (enough for that many first
    places, since no job is placed before the earlier jobs of its own knowledge base)."""
    group = func.coalesce(Job.kb_id, Job.id)  # ids are unique hex: no clash with a kb id
    jobs = (
        select(
            Job.id,
            Job.priority,
            Job.created_at,
            group.label("grp"),
            func.coalesce(KnowledgeBase.tenant_id, group).label("tenant"),
        )
        .select_from(Job)
        .outerjoin(KnowledgeBase, KnowledgeBase.id == Job.kb_id)
        .where(where)
        .subquery("queue_jobs")
    )
    started = (
        select(Job.kb_id, KnowledgeBase.tenant_id, Job.started_at)
        .join(KnowledgeBase, KnowledgeBase.id == Job.kb_id)
        .where(Job.started_at >= now - SERVED_WITHIN)
        .cte("queue_started")
    )
    kb_served = (
        select(started.c.kb_id, func.max(started.c.started_at).label("at"))
        .group_by(started.c.kb_id)
        .subquery("queue_kb_served")
    )
    tenant_served = (
        select(started.c.tenant_id, func.max(started.c.started_at).label("at"))
        .group_by(started.c.tenant_id)
        .subquery("queue_tenant_served")
    )
    # One pass sorted by knowledge base, one by tenant, then the final order.
    in_kb = (jobs.c.priority, jobs.c.grp)
    by_kb = (
        select(
            jobs,
            func.row_number()
            .over(partition_by=in_kb, order_by=(jobs.c.created_at, jobs.c.id))
            .label("kb_round"),
            func.min(jobs.c.created_at).over(partition_by=in_kb).label("kb_head"),
        )
    ).subquery("queue_kb_rounds")
    in_tenant = (by_kb.c.priority, by_kb.c.tenant)
    tenant_round = func.row_number().over(
        partition_by=in_tenant,
        order_by=(
            by_kb.c.kb_round,
            kb_served.c.at.asc().nulls_first(),
            by_kb.c.kb_head,
            by_kb.c.grp,
        ),
    )
    # Served times join after the first pass, which they would only widen.
    return (
        select(
            by_kb.c.id,
            by_kb.c.priority,
            by_kb.c.tenant,
            func.min(by_kb.c.kb_head).over(partition_by=in_tenant).label("tenant_head"),
            tenant_served.c.at.label("tenant_served"),
            tenant_round.label("tenant_round"),
        )
        .outerjoin(kb_served, kb_served.c.kb_id == by_kb.c.grp)
        .outerjoin(tenant_served, tenant_served.c.tenant_id == by_kb.c.tenant)
        .where(by_kb.c.kb_round <= rounds if rounds is not None else true())
        .subquery("queue_fair")
    )


def _order(fair: Subquery) -> tuple[ColumnElement[object], ...]:
    return (
        fair.c.priority,
        fair.c.tenant_round,
        fair.c.tenant_served.asc().nulls_first(),
        fair.c.tenant_head,
        fair.c.tenant,
        fair.c.id,
    )


def candidates(
    session: Session,
    now: datetime,
    stale: datetime,
    *,
    job_id: str | None = None,
    kinds: Sequence[str] | None = None,
    limit: int = 8,
) -> list[str]:
    """The ids of the first `limit` runnable jobs in fair order (of `kinds`, or job `job_id`,
    if given). Read without a lock: the caller locks one and checks it is still runnable."""
    fair = _fair(
        and_(
            runnable(now, stale),
            Job.id == job_id if job_id is not None else true(),
            Job.kind.in_(list(kinds)) if kinds is not None else true(),
        ),
        now,
        rounds=limit,
    )
    return list(session.execute(select(fair.c.id).order_by(*_order(fair)).limit(limit)).scalars())


def lock_next(
    session: Session,
    now: datetime,
    stale: datetime,
    *,
    job_id: str | None = None,
    kinds: Sequence[str] | None = None,
) -> Job | None:
    """The first runnable job in fair order, row-locked in `session` (a write transaction).

    The fair order uses window functions (SQLite 3.25+ and PostgreSQL both have them), and
    PostgreSQL refuses FOR UPDATE beside them, so the candidates are read without a lock and
    each is then locked with its runnable condition checked again (another worker may have
    claimed it meanwhile); a row another worker holds is skipped. When every candidate is
    taken, the oldest runnable job by priority is locked instead, so a crowd of workers never
    idles while jobs wait.
    """
    for candidate in candidates(session, now, stale, job_id=job_id, kinds=kinds):
        job = session.execute(
            select(Job)
            .where(Job.id == candidate, runnable(now, stale))
            .with_for_update(skip_locked=True)
        ).scalar_one_or_none()
        if job is not None:
            return job
    return session.execute(
        select(Job)
        .where(
            runnable(now, stale),
            Job.id == job_id if job_id is not None else true(),
            Job.kind.in_(list(kinds)) if kinds is not None else true(),
        )
        .order_by(Job.priority, Job.created_at, Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).scalar_one_or_none()


def _positions(now: datetime, lease_s: float) -> Subquery:
    """Every waiting job's 1-based position in the fair order, those waiting out a retry delay
    included: position 1 is the job a worker claims next, and as long as no new job arrives the
    claims follow the positions."""
    fair = _fair(waiting(stale_before(now, lease_s)), now)
    position = func.row_number().over(order_by=_order(fair))
    return select(fair.c.id, position.label("position")).subquery("queue_positions")


def job_positions(
    session: Session, job_ids: Collection[str], now: datetime, lease_s: float
) -> dict[str, int]:
    """The 1-based queue position of each of `job_ids` that waits in the queue (one query)."""
    if not job_ids:
        return {}
    ranked = _positions(now, lease_s)
    rows = session.execute(
        select(ranked.c.id, ranked.c.position).where(ranked.c.id.in_(list(job_ids)))
    )
    return {job_id: int(position) for job_id, position in rows}


@dataclass(frozen=True)
class Throughput:
    """Recent ingestion speed, over every worker together."""

    seconds_per_doc: float  # time the queue spent busy, per document finished
    mean_duration_s: float  # one document's own time, claimed to finished
    documents: int


def throughput(session: Session, now: datetime, window: timedelta = RECENT) -> Throughput | None:
    """How fast ingest jobs finished in the last `window`; None when none did.

    Seconds per document is the length of the union of the finished jobs' [started, finished]
    intervals (clipped to the window) divided by their number: parallel workers overlap, so the
    queue moves faster than one document's own duration, and idle gaps between bursts of
    uploads do not count as slowness.
    """
    since = now - window
    rows = session.execute(
        select(Job.started_at, Job.finished_at)
        .where(
            Job.kind == JobKind.ingest,
            Job.status.in_([JobStatus.succeeded, JobStatus.failed]),
            Job.finished_at >= since,
            Job.started_at.is_not(None),
        )
        .order_by(Job.finished_at.desc())
        .limit(_RECENT_JOBS)
    ).all()
    spans = [(max(as_utc(start), since), as_utc(end)) for start, end in rows if start and end]
    if not spans:
        return None
    busy = 0.0
    reach: datetime | None = None  # end of the busy stretch so far
    for start, end in sorted(spans):
        if reach is None or start > reach:
            busy += (end - start).total_seconds()
            reach = end
        elif end > reach:
            busy += (end - reach).total_seconds()
            reach = end
    durations = [max(0.0, (end - start).total_seconds()) for start, end in spans]
    return Throughput(
        seconds_per_doc=busy / len(spans),
        mean_duration_s=sum(durations) / len(durations),
        documents=len(spans),
    )


@dataclass(frozen=True)
class QueueState:
    """Where a queued or processing document's ingestion is."""

    job_id: str
    job_status: str
    queue_position: int | None  # queued: 1 runs next
    stage: str | None  # IngestStage while processing
    pages_done: int
    pages_total: int | None
    eta_s: float | None  # seconds until it is done; None until throughput is known


def _done_fraction(job: Job) -> float:
    """How much of a running job is done: its finished stages, plus the share of pages done
    while it reads them (parse, OCR); later stages report their pages already read."""
    if job.progress_total <= 0:
        return 0.0
    pages = 0.0
    if job.pages_total and job.stage in (IngestStage.parse, IngestStage.ocr):
        pages = min(1.0, job.pages_done / job.pages_total)
    return min(1.0, (job.progress_done + pages) / job.progress_total)


def eta_s(job: Job, position: int | None, speed: Throughput | None, now: datetime) -> float | None:
    """Seconds until the job's document is done.

    Queued: position × seconds per document (the queue ahead, and the job itself, move at the
    recent overall rate), and no sooner than one document after its retry delay ends.
    Running: the share of its expected duration not yet done, where the expected duration is
    the recent mean per document, or longer when the job's own progress so far extrapolates to
    longer (a large file).
    """
    if speed is None:
        return None
    if job.status == JobStatus.queued:
        if position is None:
            return None
        delay = (as_utc(job.run_after) - now).total_seconds() if job.run_after else 0.0
        per_doc = speed.seconds_per_doc
        return max(position * per_doc, delay + per_doc)
    done = _done_fraction(job)
    expected = speed.mean_duration_s
    if job.started_at is not None and done > 0:
        elapsed = (now - as_utc(job.started_at)).total_seconds()
        expected = max(expected, elapsed / done)
    return max(0.0, expected * (1.0 - done))


def document_progress(
    session: Session, document_ids: Iterable[str], now: datetime, lease_s: float
) -> dict[str, QueueState]:
    """The queue state of each document that has a queued or running ingest job: one query
    for the jobs and their positions, one for the throughput, however many documents."""
    ids = list(dict.fromkeys(document_ids))
    if not ids:
        return {}
    ranked = _positions(now, lease_s)
    rows = session.execute(
        select(Job, ranked.c.position)
        .outerjoin(ranked, ranked.c.id == Job.id)
        .where(
            Job.document_id.in_(ids),
            Job.kind == JobKind.ingest,
            Job.status.in_([JobStatus.queued, JobStatus.running]),
        )
        .order_by(Job.created_at)
    ).all()
    speed = throughput(session, now) if rows else None
    out: dict[str, QueueState] = {}
    for job, position in rows:  # a newer job of the same document wins
        assert job.document_id is not None
        position = int(position) if position is not None else None
        out[job.document_id] = QueueState(
            job_id=job.id,
            job_status=job.status,
            queue_position=position if job.status == JobStatus.queued else None,
            stage=job.stage if job.status == JobStatus.running else None,
            pages_done=job.pages_done or 0,
            pages_total=job.pages_total,
            eta_s=eta_s(job, position, speed, now),
        )
    return out
