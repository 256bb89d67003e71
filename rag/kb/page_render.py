"""One page of a stored PDF rendered as PNG, with a passage's text highlighted on it.

The PDF is untrusted, so pdfium runs in a child process with a memory limit and a deadline
(as parsing does, docs/architecture.md); the result is cached on disk, a bounded number of
files, under a key that names the file's bytes, the page, the scale and the passage.
"""

from __future__ import annotations

import hashlib
import io
import math
import multiprocessing
import os
import re
import resource
import tempfile
import threading
import unicodedata
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rag.core.errors import InvalidInput, NotFound

_CTX = multiprocessing.get_context("forkserver")
_MB = 1024 * 1024
# Enough for a sharp A4 page at 3x, never a 30000-pixel poster.
MAX_PIXELS = 12_000_000
MIN_SCALE, MAX_SCALE = 0.25, 3.0
# Passage pieces matched one by one when the whole passage is not found as it is (the PDF's
# text layer and the parser's text differ in hyphens, ligatures, punctuation).
_PIECE = 16
_GAP = 16  # normalised characters between two found pieces still drawn as one stretch
_HIGHLIGHT_FILL = (255, 214, 0, 90)
_HIGHLIGHT_EDGE = (224, 150, 0, 220)


@dataclass(frozen=True)
class RenderedPage:
    png: bytes
    highlights: int  # rectangles drawn (0: the passage was not found in the page's text layer)


def normalise(text: str) -> tuple[str, list[int]]:
    """Letters and digits only, NFKC and case-folded, with each kept character's index in
    `text`: the parser's text and pdfium's text layer agree on these, not on spacing."""
    out: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        for c in unicodedata.normalize("NFKC", ch).casefold():
            if c.isalnum():
                out.append(c)
                where.append(i)
    return "".join(out), where


def locate(page_text: str, passage: str) -> list[tuple[int, int]]:
    """Where `passage` is in `page_text`: (first, last) character indices of `page_text`,
    one pair per stretch found, in order. Empty when nothing matches."""
    hay, where = normalise(page_text)
    needle, _ = normalise(passage)
    if not hay or not needle:
        return []
    at = hay.find(needle)
    if at >= 0:
        return [(where[at], where[at + len(needle) - 1])]
    spans: list[tuple[int, int]] = []
    cursor = 0
    for start in range(0, len(needle), _PIECE):
        piece = needle[start : start + _PIECE]
        if len(piece) < min(_PIECE, len(needle)) // 2:
            break  # a short tail would match anywhere
        found = hay.find(piece, cursor)
        if found < 0:
            continue
        end = found + len(piece)
        if spans and found - spans[-1][1] <= _GAP:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((found, end))
        cursor = end
    return [(where[a], where[b - 1]) for a, b in spans]


def _child(
    conn: Connection, path: str, page: int, scale: float, passage: str, memory_mb: int
) -> None:
    """Runs in the child: render, highlight, encode; sends ("ok", png, n) or (kind, message)."""
    memory = memory_mb * _MB
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    try:
        conn.send(_render(path, page, scale, passage))
    except MemoryError:
        conn.send(("failed", f"rendering the page needed more than {memory_mb} MB of memory"))
    except Exception as exc:  # a broken file fails only this request
        conn.send(("failed", f"the page could not be rendered: {exc.__class__.__name__}: {exc}"))
    finally:
        conn.close()


def _render(path: str, page_number: int, scale: float, passage: str) -> tuple[Any, ...]:
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c
    from PIL import Image, ImageDraw

    pdf = pdfium.PdfDocument(path)
    try:
        if not 1 <= page_number <= len(pdf):
            return ("missing", len(pdf))
        page = pdf[page_number - 1]
        width, height = page.get_size()
        scale = min(scale, math.sqrt(MAX_PIXELS / max(width * height, 1.0)))
        while math.ceil(width * scale) * math.ceil(height * scale) > MAX_PIXELS:
            scale *= 0.999  # pdfium rounds each side up
        bitmap = page.render(scale=scale, rev_byteorder=True)
        image = bitmap.to_pil().convert("RGBA")
        rects: list[tuple[float, float, float, float]] = []
        if passage.strip():
            textpage = page.get_textpage()
            count = textpage.count_chars()
            # One code point per character index (get_text_range may shift them).
            text = "".join(
                chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, i) or 0x20) for i in range(count)
            )
            for first, last in locate(text, passage):
                for i in range(textpage.count_rects(first, last - first + 1)):
                    rects.append(textpage.get_rect(i))
        overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        convert = bitmap.get_posconv(page)
        for left, bottom, right, top in rects:
            x0, y0 = convert.to_bitmap(left, top)
            x1, y1 = convert.to_bitmap(right, bottom)
            box = (min(x0, x1) - 1, min(y0, y1) - 1, max(x0, x1) + 1, max(y0, y1) + 1)
            draw.rectangle(box, fill=_HIGHLIGHT_FILL, outline=_HIGHLIGHT_EDGE)
        out = io.BytesIO()
        # Level 3: smaller and faster than the default 6 on rendered text pages (measured).
        Image.alpha_composite(image, overlay).convert("RGB").save(out, "PNG", compress_level=3)
        return ("ok", out.getvalue(), len(rects))
    finally:
        pdf.close()


class PageRenderer:
    """Renders PDF pages in child processes (`memory_mb`, `timeout_s`), at most `concurrency`
    at a time, and keeps the last `max_entries` results in `cache_dir`."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        memory_mb: int,
        timeout_s: float = 30.0,
        max_entries: int = 256,
        concurrency: int = 2,
    ) -> None:
        self.cache_dir = cache_dir
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self.max_entries = max_entries
        # Each child may take memory_mb: a burst of requests must not multiply that.
        self._slots = threading.BoundedSemaphore(concurrency)

    def render(
        self, pdf: Path, sha256: str, page: int, *, scale: float = 1.5, passage: str = ""
    ) -> RenderedPage:
        """Page `page` (1-based) of the PDF whose bytes hash to `sha256`, at `scale` (clamped
        to MIN_SCALE..MAX_SCALE and to MAX_PIXELS), with `passage` highlighted where found."""
        scale = min(max(scale, MIN_SCALE), MAX_SCALE)
        key = hashlib.sha256(
            f"{sha256}\0{page}\0{scale:.3f}\0{passage}".encode(errors="surrogatepass")
        ).hexdigest()
        cached = self._cached(key)
        if cached is not None:
            return cached
        with self._slots:
            cached = self._cached(key)  # rendered by the request we waited for
            if cached is not None:
                return cached
            result = self._run(pdf, page, scale, passage)
        self._store(key, result)
        return result

    def _run(self, pdf: Path, page: int, scale: float, passage: str) -> RenderedPage:
        ours, theirs = _CTX.Pipe(duplex=False)
        proc = _CTX.Process(
            target=_child,
            args=(theirs, str(pdf), page, scale, passage, self.memory_mb),
            name="rag-page-render",
            daemon=True,
        )
        proc.start()
        theirs.close()
        try:
            if not ours.poll(self.timeout_s):
                raise InvalidInput(f"rendering the page took longer than {self.timeout_s:g} s")
            reply = ours.recv()
        except EOFError:
            raise InvalidInput("the page could not be rendered: the renderer stopped") from None
        finally:
            ours.close()
            if proc.is_alive():
                proc.kill()
            proc.join(5)
        if reply[0] == "missing":
            raise NotFound(f"page {page} does not exist: the document has {reply[1]} pages")
        if reply[0] != "ok":
            raise InvalidInput(str(reply[1]))
        return RenderedPage(reply[1], int(reply[2]))

    # -- the disk cache: <key>.<highlights>.png, oldest removed beyond max_entries -------------

    def _cached(self, key: str) -> RenderedPage | None:
        for path in self.cache_dir.glob(f"{key}.*.png"):
            match = re.fullmatch(rf"{key}\.(\d+)\.png", path.name)
            if match is None:
                continue
            try:
                data = path.read_bytes()
                os.utime(path)  # recently used: kept longest
            except FileNotFoundError:
                return None  # pruned meanwhile
            return RenderedPage(data, int(match.group(1)))
        return None

    def _store(self, key: str, page: RenderedPage) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(page.png)
        os.replace(tmp, self.cache_dir / f"{key}.{page.highlights}.png")
        self._prune()

    def _prune(self) -> None:
        entries = []
        for path in self.cache_dir.glob("*.png"):
            try:
                entries.append((path.stat().st_mtime, path))
            except FileNotFoundError:
                continue
        entries.sort()
        for _, path in entries[: max(0, len(entries) - self.max_entries)]:
            path.unlink(missing_ok=True)
