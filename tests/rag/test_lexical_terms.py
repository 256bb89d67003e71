"""Per-knowledge-base user dictionaries: the BM25 index follows KnowledgeBase.lexical_terms in
every process that shares the database (issue 18)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import update

from ingest.upload import stage_upload
from rag.index.analyzer import AnalyzerOptions
from rag.index.lexical import MANIFEST
from rag.services import Services
from rag.store.models import KnowledgeBase

TEXT = "数据湖仓的容量规划。\n\n湖边的仓库不是数据湖仓。\n\n其他内容与容量无关。"


def _add(svc: Services, kb_id: str, name: str, text: str) -> None:
    path = svc.settings.data_dir / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    with path.open("rb") as fh:
        staged = stage_upload(fh, name, svc.settings.data_dir, 10**7)
    svc.knowledge.add_document(kb_id, staged)
    worker = svc.worker()
    while worker.run_once():
        pass


def _set_terms(svc: Services, kb_id: str, terms: list[str]) -> None:
    with svc.db.write() as session:
        session.execute(
            update(KnowledgeBase).where(KnowledgeBase.id == kb_id).values(lexical_terms=terms)
        )


def _vocab(svc: Services, kb_id: str) -> set[str]:
    return set(svc.indexes.lexical(kb_id)._vocab)


def test_changed_terms_rebuild_the_index_in_every_replica(db_services: Services) -> None:
    svc = db_services
    kb = svc.knowledge.create_kb("kb").id
    _add(svc, kb, "lake.txt", TEXT)
    replica = Services.create(svc.settings)
    try:
        assert "数据湖仓" not in _vocab(svc, kb) and "数据湖仓" not in _vocab(replica, kb)
        _set_terms(svc, kb, ["數據湖倉"])  # stored as given; folded by the store
        assert svc.indexes.lexical_terms_changed(kb) is True
        assert svc.indexes.lexical_terms_changed(kb) is False  # already current
        assert "数据湖仓" in _vocab(svc, kb)
        manifest = json.loads((svc.indexes.directory(kb) / MANIFEST).read_text())
        assert manifest["analyzer"] == AnalyzerOptions(terms=("数据湖仓",)).fingerprint
        # The replica notices on its next search: the terms are read with the live version.
        assert "数据湖仓" in _vocab(replica, kb)
        hits = replica.retriever.search(kb, "数据湖仓", top_k=3, mode="lexical")
        assert hits and "数据湖仓" in hits[0].text
        _set_terms(svc, kb, [])
        replica.indexes.sync()  # ... or on its next sync
        assert "数据湖仓" not in set(replica.indexes._lexical[(kb, 1)]._vocab)
    finally:
        replica.close()


def test_a_restart_keeps_the_snapshot_made_with_the_same_terms(
    db_services: Services, tmp_path: Path
) -> None:
    svc = db_services
    kb = svc.knowledge.create_kb("kb").id
    _add(svc, kb, "lake.txt", TEXT)
    _set_terms(svc, kb, ["数据湖仓"])
    svc.indexes.lexical_terms_changed(kb)
    again = Services.create(svc.settings)
    try:
        lexical = again.indexes.lexical(kb)
        assert lexical.analyzer.options.terms == ("数据湖仓",)
        assert (((kb, 1), "lexical")) not in again.indexes._dirty  # loaded, not rebuilt
    finally:
        again.close()


def test_chunks_carry_their_heading_and_title_fields(db_services: Services) -> None:
    svc = db_services
    kb = svc.knowledge.create_kb("kb").id
    _add(svc, kb, "防火墙手册.md", "# 端口设置\n\n打开 8080。\n\n# 日志\n\n日志在 /var/log 下。")
    vocab = _vocab(svc, kb)
    assert {"h:2:端口", "t:2:防火", "8080"} <= vocab  # heading, title (bigrams), body
