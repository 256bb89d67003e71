"""Property-based fuzzing of the parsers: whatever the bytes, a parse either returns a document
or raises ParseError (or UnsupportedMediaType) with a message, never anything else."""

from __future__ import annotations

import io
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.parsers import ParseError, parse
from ingest.parsers.base import ParsedDocument, ParseLimits
from tests.conftest import FILES

LIMITS = ParseLimits(max_pages=50, max_chars=200_000, max_decompressed_bytes=20 << 20)
PDF = (FILES / "R-FAQ.pdf").read_bytes()[:60_000]  # the head: fast, and already truncated
DOCX = (FILES / "debian-faq.zh-cn.docx").read_bytes()
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def _outcome(data: bytes, filename: str) -> ParsedDocument | None:
    try:
        doc = parse(data, filename, LIMITS)
    except ParseError as exc:  # UnsupportedMediaType is a ParseError too
        assert str(exc).strip(), "a refusal must say why"
        return None
    assert doc.blocks, "a parsed document has at least one block"
    assert all(b.page >= 1 for b in doc.blocks)
    return doc


@FUZZ
@given(
    data=st.binary(max_size=4096),
    filename=st.sampled_from(["a.txt", "a.md", "a.pdf", "a.docx", "a.bin", "noext"]),
)
def test_random_bytes(data: bytes, filename: str) -> None:
    _outcome(data, filename)


@FUZZ
@given(text=st.text(max_size=2000), encoding=st.sampled_from(["utf-8", "utf-16", "gb18030"]))
def test_any_text_in_supported_encodings(text: str, encoding: str) -> None:
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:  # lone surrogates cannot be written in these encodings
        return
    doc = _outcome(data, "note.txt")
    if doc is not None:
        assert all(b.text for b in doc.blocks)


def _mutate(original: bytes, edits: list[tuple[int, int]]) -> bytes:
    data = bytearray(original)
    for position, value in edits:
        data[position % len(data)] = value
    return bytes(data)


EDITS = st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=8)


@FUZZ
@given(edits=EDITS)
def test_mutated_pdf(edits: list[tuple[int, int]]) -> None:
    _outcome(_mutate(PDF, edits), "a.pdf")


@FUZZ
@given(edits=EDITS)
def test_mutated_docx(edits: list[tuple[int, int]]) -> None:
    _outcome(_mutate(DOCX, edits), "a.docx")


@FUZZ
@given(
    parts=st.dictionaries(
        st.sampled_from(["word/document.xml", "[Content_Types].xml", "word/styles.xml", "x"]),
        st.binary(max_size=512),
        max_size=4,
    )
)
def test_arbitrary_zips_named_docx(parts: dict[str, bytes]) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, body in parts.items():
            z.writestr(name, body)
    _outcome(out.getvalue(), "a.docx")


@pytest.mark.parametrize("cut", [10, 100, 1000, 10_000])
def test_truncated_real_files(cut: int) -> None:
    _outcome(PDF[:cut], "a.pdf")
    _outcome(DOCX[:cut], "a.docx")
