"""Embedders: one batch method for passages, one for queries, normalised float32 vectors.

`load_embedder` is the single registry: a hub name or local folder loads sentence-transformers;
`fake:<dim>` is a deterministic, meaningful-enough embedder for tests (character n-gram hashing),
registered through the same mechanism the real model uses.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from rag.core.errors import ConfigError

if TYPE_CHECKING:
    from rag.core.config import EmbeddingSettings

log = logging.getLogger(__name__)
_RECENT_QUERIES = 64


class Embedder(Protocol):
    model_name: str
    dim: int

    def embed_passages(self, texts: list[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


class SentenceTransformerEmbedder:
    """bge-small-zh-v1.5 in production; any sentence-transformers model or local folder."""

    def __init__(
        self,
        model: str,
        *,
        name: str | None = None,
        device: str = "cpu",
        batch_size: int = 32,
        query_instruction: str = "",
        max_seq_length: int = 512,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        try:
            self._model = SentenceTransformer(model, device=device)
        except Exception as exc:  # hub unreachable, missing folder, corrupt weights
            raise ConfigError(
                f"RAG_EMBEDDING__MODEL={model!r} could not be loaded ({exc.__class__.__name__}: "
                f"{exc}). Point it at a local folder (see README: offline models) or make the "
                "model hub reachable."
            ) from exc
        self._model.max_seq_length = min(max_seq_length, self._model.max_seq_length or 512)
        # The configured name, not a resolved path: it is what SQL records next to each vector.
        self.model_name = name or model
        # sentence-transformers 5 renamed the method; keep working with both.
        get_dim = getattr(self._model, "get_embedding_dimension", None)
        if get_dim is None:
            get_dim = self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise ConfigError(f"RAG_EMBEDDING__MODEL={model!r} does not report its dimension")
        self.dim = int(dim)
        self.batch_size = batch_size
        self.query_instruction = query_instruction
        # torch modules are not safe to call from several threads at once.
        self._lock = threading.Lock()
        # The latest queries' vectors: the "not covered" check (rag/retrieval/relevance.py)
        # embeds the question retrieval has just embedded.
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return _normalise(vectors)

    def embed_query(self, text: str) -> np.ndarray:
        with self._lock:
            found = self._recent.get(text)
            if found is not None:
                self._recent.move_to_end(text)
                return found.copy()
            vector = _normalise(
                self._model.encode(
                    [self.query_instruction + text],
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            )[0]
            self._recent[text] = vector
            if len(self._recent) > _RECENT_QUERIES:
                self._recent.popitem(last=False)
        return vector.copy()


class FakeEmbedder:
    """Hashes character uni- and bi-grams into `dim` buckets: texts sharing words score higher."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.model_name = f"fake:{dim}"

    def _one(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        compact = "".join(text.lower().split())
        grams = list(compact) + [compact[i : i + 2] for i in range(len(compact) - 1)]
        for gram in grams:
            digest = hashlib.blake2b(gram.encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dim
            sign = 1.0 if digest[4] & 1 else -1.0
            vec[bucket] += sign
        return vec

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise(np.stack([self._one(t) for t in texts]))

    def embed_query(self, text: str) -> np.ndarray:
        return _normalise(self._one(text)[None, :])[0]


def load_embedder(settings: EmbeddingSettings) -> Embedder:
    model = settings.model
    if model.startswith("fake:"):
        return FakeEmbedder(int(model.split(":", 1)[1] or 64))
    if Path(model).expanduser().is_dir():
        model = str(Path(model).expanduser().resolve())
    log.info("loading embedding model %s on %s", model, settings.device)
    return SentenceTransformerEmbedder(
        model,
        name=settings.model,
        device=settings.device,
        batch_size=settings.batch_size,
        query_instruction=settings.resolved_query_instruction(),
        max_seq_length=settings.max_seq_length,
    )
