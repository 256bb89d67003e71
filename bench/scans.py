"""Scanned renderings for the OCR measurements: pages as a scanner would give them, and CER.

A page is rendered with pypdfium2 (150 dpi by default), turned by a small random angle and
given sensor noise, specks and JPEG artefacts, all from a seeded generator, so every run sees
the same "scans". Used by bench/ocr_engines.py, bench/scanned_faq.py and the OCR tests.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_WS = re.compile(r"\s+")


def render_pages(
    pdf: bytes, dpi: int = 150, pages: Sequence[int] | None = None
) -> list[Image.Image]:
    """Grayscale images of the given 0-based pages (all by default) of a PDF."""
    import pypdfium2

    document = pypdfium2.PdfDocument(pdf)
    try:
        wanted = range(len(document)) if pages is None else pages
        images = []
        for index in wanted:
            page = document[index]
            images.append(page.render(scale=dpi / 72, grayscale=True).to_pil().convert("L"))
            page.close()
        return images
    finally:
        document.close()


def scanned(
    image: Image.Image, seed: int, *, max_angle: float = 1.5, noise: float = 12.0
) -> Image.Image:
    """`image` as if printed and scanned: skewed up to `max_angle` degrees, Gaussian noise of
    `noise` grey levels, 0.1 % specks, saved as JPEG at quality 75."""
    rng = np.random.default_rng(seed)
    turned = image.convert("L").rotate(
        float(rng.uniform(-max_angle, max_angle)),
        resample=Image.Resampling.BICUBIC,
        fillcolor=255,
    )
    pixels = np.asarray(turned, dtype=np.float64) + rng.normal(0.0, noise, turned.size[::-1])
    specks = rng.random(pixels.shape)
    pixels[specks < 0.0005] = 0
    pixels[specks > 0.9995] = 255
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L").save(out, "JPEG", quality=75)
    return Image.open(io.BytesIO(out.getvalue())).convert("L")


def images_to_pdf(images: Sequence[Image.Image], dpi: int = 150) -> bytes:
    """A PDF whose pages are only these images (no text layer), as a scanner writes one."""
    out = io.BytesIO()
    first, *rest = [image.convert("L") for image in images]
    first.save(out, "PDF", save_all=True, append_images=rest, resolution=float(dpi))
    return out.getvalue()


def page_texts(pdf: bytes) -> list[str]:
    """The text layer of every page (pypdf), the reference the OCR output is scored against."""
    from pypdf import PdfReader

    return [page.extract_text() or "" for page in PdfReader(io.BytesIO(pdf)).pages]


def fold(text: str) -> str:
    """What CER compares: NFKC (full-width punctuation and letters to their plain forms), no
    whitespace. Spacing is not something a scan carries."""
    return _WS.sub("", unicodedata.normalize("NFKC", text))


def cer(recognised: str, reference: str) -> float:
    """Character error rate: edit distance / reference length, on folded text."""
    from rapidfuzz.distance import Levenshtein

    ref = fold(reference)
    return Levenshtein.distance(fold(recognised), ref) / max(1, len(ref))


def text_pages(
    lines: Sequence[str], font_path: str, *, dpi: int = 150, points: float = 11.0
) -> list[tuple[Image.Image, str]]:
    """Plain text lines typeset onto white A4 pages at `dpi` (long lines wrapped by width),
    the way a printed text file looks before it is scanned; each page with its text."""
    font = ImageFont.truetype(font_path, round(points * dpi / 72))
    width, height, margin = round(8.27 * dpi), round(11.69 * dpi), round(0.8 * dpi)
    step = round(points * dpi / 72 * 1.5)
    rows: list[str] = []
    for line in lines:
        line = line.rstrip().expandtabs()
        while line and font.getlength(line) > width - 2 * margin:
            cut = len(line)
            while cut > 1 and font.getlength(line[:cut]) > width - 2 * margin:
                cut -= 1
            rows.append(line[:cut])
            line = line[cut:]
        rows.append(line)
    per_page = (height - 2 * margin) // step
    pages = []
    for start in range(0, len(rows), per_page):
        image = Image.new("L", (width, height), 255)
        draw = ImageDraw.Draw(image)
        for i, row in enumerate(rows[start : start + per_page]):
            draw.text((margin, margin + i * step), row, font=font, fill=0)
        pages.append((image, "\n".join(rows[start : start + per_page])))
    return pages
