from __future__ import annotations

from pathlib import Path

from ingest.upload import stage_upload
from rag.integrations.llama_index import KnowledgeBaseRetriever
from rag.services import Services
from tests.conftest import REPO


def test_llama_index_retriever_returns_cited_nodes(services: Services, tmp_path: Path) -> None:
    kb = services.knowledge.create_kb("handbook")
    path = REPO / "tests" / "fixtures" / "员工手册.md"
    with path.open("rb") as fh:
        staged = stage_upload(fh, path.name, services.settings.data_dir, 10**7)
    services.knowledge.add_document(kb.id, staged)
    worker = services.worker()
    while worker.run_once():
        pass
    nodes = KnowledgeBaseRetriever(services.retriever, kb.id, top_k=2).retrieve("年假有多少天？")
    assert len(nodes) == 2
    assert nodes[0].node.metadata["filename"] == "员工手册.md"
    assert nodes[0].node.metadata["page"] == 1
    assert nodes[0].score is not None and nodes[0].score >= nodes[1].score  # type: ignore[operator]
