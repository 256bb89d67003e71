"""The doctor finds drift between derived state and SQL and repairs it from SQL, and never
mistakes a writer in flight for drift (issue 14: an accepted upload lost to the repair loop)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import delete, select, update

from ingest.upload import stage_upload
from rag.generation.llm import LLMClient
from rag.kb import knowledge, quarantine
from rag.services import Services
from rag.store.models import Base, Chunk, Document, Job, JobStatus
from tests.conftest import REPO, FakeLLM

SAMPLE = REPO / "tests" / "fixtures" / "员工手册.md"


@pytest.fixture
def svc(db_services: Services) -> Services:
    return db_services


def _stage(
    svc: Services, text: str | None = None, name: str = "员工手册.md"
) -> knowledge.StagedFile:
    source = svc.settings.data_dir / "incoming" / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(SAMPLE.read_bytes() if text is None else text.encode())
    with source.open("rb") as fh:
        return stage_upload(fh, name, svc.settings.data_dir, 10**7)


def _ingest(svc: Services, kb_id: str, drain: bool = True, text: str | None = None) -> str:
    doc, _ = svc.knowledge.add_document(kb_id, _stage(svc, text))
    _drain(svc, drain)
    return doc.id


def _drain(svc: Services, drain: bool = True) -> None:
    worker = svc.worker()
    while drain and worker.run_once():
        pass


def _age(path: Path, seconds: float = 7200) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _status(svc: Services, doc_id: str) -> str:
    with svc.db.read() as session:
        return session.get(Document, doc_id).status


def test_healthy_state_has_no_findings(services: Services) -> None:
    kb = services.knowledge.create_kb("kb")
    _ingest(services, kb.id)
    assert services.doctor.examine(repair=True) == []


def test_index_drift_is_found_then_repaired_from_sql(services: Services) -> None:
    kb = services.knowledge.create_kb("kb")
    _ingest(services, kb.id)
    with services.db.read() as session:
        some_id = session.execute(select(Chunk.id).limit(1)).scalar_one()
    services.indexes.get(kb.id).remove([some_id])
    found = services.doctor.examine(repair=False)
    assert [f.kind for f in found] == ["index_drift"] and not found[0].repaired
    assert [f.repaired for f in services.doctor.examine(repair=True)] == [True]
    assert services.indexes.check(kb.id)["consistent"]
    assert services.doctor.examine() == []


def test_old_orphan_file_is_quarantined_logged_and_restorable(services: Services) -> None:
    kb = services.knowledge.create_kb("kb")
    orphan = services.settings.files_dir / kb.id / "left-behind"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"data")
    _age(orphan)
    found = services.doctor.examine(repair=True)
    assert [(f.kind, f.repaired) for f in found] == [("orphan_file", True)]
    relative = str(orphan.relative_to(services.settings.data_dir))
    assert not orphan.exists()
    assert quarantine.location(services.settings.data_dir, relative).read_bytes() == b"data"
    assert quarantine.entries(services.settings.data_dir) == [relative]
    [entry] = quarantine.history(services.settings.data_dir)
    assert entry["action"] == "quarantine" and entry["path"] == relative
    assert quarantine.restore(services.settings.data_dir, relative, "operator")
    assert orphan.read_bytes() == b"data"
    assert [e["action"] for e in quarantine.history(services.settings.data_dir)] == [
        "quarantine",
        "restore",
    ]


def test_young_unknown_file_is_an_upload_in_flight_and_left_alone(services: Services) -> None:
    kb = services.knowledge.create_kb("kb")
    fresh = services.settings.files_dir / kb.id / "being-uploaded"
    fresh.parent.mkdir(parents=True)
    fresh.write_bytes(b"data")
    assert services.doctor.examine(repair=True) == []
    assert fresh.read_bytes() == b"data"


@contextmanager
def _held_upload(
    svc: Services, kb_id: str, staged: knowledge.StagedFile, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[tuple[Document, bool]]]:
    """An upload paused between moving its file into files/ and committing its row: the body
    of the `with` runs in that gap. The list holds add_document's result once it is left."""
    moved, release = threading.Event(), threading.Event()
    place = knowledge._place_file

    def held(source: Path, target: Path) -> None:
        place(source, target)
        moved.set()
        assert release.wait(30)

    monkeypatch.setattr(knowledge, "_place_file", held)
    result: list[tuple[Document, bool]] = []
    thread = threading.Thread(
        target=lambda: result.append(svc.knowledge.add_document(kb_id, staged))
    )
    thread.start()
    try:
        assert moved.wait(30)
        yield result
    finally:
        release.set()
        thread.join(30)


def test_upload_held_between_file_move_and_row_commit_survives_the_check(
    svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of issue 14, reproduced: the check runs while an upload's file is in files/
    and its row is not yet committed. The upload is not touched and ends ready."""
    kb = svc.knowledge.create_kb("kb")
    with _held_upload(svc, kb.id, _stage(svc), monkeypatch) as result:
        # The stored file has no row yet: exactly what the old check called an orphan.
        [stored] = [p for p in svc.settings.files_dir.rglob("*") if p.is_file()]
        assert svc.doctor.examine(repair=False) == []
        assert svc.doctor.examine(repair=True) == []
        assert stored.is_file()
    [(doc, duplicate)] = result
    assert not duplicate
    _drain(svc)
    assert _status(svc, doc.id) == "ready"
    assert svc.doctor.examine(repair=True) == []


def test_a_quarantined_upload_is_restored_never_failed(
    svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even with no grace period (a clock jump, a check configured too eagerly), the file the
    check set aside comes back: the worker restores it, and so does the next check."""
    kb = svc.knowledge.create_kb("kb")

    def race(text: str, name: str) -> Document:
        with _held_upload(svc, kb.id, _stage(svc, text, name), monkeypatch) as result:
            found = svc.doctor.examine(repair=True, grace_s=0)
            assert [(f.kind, f.repaired) for f in found] == [("orphan_file", True)]
        [(doc, _)] = result
        return doc

    # The worker finds its file in quarantine and takes it back.
    first = race("第一份文件。" * 20, "a.txt")
    _drain(svc)
    assert _status(svc, first.id) == "ready"
    # The next check gives a queued document its file back instead of failing it.
    second = race("第二份文件。" * 20, "b.txt")
    found = svc.doctor.examine(repair=True, grace_s=0)
    assert [(f.kind, f.document_id, f.repaired) for f in found] == [
        ("quarantined_file", second.id, True)
    ]
    _drain(svc)
    assert _status(svc, second.id) == "ready"
    assert quarantine.entries(svc.settings.data_dir) == []
    assert svc.doctor.examine(repair=True, grace_s=0) == []


def test_stuck_document_is_requeued_and_finishes(svc: Services) -> None:
    kb = svc.knowledge.create_kb("kb")
    doc_id = _ingest(svc, kb.id, drain=False)
    with svc.db.write() as session:
        session.execute(delete(Job))
    found = svc.doctor.examine(repair=True)
    assert [(f.kind, f.document_id) for f in found] == [("stuck_document", doc_id)]
    _drain(svc)
    assert _status(svc, doc_id) == "ready"


def test_stale_job_is_handed_back_to_the_queue(svc: Services) -> None:
    kb = svc.knowledge.create_kb("kb")
    doc_id = _ingest(svc, kb.id, drain=False)
    long_ago = svc.db.now() - timedelta(hours=1)
    with svc.db.write() as session:
        session.execute(
            update(Job).values(status=JobStatus.running, heartbeat_at=long_ago, worker_id="gone")
        )
    assert [f.kind for f in svc.doctor.examine(repair=False)] == ["stale_job"]
    assert [(f.kind, f.repaired) for f in svc.doctor.examine(repair=True)] == [("stale_job", True)]
    _drain(svc)
    assert _status(svc, doc_id) == "ready"


def test_missing_file_of_a_queued_document_fails_it(svc: Services) -> None:
    kb = svc.knowledge.create_kb("kb")
    doc_id = _ingest(svc, kb.id, drain=False)
    with svc.db.read() as session:
        path: Path = svc.settings.data_dir / session.get(Document, doc_id).storage_path
    path.unlink()
    kinds = {f.kind for f in svc.doctor.examine(repair=True)}
    assert "missing_file" in kinds
    with svc.db.read() as session:
        doc = session.get(Document, doc_id)
        assert doc.status == "failed" and "missing" in (doc.error or "")


def test_deleting_a_document_also_removes_its_quarantined_copy(services: Services) -> None:
    kb = services.knowledge.create_kb("kb")
    doc_id = _ingest(services, kb.id)
    with services.db.read() as session:
        storage = session.get(Document, doc_id).storage_path
    data_dir = services.settings.data_dir
    # As if the check had set the file aside between the delete's commit and its unlink.
    assert quarantine.set_aside(data_dir, storage, "test")
    services.knowledge.delete_document(kb.id, doc_id)
    assert not quarantine.location(data_dir, storage).exists()
    assert not (data_dir / storage).exists()


def test_stale_partial_uploads_are_removed_after_the_grace_period(services: Services) -> None:
    tmp = services.settings.data_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    old, young = tmp / "upload-old", tmp / "upload-young"
    old.write_bytes(b"half an upload")
    young.write_bytes(b"an upload still arriving")
    _age(old)
    assert [(f.kind, f.detail) for f in services.doctor.examine(repair=False)] == [
        ("stale_upload", "upload-old")
    ]
    assert old.exists()
    services.doctor.examine(repair=True)
    assert not old.exists() and young.exists()


# -- a dry run changes nothing -------------------------------------------------------------


def _state(svc: Services) -> tuple[dict[str, str], dict[str, list[tuple[object, ...]]]]:
    """Every file of the data dir (but the SQLite database, compared by content) with its
    hash and mtime, and every row of every table."""
    files = {}
    for path in sorted(svc.settings.data_dir.rglob("*")):
        if path.is_file() and not path.name.startswith("rag.db"):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            files[str(path.relative_to(svc.settings.data_dir))] = (
                f"{digest} {path.stat().st_mtime_ns}"
            )
    rows = {}
    with svc.db.read() as session:
        for table in Base.metadata.sorted_tables:
            found = session.execute(sa.select(table)).all()
            rows[table.name] = sorted(tuple(map(repr, r)) for r in found)
    return files, rows


@pytest.fixture
def drifted(svc: Services) -> Iterator[Services]:
    """A data dir with one of every finding, saved to disk as a stopped server leaves it."""
    kb = svc.knowledge.create_kb("kb")
    ready = _ingest(svc, kb.id, text="年假：入职满一年的员工享有十天带薪年假。" * 10)
    svc.indexes.save_dirty()
    with svc.db.read() as session:
        some_id = (
            session.execute(select(Chunk.id).where(Chunk.document_id == ready)).scalars().first()
        )
    dense = svc.indexes.get(kb.id)
    dense.remove([some_id])
    svc.indexes._dirty.add(((kb.id, 1), "dense"))
    svc.indexes.save_dirty()  # the snapshot on disk now lacks a row SQL has
    stuck = _ingest(svc, kb.id, drain=False, text="报销：差旅费用在一个月内报销。" * 10)
    with svc.db.write() as session:
        session.execute(delete(Job).where(Job.document_id == stuck))
    orphan = svc.settings.files_dir / kb.id / "orphan"
    orphan.write_bytes(b"nobody's")
    _age(orphan)
    tmp = svc.settings.data_dir / "tmp" / "upload-stale"
    tmp.write_bytes(b"half")
    _age(tmp)
    yield svc


def test_dry_run_changes_nothing_on_disk_or_in_sql(drifted: Services, tmp_path: Path) -> None:
    svc = drifted
    before = _state(svc)
    # A fresh process's view, as `rag doctor --dry-run` has it: nothing loaded yet.
    fresh = Services.create(
        svc.settings,
        llm=LLMClient(svc.settings.llm, transport=httpx.MockTransport(FakeLLM().handler)),
    )
    try:
        found = fresh.doctor.examine(repair=False)
        assert {f.kind for f in found} == {
            "index_drift",
            "stuck_document",
            "orphan_file",
            "stale_upload",
        }
        assert not any(f.repaired for f in found)
        assert fresh.indexes.loaded() == [] and not fresh.indexes._dirty
    finally:
        fresh.close()
    assert _state(svc) == before
    # The same through the CLI, which exits 1 on unrepaired findings and writes nothing.
    from typer.testing import CliRunner

    from rag.cli.main import app

    env = {"RAG_DATA_DIR": str(svc.settings.data_dir), "RAG_EMBEDDING__MODEL": "fake:64"}
    if svc.settings.database_url:
        env["RAG_DATABASE_URL"] = svc.settings.database_url
    result = CliRunner().invoke(app, ["doctor", "--dry-run"], env=env)
    assert result.exit_code == 1, result.output
    assert "index_drift" in result.output and "rows it lacked" not in result.output
    assert _state(svc) == before
    # And a repair then fixes all of it.
    fixed = svc.doctor.examine(repair=True)
    assert all(f.repaired for f in fixed)
    _drain(svc)
    assert svc.doctor.examine(repair=True) == []


def test_no_false_index_drift_while_documents_are_ingested(svc: Services) -> None:
    """The check of a fresh process (snapshot + catch-up) against SQL that keeps changing:
    rows committed during the check are neither missing nor extra."""
    kb = svc.knowledge.create_kb("kb")
    _ingest(svc, kb.id, text="第一份。" * 50)
    svc.indexes.save_dirty()
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        n = 0
        try:
            while not stop.is_set() and n < 40:
                n += 1
                _ingest(svc, kb.id, text=f"第{n}份资料，内容各不相同。编号{n}。" * 30)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    checks = 0
    try:
        while thread.is_alive() and checks < 30:
            fresh = Services.create(
                svc.settings,
                llm=LLMClient(svc.settings.llm, transport=httpx.MockTransport(FakeLLM().handler)),
            )
            try:
                assert [
                    f for f in fresh.doctor.examine(repair=False) if f.kind == "index_drift"
                ] == []
                # The repairing path opens and reconciles: it must agree too.
                assert fresh.indexes.check(kb.id)["consistent"]
            finally:
                fresh.indexes._dirty.clear()  # do not race the writer's snapshots
                fresh.db.dispose()
            checks += 1
    finally:
        stop.set()
        thread.join(120)
    assert not errors and checks > 0


def test_reconcile_leaves_rows_committed_after_its_catch_up_to_the_next_one(
    svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic form of the false `index_drift … extra`: a chunk commits between the
    catch-up and the reconciliation of an index being opened."""
    kb = svc.knowledge.create_kb("kb")
    _ingest(svc, kb.id, text="第一份。" * 50)
    svc.indexes.save_dirty()
    doc_id = _ingest(svc, kb.id, drain=False, text="第二份。" * 50)
    store = svc.indexes.__class__(svc.settings.index_dir, svc.db)
    reconcile = store._reconcile

    def late_commit(*args: object) -> None:
        _drain(svc)  # the second document's chunks commit now
        reconcile(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_reconcile", late_commit)
    check = store.check(kb.id)
    assert check["consistent"], check
    assert _status(svc, doc_id) == "ready"
    monkeypatch.undo()
    assert store.check(kb.id)["consistent"]
    assert store.check(kb.id)["vectors"] == store.check(kb.id)["sql_chunks"]


def test_cli_lists_and_restores_quarantined_files(services: Services) -> None:
    from typer.testing import CliRunner

    from rag.cli.main import app

    kb = services.knowledge.create_kb("kb")
    orphan = services.settings.files_dir / kb.id / "left-behind"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"data")
    _age(orphan)
    env = {"RAG_DATA_DIR": str(services.settings.data_dir), "RAG_EMBEDDING__MODEL": "fake:64"}
    runner = CliRunner()
    repaired = runner.invoke(app, ["doctor"], env=env)
    assert repaired.exit_code == 0, repaired.output
    assert "orphan_file" in repaired.output and not orphan.exists()
    relative = str(orphan.relative_to(services.settings.data_dir))
    listed = runner.invoke(app, ["doctor", "--quarantined"], env=env)
    assert relative in listed.output and "1 file(s) in quarantine" in listed.output
    back = runner.invoke(app, ["doctor", "--restore", relative], env=env)
    assert back.exit_code == 0 and orphan.read_bytes() == b"data"
    again = runner.invoke(app, ["doctor", "--restore", relative], env=env)
    assert again.exit_code == 1
