"""The side runner that lets hybrid search score BM25 while FAISS scans, and that the overlapped
hybrid ranks exactly as the serial one does."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pytest

from rag.core.config import RetrievalSettings
from rag.index.dense import KBIndex
from rag.index.lexical import LexicalIndex
from rag.retrieval.retriever import rank
from rag.retrieval.side_thread import SideRunner, side_runner

WAIT_S = 10.0
T = TypeVar("T")


def test_a_side_task_runs_beside_the_caller() -> None:
    runner = SideRunner(1)
    caller_done = threading.Event()

    def side() -> int:
        # Only possible if the caller is free meanwhile: run inline, this would time out.
        assert caller_done.wait(WAIT_S)
        return threading.get_ident()

    result = runner.start(side)
    caller_done.set()
    assert result() != threading.get_ident()


def test_with_every_worker_busy_the_caller_runs_it_itself() -> None:
    runner = SideRunner(1)
    release = threading.Event()
    busy = runner.start(lambda: release.wait(WAIT_S))
    try:
        inline = runner.start(threading.get_ident)
        assert inline() == threading.get_ident()
    finally:
        release.set()
    assert busy() is True
    # The worker is idle again: the next task goes to it.
    assert runner.start(threading.get_ident)() != threading.get_ident()


def test_an_error_reaches_the_caller_and_frees_the_worker() -> None:
    runner = SideRunner(1)

    def fail() -> None:
        raise ValueError("bm25 broke")

    result = runner.start(fail)
    with pytest.raises(ValueError, match="bm25 broke"):
        result()
    assert runner.start(threading.get_ident)() != threading.get_ident()


@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
def test_overlapped_hybrid_ranks_as_the_serial_one(fusion: str) -> None:
    rng = np.random.default_rng(3)
    n, dim = 600, 32
    ids = np.arange(1, n + 1, dtype=np.int64)
    vecs = rng.standard_normal((n, dim), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    words = rng.integers(0, 300, size=(n, 12))
    lexical = LexicalIndex("kb")
    lexical.add_texts(ids.tolist(), [" ".join(f"w{w}" for w in row) for row in words])
    dense = KBIndex("kb", "synthetic", dim)
    dense.add(ids, vecs)
    overlapped = RetrievalSettings(fusion=fusion, overlap_min_chunks=1)  # type: ignore[arg-type]
    serial = RetrievalSettings(fusion=fusion, overlap_min_chunks=n + 1)  # type: ignore[arg-type]
    allowed = np.sort(rng.choice(ids, size=200, replace=False))
    for i in range(40):
        query = " ".join(f"w{w}" for w in words[i * 7][:3])
        vector = vecs[i * 11]
        for subset in (None, allowed):
            expected = rank(dense, lexical, query, vector, 10, "hybrid", serial, subset)
            assert len(expected) == 10
            assert rank(dense, lexical, query, vector, 10, "hybrid", overlapped, subset) == expected


class _Recorder:
    """A side runner that records each side task and runs it in the caller."""

    def __init__(self) -> None:
        self.started = 0

    def start(self, fn: Callable[[], T]) -> Callable[[], T]:
        self.started += 1
        result = fn()
        return lambda: result


def test_only_a_long_flat_scan_on_one_core_is_overlapped(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    n, dim = 800, 16
    ids = np.arange(1, n + 1, dtype=np.int64)
    vecs = rng.standard_normal((n, dim), dtype=np.float32)
    lexical = LexicalIndex("kb")
    lexical.add_texts(ids.tolist(), [f"w{i % 50} w{i % 7}" for i in range(n)])
    flat = KBIndex("kb", "synthetic", dim)
    flat.add(ids, vecs)
    ivf = flat.with_layout("ivf", ids, vecs)
    recorder = _Recorder()
    monkeypatch.setattr("rag.retrieval.retriever.side_runner", lambda: recorder)

    def overlapped(dense: KBIndex, min_chunks: int) -> bool:
        before = recorder.started
        cfg = RetrievalSettings(overlap_min_chunks=min_chunks)
        assert rank(dense, lexical, "w3 w4", vecs[3], 5, "hybrid", cfg)
        return recorder.started > before

    assert overlapped(flat, n)
    assert not overlapped(flat, n + 1)  # too small to hide the hand-over
    assert not overlapped(ivf, n)  # a short probe: BM25 is the longer half
    monkeypatch.setattr(flat, "search_threads", lambda total: 2)
    assert not overlapped(flat, n)  # FAISS's OpenMP threads hold every core


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_gets_its_own_workers() -> None:
    assert side_runner().start(threading.get_ident)() != threading.get_ident()  # pool in use
    pid = os.fork()
    if pid == 0:  # the child: a copied pool would leave this task queued forever
        done = threading.Event()
        result = side_runner().start(lambda: done.set() or threading.get_ident())
        os._exit(0 if done.wait(WAIT_S) and result() != threading.get_ident() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
