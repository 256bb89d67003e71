"""What the index store and retrieval need of a dense index, and of a backend that keeps them.

`DenseIndex` is met by `KBIndex` (FAISS in the process, the default) and by `MilvusIndex`
(rag/index/milvus.py, RAG_INDEX__BACKEND=milvus); a Milvus collection that also ranks chunk
texts by BM25 (RAG_INDEX__MILVUS_LEXICAL=milvus) is a `FullTextIndex` too. `DenseBackend`
creates, loads and drops a knowledge base's dense index per index version where the store does
not keep it on local disk.
Either way the index is derived from SQL by the store's sequence and tombstone catch-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TypeGuard, runtime_checkable

import numpy as np


class DenseIndex(Protocol):
    """One index version's vectors, keyed by SQL chunk id, caught up to `last_seq`."""

    kb_id: str
    embedding_model: str
    dim: int
    last_seq: int

    def __len__(self) -> int: ...

    @property
    def layout(self) -> str:
        """ "flat" or "ivf" for FAISS (the store switches between them), else the backend's name."""
        ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add or replace: an id already present gets the new vector."""
        ...

    def remove(self, ids: np.ndarray | list[int]) -> int:
        """Remove these ids; how many were present."""
        ...

    def ids(self) -> np.ndarray: ...

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Top k (chunk id, cosine) best first, within `allowed` ids when given."""
        ...

    def search_threads(self, total: int) -> int:
        """Threads one query uses in this process (retrieval overlaps BM25 only beside one)."""
        ...

    def save(self, directory: Path) -> object:
        """Record what was applied (up to `last_seq`) durably; `directory` is the version's
        local snapshot folder, which a remote backend need not use."""
        ...


@runtime_checkable
class FullTextIndex(Protocol):
    """A dense index that also keeps each chunk's lexical text and ranks it by BM25 itself (a
    Milvus collection created with RAG_INDEX__MILVUS_LEXICAL=milvus). Its rows need the text,
    so the store feeds it with `add_with_texts` rather than `DenseIndex.add`."""

    # Whether retrieval takes its lexical candidates from `search_text` (the setting now);
    # the texts are kept either way, so the setting can be turned on again without a rebuild.
    text_search: bool

    def add_with_texts(self, ids: np.ndarray, vectors: np.ndarray, texts: Sequence[str]) -> None:
        """`DenseIndex.add`, with each chunk's lexical text (title, heading path and body)."""
        ...

    def search_text(
        self, query: str, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Top k (chunk id, BM25 score) for the raw query text, within `allowed` ids."""
        ...


_KEEPS_TEXTS: dict[type, bool] = {}


def keeps_texts(index: object) -> TypeGuard[FullTextIndex]:
    """Whether `index` is a `FullTextIndex`, answered once per class: a runtime protocol check
    costs tens of microseconds, too much to pay on every query."""
    kind = type(index)
    known = _KEEPS_TEXTS.get(kind)
    if known is None:
        known = _KEEPS_TEXTS[kind] = isinstance(index, FullTextIndex)
    return known


class DenseBackend(Protocol):
    """Dense indexes kept outside the store's snapshot folders (a shared vector database)."""

    name: str

    def create(self, kb_id: str, version: int, embedding_model: str, dim: int) -> DenseIndex:
        """An empty index for this version, replacing whatever the backend held for it."""
        ...

    def load(self, kb_id: str, version: int, embedding_model: str, dim: int) -> DenseIndex:
        """The version's index as the backend holds it; IndexUnusable when it is missing or
        was built with another model, so that the store rebuilds it from SQL."""
        ...

    def drop(self, kb_id: str, version: int | None = None) -> None:
        """Delete one version's index, or every version's when `version` is None."""
        ...

    def promote(self, kb_id: str, version: int) -> None:
        """Name `version` as the knowledge base's live one (an alias), for outside readers."""
        ...

    def close(self) -> None:
        """Let the connection go (when the services or a command close)."""
        ...


class IdSnapshot:
    """A private copy of an index's ids that catch-up can update without writing to the index
    (`IndexStore.inspect` on a shared backend); it cannot search."""

    def __init__(self, index: DenseIndex) -> None:
        self.kb_id, self.embedding_model = index.kb_id, index.embedding_model
        self.dim, self.last_seq = index.dim, index.last_seq
        self.layout = index.layout
        self._ids = set(index.ids().tolist())

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._ids.update(np.asarray(ids, dtype=np.int64).tolist())

    def remove(self, ids: np.ndarray | list[int]) -> int:
        present = self._ids.intersection(np.asarray(ids, dtype=np.int64).tolist())
        self._ids -= present
        return len(present)

    def ids(self) -> np.ndarray:
        return np.array(sorted(self._ids), dtype=np.int64)

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        raise NotImplementedError("an id snapshot is for comparisons, not search")

    def search_threads(self, total: int) -> int:
        return 1

    def save(self, directory: Path) -> None:
        raise NotImplementedError("an id snapshot is never saved")
