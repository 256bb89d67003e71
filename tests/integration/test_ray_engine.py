"""The Ray path (a local Ray instance) stores the same chunks and vectors as the local path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from ingest.jobs import Worker
from ingest.upload import stage_upload
from rag import knowledge
from rag.models import Chunk, Document, Job
from rag.offline_models import OfflineModels
from rag.services import Services
from tests.conftest import FILES, REPO, make_settings

pytestmark = pytest.mark.integration
ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")


def _register(svc: Services, kb_id: str, paths: list[Path]) -> list[str]:
    ids = []
    for path in paths:
        with path.open("rb") as fh:
            doc, _ = knowledge.add_document(
                svc, kb_id, stage_upload(fh, path.name, svc.settings.data_dir, 10**8)
            )
        ids.append(doc.id)
    return ids


def _chunks(svc: Services, kb_id: str) -> list[tuple]:
    with svc.db.read() as session:
        rows = session.execute(
            select(
                Document.filename,
                Chunk.ordinal,
                Chunk.text,
                Chunk.page_start,
                Chunk.page_end,
                Chunk.heading_path,
                Chunk.embedding,
            )
            .join(Document)
            .where(Chunk.kb_id == kb_id)
            .order_by(Document.filename, Chunk.ordinal)
        ).all()
    return [tuple(r) for r in rows]


def test_ray_ingest_equals_local_ingest(tmp_path: Path, offline_models: OfflineModels) -> None:
    from ingest.ray_engine import ingest_documents

    settings = make_settings(tmp_path / "data")
    settings.embedding.model = str(offline_models.m3e_small)
    settings.tokenizer.path = offline_models.qwen_tiktoken
    svc = Services.create(settings)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\n" + b"garbage" * 100)
    try:
        local = knowledge.create_kb(svc, "local")
        files = [FILES / "R-FAQ.pdf", REPO / "data" / "samples" / "员工手册.md"]
        _register(svc, local.id, files)
        worker = Worker(svc)
        while worker.run_once():
            pass
        remote = knowledge.create_kb(svc, "ray")
        ids = _register(svc, remote.id, [*files, broken])
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
        )
        try:
            outcomes = ingest_documents(svc, ids, embed_actors=1)
        finally:
            ray.shutdown()
        assert sorted(o.status for o in outcomes) == ["failed", "ready", "ready"]
        a, b = _chunks(svc, local.id), _chunks(svc, remote.id)
        assert len(a) == len(b) > 20
        for x, y in zip(a, b, strict=True):
            assert x[:6] == y[:6]
            assert np.allclose(np.frombuffer(x[6], "<f4"), np.frombuffer(y[6], "<f4"), atol=1e-5)
        with svc.db.read() as session:
            jobs = session.execute(select(Job.status).where(Job.document_id.in_(ids))).scalars()
            assert sorted(jobs) == ["failed", "succeeded", "succeeded"]
        check = svc.indexes.check(remote.id)
        assert check["consistent"] and check["vectors"] == len(b)
    finally:
        svc.close()
