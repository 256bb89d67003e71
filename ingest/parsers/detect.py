"""Decide a file's format from its extension AND its first bytes.

Both must agree: the extension alone lets a renamed executable through, the content alone can't
tell Markdown from plain text, or a Word file from a spreadsheet (both are zips). Everything else
is refused with a reason the uploader can act on.
"""

from __future__ import annotations

import os
import shutil

from ingest.parsers.base import ParseError

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
TEXT = "text/plain"
MARKDOWN = "text/markdown"
CSV = "text/csv"
TSV = "text/tab-separated-values"
HTML = "text/html"
EML = "message/rfc822"
MSG = "application/vnd.ms-outlook"
DOC = "application/msword"
WPS = "application/vnd.ms-works"
XLS = "application/vnd.ms-excel"
PPT = "application/vnd.ms-powerpoint"
PNG = "image/png"
JPEG = "image/jpeg"
TIFF = "image/tiff"

# Formats read as text: the content must look like text, whatever the name says.
_TEXT_TYPES: dict[str, str] = {
    ".txt": TEXT,
    ".text": TEXT,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".csv": CSV,
    ".tsv": TSV,
    ".html": HTML,
    ".htm": HTML,
    ".eml": EML,
}
_ZIP = (b"PK\x03\x04",)
_OLE = (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",)  # legacy Office and Outlook files
# Binary formats: extension -> (media type, accepted first bytes, what the file should be).
_BINARY_TYPES: dict[str, tuple[str, tuple[bytes, ...], str]] = {
    ".pdf": (PDF, (b"%PDF-",), "a PDF"),
    ".docx": (DOCX, _ZIP, "a Word document"),
    ".xlsx": (XLSX, _ZIP, "an Excel workbook"),
    ".pptx": (PPTX, _ZIP, "a PowerPoint presentation"),
    ".msg": (MSG, _OLE, "an Outlook message"),
    ".doc": (DOC, _OLE, "a legacy Word document"),
    ".wps": (WPS, _OLE, "a WPS or Works document"),
    ".xls": (XLS, _OLE, "a legacy Excel workbook"),
    ".ppt": (PPT, _OLE, "a legacy PowerPoint presentation"),
    ".png": (PNG, (b"\x89PNG\r\n\x1a\n",), "a PNG image"),
    ".jpg": (JPEG, (b"\xff\xd8\xff",), "a JPEG image"),
    ".jpeg": (JPEG, (b"\xff\xd8\xff",), "a JPEG image"),
    ".tif": (TIFF, (b"II*\x00", b"MM\x00*"), "a TIFF image"),
    ".tiff": (TIFF, (b"II*\x00", b"MM\x00*"), "a TIFF image"),
}
# Legacy Office formats are converted by LibreOffice: the Debian package that converts each.
LEGACY_PACKAGES: dict[str, str] = {
    DOC: "libreoffice-writer-nogui",
    WPS: "libreoffice-writer-nogui",
    XLS: "libreoffice-calc-nogui",
    PPT: "libreoffice-impress-nogui",
}
EXTENSIONS: dict[str, str] = {
    **_TEXT_TYPES,
    **{ext: media_type for ext, (media_type, _, _) in _BINARY_TYPES.items()},
}
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(EXTENSIONS)

# Formats people commonly try, with advice better than "unsupported".
_ADVICE = {
    ".rtf": "RTF is not supported; save the file as .docx or .pdf",
}

# Magic numbers of binary formats that must never be read as text or accepted under another name.
_BINARY_MAGIC: dict[bytes, str] = {
    b"\x7fELF": "an ELF executable",
    b"MZ": "a Windows executable",
    b"\xca\xfe\xba\xbe": "a Mach-O or Java class file",
    b"\xcf\xfa\xed\xfe": "a Mach-O executable",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
    b"\x1f\x8b": "a gzip archive",
    b"Rar!": "a RAR archive",
    b"7z\xbc\xaf": "a 7-Zip archive",
    b"\xd0\xcf\x11\xe0": "a legacy Office (OLE) file",
    b"%PDF-": "a PDF",
    b"PK\x03\x04": "a zip archive",
}
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class UnsupportedMediaType(ParseError):
    """The file's type is not one we parse, or its content contradicts its name."""


def find_soffice() -> str | None:
    """LibreOffice's command, or None where it is not installed (looked up on each call, so
    installing it needs no restart)."""
    return shutil.which("soffice") or shutil.which("libreoffice")


def missing_converter(media_type: str) -> str:
    """Why a legacy file cannot be read here, naming the Debian package that would read it."""
    return (
        f"legacy Office files ({media_type}) are converted with LibreOffice, which is not "
        f"installed on this server (Debian package {LEGACY_PACKAGES[media_type]}); "
        "save the file in the current format (.docx, .xlsx or .pptx) and upload it again"
    )


def _sniff_binary(head: bytes) -> str | None:
    for magic, what in _BINARY_MAGIC.items():
        # "MZ" alone is too short to tell an executable from a text that starts with those
        # letters; a real PE header is full of NULs.
        if head.startswith(magic) and (magic != b"MZ" or b"\x00" in head[:512]):
            return what
    return None


def looks_like_text(head: bytes) -> bool:
    """Cheap check on the first bytes: no NULs (unless UTF-16) and few control characters."""
    if head.startswith(_UTF16_BOMS):
        return True
    if b"\x00" in head:
        return False
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return controls <= max(1, len(head) // 100)


def _binary_type(ext: str, head: bytes, found: str | None) -> str:
    media_type, magics, what = _BINARY_TYPES[ext]
    window = head[:1024] if media_type == PDF else head  # a PDF header may follow junk
    ok = any(m in window for m in magics) if media_type == PDF else head.startswith(magics)
    if not ok:
        plain = (
            "there is no %PDF- header" if media_type == PDF else f"it does not start like {what}"
        )
        why = f"it is {found}" if found else plain
        raise UnsupportedMediaType(f"the file is named {ext} but is not {what}: {why}")
    if media_type in LEGACY_PACKAGES and find_soffice() is None:
        raise UnsupportedMediaType(missing_converter(media_type))
    return media_type


def detect_media_type(filename: str, head: bytes) -> str:
    """Return the media type of an upload, or raise UnsupportedMediaType saying why not.

    `head` is the first few KB of the file (all of it for small files).
    """
    if not head:
        raise UnsupportedMediaType("the file is empty")
    ext = os.path.splitext(filename)[1].lower()
    found = _sniff_binary(head)
    if ext in _ADVICE:
        raise UnsupportedMediaType(_ADVICE[ext])
    if ext in _BINARY_TYPES:
        return _binary_type(ext, head, found)
    if ext in _TEXT_TYPES or ext == "":
        if found or not looks_like_text(head):
            what = found or "binary data"
            raise UnsupportedMediaType(
                f"the file is named {ext or 'without an extension'} but contains {what}"
            )
        return _TEXT_TYPES.get(ext, TEXT)
    supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
    raise UnsupportedMediaType(f"files of type {ext} are not supported; upload one of: {supported}")
