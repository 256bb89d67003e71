"""A small typed Python client for the kbqa HTTP API, needing only httpx and httpx-sse.

    with Client("http://127.0.0.1:8080", api_key="...") as kbqa:
        kbqa.create_kb("handbook")
        doc = kbqa.upload("handbook", "员工手册.pdf", metadata={"team": "hr"})
        kbqa.wait_until_ready("handbook", doc.id)
        print(kbqa.ask("handbook", "年假有多少天？").answer)

Knowledge bases by id or name; `AsyncClient` has the same methods as coroutines; errors
raise `ApiError` (code, message, fields at fault) or `DocumentFailed`."""

# Only httpx, httpx-sse and the standard library: the client installs and imports on machines
# that do not run the service (no FastAPI, torch or SQLAlchemy); tests/test_packaging.py checks.
from rag.client._client import Aggregate, AsyncClient, Client, Priority, SearchMode
from rag.client._models import (
    Answer,
    ApiError,
    Calibration,
    Chunk,
    ChunkPage,
    Citation,
    CitationsEvent,
    Conversation,
    DeltaEvent,
    Document,
    DocumentFailed,
    DoneEvent,
    ErrorDetail,
    ErrorEvent,
    IndexVersion,
    Job,
    KnowledgeBase,
    LexiconChange,
    Message,
    PageImage,
    Passage,
    StreamEvent,
    TermSuggestion,
)

__all__ = [
    "Aggregate",
    "Answer",
    "ApiError",
    "AsyncClient",
    "Calibration",
    "Chunk",
    "ChunkPage",
    "Citation",
    "CitationsEvent",
    "Client",
    "Conversation",
    "DeltaEvent",
    "Document",
    "DocumentFailed",
    "DoneEvent",
    "ErrorDetail",
    "ErrorEvent",
    "IndexVersion",
    "Job",
    "KnowledgeBase",
    "LexiconChange",
    "Message",
    "PageImage",
    "Passage",
    "Priority",
    "SearchMode",
    "StreamEvent",
    "TermSuggestion",
]
