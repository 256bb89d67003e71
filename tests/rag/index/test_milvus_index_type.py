"""RAG_INDEX__MILVUS_INDEX: a FLAT collection ranks exactly as FAISS's flat index over the same
vectors (with and without an id filter); AUTOINDEX is what Milvus chooses (HNSW, approximate)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rag.index.dense import KBIndex
from rag.services import Services
from tests.conftest import make_settings

pytest.importorskip("pymilvus", reason="pymilvus (the milvus extra) is not installed")
pytest.importorskip("milvus_lite", reason="milvus-lite (the dev extra) is not installed")

from rag.index.milvus import MilvusBackend

DIM = 32


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[str]:
    uri = str(tmp_path / "milvus.db")
    yield uri
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(uri)


def _vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((20, DIM)).astype(np.float32)
    out = centres[rng.integers(0, 20, n)] + 0.5 * rng.standard_normal((n, DIM)).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_a_flat_collection_ranks_as_faiss(lite: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(21)
    data, ids = _vectors(3000, rng), np.arange(10, 3010, dtype=np.int64)
    faiss = KBIndex("kb", "m", DIM)
    faiss.add(ids, data)
    backend = MilvusBackend.connect(lite, index_type="FLAT")
    milvus = backend.create("kb", 1, "m", DIM)
    milvus.add(ids, data)
    milvus.save(tmp_path)  # Lite flushes here: the searches below run on the sealed index
    described = backend.client.describe_index(backend.collection("kb", 1), "vector")
    assert described["index_type"] == "FLAT"
    allowed = np.sort(rng.choice(ids, 300, replace=False))
    for query in _vectors(20, rng):
        for subset in (None, allowed):
            want, got = faiss.search(query, 10, subset), milvus.search(query, 10, subset)
            assert [i for i, _ in got] == [i for i, _ in want]
            assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def test_the_setting_reaches_new_collections(lite: str, tmp_path: Path) -> None:
    for kind in ("FLAT", "AUTOINDEX"):
        index = {"backend": "milvus", "milvus_uri": lite, "milvus_index": kind}
        svc = Services.create(make_settings(tmp_path / kind, index=index))
        try:
            kb_id = svc.knowledge.create_kb("kb").id
            svc.indexes.get(kb_id)
            backend = svc.indexes.dense_backend
            assert isinstance(backend, MilvusBackend) and backend.index_type == kind
            name = backend.collection(kb_id, 1)
            assert backend.client.describe_index(name, "vector")["index_type"] == kind
        finally:
            svc.close()
