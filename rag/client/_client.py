"""The synchronous and asynchronous clients; import them from `rag.client`."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Generic, Literal, Self, TypeVar
from urllib.parse import quote

import httpx

from rag.client._models import (
    Answer,
    ApiError,
    Calibration,
    Chunk,
    ChunkPage,
    Conversation,
    Document,
    DocumentFailed,
    IndexVersion,
    Job,
    KnowledgeBase,
    LexiconChange,
    PageImage,
    Passage,
    StreamEvent,
    TermSuggestion,
    _astream_events,
    _stream_events,
)

T = TypeVar("T")
Upload = str | os.PathLike[str] | bytes | IO[bytes]
SearchMode = Literal["dense", "lexical", "hybrid"]
Aggregate = Literal["chunk", "document", "auto"]
# interactive: a person waits for it (the default); batch: bulk loads, ingested after them.
Priority = Literal["interactive", "batch"]


# --------------------------------------------------------------------------- requests


@dataclass
class _Call(Generic[T]):
    """One HTTP request and how to read its answer; built once, sent by either client."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    headers: dict[str, str] | None = None
    upload: tuple[str, Upload] | None = None  # (filename, source) for multipart "file"

    def request_kwargs(self, file: IO[bytes] | bytes | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": self.headers}
        if self.json is not None:
            kwargs["json"] = self.json
        if self.params:
            kwargs["params"] = {k: v for k, v in self.params.items() if v is not None}
        if self.data:
            kwargs["data"] = self.data
        if self.upload is not None:
            kwargs["files"] = {"file": (self.upload[0], file)}
        return kwargs


def _json(response: httpx.Response) -> Any:
    return response.json()


def _nothing(_response: httpx.Response) -> None:
    return None


def _drop_none(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _ask_body(question: str, **options: Any) -> dict[str, Any]:
    return {"question": question, **_drop_none(**options)}


def _kb(r: httpx.Response) -> KnowledgeBase:
    return KnowledgeBase.from_json(r.json())


def _kbs(r: httpx.Response) -> list[KnowledgeBase]:
    return [KnowledgeBase.from_json(k) for k in r.json()["knowledge_bases"]]


def _doc(r: httpx.Response) -> Document:
    return Document.from_json(r.json())


def _doc_versions(r: httpx.Response) -> list[Document]:
    return [Document.from_json(d) for d in _json(r)["versions"]]


def _docs(r: httpx.Response) -> list[Document]:
    return [Document.from_json(d) for d in r.json()["documents"]]


def _passages(r: httpx.Response) -> list[Passage]:
    return [Passage.from_json(p) for p in r.json()["results"]]


def _answer(r: httpx.Response) -> Answer:
    return Answer.from_json(r.json())


def _conversation(r: httpx.Response) -> Conversation:
    return Conversation.from_json(r.json())


def _conversations(r: httpx.Response) -> list[Conversation]:
    return [Conversation.from_json(c) for c in r.json()["conversations"]]


def _job(r: httpx.Response) -> Job:
    return Job.from_json(r.json())


def _jobs(r: httpx.Response) -> list[Job]:
    return [Job.from_json(j) for j in r.json()["jobs"]]


def _versions(r: httpx.Response) -> list[IndexVersion]:
    return [IndexVersion.from_json(v) for v in r.json()["versions"]]


def _pruned(r: httpx.Response) -> list[int]:
    return [int(n) for n in r.json()["pruned"]]


def _terms(r: httpx.Response) -> list[str]:
    return [str(t) for t in r.json()["terms"]]


def _lexicon_change(r: httpx.Response) -> LexiconChange:
    return LexiconChange.from_json(r.json())


def _suggestions(r: httpx.Response) -> list[TermSuggestion]:
    return [TermSuggestion.from_json(s) for s in r.json()["suggestions"]]


def _calibration(r: httpx.Response) -> Calibration:
    return Calibration.from_json(r.json())


def _chunk(r: httpx.Response) -> Chunk:
    return Chunk.from_json(r.json())


def _chunk_page(r: httpx.Response) -> ChunkPage:
    return ChunkPage.from_json(r.json())


def _bytes(r: httpx.Response) -> bytes:
    return r.content


def _page_image(r: httpx.Response) -> PageImage:
    return PageImage(r.content, int(r.headers.get("x-highlight-count", "0")))


def _segment(value: str) -> str:
    """One path segment: a knowledge base's name may hold any character, "/" and "?" too."""
    return quote(value, safe="")


class _Requests:
    """Builds every call; the two clients inherit it and add only the sending."""

    @staticmethod
    def _kb_path(kb: str, rest: str = "") -> str:
        return f"/v1/knowledge-bases/{_segment(kb)}{rest}"

    def _create_kb(self, name: str, description: str) -> _Call[KnowledgeBase]:
        body = {"name": name, "description": description}
        return _Call("POST", "/v1/knowledge-bases", _kb, json=body)

    def _list_kbs(self) -> _Call[list[KnowledgeBase]]:
        return _Call("GET", "/v1/knowledge-bases", _kbs)

    def _get_kb(self, kb_id: str) -> _Call[KnowledgeBase]:
        return _Call("GET", self._kb_path(kb_id), _kb)

    def _delete_kb(self, kb_id: str) -> _Call[None]:
        return _Call("DELETE", self._kb_path(kb_id), _nothing)

    def _upload(
        self,
        kb_id: str,
        source: Upload,
        filename: str | None,
        metadata: Mapping[str, Any] | None,
        idempotency_key: str | None,
        priority: Priority | None = None,
        external_id: str | None = None,
    ) -> _Call[Document]:
        if filename is None:
            if isinstance(source, str | os.PathLike):
                filename = Path(source).name
            elif not isinstance(source, bytes) and isinstance(getattr(source, "name", None), str):
                filename = Path(source.name).name
            else:
                raise ValueError("upload: pass filename= with bytes or an unnamed stream")
        data = {"metadata": json.dumps(dict(metadata), ensure_ascii=False)} if metadata else {}
        if priority is not None:
            data["priority"] = priority
        if external_id is not None:
            data["external_id"] = external_id
        return _Call(
            "POST",
            self._kb_path(kb_id, "/documents"),
            _doc,
            data=data or None,
            headers={"Idempotency-Key": idempotency_key} if idempotency_key else None,
            upload=(filename, source),
        )

    def _list_documents(
        self,
        kb_id: str,
        status: str | None,
        limit: int,
        offset: int,
        external_id: str | None = None,
        all_versions: bool = False,
    ) -> _Call[list[Document]]:
        params = _drop_none(
            status=status,
            limit=limit,
            offset=offset,
            external_id=external_id,
            all_versions="true" if all_versions else None,
        )
        return _Call("GET", self._kb_path(kb_id, "/documents"), _docs, params=params)

    def _document_versions(self, kb_id: str, doc_id: str) -> _Call[list[Document]]:
        return _Call("GET", self._doc_path(kb_id, doc_id, "/versions"), _doc_versions)

    def _restore_document(self, kb_id: str, doc_id: str, version: int | None) -> _Call[Document]:
        path = self._doc_path(kb_id, doc_id, "/restore")
        return _Call("POST", path, _doc, json=_drop_none(version=version))

    def _sync(
        self,
        kb_id: str,
        folder: str | None,
        urls: Sequence[str] | None,
        interval_s: float | None,
        delete_missing: bool,
    ) -> _Call[Job]:
        body = _drop_none(
            folder=folder,
            urls=list(urls) if urls is not None else None,
            interval_s=interval_s,
            delete_missing=delete_missing,
        )
        return _Call("POST", self._kb_path(kb_id, "/sync"), _job, json=body)

    def _get_document(self, kb_id: str, doc_id: str) -> _Call[Document]:
        return _Call("GET", self._kb_path(kb_id, f"/documents/{_segment(doc_id)}"), _doc)

    def _delete_document(self, kb_id: str, doc_id: str) -> _Call[None]:
        return _Call("DELETE", self._kb_path(kb_id, f"/documents/{_segment(doc_id)}"), _nothing)

    def _doc_path(self, kb_id: str, doc_id: str, rest: str) -> str:
        return self._kb_path(kb_id, f"/documents/{_segment(doc_id)}{rest}")

    def _list_chunks(self, kb_id: str, doc_id: str, offset: int, limit: int) -> _Call[ChunkPage]:
        params = {"offset": offset, "limit": limit}
        return _Call("GET", self._doc_path(kb_id, doc_id, "/chunks"), _chunk_page, params=params)

    def _set_chunk_disabled(
        self, kb_id: str, doc_id: str, chunk_id: int, disabled: bool
    ) -> _Call[Chunk]:
        path = self._doc_path(kb_id, doc_id, f"/chunks/{int(chunk_id)}")
        return _Call("PATCH", path, _chunk, json={"disabled": disabled})

    def _download(self, kb_id: str, doc_id: str) -> _Call[bytes]:
        return _Call("GET", self._doc_path(kb_id, doc_id, "/file"), _bytes)

    def _render_page(
        self, kb_id: str, doc_id: str, page: int, chunk_id: int | None, scale: float | None
    ) -> _Call[PageImage]:
        path = self._doc_path(kb_id, doc_id, f"/pages/{int(page)}.png")
        params = {"chunk_id": chunk_id, "scale": scale}
        return _Call("GET", path, _page_image, params=params)

    def _search(
        self,
        kb_id: str,
        query: str,
        top_k: int | None,
        mode: SearchMode | None,
        filters: Mapping[str, Any] | None,
        rerank: bool | None,
        aggregate: Aggregate | None = None,
    ) -> _Call[list[Passage]]:
        body = {
            "query": query,
            **_drop_none(top_k=top_k, mode=mode, filters=filters, aggregate=aggregate),
        }
        if rerank is not None:
            body["rerank"] = rerank
        return _Call("POST", self._kb_path(kb_id, "/search"), _passages, json=body)

    def _ask(self, kb_id: str, question: str, options: dict[str, Any]) -> _Call[Answer]:
        return _Call(
            "POST", self._kb_path(kb_id, "/ask"), _answer, json=_ask_body(question, **options)
        )

    def _ask_stream(self, kb_id: str, question: str, options: dict[str, Any]) -> _Call[None]:
        body = _ask_body(question, **options) | {"stream": True}
        headers = {"Accept": "text/event-stream"}
        return _Call("POST", self._kb_path(kb_id, "/ask"), _nothing, json=body, headers=headers)

    def _create_conversation(self, kb_id: str, title: str) -> _Call[Conversation]:
        body = {"kb_id": kb_id, "title": title}
        return _Call("POST", "/v1/conversations", _conversation, json=body)

    def _list_conversations(self, kb_id: str | None, limit: int) -> _Call[list[Conversation]]:
        params = {"kb_id": kb_id, "limit": limit}
        return _Call("GET", "/v1/conversations", _conversations, params=params)

    def _get_conversation(self, conversation_id: str) -> _Call[Conversation]:
        return _Call("GET", f"/v1/conversations/{_segment(conversation_id)}", _conversation)

    def _delete_conversation(self, conversation_id: str) -> _Call[None]:
        return _Call("DELETE", f"/v1/conversations/{_segment(conversation_id)}", _nothing)

    def _list_jobs(
        self, status: str | None, kind: str | None, kb_id: str | None, limit: int
    ) -> _Call[list[Job]]:
        params = {"status": status, "kind": kind, "kb_id": kb_id, "limit": limit}
        return _Call("GET", "/v1/jobs", _jobs, params=params)

    def _get_job(self, job_id: str) -> _Call[Job]:
        return _Call("GET", f"/v1/jobs/{_segment(job_id)}", _job)

    def _cancel_job(self, job_id: str) -> _Call[Job]:
        return _Call("POST", f"/v1/jobs/{_segment(job_id)}/cancel", _job)

    def _reindex(
        self,
        kb_id: str,
        embedding_model: str | None,
        chunk_tokens: int | None,
        overlap_tokens: int | None,
        idempotency_key: str | None,
    ) -> _Call[Job]:
        body = _drop_none(
            embedding_model=embedding_model,
            chunk_tokens=chunk_tokens,
            overlap_tokens=overlap_tokens,
        )
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return _Call("POST", self._kb_path(kb_id, "/reindex"), _job, json=body, headers=headers)

    def _rebuild_index(self, kb_id: str) -> _Call[Job]:
        return _Call("POST", self._kb_path(kb_id, "/rebuild-index"), _job)

    def _list_versions(self, kb_id: str) -> _Call[list[IndexVersion]]:
        return _Call("GET", self._kb_path(kb_id, "/versions"), _versions)

    def _rollback(self, kb_id: str) -> _Call[Job]:
        return _Call("POST", self._kb_path(kb_id, "/versions/rollback"), _job)

    def _prune_versions(self, kb_id: str, keep: int | None) -> _Call[list[int]]:
        path = self._kb_path(kb_id, "/versions/prune")
        return _Call("POST", path, _pruned, params={"keep": keep})

    def _evaluate(
        self,
        kb_id: str,
        golden: Sequence[Mapping[str, Any]] | None,
        path: str | None,
        modes: list[str] | None,
        rerank: bool | None,
    ) -> _Call[Job]:
        body = _drop_none(
            golden=[dict(g) for g in golden] if golden is not None else None,
            path=path,
            modes=modes,
            rerank=rerank,
        )
        return _Call("POST", self._kb_path(kb_id, "/eval"), _job, json=body)

    def _update_kb(self, kb_id: str, changes: dict[str, Any]) -> _Call[KnowledgeBase]:
        return _Call("PATCH", self._kb_path(kb_id), _kb, json=changes)

    def _get_lexicon(self, kb_id: str) -> _Call[list[str]]:
        return _Call("GET", self._kb_path(kb_id, "/lexicon"), _terms)

    def _set_lexicon(self, kb_id: str, terms: Sequence[str]) -> _Call[LexiconChange]:
        body = {"terms": list(terms)}
        return _Call("PUT", self._kb_path(kb_id, "/lexicon"), _lexicon_change, json=body)

    def _change_lexicon(
        self, kb_id: str, add: Sequence[str], remove: Sequence[str]
    ) -> _Call[LexiconChange]:
        body = {"add": list(add), "remove": list(remove)}
        return _Call("PATCH", self._kb_path(kb_id, "/lexicon"), _lexicon_change, json=body)

    def _suggest_terms(
        self, kb_id: str, limit: int, min_count: int | None
    ) -> _Call[list[TermSuggestion]]:
        body = _drop_none(limit=limit, min_count=min_count)
        path = self._kb_path(kb_id, "/lexicon/suggestions")
        return _Call("POST", path, _suggestions, json=body)

    def _calibrate(
        self,
        kb_id: str,
        golden: Sequence[Mapping[str, Any]] | None,
        negatives: Sequence[str] | None,
        apply: bool,
    ) -> _Call[Calibration]:
        body = _drop_none(
            golden=[dict(g) for g in golden] if golden is not None else None,
            negatives=list(negatives) if negatives is not None else None,
            apply=apply,
        )
        path = self._kb_path(kb_id, "/relevance/calibrate")
        return _Call("POST", path, _calibration, json=body)

    def _health(self) -> _Call[dict[str, Any]]:
        return _Call("GET", "/healthz", _json)


def _headers(api_key: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = {"User-Agent": "kbqa-client/0.1", **(extra or {})}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _check(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise ApiError.from_response(response)
    return response


_TERMINAL_DOC = frozenset({"ready", "failed"})
_TERMINAL_JOB = frozenset({"succeeded", "failed", "cancelled"})


def _options(**values: Any) -> dict[str, Any]:
    """Options of ask/ask_stream, named as the API names them (None: the server's default)."""
    return values


# --------------------------------------------------------------------------- sync


class Client(_Requests):
    """The synchronous client. `base_url` is the service root (http://host:8080);
    `api_key` is sent as a Bearer token; `timeout` in seconds (or an httpx.Timeout).
    Every `kb_id` argument takes a knowledge base's id or its name."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 60.0,
        *,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=_headers(api_key, headers),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        return str(self._http.base_url).rstrip("/")

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call[T]) -> T:
        if call.upload is None:
            response = self._http.request(call.method, call.path, **call.request_kwargs())
        else:
            source = call.upload[1]
            if isinstance(source, str | os.PathLike):
                with open(source, "rb") as fh:
                    kwargs = call.request_kwargs(fh)
                    response = self._http.request(call.method, call.path, **kwargs)
            else:
                response = self._http.request(call.method, call.path, **call.request_kwargs(source))
        return call.parse(_check(response))

    # knowledge bases
    def create_kb(self, name: str, description: str = "") -> KnowledgeBase:
        return self._send(self._create_kb(name, description))

    def list_kbs(self) -> list[KnowledgeBase]:
        return self._send(self._list_kbs())

    def get_kb(self, kb_id: str) -> KnowledgeBase:
        return self._send(self._get_kb(kb_id))

    def delete_kb(self, kb_id: str) -> None:
        self._send(self._delete_kb(kb_id))

    # documents
    def upload(
        self,
        kb_id: str,
        path_or_bytes: Upload,
        filename: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        priority: Priority | None = None,
        external_id: str | None = None,
    ) -> Document:
        """Upload a file (path, bytes or binary stream); the document comes back queued, or
        the existing one with `duplicate=True` when the same bytes are already there.
        `priority="batch"` for bulk loads: they are ingested after interactive uploads.
        Under the key of an existing document (`external_id`, else the filename) it is a new
        version, which replaces the current one once ready."""
        call = self._upload(
            kb_id, path_or_bytes, filename, metadata, idempotency_key, priority, external_id
        )
        return self._send(call)

    def list_documents(
        self,
        kb_id: str,
        status: str | None = None,
        limit: int = 1000,
        offset: int = 0,
        *,
        external_id: str | None = None,
        all_versions: bool = False,
    ) -> list[Document]:
        """The current version of each document (`all_versions`: every version)."""
        call = self._list_documents(kb_id, status, limit, offset, external_id, all_versions)
        return self._send(call)

    def document_versions(self, kb_id: str, doc_id: str) -> list[Document]:
        """Every version of the document's key, newest first."""
        return self._send(self._document_versions(kb_id, doc_id))

    def restore_document(self, kb_id: str, doc_id: str, version: int | None = None) -> Document:
        """Queue an older version (default: the newest superseded one) as the newest version;
        it replaces the current one once ready."""
        return self._send(self._restore_document(kb_id, doc_id, version))

    def sync(
        self,
        kb_id: str,
        *,
        folder: str | None = None,
        urls: Sequence[str] | None = None,
        interval_s: float | None = None,
        delete_missing: bool = True,
    ) -> Job:
        """Queue a sync job keeping the knowledge base equal to a server folder or a list of
        URLs (admin); with `interval_s` it runs again after each run until cancelled."""
        return self._send(self._sync(kb_id, folder, urls, interval_s, delete_missing))

    def get_document(self, kb_id: str, doc_id: str) -> Document:
        return self._send(self._get_document(kb_id, doc_id))

    def delete_document(self, kb_id: str, doc_id: str) -> None:
        self._send(self._delete_document(kb_id, doc_id))

    # the sources behind citations
    def list_chunks(self, kb_id: str, doc_id: str, offset: int = 0, limit: int = 50) -> ChunkPage:
        """A page of the document's chunks in the live index version, in document order."""
        return self._send(self._list_chunks(kb_id, doc_id, offset, limit))

    def set_chunk_disabled(self, kb_id: str, doc_id: str, chunk_id: int, disabled: bool) -> Chunk:
        """Disable a chunk (kept, but left out of search and answers) or enable it again."""
        return self._send(self._set_chunk_disabled(kb_id, doc_id, chunk_id, disabled))

    def download(self, kb_id: str, doc_id: str) -> bytes:
        """The original file's bytes."""
        return self._send(self._download(kb_id, doc_id))

    def render_page(
        self,
        kb_id: str,
        doc_id: str,
        page: int,
        chunk_id: int | None = None,
        scale: float | None = None,
    ) -> PageImage:
        """A PDF page (from 1) as PNG, with `chunk_id`'s text highlighted when given."""
        return self._send(self._render_page(kb_id, doc_id, page, chunk_id, scale))

    def wait_until_ready(
        self, kb_id: str, doc_id: str, timeout: float = 300.0, poll_interval: float = 0.5
    ) -> Document:
        """Poll until the document is ready; DocumentFailed if it fails, TimeoutError after
        `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.get_document(kb_id, doc_id)
            if doc.status in _TERMINAL_DOC:
                return _ready_or_raise(doc)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"document {doc_id} is still {doc.status} after {timeout} s")
            time.sleep(poll_interval)

    # retrieval and answers
    def search(
        self,
        kb_id: str,
        query: str,
        top_k: int | None = None,
        mode: SearchMode | None = None,
        filters: Mapping[str, Any] | None = None,
        rerank: bool | None = None,
        aggregate: Aggregate | None = None,
    ) -> list[Passage]:
        """`aggregate="document"`: one passage per document, documents ranked by their best;
        "auto" (the server's default) does so in a knowledge base of many short documents."""
        return self._send(self._search(kb_id, query, top_k, mode, filters, rerank, aggregate))

    def ask(
        self,
        kb_id: str,
        question: str,
        top_k: int | None = None,
        *,
        conversation_id: str | None = None,
        retrieval_only: bool | None = None,
        filters: Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        cache: bool | None = None,
    ) -> Answer:
        options = _options(
            top_k=top_k,
            conversation_id=conversation_id,
            retrieval_only=retrieval_only,
            filters=filters,
            response_format=response_format,
            max_tokens=max_tokens,
            temperature=temperature,
            cache=cache,
        )
        return self._send(self._ask(kb_id, question, options))

    def ask_stream(
        self,
        kb_id: str,
        question: str,
        top_k: int | None = None,
        *,
        conversation_id: str | None = None,
        filters: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        cache: bool | None = None,
    ) -> Generator[StreamEvent, None, None]:
        """Stream an answer: DeltaEvent..., CitationsEvent, DoneEvent (or an ErrorEvent).
        Leaving the loop early closes the connection, which stops the generation."""
        options = _options(
            top_k=top_k,
            conversation_id=conversation_id,
            filters=filters,
            max_tokens=max_tokens,
            temperature=temperature,
            cache=cache,
        )
        call = self._ask_stream(kb_id, question, options)
        with self._http.stream(call.method, call.path, **call.request_kwargs()) as response:
            if response.is_error:
                response.read()
                raise ApiError.from_response(response)
            yield from _stream_events(response)

    # conversations
    def create_conversation(self, kb_id: str, title: str = "") -> Conversation:
        return self._send(self._create_conversation(kb_id, title))

    def list_conversations(self, kb_id: str | None = None, limit: int = 100) -> list[Conversation]:
        return self._send(self._list_conversations(kb_id, limit))

    def get_conversation(self, conversation_id: str) -> Conversation:
        return self._send(self._get_conversation(conversation_id))

    def delete_conversation(self, conversation_id: str) -> None:
        self._send(self._delete_conversation(conversation_id))

    # jobs
    def list_jobs(
        self,
        status: str | None = None,
        kind: str | None = None,
        kb_id: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        return self._send(self._list_jobs(status, kind, kb_id, limit))

    def get_job(self, job_id: str) -> Job:
        return self._send(self._get_job(job_id))

    def cancel_job(self, job_id: str) -> Job:
        return self._send(self._cancel_job(job_id))

    def reindex(
        self,
        kb_id: str,
        embedding_model: str | None = None,
        chunk_tokens: int | None = None,
        overlap_tokens: int | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Start building a new index version; the Job's `version` is the one it builds."""
        call = self._reindex(kb_id, embedding_model, chunk_tokens, overlap_tokens, idempotency_key)
        return self._send(call)

    def rebuild_index(self, kb_id: str) -> Job:
        """Rebuild the live version's FAISS and BM25 caches from the vectors in SQL."""
        return self._send(self._rebuild_index(kb_id))

    def list_versions(self, kb_id: str) -> list[IndexVersion]:
        """The knowledge base's index versions, oldest first; one of them is live."""
        return self._send(self._list_versions(kb_id))

    def rollback(self, kb_id: str) -> Job:
        """Make the most recent retired version live again; the Job's `version` is that one."""
        return self._send(self._rollback(kb_id))

    def prune_versions(self, kb_id: str, keep: int | None = None) -> list[int]:
        """Delete the data of retired versions beyond the `keep` newest (the server's setting
        by default); returns the numbers of the versions pruned."""
        return self._send(self._prune_versions(kb_id, keep))

    def wait_for_job(self, job_id: str, timeout: float = 600.0, poll_interval: float = 0.5) -> Job:
        """Poll until the job succeeded, failed or was cancelled; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job.status in _TERMINAL_JOB:
                return job
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job.status} after {timeout} s")
            time.sleep(poll_interval)

    def evaluate(
        self,
        kb_id: str,
        golden: Sequence[Mapping[str, Any]] | None = None,
        *,
        path: str | None = None,
        modes: list[str] | None = None,
        rerank: bool | None = None,
    ) -> Job:
        """Queue a retrieval evaluation on a golden set (its items, or a JSONL `path` inside
        the server's data directory); the finished Job's `result` is the report."""
        return self._send(self._evaluate(kb_id, golden, path, modes, rerank))

    # dictionaries and the "not covered" threshold
    def set_relevance_threshold(self, kb_id: str, threshold: float | None) -> KnowledgeBase:
        """Below this relevance /ask answers "not covered" (None: the server's default)."""
        return self._send(self._update_kb(kb_id, {"relevance_threshold": threshold}))

    def calibrate_relevance(
        self,
        kb_id: str,
        golden: Sequence[Mapping[str, Any]] | None = None,
        *,
        negatives: Sequence[str] | None = None,
        apply: bool = True,
    ) -> Calibration:
        """Measure and (with `apply`) store the threshold: from a golden set's questions, or
        from the knowledge base's own headings when none is given."""
        return self._send(self._calibrate(kb_id, golden, negatives, apply))

    def get_lexicon(self, kb_id: str) -> list[str]:
        """The knowledge base's user dictionary: words its lexical index keeps whole."""
        return self._send(self._get_lexicon(kb_id))

    def set_lexicon(self, kb_id: str, terms: Sequence[str]) -> LexiconChange:
        """Replace the user dictionary (the server re-analyses the lexical index)."""
        return self._send(self._set_lexicon(kb_id, terms))

    def add_lexicon_terms(self, kb_id: str, terms: Sequence[str]) -> LexiconChange:
        """Add terms to the dictionary, atomically on the server."""
        return self._send(self._change_lexicon(kb_id, terms, ()))

    def remove_lexicon_terms(self, kb_id: str, terms: Sequence[str]) -> LexiconChange:
        """Remove terms from the dictionary, atomically on the server."""
        return self._send(self._change_lexicon(kb_id, (), terms))

    def suggest_terms(
        self, kb_id: str, limit: int = 50, min_count: int | None = None
    ) -> list[TermSuggestion]:
        """Terms learned from the knowledge base's text, best first, not yet in its dictionary."""
        return self._send(self._suggest_terms(kb_id, limit, min_count))

    # operations
    def health(self) -> dict[str, Any]:
        return self._send(self._health())


def _ready_or_raise(doc: Document) -> Document:
    if doc.status == "failed":
        raise DocumentFailed(doc)
    return doc


# --------------------------------------------------------------------------- async


class AsyncClient(_Requests):
    """The same API as `Client`, with coroutines; use `async with AsyncClient(...)`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 60.0,
        *,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=_headers(api_key, headers),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def base_url(self) -> str:
        return str(self._http.base_url).rstrip("/")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call[T]) -> T:
        source: IO[bytes] | bytes | None = None
        opened: IO[bytes] | None = None
        if call.upload is not None:
            upload = call.upload[1]
            if isinstance(upload, str | os.PathLike):
                # httpx reads a plain file object in chunks while sending the multipart body.
                source = opened = open(upload, "rb")  # noqa: SIM115
            else:
                source = upload
        try:
            kwargs = call.request_kwargs(source)
            response = await self._http.request(call.method, call.path, **kwargs)
        finally:
            if opened is not None:
                opened.close()
        return call.parse(_check(response))

    # knowledge bases
    async def create_kb(self, name: str, description: str = "") -> KnowledgeBase:
        return await self._send(self._create_kb(name, description))

    async def list_kbs(self) -> list[KnowledgeBase]:
        return await self._send(self._list_kbs())

    async def get_kb(self, kb_id: str) -> KnowledgeBase:
        return await self._send(self._get_kb(kb_id))

    async def delete_kb(self, kb_id: str) -> None:
        await self._send(self._delete_kb(kb_id))

    # documents
    async def upload(
        self,
        kb_id: str,
        path_or_bytes: Upload,
        filename: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        priority: Priority | None = None,
        external_id: str | None = None,
    ) -> Document:
        call = self._upload(
            kb_id, path_or_bytes, filename, metadata, idempotency_key, priority, external_id
        )
        return await self._send(call)

    async def list_documents(
        self,
        kb_id: str,
        status: str | None = None,
        limit: int = 1000,
        offset: int = 0,
        *,
        external_id: str | None = None,
        all_versions: bool = False,
    ) -> list[Document]:
        call = self._list_documents(kb_id, status, limit, offset, external_id, all_versions)
        return await self._send(call)

    async def document_versions(self, kb_id: str, doc_id: str) -> list[Document]:
        return await self._send(self._document_versions(kb_id, doc_id))

    async def restore_document(
        self, kb_id: str, doc_id: str, version: int | None = None
    ) -> Document:
        return await self._send(self._restore_document(kb_id, doc_id, version))

    async def sync(
        self,
        kb_id: str,
        *,
        folder: str | None = None,
        urls: Sequence[str] | None = None,
        interval_s: float | None = None,
        delete_missing: bool = True,
    ) -> Job:
        return await self._send(self._sync(kb_id, folder, urls, interval_s, delete_missing))

    async def get_document(self, kb_id: str, doc_id: str) -> Document:
        return await self._send(self._get_document(kb_id, doc_id))

    async def delete_document(self, kb_id: str, doc_id: str) -> None:
        await self._send(self._delete_document(kb_id, doc_id))

    # the sources behind citations
    async def list_chunks(
        self, kb_id: str, doc_id: str, offset: int = 0, limit: int = 50
    ) -> ChunkPage:
        return await self._send(self._list_chunks(kb_id, doc_id, offset, limit))

    async def set_chunk_disabled(
        self, kb_id: str, doc_id: str, chunk_id: int, disabled: bool
    ) -> Chunk:
        return await self._send(self._set_chunk_disabled(kb_id, doc_id, chunk_id, disabled))

    async def download(self, kb_id: str, doc_id: str) -> bytes:
        return await self._send(self._download(kb_id, doc_id))

    async def render_page(
        self,
        kb_id: str,
        doc_id: str,
        page: int,
        chunk_id: int | None = None,
        scale: float | None = None,
    ) -> PageImage:
        return await self._send(self._render_page(kb_id, doc_id, page, chunk_id, scale))

    async def wait_until_ready(
        self, kb_id: str, doc_id: str, timeout: float = 300.0, poll_interval: float = 0.5
    ) -> Document:
        deadline = time.monotonic() + timeout
        while True:
            doc = await self.get_document(kb_id, doc_id)
            if doc.status in _TERMINAL_DOC:
                return _ready_or_raise(doc)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"document {doc_id} is still {doc.status} after {timeout} s")
            await asyncio.sleep(poll_interval)

    # retrieval and answers
    async def search(
        self,
        kb_id: str,
        query: str,
        top_k: int | None = None,
        mode: SearchMode | None = None,
        filters: Mapping[str, Any] | None = None,
        rerank: bool | None = None,
        aggregate: Aggregate | None = None,
    ) -> list[Passage]:
        """`aggregate="document"`: one passage per document, documents ranked by their best;
        "auto" (the server's default) does so in a knowledge base of many short documents."""
        return await self._send(self._search(kb_id, query, top_k, mode, filters, rerank, aggregate))

    async def ask(
        self,
        kb_id: str,
        question: str,
        top_k: int | None = None,
        *,
        conversation_id: str | None = None,
        retrieval_only: bool | None = None,
        filters: Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        cache: bool | None = None,
    ) -> Answer:
        options = _options(
            top_k=top_k,
            conversation_id=conversation_id,
            retrieval_only=retrieval_only,
            filters=filters,
            response_format=response_format,
            max_tokens=max_tokens,
            temperature=temperature,
            cache=cache,
        )
        return await self._send(self._ask(kb_id, question, options))

    async def ask_stream(
        self,
        kb_id: str,
        question: str,
        top_k: int | None = None,
        *,
        conversation_id: str | None = None,
        filters: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        cache: bool | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Stream an answer as events. To stop early and close the connection at once, wrap
        it: `async with contextlib.aclosing(client.ask_stream(...)) as events:`."""
        options = _options(
            top_k=top_k,
            conversation_id=conversation_id,
            filters=filters,
            max_tokens=max_tokens,
            temperature=temperature,
            cache=cache,
        )
        call = self._ask_stream(kb_id, question, options)
        async with self._http.stream(call.method, call.path, **call.request_kwargs()) as response:
            if response.is_error:
                await response.aread()
                raise ApiError.from_response(response)
            async with aclosing(_astream_events(response)) as events:
                async for event in events:
                    yield event

    # conversations
    async def create_conversation(self, kb_id: str, title: str = "") -> Conversation:
        return await self._send(self._create_conversation(kb_id, title))

    async def list_conversations(
        self, kb_id: str | None = None, limit: int = 100
    ) -> list[Conversation]:
        return await self._send(self._list_conversations(kb_id, limit))

    async def get_conversation(self, conversation_id: str) -> Conversation:
        return await self._send(self._get_conversation(conversation_id))

    async def delete_conversation(self, conversation_id: str) -> None:
        await self._send(self._delete_conversation(conversation_id))

    # jobs
    async def list_jobs(
        self,
        status: str | None = None,
        kind: str | None = None,
        kb_id: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        return await self._send(self._list_jobs(status, kind, kb_id, limit))

    async def get_job(self, job_id: str) -> Job:
        return await self._send(self._get_job(job_id))

    async def cancel_job(self, job_id: str) -> Job:
        return await self._send(self._cancel_job(job_id))

    async def reindex(
        self,
        kb_id: str,
        embedding_model: str | None = None,
        chunk_tokens: int | None = None,
        overlap_tokens: int | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        call = self._reindex(kb_id, embedding_model, chunk_tokens, overlap_tokens, idempotency_key)
        return await self._send(call)

    async def rebuild_index(self, kb_id: str) -> Job:
        return await self._send(self._rebuild_index(kb_id))

    async def list_versions(self, kb_id: str) -> list[IndexVersion]:
        return await self._send(self._list_versions(kb_id))

    async def rollback(self, kb_id: str) -> Job:
        return await self._send(self._rollback(kb_id))

    async def prune_versions(self, kb_id: str, keep: int | None = None) -> list[int]:
        return await self._send(self._prune_versions(kb_id, keep))

    async def set_relevance_threshold(self, kb_id: str, threshold: float | None) -> KnowledgeBase:
        return await self._send(self._update_kb(kb_id, {"relevance_threshold": threshold}))

    async def calibrate_relevance(
        self,
        kb_id: str,
        golden: Sequence[Mapping[str, Any]] | None = None,
        *,
        negatives: Sequence[str] | None = None,
        apply: bool = True,
    ) -> Calibration:
        return await self._send(self._calibrate(kb_id, golden, negatives, apply))

    async def get_lexicon(self, kb_id: str) -> list[str]:
        return await self._send(self._get_lexicon(kb_id))

    async def set_lexicon(self, kb_id: str, terms: Sequence[str]) -> LexiconChange:
        return await self._send(self._set_lexicon(kb_id, terms))

    async def add_lexicon_terms(self, kb_id: str, terms: Sequence[str]) -> LexiconChange:
        return await self._send(self._change_lexicon(kb_id, terms, ()))

    async def remove_lexicon_terms(self, kb_id: str, terms: Sequence[str]) -> LexiconChange:
        return await self._send(self._change_lexicon(kb_id, (), terms))

    async def suggest_terms(
        self, kb_id: str, limit: int = 50, min_count: int | None = None
    ) -> list[TermSuggestion]:
        return await self._send(self._suggest_terms(kb_id, limit, min_count))

    async def wait_for_job(
        self, job_id: str, timeout: float = 600.0, poll_interval: float = 0.5
    ) -> Job:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.get_job(job_id)
            if job.status in _TERMINAL_JOB:
                return job
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job.status} after {timeout} s")
            await asyncio.sleep(poll_interval)

    async def evaluate(
        self,
        kb_id: str,
        golden: Sequence[Mapping[str, Any]] | None = None,
        *,
        path: str | None = None,
        modes: list[str] | None = None,
        rerank: bool | None = None,
    ) -> Job:
        return await self._send(self._evaluate(kb_id, golden, path, modes, rerank))

    # operations
    async def health(self) -> dict[str, Any]:
        return await self._send(self._health())
