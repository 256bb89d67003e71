"""Adaptive fusion: the dense share of a hybrid search chosen per query from the query's shape
(rag/retrieval/query_shape.py) by a small logistic model, instead of one global constant.

dense share = low + (high - low) * sigmoid(intercept + coefficients . standardised features).
The coefficients are fitted offline on the training golden sets by bench/fit_fusion.py, which
writes them to rag/retrieval/fitted_fusion.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rag.index.lexical import LexicalIndex
from rag.retrieval import fitted_fusion
from rag.retrieval.query_shape import FEATURES, QueryShape, shape


@dataclass(frozen=True)
class FusionModel:
    intercept: float
    coefficients: tuple[float, ...]  # one per FEATURES entry
    means: tuple[float, ...]  # feature standardisation, from the training queries
    scales: tuple[float, ...]
    low: float = 0.0  # the dense share's range
    high: float = 1.0

    def __post_init__(self) -> None:
        if not len(self.coefficients) == len(self.means) == len(self.scales) == len(FEATURES):
            raise ValueError(f"a fusion model needs one coefficient per feature {FEATURES}")
        if not 0.0 <= self.low <= self.high <= 1.0:
            raise ValueError("a fusion model needs 0 <= low <= high <= 1")

    def dense_weight(self, query: QueryShape) -> float:
        return self.weight_of(query.vector())

    def weight_of(self, features: np.ndarray) -> float:
        z = self.intercept + float(
            np.dot(self.coefficients, (features - self.means) / np.asarray(self.scales))
        )
        return self.low + (self.high - self.low) / (1.0 + math.exp(-max(min(z, 30.0), -30.0)))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FusionModel:
        def floats(key: str) -> tuple[float, ...]:
            values: Sequence[float] = raw[key]
            return tuple(float(v) for v in values)

        names = tuple(raw["features"])
        if names != FEATURES:
            raise ValueError(f"fusion model fitted on features {names}, the code has {FEATURES}")
        return cls(
            intercept=float(raw["intercept"]),
            coefficients=floats("coefficients"),
            means=floats("means"),
            scales=floats("scales"),
            low=float(raw["low"]),
            high=float(raw["high"]),
        )


FITTED = FusionModel.from_dict(fitted_fusion.MODEL)


def query_shape(lexical: LexicalIndex, query: str) -> QueryShape:
    """The shape of `query` against one knowledge base's BM25 statistics."""
    terms = list(lexical.analyzer.query_terms(query))
    idf, unseen = lexical.term_idf(terms)
    return shape(query, terms, idf, unseen)


def dense_weight(lexical: LexicalIndex, query: str, model: FusionModel = FITTED) -> float:
    """The dense share of the weighted fusion for `query` in this knowledge base."""
    return model.dense_weight(query_shape(lexical, query))
