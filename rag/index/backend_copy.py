"""Fill another backend's dense index of one index version from the vectors kept in SQL
(`rag index copy`), to move a knowledge base between FAISS and Milvus without downtime.

The target is made equal to SQL's enabled chunks as of one sequence number and records that
number, exactly as the store's catch-up would leave it, so a replica restarted on the target
backend loads it and replays only what was committed since. Nothing the running replicas serve
is written: a FAISS target writes only the version's dense snapshot (the BM25 one is left
alone), a Milvus target only the version's collection (the alias stays where it is).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import false, select

from rag.core.errors import IndexUnusable, NotFound
from rag.index.backend import DenseBackend, DenseIndex, keeps_texts
from rag.index.dense import KBIndex
from rag.index.store import CHUNK_ROW, feed_dense
from rag.store import sequence
from rag.store.db import Database
from rag.store.models import Chunk, Document, IndexVersion

_BATCH = 2000  # chunk rows read (and vectors written) at a time


@dataclass(frozen=True)
class CopyResult:
    """What a copy did to the target: ids added and removed, and what it holds now."""

    version: int
    added: int
    removed: int
    vectors: int
    last_seq: int


def copy_dense(
    db: Database,
    kb_id: str,
    version: int,
    *,
    backend: DenseBackend | None,
    directory: Path,
) -> CopyResult:
    """Make `backend`'s index of (kb_id, version) hold SQL's vectors; `backend` None is FAISS,
    with its snapshot in `directory` (the store's folder of that version). An index the target
    already holds is completed rather than replaced, so a second run only adds what is new."""
    with db.read() as session:
        record = session.execute(
            select(IndexVersion).where(IndexVersion.kb_id == kb_id, IndexVersion.number == version)
        ).scalar_one_or_none()
        if record is None:
            raise NotFound(f"knowledge base {kb_id} has no index version {version}")
        model, dim = record.embedding_model, record.embedding_dim
    target = _open(backend, directory, kb_id, version, model, dim)
    of_version = (Chunk.kb_id == kb_id, Chunk.version == version)
    # One snapshot: the ids expected as of `high`, and the vectors read for them, agree.
    with db.snapshot() as session:
        high = sequence.current(session)
        expected = np.fromiter(
            session.execute(
                select(Chunk.id).where(*of_version, Chunk.seq <= high, Chunk.disabled == false())
            ).scalars(),
            dtype=np.int64,
        )
        have = target.ids()
        # Ids a replica already applied past `high` are the next catch-up's business.
        later = np.fromiter(
            session.execute(select(Chunk.id).where(*of_version, Chunk.seq > high)).scalars(),
            dtype=np.int64,
        )
        extra = np.setdiff1d(np.setdiff1d(have, expected), later)
        missing = np.setdiff1d(expected, have)
        # A target that ranks text itself (Milvus full text) needs the chunks' text fields too.
        rows = (
            select(*CHUNK_ROW).join(Document, Document.id == Chunk.document_id)
            if keeps_texts(target)
            else select(Chunk.id, Chunk.embedding)
        )
        for start in range(0, len(missing), _BATCH):
            part = [int(i) for i in missing[start : start + _BATCH]]
            feed_dense(target, session.execute(rows.where(Chunk.id.in_(part))).all())
    removed = target.remove(extra) if len(extra) else 0
    target.last_seq = max(target.last_seq, high)
    target.save(directory)
    return CopyResult(version, len(missing), removed, len(target), target.last_seq)


def _open(
    backend: DenseBackend | None, directory: Path, kb_id: str, version: int, model: str, dim: int
) -> DenseIndex:
    """The target's index of the version as it holds it, else an empty one. An index built
    with another model is replaced; an unreachable backend raises (IndexUnavailable)."""
    try:
        if backend is not None:
            return backend.load(kb_id, version, model, dim)
        return KBIndex.load(directory, kb_id=kb_id, embedding_model=model, dim=dim)
    except IndexUnusable:
        if backend is not None:
            return backend.create(kb_id, version, model, dim)
        return KBIndex(kb_id, model, dim)
