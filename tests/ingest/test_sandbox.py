"""The parser processes: limits turn runaway parsing into a failed document, not a dead worker;
children are reused while healthy and replaced when they fail, overrun or grow."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.parsers.base import ParseLimits
from ingest.sandbox import ParserPool, parse_isolated, shared_pool
from rag.core.errors import IngestionError
from tests.conftest import FILES, wait_for
from tests.ingest.parser_fakes import by_name, pid_of

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


# -- the pool: children reused, limits per document, a failed child replaced --------------------


@pytest.fixture
def pool() -> Iterator[ParserPool]:
    pool = ParserPool(memory_mb=512, max_documents=50, max_rss_mb=100, parse_fn=by_name)
    yield pool
    pool.close()


@pytest.fixture
def file(tmp_path: Path) -> Path:
    path = tmp_path / "doc.txt"
    path.write_text("正文")
    return path


def _pid(pool: ParserPool, file: Path, name: str = "ok.txt", **kw: float) -> int:
    return pid_of(pool.parse(file, name, ParseLimits(), timeout_s=kw.pop("timeout_s", 60), **kw))


def test_a_child_parses_document_after_document(pool: ParserPool, file: Path) -> None:
    pids = {_pid(pool, file) for _ in range(5)}
    assert len(pids) == 1 and pids == set(pool.pids())


def test_cpu_time_is_limited_per_document_not_per_child(pool: ParserPool, file: Path) -> None:
    # Three documents of 0.6 s each in one child: 1.8 s in all, over a 1 s limit that holds
    # for each document; then one that spins is stopped by the limit, alone.
    pids = {_pid(pool, file, f"burn-{i}.txt", cpu_s=1) for i in range(3)}
    assert len(pids) == 1
    with pytest.raises(IngestionError, match="CPU time"):
        _pid(pool, file, "spin.txt", cpu_s=1)
    assert _pid(pool, file) not in pids


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("balloon.txt", "more than 512 MB of memory"),
        ("crash.txt", "parser process died"),
        ("hang.txt", "longer than 1 s"),
    ],
)
def test_a_document_over_a_limit_fails_alone_and_the_next_gets_a_fresh_child(
    pool: ParserPool, file: Path, name: str, reason: str
) -> None:
    before = _pid(pool, file)
    with pytest.raises(IngestionError, match=reason):
        _pid(pool, file, name, timeout_s=1)
    after = _pid(pool, file)
    assert after != before
    assert _pid(pool, file) == after  # and the fresh one is reused in turn


def test_children_are_recycled_after_n_documents(file: Path) -> None:
    pool = ParserPool(memory_mb=512, max_documents=2, parse_fn=by_name)
    try:
        pids = [_pid(pool, file) for _ in range(4)]
    finally:
        pool.close()
    assert pids[0] == pids[1] != pids[2] == pids[3]


def test_a_child_whose_memory_grew_is_replaced(pool: ParserPool, file: Path) -> None:
    grown = _pid(pool, file, "grow.txt")  # keeps 150 MB; the pool replaces children over 100
    assert _pid(pool, file) != grown


def test_a_child_killed_while_idle_is_replaced(pool: ParserPool, file: Path) -> None:
    first = _pid(pool, file)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{first}").exists() or _zombie(first), timeout=10)
    assert _pid(pool, file) != first


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_shared_pool_serves_parse_isolated(tmp_path: Path) -> None:
    text = tmp_path / "a.txt"
    text.write_text("第一段。\n\n第二段。")
    first = parse_isolated(text, "a.txt", ParseLimits(), timeout_s=60, memory_mb=1536)
    assert first.pages == 1
    assert shared_pool(1536).pids()  # the child waits for the next document
