"""Reranking: both backends on tiny locally built models (ONNX int8 must rank like torch), the
export cache, clear errors for broken folders, and the latency budget (with a fake clock)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from ingest.upload import stage_upload
from rag.core.config import RetrievalSettings
from rag.core.errors import ConfigError
from rag.ml import onnx_export, rerank_budget
from rag.ml import rerank as rerank_module
from rag.ml.onnx_rerank import OnnxCrossEncoder
from rag.ml.rerank import (
    BatchedCrossEncoder,
    CrossEncoderReranker,
    load_reranker,
    score_within_budget,
)
from rag.ml.rerank_budget import TokenCost, affordable
from rag.services import Services

QUERY = "年假有多少天"
PASSAGES = [
    "员工有十天年假",
    "报销怎么提交",
    "设备",
    "年假和报销",
    "十天",
    "员工手册",
    "怎么提交年假",
    "abc",
    "二十天年假是多少",
    "设备和员工",
    "年假年假年假",
    "有多少设备",
]


def _tiny_cross_encoder(folder: Path, seed: int = 0) -> Path:
    """A 2-layer BERT sequence classifier with a character vocabulary, saved like a hub model."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    chars = sorted(
        set("年假报销设备员工手册多少天怎么提交的是和有一二三十abcdefghijklmnopqrstuvwxyz")
    )
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(str(folder / "vocab.txt"), tokenize_chinese_chars=True).save_pretrained(
        folder
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        num_labels=1,
        # Wider random weights than BERT's 0.02: scores then differ between passages by far
        # more than int8 rounding, as a trained model's do.
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def _settings(folder: Path, backend: str, cache: Path, **extra: object) -> RetrievalSettings:
    return RetrievalSettings(
        reranker_model=str(folder),
        reranker_backend=backend,  # type: ignore[arg-type]
        reranker_onnx_cache=str(cache),
        **extra,  # type: ignore[arg-type]
    )


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-reranker")


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


def test_the_torch_backend_loads_a_local_folder_and_scores(tiny: Path, tmp_path: Path) -> None:
    reranker = load_reranker(_settings(tiny, "torch", tmp_path))
    assert isinstance(reranker, CrossEncoderReranker)
    scores = reranker.score(QUERY, PASSAGES[:3])
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
    assert reranker.score("q", []) == []


def test_auto_is_onnx_int8_on_the_cpu(tiny: Path, onnx_cache: Path) -> None:
    assert rerank_module.resolve_backend(_settings(tiny, "auto", onnx_cache)) == "onnx-int8"
    gpu = _settings(tiny, "auto", onnx_cache, reranker_device="cuda")
    assert rerank_module.resolve_backend(gpu) == "torch"


@pytest.mark.parametrize("backend", ["onnx-int8", "onnx-fp32"])
def test_onnx_ranks_like_torch(tiny: Path, onnx_cache: Path, backend: str) -> None:
    torch_scores = load_reranker(_settings(tiny, "torch", onnx_cache)).score(QUERY, PASSAGES)
    onnx = load_reranker(_settings(tiny, backend, onnx_cache))
    assert isinstance(onnx, OnnxCrossEncoder)
    onnx_scores = onnx.score(QUERY, PASSAGES)
    # The same activation (sigmoid) as sentence-transformers: scores on the same scale.
    assert all(0 < s < 1 for s in onnx_scores)
    if backend == "onnx-fp32":
        np.testing.assert_allclose(onnx_scores, torch_scores, atol=1e-4)
    else:
        assert _spearman(onnx_scores, torch_scores) >= 0.9
        assert int(np.argmax(torch_scores)) in np.argsort(onnx_scores)[-2:]
    # Batching by length must not change a passage's score in fp32; int8 quantises
    # activations per batch, so its scores move a little with the batch's other pairs.
    one_by_one = [onnx.score(QUERY, [p])[0] for p in PASSAGES]
    np.testing.assert_allclose(
        one_by_one, onnx_scores, atol=1e-5 if backend == "onnx-fp32" else 0.05
    )


def test_the_export_is_cached_by_folder_content(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny, folder)
    cache = tmp_path / "cache"
    exports: list[Path] = []

    def fake_export(src: Path, out: Path) -> None:  # the real one is tested above
        exports.append(src)
        out.write_bytes(b"fp32")

    monkeypatch.setattr(onnx_export, "export_fp32", fake_export)
    monkeypatch.setattr(onnx_export, "quantize_int8", lambda src, out: out.write_bytes(b"int8"))
    first = onnx_export.onnx_files(folder, cache)
    assert onnx_export.onnx_files(folder, cache) == first
    assert len(exports) == 1 and first.int8.read_bytes() == b"int8"
    assert [p.name for p in cache.iterdir()] == [first.int8.parent.name]  # no staging left
    # A changed model is a new entry, exported again; hidden files (a cache inside) don't count.
    (folder / ".onnx").mkdir()
    assert onnx_export.onnx_files(folder, cache) == first
    (folder / "config.json").write_text((folder / "config.json").read_text() + "\n")
    assert onnx_export.onnx_files(folder, cache) != first
    assert len(exports) == 2


def test_a_failed_export_leaves_no_cache_entry(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(src: Path, out: Path) -> None:
        out.write_bytes(b"half")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(onnx_export, "export_fp32", failing)
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError, match="exporter crashed") as info:
        load_reranker(_settings(tiny, "onnx-int8", cache))
    assert "RAG_RETRIEVAL__RERANKER_BACKEND=torch" in str(info.value)
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("backend", ["torch", "onnx-int8"])
def test_an_empty_folder_names_the_settings(tmp_path: Path, backend: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="RAG_RETRIEVAL__RERANKER_MODEL") as info:
        load_reranker(_settings(empty, backend, tmp_path / "cache"))
    assert backend in str(info.value)


def test_corrupt_weights_give_a_clear_error_and_no_cache_entry(tmp_path: Path) -> None:
    folder = _tiny_cross_encoder(tmp_path / "broken")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError, match="RAG_RETRIEVAL__RERANKER_BACKEND=torch"):
        load_reranker(_settings(folder, "onnx-int8", cache))
    assert not cache.exists() or not any(cache.iterdir())  # no half-made entry left behind


def test_a_classifier_with_two_outputs_is_refused(tmp_path: Path) -> None:
    folder = _tiny_cross_encoder(tmp_path / "two")
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(
        config.replace('"id2label": {\n    "0": "LABEL_0"\n  }', '"id2label": {"0": "a", "1": "b"}')
    )
    with pytest.raises(ConfigError, match="one relevance output"):
        load_reranker(_settings(folder, "onnx-int8", tmp_path / "cache"))


def test_affordable_fits_the_budget_within_the_bounds() -> None:
    assert affordable([10, 10, 10, 10], 0.001, 0.025, 1) == 2
    assert affordable([10, 10, 10, 10], 0.001, 0.0, 3) == 3  # the minimum, even over budget
    assert affordable([10, 10], 0.001, 0.0, 5) == 2  # never more than there are
    assert affordable([10, 10, 10], 0.001, 1.0, 1) == 3
    cost = TokenCost(smoothing=0.5)
    assert cost.per_token is None
    cost.record(100, 1.0)
    cost.record(100, 2.0)
    assert cost.per_token == pytest.approx(0.015)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingEncoder(BatchedCrossEncoder):
    """Scores by a keyword; each pair "takes" one fake millisecond per character."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__("counting", batch_size=4)
        self.clock = clock
        self.calls: list[int] = []

    def _token_lengths(self, query: str, passages: Sequence[str]) -> list[int]:
        return [len(query) + len(p) for p in passages]

    def _predict(self, query: str, passages: Sequence[str]) -> list[float]:
        self.calls.append(len(passages))
        self.clock.now += sum(self._token_lengths(query, passages)) * 0.001
        return [float(p.count("设备")) for p in passages]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(rerank_budget.time, "perf_counter", fake)
    return fake


def test_the_budget_limits_the_pairs_scored(clock: FakeClock) -> None:
    encoder = CountingEncoder(clock)
    passages = ["x" * 8] * 30  # 10 "tokens" with the 2-character query: 10 ms a pair
    # First call: no estimate, so the minimum (3) is timed, then the rest of 100 ms is spent.
    scores = score_within_budget(encoder, "qq", passages, budget_ms=100, minimum=3)
    assert encoder.calls == [3, 7] and len(scores) == 10
    # Later calls use the learned cost at once.
    assert len(score_within_budget(encoder, "qq", passages, budget_ms=55, minimum=3)) == 5
    assert len(score_within_budget(encoder, "qq", passages, budget_ms=1, minimum=3)) == 3
    # No budget: every candidate.
    assert len(score_within_budget(encoder, "qq", passages, budget_ms=0, minimum=3)) == 30


class PrefersWord:
    """A reranker without a cost model: the budget cannot apply to it."""

    model_name = "prefers-word"

    def __init__(self, word: str) -> None:
        self.word = word
        self.calls: list[int] = []

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        self.calls.append(len(passages))
        return [float(p.count(self.word)) for p in passages]


def _handbook(services: Services, tmp_path: Path) -> str:
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
    return kb


def test_rerank_reorders_the_fused_candidates(services: Services, tmp_path: Path) -> None:
    kb = _handbook(services, tmp_path)
    scorer = PrefersWord("设备")
    services._reranker = scorer
    plain = services.retriever.search(kb, "年假", 3, rerank=False)
    assert scorer.calls == []
    reranked = services.retriever.search(kb, "年假", 3, rerank=True)
    assert "设备" in reranked[0].text and reranked[0].score == 3.0
    # The cross-encoder sees up to rerank_candidates passages, not just top_k.
    assert len(scorer.calls) == 1 and 3 < scorer.calls[0] <= 20
    assert len(plain) == len(reranked) == 3


def test_over_budget_candidates_keep_their_fused_order(
    services: Services, tmp_path: Path, clock: FakeClock
) -> None:
    kb = _handbook(services, tmp_path)
    cfg = services.settings.retrieval
    cfg.rerank_budget_ms, cfg.rerank_min_candidates = 1, 2
    encoder = CountingEncoder(clock)
    encoder.cost.record(1, 1.0)  # one second a token: only the minimum fits
    services._reranker = encoder  # type: ignore[assignment]
    fused = services.retriever.search(kb, "年假", 8, rerank=False)
    reranked = services.retriever.search(kb, "年假", 8, rerank=True)
    assert encoder.calls == [2]
    head = sorted(fused[:2], key=lambda p: -p.text.count("设备"))
    assert [p.chunk_id for p in reranked] == [p.chunk_id for p in head + fused[2:]]
    # Unscored passages are ranked no higher than the lowest scored one.
    scores = [p.score for p in reranked]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.integration
def test_m3e_small_as_a_cross_encoder_ranks_alike_in_int8(tmp_path: Path) -> None:
    """A real 4-layer BERT (m3e-small's encoder, an untrained 1-logit head): int8 keeps the
    order of the fp32 export, and fp32 reproduces torch."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rag.ml.offline_models import ensure_offline_models

    models = Path(
        os.environ.get("RAG_TEST_MODELS_DIR", Path(__file__).resolve().parents[2] / ".models")
    )
    m3e = ensure_offline_models(models, only={"m3e_small"}).m3e_small
    folder = tmp_path / "m3e-cross-encoder"
    import torch

    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(m3e, num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(m3e).save_pretrained(folder)
    cache = tmp_path / "cache"
    passages = [p * 3 for p in PASSAGES]
    torch_scores = load_reranker(_settings(folder, "torch", cache)).score(QUERY, passages)
    fp32 = load_reranker(_settings(folder, "onnx-fp32", cache)).score(QUERY, passages)
    int8 = load_reranker(_settings(folder, "onnx-int8", cache)).score(QUERY, passages)
    np.testing.assert_allclose(fp32, torch_scores, atol=1e-4)
    assert _spearman(int8, fp32) >= 0.8
