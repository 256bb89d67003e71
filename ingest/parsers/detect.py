"""Decide a file's format from its extension AND its first bytes.

Both must agree: the extension alone lets a renamed executable through, the content alone can't
tell Markdown from plain text. Everything else is refused with a reason the uploader can act on.
"""

from __future__ import annotations

import os

from ingest.parsers.base import ParseError

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
TEXT = "text/plain"
MARKDOWN = "text/markdown"

EXTENSIONS: dict[str, str] = {
    ".pdf": PDF,
    ".docx": DOCX,
    ".txt": TEXT,
    ".text": TEXT,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
}
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(EXTENSIONS)

# Formats people commonly try, with advice better than "unsupported".
_ADVICE = {
    ".doc": "legacy Word .doc files are not supported; save the file as .docx",
    ".wps": "WPS files are not supported; save the file as .docx",
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
    if ext == ".pdf":
        if b"%PDF-" not in head[:1024]:
            what = f"it is {found}" if found else "there is no %PDF- header"
            raise UnsupportedMediaType(f"the file is named .pdf but is not a PDF: {what}")
        return PDF
    if ext == ".docx":
        if not head.startswith(b"PK\x03\x04"):
            what = f"it is {found}" if found else "a .docx is a zip archive and this is not one"
            raise UnsupportedMediaType(
                f"the file is named .docx but is not a Word document: {what}"
            )
        return DOCX
    if ext in EXTENSIONS or ext == "":
        if found or not looks_like_text(head):
            what = found or "binary data"
            raise UnsupportedMediaType(
                f"the file is named {ext or 'without an extension'} but contains {what}"
            )
        return EXTENSIONS.get(ext, TEXT)
    supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
    raise UnsupportedMediaType(f"files of type {ext} are not supported; upload one of: {supported}")
