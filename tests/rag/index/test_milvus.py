"""The Milvus backend (RAG_INDEX__BACKEND=milvus) on Milvus Lite, on SQLite and PostgreSQL.

The FAISS tests of persistence and versioned re-indexing run again here unchanged, with a
`svc` whose dense indexes live in Milvus (imported below, so both backends answer to the same
tests); then what only Milvus has: a wiped Milvus rebuilt from SQL, the applied sequence number
shared through the collection, the alias on the live version, collections dropped with their
version, inspection that writes nothing, an unreachable Milvus that is not taken for a broken
index, and the same ranking as FAISS over the same chunks and embeddings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from rag.core.config import Settings
from rag.core.errors import ConfigError, IndexUnavailable
from rag.services import Services
from rag.store.models import Chunk
from tests.conftest import make_settings

pymilvus = pytest.importorskip("pymilvus", reason="pymilvus (the dev extra) is not installed")
pytest.importorskip("milvus_lite", reason="milvus-lite (the dev extra) is not installed")

from rag.index.milvus import MilvusBackend, MilvusIndex  # noqa: E402
from tests.rag.test_persistence import (  # noqa: E402, F401  (the same tests, on Milvus)
    TEXTS,
    _add,
    _drain,
    _ready_chunk_ids,
    _sql_ids,
    test_index_equals_sql_after_ingest_delete_restart,
    test_replica_catches_up_from_sql,
)
from tests.rag.test_reindex_versions import (  # noqa: E402, F401
    _reindex,
    kb,
    test_deleting_a_document_removes_its_chunks_from_every_version,
    test_new_chunk_size_becomes_live_and_the_old_version_is_retired,
    test_new_model_gets_its_own_index_and_vectors_never_mix,
    test_rollback_makes_v1_live_with_documents_added_since,
    test_searches_answer_from_v1_while_building_and_late_uploads_reach_v2,
)


def milvus_settings(tmp_path: Path, database_url: str, **index: Any) -> Settings:
    lite = tmp_path / "milvus.db"  # Milvus Lite: an in-process server on this folder
    return make_settings(
        tmp_path / "data",
        database_url,
        index={"backend": "milvus", "milvus_uri": str(lite), **index},
    )


@pytest.fixture
def svc(tmp_path: Path, database_url: str) -> Iterator[Services]:
    s = Services.create(milvus_settings(tmp_path, database_url))
    assert isinstance(s.indexes.dense_backend, MilvusBackend)
    yield s
    s.close()
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(str(tmp_path / "milvus.db"))


def _backend(svc: Services) -> MilvusBackend:
    backend = svc.indexes.dense_backend
    assert isinstance(backend, MilvusBackend)
    return backend


def _milvus_ids(svc: Services, kb_id: str, version: int = 1) -> set[int]:
    backend = _backend(svc)
    index = backend.load(kb_id, version, "fake:64", 64)
    return set(index.ids().tolist())


def _loaded_kb(svc: Services, tmp_path: Path) -> str:
    kb_id = svc.knowledge.create_kb("kb").id
    for name, data in TEXTS.items():
        _add(svc, kb_id, name, data, tmp_path)
    _drain(svc)
    svc.indexes.get(kb_id)  # the store catches up (and creates the collection) on first use
    return kb_id


def test_the_vectors_are_in_milvus_and_equal_sql(svc: Services, tmp_path: Path) -> None:
    kb_id = _loaded_kb(svc, tmp_path)
    dense = svc.indexes.get(kb_id)
    assert isinstance(dense, MilvusIndex) and dense.layout == "milvus"
    assert _milvus_ids(svc, kb_id) == _ready_chunk_ids(svc, kb_id) == _sql_ids(svc, kb_id)
    assert not list(svc.indexes.directory(kb_id).glob("vectors-*.faiss")), "no FAISS copy"
    hits = svc.retriever.search(kb_id, "第 2 份测试文档", top_k=3, mode="dense")
    assert hits and all(h.chunk_id in _sql_ids(svc, kb_id) for h in hits)


def test_a_wiped_milvus_is_rebuilt_from_sql(svc: Services, tmp_path: Path) -> None:
    kb_id = _loaded_kb(svc, tmp_path)
    before = [h.chunk_id for h in svc.retriever.search(kb_id, "第 1 份测试文档", top_k=5)]
    svc.indexes.save_dirty()
    directory = svc.indexes.directory(kb_id)
    lexical = sorted(p.name for p in directory.glob("lexical-*.npz"))
    assert lexical, "a BM25 snapshot was written"
    client = _backend(svc).client
    for name in client.list_collections():
        for alias in client.list_aliases(name).get("aliases", []):
            client.drop_alias(alias)
        client.drop_collection(name)
    again = Services.create(svc.settings)
    try:
        assert set(again.indexes.get(kb_id).ids().tolist()) == _sql_ids(svc, kb_id)
        hits = [h.chunk_id for h in again.retriever.search(kb_id, "第 1 份测试文档", top_k=5)]
        assert hits == before
        # The lost collection is rebuilt; the healthy BM25 snapshot beside it is kept, not
        # quarantined with it.
        assert not list(directory.parent.glob(f"{directory.name}.corrupt-*"))
        assert sorted(p.name for p in directory.glob("lexical-*.npz")) == lexical
    finally:
        again.close()


def test_replicas_share_the_applied_sequence_through_the_collection(
    svc: Services, tmp_path: Path
) -> None:
    kb_id = _loaded_kb(svc, tmp_path)
    seq = svc.indexes.get(kb_id).last_seq
    assert seq > 0 and svc.indexes.save_dirty() >= 1
    # A new replica resumes at the collection's number instead of replaying every chunk.
    replica = Services.create(svc.settings)
    try:
        loaded = _backend(replica).load(kb_id, 1, "fake:64", 64)
        assert loaded.last_seq == seq
        assert set(replica.indexes.get(kb_id).ids().tolist()) == _sql_ids(svc, kb_id)
        # A replica that is behind never lowers the number.
        loaded.last_seq = 1
        assert loaded.save(tmp_path) == seq
        assert _backend(replica).load(kb_id, 1, "fake:64", 64).last_seq == seq
    finally:
        replica.close()


def test_deletes_never_come_back_after_a_restart(svc: Services, tmp_path: Path) -> None:
    kb_id = svc.knowledge.create_kb("kb").id
    ids = [_add(svc, kb_id, n, d, tmp_path) for n, d in TEXTS.items()]
    _drain(svc)
    svc.indexes.get(kb_id)
    svc.indexes.save_dirty()
    with svc.db.read() as session:
        gone = set(session.execute(select(Chunk.id).where(Chunk.document_id == ids[0])).scalars())
    # Deleted by a process with a Milvus of its own: the shared one keeps the vectors, and its
    # applied sequence number predates the tombstones.
    elsewhere = {"backend": "milvus", "milvus_uri": str(tmp_path / "other-milvus.db")}
    other = Services.create(
        make_settings(tmp_path / "data", svc.settings.database_url, index=elsewhere)
    )
    try:
        other.knowledge.delete_document(kb_id, ids[0])
    finally:
        other.close()
    assert gone <= _milvus_ids(svc, kb_id)
    again = Services.create(svc.settings)
    try:
        have = set(again.indexes.get(kb_id).ids().tolist())
        assert gone and not gone & have and have == _sql_ids(svc, kb_id)
        hits = again.retriever.search(kb_id, "第 0 份测试文档", top_k=20, mode="dense")
        assert all(h.document_id != ids[0] for h in hits)
    finally:
        again.close()


def test_the_alias_follows_switches_and_rollbacks_and_pruned_versions_are_dropped(
    svc: Services,
    kb: str,  # noqa: F811  (the fixture imported above)
) -> None:
    backend = _backend(svc)
    client, alias = backend.client, backend.alias(kb)
    svc.retriever.search(kb, "年假怎么申请", top_k=3)
    assert client.describe_alias(alias)["collection_name"] == backend.collection(kb, 1)
    _reindex(svc, kb, chunk_tokens=64)
    svc.retriever.search(kb, "年假怎么申请", top_k=3)
    assert client.describe_alias(alias)["collection_name"] == backend.collection(kb, 2)
    version, job = svc.versions.start_rollback(kb)
    assert svc.worker().run_job(job.id) and version.number == 1
    svc.retriever.search(kb, "年假怎么申请", top_k=3)
    assert client.describe_alias(alias)["collection_name"] == backend.collection(kb, 1)
    # Prune keeps only the live version: version 2's collection goes with it.
    assert svc.versions.prune(kb, keep=1) == [2]
    assert not client.has_collection(backend.collection(kb, 2))
    svc.knowledge.delete_kb(kb)
    assert not [n for n in client.list_collections() if n.startswith(alias)]


def test_inspection_writes_nothing_to_milvus_and_repair_restores(
    svc: Services, tmp_path: Path
) -> None:
    kb_id = _loaded_kb(svc, tmp_path)
    svc.indexes.save_dirty()
    backend = _backend(svc)
    some = sorted(_milvus_ids(svc, kb_id))[0]
    backend.client.delete(backend.collection(kb_id, 1), ids=[some])  # drift behind our back
    fresh = Services.create(svc.settings)
    try:
        found = fresh.indexes.inspect(kb_id)
        assert not found["consistent"] and found["missing_ids"] == [some]
        assert some not in _milvus_ids(svc, kb_id), "inspect wrote to Milvus"
        assert fresh.indexes.check(kb_id)["consistent"]  # loading reconciles with SQL
        assert some in _milvus_ids(svc, kb_id)
    finally:
        fresh.close()


def test_same_chunks_and_embeddings_rank_the_same_as_faiss(svc: Services, tmp_path: Path) -> None:
    kb_id = _loaded_kb(svc, tmp_path)
    faiss = Services.create(make_settings(tmp_path / "faiss", svc.settings.database_url))
    try:
        for query in ("第 0 份测试文档", "主题编号 3", "测试文档"):
            for mode in ("dense", "hybrid", "lexical"):
                milvus_hits = svc.retriever.search(kb_id, query, top_k=5, mode=mode)
                faiss_hits = faiss.retriever.search(kb_id, query, top_k=5, mode=mode)
                assert [h.chunk_id for h in milvus_hits] == [h.chunk_id for h in faiss_hits]
                assert np.allclose(
                    [h.score for h in milvus_hits], [h.score for h in faiss_hits], atol=1e-4
                )
    finally:
        faiss.close()


class _Down:
    """A Milvus client whose server does not answer."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise pymilvus.MilvusException(message="connection refused")

        return fail


def test_an_unreachable_milvus_is_unavailable_not_a_broken_index() -> None:
    backend = MilvusBackend(_Down())
    # IndexUnusable would make the store rebuild (drop and refill) the collection.
    with pytest.raises(IndexUnavailable, match="connection refused") as raised:
        backend.load("kb", 1, "fake:64", 64)
    assert raised.value.status_code == 503
    index = MilvusIndex(_Down(), "c", kb_id="kb", embedding_model="fake:64", dim=4)
    with pytest.raises(IndexUnavailable):
        index.search(np.ones(4, dtype=np.float32), 3)


def test_the_milvus_backend_needs_a_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rag.core.config import load_settings

    monkeypatch.chdir(tmp_path)  # no stray .env file
    monkeypatch.setenv("RAG_INDEX__BACKEND", "milvus")
    monkeypatch.delenv("RAG_INDEX__MILVUS_URI", raising=False)
    with pytest.raises(ConfigError, match="RAG_INDEX__MILVUS_URI"):
        load_settings()
    monkeypatch.setenv("RAG_INDEX__MILVUS_PREFIX", "bad-prefix")
    monkeypatch.setenv("RAG_INDEX__MILVUS_URI", "http://milvus:19530")
    with pytest.raises(ConfigError, match="RAG_INDEX__MILVUS_PREFIX"):
        load_settings()


def test_an_hnsw_collection_gets_its_build_parameters_and_searches_with_ef(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag.index.milvus import HNSW_EF

    backend = MilvusBackend.connect(str(tmp_path / "hnsw.db"), index_type="HNSW")
    try:
        built: list[dict[str, Any]] = []
        create = backend.client.create_collection

        def record(*args: Any, **kwargs: Any) -> Any:
            built.extend(param.to_dict() for param in kwargs["index_params"])
            return create(*args, **kwargs)

        monkeypatch.setattr(backend.client, "create_collection", record)
        index = backend.create("kb", 1, "fake:16", 16)
        # Milvus 2.3 refuses HNSW without them; they are given, not left to the server.
        (vector,) = [b for b in built if b["field_name"] == "vector"]
        assert (vector["index_type"], vector["M"], vector["efConstruction"]) == ("HNSW", 16, 200)
        rng = np.random.default_rng(7)
        vectors = rng.standard_normal((300, 16)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index.add(np.arange(1, 301, dtype=np.int64), vectors)
        index.save(tmp_path)
        sent: list[dict[str, Any]] = []
        search = index.client.search

        def spy(*args: Any, **kwargs: Any) -> Any:
            sent.append(kwargs["search_params"])
            return search(*args, **kwargs)

        monkeypatch.setattr(index.client, "search", spy)
        for n in (0, 100, 299):
            assert index.search(vectors[n], 5)[0][0] == n + 1
        assert sent[0] == {"metric_type": "IP", "params": {"ef": HNSW_EF}}
        index.search(vectors[0], HNSW_EF + 20)
        assert sent[-1]["params"]["ef"] == HNSW_EF + 20  # never below the search's limit
    finally:
        backend.close()
