"""A job carries the id of the request that queued it, and the worker's log records for the job
carry that id too: in the pipelined worker's threads and in the plain worker, for a document
that is ingested and for one that fails."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from ingest.upload import stage_upload
from rag.core import log_setup, request_context
from rag.services import Services
from rag.store.models import Document, Job
from tests.conftest import wait_for


def _add(svc: Services, kb_id: str, name: str, data: bytes, request_id: str | None) -> str:
    path = svc.settings.data_dir / "incoming" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    with path.open("rb") as fh, request_context.bound(request_id):
        staged = stage_upload(fh, name, svc.settings.data_dir, 10**7)
        return svc.knowledge.add_document(kb_id, staged)[0].id


def _run_pipelined(svc: Services) -> None:
    worker = svc.pipelined_worker(threads=2)
    worker.start()
    try:
        wait_for(lambda: _settled(svc))
    finally:
        worker.stop()


def _run_plain(svc: Services) -> None:
    worker = svc.worker()
    while worker.run_once():
        pass


def _settled(svc: Services) -> bool:
    with svc.db.read() as session:
        statuses = session.scalars(select(Document.status)).all()
    return all(s in ("ready", "failed") for s in statuses)


@pytest.mark.parametrize("run", [_run_pipelined, _run_plain], ids=["pipelined", "plain"])
def test_worker_logs_carry_the_id_of_the_request_that_queued_the_job(
    services: Services, caplog: pytest.LogCaptureFixture, run: object
) -> None:
    kb = services.knowledge.create_kb("kb").id
    good = _add(services, kb, "good.txt", "年假十天。".encode() * 40, "upload-good")
    bad = _add(services, kb, "bad.pdf", b"%PDF-1.4\n" + b"x" * 300, "upload-bad")
    quiet = _add(services, kb, "quiet.txt", "病假五天。".encode() * 40, None)
    with services.db.read() as session:
        queued = {j.document_id: j.request_id for j in session.scalars(select(Job))}
    assert queued == {good: "upload-good", bad: "upload-bad", quiet: None}

    log_setup.install_record_factory()  # as the API and `rag worker` do at start
    caplog.set_level(logging.INFO, logger="ingest")
    assert callable(run)
    run(services)

    def tagged(doc_id: str) -> set[str | None]:
        return {
            getattr(r, "request_id", None)
            for r in caplog.records
            if r.getMessage().startswith(f"document {doc_id}:")
        }

    assert tagged(good) == {"upload-good"}
    assert tagged(bad) == {"upload-bad"}
    assert tagged(quiet) == {None}
    assert request_context.current() is None  # nothing leaked into the test's own context
