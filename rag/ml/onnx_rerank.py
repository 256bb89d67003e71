"""A cross-encoder run by ONNX Runtime on the CPU, from the int8 (or fp32) export of its folder.

Pairs are tokenised with the folder's fast tokenizer (as sentence-transformers does: truncated
longest-first to `max_length`), sorted by length so each batch carries little padding, and
scored in batches; several threads may score at once. The score is the model's one logit
through the activation sentence-transformers would apply (sigmoid unless the folder's config
names another), so both backends give scores on the same scale.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rag.ml.rerank_budget import BatchedCrossEncoder


class OnnxCrossEncoder(BatchedCrossEncoder):
    def __init__(
        self,
        onnx_file: Path,
        folder: Path,
        *,
        model_name: str,
        max_length: int = 512,
        batch_size: int = 16,
        threads: int = 0,
    ) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        super().__init__(model_name, batch_size=batch_size)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.max_length = max_length
        self._sigmoid = _uses_sigmoid(folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per core
        self._session = ort.InferenceSession(
            str(onnx_file), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = [i.name for i in self._session.get_inputs()]
        # A fast tokenizer changes its truncation state per call: concurrent calls can clash.
        self._tokenizer_lock = threading.Lock()

    def _token_lengths(self, query: str, passages: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self._encode(query, passages)["input_ids"]]

    def _predict(self, query: str, passages: Sequence[str]) -> list[float]:
        encoded = self._encode(query, passages)
        lengths = np.array([len(ids) for ids in encoded["input_ids"]])
        scores = np.empty(len(passages), dtype=np.float64)
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = int(lengths[rows].max())
            feed = {}
            for name in self._inputs:
                batch = np.zeros((len(rows), width), dtype=np.int64)
                if name == "input_ids":
                    batch.fill(self.tokenizer.pad_token_id or 0)
                for i, row in enumerate(rows):
                    values = encoded[name][row]
                    batch[i, : len(values)] = values
                feed[name] = batch
            logits = self._session.run(None, feed)[0]
            scores[rows] = logits[:, 0]
        if self._sigmoid:
            scores = 1.0 / (1.0 + np.exp(-scores))
        return [float(s) for s in scores]

    def _encode(self, query: str, passages: Sequence[str]) -> dict[str, list[list[int]]]:
        # A BatchEncoding of Python lists (no tensors asked): padding is done per batch.
        with self._tokenizer_lock:
            return dict(
                self.tokenizer(
                    [query] * len(passages),
                    list(passages),
                    truncation="longest_first",
                    max_length=self.max_length,
                )
            )


def _config(folder: Path) -> dict[str, object]:
    data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _uses_sigmoid(folder: Path) -> bool:
    """sentence-transformers' rule: the configured activation, else sigmoid for one label.
    Any other monotone activation is left out: it would not change the order."""
    st = _config(folder).get("sentence_transformers")
    name = st.get("activation_fn") if isinstance(st, dict) else None
    if name is None:
        name = _config(folder).get("sbert_ce_default_activation_function")
    return name is None or str(name).endswith("Sigmoid")
