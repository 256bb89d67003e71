"""The per-knowledge-base search indexes as caches derived from SQL (DESIGN.md invariants 1, 2).

Each knowledge base has a dense index (FAISS, rag/vector_index.py) and a lexical one (BM25,
rag/lexical.py). Both follow the same rules: on first use the snapshot is loaded (a corrupt one
is moved aside), then caught up: chunks with a sequence above the snapshot's are added,
tombstoned ids removed, and finally any disagreement with SQL (ids SQL no longer has, or rows
the index lacks) is repaired. `sync` repeats the cheap catch-up; several processes sharing one
database stay consistent this way. One pass over the new rows feeds both indexes.

`sync` also does the slow upkeep, outside the store's lock so that queries are not held up:
folding the BM25 delta into its base, and switching a dense index between the exact flat
layout and IVF when it crosses `ann_threshold` vectors. A replacement index is built from a
copy, then caught up under the lock with whatever was committed meanwhile, then swapped in.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from rag import sequence
from rag.db import Database
from rag.errors import IndexError_, NotFound
from rag.lexical import MANIFEST as LEXICAL_MANIFEST
from rag.lexical import LexicalIndex
from rag.models import Chunk, ChunkTombstone, KnowledgeBase
from rag.vector_index import KBIndex, Layout

log = logging.getLogger(__name__)
_BATCH = 2000


class IndexStore:
    def __init__(
        self, root: Path, db: Database, *, ann_threshold: int = 0, ivf_nprobe: int = 64
    ) -> None:
        self.root = root
        self.db = db
        # Dense indexes above this many vectors use IVF (0: always flat).
        self.ann_threshold = ann_threshold
        self.ivf_nprobe = ivf_nprobe
        self._indexes: dict[str, KBIndex] = {}
        self._lexical: dict[str, LexicalIndex] = {}
        self._dirty: set[tuple[str, str]] = set()  # (kb_id, "dense" | "lexical")
        self._lock = threading.RLock()

    def directory(self, kb_id: str) -> Path:
        return self.root / kb_id

    def get(self, kb_id: str) -> KBIndex:
        """The caught-up dense index of a knowledge base (loaded or rebuilt on first use)."""
        return self.pair(kb_id)[0]

    def lexical(self, kb_id: str) -> LexicalIndex:
        """The caught-up BM25 index of a knowledge base."""
        return self.pair(kb_id)[1]

    def pair(self, kb_id: str) -> tuple[KBIndex, LexicalIndex]:
        """Both indexes of a knowledge base, caught up to the same sequence number."""
        with self._lock:
            if kb_id not in self._indexes:
                self._open(kb_id)
            else:
                self._catch_up(kb_id)
            return self._indexes[kb_id], self._lexical[kb_id]

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._indexes)

    def sync(self, kb_id: str | None = None) -> None:
        """Apply rows committed since the last sync (by this or any other process), then do
        the slow upkeep (BM25 merge, flat/IVF switch) without holding up queries."""
        with self._lock:
            keys = [k for k in ([kb_id] if kb_id else list(self._indexes)) if k in self._indexes]
            for key in keys:
                self._catch_up(key)
        for key in keys:
            self._upkeep(key)

    def check(self, kb_id: str) -> dict[str, object]:
        """Compare the live indexes with SQL (for /index and operators); repairs nothing.

        Exact under concurrent ingestion: the index ids are captured together with the
        sequence number they reflect, and SQL is read as of that number in one snapshot, so a
        commit that lands meanwhile is neither "missing" nor "extra".
        """
        with self._lock:
            dense, lexical = self.pair(kb_id)
            seq = dense.last_seq
            have, lexical_ids = dense.ids(), lexical.ids()
            vectors, layout = len(have), dense.layout
        with self.db.snapshot() as session:
            sql_ids = np.fromiter(
                session.execute(
                    select(Chunk.id).where(Chunk.kb_id == kb_id, Chunk.seq <= seq)
                ).scalars(),
                dtype=np.int64,
            )
            deleted_since = np.fromiter(
                session.execute(
                    select(ChunkTombstone.chunk_id).where(
                        ChunkTombstone.kb_id == kb_id, ChunkTombstone.seq > seq
                    )
                ).scalars(),
                dtype=np.int64,
            )
        # Ids deleted after `seq` were still live at `seq`: count them as present on both sides.
        sql_ids = np.union1d(sql_ids, np.intersect1d(deleted_since, have))
        missing = np.setdiff1d(sql_ids, have)
        extra = np.setdiff1d(have, sql_ids)
        lexical_ok = not len(np.setxor1d(lexical_ids, sql_ids))
        return {
            "vectors": vectors,
            "sql_chunks": len(sql_ids),
            "last_seq": seq,
            "embedding_model": dense.embedding_model,
            "dim": dense.dim,
            "layout": layout,
            "lexical_docs": len(lexical_ids),
            "lexical_consistent": lexical_ok,
            "missing_ids": missing[:100].tolist(),
            "extra_ids": extra[:100].tolist(),
            "consistent": not len(missing) and not len(extra) and lexical_ok,
        }

    def rebuild(self, kb_id: str) -> KBIndex:
        """Throw the caches away and build them again from SQL; persisted at once."""
        with self._lock:
            kb = self._kb(kb_id)
            dense = self._new_dense(kb)
            lexical = LexicalIndex(kb_id)
            self._catch_up_pair(dense, lexical)
            self._indexes[kb_id], self._lexical[kb_id] = dense, lexical
        self._upkeep(kb_id)
        with self._lock:
            dense, lexical = self._indexes[kb_id], self._lexical[kb_id]
            dense.save(self.directory(kb_id))
            lexical.save(self.directory(kb_id))
            self._dirty -= {(kb_id, "dense"), (kb_id, "lexical")}
            return dense

    def drop(self, kb_id: str) -> None:
        with self._lock:
            self._indexes.pop(kb_id, None)
            self._lexical.pop(kb_id, None)
            self._dirty = {d for d in self._dirty if d[0] != kb_id}
            shutil.rmtree(self.directory(kb_id), ignore_errors=True)

    def save_dirty(self) -> int:
        """Snapshot every index changed since its last snapshot; returns how many KBs."""
        with self._lock:
            dirty = sorted(self._dirty)
            for kb_id, kind in dirty:
                if kind == "dense" and kb_id in self._indexes:
                    self._indexes[kb_id].save(self.directory(kb_id))
                elif kind == "lexical" and kb_id in self._lexical:
                    self._lexical[kb_id].save(self.directory(kb_id))
            self._dirty.clear()
            return len({kb_id for kb_id, _ in dirty})

    # -- internals ---------------------------------------------------------------------------

    def _kb(self, kb_id: str) -> KnowledgeBase:
        with self.db.read() as session:
            kb = session.get(KnowledgeBase, kb_id)
            if kb is None:
                raise NotFound(f"knowledge base {kb_id} does not exist")
            return kb

    def _new_dense(self, kb: KnowledgeBase) -> KBIndex:
        index = KBIndex(kb.id, kb.embedding_model, kb.embedding_dim)
        index.nprobe = self.ivf_nprobe
        return index

    def _open(self, kb_id: str) -> None:
        kb = self._kb(kb_id)
        directory = self.directory(kb_id)
        try:
            dense = KBIndex.load(
                directory, kb_id=kb_id, embedding_model=kb.embedding_model, dim=kb.embedding_dim
            )
            dense.nprobe = self.ivf_nprobe
        except IndexError_ as exc:
            if directory.exists() and any(directory.iterdir()):
                self._quarantine(directory, str(exc))
            dense = self._new_dense(kb)
        try:
            lexical = LexicalIndex.load(directory, kb_id=kb_id)
        except IndexError_ as exc:
            if (directory / LEXICAL_MANIFEST).exists():
                self._quarantine_lexical(directory, str(exc))
            lexical = LexicalIndex(kb_id)
        self._catch_up_pair(dense, lexical)
        self._reconcile(dense, lexical)
        self._indexes[kb_id], self._lexical[kb_id] = dense, lexical

    def _quarantine(self, directory: Path, reason: str) -> None:
        target = directory.with_name(f"{directory.name}.corrupt-{int(time.time())}")
        log.warning(
            "index %s unusable (%s); moved to %s, rebuilding from SQL", directory, reason, target
        )
        directory.rename(target)

    def _quarantine_lexical(self, directory: Path, reason: str) -> None:
        target = directory.with_name(f"{directory.name}.corrupt-lexical-{int(time.time())}")
        log.warning("BM25 index in %s unusable (%s); moved to %s", directory, reason, target)
        target.mkdir(parents=True, exist_ok=True)
        for path in [directory / LEXICAL_MANIFEST, *directory.glob("lexical-*.npz")]:
            path.rename(target / path.name)

    def _catch_up(self, kb_id: str) -> None:
        self._catch_up_pair(self._indexes[kb_id], self._lexical[kb_id])

    def _catch_up_pair(self, dense: KBIndex, lexical: LexicalIndex) -> None:
        """Replay rows and tombstones above each index's last sequence number."""
        kb_id = dense.kb_id
        with self.db.read() as session:
            high = sequence.current(session)
            low = min(dense.last_seq, lexical.last_seq)
            if high <= low:
                return
            added_dense = added_lexical = False
            after = low
            while True:
                rows = session.execute(
                    select(Chunk.id, Chunk.embedding, Chunk.text, Chunk.seq)
                    .where(Chunk.kb_id == kb_id, Chunk.seq > after, Chunk.seq <= high)
                    .order_by(Chunk.seq)
                    .limit(_BATCH)
                ).all()
                if not rows:
                    break
                added_dense |= _feed_dense(dense, [r for r in rows if r.seq > dense.last_seq])
                added_lexical |= _feed_lexical(
                    lexical, [r for r in rows if r.seq > lexical.last_seq]
                )
                after = rows[-1].seq
            gone = (
                session.execute(
                    select(ChunkTombstone.chunk_id).where(
                        ChunkTombstone.kb_id == kb_id,
                        ChunkTombstone.seq > low,
                        ChunkTombstone.seq <= high,
                    )
                )
                .scalars()
                .all()
            )
        removed_dense = dense.remove(list(gone)) if gone else 0
        removed_lexical = lexical.remove(list(gone)) if gone else 0
        dense.last_seq = lexical.last_seq = high
        lexical.refresh()
        if added_dense or removed_dense:
            self._dirty.add((kb_id, "dense"))
        if added_lexical or removed_lexical:
            self._dirty.add((kb_id, "lexical"))

    def _reconcile(self, dense: KBIndex, lexical: LexicalIndex) -> None:
        """Make each id set equal SQL's: drop ids SQL lacks, add rows the snapshot lacks."""
        kb_id = dense.kb_id
        with self.db.read() as session:
            sql_ids = np.fromiter(
                session.execute(select(Chunk.id).where(Chunk.kb_id == kb_id)).scalars(),
                dtype=np.int64,
            )
            for kind, index in (("dense", dense), ("lexical", lexical)):
                have = index.ids()
                extra = np.setdiff1d(have, sql_ids)
                missing = np.setdiff1d(sql_ids, have)
                if len(extra):
                    log.warning("%s index %s: dropping %d ids SQL lacks", kind, kb_id, len(extra))
                    index.remove(extra)
                for start in range(0, len(missing), _BATCH):
                    part = [int(i) for i in missing[start : start + _BATCH]]
                    rows = session.execute(
                        select(Chunk.id, Chunk.embedding, Chunk.text).where(Chunk.id.in_(part))
                    ).all()
                    if kind == "dense":
                        _feed_dense(dense, rows)
                    else:
                        _feed_lexical(lexical, rows)
                if len(missing):
                    log.warning("%s index %s: added %d rows it lacked", kind, kb_id, len(missing))
                if len(extra) or len(missing):
                    self._dirty.add((kb_id, kind))
        lexical.refresh()

    # -- upkeep off the query path -------------------------------------------------------------

    def _upkeep(self, kb_id: str) -> None:
        with self._lock:
            dense, lexical = self._indexes.get(kb_id), self._lexical.get(kb_id)
        if lexical is not None and lexical.needs_merge():
            started = time.perf_counter()
            lexical.merge()
            with self._lock:
                self._dirty.add((kb_id, "lexical"))
            log.info(
                "BM25 index %s: merged %d documents in %.1f s",
                kb_id,
                len(lexical),
                time.perf_counter() - started,
            )
        if dense is not None:
            want = self._layout_for(len(dense), dense.layout)
            if want != dense.layout:
                self._relayout(kb_id, dense, want)

    def _layout_for(self, n: int, current: Layout) -> Layout:
        if self.ann_threshold <= 0:
            return "flat"
        if current == "flat":
            return "ivf" if n > self.ann_threshold else "flat"
        return "flat" if n < self.ann_threshold // 2 else "ivf"  # hysteresis: no flapping

    def _relayout(self, kb_id: str, dense: KBIndex, layout: Layout) -> None:
        started = time.perf_counter()
        seq = dense.last_seq  # read before copying: replaying from an older seq is idempotent
        ids, vectors = dense.vectors()
        fresh = dense.with_layout(layout, ids, vectors)
        fresh.last_seq = seq
        del ids, vectors
        with self._lock:
            if self._indexes.get(kb_id) is not dense:
                return  # dropped or rebuilt meanwhile
            self._catch_up_pair(fresh, self._lexical[kb_id])
            self._indexes[kb_id] = fresh
            self._dirty.add((kb_id, "dense"))
        log.info(
            "dense index %s: %d vectors now %s (%.1f s)",
            kb_id,
            len(fresh),
            layout,
            time.perf_counter() - started,
        )


def _feed_dense(index: KBIndex, rows: Sequence[Any]) -> bool:
    if not rows:
        return False
    ids = np.fromiter((r.id for r in rows), dtype=np.int64, count=len(rows))
    vectors = np.frombuffer(b"".join(r.embedding for r in rows), dtype=np.float32)
    index.add(ids, vectors.reshape(len(rows), index.dim))
    return True


def _feed_lexical(index: LexicalIndex, rows: Sequence[Any]) -> bool:
    if not rows:
        return False
    index.add_texts((r.id for r in rows), (r.text for r in rows))
    return True
