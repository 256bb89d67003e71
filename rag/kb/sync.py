"""Sync jobs: keep a knowledge base equal to a folder or a list of URLs.

A run lists its source, uploads each new or changed file as a new version of the document with
the same key (the path below the folder, or the URL), deletes the documents whose key the source
no longer lists, and records what it did as the job's result. With an interval, each run queues
the next one `interval_s` after it (the job's `run_after`), so the worker runs the sync on that
schedule until its queued job is cancelled or another sync of the knowledge base replaces it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import mimetypes
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import unquote, urljoin, urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from rag.core.config import SyncSettings
from rag.core.errors import InvalidInput, NotFound, RagError
from rag.kb.job_control import CANCEL_REQUESTED
from rag.kb.knowledge import (
    KnowledgeBases,
    StagedFile,
    check_external_id,
    get_kb,
    list_documents,
)
from rag.store.db import Database
from rag.store.models import Document, Job, JobKind, JobPriority, JobStatus

log = logging.getLogger(__name__)
Stager = Callable[[BinaryIO, str | None, Path, int], StagedFile]
_LISTED = 100  # keys named per category in a report; the counts are always complete
_PROGRESS_S = 0.5
_REDIRECTS = 5
_HASH_BLOCK = 1024 * 1024


STATE = "state"  # the payload key of what runs learnt of the source, per key
_ENDED = (JobStatus.succeeded, JobStatus.failed)


class SourceUnavailable(Exception):
    """The source could not be listed: nothing is changed in this run."""


class _Gone(Exception):
    """A listed URL answered 404 or 410: the document is gone from the source."""


@dataclass(frozen=True)
class SyncSpec:
    """What a sync job keeps its knowledge base equal to, and how often."""

    folder: str | None = None
    urls: tuple[str, ...] = ()
    interval_s: float | None = None
    delete_missing: bool = True

    def payload(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "urls": list(self.urls),
            "interval_s": self.interval_s,
            "delete_missing": self.delete_missing,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> SyncSpec:
        return cls(
            folder=payload.get("folder"),
            urls=tuple(payload.get("urls") or ()),
            interval_s=payload.get("interval_s"),
            delete_missing=bool(payload.get("delete_missing", True)),
        )

    @property
    def source(self) -> tuple[str | None, tuple[str, ...]]:
        return self.folder, self.urls

    @property
    def label(self) -> str:
        return f"folder {self.folder}" if self.folder else f"{len(self.urls)} URL(s)"


def _url_allowed(url: str, prefixes: list[str]) -> bool:
    """Whether `url` is below one of the prefixes, at a path boundary."""
    for prefix in prefixes:
        if url == prefix:
            return True
        if url.startswith(prefix) and (prefix.endswith("/") or url[len(prefix)] in "/?#"):
            return True
    return False


def check_url(url: str, settings: SyncSettings) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        raise InvalidInput(f"{url!r} is not an http(s) URL without credentials")
    if any(seg in (".", "..") for seg in unquote(parts.path).split("/")):
        raise InvalidInput(f"{url!r} has . or .. path segments")
    if not _url_allowed(url, settings.url_prefixes):
        raise InvalidInput(
            f"{url} is not below a URL prefix a sync may fetch (RAG_SYNC__URL_PREFIXES)"
        )
    return url


def _folder_root(folder: str, settings: SyncSettings) -> Path:
    root = Path(folder).resolve()
    for allowed in settings.folders:
        if root.is_relative_to(Path(allowed).resolve()):
            return root
    raise InvalidInput(f"{folder} is not inside a folder a sync may read (RAG_SYNC__FOLDERS)")


def check_spec(spec: SyncSpec, settings: SyncSettings) -> SyncSpec:
    """The spec, if the settings allow it; InvalidInput naming what to change otherwise."""
    if (spec.folder is None) == (not spec.urls):
        raise InvalidInput("a sync needs either a folder or a list of URLs")
    if spec.folder is not None:
        _folder_root(spec.folder, settings)
    if len(spec.urls) > settings.max_entries:
        raise InvalidInput(
            f"{len(spec.urls)} URLs are more than a sync may list (RAG_SYNC__MAX_ENTRIES="
            f"{settings.max_entries})"
        )
    if len(set(spec.urls)) != len(spec.urls):
        raise InvalidInput("the list of URLs names one URL twice")
    for url in spec.urls:
        check_url(url, settings)
    if spec.interval_s is not None and spec.interval_s < settings.min_interval_s:
        raise InvalidInput(
            f"interval_s must be at least {settings.min_interval_s:g} (RAG_SYNC__MIN_INTERVAL_S)"
        )
    return spec


def start_sync(db: Database, kb_id: str, spec: SyncSpec, settings: SyncSettings) -> Job:
    """Queue a sync run of the knowledge base now. A sync of it still waiting (a schedule's
    next run) is cancelled: one schedule per knowledge base, the newest. What the last run of
    the same source learnt (sizes, times, validators) goes along, so unchanged files are not
    read or fetched again."""
    check_spec(spec, settings)
    with db.write() as session:
        get_kb(session, kb_id)
        session.execute(
            update(Job)
            .where(Job.kind == JobKind.sync, Job.kb_id == kb_id, Job.status == JobStatus.queued)
            .values(
                status=JobStatus.cancelled, error="replaced by a newer sync", finished_at=db.now()
            )
        )
        last = session.execute(
            select(Job.payload)
            .where(Job.kind == JobKind.sync, Job.kb_id == kb_id, Job.status.in_(_ENDED))
            .order_by(Job.finished_at.desc())
            .limit(1)
        ).scalar_one_or_none()
        state = {}
        if last and SyncSpec.from_payload(last).source == spec.source:
            state = dict(last.get(STATE) or {})
        job = Job(kind=JobKind.sync, kb_id=kb_id, payload={**spec.payload(), STATE: state})
        session.add(job)
        session.flush()
        return job


def end_run(session: Session, job_id: str, state: dict[str, Any], now: datetime) -> Job | None:
    """In the transaction that ends a run: keep what it learnt of the source on the job, and
    queue the schedule's next run, unless the sync has no interval, was asked to stop, or
    another sync of the knowledge base waits or runs. The next run, if any."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.kb_id is None:
        return None
    payload = job.payload or {}
    job.payload = {**payload, STATE: state}
    spec = SyncSpec.from_payload(payload)
    if spec.interval_s is None or payload.get(CANCEL_REQUESTED):
        return None
    other = session.execute(
        select(Job.id)
        .where(
            Job.kind == JobKind.sync,
            Job.kb_id == job.kb_id,
            Job.status.in_([JobStatus.queued, JobStatus.running]),
            Job.id != job.id,
        )
        .limit(1)
    ).first()
    if other is not None:
        return None
    following = Job(
        kind=JobKind.sync,
        kb_id=job.kb_id,
        payload={**spec.payload(), STATE: state},
        run_after=now + timedelta(seconds=spec.interval_s),
    )
    session.add(following)
    session.flush()
    return following


@dataclass
class Report:
    """What one run did, by key."""

    source: str
    listed: int = 0
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    duplicates: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        kinds = ("added", "changed", "deleted", "unchanged", "duplicates", "failed")
        out: dict[str, Any] = {"source": self.source, "listed": self.listed}
        out["counts"] = {k: len(getattr(self, k)) for k in kinds}
        out.update({k: getattr(self, k)[:_LISTED] for k in kinds if k != "unchanged"})
        out["notes"] = self.notes
        return out


@dataclass
class Run:
    result: dict[str, Any]
    error: str | None
    state: dict[str, Any]


class _ResponseStream(io.RawIOBase):
    """An HTTP response body as a readable file, read as it arrives."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            block = next(self._chunks, None)
            if block is None:
                return 0
            self._rest = block
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


def _filename(url: str, content_type: str) -> str:
    name = unquote(PurePosixPath(urlsplit(url).path).name) or "index"
    if not PurePosixPath(name).suffix:
        name += mimetypes.guess_extension(content_type.split(";")[0].strip()) or ""
    return name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class Syncer:
    """Runs sync jobs over the knowledge bases' documents (`knowledge`), staging what it reads
    with `stage` (ingest/upload.py: size limit, type by content) like an upload."""

    def __init__(
        self,
        db: Database,
        knowledge: KnowledgeBases,
        *,
        settings: SyncSettings,
        data_dir: Path,
        max_upload_bytes: int,
        stage: Stager,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.db = db
        self.knowledge = knowledge
        self.settings = settings
        self.data_dir = data_dir
        self.max_upload_bytes = max_upload_bytes
        self.stage = stage
        self.transport = transport

    def run(self, job: Job, progress: Callable[[int, int], None]) -> Run:
        """One run of a sync job; `progress(done, total)` may raise to cancel it."""
        payload = job.payload or {}
        spec = SyncSpec.from_payload(payload)
        state: dict[str, Any] = dict(payload.get(STATE) or {})
        report = Report(spec.label)
        assert job.kb_id is not None
        kb_id = job.kb_id
        try:
            check_spec(spec, self.settings)
            with self.db.read() as session:
                current = {
                    d.doc_key if d.doc_key is not None else f"#{d.id}": d
                    for d in list_documents(session, kb_id, limit=10**9)
                    if d.parent_id is None
                }
        except NotFound:
            return Run({"skipped": "knowledge base deleted"}, None, {})
        except InvalidInput as exc:
            return Run(report.as_dict(), str(exc), state)
        root: Path | None = None
        try:
            if spec.folder is not None:
                root = _folder_root(spec.folder, self.settings)
                keys = self._list_folder(root, report)
            else:
                keys = list(spec.urls)
        except SourceUnavailable as exc:
            report.notes.append(f"nothing changed: {exc}")
            return Run(report.as_dict(), str(exc), state)
        report.listed = len(keys)
        listed = set(keys)
        seen: dict[str, Any] = {}
        last = 0.0
        with httpx.Client(
            timeout=self.settings.fetch_timeout_s, transport=self.transport
        ) as client:
            for done, key in enumerate(keys):
                if time.monotonic() - last > _PROGRESS_S:
                    progress(done, len(keys))
                    last = time.monotonic()
                doc = current.get(key)
                try:
                    check_external_id(key)  # the key becomes the document's external_id
                    if root is not None:
                        seen[key] = self._folder_entry(kb_id, root, key, doc, state, report)
                    else:
                        seen[key] = self._url_entry(client, kb_id, key, doc, state, report)
                except _Gone:
                    listed.discard(key)
                except (RagError, SourceUnavailable, OSError, httpx.HTTPError) as exc:
                    reason = str(exc) or exc.__class__.__name__
                    report.failed.append({"key": key, "reason": reason})
                    if key in state:
                        seen[key] = state[key]
        progress(len(keys), len(keys))
        if spec.delete_missing:
            self._delete_missing(kb_id, current, listed, report)
        return Run(report.as_dict(), None, seen)

    def _list_folder(self, root: Path, report: Report) -> list[str]:
        """Every file below `root` (dot files and dot folders left out), as posix paths."""
        if not root.is_dir():
            raise SourceUnavailable(f"{root} is not a folder (not mounted?)")
        keys = []
        for top, dirs, files in os.walk(root, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = Path(top) / name
                key = path.relative_to(root).as_posix()
                if not path.resolve().is_relative_to(root):
                    report.failed.append({"key": key, "reason": "a link out of the folder"})
                    continue
                keys.append(key)
                if len(keys) > self.settings.max_entries:
                    raise SourceUnavailable(
                        f"the folder holds more than {self.settings.max_entries} files "
                        "(RAG_SYNC__MAX_ENTRIES)"
                    )
        return keys

    def _folder_entry(
        self,
        kb_id: str,
        root: Path,
        key: str,
        doc: Document | None,
        state: dict[str, Any],
        report: Report,
    ) -> dict[str, Any]:
        path = root / key
        info = path.stat()
        before = state.get(key) or {}
        mark = {"size": info.st_size, "mtime_ns": info.st_mtime_ns}
        if (
            doc is not None
            and before.get("sha256") == doc.sha256
            and all(before.get(k) == v for k, v in mark.items())
        ):
            report.unchanged.append(key)  # same size and time as when its bytes were read
            return before
        sha = _sha256(path)
        if doc is not None and doc.sha256 == sha:
            report.unchanged.append(key)
        else:
            with path.open("rb") as fh:
                staged = self.stage(fh, path.name, self.data_dir, self.max_upload_bytes)
            self._add(kb_id, key, doc, staged, report)
        return {**mark, "sha256": sha}

    def _url_entry(
        self,
        client: httpx.Client,
        kb_id: str,
        url: str,
        doc: Document | None,
        state: dict[str, Any],
        report: Report,
    ) -> dict[str, Any]:
        before = state.get(url) or {}
        headers: dict[str, str] = {}
        if doc is not None and before.get("sha256") == doc.sha256:
            if before.get("etag"):
                headers["If-None-Match"] = before["etag"]
            if before.get("last_modified"):
                headers["If-Modified-Since"] = before["last_modified"]
        with self._get(client, url, headers) as response:
            if response.status_code == 304:
                report.unchanged.append(url)
                return before
            if response.status_code in (404, 410):
                raise _Gone(url)
            if response.status_code >= 400:
                raise SourceUnavailable(f"HTTP {response.status_code}")
            name = _filename(str(response.url), response.headers.get("content-type", ""))
            body = io.BufferedReader(_ResponseStream(response.iter_bytes()))
            staged = self.stage(body, name, self.data_dir, self.max_upload_bytes)
            validators = {
                "etag": response.headers.get("etag"),
                "last_modified": response.headers.get("last-modified"),
            }
        self._add(kb_id, url, doc, staged, report)
        return {**validators, "sha256": staged.sha256}

    @contextmanager
    def _get(
        self, client: httpx.Client, url: str, headers: dict[str, str]
    ) -> Iterator[httpx.Response]:
        """GET `url`, following redirects only to URLs a sync may fetch."""
        for _ in range(_REDIRECTS + 1):
            with client.stream("GET", url, headers=headers) as response:
                if not response.is_redirect:
                    yield response
                    return
                target = urljoin(url, response.headers.get("location", ""))
            try:
                url = check_url(target, self.settings)
            except InvalidInput as exc:
                raise SourceUnavailable(f"redirected: {exc}") from exc
        raise SourceUnavailable(f"more than {_REDIRECTS} redirects")

    def _add(
        self, kb_id: str, key: str, doc: Document | None, staged: StagedFile, report: Report
    ) -> None:
        added, duplicate = self.knowledge.add_document(
            kb_id, staged, priority=JobPriority.batch, external_id=key
        )
        if duplicate and added.doc_key == key:
            report.unchanged.append(key)  # its newest version is these bytes, still ingesting
        elif duplicate:
            report.duplicates.append({"key": key, "document_id": added.id})
        elif doc is None:
            report.added.append(key)
        else:
            report.changed.append(key)

    def _delete_missing(
        self, kb_id: str, current: dict[str, Document], listed: set[str], report: Report
    ) -> None:
        gone = [key for key in current if key not in listed]
        if gone and not listed:
            # A source that lists nothing is more likely down or unmounted than emptied.
            report.notes.append(f"the source lists nothing: {len(gone)} document(s) kept")
            return
        for key in gone:
            with contextlib.suppress(NotFound):  # deleted meanwhile
                self.knowledge.delete_document(kb_id, current[key].id)
            report.deleted.append(key)
