"""Dense indexes in Milvus (RAG_INDEX__BACKEND=milvus): one collection per knowledge base and
index version, keyed by SQL chunk id, with an alias per knowledge base on its live version.

The collections are derived from SQL like the FAISS snapshots (rag/index/store.py): the store
upserts chunks above the collection's applied sequence number and deletes tombstoned ids, so
a lost or wiped Milvus is rebuilt from SQL. The number is kept in the collection's properties,
so replicas sharing one Milvus resume where any of them got to. Works with Milvus standalone or
cluster (an http:// URI) and with Milvus Lite (a local `.db` file; development only).
RAG_INDEX__MILVUS_LEXICAL=milvus adds the chunks' texts for Milvus' BM25 (`MilvusTextIndex`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pymilvus import DataType, Function, FunctionType, MilvusClient, MilvusException

from rag.core.errors import IndexUnavailable, IndexUnusable

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_SEQ = "kbqa.last_seq"
_MODEL = "kbqa.embedding_model"
_BATCH = 1000  # rows per upsert, ids per delete or lookup
_MAX_K = 16384  # Milvus' limit on a search's top k
# A replica reads its own writes at once (the store searches right after catching up) without
# waiting for every other writer, as "Strong" would.
_CONSISTENCY = "Session"
# HNSW's build parameters, given explicitly: Milvus 2.3 refuses an HNSW index without them
# ("efConstruction out of range"). Searches explore at least HNSW_EF candidates: Milvus' default
# ef is the search's limit. On Milvus standalone 2.3.5 (10k clustered 512-d vectors, sealed
# segments) recall@10 was 0.35 at that default, 0.91 at ef 128, 0.98 at 256, 0.997 at 512, for
# about 1-2 ms more per search (bench/REPORT.md, "Milvus standalone").
HNSW_BUILD = {"M": 16, "efConstruction": 200}
HNSW_EF = 256
# The full-text fields: the analysed text, and the sparse vector Milvus' BM25 function derives.
_TEXT, _SPARSE = "text", "sparse"
# Milvus' default (and Lite's) limit on a VARCHAR's max_length. It counts UTF-8 bytes, not
# characters: a chunk of CJK text takes 3 per character.
_TEXT_BYTES = 65_535
# jieba, not {"type": "chinese"}: Milvus Lite knows only the "standard" and "jieba" tokenizers.
_ANALYZER = {"tokenizer": "jieba"}


def _call(what: str, fn: Callable[[], _T]) -> _T:
    """A Milvus call; an unreachable or failing server is IndexUnavailable (503), never taken
    for a broken index that would be rebuilt."""
    try:
        return fn()
    except MilvusException as exc:
        raise IndexUnavailable(f"Milvus: {what} failed: {exc}") from exc


class MilvusIndex:
    """One index version's vectors in a Milvus collection (the store's `DenseIndex`)."""

    def __init__(
        self,
        client: MilvusClient,
        collection: str,
        *,
        kb_id: str,
        embedding_model: str,
        dim: int,
        last_seq: int = 0,
        flush_on_save: bool = False,
        hnsw: bool = False,
    ) -> None:
        self.client = client
        self.collection = collection
        self.flush_on_save = flush_on_save
        self.hnsw = hnsw  # an HNSW graph (or AUTOINDEX, which Milvus builds as one): pass ef
        self.kb_id = kb_id
        self.embedding_model = embedding_model
        self.dim = dim
        self.last_seq = last_seq

    def __len__(self) -> int:
        rows = _call(
            "count",
            lambda: self.client.query(self.collection, filter="", output_fields=["count(*)"]),
        )
        return int(rows[0]["count(*)"])

    @property
    def layout(self) -> str:
        return "milvus"

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._upsert(ids, vectors)

    def _upsert(
        self, ids: np.ndarray, vectors: np.ndarray, texts: Sequence[str] | None = None
    ) -> None:
        if len(ids) == 0:
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise IndexUnusable(
                f"vectors of shape {vectors.shape} do not fit index dimension {self.dim}"
            )
        for start in range(0, len(ids), _BATCH):
            rows: list[dict[str, Any]] = [
                {"id": int(i), "vector": v}
                for i, v in zip(
                    ids[start : start + _BATCH].tolist(),
                    vectors[start : start + _BATCH].tolist(),
                    strict=True,
                )
            ]
            if texts is not None:
                for row, text in zip(rows, texts[start : start + _BATCH], strict=True):
                    row[_TEXT] = text
            _call("upsert", partial(self.client.upsert, self.collection, rows))

    def remove(self, ids: np.ndarray | list[int]) -> int:
        wanted = [int(i) for i in np.asarray(ids, dtype=np.int64).tolist()]
        removed = 0
        for start in range(0, len(wanted), _BATCH):
            part = wanted[start : start + _BATCH]
            # Milvus acknowledges every id it is asked to delete: count the present ones.
            present = [int(row["id"]) for row in self._lookup(part)]
            if present:
                _call("delete", partial(self.client.delete, self.collection, ids=present))
            removed += len(present)
        return removed

    def _lookup(self, ids: list[int]) -> list[dict[str, Any]]:
        return _call(
            "query",
            lambda: self.client.query(
                self.collection, filter=_id_filter(ids), output_fields=["id"], limit=len(ids)
            ),
        )

    def ids(self) -> np.ndarray:
        return np.fromiter(self._iter_ids(), dtype=np.int64)

    def _iter_ids(self) -> Iterator[int]:
        batches = _call(
            "query",
            lambda: self.client.query_iterator(
                self.collection, batch_size=10_000, filter="", output_fields=["id"]
            ),
        )
        try:
            while batch := _call("query", batches.next):
                yield from (int(row["id"]) for row in batch)
        finally:
            batches.close()

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        if k <= 0 or (allowed is not None and len(allowed) == 0):
            return []
        vector = np.asarray(query, dtype=np.float32).reshape(-1).tolist()
        where = "" if allowed is None else _id_filter(np.asarray(allowed).tolist())
        found = _call(
            "search",
            lambda: self.client.search(
                self.collection,
                data=[vector],
                limit=min(k, _MAX_K),
                filter=where,
                output_fields=["id"],
                anns_field="vector",  # a full-text collection has a second (sparse) one
                search_params={"metric_type": "IP", **self._effort(k)},
            ),
        )
        return [(int(hit["id"]), float(hit["distance"])) for hit in found[0]]

    def _effort(self, k: int) -> dict[str, Any]:
        return {"params": {"ef": max(k, HNSW_EF)}} if self.hnsw else {}

    def search_threads(self, total: int) -> int:
        return 1  # the work happens in Milvus

    def save(self, directory: Path) -> int:
        """Record `last_seq` in the collection; a replica that is behind never lowers it (a
        lower number only makes the next loader replay more, which upserts make harmless)."""
        if self.flush_on_save:
            _call("flush", partial(self.client.flush, self.collection))
        stored = _applied(self.client, self.collection)
        if self.last_seq > stored:
            _call(
                "alter properties",
                lambda: self.client.alter_collection_properties(
                    self.collection, properties={_SEQ: str(self.last_seq)}
                ),
            )
        return max(stored, self.last_seq)


class MilvusTextIndex(MilvusIndex):
    """A collection that also keeps each chunk's lexical text, ranked by Milvus' BM25 function
    (the store's `FullTextIndex`); `text_search`: whether retrieval asks it for lexical hits."""

    text_search = True

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        raise TypeError(f"{self.collection} keeps chunk texts: add rows with add_with_texts")

    def add_with_texts(self, ids: np.ndarray, vectors: np.ndarray, texts: Sequence[str]) -> None:
        if len(texts) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
        self._upsert(ids, vectors, [_fit(t) for t in texts])

    def search_text(
        self, query: str, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        if k <= 0 or not query.strip() or (allowed is not None and len(allowed) == 0):
            return []
        where = "" if allowed is None else _id_filter(np.asarray(allowed).tolist())
        found = _call(
            "full-text search",
            lambda: self.client.search(
                self.collection,
                data=[query],  # Milvus analyses it with the field's analyzer
                limit=min(k, _MAX_K),
                filter=where,
                output_fields=["id"],
                anns_field=_SPARSE,
                search_params={"metric_type": "BM25"},
            ),
        )
        # Milvus Lite 3.2 reports BM25 scores negated (best first all the same); BM25 is never
        # negative, and weighted fusion divides by the best score, so the magnitude is taken.
        return [(int(hit["id"]), abs(float(hit["distance"]))) for hit in found[0]]


class MilvusBackend:
    """The store's `DenseBackend` on one Milvus: collections `<prefix>_<kb>_v<n>`, and an
    alias `<prefix>_<kb>` on the live version's."""

    name = "milvus"

    def __init__(
        self,
        client: MilvusClient,
        *,
        prefix: str = "kbqa",
        flush_on_save: bool = False,
        index_type: str = "AUTOINDEX",
        full_text: bool = False,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.index_type = index_type  # of collections created from now on
        # RAG_INDEX__MILVUS_LEXICAL=milvus: collections keep chunk texts for BM25 and retrieval
        # ranks them there; one created without them is unusable (rebuilt by the store).
        self.full_text = full_text
        # Milvus Lite searches rows not yet flushed by brute force in Python (seconds at 10k
        # chunks), so its indexes flush when saved; a server seals segments itself.
        self.flush_on_save = flush_on_save
        self._promoted: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def connect(
        cls,
        uri: str,
        *,
        token: str | None = None,
        prefix: str = "kbqa",
        index_type: str = "AUTOINDEX",
        full_text: bool = False,
    ) -> MilvusBackend:
        """A backend on the Milvus at `uri` (http://host:19530, or a Milvus Lite `.db` file)."""
        client = _call("connect", lambda: MilvusClient(uri=uri, token=token or ""))
        return cls(
            client,
            prefix=prefix,
            flush_on_save=uri.endswith(".db"),
            index_type=index_type,
            full_text=full_text,
        )

    def collection(self, kb_id: str, version: int) -> str:
        return f"{self.alias(kb_id)}_v{version}"

    def alias(self, kb_id: str) -> str:
        return f"{self.prefix}_{re.sub(r'[^0-9A-Za-z_]', '_', kb_id)}"

    def create(self, kb_id: str, version: int, embedding_model: str, dim: int) -> MilvusIndex:
        name = self.collection(kb_id, version)
        self._drop_collection(name)
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        # Vectors are normalised: inner product is the cosine, as in FAISS. AUTOINDEX lets
        # Milvus choose: HNSW on standalone, and on Lite where faiss is importable (else a
        # brute-force scan); FLAT is exact.
        index = self.client.prepare_index_params()
        build = HNSW_BUILD if self.index_type == "HNSW" else {}
        index.add_index(
            field_name="vector", index_type=self.index_type, metric_type="IP", params=build
        )
        if self.full_text:
            schema.add_field(
                _TEXT,
                DataType.VARCHAR,
                max_length=_TEXT_BYTES,
                enable_analyzer=True,
                analyzer_params=_ANALYZER,
            )
            schema.add_field(_SPARSE, DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=[_TEXT],
                    output_field_names=[_SPARSE],
                )
            )
            index.add_index(
                field_name=_SPARSE, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25"
            )
        _call(
            "create collection",
            lambda: self.client.create_collection(
                name,
                schema=schema,
                index_params=index,
                consistency_level=_CONSISTENCY,
                properties={_SEQ: "0", _MODEL: embedding_model},
            ),
        )
        log.info(
            "Milvus collection %s created (%s, %d-d%s)",
            name,
            embedding_model,
            dim,
            ", BM25 full text" if self.full_text else "",
        )
        return self._index(name, kb_id, embedding_model, dim, 0, self.full_text)

    def load(self, kb_id: str, version: int, embedding_model: str, dim: int) -> MilvusIndex:
        name = self.collection(kb_id, version)
        if not _call("list", lambda: self.client.has_collection(name)):
            raise IndexUnusable(f"no Milvus collection {name}")
        described = _call("describe", lambda: self.client.describe_collection(name))
        model = (described.get("properties") or {}).get(_MODEL)
        have = next(
            (f.get("params", {}).get("dim") for f in described["fields"] if f["name"] == "vector"),
            None,
        )
        if model != embedding_model or have is None or int(have) != dim:
            raise IndexUnusable(
                f"Milvus collection {name} holds {model} ({have}-d), "
                f"not {embedding_model} ({dim}-d)"
            )
        # A collection with the text field works either way (its texts are kept up to date);
        # one without it cannot serve BM25, so the store rebuilds it from SQL.
        has_text = any(f["name"] == _TEXT for f in described["fields"])
        if self.full_text and not has_text:
            raise IndexUnusable(
                f"Milvus collection {name} keeps no chunk texts for BM25 "
                "(created before RAG_INDEX__MILVUS_LEXICAL=milvus)"
            )
        _call("load", lambda: self.client.load_collection(name))
        return self._index(name, kb_id, embedding_model, dim, _applied(self.client, name), has_text)

    def _index(
        self, name: str, kb_id: str, embedding_model: str, dim: int, last_seq: int, text: bool
    ) -> MilvusIndex:
        kind = MilvusTextIndex if text else MilvusIndex
        index = kind(
            self.client,
            name,
            kb_id=kb_id,
            embedding_model=embedding_model,
            dim=dim,
            last_seq=last_seq,
            flush_on_save=self.flush_on_save,
            hnsw=self.index_type != "FLAT",
        )
        if isinstance(index, MilvusTextIndex):
            index.text_search = self.full_text
        return index

    def drop(self, kb_id: str, version: int | None = None) -> None:
        if version is not None:
            self._drop_collection(self.collection(kb_id, version))
            return
        with self._lock:
            self._promoted.pop(kb_id, None)
        stem = self.alias(kb_id) + "_v"
        for name in _call("list", self.client.list_collections):
            if name.startswith(stem) and name[len(stem) :].isdigit():
                self._drop_collection(name)

    def promote(self, kb_id: str, version: int) -> None:
        with self._lock:
            if self._promoted.get(kb_id) == version:
                return
            alias, name = self.alias(kb_id), self.collection(kb_id, version)
            existing = _call("aliases", lambda: self.client.list_aliases(name)).get("aliases", [])
            if alias not in existing:
                # Asked first rather than tried: pymilvus logs every failed call as an error.
                every = _call("aliases", self.client.list_aliases).get("aliases", [])
                if alias in every:
                    _call("alias", lambda: self.client.alter_alias(name, alias))
                else:
                    _call("alias", lambda: self.client.create_alias(name, alias))
            self._promoted[kb_id] = version

    def close(self) -> None:
        self.client.close()

    def _drop_collection(self, name: str) -> None:
        if not _call("list", lambda: self.client.has_collection(name)):
            return
        # Milvus refuses to drop a collection an alias points at.
        for alias in _call("aliases", lambda: self.client.list_aliases(name)).get("aliases", []):
            _call("drop alias", partial(self.client.drop_alias, alias))
        with self._lock:
            for kb_id, version in list(self._promoted.items()):
                if self.collection(kb_id, version) == name:
                    del self._promoted[kb_id]
        _call("drop collection", lambda: self.client.drop_collection(name))
        log.info("Milvus collection %s dropped", name)


def _applied(client: MilvusClient, name: str) -> int:
    described = _call("describe", lambda: client.describe_collection(name))
    return int((described.get("properties") or {}).get(_SEQ, 0))


def _fit(text: str) -> str:
    """The text cut to the field's byte limit at a character boundary: a longer value would
    fail the whole upsert batch, and a cut inside a multi-byte character is invalid UTF-8."""
    data = text.encode()
    if len(data) <= _TEXT_BYTES:
        return text
    return data[:_TEXT_BYTES].decode(errors="ignore")


def _id_filter(ids: list[int]) -> str:
    return f"id in [{','.join(str(int(i)) for i in ids)}]"
