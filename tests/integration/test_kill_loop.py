"""SIGKILL at random moments while 60 documents ingest, ten times over: after every restart
each document is ready, failed with a reason, or still on its way; the live index equals SQL;
no chunk is stored twice; in the end every document is ready."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from rag.core.config import Settings
from rag.store.db import Database
from rag.store.models import Chunk, Document
from tests.conftest import FILES
from tests.integration.service_process import ServiceProcess

pytestmark = pytest.mark.integration
KILLS = 10


def _documents(rng: random.Random) -> dict[str, bytes]:
    docs = {}
    for i in range(56):
        size = rng.choice([20, 200, 800])
        docs[f"doc-{i:02d}.txt"] = (
            (f"第 {i} 号文档\n\n" + f"第 {i} 号文档的正文，第 {{n}} 句。" * size)
            .replace("{n}", str(i))
            .encode()
        )
    for name in (
        "R-FAQ.pdf",
        "maint-guide.zh-cn.pdf",
        "debian-faq.zh-cn.docx",
        "debian-faq.zh-cn.txt",
    ):
        docs[name] = (FILES / name).read_bytes()
    return docs


def _invariants(http: httpx.Client, kb: str, data_dir: Path) -> dict[str, int]:
    docs = http.get(f"/v1/knowledge-bases/{kb}/documents").json()["documents"]
    for d in docs:
        assert d["status"] in ("queued", "processing", "ready", "failed"), d
        if d["status"] == "failed":
            assert d["error"], d
    check = http.get(f"/v1/knowledge-bases/{kb}/index").json()
    assert check["consistent"], check
    db = Database(Settings(data_dir=data_dir).sqlalchemy_url)
    try:
        with db.read() as session:
            per_doc = dict(
                session.execute(
                    select(Chunk.document_id, func.count()).group_by(Chunk.document_id)
                ).all()
            )
            for doc in session.execute(select(Document)).scalars():
                stored = per_doc.get(doc.id, 0)
                # Chunks exist only for ready documents, exactly as many as it says.
                assert stored == (doc.chunk_count if doc.status == "ready" else 0), doc.filename
    finally:
        db.dispose()
    counts: dict[str, int] = {}
    for d in docs:
        counts[d["status"]] = counts.get(d["status"], 0) + 1
    return counts


def test_repeated_sigkill_during_ingestion(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    data_dir = tmp_path / "data"
    service = ServiceProcess(
        {
            "RAG_DATA_DIR": str(data_dir),
            "RAG_EMBEDDING__MODEL": "fake:64",
            "RAG_INGEST__LEASE_S": "1.5",
            "RAG_INGEST__POLL_INTERVAL_S": "0.05",
            "RAG_INGEST__MAX_ATTEMPTS": "20",
            "RAG_LLM__BASE_URL": "http://127.0.0.1:9/v1",
        },
        tmp_path / "service.log",
    )
    service.start()
    with service.client() as http:
        kb = http.post("/v1/knowledge-bases", json={"name": "kill-loop"}).json()["id"]
        for name, data in _documents(rng).items():
            assert (
                http.post(
                    f"/v1/knowledge-bases/{kb}/documents", files={"file": (name, data)}
                ).status_code
                == 202
            )
    history = []
    for _ in range(KILLS):
        time.sleep(rng.uniform(0.2, 1.5))
        service.kill(signal.SIGKILL)
        service.start()
        with service.client() as http:
            history.append(_invariants(http, kb, data_dir))
    with service.client() as http:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            counts = _invariants(http, kb, data_dir)
            if counts.get("ready", 0) + counts.get("failed", 0) == 60:
                break
            time.sleep(0.5)
    service.kill(signal.SIGTERM)
    assert counts == {"ready": 60}, (counts, history)
    # The kills landed while work was still in flight, not after it had all finished.
    assert any(h.get("queued", 0) + h.get("processing", 0) for h in history), history
