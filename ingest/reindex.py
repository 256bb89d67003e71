"""The re-index job: fill a building index version beside the live one, check it, switch it live.

Queries keep answering from the live version all along, the job restarts cleanly after a crash,
and a rollback is the same job aimed at a retired version (`Reindexer.run`). Where documents
are parsed, chunked and embedded is a `Build`: here (`Reindexer.build_locally`) or on a Ray
cluster (ingest.ray_engine.RayReindex); both commit through `store_chunks`, and everything after
the fill (checks, switch) is the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from ingest.chunking import Chunk as TextChunk
from ingest.pipeline import Pipeline, add_chunks
from rag.core.errors import IngestionError, NotFound
from rag.index.backend import DenseIndex
from rag.index.lexical import LexicalIndex
from rag.index.store import IndexStore
from rag.kb import job_control
from rag.kb.versions import (
    ROLLBACK,
    VERSION,
    Versions,
    activate,
    end,
    get_version,
    lock_kb,
    missing_documents,
    ready_documents,
)
from rag.ml.embedding import Embedder
from rag.store.db import Database
from rag.store.models import Chunk, Document, DocumentStatus, IndexVersion, Job, VersionStatus

log = logging.getLogger(__name__)
SAMPLE = 10  # chunks queried with the start of their own text
TOP_K = 10
MIN_HIT_RATE = 0.8
QUERY_CHARS = 200

Progress = Callable[[int, int], None]
# Gives documents (by id) their chunks in a building version, committing each through
# `store_chunks`; yields (document id, failure reason or None) as each one is done.
Build = Callable[["Reindexer", IndexVersion, list[str]], Iterator[tuple[str, str | None]]]


@dataclass
class Outcome:
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def failure(version: IndexVersion, filename: str, reason: str) -> str:
    """The failure a `Build` reports for a document whose file fails now."""
    log.warning("re-index %s v%d: %s: %s", version.kb_id, version.number, filename, reason)
    return f"{filename}: {reason}"


def _sample(session: Session, kb_id: str, number: int) -> list[tuple[str, str]]:
    """Up to SAMPLE chunks of distinct text, spread evenly over the version."""
    total = session.execute(
        select(func.count()).where(Chunk.kb_id == kb_id, Chunk.version == number)
    ).scalar_one()
    if not total:
        return []
    step = max(1, total // (SAMPLE * 3))
    rows = session.execute(
        select(Chunk.text, Chunk.text_sha256)
        .where(Chunk.kb_id == kb_id, Chunk.version == number)
        .order_by(Chunk.id)
        .offset(step // 2)
        .limit(SAMPLE * 3 * step)
    ).all()
    picked: dict[str, str] = {}
    for text, sha in rows[::step]:
        if text.strip() and sha not in picked:
            picked[sha] = text
    chosen = list(picked.items())
    stride = max(1, len(chosen) // SAMPLE)
    return [(text, sha) for sha, text in chosen[::stride][:SAMPLE]]


class Reindexer:
    """Builds, checks and switches index versions over one database and index store."""

    def __init__(
        self,
        db: Database,
        indexes: IndexStore,
        pipeline: Pipeline,
        versions: Versions,
        *,
        embedder_for: Callable[[str], Embedder],
    ) -> None:
        self.db = db
        self.indexes = indexes
        self.pipeline = pipeline
        self.versions = versions
        self.embedder_for = embedder_for

    def build_locally(
        self, version: IndexVersion, doc_ids: list[str]
    ) -> Iterator[tuple[str, str | None]]:
        """The default `Build`: parse, chunk and embed in this process, one document at a time."""
        for doc_id in doc_ids:
            yield doc_id, self._document(version, doc_id)

    def run(self, job: Job, progress: Progress, build: Build | None = None) -> Outcome:
        """Run a reindex job; `progress(done, total)` raises JobCancelled when asked to stop.
        `build` fills the version (default: `build_locally`).

            loop: ready documents lacking chunks in the version ─ parse the stored file, chunk
                  with the version's settings, embed with its model ─ commit per document
                  (progress, cancel)
            build the version's FAISS + BM25 indexes from SQL, snapshot them
            checks: every ready document has chunks; index counts equal SQL; sample queries
                  find their own chunks
            switch, in one transaction holding the KB row: no ready document may lack chunks
                  (one uploaded meanwhile sends us round the loop again), then live_version
                  moves

        Queries keep answering from the live version all along. The job restarts cleanly after
        a crash: documents already committed to the version are skipped, and a version that
        went live just before the crash is recognised as done. A rollback is the same job aimed
        at a retired version: it only has to catch up with documents added since it was
        retired. After a switch, retired versions beyond RAG_INDEX__KEEP_VERSIONS are pruned
        (rag/kb/versions.py).
        """
        assert job.kb_id is not None
        payload = job.payload or {}
        number, rollback = int(payload[VERSION]), bool(payload.get(ROLLBACK))
        try:
            return self._run(
                job.kb_id, number, rollback, progress, build or Reindexer.build_locally
            )
        except job_control.JobCancelled:
            self._give_up(job.kb_id, number, rollback, VersionStatus.cancelled, "cancelled")
            raise
        except NotFound:
            return Outcome(True, {"version": number, "skipped": "knowledge base deleted"})

    def _run(
        self, kb_id: str, number: int, rollback: bool, progress: Progress, build: Build
    ) -> Outcome:
        with self.db.read() as session:
            version = get_version(session, kb_id, number)
        if version.status == VersionStatus.live:  # switched just before a crash
            return Outcome(True, {"version": number, "status": "live"})
        if version.status != VersionStatus.building:
            return Outcome(False, {"version": number}, f"version {number} is {version.status}")
        if self.embedder_for(version.embedding_model).dim != version.embedding_dim:
            reason = f"{version.embedding_model} no longer makes {version.embedding_dim}-d vectors"
            self._give_up(kb_id, number, rollback, VersionStatus.failed, reason)
            return Outcome(False, {"version": number}, reason)
        failures: dict[str, str] = {}
        rounds = 0
        while True:
            rounds += 1
            self._fill(kb_id, version, failures, progress, build)
            if failures:
                first = next(iter(failures.values()))
                reason = f"{len(failures)} document(s) could not be re-indexed; first: {first}"
                self._give_up(kb_id, number, rollback, VersionStatus.failed, reason)
                return Outcome(False, {"version": number, "failures": failures}, reason)
            dense, lexical = self.indexes.build_version(kb_id, number)
            checks = self.check(kb_id, version, dense, lexical)
            if not checks["ok"]:
                reason = f"checks failed: {checks['reason']}"
                self._give_up(kb_id, number, rollback, VersionStatus.failed, reason, checks)
                return Outcome(False, {"version": number, "checks": checks}, reason)
            previous = self._switch(kb_id, number, checks)
            if previous is None:
                continue  # a document became ready meanwhile: give it to this version first
            self.indexes.adopt(kb_id, number, dense, lexical)
            log.info(
                "knowledge base %s: index version %d is live (was %d)", kb_id, number, previous
            )
            return Outcome(
                True,
                {
                    "version": number,
                    "previous": previous,
                    "rounds": rounds,
                    "checks": checks,
                    "pruned": self._prune_after_switch(kb_id),
                },
            )

    def _prune_after_switch(self, kb_id: str) -> list[int]:
        """Prune retired versions beyond the configured number; the switch is done whatever
        happens here, so a failure is logged (`rag reindex prune` can finish it), not raised."""
        try:
            return self.versions.prune(kb_id)
        except Exception:
            log.exception("knowledge base %s: pruning old index versions failed", kb_id)
            return []

    def _fill(
        self,
        kb_id: str,
        version: IndexVersion,
        failures: dict[str, str],
        progress: Progress,
        build: Build,
    ) -> None:
        """Give every ready document its chunks in `version`, committing one document at a time,
        until none lacks them (documents that become ready meanwhile are taken too)."""
        while True:
            with self.db.read() as session:
                missing = missing_documents(session, kb_id, version.number)
                total = ready_documents(session, kb_id)
            todo = [d for d in missing if d not in failures]
            done = max(0, total - len(todo) - len(failures))
            progress(done, total)
            if not todo:
                return
            for doc_id, error in build(self, version, todo):
                if error is not None:
                    failures[doc_id] = error
                done += 1
                progress(done, max(total, done))

    def _document(self, version: IndexVersion, doc_id: str) -> str | None:
        """Chunk and embed one document for `version`; the reason when its file fails now."""
        with self.db.read() as session:
            doc = session.get(Document, doc_id)
        if doc is None or doc.status != DocumentStatus.ready:
            return None  # deleted meanwhile
        try:
            parsed = self.pipeline.parse_document(doc)
            chunks = self.pipeline.chunk_parsed(
                parsed, version.chunk_tokens, version.overlap_tokens
            )
            if not chunks:
                raise IngestionError("the document contains no text to index")
            vectors = self.pipeline.embed_chunks(chunks, version.embedding_model)
        except IngestionError as exc:
            return failure(version, doc.filename, str(exc))
        self.store_chunks(version, doc_id, chunks, vectors)
        return None

    def store_chunks(
        self,
        version: IndexVersion,
        doc_id: str,
        chunks: Sequence[TextChunk],
        vectors: np.ndarray,
    ) -> None:
        """Commit one document's chunks to a building version, unless it was deleted, the
        version stopped building, or the chunks are there already."""
        with self.db.write() as session:
            # The document's lock orders us against its deletion and against a second worker
            # that took the job over: its chunks in this version are inserted exactly once.
            fresh = session.get(Document, doc_id, with_for_update=True)
            if fresh is None or fresh.status != DocumentStatus.ready:
                return
            state = session.execute(
                select(IndexVersion.status).where(IndexVersion.id == version.id)
            ).scalar_one_or_none()
            if state != VersionStatus.building:
                return
            already = session.execute(
                select(exists().where(Chunk.document_id == doc_id, Chunk.version == version.number))
            ).scalar_one()
            if already:
                return
            add_chunks(
                session,
                version.kb_id,
                doc_id,
                version.number,
                version.embedding_model,
                chunks,
                vectors,
            )
            if version.job_id:
                # Progress was made: a later crash is not this job's fault, so restarts after
                # SIGKILL do not use up the attempts meant for jobs that kill their worker.
                session.execute(update(Job).where(Job.id == version.job_id).values(attempts=1))

    def check(
        self, kb_id: str, version: IndexVersion, dense: DenseIndex, lexical: LexicalIndex
    ) -> dict[str, Any]:
        """The checks a version must pass before it goes live; `ok` and a `reason` if not."""
        number = version.number
        compared = self.indexes.compare(kb_id, number, dense, lexical)
        with self.db.read() as session:
            ready = ready_documents(session, kb_id)
            missing = missing_documents(session, kb_id, number)
            sample = _sample(session, kb_id, number)
        embedder = self.embedder_for(version.embedding_model)
        dense_found = lexical_found = 0
        for text, sha in sample:
            query = text[:QUERY_CHARS]
            dense_hits = [i for i, _ in dense.search(embedder.embed_query(query), TOP_K)]
            lexical_hits = [i for i, _ in lexical.search(lexical.query_ids(query), TOP_K)]
            dense_found += sha in self._hashes(dense_hits)
            lexical_found += sha in self._hashes(lexical_hits)
        n = len(sample)
        report: dict[str, Any] = {
            "ready_documents": ready,
            "documents_missing": len(missing),
            "sql_chunks": compared["sql_chunks"],
            "vectors": compared["vectors"],
            "lexical_docs": compared["lexical_docs"],
            "index_consistent": compared["consistent"],
            "dim": dense.dim,
            "sample": n,
            "dense_hit_rate": dense_found / n if n else 1.0,
            "lexical_hit_rate": lexical_found / n if n else 1.0,
        }
        # Documents missing here became ready after the fill; the switch gives them to the
        # version first (it re-checks under the KB lock), so they are reported, not a failure.
        reasons = []
        if not compared["consistent"]:
            reasons.append(
                f"the index holds {compared['vectors']} vectors for {compared['sql_chunks']} chunks"
            )
        if dense.dim != version.embedding_dim:
            reasons.append(f"the index is {dense.dim}-d, the version {version.embedding_dim}-d")
        for kind in ("dense", "lexical"):
            rate = report[f"{kind}_hit_rate"]
            if rate < MIN_HIT_RATE:
                reasons.append(
                    f"{kind} search found only {rate:.0%} of sampled chunks from their own text "
                    f"(need {MIN_HIT_RATE:.0%})"
                )
        report["ok"] = not reasons
        report["reason"] = "; ".join(reasons) or None
        return report

    def _hashes(self, ids: list[int]) -> set[str]:
        """Text hashes of hit ids: a chunk whose text repeats elsewhere is found by its twin too."""
        if not ids:
            return set()
        with self.db.read() as session:
            return set(
                session.execute(select(Chunk.text_sha256).where(Chunk.id.in_(ids))).scalars()
            )

    def _switch(self, kb_id: str, number: int, checks: dict[str, Any]) -> int | None:
        """Make the version live; None when a ready document still lacks chunks in it."""
        with self.db.write() as session:
            kb = lock_kb(session, kb_id)
            if missing_documents(session, kb_id, number):
                return None
            version = get_version(session, kb_id, number)
            if version.status != VersionStatus.building:
                raise job_control.JobCancelled(f"version {number} is {version.status}")
            version.checks = checks
            return activate(session, kb, version, self.db.now())

    def _give_up(
        self,
        kb_id: str,
        number: int,
        rollback: bool,
        status: VersionStatus,
        reason: str,
        checks: dict[str, Any] | None = None,
    ) -> None:
        """End a build that will not go live; the live version is untouched."""
        try:
            with self.db.write() as session:
                version = get_version(session, kb_id, number)
                if version.status != VersionStatus.building:
                    return
                if checks is not None:
                    version.checks = checks
                end(session, version, rollback=rollback, status=status, error=reason)
        except NotFound:
            return
        if not rollback:
            self.indexes.drop_version(kb_id, number)
        log.warning("knowledge base %s: index version %d %s: %s", kb_id, number, status, reason)
