"""A set's documents ingested into a knowledge base of their own, through the project's own
upload, parse, chunk and embed pipeline (the worker runs in this process until the queue is
empty)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def ingest_files(svc: Any, kb_name: str, paths: Sequence[Path]) -> str:
    """Uploads `paths` into a new knowledge base `kb_name` of `svc` (rag.services.Services) and
    returns its id once every document is processed."""
    from ingest.upload import stage_upload

    kb_id: str = svc.knowledge.create_kb(kb_name).id
    for path in paths:
        with path.open("rb") as fh:
            staged = stage_upload(fh, path.name, svc.settings.data_dir, 10**8)
        svc.knowledge.add_document(kb_id, staged)
    worker = svc.worker()
    while worker.run_once():
        pass
    return kb_id
