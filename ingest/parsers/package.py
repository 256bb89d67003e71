"""Office Open XML packages (XLSX, PPTX) checked before a library opens them, media left out.

A package is a zip whose members declare their inflated sizes; those are checked against the
limits first, so a bomb fails with a reason instead of filling memory. Pictures, audio and video
carry no text we index, yet python-pptx inflates every part it can reach: they are replaced by
empty members, so a deck with a 1 GB video costs what its slides cost.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib

from ingest.parsers.base import ParseError, ParseLimits

_MAX_MEMBERS = 10_000
_MAX_RATIO = 200  # deflate rarely beats ~20:1 on real documents; 200:1 is a crafted bomb
_RATIO_FLOOR = 1 << 20  # small members cannot hurt, whatever their ratio
_PROLOG_BYTES = 4096  # a DTD must come before the root element, so near the start
_DTD = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_MEDIA = re.compile(r"^[^/]+/(?:media|embeddings)/")  # ppt/media/…, xl/embeddings/…


def _is_media(name: str) -> bool:
    return bool(_MEDIA.match(name))


def open_package(data: bytes, limits: ParseLimits, *, required: str, what: str) -> bytes:
    """The package's bytes, checked and with its media members emptied; ParseError saying why
    when it is not a zip, not `what` (no `required` member), a bomb, or declares a DTD."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ParseError(f"the file is not {what}: not a valid zip ({exc})") from exc
    if len(members) > _MAX_MEMBERS:
        raise ParseError(f"the archive has {len(members)} members; it looks like a zip bomb")
    if required not in {m.filename for m in members}:
        raise ParseError(f"the archive is not {what} (no {required})")
    read = [m for m in members if not _is_media(m.filename)]
    total = sum(m.file_size for m in read)
    if total > limits.max_decompressed_bytes:
        raise ParseError(
            f"the archive inflates to {total} bytes without its media (limit"
            f" {limits.max_decompressed_bytes}, RAG_INGEST__MAX_DECOMPRESSED_BYTES);"
            " it looks like a zip bomb"
        )
    for m in read:
        if m.file_size > _RATIO_FLOOR and m.file_size > _MAX_RATIO * max(m.compress_size, 1):
            raise ParseError(
                f"member {m.filename!r} has compression ratio above {_MAX_RATIO}:1;"
                " it looks like a zip bomb"
            )
    try:
        return _without_media(data, members)
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError) as exc:
        raise ParseError(f"the file is damaged: {exc}") from exc


def _without_media(data: bytes, members: list[zipfile.ZipInfo]) -> bytes:
    """Refuse DTDs (Office Open XML never has one: it is an entity attack), and rebuild the zip
    with empty media members when it has any (rebuilding stores, not deflates: cheaper)."""
    media = any(_is_media(m.filename) and m.file_size for m in members)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        copy = zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) if media else None
        try:
            for m in members:
                if _is_media(m.filename):
                    if copy is not None:
                        copy.writestr(m.filename, b"")
                    continue
                if copy is None and not m.filename.endswith((".xml", ".rels")):
                    continue
                with archive.open(m) as member:
                    body = member.read() if copy is not None else member.read(_PROLOG_BYTES)
                if m.filename.endswith((".xml", ".rels")) and _DTD.search(body[:_PROLOG_BYTES]):
                    raise ParseError(
                        f"part {m.filename!r} declares a DTD, which Office files never contain;"
                        " refused as a possible XML entity attack"
                    )
                if copy is not None:
                    copy.writestr(m.filename, body)
        finally:
            if copy is not None:
                copy.close()
    return out.getvalue() if media else data
