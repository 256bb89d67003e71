"""Domain exceptions. The API layer maps each class to one HTTP status, once (api/errors.py).

RagError
├── ConfigError                 bad settings, found at startup
├── Unauthorized                401  no API key, or a wrong, expired or revoked one
├── Forbidden                   403  the key lacks the scope the route needs
├── RateLimited                 429  a per-key limit is spent: Retry-After says when to retry
├── NotFound                    404  unknown knowledge base, document, job
├── Conflict                    409  name already taken, state does not allow it
│   └── NoReadyDocuments        409  asked a knowledge base with no ready document (no LLM call)
├── InvalidInput                400/422  a request that cannot be served as asked
│   ├── UnsupportedMediaType    415  file type we do not parse
│   └── PayloadTooLarge         413  upload over the size limit
├── IngestionError              a document failed to parse/chunk/embed (stored as its error)
├── IndexUnusable               the FAISS cache is unusable (rebuilt from SQL)
└── LLMError                    the OpenAI-compatible server failed us
    ├── LLMUnavailable          503  connection refused / DNS / upstream 429, 502-504
    │   └── LLMCircuitOpen      503  too many failures in a row: not tried until Retry-After
    ├── LLMTimeout              504  no answer in time
    └── LLMBadResponse          502  answered, but not with something we can use
        ├── LLMContextLengthExceeded  502  prompt over the served context (repacked once first)
        └── InvalidStructuredOutput   422  JSON that still fails the requested schema after
                                           RAG_LLM__JSON_RETRIES retries
"""

from __future__ import annotations


class RagError(Exception):
    """Base class; `str(exc)` is a sentence a user can act on."""

    status_code = 500
    code = "internal_error"


class ConfigError(RagError):
    code = "config_error"


class Unauthorized(RagError):
    status_code = 401
    code = "unauthorized"


class Forbidden(RagError):
    status_code = 403
    code = "forbidden"


class RateLimited(RagError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotFound(RagError):
    status_code = 404
    code = "not_found"


class Conflict(RagError):
    status_code = 409
    code = "conflict"


class NoReadyDocuments(Conflict):
    """A question to a knowledge base with nothing ready to answer from: refused before any LLM
    call. `counts` holds its documents by status (queued, processing, failed)."""

    code = "no_ready_documents"

    def __init__(self, message: str, *, counts: dict[str, int] | None = None) -> None:
        super().__init__(message)
        self.counts = counts or {}


class InvalidInput(RagError):
    status_code = 422
    code = "invalid_input"


class UnsupportedMediaType(InvalidInput):
    status_code = 415
    code = "unsupported_media_type"


class PayloadTooLarge(InvalidInput):
    status_code = 413
    code = "payload_too_large"


class IngestionError(RagError):
    code = "ingestion_failed"


class IndexUnusable(RagError):
    code = "index_error"


class IndexUnavailable(RagError):
    """The vector database (RAG_INDEX__BACKEND=milvus) did not answer: retry later. Not an
    IndexUnusable, which makes the store rebuild the index from SQL."""

    status_code = 503
    code = "index_unavailable"


class LLMError(RagError):
    status_code = 502
    code = "llm_error"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LLMUnavailable(LLMError):
    status_code = 503
    code = "llm_unavailable"


class LLMTimeout(LLMError):
    status_code = 504
    code = "llm_timeout"


class LLMBadResponse(LLMError):
    status_code = 502
    code = "llm_bad_response"


class LLMCircuitOpen(LLMUnavailable):
    code = "llm_circuit_open"


class LLMContextLengthExceeded(LLMBadResponse):
    """The server refused the prompt as longer than its context; carries what it reported."""

    code = "llm_context_length_exceeded"

    def __init__(
        self,
        message: str,
        *,
        max_context: int | None = None,
        prompt_tokens: int | None = None,
    ) -> None:
        super().__init__(message)
        self.max_context = max_context
        self.prompt_tokens = prompt_tokens


class InvalidStructuredOutput(LLMBadResponse):
    """The model's JSON fails the request's schema; `retries`: how often it was asked again.
    422, not 502: the server answered, but not in a shape this request's schema accepts."""

    status_code = 422
    code = "invalid_structured_output"

    def __init__(self, message: str, *, retries: int = 0) -> None:
        super().__init__(message)
        self.retries = retries
