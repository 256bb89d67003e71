"""PDF structure on real PDFs: heading paths from the outline and, without one, from typography;
an outline pointing at pages that do not exist; the page a citation names is the page its
matching sentence is on."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from pypdf import PdfReader, PdfWriter
from pypdf.generic import ArrayObject, DictionaryObject, NameObject, NumberObject

from ingest.chunking import ChunkingConfig, chunk_document
from ingest.parsers import ParsedDocument, parse
from ingest.upload import stage_upload
from rag.generation.llm import LLMClient
from rag.services import Services
from tests.conftest import FILES, FIXTURES, FakeLLM, make_settings
from tests.ingest.test_chunking import count_tokens
from tests.ui.pdf import make_pdf

EDU = FIXTURES / "eval" / "edu-manual-pages" / "docs" / "debian-edu-bookworm-manual.zh-cn.pdf"
REAL_PDFS = [FILES / "maint-guide.zh-cn.pdf", FILES / "R-FAQ.pdf", EDU]
Entry = tuple[int, int, str]  # (1-based page, level, title)


def _squash(text: str) -> str:
    return "".join(text.replace("’", "'").split())


def _outline(data: bytes) -> list[Entry]:
    reader = PdfReader(io.BytesIO(data))
    found: list[Entry] = []

    def walk(items: Sequence[Any], depth: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
            else:
                page = reader.get_destination_page_number(item)
                assert page is not None
                found.append((page + 1, depth + 1, str(item.title)))

    walk(reader.outline, 0)
    return found


def _without_outline(data: bytes) -> bytes:
    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(data)).pages:
        writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _headings(doc: ParsedDocument) -> list[Entry]:
    return [(b.page, b.heading_level or 0, b.text) for b in doc.blocks if b.kind == "heading"]


def _match(truth: list[Entry], headings: list[Entry]) -> dict[int, Entry]:
    """Outline entry index -> the heading block on its page whose text ends with its title."""
    matched: dict[int, Entry] = {}
    for i, (page, _, title) in enumerate(truth):
        for heading in headings:
            if heading[0] == page and _squash(heading[2]).endswith(_squash(title)):
                matched[i] = heading
                break
    return matched


def test_outline_gives_every_heading_on_its_page() -> None:
    data = (FILES / "maint-guide.zh-cn.pdf").read_bytes()
    truth = _outline(data)
    doc = parse(data, "maint-guide.zh-cn.pdf")
    matched = _match(truth, _headings(doc))
    assert len(truth) == 90 and len(matched) == len(truth)
    assert all(matched[i][1] == level for i, (_, level, _) in enumerate(truth))
    _, chunks = chunk_document(doc, ChunkingConfig(), count_tokens)
    [chunk] = [c for c in chunks if c.text.startswith("1.3 需要的开发文档")]
    assert chunk.heading_path == ("正确的起点", "1.3 需要的开发文档")
    assert chunk.page_start == 10


@pytest.mark.parametrize("path", REAL_PDFS, ids=lambda p: p.name)
def test_typography_finds_the_outline_headings_when_there_is_no_outline(path: Path) -> None:
    """The bookmarks are the ground truth: drop them and read headings from font size, weight
    and numbering instead; nearly all come back, on their page, with chapters above sections."""
    data = path.read_bytes()
    truth = _outline(data)
    plain = _without_outline(data)
    assert not PdfReader(io.BytesIO(plain)).outline
    headings = _headings(parse(plain, path.name))
    matched = _match(truth, headings)
    recall = len(matched) / len(truth)
    print(f"\n{path.name}: {len(matched)}/{len(truth)} outline headings found by typography")
    assert recall >= 0.95, [truth[i] for i in range(len(truth)) if i not in matched][:10]
    # Levels are ranks of sizes, not the outline's numbers, but their order must agree.
    pairs = [
        (matched[i], matched[j])
        for i in matched
        for j in matched
        if truth[j][1] == truth[i][1] + 1 and i < j
    ]
    agree = sum(1 for parent, child in pairs if parent[1] < child[1])
    assert pairs and agree / len(pairs) >= 0.95
    # Few invented headings: what typography finds beyond the outline is mostly deeper levels.
    assert len(headings) <= 1.3 * len(truth)


def test_typography_heading_paths_reach_the_chunks() -> None:
    data = _without_outline((FILES / "R-FAQ.pdf").read_bytes())
    _, chunks = chunk_document(parse(data, "R-FAQ.pdf"), ChunkingConfig(), count_tokens)
    [chunk] = [c for c in chunks if c.text.startswith("2.1 What is R?")]
    assert chunk.heading_path == ("2 R Basics", "2.1 What is R?")
    assert chunk.page_start == 7
    [chunk] = [c for c in chunks if c.text.startswith("7.31 Why doesn")]
    assert chunk.heading_path[0] == "7 R Miscellanea"


def _with_broken_outline(data: bytes) -> bytes:
    """A PDF whose outline has one good entry, one pointing at a page object outside the page
    tree, and one naming page 99 of 3 by number."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.add_outline_item(title="Second page", page_number=1)
    orphan = writer._add_object(DictionaryObject({NameObject("/Type"): NameObject("/Page")}))
    for title, target in (("Ghost page", orphan), ("Page 99", NumberObject(98))):
        item: Any = writer.add_outline_item(title=title, page_number=0).get_object()
        item[NameObject("/A")][NameObject("/D")] = ArrayObject([target, NameObject("/Fit")])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_outline_pointing_to_missing_pages_does_not_fail_the_document() -> None:
    topics = ["apples grow on trees.", "bread needs an oven.", "cheese comes from milk."]
    data = _with_broken_outline(
        make_pdf([[f"The first page: {topics[0]}"], *[[t] for t in topics[1:]]])
    )
    doc = parse(data, "broken-outline.pdf")
    assert doc.pages == 3
    text = " ".join(b.text for b in doc.blocks)
    assert all(topic in text for topic in topics)
    headings = _headings(doc)
    assert (2, 1, "Second page") in headings
    assert all(1 <= page <= 3 for page, _, _ in headings)


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    cfg = make_settings(tmp_path / "data", retrieval={"mode": "lexical"})
    llm = LLMClient(cfg.llm, transport=httpx.MockTransport(FakeLLM().handler))
    s = Services.create(cfg, llm=llm)
    yield s
    s.close()


def _ingest(svc: Services, path: Path) -> str:
    kb_id = svc.knowledge.create_kb(path.stem).id
    with path.open("rb") as fh:
        staged = stage_upload(fh, path.name, svc.settings.data_dir, 10**8)
    svc.knowledge.add_document(kb_id, staged)
    worker = svc.worker()
    while worker.run_once():
        pass
    return kb_id


_SENTENCE = re.compile(r"[^。！？\n]{14,60}[。！？]")


def _later_page_sentences(path: Path, limit: int) -> list[tuple[str, int]]:
    """Sentences that sit on the second (or later) page of a chunk spanning pages, each found
    once in the document, with their page."""
    doc = parse(path.read_bytes(), path.name)
    full_text, chunks = chunk_document(doc, ChunkingConfig(), count_tokens)
    found: list[tuple[str, int]] = []
    for chunk in chunks:
        for offset, page in chunk.page_marks:
            m = _SENTENCE.search(chunk.text, offset)
            if m and full_text.count(m.group(0)) == 1 and len(found) < limit:
                found.append((m.group(0), page))
    return found


def test_citation_names_the_page_of_its_matching_sentence(svc: Services) -> None:
    path = FILES / "maint-guide.zh-cn.pdf"
    sentences = _later_page_sentences(path, 12)
    assert len(sentences) >= 8
    kb_id = _ingest(svc, path)
    for sentence, page in sentences:
        answer = svc.qa.ask_blocking(kb_id, sentence)
        cited = [c for c in answer.citations if c.cited]
        assert cited, sentence
        passage = cited[0].passage
        assert _squash(sentence) in _squash(passage.text), (sentence, passage.text[:80])
        assert passage.page == page, (sentence, passage.first_page, passage.page, page)
