"""Stage an upload: copy it into the data dir while hashing it and enforcing the size limit."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import BinaryIO

from ingest.parsers import UnsupportedMediaType as ParserUnsupported
from ingest.parsers import detect_media_type
from rag.core.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from rag.kb.knowledge import StagedFile

_COPY_CHUNK = 1024 * 1024
_HEAD = 8192


def safe_filename(name: str | None) -> str:
    """The user's filename as display metadata: no directories, no control characters."""
    name = (name or "").replace("\\", "/").split("/")[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    name = re.sub(r"^\.+", "", name)  # "..", ".bashrc" -> no leading dots
    return name[:255] or "unnamed"


def stage_upload(
    source: BinaryIO, filename: str | None, data_dir: Path, max_bytes: int
) -> StagedFile:
    """Copy `source` into data_dir/tmp; reject empty, oversized and unsupported files."""
    clean_name = safe_filename(filename)
    tmp_dir = data_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    head = b""
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
    tmp_path = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            while block := source.read(_COPY_CHUNK):
                size += len(block)
                if size > max_bytes:
                    raise PayloadTooLarge(
                        f"{clean_name} is larger than the upload limit of {max_bytes} bytes "
                        "(RAG_INGEST__MAX_UPLOAD_BYTES)"
                    )
                if len(head) < _HEAD:
                    head += block[: _HEAD - len(head)]
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if size == 0:
            raise InvalidInput(f"{clean_name} is empty")
        try:
            media_type = detect_media_type(clean_name, head)
        except ParserUnsupported as exc:
            raise UnsupportedMediaType(f"{clean_name}: {exc}") from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return StagedFile(tmp_path, clean_name, media_type, size, digest.hexdigest())
