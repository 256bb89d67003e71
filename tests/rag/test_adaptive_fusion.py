"""Adaptive fusion: a query's shape, and the dense share the fitted model gives it."""

from __future__ import annotations

import numpy as np
import pytest

from rag.index.lexical import LexicalIndex
from rag.retrieval import adaptive, fitted_fusion
from rag.retrieval.adaptive import FusionModel
from rag.retrieval.query_shape import FEATURES, is_title_like, shape

UNSEEN = 5.0


def test_title_like_is_short_without_question_words_or_punctuation() -> None:
    assert is_title_like("设置 quilt")
    assert is_title_like("Installing R packages")
    assert not is_title_like("如何设置 quilt")
    assert not is_title_like("设置 quilt？")
    assert not is_title_like("How do I install R packages")
    assert not is_title_like("一" * 41)
    assert not is_title_like("   ")


def test_shape_counts_rare_unknown_ascii_and_codes() -> None:
    s = shape(
        "ThinkPad-X1-G11 保修",
        ["thinkpad-x1-g11", "保修", "期限"],
        np.array([4.0, 1.0, UNSEEN]),
        UNSEEN,
    )
    assert s.terms == 3 and s.chars == len("ThinkPad-X1-G11保修")
    assert s.unknown == pytest.approx(1 / 3)  # "期限": no chunk holds it
    assert s.rare == pytest.approx(1 / 2)  # of the known: 4.0 >= 0.6 x 5, 1.0 is not
    assert s.code and s.title_like
    assert s.ascii == pytest.approx(13 / 17)
    plain = shape("年假有几天？", ["年假", "几天"], np.array([1.0, 1.0]), UNSEEN)
    assert not plain.code and not plain.title_like and plain.ascii == 0.0 and plain.rare == 0.0
    assert len(plain.vector()) == len(FEATURES)
    empty = shape("的", [], np.zeros(0), UNSEEN)
    assert empty.terms == 0 and empty.unknown == 0.0 and empty.rare == 0.0


def _model(**coef: float) -> FusionModel:
    return FusionModel(
        intercept=0.0,
        coefficients=tuple(coef.get(f, 0.0) for f in FEATURES),
        means=(0.0,) * len(FEATURES),
        scales=(1.0,) * len(FEATURES),
    )


def test_the_model_moves_the_dense_share_with_its_features() -> None:
    code = shape("dpkg-buildpackage", ["dpkg-buildpackage"], np.array([4.0]), UNSEEN)
    question = shape("怎样打包软件？", ["打包", "软件"], np.array([1.0, 1.0]), UNSEEN)
    model = _model(code=-3.0, title=-1.0)
    assert model.dense_weight(code) < 0.05 < 0.5 == model.dense_weight(question)
    assert _model().dense_weight(code) == 0.5  # all-zero coefficients: equal weights
    bounded = FusionModel(0.0, (50.0,) * len(FEATURES), (0.0,) * 7, (1.0,) * 7, 0.2, 0.8)
    assert 0.2 <= bounded.dense_weight(code) <= 0.8


def test_a_model_of_other_features_or_bad_range_is_refused() -> None:
    raw = dict(fitted_fusion.MODEL)
    with pytest.raises(ValueError, match="features"):
        FusionModel.from_dict({**raw, "features": ["chars"]})
    with pytest.raises(ValueError, match="low <= high"):
        FusionModel.from_dict({**raw, "low": 0.9, "high": 0.1})
    with pytest.raises(ValueError, match="one coefficient per feature"):
        FusionModel(0.0, (1.0,), (0.0,), (1.0,))


def test_the_fitted_model_loads_and_gives_a_share_in_range() -> None:
    lexical = LexicalIndex("kb")
    lexical.add_texts([1, 2, 3], ["安装 dpkg 软件包", "年假 十天", "报销 发票 原件"])
    for query in ("dpkg", "年假有几天？", "打包软件的完整流程是怎样的", "x86_64 内核"):
        weight = adaptive.dense_weight(lexical, query)
        assert adaptive.FITTED.low <= weight <= adaptive.FITTED.high
    s = adaptive.query_shape(lexical, "dpkg rpm")
    assert s.unknown == pytest.approx(0.5) and s.code is False
