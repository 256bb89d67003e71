"""Draining, the checks against SQL and the replicas' indexes, and resource sampling."""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.harness.cluster import Node
from bench.harness.load import Upload

# A failed document whose reason contains one of these failed because of the machinery (a
# killed worker, a file another process could not see, the database), not because of its
# bytes: for the checks that is a lost document. Compared case-insensitively.
INFRASTRUCTURE_REASONS = (
    "worker stopped",  # "gave up after N attempts; the worker stopped while processing it..."
    "gave up after",
    "failed after",  # retries exhausted on an exception (database, I/O ...)
    "missing from the data directory",  # the stored file was not there for the worker
    "stored file is missing",  # the consistency doctor found it gone
    "cancelled",  # nobody cancels here
    "operationalerror",
    "interfaceerror",
    "databaseerror",
    "connection",
    "timed out",
    "timeout",
    "killed",
    "broken pipe",
    "memoryerror",
)


def is_infrastructure_reason(reason: str | None) -> bool:
    text = (reason or "").lower()
    return any(marker in text for marker in INFRASTRUCTURE_REASONS)


# --- draining and checking --------------------------------------------------------------------


def _scalar(conn: sa.Connection, sql: str, **params: Any) -> int:
    return int(conn.execute(sa.text(sql), params).scalar_one())


def pending(engine: sa.Engine, kb_id: str | None = None) -> dict[str, int]:
    """Documents not yet ready or failed, and jobs not yet finished (queued, running, or any
    other state short of succeeded, failed, cancelled); all knowledge bases unless one is
    named."""
    kb = "" if kb_id is None else " AND kb_id = :kb"
    with engine.connect() as conn:
        return {
            "documents": _scalar(
                conn,
                f"SELECT count(*) FROM documents WHERE status NOT IN ('ready', 'failed'){kb}",
                kb=kb_id,
            ),
            "jobs": _scalar(
                conn,
                "SELECT count(*) FROM jobs "
                f"WHERE status NOT IN ('succeeded', 'failed', 'cancelled'){kb}",
                kb=kb_id,
            ),
        }


def drain(database_url: str, kb_id: str, timeout_s: float = 300) -> tuple[dict[str, int], float]:
    """Wait until nothing is queued or in progress; returns what is left and the time waited."""
    engine = sa.create_engine(database_url, pool_size=1)
    started = time.monotonic()
    try:
        while True:
            left = pending(engine, kb_id)
            if not any(left.values()) or time.monotonic() - started > timeout_s:
                return left, time.monotonic() - started
            time.sleep(0.5)
    finally:
        engine.dispose()


def check_documents(database_url: str, kb_id: str, uploads: list[Upload]) -> dict[str, Any]:
    """What SQL holds against what the clients were told. `problems` lists every violation:
    a lost document (accepted and then missing, not ready, or failed for a reason of the
    machinery; a broken file that did not fail for its bytes), a document ingested twice, a
    chunk count that disagrees, a deleted document still there."""
    problems: list[str] = []
    engine = sa.create_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT id, sha256, status, error, chunk_count FROM documents WHERE kb_id = :kb"
                ),
                {"kb": kb_id},
            ).all()
            live = _scalar(
                conn, "SELECT live_version FROM knowledge_bases WHERE id = :kb", kb=kb_id
            )
            per_doc: dict[str, int] = {
                str(doc): int(n)
                for doc, n in conn.execute(
                    sa.text(
                        "SELECT document_id, count(*) FROM chunks "
                        "WHERE kb_id = :kb AND version = :v GROUP BY document_id"
                    ),
                    {"kb": kb_id, "v": live},
                ).all()
            }
            twice = conn.execute(
                sa.text(
                    "SELECT document_id, version, ordinal, count(*) FROM chunks WHERE kb_id = :kb "
                    "GROUP BY document_id, version, ordinal HAVING count(*) > 1"
                ),
                {"kb": kb_id},
            ).all()
            same_bytes = conn.execute(
                sa.text(
                    "SELECT sha256, count(*) FROM documents WHERE kb_id = :kb "
                    "GROUP BY sha256 HAVING count(*) > 1"
                ),
                {"kb": kb_id},
            ).all()
            orphans = _scalar(
                conn,
                "SELECT count(*) FROM chunks c LEFT JOIN documents d ON d.id = c.document_id "
                "WHERE c.kb_id = :kb AND d.id IS NULL",
                kb=kb_id,
            )
    finally:
        engine.dispose()
    docs = {r.id: r for r in rows}
    by_sha = {r.sha256: r for r in rows}
    problems += [f"chunk ({d}, v{v}, #{o}) stored {n} times" for d, v, o, n in twice[:20]]
    problems += [f"{n} documents with sha256 {s[:12]}" for s, n in same_bytes[:20]]
    if orphans:
        problems.append(f"{orphans} chunks of documents that no longer exist")
    for r in rows:
        stored = per_doc.get(r.id, 0)
        if r.status not in ("ready", "failed"):
            problems.append(f"document {r.id} still {r.status}")
        elif stored != (r.chunk_count if r.status == "ready" else 0):
            problems.append(
                f"document {r.id} ({r.status}) has {stored} chunks, says {r.chunk_count}"
            )
    lost: list[str] = []
    accepted = [u for u in uploads if u.accepted]
    for u in accepted:
        if len(u.doc_ids) > 1:
            problems.append(f"{u.name} accepted as {len(u.doc_ids)} documents: {sorted(u.doc_ids)}")
        doc_id = next(iter(u.doc_ids))
        row = docs.get(doc_id)
        if u.deleted:
            if row is not None:
                problems.append(f"{u.name}: deleted document {doc_id} is back")
            continue
        if row is None:
            lost.append(f"{u.name}: document {doc_id} is gone")
        elif u.good and row.status != "ready":
            lost.append(f"{u.name}: {row.status} ({row.error})")
        elif not u.good and (row.status != "failed" or is_infrastructure_reason(row.error)):
            lost.append(f"{u.name} (broken): {row.status} ({row.error})")
    # Uploads the clients never heard back about may have landed: then they are held to the
    # same rules (the checks above cover their rows); count them.
    unanswered = [u for u in uploads if not u.accepted]
    landed = sum(1 for u in unanswered if u.sha256 in by_sha)
    statuses = Counter(r.status for r in rows)
    return {
        "uploads": len(uploads),
        "accepted": len(accepted),
        "accepted_broken": sum(1 for u in accepted if not u.good),
        "deleted": sum(1 for u in uploads if u.deleted),
        "unanswered_uploads": len(unanswered),
        "unanswered_that_landed": landed,
        "documents": dict(statuses),
        "ready_chunks": sum(per_doc.get(r.id, 0) for r in rows if r.status == "ready"),
        "lost": lost,
        "problems": problems,
    }


def check_indexes(apis: list[Node], kb_id: str, ready_chunks: int) -> list[str]:
    """Each replica's index of the knowledge base, after a sync, against SQL: the same ids
    (the check endpoint compares them), as many as the ready documents have chunks."""
    problems = []
    for node in apis:
        try:
            check = httpx.get(f"{node.url}/v1/knowledge-bases/{kb_id}/index", timeout=60).json()
        except (httpx.HTTPError, ValueError) as exc:
            problems.append(f"{node.name}: index check failed: {exc}")
            continue
        if not check.get("consistent") or check.get("vectors") != ready_chunks:
            problems.append(
                f"{node.name}: index has {check.get('vectors')} vectors, SQL {ready_chunks} ready "
                f"chunks: {check}"
            )
    return problems


# --- resources --------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sampler:
    """RSS and open file descriptors of one process, every `interval_s`."""

    def __init__(self, pid: Callable[[], int | None], interval_s: float = 1.0) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[float, int, int]] = []  # (time, RSS KiB, fds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            pid = self.pid()
            if pid is None:
                continue
            with contextlib.suppress(OSError, ValueError):
                self.samples.append((time.monotonic(), rss_kib(pid), fd_count(pid)))

    def figures(self) -> dict[str, float]:
        """Medians of the first and the last fifth of the samples (RSS in MiB, fds)."""
        if len(self.samples) < 5:
            raise RuntimeError(f"only {len(self.samples)} samples")
        fifth = max(1, len(self.samples) // 5)
        first, last = self.samples[:fifth], self.samples[-fifth:]
        rss_first = statistics.median(s[1] for s in first) / 1024
        rss_last = statistics.median(s[1] for s in last) / 1024
        return {
            "samples": len(self.samples),
            "rss_first_fifth_median_mib": round(rss_first, 1),
            "rss_last_fifth_median_mib": round(rss_last, 1),
            "rss_ratio": round(rss_last / rss_first, 3),
            "rss_max_mib": round(max(s[1] for s in self.samples) / 1024, 1),
            "fds_first": self.samples[0][2],
            "fds_last": self.samples[-1][2],
            "fds_first_fifth_median": statistics.median(s[2] for s in first),
            "fds_last_fifth_median": statistics.median(s[2] for s in last),
            "fds_max": max(s[2] for s in self.samples),
        }
