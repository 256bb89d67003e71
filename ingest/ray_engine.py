"""Bulk ingestion on a Ray cluster: parsing and embedding fan out, SQL stays the one store.

    files --map_batches(parse+chunk, CPU tasks)--> chunk rows
          --map_batches(EmbedActor, actors; GPUs where the cluster has them)--> vectors
          --> driver: one transaction per document (same `store` step as the local worker)

The driver registers the documents and claims their jobs first, heartbeating while Ray works;
if the driver dies, the leases expire and the ordinary workers finish the documents instead,
so the Ray path can lose nothing that the local path would keep.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select, update

from ingest import pipeline
from ingest.chunking import Chunk as TextChunk
from ingest.jobs import Worker
from ingest.parsers.base import ParsedDocument
from ingest.pipeline import Outcome, Prepared
from rag.config import Settings
from rag.models import Document, IndexVersion, Job, JobStatus, KnowledgeBase
from rag.services import Services

log = logging.getLogger(__name__)


def _parse_and_chunk(batch: dict[str, Any], settings_json: str) -> dict[str, list[Any]]:
    """Ray task: one row per chunk, or one row with `error` for a document that failed."""
    from ingest.chunking import ChunkingConfig, chunk_document
    from ingest.parsers.base import ParseLimits
    from ingest.sandbox import parse_isolated
    from rag.errors import IngestionError
    from rag.tokens import load_token_counter

    settings = Settings.model_validate_json(settings_json)
    cfg = settings.ingest
    tokens = load_token_counter(settings.tokenizer.path)
    out: dict[str, list[Any]] = defaultdict(list)
    for doc_id, path, filename in zip(
        batch["doc_id"], batch["path"], batch["filename"], strict=True
    ):
        rows: list[dict[str, Any]] = []
        try:
            parsed = parse_isolated(
                Path(path),
                filename,
                ParseLimits(
                    max_pages=cfg.max_pages, max_decompressed_bytes=cfg.max_decompressed_bytes
                ),
                timeout_s=cfg.parse_timeout_s,
                memory_mb=cfg.parse_memory_mb,
            )
            _, chunks = chunk_document(
                parsed,
                ChunkingConfig(settings.chunking.chunk_tokens, settings.chunking.overlap_tokens),
                tokens.count,
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
                }
                for c in chunks
            ]
        except IngestionError as exc:
            rows = [
                {"doc_id": doc_id, "error": str(exc), "meta": "", "chunk": "", "embed_text": ""}
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
    }


class EmbedActor:
    """Ray actor: loads the embedding model once, embeds batches of chunk texts."""

    def __init__(self, settings_json: str) -> None:
        from ingest.embedding import load_embedder

        self.embedder = load_embedder(Settings.model_validate_json(settings_json).embedding)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        texts = [str(t) for t in batch["embed_text"]]
        todo = [i for i, t in enumerate(texts) if t]
        vectors = np.zeros((len(texts), self.embedder.dim), dtype=np.float32)
        if todo:
            vectors[todo] = self.embedder.embed_passages([texts[i] for i in todo])
        batch["embedding"] = [v.astype("<f4").tobytes() for v in vectors]
        return batch


def ingest_documents(
    svc: Services,
    doc_ids: list[str],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    embed_actors: int = 1,
    batch_size: int = 64,
) -> list[Outcome]:
    """Process already-registered documents (their jobs queued) on Ray; returns outcomes."""
    import ray

    worker = Worker(svc, worker_id=f"ray-driver:{threading.get_ident()}")
    jobs = _claim(svc, worker, doc_ids)
    if not jobs:
        return []
    stop = threading.Event()
    beat = threading.Thread(
        target=_heartbeat, args=(svc, worker, list(jobs.values()), stop), daemon=True
    )
    beat.start()
    try:
        if not ray.is_initialized():
            ray.init(
                address=address,
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                ignore_reinit_error=True,
            )
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        settings_json = _portable(svc.settings).model_dump_json()
        with svc.db.read() as session:
            items = [
                {
                    "doc_id": d.id,
                    "filename": d.filename,
                    "path": str((svc.settings.data_dir / d.storage_path).resolve()),
                }
                for d in session.query(Document).filter(Document.id.in_(list(jobs)))
            ]
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
        return list(_store_all(svc, worker, jobs, ds.iter_rows()))
    finally:
        stop.set()
        beat.join(5)


def _portable(settings: Settings) -> Settings:
    """Absolute paths, so Ray workers in other directories (or hosts with the same mounts) find
    the model folders and the tokenizer file."""
    embedding = settings.embedding
    if Path(embedding.model).expanduser().is_dir():
        embedding = embedding.model_copy(
            update={"model": str(Path(embedding.model).expanduser().resolve())}
        )
    tokenizer = settings.tokenizer
    if tokenizer.path is not None:
        tokenizer = tokenizer.model_copy(update={"path": tokenizer.path.resolve()})
    return settings.model_copy(update={"embedding": embedding, "tokenizer": tokenizer})


def _claim(svc: Services, worker: Worker, doc_ids: list[str]) -> dict[str, Job]:
    """Take the queued jobs of these documents for this driver (document id -> job)."""
    with svc.db.write() as session:
        jobs = (
            session.query(Job)
            .filter(Job.document_id.in_(doc_ids), Job.status == JobStatus.queued)
            .all()
        )
        for job in jobs:
            job.status, job.worker_id = JobStatus.running, worker.worker_id
            job.heartbeat_at, job.started_at = svc.db.now(), svc.db.now()
            job.attempts += 1
        return {j.document_id: j for j in jobs if j.document_id}


def _heartbeat(svc: Services, worker: Worker, jobs: list[Job], stop: threading.Event) -> None:
    ids = [j.id for j in jobs]
    while not stop.wait(max(0.2, svc.settings.ingest.lease_s / 3)):
        with svc.db.write() as session:
            session.execute(
                update(Job)
                .where(Job.id.in_(ids), Job.worker_id == worker.worker_id)
                .values(heartbeat_at=svc.db.now())
            )


def _store_all(
    svc: Services, worker: Worker, jobs: dict[str, Job], rows: Iterable[dict[str, Any]]
) -> Iterator[Outcome]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[str(row["doc_id"])].append(row)
    for doc_id, job in jobs.items():
        done = lambda session, outcome, job=job: worker._complete(session, job, outcome)  # noqa: E731
        got = grouped.get(doc_id, [])
        if not got or got[0]["error"]:
            reason = str(got[0]["error"]) if got else "the Ray pipeline returned nothing"
            yield pipeline.fail(svc, doc_id, reason, done)
            continue
        begun = pipeline.begin(svc, doc_id, done)
        if begun is None:
            yield Outcome(doc_id, "deleted")
            continue
        doc, kb = begun
        if (mismatch := _version_mismatch(svc, kb)) is not None:
            yield pipeline.fail(svc, doc_id, mismatch, done)
            continue
        yield pipeline.store(svc, _prepared(doc, kb, got), _vectors(got), done)


def _version_mismatch(svc: Services, kb: KnowledgeBase) -> str | None:
    """Ray workers chunk and embed with the configured settings; the live index version may
    have others (after a re-index), and its vectors must not be mixed with another model's."""
    with svc.db.read() as session:
        version = session.execute(
            select(IndexVersion).where(
                IndexVersion.kb_id == kb.id, IndexVersion.number == kb.live_version
            )
        ).scalar_one()
    chunking = svc.settings.chunking
    wanted = (version.embedding_model, version.chunk_tokens, version.overlap_tokens)
    if wanted != (svc.settings.embedding.model, chunking.chunk_tokens, chunking.overlap_tokens):
        return (
            f"the live index version {version.number} uses {version.embedding_model} with "
            f"{version.chunk_tokens}/{version.overlap_tokens} token chunks, not the configured "
            "settings the Ray engine used; ingest it with the local engine"
        )
    return None


def _prepared(doc: Document, kb: KnowledgeBase, rows: list[dict[str, Any]]) -> Prepared:
    meta = json.loads(rows[0]["meta"])
    chunks = sorted(
        (
            TextChunk(**{**d, "heading_path": tuple(d["heading_path"])})
            for d in (json.loads(r["chunk"]) for r in rows)
        ),
        key=lambda c: c.ordinal,
    )
    parsed = ParsedDocument(
        blocks=[], pages=meta["pages"], media_type=doc.media_type, warnings=meta["warnings"]
    )
    return Prepared(doc, kb, parsed, chunks)


def _vectors(rows: list[dict[str, Any]]) -> np.ndarray:
    ordered = sorted(rows, key=lambda r: json.loads(r["chunk"])["ordinal"])
    return np.stack([np.frombuffer(bytes(r["embedding"]), dtype="<f4") for r in ordered])
