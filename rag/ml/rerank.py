"""Optional cross-encoder reranking of the best fused passages.

A cross-encoder reads the question and a passage together, which sorts near-misses better than
comparing two independently made vectors, at the price of one transformer pass per passage per
query (README "Retrieval quality" has the CPU cost). Any sentence-transformers CrossEncoder
loads: the default BAAI/bge-reranker-base by hub name, or a local folder with its files.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from rag.core.config import RetrievalSettings
from rag.core.errors import ConfigError

log = logging.getLogger(__name__)


class Reranker(Protocol):
    model_name: str

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """One relevance score per passage; higher is more relevant."""
        ...


class CrossEncoderReranker:
    def __init__(self, model: str, *, device: str = "cpu", max_length: int = 512) -> None:
        from sentence_transformers import CrossEncoder

        self.model_name = model
        self._model = CrossEncoder(model, device=device, max_length=max_length)
        # torch modules are not safe to call from several threads at once.
        self._lock = threading.Lock()

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        with self._lock:
            scores = self._model.predict(
                [(query, p) for p in passages], batch_size=16, show_progress_bar=False
            )
        return [float(s) for s in scores]


def load_reranker(settings: RetrievalSettings) -> Reranker:
    """Load the configured cross-encoder; ConfigError naming the setting when it cannot."""
    try:
        reranker = CrossEncoderReranker(settings.reranker_model, device=settings.reranker_device)
    except Exception as exc:  # hub unreachable, missing files, not a classification model
        raise ConfigError(
            f"cannot load the reranker {settings.reranker_model!r} ({exc.__class__.__name__}: "
            f"{exc}); set RAG_RETRIEVAL__RERANKER_MODEL to a local folder with its files, or "
            "leave reranking off"
        ) from exc
    log.info("reranker %s loaded", settings.reranker_model)
    return reranker
