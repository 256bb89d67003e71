"""Real knowledge bases for the retrieval benchmarks: the fixture documents ingested with the
offline Chinese model (m3e-small) and Qwen's tokenizer, cached per chunking setting."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FILES = REPO / "tests" / "fixtures" / "files"
EVAL = REPO / "tests" / "fixtures" / "eval"
DOCUMENTS = (
    "debian-faq.zh-cn.txt",
    "debian-faq.zh-cn.docx",
    "maint-guide.zh-cn.pdf",
    "R-FAQ.pdf",
)


def real_services(data_dir: Path, chunk_tokens: int = 256, overlap_tokens: int = 32, **retrieval):  # type: ignore[no-untyped-def]
    from rag.core.config import Settings
    from rag.ml.offline_models import ensure_offline_models
    from rag.services import Services

    models = ensure_offline_models(REPO / ".models")
    settings = Settings(
        data_dir=data_dir,
        embedding={"model": str(models.m3e_small)},  # type: ignore[arg-type]
        tokenizer={"path": models.qwen_tiktoken},  # type: ignore[arg-type]
        chunking={"chunk_tokens": chunk_tokens, "overlap_tokens": overlap_tokens},  # type: ignore[arg-type]
        retrieval=retrieval,  # type: ignore[arg-type]
        ingest={"workers": 0},  # type: ignore[arg-type]
    )
    return Services.create(settings)


def ingest_documents(svc, names=DOCUMENTS) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """One knowledge base per document (named after it); returns name -> kb id."""
    from ingest.upload import stage_upload
    from rag.kb import knowledge

    kbs: dict[str, str] = {}
    with svc.db.read() as session:
        existing = {kb.name: kb.id for kb in knowledge.list_kbs(session)}
    for name in names:
        if name in existing:
            kbs[name] = existing[name]
            continue
        kb = svc.knowledge.create_kb(name)
        with (FILES / name).open("rb") as fh:
            staged = stage_upload(fh, name, svc.settings.data_dir, 10**8)
        svc.knowledge.add_document(kb.id, staged)
        kbs[name] = kb.id
    worker = svc.worker()
    while worker.run_once():
        pass
    svc.indexes.save_dirty()
    return kbs
