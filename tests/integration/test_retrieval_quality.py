"""The retrieval quality gates (issues 4 and 18), with the offline Chinese model m3e-small and
Qwen's tokenizer over the real documents and the golden sets shipped in tests/fixtures.

- Debian FAQ (TXT and DOCX): hybrid hit@1 >= 0.95, hit@5 >= 0.98, MRR >= 0.97, and no lower
  than the better of dense and lexical alone;
- maint-guide PDF page set: the first result is on the right physical page for >= 95%.
The R FAQ (English) set is reported, with a floor only: m3e-small is a Chinese model.
Issue 18's sets (tests/fixtures/eval/<set>/, bench/eval_sets/): hybrid at its measured level
minus a small margin (`NEW_SET_GATES`), on every question of the set.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.eval_sets.catalog import built
from bench.eval_sets.kb import ingest_files
from ingest.upload import stage_upload
from rag.core.config import Settings
from rag.evaluation.golden import EvalReport, load_golden
from rag.evaluation.runner import table
from rag.ml.offline_models import OfflineModels
from rag.services import Services
from tests.conftest import FILES, FIXTURES

pytestmark = pytest.mark.integration

SETS = {
    "faq-txt": ("debian-faq.zh-cn.txt", FIXTURES / "debian-faq-zh.jsonl"),
    "faq-docx": ("debian-faq.zh-cn.docx", FIXTURES / "debian-faq-zh.jsonl"),
    "maint-pages": ("maint-guide.zh-cn.pdf", FIXTURES / "eval" / "maint-guide-zh-pages.jsonl"),
    "rfaq-pages": ("R-FAQ.pdf", FIXTURES / "eval" / "r-faq-en-pages.jsonl"),
}
Quality = tuple[Services, dict[str, str], dict[str, dict[str, EvalReport]]]
# Hybrid floors (hit@1, hit@5, MRR) per issue-18 set, on all its questions: the measurement of
# 2026-12-07 (bench/eval_table.py --sets all, the same settings: fusion dividing BM25 by its
# best score, the refitted adaptive share, heading queries to their section's start; the man
# pages re-measured after question-frame words and per-document ranking in `auto`), minus
# 0.03 rounded down, so a regression fails. The held-out set is gated too: a gate is no tuning,
# and a regression there is the one most worth catching.
NEW_SET_GATES: dict[str, tuple[float, float, float]] = {
    "edu-manual-pages": (0.97, 0.97, 0.97),  # measured 1.000 / 1.000 / 1.000
    "iso-code-tables": (0.64, 0.96, 0.79),  # measured 0.676 / 0.996 / 0.821
    "kicad-mixed": (0.75, 0.92, 0.83),  # measured 0.789 / 0.951 / 0.861
    "manpages-zh": (0.88, 0.95, 0.91),  # measured 0.911 / 0.982 / 0.942
    "manpages-zh-heldout": (0.90, 0.96, 0.93),  # measured 0.938 / 0.994 / 0.964
}


def _settings(data_dir: Path, offline_models: OfflineModels) -> Settings:
    return Settings(
        data_dir=data_dir,
        embedding={"model": str(offline_models.m3e_small)},  # type: ignore[arg-type]
        tokenizer={"path": offline_models.qwen_tiktoken},  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def quality(
    tmp_path_factory: pytest.TempPathFactory, offline_models: OfflineModels
) -> Iterator[Quality]:
    data_dir = tmp_path_factory.mktemp("quality") / "data"
    svc = Services.create(_settings(data_dir, offline_models))
    kbs: dict[str, str] = {}
    for document, _ in SETS.values():
        if document in kbs:
            continue
        kbs[document] = svc.knowledge.create_kb(document).id
        with (FILES / document).open("rb") as fh:
            staged = stage_upload(fh, document, data_dir, 10**8)
        svc.knowledge.add_document(kbs[document], staged)
    worker = svc.worker()
    while worker.run_once():
        pass
    reports = {}
    for label, (document, golden) in SETS.items():
        reports[label] = svc.evaluator.run_modes(
            kbs[document], load_golden(golden), ["lexical", "dense", "hybrid"]
        )
        print(f"\n[quality] {label} ({document}, m3e-small):\n{table(reports[label])}")
    yield svc, kbs, reports
    svc.close()


@pytest.fixture(scope="module")
def new_sets(
    tmp_path_factory: pytest.TempPathFactory, offline_models: OfflineModels
) -> Iterator[dict[str, dict[str, EvalReport]]]:
    """Issue 18's sets, each in a knowledge base of its own, in every mode."""
    data_dir = tmp_path_factory.mktemp("new-sets") / "data"
    svc = Services.create(_settings(data_dir, offline_models))
    reports = {}
    try:
        for s in built():
            kb_id = ingest_files(svc, s.id, s.documents)
            items = load_golden(s.golden)
            reports[s.id] = svc.evaluator.run_modes(kb_id, items, ["lexical", "dense", "hybrid"])
            print(f"\n[quality] {s.id} ({s.kind}, {s.role}):\n{table(reports[s.id])}")
        yield reports
    finally:
        svc.close()


def test_every_new_set_is_gated(new_sets: dict[str, dict[str, EvalReport]]) -> None:
    missing = set(new_sets) - set(NEW_SET_GATES)
    assert not missing, f"no gate for {missing}: measure with bench/eval_table.py --quick"
    assert set(NEW_SET_GATES) <= set(new_sets)


@pytest.mark.parametrize("set_id", sorted(NEW_SET_GATES))
def test_new_set_gate(new_sets: dict[str, dict[str, EvalReport]], set_id: str) -> None:
    hybrid = new_sets[set_id]["hybrid"]
    hit1, hit5, mrr = NEW_SET_GATES[set_id]
    assert hybrid.questions >= 60  # every question of the set (60-300 each)
    assert hybrid.hit_at[1] >= hit1, (hybrid.summary(), hybrid.misses)
    assert hybrid.hit_at[5] >= hit5, (hybrid.summary(), hybrid.misses)
    assert hybrid.mrr >= mrr, (hybrid.summary(), hybrid.misses)


@pytest.mark.parametrize("label", ["faq-txt", "faq-docx"])
def test_faq_gate(quality: Quality, label: str) -> None:
    modes = quality[2][label]
    hybrid, dense, lexical = modes["hybrid"], modes["dense"], modes["lexical"]
    assert hybrid.questions == 121
    assert hybrid.hit_at[1] >= 0.95, hybrid.summary()
    assert hybrid.hit_at[5] >= 0.98, hybrid.summary()
    assert hybrid.mrr >= 0.97, hybrid.summary()
    # The FAQ's questions are its own headings as written, so the section rule (a query equal to
    # a heading goes to that section's first chunk, rag/retrieval/section_start.py) answers
    # every one of them in every mode: measured 1.000 / 1.000 / 1.000. What these sets still
    # check is that rule and the FAQ parsers' headings; hybrid must not fall below either mode.
    for k in (1, 5):
        assert hybrid.hit_at[k] >= max(dense.hit_at[k], lexical.hit_at[k]), (k, modes)
    assert hybrid.mrr >= max(dense.mrr, lexical.mrr), modes


def test_pdf_page_gate(quality: Quality) -> None:
    hybrid = quality[2]["maint-pages"]["hybrid"]
    assert hybrid.questions >= 60
    assert hybrid.hit_at[1] >= 0.95, (hybrid.summary(), hybrid.misses)  # measured 0.988


def test_english_page_set_floor(quality: Quality) -> None:
    modes = quality[2]["rfaq-pages"]
    assert modes["lexical"].hit_at[5] >= 0.9 and modes["hybrid"].hit_at[5] >= 0.9, modes


def test_filters_on_real_documents(quality: Quality) -> None:
    svc, kbs, _ = quality
    kb = kbs["maint-guide.zh-cn.pdf"]
    assert svc.retriever.search(kb, "构建软件包", 5, filters={"filename": "*.pdf"})
    assert svc.retriever.search(kb, "构建软件包", 5, filters={"filename": "*.docx"}) == []


def test_cross_encoder_from_real_weights_reranks(
    quality: Quality, offline_models: OfflineModels, tmp_path: Path
) -> None:
    """The reranking path end to end with a real-size BERT loaded through CrossEncoder.

    No trained reranker is available offline, so the classification head on top of m3e-small
    is untrained: this checks loading and plumbing, not quality."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    folder = tmp_path / "m3e-cross-encoder"
    BertForSequenceClassification.from_pretrained(
        offline_models.m3e_small, num_labels=1
    ).save_pretrained(folder)
    AutoTokenizer.from_pretrained(offline_models.m3e_small).save_pretrained(folder)
    svc, kbs, _ = quality
    svc.settings.retrieval.reranker_model = str(folder)
    svc.settings.retrieval.reranker_onnx_cache = str(tmp_path / "onnx")  # auto: ONNX int8 export
    svc._reranker = None
    kb = kbs["debian-faq.zh-cn.txt"]
    plain = svc.retriever.search(kb, "什么是 Debian 软件包？", 5, rerank=False)
    reranked = svc.retriever.search(kb, "什么是 Debian 软件包？", 5, rerank=True)
    assert len(reranked) == 5
    assert svc.reranker.model_name == str(folder)
    scores = [p.score for p in reranked]
    assert scores == sorted(scores, reverse=True)
    assert {p.chunk_id for p in plain} != {p.chunk_id for p in reranked} or scores != [
        p.score for p in plain
    ]
