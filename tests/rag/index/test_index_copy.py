"""`rag index copy`: a knowledge base served from FAISS is copied into Milvus Lite from SQL
without touching the FAISS snapshots; a service started on Milvus then answers with the same
ids, a second copy only adds what is new, and copying back to FAISS restores its snapshot. On
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli.main import app
from rag.index.dense import KBIndex
from rag.services import Services
from tests.conftest import make_settings

pytest.importorskip("pymilvus", reason="pymilvus (the milvus extra) is not installed")
pytest.importorskip("milvus_lite", reason="milvus-lite (the dev extra) is not installed")

from rag.index.milvus import MilvusBackend
from tests.rag.test_persistence import TEXTS, _add, _drain, _sql_ids

runner = CliRunner()
QUERIES = ("第 0 份测试文档", "主题编号 3", "测试文档")


@pytest.fixture
def faiss_svc(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Services]:
    settings = make_settings(tmp_path / "data", database_url)
    monkeypatch.chdir(tmp_path)  # no stray .env file
    monkeypatch.setenv("RAG_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("RAG_DATABASE_URL", database_url)
    monkeypatch.setenv("RAG_EMBEDDING__MODEL", "fake:64")
    monkeypatch.delenv("RAG_INDEX__BACKEND", raising=False)
    monkeypatch.delenv("RAG_INDEX__MILVUS_URI", raising=False)
    s = Services.create(settings)
    yield s
    s.close()
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(str(tmp_path / "milvus.db"))


def _copy(*args: str) -> str:
    result = runner.invoke(app, ["index", "copy", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _snapshot_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_copy_to_milvus_then_serve_from_it(faiss_svc: Services, tmp_path: Path) -> None:
    svc = faiss_svc
    kb_id = svc.knowledge.create_kb("kb").id
    ids = [_add(svc, kb_id, name, data, tmp_path) for name, data in TEXTS.items()]
    _drain(svc)
    svc.knowledge.delete_document(kb_id, ids[0])  # a tombstone the copy must respect
    svc.indexes.get(kb_id)
    svc.indexes.save_dirty()
    expected = {
        (q, m): [h.chunk_id for h in svc.retriever.search(kb_id, q, top_k=5, mode=m)]
        for q in QUERIES
        for m in ("dense", "hybrid")
    }
    directory = svc.indexes.directory(kb_id)
    before = _snapshot_files(directory)
    uri = str(tmp_path / "milvus.db")

    out = _copy("--kb", "kb", "--to", "milvus", "--milvus-uri", uri)
    sql = _sql_ids(svc, kb_id)
    assert f"holds {len(sql)} vectors" in out and f"{len(sql)} added, 0 removed" in out
    # What the FAISS replicas serve is untouched: the snapshots, byte for byte.
    assert _snapshot_files(directory) == before

    milvus = Services.create(
        make_settings(
            tmp_path / "data",
            svc.settings.database_url,
            index={"backend": "milvus", "milvus_uri": uri},
        )
    )
    try:
        backend = milvus.indexes.dense_backend
        assert isinstance(backend, MilvusBackend)
        # The copy filled the version's collection but left the alias to the switch.
        assert not backend.client.list_aliases(backend.collection(kb_id, 1)).get("aliases")
        copied = backend.load(kb_id, 1, "fake:64", 64)
        assert set(copied.ids().tolist()) == sql
        for (query, mode), want in expected.items():
            got = milvus.retriever.search(kb_id, query, top_k=5, mode=mode)
            assert [h.chunk_id for h in got] == want, (query, mode)
        assert milvus.indexes.get(kb_id).last_seq == copied.last_seq  # loaded, not rebuilt
        # A document uploaded meanwhile: a second copy adds only its chunks.
        late = _add(svc, kb_id, "late.txt", "迟到的文档，主题编号 99。".encode(), tmp_path)
        _drain(svc)
        out = _copy("--kb", kb_id, "--to", "milvus", "--milvus-uri", uri)
        new = _sql_ids(svc, kb_id) - sql
        assert new and f"{len(new)} added, 0 removed" in out
        hits = milvus.retriever.search(kb_id, "迟到的文档", top_k=3, mode="dense")
        assert hits[0].document_id == late
    finally:
        milvus.close()

    # And back: a lost FAISS snapshot is filled again from SQL, the BM25 one left as it was.
    for path in directory.glob("vectors-*.faiss"):
        path.unlink()
    (directory / "manifest.json").unlink()
    lexical = {n: b for n, b in _snapshot_files(directory).items() if n.startswith("lexical")}
    out = _copy("--kb", "kb", "--to", "faiss")
    restored = KBIndex.load(directory, kb_id=kb_id, embedding_model="fake:64", dim=64)
    assert set(restored.ids().tolist()) == _sql_ids(svc, kb_id)
    assert {n: b for n, b in _snapshot_files(directory).items() if n.startswith("lexical")} == (
        lexical
    )


def test_copy_refuses_what_it_cannot_do(faiss_svc: Services) -> None:
    faiss_svc.knowledge.create_kb("kb")
    result = runner.invoke(app, ["index", "copy", "--kb", "kb", "--to", "elastic"])
    assert result.exit_code == 1 and "milvus or faiss" in result.output
    result = runner.invoke(app, ["index", "copy", "--kb", "kb", "--to", "milvus"])
    assert result.exit_code == 1 and "RAG_INDEX__MILVUS_URI" in result.output
    result = runner.invoke(app, ["index", "copy", "--kb", "nope", "--to", "faiss"])
    assert result.exit_code == 1 and "nope" in result.output
    result = runner.invoke(app, ["index", "copy", "--kb", "kb", "--to", "faiss", "--version", "7"])
    assert result.exit_code == 1 and "no index version 7" in result.output
