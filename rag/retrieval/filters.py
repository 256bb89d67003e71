"""Search filters: by document id, filename pattern and upload metadata.

A filter is resolved to the set of allowed chunk ids *before* ranking, and both indexes rank
only inside that set (FAISS through an IDSelector, BM25 through its weight mask), so top-k is
the top-k of the filtered set rather than whatever survived a post-filter. Documents are
matched in Python (a knowledge base has far fewer documents than chunks), which behaves the
same on SQLite and PostgreSQL whatever JSON the metadata holds; only the chunk ids of the
matching documents come from SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from rag.core.errors import InvalidInput
from rag.store.models import Chunk, Document, DocumentStatus

_KEYS = {"document_ids", "filename", "metadata"}
_BATCH = 500


@dataclass(frozen=True)
class Filters:
    document_ids: frozenset[str] | None = None
    # A shell pattern (* ? [..]) matched case-insensitively against the uploaded file name.
    filename: str | None = None
    # Every key must be present in the document's metadata with an equal value.
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Filters | Mapping[str, Any] | None) -> Filters | None:
        """Validate a request's `filters` object; None or {} means no filter."""
        if raw is None or isinstance(raw, Filters):
            return raw
        if not isinstance(raw, Mapping):
            raise InvalidInput("filters must be an object")
        unknown = set(raw) - _KEYS
        if unknown:
            raise InvalidInput(
                f"unknown filter(s) {sorted(unknown)}; use document_ids, filename, metadata"
            )
        ids = raw.get("document_ids")
        if ids is not None and (
            not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)
        ):
            raise InvalidInput("filters.document_ids must be a list of document ids")
        pattern = raw.get("filename")
        if pattern is not None and (not isinstance(pattern, str) or not pattern):
            raise InvalidInput("filters.filename must be a non-empty pattern such as '*.pdf'")
        metadata = raw.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise InvalidInput("filters.metadata must be an object of key: value")
        if ids is None and pattern is None and not metadata:
            return None
        return cls(frozenset(ids) if ids is not None else None, pattern, dict(metadata))

    def matches(self, doc: Document) -> bool:
        if self.document_ids is not None and doc.id not in self.document_ids:
            return False
        if self.filename is not None and not fnmatchcase(
            doc.filename.lower(), self.filename.lower()
        ):
            return False
        meta = doc.user_metadata or {}
        return all(key in meta and meta[key] == value for key, value in self.metadata.items())

    def allowed_chunk_ids(self, session: Session, kb_id: str) -> np.ndarray:
        """Sorted ids of the chunks the filter allows."""
        stmt = select(Document).where(
            Document.kb_id == kb_id, Document.status == DocumentStatus.ready
        )
        if self.document_ids is not None:
            stmt = stmt.where(Document.id.in_(sorted(self.document_ids)))
        docs = [d.id for d in session.execute(stmt).scalars() if self.matches(d)]
        parts = []
        for start in range(0, len(docs), _BATCH):
            part = docs[start : start + _BATCH]
            parts.append(
                np.fromiter(
                    session.execute(select(Chunk.id).where(Chunk.document_id.in_(part))).scalars(),
                    dtype=np.int64,
                )
            )
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
