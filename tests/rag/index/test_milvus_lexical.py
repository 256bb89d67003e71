"""RAG_INDEX__MILVUS_LEXICAL=milvus on Milvus Lite: collections keep each chunk's lexical text
with a BM25 function, and retrieval takes its lexical candidates (lexical mode, and the lexical
side of hybrid) from Milvus' full-text search, with the same filters, deletes, disabled chunks,
re-index switches and rollbacks as the dense side. Old collections without the text are rebuilt;
with the setting off the in-process BM25 ranks, whatever the collection keeps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from rag.core.config import Settings
from rag.core.errors import ConfigError, IndexUnavailable
from rag.index.lexical import LexicalIndex
from rag.kb.chunks import Chunks
from rag.retrieval.retriever import rank
from rag.services import Services
from rag.store.models import Chunk, Document
from tests.conftest import make_settings

pymilvus = pytest.importorskip("pymilvus", reason="pymilvus (the dev extra) is not installed")
pytest.importorskip("milvus_lite", reason="milvus-lite (the dev extra) is not installed")

from rag.index import milvus as milvus_module  # noqa: E402
from rag.index.backend_copy import copy_dense  # noqa: E402
from rag.index.milvus import MilvusBackend, MilvusIndex, MilvusTextIndex  # noqa: E402
from tests.rag.test_reindex_versions import (  # noqa: E402
    QUERIES,
    TOPICS,
    _add,
    _chunk_ids,
    _reindex,
)

# Each query of tests/rag/test_reindex_versions.py and the file whose text answers it.
ANSWERS = dict(zip(QUERIES, TOPICS, strict=True))


def _settings(tmp_path: Path, lexical: str) -> Settings:
    index = {"backend": "milvus", "milvus_uri": str(tmp_path / "milvus.db")}
    return make_settings(tmp_path / "data", index={**index, "milvus_lexical": lexical})


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(str(tmp_path / "milvus.db"))


@pytest.fixture
def svc(lite: Path) -> Iterator[Services]:
    s = Services.create(_settings(lite, "milvus"))
    yield s
    s.close()


@pytest.fixture
def kb(svc: Services) -> str:
    kb_id = svc.knowledge.create_kb("handbook").id
    for name, text in TOPICS.items():
        _add(svc, kb_id, name, text)
    return kb_id


def _refuse(self: LexicalIndex, *args: Any, **kwargs: Any) -> Any:
    raise AssertionError("ranked by the in-process BM25")


@contextmanager
def milvus_bm25_only() -> Iterator[None]:
    """Ranking with the in-process BM25 fails the test: the candidates must come from Milvus.
    (Its query analysis, which adaptive fusion and page locating read, stays allowed.)"""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LexicalIndex, "search", _refuse)
        yield


@pytest.fixture
def no_local_bm25() -> Iterator[None]:
    with milvus_bm25_only():
        yield


def _filename(svc: Services, chunk_id: int) -> str:
    with svc.db.read() as session:
        return session.execute(
            select(Document.filename)
            .join(Chunk, Chunk.document_id == Document.id)
            .where(Chunk.id == chunk_id)
        ).scalar_one()


def _backend(svc: Services) -> MilvusBackend:
    backend = svc.indexes.dense_backend
    assert isinstance(backend, MilvusBackend)
    return backend


def _fields(svc: Services, kb_id: str, version: int) -> set[str]:
    backend = _backend(svc)
    described = backend.client.describe_collection(backend.collection(kb_id, version))
    return {f["name"] for f in described["fields"]}


@pytest.mark.usefixtures("no_local_bm25")
def test_lexical_and_hybrid_rank_with_milvus_bm25(svc: Services, kb: str) -> None:
    dense = svc.indexes.get(kb)
    assert isinstance(dense, MilvusTextIndex) and dense.text_search
    assert {"text", "sparse"} <= _fields(svc, kb, 1)
    for mode in ("lexical", "hybrid"):
        for query, filename in ANSWERS.items():
            hits = svc.retriever.search(kb, query, top_k=3, mode=mode)
            assert hits and hits[0].filename == filename, (mode, query)
    # The lexical scores are BM25's: positive, best first.
    scores = [h.score for h in svc.retriever.search(kb, "差旅发票报销", top_k=5, mode="lexical")]
    assert scores[0] > 0 and scores == sorted(scores, reverse=True)


def test_the_title_and_headings_are_searchable(svc: Services, kb: str) -> None:
    # "onboarding" is only in the file name (the document's title), never in its text.
    dense = svc.indexes.get(kb)
    assert isinstance(dense, MilvusTextIndex)
    hits = dense.search_text("onboarding", 3)
    assert hits and _filename(svc, hits[0][0]) == "onboarding.txt"


@pytest.mark.usefixtures("no_local_bm25")
def test_deleted_and_disabled_chunks_never_come_back(svc: Services, kb: str) -> None:
    query = "年假制度 报销流程"  # leave.txt first, expense.txt too
    first = svc.retriever.search(kb, query, top_k=1, mode="lexical")[0]
    assert first.filename == "leave.txt"
    Chunks(svc.db, svc.indexes).set_disabled(kb, first.document_id, first.chunk_id, True)
    dense, lexical = svc.indexes.pair(kb)
    ranked = rank(dense, lexical, query, None, 50, "lexical", svc.settings.retrieval)
    assert ranked and first.chunk_id not in {i for i, _ in ranked}
    gone = _chunk_ids_of(svc, first.document_id)
    svc.knowledge.delete_document(kb, first.document_id)
    for mode in ("lexical", "hybrid"):
        hits = svc.retriever.search(kb, query, top_k=20, mode=mode)
        assert hits and all(h.document_id != first.document_id for h in hits), mode
        assert hits[0].filename == "expense.txt", mode
    # In the index itself, not only filtered out when the hits are read from SQL.
    dense, lexical = svc.indexes.pair(kb)
    vector = svc.retriever.embedder_for(dense.embedding_model).embed_query(query)
    ranked = rank(dense, lexical, query, vector, 50, "hybrid", svc.settings.retrieval)
    assert ranked and not {i for i, _ in ranked} & gone
    assert isinstance(dense, MilvusTextIndex)
    found = dense.search_text(query, 50)
    assert found and not {i for i, _ in found} & gone


@pytest.mark.usefixtures("no_local_bm25")
def test_filters_are_respected(svc: Services, kb: str) -> None:
    with svc.db.read() as session:
        doc = session.execute(
            select(Document.id).where(Document.kb_id == kb, Document.filename == "expense.txt")
        ).scalar_one()
    query = "年假制度 报销流程"  # two documents match it
    for mode in ("lexical", "hybrid"):
        hits = svc.retriever.search(kb, query, top_k=10, mode=mode)
        assert {"leave.txt", "expense.txt"} <= {h.filename for h in hits}, mode
        hits = svc.retriever.search(kb, query, top_k=10, mode=mode, filters={"document_ids": [doc]})
        assert hits and {h.document_id for h in hits} == {doc}, mode
        hits = svc.retriever.search(kb, query, top_k=10, mode=mode, filters={"filename": "leave*"})
        assert hits and {h.filename for h in hits} == {"leave.txt"}, mode
    dense = svc.indexes.get(kb)
    assert isinstance(dense, MilvusTextIndex)
    allowed = np.array(sorted(_chunk_ids(svc, kb, 1))[:2], dtype=np.int64)
    assert {i for i, _ in dense.search_text("员工", 50, allowed)} <= set(allowed.tolist())
    assert dense.search_text("员工", 50, np.array([], dtype=np.int64)) == []


def test_a_reindex_switch_and_a_rollback_keep_bm25_on_the_live_version(
    svc: Services, kb: str
) -> None:
    v1 = _chunk_ids(svc, kb, 1)
    # The job's checks before the switch sample the in-process BM25 of the new version too.
    number, job = _reindex(svc, kb, chunk_tokens=64)
    assert number == 2 and job.result["checks"]["ok"], job.error
    assert {"text", "sparse"} <= _fields(svc, kb, 2)
    v2 = _chunk_ids(svc, kb, 2)
    with milvus_bm25_only():
        for mode in ("lexical", "hybrid"):
            for query, filename in ANSWERS.items():
                hits = svc.retriever.search(kb, query, top_k=3, mode=mode)
                assert hits and {h.chunk_id for h in hits} <= v2, (mode, query)
                assert hits[0].filename == filename, (mode, query)
    late = _add(svc, kb, "parking.txt", "停车场规定：访客车辆须在前台登记车牌号码。")
    version, rollback = svc.versions.start_rollback(kb)
    assert svc.worker().run_job(rollback.id) and version.number == 1
    with milvus_bm25_only():
        _after_rollback(svc, kb, late, v1)


def _after_rollback(svc: Services, kb: str, late: str, v1: set[int]) -> None:
    for mode in ("lexical", "hybrid"):
        hits = svc.retriever.search(kb, "访客车辆登记车牌", top_k=3, mode=mode)
        assert hits and hits[0].document_id == late, mode
        assert {h.chunk_id for h in hits} <= _chunk_ids(svc, kb, 1), mode
        hits = svc.retriever.search(kb, "年假怎么申请", top_k=3, mode=mode)
        assert hits[0].filename == "leave.txt" and hits[0].chunk_id in v1, mode


def test_a_collection_without_texts_is_rebuilt_and_one_with_them_serves_either_way(
    lite: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    local_search = LexicalIndex.search

    def spy(self: LexicalIndex, *args: Any, **kwargs: Any) -> Any:
        calls.append("local")
        return local_search(self, *args, **kwargs)

    monkeypatch.setattr(LexicalIndex, "search", spy)
    # Setting off (the default): vector-only collections, ranked by the in-process BM25.
    off = Services.create(_settings(lite, "local"))
    try:
        kb = off.knowledge.create_kb("handbook").id
        for name, text in TOPICS.items():
            _add(off, kb, name, text)
        dense = off.indexes.get(kb)
        assert type(dense) is MilvusIndex and "text" not in _fields(off, kb, 1)
        hits = off.retriever.search(kb, "差旅发票报销", top_k=3, mode="lexical")
        assert hits[0].filename == "expense.txt" and calls
        off.indexes.save_dirty()
    finally:
        off.close()
    # Setting on: that collection cannot serve BM25, so it is rebuilt from SQL with the texts.
    on = Services.create(_settings(lite, "milvus"))
    try:
        dense = on.indexes.get(kb)
        assert isinstance(dense, MilvusTextIndex) and "text" in _fields(on, kb, 1)
        assert set(dense.ids().tolist()) == _chunk_ids(on, kb, 1)
        calls.clear()
        hits = on.retriever.search(kb, "差旅发票报销", top_k=3, mode="lexical")
        assert hits[0].filename == "expense.txt" and not calls
        on.indexes.save_dirty()
    finally:
        on.close()
    # Setting off again: the collection with the texts loads as it is (no rebuild), the local
    # BM25 ranks, and new chunks still reach its text field for a later switch back.
    off = Services.create(_settings(lite, "local"))
    try:
        dense = off.indexes.get(kb)
        assert isinstance(dense, MilvusTextIndex) and not dense.text_search
        calls.clear()
        hits = off.retriever.search(kb, "差旅发票报销", top_k=3, mode="hybrid")
        assert hits[0].filename == "expense.txt" and calls
        late = _add(off, kb, "parking.txt", "停车场规定：访客车辆须在前台登记车牌号码。")
        dense = off.indexes.get(kb)
        assert isinstance(dense, MilvusTextIndex)
        found = dense.search_text("访客车辆登记车牌", 3)
        assert found and found[0][0] in _chunk_ids_of(off, late)
    finally:
        off.close()


def test_texts_the_collection_lacks_are_restored_from_sql(svc: Services, kb: str) -> None:
    svc.indexes.save_dirty()
    backend = _backend(svc)
    leave = svc.retriever.search(kb, "年假怎么申请", top_k=1, mode="lexical")[0].document_id
    lost = sorted(_chunk_ids_of(svc, leave))
    backend.client.delete(backend.collection(kb, 1), ids=lost)  # drift behind our back
    fresh = Services.create(svc.settings)
    try:
        dense = fresh.indexes.get(kb)  # loading reconciles with SQL, texts included
        assert isinstance(dense, MilvusTextIndex)
        assert set(lost) <= set(dense.ids().tolist())
        hits = dense.search_text("年假怎么申请", 3)
        assert hits and hits[0][0] in lost
    finally:
        fresh.close()


def _chunk_ids_of(svc: Services, document_id: str) -> set[int]:
    with svc.db.read() as session:
        return set(
            session.execute(select(Chunk.id).where(Chunk.document_id == document_id)).scalars()
        )


def test_a_copy_into_a_full_text_milvus_carries_the_texts(lite: Path) -> None:
    faiss = Services.create(make_settings(lite / "data"))
    try:
        kb = faiss.knowledge.create_kb("handbook").id
        for name, text in TOPICS.items():
            _add(faiss, kb, name, text)
        backend = MilvusBackend.connect(str(lite / "milvus.db"), full_text=True)
        try:
            done = copy_dense(
                faiss.db, kb, 1, backend=backend, directory=faiss.indexes.directory(kb, 1)
            )
            index = backend.load(kb, 1, "fake:64", 64)
            assert isinstance(index, MilvusTextIndex) and done.vectors == len(index)
            hits = index.search_text("密码多久更换", 3)
            assert hits and _filename(faiss, hits[0][0]) == "security.txt"
        finally:
            backend.close()
    finally:
        faiss.close()


def test_long_texts_are_cut_under_the_byte_limit_at_a_character(lite: Path) -> None:
    limit = milvus_module._TEXT_BYTES
    cut = milvus_module._fit("年" * limit)  # 3 bytes a character
    assert len(cut.encode()) <= limit and cut == "年" * (limit // 3)
    odd = "a" + "年" * (limit // 3)  # the limit falls inside the last character
    assert milvus_module._fit(odd) == "a" + "年" * (limit // 3 - 1)
    assert milvus_module._fit("短文本") == "短文本"
    backend = MilvusBackend.connect(str(lite / "milvus.db"), full_text=True)
    try:
        index = backend.create("kb", 1, "m", 4)
        assert isinstance(index, MilvusTextIndex)
        index.add_with_texts(
            np.array([1, 2]), np.eye(2, 4, dtype=np.float32), ["报销" * 40_000, "年假"]
        )
        assert [i for i, _ in index.search_text("报销", 5)] == [1]
        with pytest.raises(TypeError, match="add_with_texts"):
            index.add(np.array([3]), np.eye(1, 4, dtype=np.float32))
        with pytest.raises(ValueError, match="texts"):
            index.add_with_texts(np.array([3]), np.eye(1, 4, dtype=np.float32), [])
    finally:
        backend.close()


class _Down:
    """A Milvus client whose server does not answer."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise pymilvus.MilvusException(message="connection refused")

        return fail


def test_an_unreachable_milvus_fails_bm25_as_unavailable() -> None:
    index = MilvusTextIndex(_Down(), "c", kb_id="kb", embedding_model="m", dim=4)
    with pytest.raises(IndexUnavailable, match="full-text search failed"):
        index.search_text("年假", 3)


def test_milvus_lexical_needs_the_milvus_backend(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from rag.core.config import load_settings

    monkeypatch.chdir(tmp_path)  # no stray .env file
    monkeypatch.delenv("RAG_INDEX__BACKEND", raising=False)
    monkeypatch.setenv("RAG_INDEX__MILVUS_LEXICAL", "milvus")
    with pytest.raises(ConfigError, match="RAG_INDEX__BACKEND=milvus"):
        load_settings()
