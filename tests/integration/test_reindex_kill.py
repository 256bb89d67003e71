"""SIGKILL the service several times while it re-indexes a knowledge base into a new version:
until the switch, the live version answers every query exactly as before; the job resumes after
each restart (documents already done are not done again) and the new version goes live with
every document in it, none twice, and an index that equals SQL."""

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
from tests.integration.service_process import ServiceProcess

pytestmark = pytest.mark.integration
# Enough documents that the re-index outlasts three restarts: with the pooled parsers it takes
# a few seconds, and a restart (and the first searches after it) about as long.
DOCS = 40
QUERIES = [f"第 {i} 号文档讲的是什么主题" for i in range(0, 20, 3)] + ["正文第五句", "主题"]


def _documents() -> dict[str, bytes]:
    docs = {}
    for i in range(DOCS):
        lines = [
            f"第 {i} 号文档：主题 {i}，第 {n} 句正文，记录编号 {i * 1000 + n}。" for n in range(250)
        ]
        docs[f"doc-{i:02d}.txt"] = "\n".join(lines).encode()
    return docs


def _answers(http: httpx.Client, kb: str) -> list[list[int]]:
    return [
        [
            r["chunk_id"]
            for r in http.post(
                f"/v1/knowledge-bases/{kb}/search", json={"query": q, "top_k": 5}
            ).json()["results"]
        ]
        for q in QUERIES
    ]


def _live(http: httpx.Client, kb: str) -> int:
    return int(http.get(f"/v1/knowledge-bases/{kb}/versions").json()["live"])


def _job(http: httpx.Client, job_id: str) -> dict:
    return http.get(f"/v1/jobs/{job_id}").json()


def test_sigkill_during_reindex(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    data_dir = tmp_path / "data"
    service = ServiceProcess(
        {
            "RAG_DATA_DIR": str(data_dir),
            "RAG_EMBEDDING__MODEL": "fake:64",
            "RAG_INGEST__LEASE_S": "1.5",
            "RAG_INGEST__POLL_INTERVAL_S": "0.05",
            "RAG_INGEST__MAX_ATTEMPTS": "10",
            "RAG_LLM__BASE_URL": "http://127.0.0.1:9/v1",
        },
        tmp_path / "service.log",
    )
    service.start()
    with service.client() as http:
        kb = http.post("/v1/knowledge-bases", json={"name": "reindex-kill"}).json()["id"]
        for name, data in _documents().items():
            resp = http.post(f"/v1/knowledge-bases/{kb}/documents", files={"file": (name, data)})
            assert resp.status_code == 202, resp.text
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            docs = http.get(f"/v1/knowledge-bases/{kb}/documents").json()["documents"]
            if all(d["status"] == "ready" for d in docs):
                break
            time.sleep(0.2)
        assert all(d["status"] == "ready" for d in docs), docs
        baseline = _answers(http, kb)
        assert all(baseline)
        started = http.post(f"/v1/knowledge-bases/{kb}/reindex", json={"chunk_tokens": 48})
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]

    kills_during_build = 0
    history = []
    # Up to 4 kills; short pauses, since the pooled parsers make a re-index quick.
    for _ in range(8):
        if kills_during_build == 4:
            break
        time.sleep(rng.uniform(0.1, 0.6))
        with service.client() as http:
            state = _job(http, job_id)
        if state["status"] in ("succeeded", "failed", "cancelled"):
            break
        service.kill(signal.SIGKILL)
        kills_during_build += 1
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
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = _job(http, job_id)
            if state["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.2)
        assert state["status"] == "succeeded", state
        listed = http.get(f"/v1/knowledge-bases/{kb}/versions").json()
        assert listed["live"] == 2
        statuses = {v["number"]: v["status"] for v in listed["versions"]}
        assert statuses == {1: "retired", 2: "live"}
        check = http.get(f"/v1/knowledge-bases/{kb}/index").json()
        assert check["consistent"] and check["version"] == 2, check
        after = _answers(http, kb)
    service.kill(signal.SIGTERM)

    db = Database(Settings(data_dir=data_dir).sqlalchemy_url)
    try:
        with db.read() as session:
            v2_ids = set(session.execute(select(Chunk.id).where(Chunk.version == 2)).scalars())
            for doc in session.execute(select(Document)).scalars():
                ordinals = sorted(
                    session.execute(
                        select(Chunk.ordinal).where(Chunk.document_id == doc.id, Chunk.version == 2)
                    ).scalars()
                )
                # Every document is in the new version, each chunk exactly once.
                assert ordinals == list(range(len(ordinals))) and ordinals, doc.filename
                assert doc.chunk_count == len(ordinals)
            v1 = session.execute(select(func.count()).where(Chunk.version == 1)).scalar_one()
            assert v1 and len(v2_ids) > v1  # the retired version is kept, smaller chunks
    finally:
        db.dispose()
    assert all(set(hits) <= v2_ids for hits in after)
    # The kills landed while the re-index was running, at several points of its progress.
    assert kills_during_build >= 3, (kills_during_build, history)
