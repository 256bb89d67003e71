"""Several documents stored in one transaction stay all-or-nothing each: one that fails is rolled
back alone, a crash before the commit leaves none of them, a failed group commit falls back to
storing each alone, and the index catches up once per group."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from ingest.pipeline import Outcome, Stored
from ingest.upload import stage_upload
from rag.services import Services
from rag.store.models import Chunk, Document


def _add(svc: Services, kb_id: str, name: str) -> str:
    path = svc.settings.data_dir / "incoming" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{name} 的内容：第一段讲请假。\n\n第二段讲报销流程，{name} 独有。")
    with path.open("rb") as fh:
        staged = stage_upload(fh, name, svc.settings.data_dir, 10**7)
    return svc.knowledge.add_document(kb_id, staged)[0].id


def _ready_to_store(
    svc: Services, kb_id: str, names: list[str], done: list[Outcome]
) -> list[Stored]:
    """Documents parsed, chunked and embedded, each completing into `done`."""
    group = []
    for name in names:
        begun = svc.pipeline.begin(_add(svc, kb_id, name), lambda s, o: None)
        assert begun is not None
        item = svc.pipeline.prepare(*begun, lambda n: None)
        [vectors] = svc.pipeline.embed_prepared([item])
        group.append(Stored(item, vectors, lambda s, o: done.append(o)))
    return group


def _chunks_by_document(svc: Services) -> dict[str, int]:
    with svc.db.read() as session:
        rows = session.execute(
            select(Chunk.document_id, func.count()).group_by(Chunk.document_id)
        ).all()
    return dict(rows)  # type: ignore[arg-type]


def _status(svc: Services, doc_id: str) -> str | None:
    with svc.db.read() as session:
        doc = session.get(Document, doc_id)
        return None if doc is None else doc.status


@pytest.fixture
def kb(db_services: Services) -> str:
    return db_services.knowledge.create_kb("kb").id


def test_one_failing_document_does_not_lose_the_others(
    db_services: Services, kb: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    done: list[Outcome] = []
    a, b, c, d = _ready_to_store(db_services, kb, ["a.txt", "b.txt", "c.txt", "d.txt"], done)

    def broken(session: Session, outcome: Outcome) -> None:
        raise RuntimeError("completing b failed")

    b.job_done = broken
    db_services.knowledge.delete_document(kb, c.item.doc.id)  # deleted while it was embedded
    syncs: list[str | None] = []
    sync = db_services.indexes.sync

    def counted_sync(kb_id: str | None = None) -> None:
        syncs.append(kb_id)
        sync(kb_id)

    monkeypatch.setattr(db_services.indexes, "sync", counted_sync)

    results = db_services.pipeline.store_group([a, b, c, d])

    assert isinstance(results[1], RuntimeError)
    statuses = [r.status for r in results if isinstance(r, Outcome)]
    assert statuses == ["ready", "deleted", "ready"]
    stored = _chunks_by_document(db_services)
    assert set(stored) == {a.item.doc.id, d.item.doc.id}
    assert stored[a.item.doc.id] == len(a.item.chunks)
    assert _status(db_services, b.item.doc.id) == "processing"  # b's savepoint rolled back whole
    assert [o.status for o in done] == ["ready", "deleted", "ready"]
    assert syncs == [kb]  # once for the group
    ids = set(db_services.indexes.get(kb).ids().tolist())
    with db_services.db.read() as session:
        assert ids == set(session.scalars(select(Chunk.id)))


def test_a_crash_before_the_commit_leaves_none_of_the_group(db_services: Services, kb: str) -> None:
    done: list[Outcome] = []
    group = _ready_to_store(db_services, kb, ["a.txt", "b.txt", "c.txt"], done)

    def process_dies(session: Session, outcome: Outcome) -> None:
        raise SystemExit("killed while storing")  # not an Exception: nothing catches it

    group[-1].job_done = process_dies
    with pytest.raises(SystemExit):
        db_services.pipeline.store_group(group)
    assert _chunks_by_document(db_services) == {}
    assert {_status(db_services, s.item.doc.id) for s in group} == {"processing"}


def test_a_failed_group_commit_stores_each_document_alone(db_services: Services, kb: str) -> None:
    done: list[Outcome] = []
    group = _ready_to_store(db_services, kb, ["a.txt", "b.txt", "c.txt"], done)

    def refuse_commit(session: Session) -> None:
        def boom(*_: Any) -> None:
            raise RuntimeError("the group's commit failed")

        event.listen(session, "before_commit", boom)  # this session only: the group's

    results = db_services.pipeline.store_group(group, on_commit=refuse_commit)
    assert [r.status if isinstance(r, Outcome) else r for r in results] == ["ready"] * 3
    assert set(_chunks_by_document(db_services)) == {s.item.doc.id for s in group}
