"""parse -> chunk -> embed -> store, for one queued document.

The chunks, the document's status and its job's completion are committed in one transaction, so
a document is searchable all at once or not at all; replaying a document after a crash starts
again from its stored file. A document is prepared for the knowledge base's live index version;
if a re-index switches it meanwhile, the commit refuses (`VersionChanged`) and the document is
prepared again. Text already embedded with the same model is not embedded again. A new version
of a document replaces the current one in the same commit (rag/kb/knowledge.py `take_over`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.attachments import ChildDocuments
from ingest.chunking import Chunk as TextChunk
from ingest.chunking import ChunkingConfig, chunk_document
from ingest.parsers.base import ParsedDocument, ParseLimits
from ingest.parsers.notices import finish
from ingest.sandbox import parse_isolated
from rag.core import metrics, tracing
from rag.core.config import IngestSettings
from rag.core.errors import IngestionError
from rag.index.store import IndexStore
from rag.kb import knowledge, quarantine
from rag.ml.embedding import Embedder
from rag.ml.tokens import TokenCounter
from rag.store import sequence
from rag.store.db import Database
from rag.store.models import Chunk, Document, DocumentStatus, IndexVersion, KnowledgeBase

log = logging.getLogger(__name__)


class VersionChanged(Exception):
    """The live index version changed while a document was being prepared: prepare again.

    A document is chunked and embedded for the live version (its chunk settings, its model), so
    the commit refuses after a switch: chunks of a retired version or model are never committed.
    """


@dataclass(frozen=True)
class Outcome:
    document_id: str
    status: str
    chunks: int = 0
    pages: int = 0
    error: str | None = None
    # Older versions of its key were superseded in the same commit (their files may be pruned).
    replaced: bool = False


@contextmanager
def _stage(name: str, attributes: tracing.Attributes) -> Iterator[None]:
    """Time a stage (rag_ingest_stage_duration_seconds) and trace it (ingest.<stage>)."""
    with tracing.span(f"ingest.{name}", attributes):
        started = time.perf_counter()
        yield
        metrics.INGEST_STAGE_SECONDS.labels(stage=name).observe(time.perf_counter() - started)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


STAGES = 4  # parse, chunk, embed, store: the unit of an ingest job's progress


@dataclass
class Prepared:
    """A document parsed and chunked, waiting for its vectors."""

    doc: Document
    kb: KnowledgeBase
    parsed: ParsedDocument
    chunks: list[TextChunk]
    # The index version the chunks were made for, and its embedding model.
    version: int = 0
    model: str = ""

    def __post_init__(self) -> None:
        self.version = self.version or self.kb.live_version
        self.model = self.model or self.kb.embedding_model


@dataclass
class Stored:
    """One document of a group to store, and how its job completes."""

    item: Prepared
    vectors: np.ndarray
    job_done: Callable[..., None]


def _ready(item: Prepared) -> Outcome:
    return Outcome(item.doc.id, DocumentStatus.ready, len(item.chunks), item.parsed.pages)


def add_chunks(
    session: Session,
    kb_id: str,
    doc_id: str,
    version: int,
    model: str,
    chunks: Sequence[TextChunk],
    vectors: np.ndarray,
) -> None:
    """Insert a document's chunks of one index version, with commit-ordered sequence numbers,
    in the caller's transaction (ingestion and re-indexing both store chunks this way)."""
    seqs = sequence.allocate(session, len(chunks))
    session.add_all(
        Chunk(
            kb_id=kb_id,
            document_id=doc_id,
            version=version,
            ordinal=c.ordinal,
            text=c.text,
            text_sha256=text_hash(c.embed_text),
            page_start=c.page_start,
            page_end=c.page_end,
            char_start=c.char_start,
            char_end=c.char_end,
            heading_path=list(c.heading_path),
            page_marks=[list(mark) for mark in c.page_marks],
            token_count=c.token_count,
            embedding=vectors[i].astype("<f4").tobytes(),
            embedding_model=model,
            seq=seq,
        )
        for i, (c, seq) in enumerate(zip(chunks, seqs, strict=True))
    )


def _finish(
    session: Session,
    outcome: Outcome,
    payload: tuple[Prepared, np.ndarray] | None,
    job_done: Callable[..., None],
) -> Outcome:
    """Settle a document in the caller's transaction; the outcome its job completed with."""
    if payload is not None:
        # Shared lock on the KB row, taken before the document's (the switch takes the KB
        # row exclusively, then updates documents): the version stays live until commit.
        live = session.execute(
            select(KnowledgeBase.live_version)
            .where(KnowledgeBase.id == payload[0].kb.id)
            .with_for_update(read=True)
        ).scalar_one_or_none()
        if live is not None and live != payload[0].version:
            raise VersionChanged(
                f"prepared for index version {payload[0].version}, but {live} is live"
            )
    doc = knowledge.lock_for_commit(session, outcome.document_id)
    if doc is None:  # deleted while we worked: keep nothing
        outcome = Outcome(outcome.document_id, "deleted")
    elif doc.status == DocumentStatus.ready:  # another worker finished it first
        outcome = Outcome(doc.id, doc.status, doc.chunk_count, doc.pages or 0)
    elif not knowledge.in_service(session, doc):  # a newer version went live first
        if doc.status != DocumentStatus.superseded:
            knowledge.supersede(session, doc)
        outcome = Outcome(doc.id, DocumentStatus.superseded)
    else:
        doc.status = outcome.status
        doc.error = outcome.error
        if payload is not None:
            item, vectors = payload
            kb, parsed, chunks = item.kb, item.parsed, item.chunks
            # A previous attempt cannot have committed chunks (they commit with status=ready),
            # but be strict: this document's chunk set is exactly what we insert now.
            add_chunks(session, kb.id, doc.id, item.version, item.model, chunks, vectors)
            # The version it replaces leaves the indexes in this same commit. Its chunks go
            # after ours are in: SQLite gives a new row the highest id + 1, which must not be
            # the id of a chunk deleted a moment before.
            session.flush()
            if knowledge.take_over(session, doc):
                outcome = dataclasses.replace(outcome, replaced=True)
            doc.pages = parsed.pages
            doc.chunk_count = len(chunks)
            doc.warnings = parsed.warnings[:50]
    job_done(session, outcome)
    return outcome


class Pipeline:
    """The stages above over one database, index store and data folder. `tokens` is called
    when a document is first chunked (the tokenizer loads then)."""

    def __init__(
        self,
        db: Database,
        indexes: IndexStore,
        *,
        data_dir: Path,
        ingest: IngestSettings,
        tokens: Callable[[], TokenCounter],
        embedder_for: Callable[[str], Embedder],
        children: ChildDocuments | None = None,
    ) -> None:
        self.db = db
        self.indexes = indexes
        self.data_dir = data_dir
        self.ingest = ingest
        self.tokens = tokens
        self.embedder_for = embedder_for
        self.children = children  # queues a mail's attachments (None: they are dropped)

    def parse_document(
        self, doc: Document, on_ocr: Callable[[int, int], None] | None = None
    ) -> ParsedDocument:
        cfg = self.ingest
        limits = ParseLimits.from_settings(cfg)
        path = self.data_dir / doc.storage_path
        if not path.is_file() and not quarantine.restore(
            self.data_dir, doc.storage_path, f"document {doc.id} is being ingested"
        ):
            raise IngestionError("the uploaded file is missing from the data directory")
        return parse_isolated(
            path,
            doc.filename,
            limits,
            timeout_s=cfg.parse_timeout_s,
            memory_mb=cfg.parse_memory_mb,
            on_progress=on_ocr,
        )

    def chunk_parsed(
        self, parsed: ParsedDocument, chunk_tokens: int, overlap_tokens: int
    ) -> list[TextChunk]:
        _, chunks = chunk_document(
            parsed, ChunkingConfig(chunk_tokens, overlap_tokens), self.tokens().count
        )
        return chunks

    def embed_chunks(self, chunks: list[TextChunk], model: str) -> np.ndarray:
        """Vectors of `model` for `chunks`, reusing stored vectors of identical text."""
        hashes = [text_hash(c.embed_text) for c in chunks]
        known: dict[str, bytes] = {}
        with self.db.read() as session:
            for start in range(0, len(hashes), 500):
                part = hashes[start : start + 500]
                rows = session.execute(
                    select(Chunk.text_sha256, Chunk.embedding).where(
                        Chunk.embedding_model == model, Chunk.text_sha256.in_(part)
                    )
                ).all()
                known.update({h: e for h, e in rows})
        todo = [i for i, h in enumerate(hashes) if h not in known]
        embedder = self.embedder_for(model)
        out = np.zeros((len(chunks), embedder.dim), dtype=np.float32)
        if todo:
            out[todo] = embedder.embed_passages([chunks[i].embed_text for i in todo])
        for i, h in enumerate(hashes):
            if h in known:
                out[i] = np.frombuffer(known[h], dtype=np.float32)
        metrics.EMBEDDINGS_REUSED.inc(len(chunks) - len(todo))
        return out

    def begin(
        self,
        doc_id: str,
        job_done: Callable[..., None],
        on_begin: Callable[[Session], None] | None = None,
    ) -> tuple[Document, KnowledgeBase] | None:
        """Mark the document processing; None (job completed) when it was deleted meanwhile.
        `on_begin(session)` runs in the same transaction (the worker records the stage there)."""
        with self.db.write() as session:
            doc = session.get(Document, doc_id)
            kb = session.get(KnowledgeBase, doc.kb_id) if doc is not None else None
            if doc is None or kb is None:
                job_done(session, Outcome(doc_id, "deleted"))
                return None
            if doc.status == DocumentStatus.superseded:  # a newer version went live first
                job_done(session, Outcome(doc_id, DocumentStatus.superseded))
                return None
            doc.status = DocumentStatus.processing
            doc.error = None
            if on_begin is not None:
                on_begin(session)
            return doc, kb

    def prepare(
        self,
        doc: Document,
        kb: KnowledgeBase,
        on_stage: Callable[[int], None],
        on_pages: Callable[[int], None] = lambda pages: None,
        on_ocr: Callable[[int, int], None] | None = None,
    ) -> Prepared:
        """Parse (in a limited child process) and chunk for the live index version; raises
        IngestionError with a reason. `on_pages(n)` learns the page count before `on_stage(1)`;
        `on_ocr(done, total)` hears of each page OCR read while parsing."""
        with self.db.read() as session:
            version = session.execute(
                select(IndexVersion).where(
                    IndexVersion.kb_id == kb.id, IndexVersion.number == kb.live_version
                )
            ).scalar_one()
        where: tracing.Attributes = {"document_id": doc.id, "kb_id": kb.id}
        with _stage("parse", where):
            parsed = self.parse_document(doc, on_ocr)
        # Attachments (of a mail) become child documents, queued now (ingest/attachments.py).
        if parsed.attachments and self.children is not None:
            notes = self.children.queue(doc, parsed.attachments)
            parsed.warnings = finish([*parsed.warnings, *notes])
        parsed.attachments = []  # their bytes are not kept while the mail waits for vectors
        on_pages(parsed.pages)
        on_stage(1)
        with _stage("chunk", where):
            chunks = self.chunk_parsed(parsed, version.chunk_tokens, version.overlap_tokens)
        if not chunks:
            raise IngestionError("the document contains no text to index")
        on_stage(2)
        return Prepared(doc, kb, parsed, chunks, version.number, version.embedding_model)

    def embed_prepared(self, items: list[Prepared]) -> list[np.ndarray]:
        """One batched embedding call per model for the chunks of several documents."""
        out: list[np.ndarray | None] = [None] * len(items)
        chunk_count = sum(len(item.chunks) for item in items)
        with _stage("embed", {"documents": len(items), "chunks": chunk_count}):
            for model in dict.fromkeys(item.model for item in items):
                picked = [i for i, item in enumerate(items) if item.model == model]
                vectors = self.embed_chunks([c for i in picked for c in items[i].chunks], model)
                start = 0
                for i in picked:
                    out[i] = vectors[start : start + len(items[i].chunks)]
                    start += len(items[i].chunks)
        return [v for v in out if v is not None]

    def store(self, item: Prepared, vectors: np.ndarray, job_done: Callable[..., None]) -> Outcome:
        """Commit chunks, status and job completion together, then bring the index up to date."""
        where: tracing.Attributes = {"document_id": item.doc.id, "kb_id": item.kb.id}
        with _stage("store", where), self.db.write() as session:
            outcome = _finish(session, _ready(item), (item, vectors), job_done)
        with _stage("index", where):
            self.indexes.sync(item.kb.id)
        self._prune_versions(item, outcome)
        return outcome

    def store_group(
        self, group: Sequence[Stored], on_commit: Callable[[Session], None] | None = None
    ) -> list[Outcome | Exception]:
        """Store several documents in one transaction, then bring each index up to date once.

        Each document is all or nothing still: its chunks, status and job completion go in a
        savepoint, so one that fails (VersionChanged, deleted meanwhile, an error) is rolled back
        alone and its exception returned in its place while the others commit. Should the group's
        commit itself fail, each document is stored again on its own. `on_commit(session)` runs in
        the group's transaction (the worker writes pending progress there).
        """
        results: list[Outcome | Exception] = []
        chunks = sum(len(s.item.chunks) for s in group)
        where: tracing.Attributes = {"documents": len(group), "chunks": chunks}
        try:
            with _stage("store", where), self.db.write() as session:
                if on_commit is not None:
                    on_commit(session)
                for one in group:
                    try:
                        with session.begin_nested():
                            outcome = _finish(
                                session, _ready(one.item), (one.item, one.vectors), one.job_done
                            )
                    except Exception as exc:
                        results.append(exc)
                    else:
                        results.append(outcome)
        except Exception:
            if len(group) == 1:
                raise
            log.exception("storing %d documents together failed; storing each alone", len(group))
            return [self._store_alone(one) for one in group]
        with _stage("index", where):
            for kb_id in dict.fromkeys(s.item.kb.id for s in group):
                self.indexes.sync(kb_id)
        for one, result in zip(group, results, strict=True):
            if isinstance(result, Outcome):
                self._prune_versions(one.item, result)
        return results

    def _prune_versions(self, item: Prepared, outcome: Outcome) -> None:
        """After a new version went live: drop the files of versions beyond the number kept.
        The new version is committed whatever happens here, so a failure is only logged."""
        if not outcome.replaced or item.doc.doc_key is None:
            return
        try:
            knowledge.prune_versions(
                self.db,
                self.data_dir,
                item.kb.id,
                item.doc.doc_key,
                self.ingest.keep_document_versions,
            )
        except Exception:
            log.exception("document %s: pruning its old versions failed", item.doc.id)

    def _store_alone(self, one: Stored) -> Outcome | Exception:
        try:
            return self.store(one.item, one.vectors, one.job_done)
        except Exception as exc:
            return exc

    def fail(self, doc_id: str, error: str, job_done: Callable[..., None]) -> Outcome:
        with self.db.write() as session:
            return _finish(
                session, Outcome(doc_id, DocumentStatus.failed, error=error), None, job_done
            )

    def process_document(
        self,
        doc_id: str,
        job_done: Callable[..., None],
        on_stage: Callable[[int], None] = lambda done: None,
        on_begin: Callable[[Session], None] | None = None,
        on_pages: Callable[[int], None] = lambda pages: None,
        on_ocr: Callable[[int, int], None] | None = None,
    ) -> Outcome:
        """Ingest one document, start to end (the pipelined worker runs the same stages).

        `job_done(session, outcome)` completes the job in the same commit as the chunks.
        `on_stage(n)` runs after each of the first STAGES - 1 stages; it may raise JobCancelled,
        which leaves nothing of the document in the index (chunks commit only at the end).
        `on_begin`, `on_pages` and `on_ocr` are passed to `begin` and `prepare`.
        """
        for attempt in range(3):
            begun = self.begin(doc_id, job_done, on_begin)
            if begun is None:
                return Outcome(doc_id, "deleted")
            try:
                item = self.prepare(*begun, on_stage, on_pages, on_ocr)
                [vectors] = self.embed_prepared([item])
                on_stage(3)
            except IngestionError as exc:
                return self.fail(doc_id, str(exc), job_done)
            try:
                return self.store(item, vectors, job_done)
            except VersionChanged:
                if attempt == 2:
                    raise
                log.info("document %s: the live index version changed; preparing again", doc_id)
        raise AssertionError("unreachable")
