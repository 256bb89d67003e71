"""OCR around the engines: line and paragraph building, the image limits, the per-page time
limit, OCR turned off, and which PDF pages are OCRed. A fake engine stands in for the models
here (tests/ingest/test_ocr_e2e.py and tests/integration/test_ocr_quality.py use the real ones).
"""

from __future__ import annotations

import io
import signal
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pypdf import PdfReader, PdfWriter

from ingest.parsers import ParseError, ocr, parse
from ingest.parsers import image as image_parser
from ingest.parsers.base import ParseLimits
from ingest.parsers.ocr import OcrLine, OcrTimeout, paragraphs
from ingest.progress import StageBoard
from ingest.sandbox import ParserPool, parse_isolated
from rag.core.errors import IngestionError
from rag.store.models import IngestStage
from tests.conftest import FILES, upload, wait_document
from tests.ingest.ocr_fakes import three_scanned_pages

MAINT = FILES / "maint-guide.zh-cn.pdf"


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds almost nothing: what a decompression bomb's
    header looks like, without the bomb (decoding it would fail, so a pass proves no decode)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


class FakeEngine:
    """Reads each image as the lines written in `script`, one call per page; "slow" spins
    until the page's time limit stops it."""

    name = "fake"

    def __init__(self, script: list[list[str] | str]) -> None:
        self.script = list(script)
        self.calls = 0

    def read(self, image: Image.Image, timeout_s: float) -> list[OcrLine]:
        self.calls += 1
        step = self.script.pop(0)
        if step == "slow":
            with ocr._deadline(timeout_s):
                while True:
                    time.sleep(0.01)
        if step == "slow, wrapped":  # as RapidOCR's ONNX session wraps what it catches
            with ocr._deadline(timeout_s):
                try:
                    while True:
                        time.sleep(0.01)
                except Exception as exc:
                    raise RuntimeError("inference failed") from exc
        if step == "slow, swallowed":  # a library that logs the error and returns nothing
            with ocr._deadline(timeout_s):
                try:
                    while True:
                        time.sleep(0.01)
                except Exception:
                    return []
        if step == "broken":
            raise ValueError("the model choked")
        return [OcrLine(text, (10, 40 * i, 500, 40 * i + 30)) for i, text in enumerate(step)]


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEngine]:
    fake = FakeEngine([])
    monkeypatch.setattr(ocr, "load_engine", lambda name: fake)
    monkeypatch.setattr(image_parser, "load_engine", lambda name: fake)
    yield fake


def _png(size: tuple[int, int] = (200, 100)) -> bytes:
    out = io.BytesIO()
    Image.new("L", size, 255).save(out, "PNG")
    return out.getvalue()


def _tiff(frames: int) -> bytes:
    out = io.BytesIO()
    first, *rest = [Image.new("L", (120, 80), 255) for _ in range(frames)]
    first.save(out, "TIFF", save_all=True, append_images=rest)
    return out.getvalue()


def _mixed_pdf(scanned_at: int) -> bytes:
    """Three maint-guide pages (7, 9, 12) with page `scanned_at` (1-based) replaced by a blank
    image-only page, as a scanner leaves it: no text layer."""
    source = PdfReader(MAINT)
    blank = io.BytesIO()
    Image.new("L", (1240, 1754), 255).save(blank, "PDF", resolution=150.0)
    writer = PdfWriter()
    for position, index in enumerate((6, 8, 11), start=1):
        if position == scanned_at:
            writer.append(PdfReader(io.BytesIO(blank.getvalue())))
        else:
            writer.add_page(source.pages[index])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _scanned_blank_pdf() -> bytes:
    out = io.BytesIO()
    Image.new("L", (1240, 1754), 255).save(out, "PDF", resolution=150.0)
    return out.getvalue()


# -- lines and paragraphs ------------------------------------------------------------------------


def test_pieces_side_by_side_become_one_line_in_reading_order() -> None:
    pieces = [
        OcrLine("第二行", (10, 52, 200, 80)),
        OcrLine("右边", (300, 12, 400, 38)),
        OcrLine("左边", (10, 10, 200, 40)),
        OcrLine("Debian", (220, 50, 320, 81)),
    ]
    assert [line.text for line in ocr._merge_into_lines(pieces)] == ["左边右边", "第二行 Debian"]


def test_paragraphs_end_at_wide_gaps_and_short_lines() -> None:
    lines = [
        OcrLine("本文档致力于为普通用户讲述如何制作", (10, 0, 1000, 30)),
        OcrLine("软件包。", (10, 40, 200, 70)),  # short: the paragraph ends
        OcrLine("The package system is one reason", (10, 80, 1000, 110)),
        OcrLine("for its quality.", (10, 120, 1000, 150)),
        OcrLine("新的段落", (10, 260, 1000, 290)),  # after a wide gap
    ]
    assert paragraphs(lines) == [
        "本文档致力于为普通用户讲述如何制作软件包。",
        "The package system is one reason for its quality.",
        "新的段落",
    ]


# -- images: limits checked before decoding ---------------------------------------------------


def test_a_30000_pixel_square_image_fails_with_a_reason_before_decoding(engine: FakeEngine) -> None:
    with pytest.raises(ParseError, match=r"\(900 million\) than the limit of 50 million \(RAG_"):
        parse(_png_header(30000, 30000), "huge.png")
    assert engine.calls == 0


def test_an_image_over_the_pixel_setting_names_its_size(engine: FakeEngine) -> None:
    limits = ParseLimits(max_image_pixels=1_000_000)
    with pytest.raises(ParseError, match=r"2000×1000 pixels \(2 million\); the limit is 1 million"):
        parse(_png_header(2000, 1000), "wide.png", limits)
    assert engine.calls == 0


def test_the_huge_image_fails_in_its_child_and_the_next_document_parses(tmp_path: Path) -> None:
    huge, text = tmp_path / "huge.png", tmp_path / "next.txt"
    huge.write_bytes(_png_header(30000, 30000))
    text.write_text("下一个文档照常解析。", encoding="utf-8")
    with pytest.raises(IngestionError, match="RAG_INGEST__OCR_MAX_IMAGE_PIXELS"):
        parse_isolated(huge, huge.name, ParseLimits(), timeout_s=60, memory_mb=1024)
    doc = parse_isolated(text, text.name, ParseLimits(), timeout_s=60, memory_mb=1024)
    assert doc.blocks[0].text == "下一个文档照常解析。"


def test_the_huge_image_upload_fails_with_its_reason_and_the_service_goes_on(
    client: TestClient,
) -> None:
    kb = client.post("/v1/knowledge-bases", json={"name": "scans"}).json()["id"]
    huge = upload(client, kb, "huge.png", _png_header(30000, 30000)).json()
    text = upload(client, kb, "note.txt", "扫描件之后的文字。".encode()).json()
    assert client.get("/healthz").status_code == 200
    failed = wait_document(client, kb, huge["id"])
    assert failed["status"] == "failed"
    assert "(900 million) than the limit of 50 million" in failed["error"]
    assert wait_document(client, kb, text["id"])["status"] == "ready"


def test_damaged_images_have_a_reason(engine: FakeEngine) -> None:
    with pytest.raises(ParseError, match="damaged"):
        parse(_png()[:60], "cut.png")
    with pytest.raises(ParseError, match="damaged or not a PNG"):
        image_parser.parse_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, ParseLimits())


def test_a_tiff_is_a_page_per_frame_within_the_page_limit(engine: FakeEngine) -> None:
    engine.script = [["第一页的文字"], ["第二页的文字"], ["第三页的文字"]]
    doc = parse(_tiff(3), "scan.tiff")
    assert (doc.pages, doc.media_type) == (3, "image/tiff")
    assert [(b.page, b.text) for b in doc.blocks] == [
        (1, "第一页的文字"),
        (2, "第二页的文字"),
        (3, "第三页的文字"),
    ]
    assert doc.warnings == []  # an image is OCR by nature: nothing to warn about
    with pytest.raises(ParseError, match="3 pages; the limit is 2"):
        parse(_tiff(3), "scan.tiff", ParseLimits(max_pages=2))


def test_an_image_with_an_alpha_channel_is_read_on_white(engine: FakeEngine) -> None:
    seen: list[Image.Image] = []

    def read(image: Image.Image, timeout_s: float) -> list[OcrLine]:
        seen.append(image)
        return [OcrLine("字", (0, 0, 9, 9))]

    engine.read = read  # type: ignore[method-assign]
    out = io.BytesIO()
    Image.new("RGBA", (50, 20), (0, 0, 0, 0)).save(out, "PNG")
    parse(out.getvalue(), "clear.png")
    assert seen[0].getpixel((5, 5)) == (255, 255, 255)


# -- the time limit per page ----------------------------------------------------------------------


def test_a_page_past_its_time_limit_is_stopped_and_named(engine: FakeEngine) -> None:
    limits = ParseLimits(ocr_page_timeout_s=0.2)
    engine.script = ["slow", ["第二页照常识别"]]
    doc = parse(_tiff(2), "scan.tif", limits)
    assert [b.page for b in doc.blocks] == [2]
    assert doc.warnings == [
        "OCR of page(s) 1 took longer than 0.2 s and was stopped; their text is missing."
    ]
    for step in ("slow", "slow, wrapped", "slow, swallowed"):
        engine.script = [step]
        with pytest.raises(ParseError, match=r"longer than 0.2 s per page .*OCR_PAGE_TIMEOUT_S"):
            parse(_png(), "one.png", limits)
    engine.script = ["slow, wrapped"]
    with pytest.raises(ParseError, match=r"no page has a text layer, and OCR took longer"):
        parse(_scanned_blank_pdf(), "scan.pdf", limits)


def test_the_deadline_gives_back_the_previous_alarm_handler() -> None:
    previous = signal.getsignal(signal.SIGALRM)
    with pytest.raises(OcrTimeout), ocr._deadline(0.05):
        while True:
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGALRM) is previous
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_an_engine_failure_costs_that_page_only(engine: FakeEngine) -> None:
    engine.script = ["broken", ["还有文字"]]
    doc = parse(_tiff(2), "scan.tif")
    assert [b.page for b in doc.blocks] == [2]
    assert doc.warnings == ["OCR failed on page(s) 1; their text is missing."]


# -- PDFs: only pages without a text layer, page by page ----------------------------------------


def test_only_the_pages_without_a_text_layer_are_ocred(engine: FakeEngine) -> None:
    engine.script = [["扫描页上识别出的文字"]]
    doc = parse(_mixed_pdf(scanned_at=2), "mixed.pdf")
    assert engine.calls == 1
    assert [b.text for b in doc.blocks if b.page == 2] == ["扫描页上识别出的文字"]
    assert any("正确的起点" in b.text for b in doc.blocks if b.page == 1)
    assert any("软件包制作流程" in b.text for b in doc.blocks if b.page == 3)
    assert doc.warnings == [
        "The text of page(s) 2 was read from an image by OCR and may contain errors."
    ]


def test_a_blank_scanned_page_is_noted_as_empty(engine: FakeEngine) -> None:
    engine.script = [[]]
    doc = parse(_mixed_pdf(scanned_at=3), "mixed.pdf")
    assert doc.warnings == ["Page(s) 3 have no text layer (scanned images?) and were not indexed."]


def test_with_ocr_off_images_are_refused_and_scanned_pages_stay_unindexed() -> None:
    off = ParseLimits(ocr_engine="off")
    with pytest.raises(ParseError, match="OCR is turned off"):
        parse(_png(), "photo.png", off)
    doc = parse(_mixed_pdf(scanned_at=2), "mixed.pdf", off)
    assert not any(b.page == 2 for b in doc.blocks)
    assert doc.warnings == ["Page(s) 2 have no text layer (scanned images?) and were not indexed."]


def test_an_unknown_engine_is_a_reason() -> None:
    with pytest.raises(ParseError, match="unknown OCR engine 'abbyy'"):
        ocr.load_engine("abbyy")


# -- progress: each OCRed page is heard of in the worker ------------------------------------------


def test_the_child_reports_each_ocred_page_before_its_answer(tmp_path: Path) -> None:
    file = tmp_path / "scan.tif"
    file.write_bytes(b"unused")
    heard: list[tuple[int, int]] = []
    pool = ParserPool(memory_mb=512, parse_fn=three_scanned_pages)
    try:
        doc = pool.parse(
            file, file.name, ParseLimits(), timeout_s=60, on_progress=lambda *p: heard.append(p)
        )
        assert doc.pages == 3 and heard == [(1, 3), (2, 3), (3, 3)]
        doc = pool.parse(file, file.name, ParseLimits(), timeout_s=60)  # nobody listening
        assert doc.pages == 3
    finally:
        pool.close()


def test_a_listener_that_raises_stops_the_parse(tmp_path: Path) -> None:
    """A job cancelled while its pages are OCRed stops there (the child is replaced)."""
    file = tmp_path / "scan.tif"
    file.write_bytes(b"unused")

    def cancel(done: int, total: int) -> None:
        raise RuntimeError("cancelled")

    pool = ParserPool(memory_mb=512, parse_fn=three_scanned_pages)
    try:
        with pytest.raises(RuntimeError, match="cancelled"):
            pool.parse(file, file.name, ParseLimits(), timeout_s=60, on_progress=cancel)
        assert pool.pids() == []
    finally:
        pool.close()


def test_ocr_progress_is_the_jobs_stage_and_pages() -> None:
    board = StageBoard("worker-1")
    board.record_ocr("job-1", 4, 10)
    assert board._pending["job-1"] == {
        "stage": IngestStage.ocr,
        "progress_done": 0,
        "progress_total": 4,
        "pages_done": 4,
        "pages_total": 10,
    }
