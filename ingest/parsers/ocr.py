"""OCR: the text of scanned pages and images, Chinese and English, on the CPU, offline.

Two engines: RapidOCR with the PP-OCR models shipped inside its wheel (the default), and
Tesseract with Debian's chi_sim and eng data; bench/ocr_engines.py measured both. An engine is
loaded on first use and kept for the life of the process: in a parser child (ingest/sandbox.py)
that is once per child, under the child's memory and CPU limits. Each page has its own time
limit (`ParseLimits.ocr_page_timeout_s`); a page that runs past it, or fails, is left out and
named in the document's warnings instead of sinking the whole document.
"""

from __future__ import annotations

import logging
import signal
import statistics
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from ingest.normalize import collapse_cjk_spaces, join_wrapped_lines
from ingest.parsers.base import ParseError, ParseLimits
from ingest.parsers.notices import page_ranges, warning

logger = logging.getLogger(__name__)

ENGINES = ("rapidocr", "tesseract")
RENDER_DPI = 200  # scanned PDF pages are rendered at this resolution for OCR
_THREADS = 2  # per engine: workers already parse several documents side by side


# Told after each page OCR is done with (pages done, pages to OCR): in a parser child,
# ingest/sandbox.py sets it to a message to the worker, which records the job's progress.
page_progress: ContextVar[Callable[[int, int], None] | None] = ContextVar(
    "ocr_page_progress", default=None
)


class OcrTimeout(Exception):
    """One page took longer than its time limit."""


@dataclass(frozen=True)
class OcrLine:
    """One line of recognised text and its box in pixels (left, top, right, bottom)."""

    text: str
    box: tuple[float, float, float, float]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


class OcrEngine(Protocol):
    name: str

    def read(self, image: Image.Image, timeout_s: float) -> list[OcrLine]:
        """The lines of `image` in reading order; OcrTimeout after `timeout_s` seconds."""
        ...


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise OcrTimeout in this thread once `seconds` have passed.

    SIGALRM interrupts at the next Python step: RapidOCR returns to Python between its model
    calls (detection once, recognition per batch of lines), each a fraction of a second on a
    page. The library may wrap the exception in its own, or log it and go on with an empty
    result: once the alarm has gone off, the block ends in OcrTimeout whatever came out of it.
    Signals reach only the main thread, which is where a parser child parses; elsewhere the
    page runs to its end (the sandbox's wall-clock limit still holds).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def expire(signum: int, frame: object) -> None:
        nonlocal fired
        fired = True
        raise OcrTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    started = time.monotonic()
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except Exception as exc:
        if fired and not isinstance(exc, OcrTimeout):
            raise OcrTimeout from exc
        raise
    else:
        if fired:
            raise OcrTimeout
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if previous is not None:  # None: a handler set outside Python, which cannot be put back
            signal.signal(signal.SIGALRM, previous)
        if outer_delay:  # someone else's timer was running: give it back what is left of it
            left = max(outer_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


def _deskewed_boxes(quads: list[Any]) -> list[tuple[float, float, float, float]]:
    """Axis-aligned boxes of text quadrilaterals (top-left, top-right, bottom-right,
    bottom-left) after taking out the page's skew: a scan turned by 1.5 degrees drifts 26 px
    over a 1000 px line, more than a line's height, so raw boxes of neighbouring lines
    overlap. The skew is the median slope of the top edges of the wide boxes."""
    slopes = [
        (q[1][1] - q[0][1]) / (q[1][0] - q[0][0])
        for q in quads
        if q[1][0] - q[0][0] > 4 * max(1.0, q[3][1] - q[0][1])
    ]
    slope = statistics.median(slopes) if slopes else 0.0
    boxes = []
    for quad in quads:
        xs = [float(x) for x, _ in quad]
        ys = [float(y) - slope * float(x) for x, y in quad]
        boxes.append((min(xs), min(ys), max(xs), max(ys)))
    return boxes


def _merge_into_lines(pieces: list[OcrLine]) -> list[OcrLine]:
    """Pieces of text side by side on one visual line become one line, left to right; lines
    go top to bottom. Two pieces share a line when their vertical spans overlap by at least
    half the smaller height."""
    rows: list[list[OcrLine]] = []
    for piece in sorted(pieces, key=lambda p: (p.box[1] + p.box[3]) / 2):
        if rows:
            last = rows[-1]
            top = max(min(p.box[1] for p in last), piece.box[1])
            bottom = min(max(p.box[3] for p in last), piece.box[3])
            smaller = min(min(p.height for p in last), piece.height)
            if smaller > 0 and bottom - top >= 0.5 * smaller:
                last.append(piece)
                continue
        rows.append([piece])
    lines = []
    for row in rows:
        row.sort(key=lambda p: p.box[0])
        text = collapse_cjk_spaces(" ".join(p.text for p in row))
        box = (
            min(p.box[0] for p in row),
            min(p.box[1] for p in row),
            max(p.box[2] for p in row),
            max(p.box[3] for p in row),
        )
        lines.append(OcrLine(text, box))
    return lines


class RapidOcrEngine:
    """RapidOCR (ONNX Runtime) with the detection, direction and recognition models found in
    its own wheel: nothing is downloaded, and a wheel without them fails loudly here."""

    name = "rapidocr"

    def __init__(self, threads: int = _THREADS) -> None:
        import rapidocr  # heavy (OpenCV, ONNX Runtime): only where OCR is needed

        models = Path(rapidocr.__file__).parent / "models"
        paths = {task: sorted(models.glob(f"*{task}*.onnx")) for task in ("det", "cls", "rec")}
        missing = [task for task, found in paths.items() if not found]
        if missing:
            raise ParseError(
                f"OCR is not available: the rapidocr package has no {'/'.join(missing)} model "
                f"in {models}; reinstall it, or set RAG_INGEST__OCR_ENGINE=tesseract"
            )
        params: dict[str, Any] = {
            "Global.log_level": "error",
            "Det.model_path": str(paths["det"][-1]),
            "Cls.model_path": str(paths["cls"][-1]),
            "Rec.model_path": str(paths["rec"][-1]),
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
        self._ocr = rapidocr.RapidOCR(params=params)

    def read(self, image: Image.Image, timeout_s: float) -> list[OcrLine]:
        with _deadline(timeout_s):
            result = self._ocr(image.convert("RGB"))
        # detection, direction and recognition all ran: the full output (boxes None: no text)
        boxes, texts = getattr(result, "boxes", None), getattr(result, "txts", None)
        if boxes is None or texts is None:
            return []
        quads = [[(float(x), float(y)) for x, y in points] for points in boxes]
        pieces = [
            OcrLine(text.strip(), box)
            for box, text in zip(_deskewed_boxes(quads), texts, strict=True)
            if text.strip()
        ]
        return _merge_into_lines(pieces)


class TesseractEngine:
    """Tesseract 5 through its command line (pytesseract), Simplified Chinese and English;
    the process is killed when a page runs past its time limit."""

    name = "tesseract"
    languages = "chi_sim+eng"

    def __init__(self) -> None:
        import pytesseract

        try:
            installed = set(pytesseract.get_languages(config=""))
        except (OSError, pytesseract.TesseractNotFoundError) as exc:
            raise ParseError(
                "OCR is not available: the tesseract program is not installed (Debian: "
                "apt-get install tesseract-ocr tesseract-ocr-chi-sim tesseract-ocr-eng)"
            ) from exc
        missing = set(self.languages.split("+")) - installed
        if missing:
            packages = " ".join(f"tesseract-ocr-{m.replace('_', '-')}" for m in sorted(missing))
            raise ParseError(
                f"OCR is not available: tesseract lacks the {', '.join(sorted(missing))} data "
                f"(Debian: apt-get install {packages})"
            )
        self._tesseract = pytesseract

    def read(self, image: Image.Image, timeout_s: float) -> list[OcrLine]:
        try:
            data = self._tesseract.image_to_data(
                image.convert("L"),
                lang=self.languages,
                config="--psm 3",
                timeout=timeout_s,
                output_type=self._tesseract.Output.DICT,
            )
        except RuntimeError as exc:  # pytesseract's way of saying it killed the process
            if "timeout" in str(exc).lower():
                raise OcrTimeout from exc
            raise
        # Words -> lines, in Tesseract's own reading order (it knows columns).
        lines: dict[tuple[int, int, int], list[int]] = {}
        for i, word in enumerate(data["text"]):
            if str(word).strip():
                key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
                lines.setdefault(key, []).append(i)
        out = []
        for indices in lines.values():
            text = collapse_cjk_spaces(" ".join(str(data["text"][i]).strip() for i in indices))
            left = min(data["left"][i] for i in indices)
            top = min(data["top"][i] for i in indices)
            right = max(data["left"][i] + data["width"][i] for i in indices)
            bottom = max(data["top"][i] + data["height"][i] for i in indices)
            out.append(OcrLine(text, (left, top, right, bottom)))
        return out


_FACTORIES: dict[str, Callable[[], OcrEngine]] = {
    "rapidocr": RapidOcrEngine,
    "tesseract": TesseractEngine,
}


@cache
def load_engine(name: str) -> OcrEngine:
    """The engine called `name`, loaded once per process (its models stay in memory);
    ParseError when OCR is off or the engine cannot be loaded here."""
    if name == "off":
        raise ParseError("OCR is turned off here (RAG_INGEST__OCR_ENGINE=off)")
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ParseError(f"unknown OCR engine {name!r}; use one of: {', '.join(ENGINES)}")
    started = time.perf_counter()
    engine = factory()
    logger.info("OCR engine %s loaded in %.1f s", name, time.perf_counter() - started)
    return engine


def check_pixels(width: int, height: int, limits: ParseLimits, what: str = "the image") -> None:
    """ParseError when an image is larger than the limit (checked before it is decoded)."""
    if width * height > limits.max_image_pixels:
        raise ParseError(
            f"{what} is {width}×{height} pixels ({width * height / 1e6:.0f} million); the limit "
            f"is {limits.max_image_pixels / 1e6:g} million (RAG_INGEST__OCR_MAX_IMAGE_PIXELS)"
        )


def paragraphs(lines: list[OcrLine]) -> list[str]:
    """Lines of one page joined into paragraphs: a paragraph ends at a vertical gap wider than
    most line gaps, or after a line that stops well short of the text's right edge."""
    if not lines:
        return []
    height = statistics.median(line.height for line in lines) or 1.0
    left = min(line.box[0] for line in lines)
    right = max(line.box[2] for line in lines)
    groups: list[list[str]] = [[]]
    for prev, line in zip([None, *lines], lines, strict=False):
        if prev is not None and (
            line.box[1] - prev.box[3] > 0.8 * height or prev.box[2] < right - 0.15 * (right - left)
        ):
            groups.append([])
        groups[-1].append(line.text)
    texts = (collapse_cjk_spaces(join_wrapped_lines(group)) for group in groups)
    return [text for text in texts if text]


@dataclass
class PageReport:
    """What OCR did to a document's pages (1-based numbers), for its warnings and progress."""

    planned: int = 0
    done: int = 0
    read: list[int] = field(default_factory=list)
    timed_out: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)

    def advance(self) -> None:
        """One more page is done with (read, blank, timed out or failed)."""
        self.done += 1
        listener = page_progress.get()
        if listener is not None:
            listener(self.done, self.planned)

    def reason(self, limits: ParseLimits) -> str:
        """Why a document whose only text OCR was to give has none."""
        if self.timed_out:
            return (
                f"OCR took longer than {limits.ocr_page_timeout_s:g} s per page and was stopped "
                "(RAG_INGEST__OCR_PAGE_TIMEOUT_S)"
            )
        if self.failed:
            return "OCR failed on every page that needed it"
        return "OCR found no text"

    def warnings(self, limits: ParseLimits, *, note_read: bool = True) -> list[str]:
        out = []
        if self.read and note_read:
            out.append(warning("ocr_pages", pages=page_ranges(self.read)))
        if self.timed_out:
            seconds = f"{limits.ocr_page_timeout_s:g}"
            out.append(warning("ocr_timeout", pages=page_ranges(self.timed_out), seconds=seconds))
        if self.failed:
            out.append(warning("ocr_failed", pages=page_ranges(self.failed)))
        return out


def read_page(
    engine: OcrEngine, image: Image.Image, page: int, limits: ParseLimits, report: PageReport
) -> list[OcrLine]:
    """OCR one page within its time limit; a timeout or engine failure is noted in `report`
    and yields no lines."""
    started = time.perf_counter()
    try:
        lines = engine.read(image, limits.ocr_page_timeout_s)
    except OcrTimeout:
        logger.warning("page %d: OCR stopped after %g s", page, limits.ocr_page_timeout_s)
        report.timed_out.append(page)
        return []
    except MemoryError:
        raise  # the memory limit is for the whole document
    except Exception as exc:  # one bad page must not sink the document
        logger.warning("page %d: OCR failed: %s: %s", page, exc.__class__.__name__, exc)
        report.failed.append(page)
        return []
    if lines:  # a blank page is not "read by OCR"; the PDF parser notes it as empty
        report.read.append(page)
    logger.info(
        "page %d: OCR %s read %d lines in %.2f s",
        page,
        engine.name,
        len(lines),
        time.perf_counter() - started,
    )
    return lines


def _render(document: Any, index: int, limits: ParseLimits) -> Image.Image:
    """Page `index` of a pypdfium2 document as a grayscale image at RENDER_DPI, or smaller
    when that would pass the pixel limit (a huge page size is not a reason to fail)."""
    page = document[index]
    try:
        width, height = page.get_size()  # points, 1/72 inch
        scale = RENDER_DPI / 72
        pixels = width * scale * height * scale
        if pixels > limits.max_image_pixels:
            scale *= (limits.max_image_pixels / pixels) ** 0.5
        bitmap = page.render(scale=scale, grayscale=True)
        return bitmap.to_pil()
    finally:
        page.close()


def ocr_empty_pages(
    data: bytes,
    pages: list[list[str]],
    limits: ParseLimits,
    warnings: list[str],
    skip: Collection[int] = (),
) -> None:
    """Fill the pages of a PDF that have no text layer (`pages[i]` empty) with the lines OCR
    reads from their rendered image, in place; pages numbered in `skip` (1-based) are left
    alone. Adds the warnings that say which pages were read, timed out or failed."""
    todo = [i for i, lines in enumerate(pages) if not lines and i + 1 not in skip]
    if not todo or limits.ocr_engine == "off":
        return
    engine = load_engine(limits.ocr_engine)
    import pypdfium2  # only for scanned PDFs

    try:
        document = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as exc:
        logger.warning("the PDF cannot be rendered for OCR: %s", exc)
        warnings.append(warning("ocr_failed", pages=page_ranges(i + 1 for i in todo)))
        return
    report = PageReport(planned=len(todo))
    total = sum(len(line) for lines in pages for line in lines)
    try:
        for index in todo:
            try:
                image = _render(document, index, limits)
            except MemoryError:
                raise
            except Exception as exc:  # pdfium errors on a broken page: that page only
                logger.warning("page %d: rendering for OCR failed: %s", index + 1, exc)
                report.failed.append(index + 1)
                report.advance()
                continue
            lines = [line.text for line in read_page(engine, image, index + 1, limits, report)]
            report.advance()
            total += sum(len(line) for line in lines)
            if total > limits.max_chars:
                raise ParseError(f"the PDF has more than {limits.max_chars} characters of text")
            pages[index] = lines
    finally:
        document.close()
    if not report.read and not any(pages) and (report.timed_out or report.failed):
        raise ParseError(f"no page has a text layer, and {report.reason(limits)}")
    warnings.extend(report.warnings(limits))
