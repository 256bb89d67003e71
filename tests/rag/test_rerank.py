"""Reranking: the real CrossEncoder loading code on a tiny locally built model, and the rerank
stage's effect on the order (with a stand-in scorer)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from ingest.upload import stage_upload
from rag.core.config import RetrievalSettings
from rag.core.errors import ConfigError
from rag.ml.rerank import CrossEncoderReranker, load_reranker
from rag.services import Services


def _tiny_cross_encoder(folder: Path) -> Path:
    """A 1-layer BERT sequence classifier with a character vocabulary, saved like a hub model."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    chars = sorted(
        set("年假报销设备员工手册多少天怎么提交的是和有一二三十abcdefghijklmnopqrstuvwxyz")
    )
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(str(folder / "vocab.txt"), tokenize_chinese_chars=True).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_a_local_cross_encoder_folder_loads_and_scores(tmp_path: Path) -> None:
    folder = _tiny_cross_encoder(tmp_path / "reranker")
    reranker = load_reranker(RetrievalSettings(reranker_model=str(folder)))
    assert isinstance(reranker, CrossEncoderReranker)
    scores = reranker.score("年假有多少天", ["员工有十天年假", "报销怎么提交", "设备"])
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
    assert reranker.score("q", []) == []


def test_an_unloadable_model_names_the_setting(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="RAG_RETRIEVAL__RERANKER_MODEL"):
        load_reranker(RetrievalSettings(reranker_model=str(empty)))


class PrefersWord:
    model_name = "prefers-word"

    def __init__(self, word: str) -> None:
        self.word = word
        self.calls: list[int] = []

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        self.calls.append(len(passages))
        return [float(p.count(self.word)) for p in passages]


def test_rerank_reorders_the_fused_candidates(services: Services, tmp_path: Path) -> None:
    kb = services.knowledge.create_kb("kb").id
    text = "\n\n".join(
        [f"第{i}章 年假\n\n年假说明第{i}条。" for i in range(8)]
        + ["附录 年假\n\n年假与设备、设备、设备。"]
    )
    path = tmp_path / "手册.txt"
    path.write_text(text, encoding="utf-8")
    with path.open("rb") as fh:
        services.knowledge.add_document(
            kb, stage_upload(fh, "手册.txt", services.settings.data_dir, 10**8)
        )
    worker = services.worker()
    while worker.run_once():
        pass
    scorer = PrefersWord("设备")
    services._reranker = scorer
    plain = services.retriever.search(kb, "年假", 3, rerank=False)
    assert scorer.calls == []
    reranked = services.retriever.search(kb, "年假", 3, rerank=True)
    assert "设备" in reranked[0].text and reranked[0].score == 3.0
    # The cross-encoder sees up to rerank_candidates passages, not just top_k.
    assert len(scorer.calls) == 1 and 3 < scorer.calls[0] <= 20
    assert len(plain) == len(reranked) == 3
