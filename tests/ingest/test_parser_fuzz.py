"""Property-based fuzzing of the parsers: whatever the bytes, a parse either returns a document
or raises ParseError (or UnsupportedMediaType) with a message, never anything else."""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.parsers import ParseError, parse
from ingest.parsers.base import ParsedDocument, ParseLimits
from tests.conftest import FILES
from tests.ingest.format_files import Slide, make_eml, make_html, make_msg, make_pptx, make_xlsx

LIMITS = ParseLimits(
    max_pages=50, max_chars=200_000, max_decompressed_bytes=20 << 20, convert_timeout_s=30
)
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
    filename=st.sampled_from(
        [
            "a.txt",
            "a.md",
            "a.pdf",
            "a.docx",
            "a.bin",
            "noext",
            "a.xlsx",
            "a.pptx",
            "a.csv",
            "a.tsv",
            "a.html",
            "a.eml",
            "a.msg",
            "a.doc",
            "a.xls",
            "a.png",
        ]
    ),
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
    for name, data in MADE.items():
        _outcome(data[:cut], name)


# --- the formats of issue 17 (tests/ingest/format_files.py makes them) ------------------------

MADE = {
    "a.xlsx": make_xlsx({"表": [["城市", "上限"], ["北京", 600]], "S2": [["a"], [1.5]]}),
    "a.pptx": make_pptx([Slide("标题", ["要点一", "要点二"], [["a", "b"], ["1", "2"]], "备注")]),
    "a.eml": make_eml("主题", "正文\n第二行", [("a.txt", b"attached"), ("b.bin", b"\x00\x01")]),
    "a.msg": make_msg("主题", "正文", [("a.txt", b"attached")]),
    "a.html": make_html(
        "t", "<h1>标题</h1><p>正文段落，足够长的一段文字。</p><table><tr><td>1</td></tr></table>"
    ),
    "a.csv": '城市,上限\n北京,600\n成都,"4,00"\n'.encode(),
}


@FUZZ
@given(name=st.sampled_from(sorted(MADE)), edits=EDITS)
def test_mutated_new_formats(name: str, edits: list[tuple[int, int]]) -> None:
    _outcome(_mutate(MADE[name], edits), name)


@FUZZ
@given(
    name=st.sampled_from(["a.xlsx", "a.pptx"]),
    parts=st.dictionaries(
        st.sampled_from(
            [
                "[Content_Types].xml",
                "xl/workbook.xml",
                "xl/_rels/workbook.xml.rels",
                "xl/worksheets/sheet1.xml",
                "ppt/presentation.xml",
                "ppt/_rels/presentation.xml.rels",
                "ppt/slides/slide1.xml",
                "ppt/media/image1.png",
                "_rels/.rels",
            ]
        ),
        st.binary(max_size=512),
        max_size=5,
    ),
)
def test_arbitrary_zips_named_xlsx_or_pptx(name: str, parts: dict[str, bytes]) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for member, body in parts.items():
            z.writestr(member, body)
    _outcome(out.getvalue(), name)


@FUZZ
@given(text=st.text(max_size=3000), name=st.sampled_from(["a.html", "a.eml", "a.csv", "a.tsv"]))
def test_any_text_as_markup_mail_or_table(text: str, name: str) -> None:
    _outcome(text.encode("utf-8", "surrogatepass"), name)


@settings(max_examples=4, deadline=None, derandomize=True)  # each example runs LibreOffice
@given(edits=EDITS)
@pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice is not installed")
def test_mutated_legacy_word(edits: list[tuple[int, int]]) -> None:
    _outcome(_mutate(_legacy_doc(), edits), "a.doc")


@functools.cache
def _legacy_doc() -> bytes:
    """A Word 97 file, converted once by LibreOffice from a .docx made here."""
    import docx

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "a.docx"
        word = docx.Document()
        word.add_heading("标题", 1)
        word.add_paragraph("正文段落。")
        word.save(str(source))
        subprocess.run(
            [
                "soffice",
                "--headless",
                f"-env:UserInstallation={(Path(tmp) / 'profile').as_uri()}",
                "--convert-to",
                "doc",
                "--outdir",
                tmp,
                str(source),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return (Path(tmp) / "a.doc").read_bytes()
