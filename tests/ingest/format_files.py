"""Real files of the formats ingestion reads, made in the test: XLSX (openpyxl), PPTX
(python-pptx), EML (the standard library), HTML, and Outlook MSG.

No Python library writes .msg files, so `make_msg` writes one itself: a Compound File (MS-CFB,
version 3: 512-byte sectors, streams under 4096 bytes in the mini stream) holding the MAPI
property streams of MS-OXMSG that readers use (subject, body, sender, recipients, attachments).
"""

from __future__ import annotations

import email.message
import io
import math
import re
import struct
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import openpyxl
import pptx
from pptx.util import Inches

# --- spreadsheets, slides, mail, HTML --------------------------------------------------------


def make_xlsx(sheets: Mapping[str, Sequence[Sequence[object]]]) -> bytes:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@dataclass
class Slide:
    title: str
    lines: list[str] = field(default_factory=list)
    table: list[list[str]] | None = None
    notes: str = ""


def make_pptx(slides: list[Slide]) -> bytes:
    deck = pptx.Presentation()
    for spec in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[5])  # title only
        slide.shapes.title.text = spec.title
        if spec.lines:
            box = slide.shapes.add_textbox(Inches(1), Inches(2), Inches(8), Inches(2))
            box.text_frame.text = "\n".join(spec.lines)
        if spec.table:
            rows, cols = len(spec.table), len(spec.table[0])
            shape = slide.shapes.add_table(rows, cols, Inches(1), Inches(4.5), Inches(8), Inches(2))
            for r, row in enumerate(spec.table):
                for c, value in enumerate(row):
                    shape.table.cell(r, c).text = value
        if spec.notes:
            slide.notes_slide.notes_text_frame.text = spec.notes
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def make_eml(
    subject: str,
    body: str,
    attachments: list[tuple[str, bytes]] = (),  # type: ignore[assignment]
    *,
    html: str | None = None,
) -> bytes:
    message = email.message.EmailMessage()
    message["Subject"] = subject
    message["From"] = "张三 <zhangsan@example.com>"
    message["To"] = "team@example.com"
    message["Date"] = "Mon, 02 Dec 2024 09:30:00 +0800"
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for name, data in attachments:
        message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return message.as_bytes()


def make_html(title: str, body: str) -> bytes:
    """A page with navigation, a header and a footer around its article."""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body><nav><ul><li><a href="/">Home</a></li><li><a href="/products">Products</a></li>
<li><a href="/login">Sign in to your account</a></li></ul></nav>
<header><div class="banner">ACME Intranet · Search · Help · Contact</div></header>
<main><article>{body}</article></main>
<footer><p>Copyright 2024 ACME Corporation. Privacy policy. Terms of use.</p></footer>
</body></html>""".encode()


# --- hostile variants ------------------------------------------------------------------------


_R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def many_sheets(count: int) -> bytes:
    """A workbook listing `count` sheets, all pointing at one small sheet part: tiny on disk."""
    source = zipfile.ZipFile(io.BytesIO(make_xlsx({"S": [["a", "b"], [1, 2]]})))
    sheets = "".join(
        f'<sheet xmlns:r="{_R}" name="S{i}" sheetId="{i + 1}" r:id="rId{i + 10}"/>'
        for i in range(count)
    )
    rels = "".join(
        f'<Relationship Id="rId{i + 10}" Type="http://schemas.openxmlformats.org/'
        'officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>'
        for i in range(count)
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            body = source.read(info)
            if info.filename == "xl/workbook.xml":
                body = re.sub(rb"<sheets>.*</sheets>", f"<sheets>{sheets}</sheets>".encode(), body)
            elif info.filename == "xl/_rels/workbook.xml.rels":
                body = body.replace(b"</Relationships>", rels.encode() + b"</Relationships>")
            target.writestr(info.filename, body)
    return out.getvalue()


def with_video(deck: bytes, size: int) -> bytes:
    """The deck plus a video member that inflates to `size` bytes (zeros: a few KB on disk per
    MB), declared in the zip like any real one."""
    out = io.BytesIO()
    source = zipfile.ZipFile(io.BytesIO(deck))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
        with target.open("ppt/media/media1.mp4", "w", force_zip64=True) as video:
            block = b"\x00" * (1 << 20)
            for _ in range(size >> 20):
                video.write(block)
    return out.getvalue()


# --- Outlook .msg: a compound file with MAPI property streams --------------------------------

_SECTOR = 512
_MINI = 64
_CUTOFF = 4096
_FREE, _END, _FATSECT, _NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
_STRING, _BINARY, _INT32 = 0x001F, 0x0102, 0x0003


@dataclass
class _Entry:
    name: str
    kind: int  # 1 storage, 2 stream, 5 root
    data: bytes = b""
    children: list[_Entry] = field(default_factory=list)
    sid: int = 0
    start: int = _END
    left: int = _NOSTREAM
    right: int = _NOSTREAM
    child: int = _NOSTREAM


def _cfb_key(entry: _Entry) -> tuple[int, str]:
    return len(entry.name), entry.name.upper()


def _tree(entries: list[_Entry]) -> int:
    """A balanced binary search tree over siblings in CFB order; its root's id."""
    if not entries:
        return _NOSTREAM
    mid = len(entries) // 2
    entries[mid].left = _tree(entries[:mid])
    entries[mid].right = _tree(entries[mid + 1 :])
    return entries[mid].sid


def _walk(entry: _Entry) -> list[_Entry]:
    out = [entry]
    for child in entry.children:
        out += _walk(child)
    return out


def _chain(fat: list[int], first: int, count: int) -> None:
    for i in range(count):
        fat[first + i] = first + i + 1 if i < count - 1 else _END


def _dir_entry(e: _Entry) -> bytes:
    name = e.name.encode("utf-16-le") + b"\x00\x00"
    return struct.pack(
        "<64sHBBIII16sIQQIQ",
        name,
        len(name),
        e.kind,
        1,  # black: readers do not check the colouring
        e.left,
        e.right,
        e.child,
        b"\x00" * 16,
        0,
        0,
        0,
        e.start,
        len(e.data),
    )


def write_cfb(root_children: list[_Entry]) -> bytes:
    root = _Entry("Root Entry", 5, children=root_children)
    entries = _walk(root)
    for sid, e in enumerate(entries):
        e.sid = sid
    for e in entries:
        e.children.sort(key=_cfb_key)
        e.child = _tree(e.children)
    streams = [e for e in entries if e.kind == 2]
    mini = bytearray()
    minifat: list[int] = []
    for e in (s for s in streams if len(s.data) < _CUTOFF):
        n = math.ceil(len(e.data) / _MINI)
        e.start = len(minifat) if n else _END
        minifat += [len(minifat) + i + 1 if i < n - 1 else _END for i in range(n)]
        mini += e.data.ljust(n * _MINI, b"\x00")
    big = [s for s in streams if len(s.data) >= _CUTOFF]
    layout: list[tuple[str, bytes]] = [("big", s.data) for s in big]
    minifat += [_FREE] * (-len(minifat) % (_SECTOR // 4))
    layout += [("mini", bytes(mini)), ("minifat", struct.pack(f"<{len(minifat)}I", *minifat))]
    sectors = bytearray()
    fat_entries: list[int] = []
    starts: dict[str, int] = {}
    for i, (what, blob) in enumerate(layout):
        n = math.ceil(len(blob) / _SECTOR)
        first = len(fat_entries)
        if what == "big":
            big[i].start = first if n else _END
        else:
            starts[what] = first if n else _END
        fat_entries += [0] * n
        _chain(fat_entries, first, n)
        sectors += blob.ljust(n * _SECTOR, b"\x00")
    root.start, root.data = starts["mini"], bytes(mini)
    dir_count = math.ceil(len(entries) / 4)
    dir_first = len(fat_entries)
    fat_entries += [0] * dir_count
    _chain(fat_entries, dir_first, dir_count)
    directory = b"".join(_dir_entry(e) for e in entries)
    empty = struct.pack(
        "<64sHBBIII16sIQQIQ", b"", 0, 0, 0, _NOSTREAM, _NOSTREAM, _NOSTREAM, b"", 0, 0, 0, 0, 0
    )
    directory += empty * (dir_count * 4 - len(entries))
    sectors += directory
    fat_count = 1
    while fat_count * 128 < len(fat_entries) + fat_count:
        fat_count += 1
    fat_first = len(fat_entries)
    fat_entries += [_FATSECT] * fat_count
    fat_entries += [_FREE] * (fat_count * 128 - len(fat_entries))
    sectors += struct.pack(f"<{len(fat_entries)}I", *fat_entries)
    difat = [fat_first + i for i in range(fat_count)] + [_FREE] * (109 - fat_count)
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        b"\x00" * 16,
        0x003E,
        0x0003,
        0xFFFE,
        9,
        6,
        b"\x00" * 6,
        0,
        fat_count,
        dir_first,
        0,
        _CUTOFF,
        starts["minifat"],
        math.ceil(len(minifat) * 4 / _SECTOR),
        _END,
        0,
    ) + struct.pack("<109I", *difat)
    return header + bytes(sectors)


def _properties(props: list[tuple[int, int, int | str | bytes]], header: bytes) -> list[_Entry]:
    """The property stream and one substorage stream per variable-length property."""
    table = bytearray(header)
    out: list[_Entry] = []
    for pid, ptype, value in props:
        tag = (pid << 16) | ptype
        if isinstance(value, int):
            table += struct.pack("<IIiI", tag, 6, value, 0)
            continue
        data = value.encode("utf-16-le") if isinstance(value, str) else value
        size = len(data) + (2 if ptype == _STRING else 0)
        table += struct.pack("<IIII", tag, 6, size, 0)
        out.append(_Entry(f"__substg1.0_{tag:08X}", 2, data))
    return [_Entry("__properties_version1.0", 2, bytes(table)), *out]


def make_msg(
    subject: str,
    body: str,
    attachments: list[tuple[str, bytes]] = (),  # type: ignore[assignment]
) -> bytes:
    recipients = [("Team", "team@example.com")]
    root_props: list[tuple[int, int, int | str | bytes]] = [
        (0x001A, _STRING, "IPM.Note"),
        (0x0037, _STRING, subject),
        (0x1000, _STRING, body),
        (0x0C1A, _STRING, "Li Si"),
        (0x0C1F, _STRING, "lisi@example.com"),
    ]
    header = struct.pack(
        "<8xIIII8x", len(recipients), len(attachments), len(recipients), len(attachments)
    )
    children = _properties(root_props, header)
    children.append(_Entry("__nameid_version1.0", 1))
    for i, (name, address) in enumerate(recipients):
        props: list[tuple[int, int, int | str | bytes]] = [
            (0x3001, _STRING, name),
            (0x39FE, _STRING, address),
            (0x0C15, _INT32, 1),
        ]
        children.append(
            _Entry(f"__recip_version1.0_#{i:08X}", 1, children=_properties(props, bytes(8)))
        )
    for i, (filename, data) in enumerate(attachments):
        props = [(0x3707, _STRING, filename), (0x3701, _BINARY, data), (0x3705, _INT32, 1)]
        children.append(
            _Entry(f"__attach_version1.0_#{i:08X}", 1, children=_properties(props, bytes(8)))
        )
    return write_cfb(children)
