"""Optional cross-encoder reranking of the best fused passages, within a latency budget.

A cross-encoder reads the question and a passage together, which sorts near-misses better than
comparing two independently made vectors, at the price of one transformer pass per passage per
query. Two backends load any sentence-transformers CrossEncoder folder (or hub name): ONNX
Runtime with int8 weights (rag/ml/onnx_rerank.py, the CPU default) and torch. Both learn their
cost per token, so `score_within_budget` reranks only as many candidates as fit the budget
(rag/ml/rerank_budget.py). docs/retrieval.md has the measured latencies.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from rag.core.config import RetrievalSettings
from rag.core.errors import ConfigError
from rag.ml.rerank_budget import BatchedCrossEncoder

log = logging.getLogger(__name__)


class Reranker(Protocol):
    model_name: str

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """One relevance score per passage; higher is more relevant."""
        ...


@runtime_checkable
class BudgetedReranker(Protocol):
    def score_within(
        self, query: str, passages: Sequence[str], budget_s: float, minimum: int
    ) -> list[float]:
        """Scores for the first n passages, n as many as fit `budget_s` (at least `minimum`)."""
        ...


def score_within_budget(
    reranker: Reranker, query: str, passages: Sequence[str], budget_ms: float, minimum: int
) -> list[float]:
    """Scores for a prefix of `passages`: all of them without a budget (0) or when the reranker
    cannot estimate its cost; otherwise as many as fit `budget_ms`, at least `minimum`."""
    if budget_ms > 0 and isinstance(reranker, BudgetedReranker):
        return reranker.score_within(query, passages, budget_ms / 1000, minimum)
    return reranker.score(query, passages)


class CrossEncoderReranker(BatchedCrossEncoder):
    """The torch backend: sentence-transformers' CrossEncoder.predict."""

    def __init__(
        self, model: str, *, device: str = "cpu", max_length: int = 512, batch_size: int = 16
    ) -> None:
        from sentence_transformers import CrossEncoder

        super().__init__(model, batch_size=batch_size)
        self._model = CrossEncoder(model, device=device, max_length=max_length)
        self._max_length = max_length
        # torch modules are not safe to call from several threads at once.
        self._lock = threading.Lock()

    def _token_lengths(self, query: str, passages: Sequence[str]) -> list[int]:
        with self._lock:  # the tokenizer's truncation state is shared with predict
            encoded = self._model.tokenizer(
                [query] * len(passages),
                list(passages),
                truncation="longest_first",
                max_length=self._max_length,
            )
        return [len(ids) for ids in encoded["input_ids"]]

    def _predict(self, query: str, passages: Sequence[str]) -> list[float]:
        with self._lock:
            scores = self._model.predict(
                [(query, p) for p in passages],
                batch_size=self.batch_size,
                show_progress_bar=False,
            )
        return [float(s) for s in scores]


def onnx_available() -> bool:
    return all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx", "onnxscript"))


def resolve_backend(settings: RetrievalSettings) -> str:
    """ "auto": onnx-int8 on the CPU when ONNX Runtime is installed, torch otherwise."""
    if settings.reranker_backend != "auto":
        return settings.reranker_backend
    return "onnx-int8" if settings.reranker_device == "cpu" and onnx_available() else "torch"


def load_reranker(settings: RetrievalSettings) -> Reranker:
    """Load the configured cross-encoder; ConfigError naming the setting when it cannot."""
    backend = resolve_backend(settings)
    try:
        reranker: Reranker
        if backend == "torch":
            reranker = CrossEncoderReranker(
                settings.reranker_model, device=settings.reranker_device
            )
        else:
            reranker = _load_onnx(settings, quantized=backend == "onnx-int8")
    except Exception as exc:  # hub unreachable, missing files, not a classifier, export failed
        raise ConfigError(
            f"cannot load the reranker {settings.reranker_model!r} with the {backend} backend "
            f"({exc.__class__.__name__}: {exc}); set RAG_RETRIEVAL__RERANKER_MODEL to a local "
            "folder with a sentence-transformers CrossEncoder's files, set "
            "RAG_RETRIEVAL__RERANKER_BACKEND=torch to skip the ONNX export, or leave reranking off"
        ) from exc
    log.info("reranker %s loaded (%s)", settings.reranker_model, backend)
    return reranker


def _load_onnx(settings: RetrievalSettings, *, quantized: bool) -> Reranker:
    from transformers import AutoConfig

    from rag.ml.onnx_export import onnx_files
    from rag.ml.onnx_rerank import OnnxCrossEncoder

    folder = _local_folder(settings.reranker_model)
    labels = AutoConfig.from_pretrained(folder).num_labels
    if labels != 1:
        raise ValueError(f"a reranker has one relevance output; this model has {labels}")
    files = onnx_files(folder, _cache_dir(settings))
    return OnnxCrossEncoder(
        files.int8 if quantized else files.fp32,
        folder,
        model_name=settings.reranker_model,
        threads=settings.reranker_threads,
    )


def _local_folder(model: str) -> Path:
    """A folder as is; a hub name through the local hub cache (downloading when reachable)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(model, allow_patterns=["*.json", "*.txt", "*.model", "*.safetensors"])
    )


def _cache_dir(settings: RetrievalSettings) -> Path:
    if settings.reranker_onnx_cache:
        return Path(settings.reranker_onnx_cache).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kbqa" / "rerank-onnx"
