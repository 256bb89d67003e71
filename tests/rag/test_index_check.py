"""`IndexStore.check` is exact while ingestion runs: commits landing mid-check are not drift."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.upload import stage_upload
from rag.services import Services
from rag.store.models import Chunk


@pytest.fixture
def svc(db_services: Services) -> Services:
    return db_services


def _add(svc: Services, kb_id: str, name: str, text: str) -> str:
    path = svc.settings.data_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    with path.open("rb") as fh:
        staged = stage_upload(fh, name, svc.settings.data_dir, 10**7)
    doc, _ = svc.knowledge.add_document(kb_id, staged)
    worker = svc.worker()
    while worker.run_once():
        pass
    return doc.id


def test_commits_between_capture_and_sql_read_are_not_drift(svc: Services) -> None:
    kb = svc.knowledge.create_kb("kb").id
    first = _add(svc, kb, "a.txt", "第一份文档的正文。" * 300)
    assert svc.indexes.check(kb)["consistent"]

    real_snapshot = svc.db.snapshot
    landed: list[str] = []

    @contextmanager
    def snapshot_after_other_writers() -> Iterator[Session]:
        # Another writer adds a document and deletes one between the id capture and the read.
        if not landed:
            landed.append(_add(svc, kb, "b.txt", "第二份文档的正文。" * 300))
            svc.knowledge.delete_document(kb, first)
        with real_snapshot() as session:
            yield session

    svc.db.snapshot = snapshot_after_other_writers  # type: ignore[method-assign]
    try:
        report = svc.indexes.check(kb)
    finally:
        svc.db.snapshot = real_snapshot  # type: ignore[method-assign]
    assert landed
    assert report["consistent"], report
    after = svc.indexes.check(kb)
    assert after["consistent"], after
    with svc.db.read() as session:
        live = session.execute(select(Chunk.id).where(Chunk.kb_id == kb)).scalars().all()
    assert after["vectors"] == after["sql_chunks"] == len(live) > 0


def test_real_drift_is_still_reported(svc: Services) -> None:
    kb = svc.knowledge.create_kb("kb").id
    _add(svc, kb, "a.txt", "一份文档的正文。" * 300)
    with svc.db.read() as session:
        some = session.execute(select(Chunk.id).limit(1)).scalar_one()
    svc.indexes.get(kb).remove([some])
    report = svc.indexes.check(kb)
    assert not report["consistent"]
    assert report["missing_ids"] == [some]
