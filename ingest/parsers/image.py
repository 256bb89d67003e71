"""Images (PNG, JPEG, TIFF) read by OCR: each image, or each frame of a multi-page TIFF, a page.

The size is checked from the header before any pixel is decoded, so an image of 30000×30000
pixels fails with a reason instead of exhausting the parser child's memory.
"""

from __future__ import annotations

import io
import logging
import re

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ingest.parsers.base import Block, ParsedDocument, ParseError, ParseLimits
from ingest.parsers.ocr import PageReport, check_pixels, load_engine, paragraphs, read_page

logger = logging.getLogger(__name__)

FORMATS = ("PNG", "JPEG", "TIFF")
_MAX_SIDE = 3508  # A4 at 300 dpi: larger images are scaled down first (OCR gains nothing)


def _open(data: bytes, limits: ParseLimits) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:  # Pillow's own check, at twice its default
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f" ({int(found.group(1)) / 1e6:.0f} million)" if found else ""
        raise ParseError(
            f"the image has more pixels{size} than the limit of "
            f"{limits.max_image_pixels / 1e6:g} million (RAG_INGEST__OCR_MAX_IMAGE_PIXELS)"
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ParseError(f"the image is damaged or not a PNG, JPEG or TIFF file: {exc}") from exc


def _for_ocr(frame: Image.Image) -> Image.Image:
    """A decoded frame as 8-bit grey or RGB on white, upright, at most _MAX_SIDE pixels long."""
    frame = ImageOps.exif_transpose(frame)  # phone photos are stored sideways
    if frame.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float scans
        pixels = np.asarray(frame, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) * (255.0 / (high - low)) if high > low else pixels * 0
        frame = Image.fromarray(scaled.astype(np.uint8), "L")
    elif frame.mode in ("RGBA", "LA", "PA") or "transparency" in frame.info:
        white = Image.new("RGBA", frame.size, (255, 255, 255, 255))
        frame = Image.alpha_composite(white, frame.convert("RGBA")).convert("RGB")
    elif frame.mode not in ("L", "RGB"):
        frame = frame.convert("RGB")
    if max(frame.size) > _MAX_SIDE:
        frame.thumbnail((_MAX_SIDE, _MAX_SIDE), Image.Resampling.LANCZOS)
    return frame


def parse_image(data: bytes, limits: ParseLimits) -> ParsedDocument:
    """OCR an image into page-tagged paragraphs; ParseError with a reason when the image is
    damaged, too large, or has no text OCR can read."""
    image = _open(data, limits)
    media_type = Image.MIME.get(image.format or "", "image/" + (image.format or "").lower())
    try:
        frames = getattr(image, "n_frames", 1)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ParseError(f"the image is damaged: its pages cannot be counted ({exc})") from exc
    if frames > limits.max_pages:
        raise ParseError(f"the image has {frames} pages; the limit is {limits.max_pages}")
    for index in range(frames):  # sizes from the headers first: fail before any work
        try:
            image.seek(index)
        except (OSError, ValueError, EOFError) as exc:
            raise ParseError(f"the image is damaged: page {index + 1} cannot be read") from exc
        check_pixels(*image.size, limits, "the image" if frames == 1 else f"page {index + 1}")
    engine = load_engine(limits.ocr_engine)
    report = PageReport(planned=frames)
    blocks: list[Block] = []
    total = 0
    for index in range(frames):
        page = index + 1
        try:
            image.seek(index)
            if image.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when that suffices
                image.draft(image.mode, (_MAX_SIDE, _MAX_SIDE))
            frame = _for_ocr(image)
        except MemoryError:
            raise
        except Exception as exc:  # a truncated or corrupt frame: that page only
            logger.warning("image page %d cannot be decoded: %s", page, exc)
            if frames == 1:
                raise ParseError(f"the image is damaged or truncated: {exc}") from exc
            report.failed.append(page)
            report.advance()
            continue
        lines = read_page(engine, frame, page, limits, report)
        report.advance()
        for text in paragraphs(lines):
            total += len(text)
            if total > limits.max_chars:
                raise ParseError(f"the image has more than {limits.max_chars} characters of text")
            blocks.append(Block(text, page))
    if not blocks:
        raise ParseError(f"{report.reason(limits)} in the image")
    return ParsedDocument(
        blocks=blocks,
        pages=frames,
        media_type=media_type,
        warnings=report.warnings(limits, note_read=False),  # an image is OCRed: no need to say
    )
