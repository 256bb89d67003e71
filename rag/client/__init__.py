"""A small typed Python client for the kbqa HTTP API.

It needs only httpx, httpx-sse and the standard library, so it can be installed on machines
that do not run the service (no FastAPI, torch or SQLAlchemy is imported):

    from rag.client import Client

    with Client("http://127.0.0.1:8080", api_key="...") as kbqa:
        kb = kbqa.create_kb("handbook")
        doc = kbqa.upload(kb.id, "员工手册.pdf", metadata={"team": "hr"})
        kbqa.wait_until_ready(kb.id, doc.id)
        print(kbqa.ask(kb.id, "年假有多少天？").answer)

`Client` is synchronous, `AsyncClient` the same methods as coroutines; both build their
requests with the same code (`_Requests`) and differ only in how they send them.

Errors: every non-2xx answer raises `ApiError` with the HTTP status and the `code` and
`message` of the API's error envelope `{"error": {"code", "message"}}`; on 429 and 503
`retry_after` holds the seconds from the `Retry-After` header. A document that fails to ingest
raises `DocumentFailed` from `wait_until_ready`.
"""

from rag.client._client import AsyncClient, Client
from rag.client._models import (
    Answer,
    ApiError,
    Citation,
    CitationsEvent,
    Conversation,
    DeltaEvent,
    Document,
    DocumentFailed,
    DoneEvent,
    ErrorEvent,
    Job,
    KnowledgeBase,
    Message,
    Passage,
    StreamEvent,
)

__all__ = [
    "Answer",
    "ApiError",
    "AsyncClient",
    "Citation",
    "CitationsEvent",
    "Client",
    "Conversation",
    "DeltaEvent",
    "Document",
    "DocumentFailed",
    "DoneEvent",
    "ErrorEvent",
    "Job",
    "KnowledgeBase",
    "Message",
    "Passage",
    "StreamEvent",
]
