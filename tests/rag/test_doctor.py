"""The doctor finds drift between derived state and SQL and repairs it from SQL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete, select

from ingest.jobs import Worker
from ingest.upload import stage_upload
from rag import knowledge
from rag.doctor import examine
from rag.models import Chunk, Document, Job
from rag.services import Services
from tests.conftest import REPO

SAMPLE = REPO / "data" / "samples" / "员工手册.md"


def _ingest(svc: Services, kb_id: str, drain: bool = True) -> str:
    with SAMPLE.open("rb") as fh:
        staged = stage_upload(fh, SAMPLE.name, svc.settings.data_dir, 10**7)
    doc, _ = knowledge.add_document(svc, kb_id, staged)
    worker = Worker(svc)
    while drain and worker.run_once():
        pass
    return doc.id


def test_healthy_state_has_no_findings(services: Services) -> None:
    kb = knowledge.create_kb(services, "kb")
    _ingest(services, kb.id)
    assert examine(services, repair=True) == []


def test_index_drift_is_found_then_repaired_from_sql(services: Services) -> None:
    kb = knowledge.create_kb(services, "kb")
    _ingest(services, kb.id)
    with services.db.read() as session:
        some_id = session.execute(select(Chunk.id).limit(1)).scalar_one()
    services.indexes.get(kb.id).remove([some_id])
    found = examine(services, repair=False)
    assert [f.kind for f in found] == ["index_drift"] and not found[0].repaired
    assert [f.repaired for f in examine(services, repair=True)] == [True]
    assert services.indexes.check(kb.id)["consistent"]
    assert examine(services) == []


def test_orphan_file_is_quarantined_not_deleted(services: Services) -> None:
    kb = knowledge.create_kb(services, "kb")
    orphan = services.settings.files_dir / kb.id / "left-behind"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"data")
    found = examine(services, repair=True)
    assert [(f.kind, f.repaired) for f in found] == [("orphan_file", True)]
    assert not orphan.exists()
    moved = (
        services.settings.data_dir / "quarantine" / orphan.relative_to(services.settings.data_dir)
    )
    assert moved.read_bytes() == b"data"


def test_stuck_document_is_requeued_and_finishes(services: Services) -> None:
    kb = knowledge.create_kb(services, "kb")
    doc_id = _ingest(services, kb.id, drain=False)
    with services.db.write() as session:
        session.execute(delete(Job))
    found = examine(services, repair=True)
    assert [(f.kind, f.document_id) for f in found] == [("stuck_document", doc_id)]
    worker = Worker(services)
    while worker.run_once():
        pass
    with services.db.read() as session:
        assert session.get(Document, doc_id).status == "ready"


def test_missing_file_of_a_queued_document_fails_it(services: Services) -> None:
    kb = knowledge.create_kb(services, "kb")
    doc_id = _ingest(services, kb.id, drain=False)
    with services.db.read() as session:
        path: Path = services.settings.data_dir / session.get(Document, doc_id).storage_path
    path.unlink()
    kinds = {f.kind for f in examine(services, repair=True)}
    assert "missing_file" in kinds
    with services.db.read() as session:
        doc = session.get(Document, doc_id)
        assert doc.status == "failed" and doc.error == "stored file is missing"
