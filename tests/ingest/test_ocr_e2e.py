"""OCR with the real engines: a scanned PDF and an image ingested end to end through the API
(sandboxed parse, chunks, search), and a mixed PDF whose scanned page alone is OCRed.

The scans are maint-guide pages rendered at 150 dpi with seeded skew and noise (bench/scans.py).
"""

from __future__ import annotations

import dataclasses
import io
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pypdf import PdfReader, PdfWriter

from bench.scans import images_to_pdf, render_pages, scanned
from ingest.parsers import parse
from ingest.parsers.base import ParseLimits
from rag.core.config import Settings
from tests.conftest import FILES, make_settings, upload, wait_document

pytestmark = pytest.mark.integration

SLOW_MACHINE = ParseLimits(ocr_page_timeout_s=600)  # CI's two cores may be shared
MAINT = (FILES / "maint-guide.zh-cn.pdf").read_bytes()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The API tests' settings, with room for OCR on a busy shared CI machine."""
    cfg = make_settings(tmp_path / "data")
    cfg.ingest.parse_timeout_s = 900
    cfg.ingest.ocr_page_timeout_s = 600
    return cfg


def _scans(*pages: int) -> list[Image.Image]:
    return [
        scanned(image, seed=page)
        for page, image in zip(pages, render_pages(MAINT, 150, pages), strict=True)
    ]


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_a_scanned_pdf_and_an_image_are_ingested_and_found(client: TestClient) -> None:
    kb = client.post("/v1/knowledge-bases", json={"name": "scans"}).json()["id"]
    page7, page12 = _scans(6, 11)
    pdf = upload(client, kb, "scanned.pdf", images_to_pdf([page7, page12])).json()
    top = page12.crop((0, 0, page12.width, page12.height // 2))  # a photo of half a page
    png = upload(client, kb, "photo.png", _png(top)).json()
    for doc in (pdf, png):
        state = wait_document(client, kb, doc["id"], timeout=900)
        assert state["status"] == "ready", state
    assert wait_document(client, kb, pdf["id"])["pages"] == 2

    hits = client.post(
        f"/v1/knowledge-bases/{kb}/search",
        json={"query": "古罗马谚语 一例胜千言", "mode": "lexical", "top_k": 3},
    ).json()["results"]
    assert (hits[0]["filename"], hits[0]["page"]) == ("scanned.pdf", 1)
    hits = client.post(
        f"/v1/knowledge-bases/{kb}/search",
        json={"query": "Debian 软件包制作流程", "mode": "lexical", "top_k": 5},
    ).json()["results"]
    assert {"photo.png", "scanned.pdf"} <= {hit["filename"] for hit in hits}


def test_in_a_mixed_pdf_only_the_scanned_page_is_ocred() -> None:
    """Page 2 is a scan of maint-guide page 9; pages 1 and 3 keep their text layer."""
    source = PdfReader(io.BytesIO(MAINT))
    writer = PdfWriter()
    writer.add_page(source.pages[6])
    writer.append(PdfReader(io.BytesIO(images_to_pdf(_scans(8)))))
    writer.add_page(source.pages[11])
    out = io.BytesIO()
    writer.write(out)
    doc = parse(out.getvalue(), "mixed.pdf", SLOW_MACHINE)
    assert doc.warnings == [
        "The text of page(s) 2 was read from an image by OCR and may contain errors."
    ]
    page2 = "".join(b.text for b in doc.blocks if b.page == 2)
    assert "需要的开发工具" in page2 and "build-essential" in page2


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr is not installed")
def test_tesseract_reads_a_scanned_page_too() -> None:
    [page] = _scans(11)
    doc = parse(_png(page), "scan.png", dataclasses.replace(SLOW_MACHINE, ocr_engine="tesseract"))
    text = "".join(b.text for b in doc.blocks)
    assert "软件包" in text and "Debian" in text
