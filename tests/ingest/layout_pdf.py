"""A PDF writer for layout tests: text runs placed where we say, Chinese included, and rules.

Each run is shown at its own position in WenQuanYi Micro Hei (or its Mono face), embedded as a
subset CID font with a ToUnicode map, so pypdf and pdfplumber read the text back and place
every glyph by its real advance width. `width` measures a run, so a page builder can set
columns apart by exactly the gap it wants.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache

from fontTools import subset
from fontTools.ttLib import TTCollection, TTFont

FONT_FILE = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
PAGE_W, PAGE_H = 595.0, 842.0


@dataclass(frozen=True)
class Run:
    x: float  # left edge of the first glyph, points from the page's left edge
    y: float  # baseline, points from the page's top edge (the way a layout is written)
    text: str
    size: float = 10.0
    mono: bool = False


Rule = tuple[float, float, float, float]  # x0, top, x1, bottom: a line from top-left coordinates


@cache
def _face(mono: bool) -> TTFont:
    return TTCollection(FONT_FILE, lazy=False).fonts[1 if mono else 0]


def width(text: str, size: float = 10.0, mono: bool = False) -> float:
    """The advance width of `text` in points."""
    font = _face(mono)
    cmap = font.getBestCmap()
    hmtx = font["hmtx"]
    units = sum(hmtx[cmap.get(ord(ch), ".notdef")][0] for ch in text)
    return units * size / font["head"].unitsPerEm


def _subset(mono: bool, chars: str) -> TTFont:
    options = subset.Options()
    options.notdef_outline = True
    options.name_IDs = ["*"]
    options.layout_features = []
    options.drop_tables = [*options.drop_tables, "FFTM"]  # FontForge's timestamps
    font = TTCollection(FONT_FILE).fonts[1 if mono else 0]
    sub = subset.Subsetter(options)
    sub.populate(unicodes=sorted({ord(c) for c in chars}))
    sub.subset(font)
    out = io.BytesIO()
    font.save(out)
    return TTFont(io.BytesIO(out.getvalue()))


def _font_objects(first: int, mono: bool, chars: str) -> tuple[dict[int, bytes], dict[str, int]]:
    """PDF objects (numbered from `first`; the Type0 font is `first`) and char -> glyph id."""
    font = _subset(mono, chars)
    cmap = font.getBestCmap()
    gid = {ch: font.getGlyphID(cmap[ord(ch)]) for ch in set(chars) if ord(ch) in cmap}
    scale = 1000 / font["head"].unitsPerEm
    hmtx = font["hmtx"]
    widths = " ".join(
        f"{g} [{round(hmtx[font.getGlyphName(g)][0] * scale)}]" for g in sorted(set(gid.values()))
    )
    name = b"WenQuanYiMicroHeiMono" if mono else b"WenQuanYiMicroHei"
    program = io.BytesIO()
    font.save(program)
    data = program.getvalue()
    bfchars = "\n".join(f"<{g:04X}> <{ord(ch):04X}>" for ch, g in sorted(gid.items()))
    tounicode = (
        "/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n"
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        "/CMapName /Adobe-Identity-UCS def /CMapType 2 def\n"
        "1 begincodespacerange <0000> <FFFF> endcodespacerange\n"
        f"{len(gid)} beginbfchar\n{bfchars}\nendbfchar\n"
        "endcmap CMapName currentdict /CMap defineresource pop end end"
    ).encode()
    flags = 32 | (1 if mono else 0)
    objects = {
        first: b"<< /Type /Font /Subtype /Type0 /BaseFont /%s /Encoding /Identity-H "
        b"/DescendantFonts [%d 0 R] /ToUnicode %d 0 R >>" % (name, first + 1, first + 4),
        first + 1: b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /%s "
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> "
        b"/FontDescriptor %d 0 R /CIDToGIDMap /Identity /DW 1000 /W [%s] >>"
        % (name, first + 2, widths.encode()),
        first + 2: b"<< /Type /FontDescriptor /FontName /%s /Flags %d /FontBBox [-200 -300 "
        b"1200 1000] /ItalicAngle 0 /Ascent 765 /Descent -240 /CapHeight 700 /StemV 80 "
        b"/FontFile2 %d 0 R >>" % (name, flags, first + 3),
        first + 3: b"<< /Length %d >>\nstream\n%s\nendstream" % (len(data), data),
        first + 4: b"<< /Length %d >>\nstream\n%s\nendstream" % (len(tounicode), tounicode),
    }
    return objects, gid


def _content(runs: list[Run], rules: list[Rule], gids: dict[bool, dict[str, int]]) -> bytes:
    ops: list[str] = []
    for x0, top, x1, bottom in rules:
        ops.append(f"0.8 w {x0:.2f} {PAGE_H - top:.2f} m {x1:.2f} {PAGE_H - bottom:.2f} l S")
    for run in runs:
        font = "/F2" if run.mono else "/F1"
        glyphs = "".join(f"{gids[run.mono][ch]:04X}" for ch in run.text)
        ops.append(
            f"BT {font} {run.size:g} Tf {run.x:.2f} {PAGE_H - run.y:.2f} Td <{glyphs}> Tj ET"
        )
    return "\n".join(ops).encode("ascii")


def make_layout_pdf(pages: list[list[Run]], rules: list[list[Rule]] | None = None) -> bytes:
    """A PDF of A4 pages, each the given runs (and straight rules, if any)."""
    rules = rules or [[] for _ in pages]
    chars = {mono: "".join(r.text for p in pages for r in p if r.mono == mono) for mono in (0, 1)}
    objects: dict[int, bytes] = {}
    gids: dict[bool, dict[str, int]] = {}
    font_refs = []
    next_id = 3
    for mono in (False, True):
        font_objects, gids[mono] = _font_objects(next_id, mono, chars[mono] or " ")
        objects.update(font_objects)
        font_refs.append(next_id)
        next_id += len(font_objects)
    page_ids = []
    for runs, page_rules in zip(pages, rules, strict=True):
        stream = _content(runs, page_rules, gids)
        page_ids.append(next_id)
        objects[next_id] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Resources << /Font "
            b"<< /F1 %d 0 R /F2 %d 0 R >> >> /Contents %d 0 R >>"
            % (PAGE_W, PAGE_H, font_refs[0], font_refs[1], next_id + 1)
        )
        objects[next_id + 1] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
        next_id += 2
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[2] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % p for p in page_ids),
        len(page_ids),
    )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (num, objects[num])
    xref = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    out += b"".join(b"%010d 00000 n \n" % offsets[i] for i in range(1, size))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)
