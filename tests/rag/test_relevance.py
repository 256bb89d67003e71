"""The absolute relevance of hits (rag/retrieval/relevance.py), the threshold calibration
(rag/retrieval/calibration.py) and the learned dictionary suggestions (rag/kb/lexicon.py)."""

from __future__ import annotations

import numpy as np
import pytest

from rag.core.errors import InvalidInput
from rag.kb.lexicon import check_terms, suggestions
from rag.retrieval.calibration import choose_threshold, questions_of
from rag.retrieval.relevance import (
    COVERAGE_ONLY,
    FITTED,
    coverage,
    default_threshold,
    model_for,
)


def test_coverage_is_the_weighted_share_of_terms_found() -> None:
    terms, weights = ["年假", "天数", "如何"], np.asarray([3.0, 1.0, 0.0], dtype=np.float32)
    assert coverage(terms, weights, ["年假", "员工"]) == pytest.approx(0.75)
    assert coverage(terms, weights, ["天数", "年假"]) == pytest.approx(1.0)
    assert coverage(terms, weights, ["红烧肉"]) == 0.0
    assert coverage([], np.zeros(0, dtype=np.float32), ["年假"]) == 0.0


def test_model_rises_with_both_signals() -> None:
    model = FITTED["m3e-small"]
    assert model.cosine_weight > 0 and model.coverage_weight > 0
    low, high = model.probability(0.5, 0.0), model.probability(0.9, 1.0)
    assert 0.0 <= low < high <= 1.0
    assert model.probability(0.9, 0.2) < model.probability(0.9, 0.8)


def test_model_for_another_embedding_model_ignores_the_cosine() -> None:
    assert model_for("/opt/models/m3e-small") is FITTED["m3e-small"]
    assert model_for("fake:64") is COVERAGE_ONLY
    assert COVERAGE_ONLY.cosine_weight == 0.0


def test_threshold_separates_and_keeps_answerable_answered() -> None:
    answerable = [0.9, 0.8, 0.85, 0.7, 0.95, 0.75, 0.9, 0.88, 0.92, 0.2]
    unanswerable = [0.1, 0.3, 0.05, 0.4, 0.2]
    t = choose_threshold(answerable, unanswerable, min_answered=0.9)
    assert 0.4 < t <= 0.7
    assert sum(v >= t for v in answerable) >= 9 and all(v < t for v in unanswerable)
    # Keeping every answerable question answered forces the threshold down to the lowest one.
    assert choose_threshold(answerable, unanswerable, min_answered=1.0) <= 0.2
    with pytest.raises(InvalidInput):
        choose_threshold([], unanswerable, 0.9)


def test_golden_questions_are_checked() -> None:
    assert questions_of([{"question": " 年假？ ", "answer_excerpt": "x"}]) == ["年假？"]
    with pytest.raises(InvalidInput, match="#2"):
        questions_of([{"question": "a"}, {"id": 1}])


def test_terms_are_checked_and_folded() -> None:
    assert check_terms(["ＶＰＮ网关", "vpn网关", "星河云盘"]) == ["vpn网关", "星河云盘"]
    for bad in (["x" * 33], [" "], ["a b"], [7], ["t"] * 5001):
        with pytest.raises(InvalidInput):
            check_terms(bad)


def test_suggestions_find_cohesive_runs_jieba_splits() -> None:
    texts = [
        "星河云盘的客户端支持断点续传，星河云盘的管理员可以设置配额。",
        "请在星河云盘控制台查看日志。今天天气很好，我们去公园。",
    ] * 5
    found = {s.term: s for s in suggestions(texts, set(), min_count=5)}
    assert "星河云盘" in found
    assert len(found["星河云盘"].pieces) >= 2 and found["星河云盘"].count == 15
    assert found["星河云盘"].cohesion >= 0.5
    assert "星河云盘" not in {s.term for s in suggestions(texts, {"星河云盘"}, min_count=5)}
    assert suggestions([], set()) == []


def test_default_threshold_only_where_the_model_was_fitted() -> None:
    assert default_threshold("/models/m3e-small", 0.4) == 0.4
    assert default_threshold("fake:64", 0.4) == 0.0  # never refuses until calibrated
