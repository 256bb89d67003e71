"""The kill tests of FAISS, again with the dense indexes in Milvus (RAG_INDEX__BACKEND=milvus),
on SQLite and PostgreSQL: SIGKILL while ingesting and deleting, and several times while a
re-index builds a new version. After every restart the live collection's ids equal the SQL chunk
ids of ready documents, deleted chunks never come back, and until the switch the live version
answers exactly as before; afterwards the alias names the new version's collection.

Milvus Lite runs inside the process that opens its file, and only one process may open it: here
the Milvus dies with the service and is reopened by the restarted one (the harder case for its
durability). Two replicas sharing one Milvus need Milvus standalone (the docker-compose profile);
tests/rag/index/test_milvus.py covers a second process's deletes and the shared sequence number.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from rag.store.db import Database
from rag.store.models import Chunk, Document
from tests.integration.service_process import ServiceProcess
from tests.integration.test_reindex_kill import _answers, _documents, _job, _live

pytestmark = pytest.mark.integration
pytest.importorskip("pymilvus", reason="pymilvus (the milvus extra) is not installed")
pytest.importorskip("milvus_lite", reason="milvus-lite (the dev extra) is not installed")

from rag.index.milvus import MilvusBackend  # noqa: E402

MODEL, DIM = "fake:64", 64


@pytest.fixture
def milvus_service(tmp_path: Path, database_url: str) -> Iterator[ServiceProcess]:
    """`rag serve` on Milvus Lite (a file under tmp_path) and SQLite or PostgreSQL."""
    service = ServiceProcess(
        {
            "RAG_DATA_DIR": str(tmp_path / "data"),
            "RAG_DATABASE_URL": database_url,
            "RAG_INDEX__BACKEND": "milvus",
            "RAG_INDEX__MILVUS_URI": str(tmp_path / "milvus.db"),
            "RAG_EMBEDDING__MODEL": MODEL,
            "RAG_INGEST__LEASE_S": "1.5",
            "RAG_INGEST__POLL_INTERVAL_S": "0.05",
            "RAG_INGEST__MAX_ATTEMPTS": "10",
            "RAG_LLM__BASE_URL": "http://127.0.0.1:9/v1",
        },
        tmp_path / "service.log",
    )
    try:
        yield service
    finally:
        service.kill(signal.SIGKILL)


def _wait_ready(http: httpx.Client, kb: str, timeout: float = 180) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        docs = http.get(f"/v1/knowledge-bases/{kb}/documents").json()["documents"]
        if all(d["status"] in ("ready", "failed") for d in docs):
            break
        time.sleep(0.2)
    assert all(d["status"] == "ready" for d in docs), [(d["filename"], d["error"]) for d in docs]
    return docs


def _ready_ids(database_url: str, version: int = 1) -> set[int]:
    db = Database(database_url)
    try:
        with db.read() as session:
            return set(
                session.execute(
                    select(Chunk.id)
                    .join(Document)
                    .where(
                        Document.status == "ready",
                        Chunk.version == version,
                        Chunk.disabled.is_(False),
                    )
                ).scalars()
            )
    finally:
        db.dispose()


def _chunk_ids(database_url: str, document_id: str) -> set[int]:
    db = Database(database_url)
    try:
        with db.read() as session:
            return set(
                session.execute(select(Chunk.id).where(Chunk.document_id == document_id)).scalars()
            )
    finally:
        db.dispose()


def _collection(tmp_path: Path, kb: str, version: int) -> tuple[set[int], str | None]:
    """Ids in a version's collection, and the collection the KB's alias names, read from the
    Milvus Lite file once the service is gone."""
    from milvus_lite.server_manager import server_manager_instance

    uri = str(tmp_path / "milvus.db")
    backend = MilvusBackend.connect(uri)
    try:
        ids = set(backend.load(kb, version, MODEL, DIM).ids().tolist())
        aliased = backend.client.describe_alias(backend.alias(kb)).get("collection_name")
        return ids, aliased
    finally:
        backend.client.close()
        server_manager_instance.release_server(uri)


def test_sigkill_while_ingesting_and_deleting_on_milvus(
    milvus_service: ServiceProcess, tmp_path: Path, database_url: str
) -> None:
    service = milvus_service
    docs = {
        f"note-{i}.txt": (f"第 {i} 号笔记\n\n" + f"内容编号 {i}，用于崩溃测试。" * 300).encode()
        for i in range(8)
    }
    service.start()
    with service.client() as http:
        kb = http.post("/v1/knowledge-bases", json={"name": "crash"}).json()["id"]
        ids = []
        for name, data in docs.items():
            resp = http.post(f"/v1/knowledge-bases/{kb}/documents", files={"file": (name, data)})
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["id"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [
                http.get(f"/v1/knowledge-bases/{kb}/documents/{d}").json()["status"] for d in ids
            ]
            if "ready" in states or "processing" in states:
                break
            time.sleep(0.05)
    service.kill(signal.SIGKILL)
    # The kill happened mid-ingestion: work was still queued or in flight.
    assert {"queued", "processing"} & set(states), states

    service.start()
    with service.client() as http:
        _wait_ready(http, kb)
        check = http.get(f"/v1/knowledge-bases/{kb}/index").json()
        assert check["consistent"] and check["layout"] == "milvus", check
        gone = _chunk_ids(database_url, ids[0])
        # Delete a document and kill at once, before anything is saved at shutdown.
        deleted = http.delete(f"/v1/knowledge-bases/{kb}/documents/{ids[0]}")
        assert deleted.status_code in (200, 204), deleted.text
    service.kill(signal.SIGKILL)
    ready = _ready_ids(database_url)
    assert gone and not gone & ready and not _chunk_ids(database_url, ids[0])

    service.start()
    with service.client() as http:
        check = http.get(f"/v1/knowledge-bases/{kb}/index").json()
        assert check["consistent"], check
        hits = http.post(
            f"/v1/knowledge-bases/{kb}/search", json={"query": "第 0 号笔记", "top_k": 20}
        ).json()["results"]
        assert hits and all(h["document_id"] != ids[0] for h in hits)
        assert {h["chunk_id"] for h in hits} <= ready
    service.kill(signal.SIGTERM)
    in_milvus, aliased = _collection(tmp_path, kb, 1)
    # Exactly the chunks of ready documents: none lost, none twice, the deleted ones gone.
    assert in_milvus == ready and not gone & in_milvus
    assert aliased == f"kbqa_{kb.replace('-', '_')}_v1"


def test_sigkill_during_reindex_on_milvus(
    milvus_service: ServiceProcess, tmp_path: Path, database_url: str
) -> None:
    rng = random.Random(20261206)
    service = milvus_service
    service.start()
    with service.client() as http:
        kb = http.post("/v1/knowledge-bases", json={"name": "reindex-kill"}).json()["id"]
        for name, data in _documents().items():
            resp = http.post(f"/v1/knowledge-bases/{kb}/documents", files={"file": (name, data)})
            assert resp.status_code == 202, resp.text
        _wait_ready(http, kb)
        baseline = _answers(http, kb)
        assert all(baseline)
        started = http.post(f"/v1/knowledge-bases/{kb}/reindex", json={"chunk_tokens": 48})
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]

    kills = 0
    history = []
    for _ in range(6):
        if kills == 3:
            break
        time.sleep(rng.uniform(0.1, 0.6))
        with service.client() as http:
            state = _job(http, job_id)
        if state["status"] in ("succeeded", "failed", "cancelled"):
            break
        service.kill(signal.SIGKILL)
        kills += 1
        history.append(state["progress"]["done"])
        service.start()
        with service.client() as http:
            # Until the switch, the live version answers exactly as before the re-index.
            if _live(http, kb) == 1:
                answers = _answers(http, kb)
                if _live(http, kb) == 1:
                    assert answers == baseline
            check = http.get(f"/v1/knowledge-bases/{kb}/index").json()
            assert check["consistent"], check

    with service.client() as http:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            state = _job(http, job_id)
            if state["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.2)
        assert state["status"] == "succeeded", state
        listed = http.get(f"/v1/knowledge-bases/{kb}/versions").json()
        assert listed["live"] == 2
        assert {v["number"]: v["status"] for v in listed["versions"]} == {1: "retired", 2: "live"}
        check = http.get(f"/v1/knowledge-bases/{kb}/index").json()
        assert check["consistent"] and check["version"] == 2, check
        after = _answers(http, kb)
    service.kill(signal.SIGTERM)

    v1, v2 = _ready_ids(database_url, 1), _ready_ids(database_url, 2)
    assert v1 and len(v2) > len(v1)  # the retired version is kept, with bigger chunks
    assert all(set(hits) <= v2 for hits in after)
    in_v2, aliased = _collection(tmp_path, kb, 2)
    assert in_v2 == v2
    assert aliased == f"kbqa_{kb.replace('-', '_')}_v2"  # the alias followed the switch
    in_v1, _ = _collection(tmp_path, kb, 1)
    assert in_v1 == v1  # kept for a rollback, untouched by the re-index
    assert kills >= 2, (kills, history)
