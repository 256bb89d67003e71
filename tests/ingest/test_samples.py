"""The demo documents in data/samples: they parse with a real text layer and pages, they share
no passage (the quickstart ingests the folder into one knowledge base), and the quickstart's
question finds the handbook's annual-leave rule first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ingest.parsers import SUPPORTED_EXTENSIONS, ParsedDocument, parse
from ingest.upload import stage_upload
from rag.services import Services
from tests.conftest import REPO

SAMPLES = REPO / "data" / "samples"
HANDBOOK = "员工手册.pdf"
TRAVEL = "差旅与报销制度.docx"
LEAVE_RULE = "入职满一年的员工，每年享有十天带薪年假"
QUESTION = "年假有多少天？"


def _squash(text: str) -> str:
    return "".join(text.split())


def _documents() -> list[Path]:
    return sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in SUPPORTED_EXTENSIONS)


@pytest.fixture(scope="module")
def parsed() -> dict[str, ParsedDocument]:
    return {p.name: parse(p.read_bytes(), p.name) for p in _documents()}


def test_the_readme_files_exist_with_a_licence(parsed: dict[str, ParsedDocument]) -> None:
    assert {HANDBOOK, TRAVEL} <= set(parsed)
    licence = (SAMPLES / "LICENSE").read_text(encoding="utf-8")
    assert "CC0-1.0" in licence and "scripts/build_samples.py" in licence
    # The licence is not a document: ingesting the folder skips it.
    assert Path("LICENSE").suffix not in SUPPORTED_EXTENSIONS
    assert not (SAMPLES / "员工手册.md").exists()  # the handbook lives in the PDF now


def test_handbook_pdf_has_pages_headings_and_a_clean_text_layer(
    parsed: dict[str, ParsedDocument],
) -> None:
    doc = parsed[HANDBOOK]
    assert doc.pages >= 6 and doc.warnings == []
    leave = [b for b in doc.blocks if LEAVE_RULE in _squash(b.text)]
    assert [b.page for b in leave] == [3]
    headings = {b.text for b in doc.blocks if b.kind == "heading"}
    assert "2.2 年假" in headings and any("信息安全" in h for h in headings)
    text = "".join(b.text for b in doc.blocks)
    # The running footer is stripped, and no glyph came out as a private-use character.
    assert "第 3 页" not in text and not re.search("[\ue000-\uf8ff]", text)
    assert len({b.page for b in doc.blocks}) == doc.pages


def test_travel_docx_has_its_table(parsed: dict[str, ParsedDocument]) -> None:
    doc = parsed[TRAVEL]
    tables = [b for b in doc.blocks if b.kind == "table"]
    assert len(tables) == 1 and "650" in tables[0].text and "一类城市" in tables[0].text
    assert doc.warnings == []


def test_no_passage_is_in_two_samples(parsed: dict[str, ParsedDocument]) -> None:
    """Sentences of 12+ characters occur in one file only: duplicates would crowd retrieval."""
    owners: dict[str, set[str]] = {}
    for name, doc in parsed.items():
        for block in doc.blocks:
            for sentence in re.split(r"[。；！？.;!?\n]", _squash(block.text)):
                if len(sentence) >= 12:
                    owners.setdefault(sentence, set()).add(name)
    shared = {s: names for s, names in owners.items() if len(names) > 1}
    assert shared == {}


@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
def test_the_quickstart_question_finds_the_leave_rule_first(services: Services, mode: str) -> None:
    kb = services.knowledge.create_kb("demo")
    for path in _documents():
        with path.open("rb") as fh:
            staged = stage_upload(fh, path.name, services.settings.data_dir, 10**7)
        services.knowledge.add_document(kb.id, staged)
    worker = services.worker()
    while worker.run_once():
        pass
    hits = services.retriever.search(kb.id, QUESTION, 3, mode=mode)
    assert hits, "nothing retrieved"
    assert hits[0].filename == HANDBOOK and hits[0].page == 3
    assert LEAVE_RULE in _squash(hits[0].text)
