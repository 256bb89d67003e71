"""The per-knowledge-base search indexes as caches derived from SQL (docs/architecture.md).

Each knowledge base has a dense index (FAISS, rag/index/dense.py) and a lexical one (BM25,
rag/index/lexical.py) per index version (rag/kb/versions.py), both caught up from SQL by
sequence number and tombstone, so several processes sharing one database stay consistent.
A disabled chunk (rag/kb/chunks.py) is kept out of both: its row is replayed with a new sequence
number and removed rather than added.
`IndexStore.pair(kb_id)` answers from the version SQL names live; `IndexStore.sync` catches
up and does the slow upkeep off the query path.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from sqlalchemy import false, func, select, true
from sqlalchemy.orm import Session

from rag.core.errors import IndexUnusable, InvalidInput, NotFound
from rag.index.analyzer import Analyzer, AnalyzerOptions, normalize_terms
from rag.index.backend import DenseBackend, DenseIndex, IdSnapshot, keeps_texts
from rag.index.dense import MANIFEST as DENSE_MANIFEST
from rag.index.dense import GpuPlacement, KBIndex, Layout
from rag.index.lexical import MANIFEST as LEXICAL_MANIFEST
from rag.index.lexical import LexicalIndex, LexicalOptions, StaleAnalyzer
from rag.store import sequence
from rag.store.db import Database
from rag.store.models import Chunk, ChunkTombstone, Document, IndexVersion, KnowledgeBase

log = logging.getLogger(__name__)
_BATCH = 2000
# What a catch-up reads of a chunk: the vector for FAISS, the text fields for BM25 (and for a
# dense index that ranks text itself, Milvus with RAG_INDEX__MILVUS_LEXICAL=milvus).
CHUNK_ROW = (
    Chunk.id,
    Chunk.embedding,
    Chunk.text,
    Chunk.heading_path,
    Document.filename,
    Document.user_metadata,
)
Key = tuple[str, int]  # (kb_id, version number)


class IndexStore:
    """Every knowledge base's indexes, per index version, loaded or built on first use.

    Both indexes follow the same rules: on first use the snapshot is loaded (a corrupt one is
    moved aside), then caught up: chunks with a sequence above the snapshot's are added,
    tombstoned ids removed, and finally any disagreement with SQL (ids SQL no longer has, or
    rows the index lacks) is repaired. `sync` repeats the cheap catch-up. One pass over the new
    rows feeds both indexes.

    `pair(kb_id)` answers from the version SQL names live, read on every call, so a switch made
    by any process is followed at once; the caches of a version live in
    index_dir/<kb_id>/v<n>/. The re-index job builds a version beside the live one with
    `build_version` and installs it with `adopt` once it is live.

    A lexical index is tokenised with its knowledge base's user terms
    (`KnowledgeBase.lexical_terms`): `pair` reads them with the live version and rebuilds the
    lexical index from SQL when they differ from the ones it was built with, so every process
    sharing the database follows a change (`lexical_terms_changed` does it at once).
    """

    def __init__(
        self,
        root: Path,
        db: Database,
        *,
        ann_threshold: int = 0,
        ivf_nprobe: int = 64,
        lexical: LexicalOptions | None = None,
        gpu: GpuPlacement | None = None,
        dense_backend: DenseBackend | None = None,
    ) -> None:
        self.root = root
        self.gpu = gpu  # dense searches on a GPU copy (rag/index/dense.py); None: CPU
        # Where dense indexes live when not in FAISS snapshots under `root` (Milvus).
        self.dense_backend = dense_backend
        self.db = db
        # Dense indexes above this many vectors use IVF (0: always flat).
        self.ann_threshold = ann_threshold
        self.ivf_nprobe = ivf_nprobe
        self.lexical_options = lexical or LexicalOptions()
        self._terms_seen: dict[str, tuple[list[str], tuple[str, ...]]] = {}
        self._indexes: dict[Key, DenseIndex] = {}
        self._lexical: dict[Key, LexicalIndex] = {}
        self._dirty: set[tuple[Key, str]] = set()  # (key, "dense" | "lexical")
        self._lock = threading.RLock()

    def directory(self, kb_id: str, version: int | None = None) -> Path:
        """Where a version's snapshots live (the live version's when none is named)."""
        return self.root / kb_id / f"v{version if version is not None else self.live(kb_id)}"

    def live(self, kb_id: str) -> int:
        """The live version number, as SQL has it now."""
        with self.db.read() as session:
            number = session.execute(
                select(KnowledgeBase.live_version).where(KnowledgeBase.id == kb_id)
            ).scalar_one_or_none()
        if number is None:
            raise NotFound(f"knowledge base {kb_id} does not exist")
        return int(number)

    def get(self, kb_id: str) -> DenseIndex:
        """The caught-up dense index of a knowledge base (loaded or rebuilt on first use)."""
        return self.pair(kb_id)[0]

    def lexical(self, kb_id: str) -> LexicalIndex:
        """The caught-up BM25 index of a knowledge base."""
        return self.pair(kb_id)[1]

    def pair(self, kb_id: str) -> tuple[DenseIndex, LexicalIndex]:
        """Both indexes of the live version, caught up to the same sequence number."""
        with self._lock:
            # One read for the live version and the newest sequence number: when nothing was
            # committed since, the loaded indexes answer without a catch-up.
            with self.db.read() as session:
                row = session.execute(
                    select(KnowledgeBase.live_version, KnowledgeBase.lexical_terms).where(
                        KnowledgeBase.id == kb_id
                    )
                ).one_or_none()
                high = sequence.current(session)
            if row is None:
                raise NotFound(f"knowledge base {kb_id} does not exist")
            key = (kb_id, int(row[0]))
            terms = self._terms(kb_id, row[1])
            dense, lexical = self._indexes.get(key), self._lexical.get(key)
            if (
                dense is not None
                and lexical is not None
                and min(dense.last_seq, lexical.last_seq) >= high
                and lexical.analyzer.options.terms == terms
            ):
                return dense, lexical
            dense, lexical = self.version_pair(*key, terms=terms)
            if self.dense_backend is not None:
                self.dense_backend.promote(*key)  # its alias follows a switch or rollback
            return dense, lexical

    def version_pair(
        self, kb_id: str, version: int, *, terms: tuple[str, ...] | None = None
    ) -> tuple[DenseIndex, LexicalIndex]:
        """Both indexes of one version (live or not), loaded or built on first use; `terms`:
        the knowledge base's user terms when the caller has just read them."""
        key = (kb_id, version)
        with self._lock:
            if terms is None:
                terms = self._kb_terms(kb_id)
            if key not in self._indexes:
                self._open(key, terms)
            else:
                self._catch_up(key)
                self._follow_terms(key, terms)
            return self._indexes[key], self._lexical[key]

    def lexical_terms_changed(self, kb_id: str) -> bool:
        """Rebuild the live version's BM25 index from SQL if the knowledge base's user terms
        differ from the ones it was built with, and snapshot it; True if it rebuilt. Call it
        after committing new terms: `pair` would otherwise do it on the next search (and every
        other process does it on its next search or sync)."""
        with self._lock:
            key = (kb_id, self.live(kb_id))
            terms = self._kb_terms(kb_id)
            if key not in self._indexes:
                self._open(key, terms)  # loads a matching snapshot or rebuilds
                rebuilt = (key, "lexical") in self._dirty
            else:
                self._catch_up(key)
                rebuilt = self._follow_terms(key, terms)
            # Both, when both changed: a directory with a lexical snapshot but no dense one
            # is taken for a broken one on the next start (_open).
            for kind, index in (("dense", self._indexes[key]), ("lexical", self._lexical[key])):
                if (key, kind) in self._dirty:
                    index.save(self.directory(*key))
                    self._dirty.discard((key, kind))
            return rebuilt

    def loaded(self) -> list[str]:
        with self._lock:
            return sorted({kb_id for kb_id, _ in self._indexes})

    def sync(self, kb_id: str | None = None) -> None:
        """Apply rows committed since the last sync (by this or any other process), then do
        the slow upkeep outside the store's lock, so that queries are not held up: folding the
        BM25 delta into its base, and switching a dense index between the exact flat layout
        and IVF when it crosses `ann_threshold` vectors (`_upkeep`). Versions that are no
        longer live are let go (their snapshots stay for a rollback)."""
        with self._lock:
            keys = [k for k in self._indexes if kb_id is None or k[0] == kb_id]
            live, terms = self._live_versions({k[0] for k in keys})
            for key in keys:
                if live.get(key[0]) == key[1]:
                    self._catch_up(key)
                    self._follow_terms(key, terms[key[0]])
                else:
                    self._forget(key)
            keys = [k for k in keys if k in self._indexes]
        for key in keys:
            self._upkeep(key)

    def check(self, kb_id: str, version: int | None = None) -> dict[str, object]:
        """Compare a version's indexes (the live one's by default) with SQL, for /index and
        operators; repairs nothing."""
        with self._lock:
            number = self.live(kb_id) if version is None else version
            dense, lexical = self.version_pair(kb_id, number)
            return self.compare(kb_id, number, dense, lexical)

    def inspect(self, kb_id: str, version: int | None = None) -> dict[str, object]:
        """Like `check`, but changes nothing, in memory or on disk (`rag doctor --dry-run`).

        A version this process has loaded is compared as it is. Otherwise its snapshot is read
        into a private copy and caught up there: nothing is loaded into the store, marked for
        saving, quarantined or reconciled. An unreadable snapshot is reported, not moved.
        """
        number = self.live(kb_id) if version is None else version
        key = (kb_id, number)
        with self._lock:
            dense, lexical = self._indexes.get(key), self._lexical.get(key)
            if dense is not None and lexical is not None:
                return self.compare(kb_id, number, dense, lexical)
        record = self._version(kb_id, number)
        directory = self.directory(kb_id, number)
        if number == 1 and not directory.exists():
            directory = self.root / kb_id  # a legacy snapshot, not yet moved (see _open)
        unreadable: list[str] = []
        try:
            dense = self._load_dense(directory, record)
            if self.dense_backend is not None:
                dense = IdSnapshot(dense)  # caught up below without writing to the backend
        except IndexUnusable as exc:
            if self.dense_backend is not None or (directory / DENSE_MANIFEST).exists():
                unreadable.append(str(exc))
            # No snapshot yet: _open starts empty too (in memory: a backend's is not created).
            dense = KBIndex(kb_id, record.embedding_model, record.embedding_dim)
        terms = self._kb_terms(kb_id)
        try:
            lexical = self._load_lexical(directory, kb_id, terms)
        except StaleAnalyzer:
            lexical = self._new_lexical(kb_id, terms)  # rebuilt, not broken: _open does the same
        except IndexUnusable as exc:
            if (directory / LEXICAL_MANIFEST).exists():
                unreadable.append(str(exc))
            lexical = self._new_lexical(kb_id, terms)
        self._catch_up_pair(dense, lexical, key, track=False)
        found = self.compare(kb_id, number, dense, lexical)
        if unreadable:
            found["consistent"] = False
            found["unreadable"] = unreadable
        return found

    def compare(
        self, kb_id: str, version: int, dense: DenseIndex, lexical: LexicalIndex
    ) -> dict[str, object]:
        """How far (dense, lexical) of `version` are from SQL.

        Exact under concurrent ingestion: the index ids are captured together with the
        sequence number they reflect, and SQL is read as of that number in one snapshot, so a
        commit that lands meanwhile is neither "missing" nor "extra".
        """
        with self._lock:
            seq = dense.last_seq
            have, lexical_ids = dense.ids(), lexical.ids()
            vectors, layout = len(have), dense.layout
        with self.db.snapshot() as session:
            sql_ids, changed_since = _expected_ids(session, kb_id, version, seq)
            disabled = session.execute(
                select(func.count())
                .select_from(Chunk)
                .where(
                    Chunk.kb_id == kb_id,
                    Chunk.version == version,
                    Chunk.seq <= seq,
                    Chunk.disabled == true(),
                )
            ).scalar_one()
            deleted_since = np.fromiter(
                session.execute(
                    select(ChunkTombstone.chunk_id).where(
                        ChunkTombstone.kb_id == kb_id, ChunkTombstone.seq > seq
                    )
                ).scalars(),
                dtype=np.int64,
            )
        # Ids deleted, disabled or enabled after `seq` are in the index exactly when they were
        # searchable at `seq`: count the ones it has as present on both sides.
        later = np.union1d(deleted_since, changed_since)
        sql_ids = np.union1d(sql_ids, np.intersect1d(later, have))
        missing = np.setdiff1d(sql_ids, have)
        extra = np.setdiff1d(have, sql_ids)
        lexical_ok = not len(np.setxor1d(lexical_ids, sql_ids))
        return {
            "version": version,
            "vectors": vectors,
            "sql_chunks": len(sql_ids),
            "disabled_chunks": int(disabled),  # in SQL, absent from the indexes by design
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

    def rebuild(self, kb_id: str, version: int | None = None) -> DenseIndex:
        """Throw a version's caches (the live one's by default) away and build them again
        from SQL; persisted at once."""
        with self._lock:
            number = self.live(kb_id) if version is None else version
            key = (kb_id, number)
            dense, lexical = self._build(key)
            self._indexes[key], self._lexical[key] = dense, lexical
        self._upkeep(key)
        with self._lock:
            dense, lexical = self._indexes[key], self._lexical[key]
            dense.save(self.directory(*key))
            lexical.save(self.directory(*key))
            self._dirty -= {(key, "dense"), (key, "lexical")}
            return dense

    def build_version(self, kb_id: str, version: int) -> tuple[DenseIndex, LexicalIndex]:
        """Build a version's indexes from SQL and snapshot them, without serving them: the
        re-index job checks them and `adopt`s them once the version is live."""
        dense, lexical = self._build((kb_id, version))
        if lexical.needs_merge():
            lexical.merge()
        if isinstance(dense, KBIndex):  # a backend's index (Milvus) chooses its own layout
            want = self._layout_for(len(dense), dense.layout)
            if want != dense.layout:
                ids, vectors = dense.vectors()
                fresh = dense.with_layout(want, ids, vectors)
                del ids, vectors
                dense = fresh
        dense.save(self.directory(kb_id, version))
        lexical.save(self.directory(kb_id, version))
        return dense, lexical

    def adopt(self, kb_id: str, version: int, dense: DenseIndex, lexical: LexicalIndex) -> None:
        """Serve indexes built by `build_version` (now caught up) for `version`."""
        key = (kb_id, version)
        with self._lock:
            self._catch_up_pair(dense, lexical, key)
            self._indexes[key], self._lexical[key] = dense, lexical
            for other in [k for k in self._indexes if k[0] == kb_id and k != key]:
                self._forget(other)
            if self.dense_backend is not None:
                self.dense_backend.promote(kb_id, version)

    def drop(self, kb_id: str) -> None:
        """Forget every version of a knowledge base and delete their snapshots."""
        with self._lock:
            for key in [k for k in self._indexes if k[0] == kb_id]:
                self._forget(key)
            shutil.rmtree(self.root / kb_id, ignore_errors=True)
            if self.dense_backend is not None:
                self.dense_backend.drop(kb_id)

    def drop_version(self, kb_id: str, version: int) -> None:
        """Forget one version and delete its snapshots (a cancelled or failed build)."""
        with self._lock:
            self._forget((kb_id, version))
            shutil.rmtree(self.directory(kb_id, version), ignore_errors=True)
            if self.dense_backend is not None:
                self.dense_backend.drop(kb_id, version)

    def save_dirty(self) -> int:
        """Snapshot every index changed since its last snapshot; returns how many KBs."""
        with self._lock:
            dirty = sorted(self._dirty)
            for key, kind in dirty:
                if kind == "dense" and key in self._indexes:
                    self._indexes[key].save(self.directory(*key))
                elif kind == "lexical" and key in self._lexical:
                    self._lexical[key].save(self.directory(*key))
            self._dirty.clear()
            return len({key[0] for key, _ in dirty})

    # -- internals ---------------------------------------------------------------------------

    def _version(self, kb_id: str, number: int) -> IndexVersion:
        with self.db.read() as session:
            if session.get(KnowledgeBase, kb_id) is None:
                raise NotFound(f"knowledge base {kb_id} does not exist")
            row = session.execute(
                select(IndexVersion).where(
                    IndexVersion.kb_id == kb_id, IndexVersion.number == number
                )
            ).scalar_one_or_none()
            if row is None:
                raise NotFound(f"knowledge base {kb_id} has no index version {number}")
            return row

    def _live_versions(self, kb_ids: set[str]) -> tuple[dict[str, int], dict[str, tuple[str, ...]]]:
        """Live version and user terms of each knowledge base, in one read."""
        if not kb_ids:
            return {}, {}
        with self.db.read() as session:
            rows = session.execute(
                select(
                    KnowledgeBase.id, KnowledgeBase.live_version, KnowledgeBase.lexical_terms
                ).where(KnowledgeBase.id.in_(sorted(kb_ids)))
            ).all()
        live = {kb_id: int(number) for kb_id, number, _ in rows}
        return live, {kb_id: self._terms(kb_id, raw) for kb_id, _, raw in rows}

    def _kb_terms(self, kb_id: str) -> tuple[str, ...]:
        with self.db.read() as session:
            raw = session.execute(
                select(KnowledgeBase.lexical_terms).where(KnowledgeBase.id == kb_id)
            ).scalar_one_or_none()
        return self._terms(kb_id, raw)

    def _terms(self, kb_id: str, raw: list[str] | None) -> tuple[str, ...]:
        """A KB's terms as the analyzer uses them; normalised once per change (a search only
        compares the list it read with the one seen last)."""
        raw = list(raw or [])
        seen = self._terms_seen.get(kb_id)
        if seen is not None and seen[0] == raw:
            return seen[1]
        try:
            terms = tuple(normalize_terms(raw))
        except InvalidInput as exc:  # the API validates; a row written otherwise is not fatal
            log.warning("knowledge base %s: lexical terms ignored (%s)", kb_id, exc)
            terms = ()
        self._terms_seen[kb_id] = (raw, terms)
        return terms

    def _analyzer(self, terms: tuple[str, ...]) -> Analyzer:
        return Analyzer(AnalyzerOptions(self.lexical_options.segmentation, terms))

    def _new_lexical(self, kb_id: str, terms: tuple[str, ...]) -> LexicalIndex:
        return LexicalIndex(kb_id, self._analyzer(terms), self.lexical_options)

    def _load_lexical(self, directory: Path, kb_id: str, terms: tuple[str, ...]) -> LexicalIndex:
        return LexicalIndex.load(
            directory, kb_id=kb_id, analyzer=self._analyzer(terms), options=self.lexical_options
        )

    def _follow_terms(self, key: Key, terms: tuple[str, ...]) -> bool:
        """Rebuild a loaded version's BM25 index from SQL when the KB's user terms changed."""
        lexical = self._lexical[key]
        if lexical.analyzer.options.terms == terms:
            return False
        started = time.perf_counter()
        fresh = self._new_lexical(key[0], terms)
        self._catch_up_pair(self._indexes[key], fresh, key)
        self._lexical[key] = fresh
        self._dirty.add((key, "lexical"))
        log.info(
            "BM25 index %s: re-tokenised %d chunks for %d user terms in %.1f s",
            key,
            len(fresh),
            len(terms),
            time.perf_counter() - started,
        )
        return True

    def _forget(self, key: Key) -> None:
        self._indexes.pop(key, None)
        self._lexical.pop(key, None)
        self._dirty = {d for d in self._dirty if d[0] != key}

    def _load_dense(self, directory: Path, version: IndexVersion) -> DenseIndex:
        """A version's dense snapshot from `directory` (or the backend's index); IndexUnusable
        when missing or unusable."""
        if self.dense_backend is not None:
            return self.dense_backend.load(
                version.kb_id, version.number, version.embedding_model, version.embedding_dim
            )
        dense = KBIndex.load(
            directory,
            kb_id=version.kb_id,
            embedding_model=version.embedding_model,
            dim=version.embedding_dim,
        )
        dense.nprobe, dense.gpu = self.ivf_nprobe, self.gpu
        return dense

    def _new_dense(self, kb_id: str, version: IndexVersion) -> DenseIndex:
        if self.dense_backend is not None:
            return self.dense_backend.create(
                kb_id, version.number, version.embedding_model, version.embedding_dim
            )
        index = KBIndex(kb_id, version.embedding_model, version.embedding_dim)
        index.nprobe, index.gpu = self.ivf_nprobe, self.gpu
        return index

    def _build(self, key: Key) -> tuple[DenseIndex, LexicalIndex]:
        dense = self._new_dense(key[0], self._version(*key))
        lexical = self._new_lexical(key[0], self._kb_terms(key[0]))
        self._catch_up_pair(dense, lexical, key)
        return dense, lexical

    def _adopt_legacy_snapshot(self, kb_id: str, directory: Path) -> None:
        """Snapshots from before index versions lie in <kb_id>/ itself: they are version 1's."""
        legacy = self.root / kb_id
        if directory.exists() or not (legacy / DENSE_MANIFEST).exists():
            return
        directory.mkdir(parents=True)
        names = [DENSE_MANIFEST, LEXICAL_MANIFEST, "vectors-*.faiss", "lexical-*.npz"]
        for path in [p for name in names for p in legacy.glob(name)]:
            path.rename(directory / path.name)
        log.info("moved the index snapshot of %s into %s", kb_id, directory)

    def _open(self, key: Key, terms: tuple[str, ...]) -> None:
        kb_id, number = key
        version = self._version(kb_id, number)
        directory = self.directory(kb_id, number)
        if number == 1:
            self._adopt_legacy_snapshot(kb_id, directory)
        try:
            dense = self._load_dense(directory, version)
        except IndexUnusable as exc:
            # A missing or unusable Milvus collection is no fault of the local files (they hold
            # only the BM25 snapshot then): that snapshot stays, and only the vectors are rebuilt.
            if self.dense_backend is not None:
                log.warning("dense index of %s rebuilt from SQL: %s", key, exc)
            elif directory.exists() and any(directory.iterdir()):
                self._quarantine(directory, str(exc))
            dense = self._new_dense(kb_id, version)
        try:
            lexical = self._load_lexical(directory, kb_id, terms)
        except StaleAnalyzer as exc:
            # Another analyzer version or other user terms: rebuilt from SQL, and the next
            # snapshot replaces the old one (nothing is broken, so nothing is quarantined).
            log.info("BM25 index of %s rebuilt from SQL: %s", key, exc)
            lexical = self._new_lexical(kb_id, terms)
        except IndexUnusable as exc:
            if (directory / LEXICAL_MANIFEST).exists():
                self._quarantine_lexical(directory, str(exc))
            lexical = self._new_lexical(kb_id, terms)
        self._catch_up_pair(dense, lexical, key)
        self._reconcile(dense, lexical, key)
        self._indexes[key], self._lexical[key] = dense, lexical

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

    def _catch_up(self, key: Key) -> None:
        self._catch_up_pair(self._indexes[key], self._lexical[key], key)

    def _catch_up_pair(
        self, dense: DenseIndex, lexical: LexicalIndex, key: Key, *, track: bool = True
    ) -> None:
        """Replay the version's rows, and tombstones, above each index's last sequence number
        (chunk ids are global, so a tombstone needs no version). `track=False`: a private copy
        that is never saved (inspect)."""
        kb_id, version = key
        with self.db.read() as session:
            high = sequence.current(session)
            low = min(dense.last_seq, lexical.last_seq)
            if high <= low:
                return
            added_dense = added_lexical = False
            off_dense: list[int] = []
            off_lexical: list[int] = []
            # Ids read now: SQLite may give a new chunk the id of one deleted before it (the
            # highest id + 1), so a tombstoned id that is read again was inserted anew.
            read: set[int] = set()
            after = low
            while True:
                rows = session.execute(
                    select(*CHUNK_ROW, Chunk.seq, Chunk.disabled)
                    .join(Document, Document.id == Chunk.document_id)
                    .where(
                        Chunk.kb_id == kb_id,
                        Chunk.version == version,
                        Chunk.seq > after,
                        Chunk.seq <= high,
                    )
                    .order_by(Chunk.seq)
                    .limit(_BATCH)
                ).all()
                if not rows:
                    break
                # Each row is read in its current state: a disabled one leaves the indexes.
                live = [r for r in rows if not r.disabled]
                added_dense |= feed_dense(dense, [r for r in live if r.seq > dense.last_seq])
                added_lexical |= _feed_lexical(
                    lexical, [r for r in live if r.seq > lexical.last_seq]
                )
                off_dense += [r.id for r in rows if r.disabled and r.seq > dense.last_seq]
                off_lexical += [r.id for r in rows if r.disabled and r.seq > lexical.last_seq]
                read.update(r.id for r in rows)
                after = rows[-1].seq
            # Removed after the new rows are in, so a search meanwhile sees a replaced
            # document's old and new chunks (SQL then keeps the new) rather than neither.
            tombstones = session.execute(
                select(ChunkTombstone.chunk_id, ChunkTombstone.seq).where(
                    ChunkTombstone.kb_id == kb_id,
                    ChunkTombstone.seq > low,
                    ChunkTombstone.seq <= high,
                )
            ).all()
        gone = [(t.chunk_id, t.seq) for t in tombstones if t.chunk_id not in read]
        off_dense += [i for i, seq in gone if seq > dense.last_seq]
        off_lexical += [i for i, seq in gone if seq > lexical.last_seq]
        removed_dense = dense.remove(off_dense) if off_dense else 0
        removed_lexical = lexical.remove(off_lexical) if off_lexical else 0
        dense.last_seq = lexical.last_seq = high
        lexical.refresh()
        if track and (added_dense or removed_dense):
            self._dirty.add((key, "dense"))
        if track and (added_lexical or removed_lexical):
            self._dirty.add((key, "lexical"))

    def _reconcile(self, dense: DenseIndex, lexical: LexicalIndex, key: Key) -> None:
        """Make each id set equal SQL's as of the sequence number the indexes were caught up
        to: drop ids SQL lacks, add rows the snapshot lacks. Rows committed after that number
        are left to the next catch-up; adding them here would put ids above `last_seq` into
        the index, which `compare` then reports as extra (a false drift under ingestion)."""
        kb_id, version = key
        seq = min(dense.last_seq, lexical.last_seq)
        with self.db.snapshot() as session:
            sql_ids, changed_since = _expected_ids(session, kb_id, version, seq)
            for kind, index in (("dense", dense), ("lexical", lexical)):
                have = index.ids()
                # A row changed after `seq` is the next catch-up's to apply, not drift.
                extra = np.setdiff1d(np.setdiff1d(have, sql_ids), changed_since)
                missing = np.setdiff1d(sql_ids, have)
                if len(extra):
                    log.warning("%s index %s: dropping %d ids SQL lacks", kind, kb_id, len(extra))
                    index.remove(extra)
                for start in range(0, len(missing), _BATCH):
                    part = [int(i) for i in missing[start : start + _BATCH]]
                    rows = session.execute(
                        select(*CHUNK_ROW)
                        .join(Document, Document.id == Chunk.document_id)
                        .where(Chunk.id.in_(part))
                    ).all()
                    if kind == "dense":
                        feed_dense(dense, rows)
                    else:
                        _feed_lexical(lexical, rows)
                if len(missing):
                    log.warning("%s index %s: added %d rows it lacked", kind, kb_id, len(missing))
                if len(extra) or len(missing):
                    self._dirty.add((key, kind))
        lexical.refresh()

    # -- upkeep off the query path -------------------------------------------------------------

    def _upkeep(self, key: Key) -> None:
        """BM25 merge and flat/IVF switch. A replacement index is built from a copy outside the
        lock, then caught up under the lock with whatever was committed meanwhile, then swapped
        in."""
        with self._lock:
            dense, lexical = self._indexes.get(key), self._lexical.get(key)
        if lexical is not None and lexical.needs_merge():
            started = time.perf_counter()
            lexical.merge()
            with self._lock:
                self._dirty.add((key, "lexical"))
            log.info(
                "BM25 index %s: merged %d documents in %.1f s",
                key,
                len(lexical),
                time.perf_counter() - started,
            )
        if isinstance(dense, KBIndex):  # a backend's index (Milvus) chooses its own layout
            want = self._layout_for(len(dense), dense.layout)
            if want != dense.layout:
                self._relayout(key, dense, want)

    def _layout_for(self, n: int, current: Layout) -> Layout:
        if self.ann_threshold <= 0:
            return "flat"
        if current == "flat":
            return "ivf" if n > self.ann_threshold else "flat"
        return "flat" if n < self.ann_threshold // 2 else "ivf"  # hysteresis: no flapping

    def _relayout(self, key: Key, dense: KBIndex, layout: Layout) -> None:
        started = time.perf_counter()
        seq = dense.last_seq  # read before copying: replaying from an older seq is idempotent
        ids, vectors = dense.vectors()
        fresh = dense.with_layout(layout, ids, vectors)
        fresh.last_seq = seq
        del ids, vectors
        with self._lock:
            if self._indexes.get(key) is not dense:
                return  # dropped or rebuilt meanwhile
            self._catch_up_pair(fresh, self._lexical[key], key)
            self._indexes[key] = fresh
            self._dirty.add((key, "dense"))
        log.info(
            "dense index %s: %d vectors now %s (%.1f s)",
            key,
            len(fresh),
            layout,
            time.perf_counter() - started,
        )


def _expected_ids(
    session: Session, kb_id: str, version: int, seq: int
) -> tuple[np.ndarray, np.ndarray]:
    """The version's chunk ids an index caught up to `seq` must hold (enabled rows at or below
    it), and the ids of rows written after it (new, disabled or enabled since)."""
    of_version = (Chunk.kb_id == kb_id, Chunk.version == version)
    expected = session.execute(
        select(Chunk.id).where(*of_version, Chunk.seq <= seq, Chunk.disabled == false())
    ).scalars()
    later = session.execute(select(Chunk.id).where(*of_version, Chunk.seq > seq)).scalars()
    return np.fromiter(expected, dtype=np.int64), np.fromiter(later, dtype=np.int64)


def feed_dense(index: DenseIndex, rows: Sequence[Any]) -> bool:
    """Add `CHUNK_ROW` rows (or (id, embedding) rows for an index that keeps no texts) to a
    dense index; whether there were any."""
    if not rows:
        return False
    ids = np.fromiter((r.id for r in rows), dtype=np.int64, count=len(rows))
    vectors = np.frombuffer(b"".join(r.embedding for r in rows), dtype=np.float32)
    vectors = vectors.reshape(len(rows), index.dim)
    if keeps_texts(index):
        index.add_with_texts(ids, vectors, [_lexical_text(r) for r in rows])
    else:
        index.add(ids, vectors)
    return True


def _feed_lexical(index: LexicalIndex, rows: Sequence[Any]) -> bool:
    if not rows:
        return False
    # Body, heading path and title as separate fields (LexicalIndex.add_texts says why).
    index.add_texts(
        [r.id for r in rows],
        [r.text for r in rows],
        headings=[r.heading_path or () for r in rows],
        titles=[document_title(r.filename, r.user_metadata) for r in rows],
    )
    return True


def _lexical_text(row: Any) -> str:
    """A `CHUNK_ROW` row as one text for an index with a single analysed field (Milvus' BM25):
    the fields our BM25 keeps apart (`_feed_lexical`'s title and headings), title first."""
    title = document_title(row.filename, row.user_metadata)
    return " ".join([title, *(row.heading_path or ()), row.text])


def document_title(filename: str, metadata: dict[str, Any] | None) -> str:
    """The title BM25 indexes for a document: a "title" given in its metadata at upload, else
    its file name without the extension (the parsers keep no title of their own)."""
    title = (metadata or {}).get("title")
    if isinstance(title, str) and title.strip():
        return title
    return PurePath(filename).stem
