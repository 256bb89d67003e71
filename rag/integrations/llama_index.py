"""A llama-index retriever over a knowledge base, for teams that compose llama-index pipelines.

The retriever is passed in; llama-index's global Settings are never touched.
"""

from __future__ import annotations

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from rag.retrieval.retriever import Retriever


class KnowledgeBaseRetriever(BaseRetriever):
    def __init__(self, retriever: Retriever, kb_id: str, top_k: int = 5) -> None:
        super().__init__()
        self._retriever = retriever
        self._kb_id = kb_id
        self._top_k = top_k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        passages = self._retriever.search(self._kb_id, query_bundle.query_str, self._top_k)
        return [
            NodeWithScore(
                node=TextNode(
                    id_=str(p.chunk_id),
                    text=p.text,
                    metadata={
                        "document_id": p.document_id,
                        "filename": p.filename,
                        "page": p.page,
                        "page_end": p.page_end,
                        "heading_path": list(p.heading_path),
                    },
                ),
                score=p.score,
            )
            for p in passages
        ]
