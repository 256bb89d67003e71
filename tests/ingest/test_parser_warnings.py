"""Warnings a document carries are short sentences from the catalogue (ingest/parsers/notices.py):
one per kind of trouble, never a library's raw text, which stays in the server log."""

from __future__ import annotations

import io
import logging
from typing import cast

import pytest
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject, NumberObject

from ingest.parsers import parse
from ingest.parsers.notices import MAX_WARNINGS, MESSAGES, finish, page_ranges, warning
from ingest.upload import stage_upload
from rag.kb import knowledge
from rag.services import Services
from tests.ui.pdf import make_pdf

PAGES = [
    ["Installation. Fix the pump to a level base with four bolts."],
    ["Operation. The pump delivers forty litres a minute at full speed."],
    ["Maintenance. Replace the seal kit every two thousand hours of use."],
]
RAW = ("IndirectObject", "fontTools", "startxref", "pypdf")


def _cff_font_pdf() -> bytes:
    """Every page's font embeds a CFF program (FontFile3/Type1C) and has no ToUnicode map:
    without fontTools, pypdf logs its "Consider installing fontTools" line for each page."""
    writer = PdfWriter(clone_from=io.BytesIO(make_pdf(PAGES)))
    program = DecodedStreamObject()
    program.set_data(b"not a real CFF program")
    program[NameObject("/Subtype")] = NameObject("/Type1C")
    descriptor = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/FontDescriptor"),
            NameObject("/FontName"): NameObject("/Helvetica"),
            NameObject("/Flags"): NumberObject(32),
            NameObject("/FontFile3"): writer._add_object(program),
        }
    )
    ref = writer._add_object(descriptor)
    for page in writer.pages:
        resources = cast(DictionaryObject, page["/Resources"].get_object())
        fonts = cast(DictionaryObject, resources["/Font"].get_object())
        font = cast(DictionaryObject, fonts["/F1"].get_object())
        font[NameObject("/FontDescriptor")] = ref
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _bad_xref_pdf() -> bytes:
    """A PDF whose startxref points nowhere: pypdf rebuilds the table and reads it anyway."""
    good = make_pdf(PAGES)
    return good[: good.rindex(b"startxref")] + b"startxref\n999\n%%EOF\n"


def _no_raw_text(warnings: list[str]) -> None:
    for text in warnings:
        assert not any(raw in text for raw in RAW), text


def test_a_font_pypdf_cannot_decode_gives_one_short_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # As on a server without fontTools (the "Consider installing fontTools").
    monkeypatch.setattr("pypdf.generic._font.HAS_FONTTOOLS", False)
    with caplog.at_level(logging.WARNING, logger="pypdf"):
        doc = parse(_cff_font_pdf(), "pump.pdf")
    assert doc.warnings == [MESSAGES["pdf_font"]]
    assert "forty litres a minute" in doc.blocks[1].text
    # The library's own words went to the log, once a page.
    raw = [r.getMessage() for r in caplog.records if "fontTools" in r.getMessage()]
    assert len(raw) == len(PAGES) and "IndirectObject" in raw[0]


def test_a_repaired_file_says_so_in_one_sentence(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pypdf"):
        doc = parse(_bad_xref_pdf(), "pump.pdf")
    assert doc.pages == len(PAGES)
    assert doc.warnings == [MESSAGES["pdf_repaired"]]
    assert any("startxref" in r.getMessage() for r in caplog.records)


def test_pages_without_text_are_listed_in_one_warning() -> None:
    writer = PdfWriter(clone_from=io.BytesIO(make_pdf(PAGES[:1])))
    for _ in range(5):
        writer.add_blank_page(200, 200)
    writer.add_page(writer.pages[0])
    writer.add_blank_page(200, 200)
    out = io.BytesIO()
    writer.write(out)
    doc = parse(out.getvalue(), "scan.pdf")
    assert doc.pages == 8
    assert doc.warnings == [warning("pdf_page_empty", pages="2–6, 8")]
    assert doc.warnings[0].startswith("Page(s) 2–6, 8 have no text layer")


def test_finish_drops_repeats_and_caps_the_list() -> None:
    assert finish(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]
    many = [f"warning {n}" for n in range(20)]
    capped = finish(many)
    assert len(capped) == MAX_WARNINGS
    assert capped[:-1] == many[: MAX_WARNINGS - 1]
    assert capped[-1] == f"{20 - MAX_WARNINGS + 1} more warnings are not shown."


def test_page_ranges() -> None:
    assert page_ranges([3]) == "3"
    assert page_ranges([9, 3, 4, 5, 4]) == "3–5, 9"
    assert page_ranges(range(1, 40, 2)) == "1, 3, 5, 7, 9, 11, …"


def test_every_message_is_one_short_sentence() -> None:
    for code, text in MESSAGES.items():
        assert len(text) <= 100, code
        assert text[0].isupper() or text[0] == "{", code
        assert text.endswith("."), code


def test_the_stored_document_carries_the_short_warning(services: Services) -> None:
    """Through the ingestion pipeline (its sandboxed parser) into the document's record."""
    kb = services.knowledge.create_kb("warnings")
    staged = stage_upload(
        io.BytesIO(_bad_xref_pdf()), "pump.pdf", services.settings.data_dir, 10**7
    )
    doc, _ = services.knowledge.add_document(kb.id, staged)
    worker = services.worker()
    while worker.run_once():
        pass
    with services.db.read() as session:
        stored = knowledge.get_document(session, kb.id, doc.id)
        assert stored.status == "ready"
        assert stored.warnings == [MESSAGES["pdf_repaired"]]
        _no_raw_text(stored.warnings)
