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


def check_package(
    data: bytes, limits: ParseLimits, *, required: str, what: str, media_read: bool
) -> list[zipfile.ZipInfo]:
    """The members of an Office Open XML zip, checked before any library inflates a part:
    ParseError saying why when it is not a zip, a bomb (too many members, too large inflated,
    a member compressed far beyond what real documents reach), not `what` (no `required`
    member), or a part declares a DTD. `media_read=False`: media members are emptied before
    reading (`open_package`), so their sizes do not count.

    Declared sizes are trustworthy enough here: zipfile stops inflating a member at its
    declared size, so a lying header yields a CRC error, not unbounded memory.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ParseError(f"the file is not {what}: not a valid zip ({exc})") from exc
    if len(members) > _MAX_MEMBERS:
        raise ParseError(f"the archive has {len(members)} members; it looks like a zip bomb")
    read = members if media_read else [m for m in members if not _is_media(m.filename)]
    total = sum(m.file_size for m in read)
    if total > limits.max_decompressed_bytes:
        raise ParseError(
            f"the archive inflates to {total} bytes{'' if media_read else ' without its media'}"
            f" (limit {limits.max_decompressed_bytes}, RAG_INGEST__MAX_DECOMPRESSED_BYTES);"
            " it looks like a zip bomb"
        )
    for m in read:
        if m.file_size > _RATIO_FLOOR and m.file_size > _MAX_RATIO * max(m.compress_size, 1):
            raise ParseError(
                f"member {m.filename!r} has compression ratio above {_MAX_RATIO}:1;"
                " it looks like a zip bomb"
            )
    if required not in {m.filename for m in members}:
        raise ParseError(f"the archive is not {what} (no {required})")
    try:
        _refuse_dtds(data, read)
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError) as exc:
        raise ParseError(f"the file is damaged: {exc}") from exc
    return members


def open_package(data: bytes, limits: ParseLimits, *, required: str, what: str) -> bytes:
    """The package's bytes, checked (`check_package`) and with its media members emptied."""
    members = check_package(data, limits, required=required, what=what, media_read=False)
    try:
        return _without_media(data, members)
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError) as exc:
        raise ParseError(f"the file is damaged: {exc}") from exc


def _refuse_dtds(data: bytes, members: list[zipfile.ZipInfo]) -> None:
    """Office Open XML never has a DTD: one in a part is an XXE or entity-expansion attempt.
    lxml is told not to resolve entities anyway, but refusing says clearly why the file failed
    instead of indexing text with silently dropped references."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for m in members:
            if not m.filename.endswith((".xml", ".rels")):
                continue
            with archive.open(m) as member:
                head = member.read(_PROLOG_BYTES)
            if _DTD.search(head):
                raise ParseError(
                    f"part {m.filename!r} declares a DTD, which Office files never contain;"
                    " refused as a possible XML entity attack"
                )


def _without_media(data: bytes, members: list[zipfile.ZipInfo]) -> bytes:
    """The zip rebuilt with empty media members when it has any (rebuilding stores, not
    deflates: cheaper); else the bytes as they are."""
    if not any(_is_media(m.filename) and m.file_size for m in members):
        return data
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as archive,
        zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as copy,
    ):
        for m in members:
            if _is_media(m.filename):
                copy.writestr(m.filename, b"")
            else:
                with archive.open(m) as member:
                    copy.writestr(m.filename, member.read())
    return out.getvalue()
