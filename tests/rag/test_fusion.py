"""Fusing the dense and lexical rankings."""

from __future__ import annotations

import pytest

from rag.retrieval.fusion import rrf, weighted


def test_rrf_rewards_agreement() -> None:
    dense = [(1, 0.9), (2, 0.8), (3, 0.7)]
    lexical = [(3, 12.0), (4, 9.0), (1, 1.0)]
    fused = [cid for cid, _ in rrf([dense, lexical], k=60)]
    assert fused[:2] == [1, 3]  # in both lists
    assert set(fused) == {1, 2, 3, 4}


def test_rrf_scores_follow_the_formula_and_weights() -> None:
    fused = dict(rrf([[(7, 0.1)], [(8, 5.0), (7, 1.0)]], k=10, weights=(0.5, 1.0)))
    assert fused[7] == pytest.approx(0.5 / 11 + 1.0 / 12)
    assert fused[8] == pytest.approx(1.0 / 11)


def test_weighted_normalises_each_method() -> None:
    dense = [(1, 0.80), (2, 0.79), (3, 0.10)]
    lexical = [(2, 30.0), (3, 2.0)]
    fused = dict(weighted(dense, lexical, dense_weight=0.5))
    # 2: nearly the best dense and the best lexical score.
    assert max(fused, key=fused.__getitem__) == 2
    # 3: the worst dense score (min-max: 0) and 2/30 of the best BM25 score (divided by the best).
    assert fused[3] == pytest.approx(0.5 * 2.0 / 30.0)
    lexical_only = dict(weighted(dense, lexical, dense_weight=0.0))
    assert lexical_only[1] == 0.0 and lexical_only[2] == pytest.approx(1.0)


def test_weighted_keeps_a_near_best_lexical_score_near_the_top() -> None:
    # Min-max would give the second of two close BM25 scores 0, as if it had not matched.
    fused = dict(weighted([(1, 0.9), (2, 0.1)], [(2, 10.0), (1, 9.5)], dense_weight=0.2))
    assert fused[1] == pytest.approx(0.2 + 0.8 * 0.95)
    assert fused[2] == pytest.approx(0.8)
    assert fused[1] > fused[2]


def test_one_empty_ranking_leaves_the_other_in_order() -> None:
    dense = [(5, 0.9), (6, 0.5), (7, 0.1)]
    assert [c for c, _ in weighted(dense, [])] == [5, 6, 7]
    assert [c for c, _ in rrf([dense, []])] == [5, 6, 7]


def test_ties_keep_first_appearance_dense_then_lexical() -> None:
    dense = [(1, 0.9), (2, 0.5)]
    lexical = [(3, 8.0), (4, 2.0)]
    # 1 and 3 both fuse to 0.5 (each the best of its side, found by one side only); 4 keeps a
    # quarter of the best BM25 score, 2 is the worst dense score.
    assert [c for c, _ in weighted(dense, lexical)] == [1, 3, 4, 2]
    assert [c for c, _ in rrf([dense, lexical])] == [1, 3, 2, 4]


def test_weighted_gives_the_full_weight_when_all_scores_are_equal() -> None:
    fused = dict(weighted([(1, 0.7), (2, 0.7)], [(2, 3.0)], dense_weight=0.25))
    assert fused == {1: 0.25, 2: 1.0}


def test_rrf_adds_the_same_id_from_every_ranking() -> None:
    fused = rrf([[(5, 1.0)], [(5, 2.0)], [(6, 1.0), (5, 0.5)]], k=1)
    assert fused[0][0] == 5
    assert fused[0][1] == pytest.approx(1 / 2 + 1 / 2 + 1 / 3)
