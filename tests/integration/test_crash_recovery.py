"""SIGKILL the service while it ingests; after a restart nothing is lost, duplicated or stale."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from rag.core.config import Settings
from rag.index.dense import KBIndex
from rag.store.db import Database
from rag.store.models import Chunk, Document
from tests.conftest import FILES
from tests.integration.service_process import ServiceProcess

pytestmark = pytest.mark.integration


def _documents() -> dict[str, bytes]:
    docs = {p.name: p.read_bytes() for p in sorted(FILES.iterdir())}
    for i in range(4):
        docs[f"note-{i}.txt"] = (
            f"第 {i} 号笔记\n\n" + f"内容编号 {i}，用于崩溃测试。" * 300
        ).encode()
    return docs


def test_sigkill_during_ingestion_then_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {
        "RAG_DATA_DIR": str(data_dir),
        "RAG_EMBEDDING__MODEL": "fake:64",
        "RAG_INGEST__LEASE_S": "2",
        "RAG_INGEST__POLL_INTERVAL_S": "0.1",
        "RAG_LLM__BASE_URL": "http://127.0.0.1:9/v1",
    }
    service = ServiceProcess(env, tmp_path / "service.log")
    service.start()
    with service.client() as http:
        kb = http.post("/v1/knowledge-bases", json={"name": "crash"}).json()["id"]
        ids = []
        for name, data in _documents().items():
            resp = http.post(f"/v1/knowledge-bases/{kb}/documents", files={"file": (name, data)})
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["id"])
        # Kill while work is in flight: some documents done, others queued or processing.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [
                http.get(f"/v1/knowledge-bases/{kb}/documents/{d}").json()["status"] for d in ids
            ]
            if "ready" in states or "processing" in states:
                break
            time.sleep(0.05)
    service.kill(signal.SIGKILL)
    killed_states = states

    service.start()
    with service.client() as http:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            docs = http.get(f"/v1/knowledge-bases/{kb}/documents").json()["documents"]
            if all(d["status"] in ("ready", "failed") for d in docs):
                break
            time.sleep(0.2)
        assert {d["id"] for d in docs} == set(ids)
        assert all(d["status"] == "ready" for d in docs), [
            (d["filename"], d["error"]) for d in docs
        ]
        check = http.get(f"/v1/knowledge-bases/{kb}/index").json()
        assert check["consistent"], check
    service.kill(signal.SIGTERM)

    db = Database(Settings(data_dir=data_dir).sqlalchemy_url)
    with db.read() as session:
        ready_ids = set(
            session.execute(
                select(Chunk.id).join(Document).where(Document.status == "ready")
            ).scalars()
        )
        for doc in session.execute(select(Document)).scalars():
            n = session.execute(
                select(func.count()).select_from(Chunk).where(Chunk.document_id == doc.id)
            ).scalar_one()
            assert n == doc.chunk_count  # no chunk twice, none missing
    db.dispose()
    # The snapshot written at shutdown holds exactly the chunk ids of ready documents.
    snapshot = KBIndex.load(
        data_dir / "index" / kb / "v1", kb_id=kb, embedding_model="fake:64", dim=64
    )
    assert set(snapshot.ids().tolist()) == ready_ids
    # The kill happened mid-ingestion: work was still queued or in flight.
    assert {"queued", "processing"} & set(killed_states), killed_states
