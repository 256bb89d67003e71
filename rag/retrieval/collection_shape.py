"""Whether a knowledge base is a collection of many short documents, where ranking documents
rather than chunks (rag/retrieval/doc_aggregate.py) pays: each document is one answer there,
and a second chunk of a document already ranked only pushes the next document down.
`RAG_RETRIEVAL__DOC_AGGREGATE=auto` (the default) ranks such knowledge bases by document.
"""

from __future__ import annotations

# Measured (docs/retrieval.md, "One hit per document"): per-document ranking lifted hybrid MRR
# on both man-page sets (about 146 documents of 5 chunks on average) and cost much on the sets of
# a few long documents (ISO code tables 0.82 -> 0.69, KiCad 0.86 -> 0.82: a document holds many
# answers there). The thresholds sit far from both: 4 and 7 documents of 23 and 66 chunks.
MIN_DOCUMENTS = 20
MAX_CHUNKS_PER_DOCUMENT = 10.0  # on average


def many_short_documents(documents: int, chunks: int) -> bool:
    """At least MIN_DOCUMENTS ready documents of at most MAX_CHUNKS_PER_DOCUMENT chunks each,
    on average."""
    return documents >= MIN_DOCUMENTS and chunks <= MAX_CHUNKS_PER_DOCUMENT * documents
