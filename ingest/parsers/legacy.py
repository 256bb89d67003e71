"""Legacy Office files (.doc, .wps, .xls, .ppt): converted by LibreOffice, then parsed as such.

LibreOffice runs headless in its own session with a throw-away profile (so conversions never
share state or lock each other out), inside the parser child and under its limits, and is
killed with its whole process group when it overruns `convert_timeout_s`. The converted file
is parsed by the parser of its modern format. Where LibreOffice is not installed the file is
refused naming the Debian package to install.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import olefile

from ingest.parsers.base import ParsedDocument, ParseError, ParseLimits
from ingest.parsers.detect import (
    DOC,
    PPT,
    WPS,
    XLS,
    UnsupportedMediaType,
    find_soffice,
    missing_converter,
)
from ingest.parsers.docx import parse_docx
from ingest.parsers.sheet import parse_xlsx
from ingest.parsers.slides import parse_pptx

Parser = Callable[[bytes, ParseLimits], ParsedDocument]
# media type -> (LibreOffice export filter, converted file's extension, its parser)
_TARGETS: dict[str, tuple[str, str, Parser]] = {
    DOC: ("docx:MS Word 2007 XML", ".docx", parse_docx),
    WPS: ("docx:MS Word 2007 XML", ".docx", parse_docx),
    XLS: ("xlsx:Calc MS Excel 2007 XML", ".xlsx", parse_xlsx),
    PPT: ("pptx:Impress MS PowerPoint 2007 XML", ".pptx", parse_pptx),
}
_SOURCE_EXT = {DOC: ".doc", WPS: ".wps", XLS: ".xls", PPT: ".ppt"}
# The stream that holds the content of each format inside its compound file.
_STREAMS = {
    DOC: ("WordDocument",),
    WPS: ("WordDocument", "CONTENTS"),  # Kingsoft WPS, Microsoft Works
    XLS: ("Workbook", "Book"),
    PPT: ("PowerPoint Document",),
}
_STDERR_CHARS = 300


def _run(command: list[str], home: Path, timeout_s: float) -> subprocess.CompletedProcess[bytes]:
    """Run LibreOffice; on timeout kill its process group (soffice starts soffice.bin)."""
    env = {**os.environ, "HOME": str(home), "SAL_USE_VCLPLUGIN": "svp"}
    with subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise ParseError(
                f"converting the file with LibreOffice took longer than {timeout_s:.0f} s"
            ) from None
        return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _check_compound(data: bytes, media_type: str) -> None:
    """Refuse what is not a compound file holding the format's content stream: LibreOffice
    would import anything else as plain text and index its bytes as words."""
    ext = _SOURCE_EXT[media_type]
    try:
        with olefile.OleFileIO(io.BytesIO(data)) as ole:
            streams = {"/".join(path) for path in ole.listdir()}
    except Exception as exc:  # olefile raises several types on damaged files
        raise ParseError(f"the {ext} file is damaged: {exc}") from exc
    if not streams & set(_STREAMS[media_type]):
        raise ParseError(f"the file is named {ext} but holds no {ext} content")


def convert(data: bytes, media_type: str, timeout_s: float) -> bytes:
    """The file converted to its modern format (DOCX, XLSX or PPTX) by LibreOffice."""
    soffice = find_soffice()
    if soffice is None:
        raise UnsupportedMediaType(missing_converter(media_type))
    _check_compound(data, media_type)
    export, ext, _ = _TARGETS[media_type]
    with tempfile.TemporaryDirectory(prefix="kbqa-convert-") as tmp:
        work = Path(tmp)
        source = work / f"document{_SOURCE_EXT[media_type]}"
        source.write_bytes(data)
        command = [
            soffice,
            "--headless",
            "--norestore",
            "--nologo",
            "--nolockcheck",
            f"-env:UserInstallation={(work / 'profile').as_uri()}",
            "--convert-to",
            export,
            "--outdir",
            str(work / "out"),
            str(source),
        ]
        done = _run(command, work, timeout_s)
        target = work / "out" / f"document{ext}"
        if not target.is_file() or target.stat().st_size == 0:
            said = done.stderr.decode(errors="replace").strip()[-_STDERR_CHARS:]
            raise ParseError(
                "LibreOffice could not convert the file (damaged, password-protected or not"
                f" really {_SOURCE_EXT[media_type]}){': ' + said if said else ''}"
            )
        return target.read_bytes()


def parse_legacy(data: bytes, limits: ParseLimits, media_type: str) -> ParsedDocument:
    """Parse a .doc, .wps, .xls or .ppt file through its LibreOffice conversion."""
    converted = convert(data, media_type, limits.convert_timeout_s)
    parsed = _TARGETS[media_type][2](converted, limits)
    parsed.media_type = media_type
    return parsed
