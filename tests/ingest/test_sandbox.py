"""The parser process: limits turn runaway parsing into a failed document, not a dead worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.parsers.base import ParseLimits
from ingest.sandbox import parse_isolated
from rag.errors import IngestionError
from tests.conftest import FILES

PDF = FILES / "maint-guide.zh-cn.pdf"


def test_parses_in_a_child_process() -> None:
    doc = parse_isolated(PDF, PDF.name, ParseLimits(), timeout_s=120, memory_mb=2048)
    assert doc.pages == 63 and doc.blocks


def test_wall_clock_limit() -> None:
    with pytest.raises(IngestionError, match="longer than"):
        parse_isolated(PDF, PDF.name, ParseLimits(), timeout_s=0.05, memory_mb=2048)


def test_memory_limit() -> None:
    with pytest.raises(IngestionError, match=r"memory|died"):
        parse_isolated(PDF, PDF.name, ParseLimits(), timeout_s=120, memory_mb=40)


def test_parse_error_is_a_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(PDF.read_bytes()[:5000])
    with pytest.raises(IngestionError) as info:
        parse_isolated(bad, "bad.pdf", ParseLimits(), timeout_s=120, memory_mb=2048)
    assert str(info.value)
