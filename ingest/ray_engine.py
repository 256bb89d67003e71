"""Parsing and embedding on a Ray cluster, for bulk ingestion (`ingest_documents`) and for
re-indexing (`RayReindex`); SQL stays the one store, written by the driver through the same
functions the local paths use.

    files --map_batches(parse+chunk, CPU tasks)--> chunk rows
          --map_batches(EmbedActor, actors; GPUs where the cluster has them)--> vectors
          --> driver: one transaction per document, as soon as all its rows are in

If the driver dies, the jobs' leases expire and ordinary workers finish the work locally.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select, update

from ingest import pipeline
from ingest.chunking import Chunk as TextChunk
from ingest.jobs import Worker
from ingest.parsers.base import ParsedDocument
from ingest.pipeline import Outcome, Prepared
from ingest.reindex import Reindexer, failure
from rag.core.config import Settings
from rag.store.db import Database
from rag.store.models import (
    Document,
    DocumentStatus,
    IndexVersion,
    Job,
    JobStatus,
    KnowledgeBase,
)

if TYPE_CHECKING:
    from rag.ml.tokens import TokenCounter

log = logging.getLogger(__name__)
_IDS_PER_QUERY = 500  # stay far below the bound-parameter limits of SQLite and PostgreSQL


# -- Ray side ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _token_counter(path: str | None) -> TokenCounter:
    """One tokenizer per Ray worker process, not one per document."""
    from rag.ml.tokens import load_token_counter

    return load_token_counter(Path(path) if path else None)


def _parse_and_chunk(batch: dict[str, Any], settings_json: str) -> dict[str, list[Any]]:
    """Ray task: one row per chunk, or one row with `error` for a document that failed. Every
    row carries its document's row count, so the driver knows when a document is complete."""
    from ingest.chunking import ChunkingConfig, chunk_document
    from ingest.parsers.base import ParseLimits
    from ingest.sandbox import parse_isolated
    from rag.core.errors import IngestionError

    settings = Settings.model_validate_json(settings_json)
    cfg = settings.ingest
    path_setting = settings.tokenizer.path
    tokens = _token_counter(str(path_setting) if path_setting else None)
    out: dict[str, list[Any]] = defaultdict(list)
    for doc_id, path, filename, chunk_tokens, overlap_tokens, model in zip(
        batch["doc_id"],
        batch["path"],
        batch["filename"],
        batch["chunk_tokens"],
        batch["overlap_tokens"],
        batch["model"],
        strict=True,
    ):
        rows: list[dict[str, Any]] = []
        try:
            if not Path(path).is_file():
                raise IngestionError("the uploaded file is missing from the data directory")
            parsed = parse_isolated(
                Path(path),
                str(filename),
                ParseLimits.from_settings(cfg),
                timeout_s=cfg.parse_timeout_s,
                memory_mb=cfg.parse_memory_mb,
            )
            _, chunks = chunk_document(
                parsed, ChunkingConfig(int(chunk_tokens), int(overlap_tokens)), tokens.count
            )
            if not chunks:
                raise IngestionError("the document contains no text to index")
            meta = json.dumps({"pages": parsed.pages, "warnings": parsed.warnings[:50]})
            rows = [
                {
                    "doc_id": doc_id,
                    "error": "",
                    "meta": meta,
                    "chunk": json.dumps(_chunk_dict(c), ensure_ascii=False),
                    "embed_text": c.embed_text,
                    "model": model,
                    "rows": len(chunks),
                }
                for c in chunks
            ]
        except IngestionError as exc:
            rows = [
                {
                    "doc_id": doc_id,
                    "error": str(exc),
                    "meta": "",
                    "chunk": "",
                    "embed_text": "",
                    "model": model,
                    "rows": 1,
                }
            ]
        for row in rows:
            for key, value in row.items():
                out[key].append(value)
    return dict(out)


def _chunk_dict(c: TextChunk) -> dict[str, Any]:
    return {
        "ordinal": c.ordinal,
        "text": c.text,
        "page_start": c.page_start,
        "page_end": c.page_end,
        "char_start": c.char_start,
        "char_end": c.char_end,
        "heading_path": list(c.heading_path),
        "token_count": c.token_count,
        "page_marks": [list(mark) for mark in c.page_marks],
    }


class EmbedActor:
    """Ray actor: embeds batches of chunk texts, each with its row's model, loading each model
    once (built as Services.embedder_for builds it, so vectors equal the local path's)."""

    def __init__(self, settings_json: str) -> None:
        import ray

        self.base = Settings.model_validate_json(settings_json).embedding
        if ray.get_gpu_ids():  # the actor was given a GPU: use it
            self.base = self.base.model_copy(update={"device": "cuda"})
        self.embedders: dict[str, Any] = {}

    def _embedder(self, model: str) -> Any:
        if model not in self.embedders:
            from rag.ml.embedding import load_embedder

            self.embedders[model] = load_embedder(self.base.model_copy(update={"model": model}))
        return self.embedders[model]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        texts = [str(t) for t in batch["embed_text"]]
        models = [str(m) for m in batch["model"]]
        out = [b""] * len(texts)
        for model in dict.fromkeys(m for m, t in zip(models, texts, strict=True) if t):
            todo = [
                i for i, (m, t) in enumerate(zip(models, texts, strict=True)) if t and m == model
            ]
            vectors = self._embedder(model).embed_passages([texts[i] for i in todo])
            for i, vector in zip(todo, vectors, strict=True):
                out[i] = np.asarray(vector, dtype="<f4").tobytes()
        batch["embedding"] = out
        return batch


# -- driver side ------------------------------------------------------------------------------


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at `address` (or start a local instance) unless already joined.
    Call it from the main thread: ray.init installs signal handlers."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            ignore_reinit_error=True,
        )


def _run_pipeline(
    settings: Settings,
    items: list[dict[str, Any]],
    *,
    address: str | None,
    num_cpus: int | None,
    embed_actors: int,
    batch_size: int,
) -> Iterator[dict[str, Any]]:
    """Parse, chunk and embed `items` (one per document) on Ray; rows stream back."""
    import ray

    connect(address, num_cpus)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    settings_json = _portable(settings).model_dump_json()
    ds: Any = ray.data.from_items(items)
    ds = ds.map_batches(
        _parse_and_chunk,
        fn_kwargs={"settings_json": settings_json},
        batch_size=1,
        batch_format="numpy",
    )
    ds = ds.map_batches(
        EmbedActor,
        fn_constructor_kwargs={"settings_json": settings_json},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=embed_actors),
        num_gpus=gpus,
        batch_format="numpy",
    )
    return iter(ds.iter_rows())


def _item(
    data_dir: Path, doc: Document, chunk_tokens: int, overlap_tokens: int, model: str
) -> dict[str, Any]:
    """One document's task. Every file is chunked with the settings of the index version it is
    meant for and embedded with that version's model: the live version's for an upload, the
    building version's for a re-index. Vectors of two models never meet in one version."""
    return {
        "doc_id": doc.id,
        "filename": doc.filename,
        "path": str((data_dir / doc.storage_path).resolve()),
        "chunk_tokens": chunk_tokens,
        "overlap_tokens": overlap_tokens,
        "model": _portable_model(model),
    }


def _portable_model(model: str) -> str:
    """An absolute path for a local model folder, so Ray workers in other directories (or
    hosts with the same mounts) find it; a hub name as it is."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


def _portable(settings: Settings) -> Settings:
    """Absolute paths for the configured model folder and the tokenizer file."""
    embedding = settings.embedding.model_copy(
        update={"model": _portable_model(settings.embedding.model)}
    )
    tokenizer = settings.tokenizer
    if tokenizer.path is not None:
        tokenizer = tokenizer.model_copy(update={"path": tokenizer.path.resolve()})
    return settings.model_copy(update={"embedding": embedding, "tokenizer": tokenizer})


def _by_document(
    rows: Iterable[dict[str, Any]], doc_ids: Sequence[str]
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Each document's rows as soon as all of them are in; at the end, the documents Ray
    returned nothing (or not everything) for, with no rows."""
    pending: dict[str, list[dict[str, Any]]] = defaultdict(list)
    complete: set[str] = set()
    for row in rows:
        doc_id = str(row["doc_id"])
        pending[doc_id].append(row)
        if len(pending[doc_id]) == int(row["rows"]):
            complete.add(doc_id)
            yield doc_id, pending.pop(doc_id)
    for doc_id in doc_ids:
        if doc_id not in complete:
            yield doc_id, []


def _documents(db: Database, ids: Sequence[str]) -> list[Document]:
    docs: list[Document] = []
    with db.read() as session:
        for start in range(0, len(ids), _IDS_PER_QUERY):
            part = list(ids[start : start + _IDS_PER_QUERY])
            docs.extend(session.execute(select(Document).where(Document.id.in_(part))).scalars())
    return docs


def _error(rows: list[dict[str, Any]]) -> str | None:
    if not rows:
        return "the Ray pipeline returned nothing"
    return str(rows[0]["error"]) or None


def _text_chunks(rows: list[dict[str, Any]]) -> list[TextChunk]:
    return [
        TextChunk(
            **{
                **d,
                "heading_path": tuple(d["heading_path"]),
                "page_marks": tuple((int(at), int(page)) for at, page in d["page_marks"]),
            }
        )
        for d in (json.loads(r["chunk"]) for r in _ordered(rows))
    ]


def _vectors(rows: list[dict[str, Any]]) -> np.ndarray:
    return np.stack([np.frombuffer(bytes(r["embedding"]), dtype="<f4") for r in _ordered(rows)])


def _ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: json.loads(r["chunk"])["ordinal"])


# -- re-indexing ------------------------------------------------------------------------------


class RayReindex:
    """A `reindex.Build` that parses, chunks and embeds on Ray; the driver commits each
    document through `Reindexer.store_chunks`, as the local build does. `settings` go to the
    Ray tasks (made portable), which load their own models.

    The ordinary reindex job (ingest/reindex.py) runs with this as its `Build`: only the fill
    differs, the checks and the switch are the same code. If the driver dies, the job's lease
    expires and an ordinary worker finishes the version locally.
    """

    def __init__(
        self,
        settings: Settings,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        embed_actors: int = 1,
        batch_size: int = 64,
    ) -> None:
        self.settings = settings
        self.address = address
        self.num_cpus = num_cpus
        self.embed_actors = embed_actors
        self.batch_size = batch_size

    def connect(self) -> None:
        connect(self.address, self.num_cpus)

    def __call__(
        self, reindexer: Reindexer, version: IndexVersion, doc_ids: list[str]
    ) -> Iterator[tuple[str, str | None]]:
        found = _documents(reindexer.db, doc_ids)
        docs = {d.id: d for d in found if d.status == DocumentStatus.ready}
        for doc_id in doc_ids:
            if doc_id not in docs:
                yield doc_id, None  # deleted meanwhile: nothing to do
        if not docs:
            return
        items = [
            _item(
                self.settings.data_dir,
                d,
                version.chunk_tokens,
                version.overlap_tokens,
                version.embedding_model,
            )
            for d in docs.values()
        ]
        rows = _run_pipeline(
            self.settings,
            items,
            address=self.address,
            num_cpus=self.num_cpus,
            embed_actors=self.embed_actors,
            batch_size=self.batch_size,
        )
        for doc_id, got in _by_document(rows, list(docs)):
            if (error := _error(got)) is not None:
                yield doc_id, failure(version, docs[doc_id].filename, error)
                continue
            reindexer.store_chunks(version, doc_id, _text_chunks(got), _vectors(got))
            yield doc_id, None


# -- bulk ingestion ---------------------------------------------------------------------------


def ingest_documents(
    worker: Worker,
    settings: Settings,
    doc_ids: list[str],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    embed_actors: int = 1,
    batch_size: int = 64,
) -> list[Outcome]:
    """Process already-registered documents (their jobs queued) on Ray; returns outcomes
    (status "requeued" for a document handed back to the ordinary workers).

    The driver claims the documents' jobs first and heartbeats while Ray works; if the driver
    dies, the leases expire and the ordinary workers finish the documents instead, so the Ray
    path can lose nothing that the local path would keep. A document whose live version changed
    while Ray worked is handed back to the queue (the local worker prepares it again for the
    new version, as it does for its own documents).
    """
    jobs = _claim(worker, doc_ids)
    if not jobs:
        return []
    stop = threading.Event()
    beat = threading.Thread(
        target=_heartbeat,
        args=(worker, list(jobs.values()), stop, settings.ingest.lease_s),
        daemon=True,
    )
    beat.start()
    try:
        targets = _live_versions(worker.db, list(jobs))
        items = [
            _item(
                settings.data_dir,
                doc,
                version.chunk_tokens,
                version.overlap_tokens,
                version.embedding_model,
            )
            for doc, version in targets.values()
        ]
        rows = _run_pipeline(
            settings,
            items,
            address=address,
            num_cpus=num_cpus,
            embed_actors=embed_actors,
            batch_size=batch_size,
        )
        numbers = {doc_id: version for doc_id, (_, version) in targets.items()}
        return list(_store_all(worker, jobs, numbers, rows))
    finally:
        stop.set()
        beat.join(5)


def _live_versions(db: Database, doc_ids: list[str]) -> dict[str, tuple[Document, IndexVersion]]:
    """Each document with its knowledge base's live index version, whose settings it gets."""
    out: dict[str, tuple[Document, IndexVersion]] = {}
    with db.read() as session:
        for start in range(0, len(doc_ids), _IDS_PER_QUERY):
            part = doc_ids[start : start + _IDS_PER_QUERY]
            rows = session.execute(
                select(Document, IndexVersion)
                .join(KnowledgeBase, KnowledgeBase.id == Document.kb_id)
                .join(
                    IndexVersion,
                    (IndexVersion.kb_id == KnowledgeBase.id)
                    & (IndexVersion.number == KnowledgeBase.live_version),
                )
                .where(Document.id.in_(part))
            ).all()
            out.update({doc.id: (doc, version) for doc, version in rows})
    return out


def _claim(worker: Worker, doc_ids: list[str]) -> dict[str, Job]:
    """Take the queued jobs of these documents for this driver (document id -> job)."""
    db = worker.db
    with db.write() as session:
        jobs = (
            session.query(Job)
            .filter(Job.document_id.in_(doc_ids), Job.status == JobStatus.queued)
            .all()
        )
        for job in jobs:
            job.status, job.worker_id = JobStatus.running, worker.worker_id
            job.heartbeat_at, job.started_at = db.now(), db.now()
            job.attempts += 1
        return {j.document_id: j for j in jobs if j.document_id}


def _heartbeat(worker: Worker, jobs: list[Job], stop: threading.Event, lease_s: float) -> None:
    ids = [j.id for j in jobs]
    db = worker.db
    while not stop.wait(max(0.2, lease_s / 3)):
        with db.write() as session:
            session.execute(
                update(Job)
                .where(Job.id.in_(ids), Job.worker_id == worker.worker_id)
                .values(heartbeat_at=db.now())
            )


def _store_all(
    worker: Worker,
    jobs: dict[str, Job],
    versions: dict[str, IndexVersion],
    rows: Iterable[dict[str, Any]],
) -> Iterator[Outcome]:
    for doc_id, got in _by_document(rows, list(jobs)):
        job = jobs[doc_id]
        done = lambda session, outcome, job=job: worker._complete(session, job, outcome)  # noqa: E731
        if (error := _error(got)) is not None:
            yield worker.pipeline.fail(doc_id, error, done)
            continue
        begun = worker.pipeline.begin(doc_id, done)
        if begun is None:
            yield Outcome(doc_id, "deleted")
            continue
        doc, kb = begun
        version = versions[doc_id]
        try:
            yield worker.pipeline.store(_prepared(doc, kb, version, got), _vectors(got), done)
        except pipeline.VersionChanged:
            # A re-index switched versions while Ray worked: these chunks are for the old one.
            log.info("document %s: the live index version changed; queued again", doc_id)
            worker.hand_back(job)
            yield Outcome(doc_id, "requeued")


def _prepared(
    doc: Document, kb: KnowledgeBase, version: IndexVersion, rows: list[dict[str, Any]]
) -> Prepared:
    meta = json.loads(rows[0]["meta"])
    parsed = ParsedDocument(
        blocks=[], pages=meta["pages"], media_type=doc.media_type, warnings=meta["warnings"]
    )
    return Prepared(doc, kb, parsed, _text_chunks(rows), version.number, version.embedding_model)
