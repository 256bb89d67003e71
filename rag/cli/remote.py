"""The commands that go through a running server with the project's client (rag.client):
knowledge bases, ingest, documents, search, ask, eval, reindex and jobs. This process loads no
model and opens no database; the server at --url / RAG_URL does the work in its own time."""

from __future__ import annotations

import difflib
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, cast

import httpx
import typer

from rag.cli import local
from rag.cli.common import YesOpt, confirm, fail
from rag.client import (
    ApiError,
    Client,
    Document,
    Job,
    KnowledgeBase,
    LexiconChange,
    Priority,
    SearchMode,
)

DEFAULT_URL = "http://127.0.0.1:8080"
UrlOpt = Annotated[
    str, typer.Option("--url", envvar="RAG_URL", help="the server's address", show_default=True)
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="RAG_API_KEY", help="API key (when the server has keys)"),
]
KbOpt = Annotated[str, typer.Option("--kb", help="knowledge base name or id")]
# Answers from a CPU model can take minutes; connecting should not.
TIMEOUT = httpx.Timeout(600.0, connect=10.0)
FINAL_JOB = frozenset({"succeeded", "failed", "cancelled"})
DOCUMENT_STATUSES = ("queued", "processing", "ready", "failed", "superseded")
# Rejections of one file; any other error (auth, server down, unknown KB) ends the command.
_PER_FILE = frozenset({400, 409, 413, 415, 422})
_HINTS = {
    "unauthorized": "Give an API key with --api-key or RAG_API_KEY (`rag keys create` makes one).",
    "forbidden": "The API key lacks the scope this needs (admin, ingest or query).",
}


def explain(exc: ApiError) -> str:
    lines = [f"error: {exc.message} ({exc.code}, HTTP {exc.status})"]
    lines += [f"  {d.field}: {d.message}" for d in exc.details]
    if exc.code in _HINTS:
        lines.append(_HINTS[exc.code])
    return "\n".join(lines)


@contextmanager
def connect(url: str, api_key: str | None) -> Iterator[Client]:
    """A client for the server; its errors end the command with a message, not a traceback."""
    try:
        with Client(url, api_key=api_key, timeout=TIMEOUT) as client:
            yield client
    except ApiError as exc:
        fail(explain(exc))
    except httpx.TimeoutException:
        fail(f"the server at {url} did not answer in time")
    except httpx.TransportError as exc:
        fail(
            f"cannot reach the server at {url} ({exc or type(exc).__name__}). Start it with "
            "`rag serve`, or give its address with --url or RAG_URL."
        )
    except KeyboardInterrupt:
        fail("interrupted", 130)


def resolve_kb(
    client: Client, kb: str, *, create: bool = False, missing_hint: str = ""
) -> KnowledgeBase:
    """The knowledge base named `kb` (an id or a name); with `create`, made when missing.
    An unknown one ends the command, naming the knowledge bases that are spelled alike."""
    try:
        return client.get_kb(kb)
    except ApiError as exc:
        if exc.status != 404:
            raise
    known = client.list_kbs()
    for row in known:  # a server older than names on every route
        if row.name == kb:
            return row
    if create:
        row = client.create_kb(kb)
        typer.echo(f"created knowledge base {row.name!r} ({row.id})")
        return row
    close = difflib.get_close_matches(kb, [k.name for k in known], n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    if not known:
        hint = " The server has no knowledge bases yet."
    fail(f"no knowledge base {kb!r} on {client.base_url}.{hint}{missing_hint}")


def follow_job(client: Client, job: Job, desc: str) -> Job:
    """Poll the job until it ends, with a progress bar on a terminal. Ctrl-C stops watching,
    not the job."""
    from tqdm import tqdm

    try:
        with tqdm(unit="doc", desc=desc, disable=None, file=sys.stderr) as bar:
            while job.status not in FINAL_JOB:
                time.sleep(0.5)
                job = client.get_job(job.id)
                total, done = job.progress.get("total"), job.progress.get("done")
                bar.total = int(total) if total else None
                bar.n = int(done or 0)
                bar.refresh()
    except KeyboardInterrupt:
        fail(f"\nstopped watching; job {job.id} goes on (`rag jobs show {job.id}`)", 130)
    return job


# --------------------------------------------------------------------------- knowledge bases

kb_app = typer.Typer(
    help='Create, list and delete knowledge bases; their "not covered" relevance threshold.',
    no_args_is_help=True,
)


@kb_app.command("list")
def kb_list(url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None) -> None:
    """The knowledge bases with their document and chunk counts."""
    with connect(url, api_key) as client:
        rows = client.list_kbs()
    for kb in rows:
        typer.echo(
            f"{kb.id}  {kb.name}  documents={kb.documents} chunks={kb.chunks} "
            f"model={kb.embedding_model}"
        )
    if not rows:
        typer.echo("no knowledge bases", err=True)


@kb_app.command("create")
def kb_create(
    name: str,
    description: Annotated[str, typer.Option(help="what it holds")] = "",
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """Create a knowledge base (names are unique)."""
    with connect(url, api_key) as client:
        kb = client.create_kb(name, description)
    typer.echo(f"{kb.id}  {kb.name}")


@kb_app.command("delete")
def kb_delete(
    kb: Annotated[str, typer.Argument(help="name or id")],
    yes: YesOpt = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """Delete a knowledge base with all its documents and indexes.

    Asks first; --yes skips the question (and is needed without a terminal)."""
    with connect(url, api_key) as client:
        row = resolve_kb(client, kb)
        confirm(
            f"Delete knowledge base {row.name!r} ({row.id}) and its {row.documents or 0} "
            "document(s)? This cannot be undone.",
            yes,
        )
        client.delete_kb(row.id)
    typer.echo(f"deleted {row.name}")


@kb_app.command("relevance")
def kb_relevance(
    kb: Annotated[str, typer.Argument(help="name or id")],
    threshold: Annotated[
        float | None, typer.Option("--set", help="store this threshold (0-1; 0 never refuses)")
    ] = None,
    default: Annotated[
        bool, typer.Option("--default", help="go back to the server's default threshold")
    ] = False,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate",
            help="measure it: on --golden's questions, else on the knowledge base's headings",
        ),
    ] = False,
    golden: Annotated[
        Path | None, typer.Option(help='JSONL of answerable questions ({"question": ...})')
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="with --calibrate: show it, store nothing")
    ] = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """Show or set the relevance below which /ask answers "not covered" without the LLM."""
    if sum((threshold is not None, default, calibrate)) > 1:
        fail("give one of --set, --default and --calibrate")
    items = None
    if golden is not None:
        lines = golden.read_text(encoding="utf-8").splitlines()
        items = [json.loads(line) for line in lines if line.strip()]
    with connect(url, api_key) as client:
        row = resolve_kb(client, kb)
        if calibrate:
            found = client.calibrate_relevance(row.id, items, apply=not dry_run)
            typer.echo(
                f"threshold {found.threshold:.3f} from {found.positives} {found.source} "
                f"question(s) and {found.negatives} on other topics: {found.answered:.0%} "
                f"answered, {found.refused:.0%} of the others refused"
                + ("" if found.applied else " (not stored: --dry-run)")
            )
            return
        if threshold is not None or default:
            row = client.set_relevance_threshold(row.id, None if default else threshold)
    shown = "the server's default" if row.relevance_threshold is None else row.relevance_threshold
    typer.echo(f"{row.name}: relevance threshold {shown}")


# --------------------------------------------------------------------------- user dictionaries

lexicon_app = typer.Typer(
    help="A knowledge base's user dictionary: domain words its lexical index keeps whole.",
    no_args_is_help=True,
)
TermsArg = Annotated[list[str] | None, typer.Argument(help="terms (or --file)")]
TermsFileOpt = Annotated[
    Path | None, typer.Option("--file", help="one term per line; - reads standard input")
]


def _terms_given(terms: list[str] | None, file: Path | None) -> list[str]:
    given = list(terms or [])
    if file is not None:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        given += [line.strip() for line in text.splitlines() if line.strip()]
    return given


def _echo_change(change: LexiconChange) -> None:
    typer.echo(
        f"{len(change.terms)} term(s): {len(change.added)} added, {len(change.removed)} removed"
        + ("; lexical index re-analysed" if change.reindexed else "")
    )


@lexicon_app.command("show")
def lexicon_show(kb: KbOpt, url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None) -> None:
    """Print the terms, one a line."""
    with connect(url, api_key) as client:
        terms = client.get_lexicon(resolve_kb(client, kb).id)
    for term in terms:
        typer.echo(term)
    if not terms:
        typer.echo("no terms", err=True)


@lexicon_app.command("set")
def lexicon_set(
    kb: KbOpt,
    terms: TermsArg = None,
    file: TermsFileOpt = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """Replace the terms (none given: empty the dictionary)."""
    with connect(url, api_key) as client:
        _echo_change(client.set_lexicon(resolve_kb(client, kb).id, _terms_given(terms, file)))


@lexicon_app.command("add")
def lexicon_add(
    kb: KbOpt,
    terms: TermsArg = None,
    file: TermsFileOpt = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """Add terms to the dictionary."""
    given = _terms_given(terms, file)
    if not given:
        fail("give terms, or --file")
    with connect(url, api_key) as client:
        _echo_change(client.add_lexicon_terms(resolve_kb(client, kb).id, given))


@lexicon_app.command("suggest")
def lexicon_suggest(
    kb: KbOpt,
    limit: Annotated[int, typer.Option(help="at most this many")] = 50,
    min_count: Annotated[int | None, typer.Option(help="occurrences needed (server: 5)")] = None,
    add: Annotated[bool, typer.Option("--add", help="add every suggestion shown")] = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """Terms learned from the knowledge base's text that its analyser cuts apart, best first."""
    with connect(url, api_key) as client:
        row = resolve_kb(client, kb)
        found = client.suggest_terms(row.id, limit=limit, min_count=min_count)
        for s in found:
            typer.echo(f"{s.term}\t{s.count}\t{s.cohesion:.2f}\t{' '.join(s.pieces)}")
        if not found:
            typer.echo("no suggestions", err=True)
        elif add:
            _echo_change(client.add_lexicon_terms(row.id, [s.term for s in found]))


# --------------------------------------------------------------------------- ingest


def collect(paths: list[Path]) -> list[Path]:
    """The files to upload: each file named, and the supported files under each folder. A path
    that does not exist ends the command before anything is sent."""
    from ingest.parsers.detect import SUPPORTED_EXTENSIONS

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"not found: {', '.join(missing)}")
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS
            )
        else:
            files.append(path)
    if not files:
        kinds = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        fail(f"no files to ingest in {', '.join(map(str, paths))} (supported: {kinds})")
    return files


def _upload(client: Client, kb_id: str, path: Path, **options: Any) -> Document:
    """One upload; a 429 waits as long as the server says, a few times, then gives up."""
    for attempt in range(5):
        try:
            return client.upload(kb_id, path, **options)
        except ApiError as exc:
            if exc.status != 429 or attempt == 4:
                raise
            time.sleep(exc.retry_after or 1.0)
    raise AssertionError("unreachable")


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or folders (recursive)")],
    kb: KbOpt,
    create: Annotated[bool, typer.Option("--create", help="create the knowledge base")] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="follow the documents until ready or failed")
    ] = False,
    metadata: Annotated[str | None, typer.Option(help="JSON object stored with each file")] = None,
    local_mode: Annotated[
        bool,
        typer.Option("--local", help="ingest in this process, on RAG_DATA_DIR (no server)"),
    ] = False,
    engine: Annotated[str, typer.Option(help="with --local: local or ray")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address")] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """Upload files or folders to a knowledge base through the server.

    An unknown knowledge base is an error unless --create; a path that does not exist is an
    error. With --wait, follow the documents until ready or failed; the exit status is 2 when a
    file was rejected or a document failed. --local does the work in this process on the data
    directory (RAG_DATA_DIR) instead, with no server (needed for --engine ray)."""
    meta = local.parse_metadata(metadata)
    if engine not in ("local", "ray"):
        fail(f"--engine must be local or ray, not {engine!r}")
    if engine == "ray" and not local_mode:
        fail("--engine ray runs the ingestion in this process: add --local")
    files = collect(paths)
    if local_mode:
        local.ingest(files, kb, create, meta, engine, ray_address)
        return
    summary = {"queued": 0, "duplicate": 0, "rejected": 0}
    pending: dict[str, Path] = {}
    # Many files are a bulk load: the server ingests uploads someone waits for first.
    priority: Priority = "batch" if len(files) > 1 else "interactive"
    with connect(url, api_key) as client:
        row = resolve_kb(client, kb, create=create, missing_hint=" Add --create to create it.")
        for path in files:
            try:
                doc = _upload(client, row.id, path, metadata=meta, priority=priority)
            except ApiError as exc:
                if exc.status not in _PER_FILE:
                    raise
                summary["rejected"] += 1
                typer.secho(f"rejected {path}: {exc.message}", fg=typer.colors.RED, err=True)
                continue
            if doc.duplicate:
                summary["duplicate"] += 1
            else:
                summary["queued"] += 1
                pending[doc.id] = path
        if wait:
            done = _wait_documents(client, row.id, pending)
            summary = {"ready": done["ready"], "failed": done["failed"]} | {
                k: v for k, v in summary.items() if k != "queued"
            }
    typer.echo(", ".join(f"{k}: {v}" for k, v in summary.items()))
    if not wait and pending:
        typer.echo(f"follow them with `rag documents --kb {row.name}` (or add --wait)", err=True)
    if summary.get("failed") or summary["rejected"]:
        raise typer.Exit(2)


def _wait_documents(client: Client, kb_id: str, pending: dict[str, Path]) -> dict[str, int]:
    """Poll until every pending document is ready or failed. One listing per round finds the
    ones still waiting; only the others are fetched one by one."""
    from tqdm import tqdm

    counts = {"ready": 0, "failed": 0}
    try:
        with tqdm(total=len(pending), unit="doc", desc="ingesting", disable=None) as bar:
            while pending:
                time.sleep(0.5)
                waiting = {
                    d.id
                    for status in ("queued", "processing")
                    for d in client.list_documents(kb_id, status=status)
                }
                for doc_id in [d for d in pending if d not in waiting]:
                    doc = client.get_document(kb_id, doc_id)
                    if doc.status not in ("ready", "failed"):
                        continue  # beyond the listing's limit: still waiting
                    counts[doc.status] += 1
                    if doc.status == "failed":
                        tqdm.write(f"failed {pending[doc_id]}: {doc.error}", file=sys.stderr)
                    del pending[doc_id]
                    bar.update(1)
    except KeyboardInterrupt:
        fail("\nstopped waiting; the server goes on ingesting (`rag documents`)", 130)
    return counts


# --------------------------------------------------------------------------- documents

documents_app = typer.Typer(
    help="A knowledge base's documents and its ingestion queue; delete documents.",
    invoke_without_command=True,
)


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _where(doc: Document) -> str:
    if doc.queue_position is not None:
        return f"#{doc.queue_position}"
    if doc.stage:
        pages = f" {doc.pages_done or 0}/{doc.pages_total} pages" if doc.pages_total else ""
        return doc.stage + pages
    if doc.status == "ready":
        return f"{doc.pages or 0} pages, {doc.chunks} chunks"
    return ""


@documents_app.callback()
def documents(
    ctx: typer.Context,
    kb: Annotated[str | None, typer.Option("--kb", help="knowledge base name or id")] = None,
    status: Annotated[
        str | None, typer.Option(help="only documents in this state: queued, processing, ...")
    ] = None,
    limit: Annotated[int, typer.Option(help="at most this many documents")] = 1000,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """List a knowledge base's documents and its ingestion queue.

    Processing documents first with their stage, pages and ETA, then queued ones in the order
    they will run, then the rest."""
    if ctx.invoked_subcommand is not None:
        return
    if kb is None:
        fail("--kb is required")
    if status is not None and status not in DOCUMENT_STATUSES:
        fail(f"--status must be one of {', '.join(DOCUMENT_STATUSES)}, not {status!r}")
    with connect(url, api_key) as client:
        row = resolve_kb(client, kb)
        docs = client.list_documents(row.id, status=status, limit=limit)
    rank = {"processing": 0, "queued": 1}

    def order(doc: Document) -> tuple[int, int]:
        return rank.get(doc.status, 2), doc.queue_position or 0

    for doc in sorted(docs, key=order):  # stable: the rest stay in upload order
        eta = f"eta {_duration(doc.eta_s)}" if doc.eta_s is not None else ""
        line = f"{doc.status:10}  {_where(doc):24}  {eta:11}  {doc.filename}"
        typer.echo(line.rstrip() + (f"  ({doc.error})" if doc.error else ""))
    if not docs:
        typer.echo(f"no {status + ' ' if status else ''}documents in {kb}")


def _find_document(client: Client, kb: KnowledgeBase, name: str) -> Document:
    """The document with this id, else the only one with this file name."""
    try:
        return client.get_document(kb.id, name)
    except ApiError as exc:
        if exc.status != 404:
            raise
    named: list[Document] = []
    offset = 0
    while page := client.list_documents(kb.id, limit=10_000, offset=offset):
        named += [d for d in page if d.filename == name]
        offset += len(page)
    if not named:
        fail(f"no document {name!r} in {kb.name}")
    if len(named) > 1:
        ids = ", ".join(d.id for d in named)
        fail(f"{len(named)} documents are named {name!r} in {kb.name}; give an id: {ids}")
    return named[0]


@documents_app.command("delete")
def documents_delete(
    documents: Annotated[list[str], typer.Argument(help="document ids or file names")],
    kb: KbOpt,
    yes: YesOpt = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """Delete documents (by id or file name) with their chunks and stored files.

    Asks first; --yes skips the question (and is needed without a terminal)."""
    with connect(url, api_key) as client:
        row = resolve_kb(client, kb)
        chosen = [_find_document(client, row, name) for name in documents]
        names = ", ".join(d.filename for d in chosen)
        confirm(f"Delete {len(chosen)} document(s) from {row.name!r}: {names}?", yes)
        for doc in chosen:
            client.delete_document(row.id, doc.id)
    typer.echo(f"deleted {len(chosen)} document(s)")


@documents_app.command("versions")
def documents_versions(
    document: Annotated[str, typer.Argument(help="document id or file name")],
    kb: KbOpt,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """A document's versions, newest first; * marks the current one."""
    with connect(url, api_key) as client:
        row = resolve_kb(client, kb)
        versions = client.document_versions(row.id, _find_document(client, row, document).id)
    for doc in versions:
        mark = "*" if doc.current else " "
        when = doc.created_at.isoformat(timespec="seconds") if doc.created_at else ""
        line = f"{mark} v{doc.version:<4} {doc.status:10}  {when:25}  {doc.id}  {doc.filename}"
        typer.echo(line + (f"  ({doc.error})" if doc.error else ""))


@documents_app.command("restore")
def documents_restore(
    document: Annotated[str, typer.Argument(help="document id or file name")],
    kb: KbOpt,
    version: Annotated[
        int | None, typer.Option(help="the version to restore (default: the previous one)")
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """Make an older version current again: it is ingested as the newest version and
    replaces the current one once ready."""
    with connect(url, api_key) as client:
        row = resolve_kb(client, kb)
        doc = client.restore_document(row.id, _find_document(client, row, document).id, version)
    if doc.duplicate:
        typer.echo(f"version {doc.version} ({doc.id}) is current already")
    else:
        typer.echo(f"queued as version {doc.version} ({doc.id}); it replaces the current one")


# --------------------------------------------------------------------------- questions


def search(
    query: str,
    kb: KbOpt,
    top_k: Annotated[int, typer.Option("--top-k")] = 5,
    mode: Annotated[str | None, typer.Option(help="dense, lexical or hybrid")] = None,
    rerank: Annotated[
        bool | None, typer.Option("--rerank/--no-rerank", help="default: the server's")
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """Print the best passages for a query."""
    if mode is not None and mode not in ("dense", "lexical", "hybrid"):
        fail(f"--mode must be dense, lexical or hybrid, not {mode!r}")
    with connect(url, api_key) as client:
        row = resolve_kb(client, kb)
        hits = client.search(
            row.id, query, top_k=top_k, mode=cast(SearchMode | None, mode), rerank=rerank
        )
    for p in hits:
        relevance = "" if p.relevance is None else f"  relevance {p.relevance:.2f}"
        typer.echo(f"{p.score:.3f}  {p.filename} p.{p.page}{relevance}  {p.text[:160]!r}")
    if not hits:
        typer.echo("no passages found", err=True)


def ask(
    question: str,
    kb: KbOpt,
    top_k: Annotated[int, typer.Option("--top-k")] = 5,
    retrieval_only: Annotated[bool, typer.Option("--retrieval-only")] = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """Answer a question with citations (or only the passages, with --retrieval-only).

    Notes on stderr say when the answer cites nothing, was cut off or went wrong."""
    with connect(url, api_key) as client:
        row = resolve_kb(client, kb)
        answer = client.ask(row.id, question, top_k=top_k, retrieval_only=retrieval_only or None)
    if answer.answer is not None:
        typer.echo(answer.answer.strip() + "\n")
    notes = []
    if not answer.covered:
        notes.append("the knowledge base does not cover this question (no model was asked)")
    elif not answer.retrieval_only:
        if answer.degenerate:
            notes.append(f"the model's output went wrong ({answer.degenerate}) and was stopped")
        if answer.truncated:
            notes.append("the answer was cut off at the token limit")
        if not answer.grounded:
            notes.append("the answer cites none of the passages: check it against them")
    for note in notes:
        typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)
    for c in answer.citations:
        typer.echo(f"[{c.index}] {c.filename}, page {c.page}: {c.text[:120]!r}")


# --------------------------------------------------------------------------- index versions

reindex_app = typer.Typer(
    help="Build a new index version beside the live one, and switch to it when it passes its "
    "checks (or roll back to the previous one).",
    invoke_without_command=True,
)


@reindex_app.callback()
def reindex(
    ctx: typer.Context,
    kb: Annotated[str | None, typer.Option("--kb", help="knowledge base name or id")] = None,
    embedding_model: Annotated[
        str | None, typer.Option("--embedding-model", help="default: the live version's")
    ] = None,
    chunk_size: Annotated[
        int | None, typer.Option("--chunk-size", help="chunk tokens; default: the live version's")
    ] = None,
    overlap: Annotated[
        int | None, typer.Option("--overlap", help="overlap tokens; default: the live version's")
    ] = None,
    cache_only: Annotated[
        bool, typer.Option("--cache-only", help="only rebuild the live version's FAISS/BM25 cache")
    ] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="queue the job on the server and return")
    ] = False,
    local_mode: Annotated[
        bool, typer.Option("--local", help="build in this process, on RAG_DATA_DIR (no server)")
    ] = False,
    engine: Annotated[
        str, typer.Option(help="with --local: where parsing and embedding run, local or ray")
    ] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: a local Ray instance)")
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """Re-chunk and re-embed a knowledge base into a new index version.

    Queries keep using the live version until the new one is complete and checked, then it
    becomes live at once. The server's worker builds it; --local builds it in this process on
    the data directory (RAG_DATA_DIR), with no server (needed for --engine ray)."""
    if ctx.invoked_subcommand is not None:
        return
    if kb is None:
        fail("--kb is required")
    if engine not in ("local", "ray"):
        fail(f"--engine must be local or ray, not {engine!r}")
    if engine == "ray" and no_wait:
        fail("--engine ray runs the build from this command; it cannot be used with --no-wait")
    if engine == "ray" and not local_mode:
        fail("--engine ray runs the build in this process: add --local")
    if local_mode:
        if no_wait:
            fail("--local builds the version in this process; it cannot be used with --no-wait")
        local.reindex(kb, embedding_model, chunk_size, overlap, cache_only, engine, ray_address)
        return
    with connect(url, api_key) as client:
        row = resolve_kb(client, kb)
        if cache_only:
            job = client.rebuild_index(row.id)
            if no_wait:
                typer.echo(f"queued; job {job.id}")
                return
            job = follow_job(client, job, "rebuilding")
            if job.status != "succeeded":
                fail(f"rebuilding the index {job.status}: {job.error}")
            vectors, seq = job.result.get("vectors"), job.result.get("last_seq")
            typer.echo(f"rebuilt index of {kb}: {vectors} vectors up to sequence {seq}")
            return
        job = client.reindex(
            row.id, embedding_model=embedding_model, chunk_tokens=chunk_size, overlap_tokens=overlap
        )
        version = next(v for v in client.list_versions(row.id) if v.number == job.version)
        typer.echo(
            f"building index version {version.number} of {kb} ({version.embedding_model}, "
            f"{version.embedding_dim}-d, {version.chunk_tokens}/{version.overlap_tokens} "
            f"tokens); job {job.id}"
        )
        _finish(client, row, job, no_wait)


def _finish(client: Client, kb: KnowledgeBase, job: Job, no_wait: bool) -> None:
    """Follow a version's job (unless --no-wait), then report its checks and outcome."""
    if no_wait:
        typer.echo(f"queued; follow it with `rag jobs show {job.id}`")
        return
    number = job.version
    job = follow_job(client, job, f"version {number}")
    version = next(v for v in client.list_versions(kb.id) if v.number == number)
    local.report_checks(version.checks)
    if job.status != "succeeded" or version.status != "live":
        fail(f"index version {number} is {version.status}: {job.error or version.error}")
    typer.echo(f"index version {number} is live")


@reindex_app.command("rollback")
def reindex_rollback(
    kb: KbOpt,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="queue the job and return")] = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """Make the previous (most recent retired) index version live again.

    The current one is retired, not deleted: nothing is lost."""
    with connect(url, api_key) as client:
        row = resolve_kb(client, kb)
        job = client.rollback(row.id)
        typer.echo(f"rolling back {kb} to index version {job.version}; job {job.id}")
        _finish(client, row, job, no_wait)


@reindex_app.command("prune")
def reindex_prune(
    kb: KbOpt,
    keep: Annotated[
        int | None,
        typer.Option(
            "--keep",
            help="versions to keep, the live one included (default RAG_INDEX__KEEP_VERSIONS)",
        ),
    ] = None,
    yes: YesOpt = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """Delete the data of retired index versions beyond the most recent ones.

    Their chunks, vectors and index files go; never the live version or one being built.
    Asks first; --yes skips the question (and is needed without a terminal)."""
    if keep is not None and keep < 1:
        fail("--keep must be at least 1 (the live version)")
    with connect(url, api_key) as client:
        row = resolve_kb(client, kb)
        kept = f"the newest {keep}" if keep else "the server's RAG_INDEX__KEEP_VERSIONS"
        confirm(
            f"Delete the data of retired index versions of {row.name!r} beyond {kept}? "
            "They can no longer be rolled back to.",
            yes,
        )
        pruned = client.prune_versions(row.id, keep)
    if pruned:
        typer.echo(f"pruned index version(s) {', '.join(map(str, pruned))} of {kb}")
    else:
        typer.echo(f"nothing to prune in {kb}")


@reindex_app.command("versions")
def reindex_versions(kb: KbOpt, url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None) -> None:
    """List the index versions of a knowledge base."""
    with connect(url, api_key) as client:
        rows = client.list_versions(resolve_kb(client, kb).id)
    for v in rows:
        typer.echo(
            f"v{v.number}  {v.status:9}  {v.embedding_model} ({v.embedding_dim}-d)  "
            f"{v.chunk_tokens}/{v.overlap_tokens} tokens  {v.chunks} chunks in "
            f"{v.documents} documents" + (f"  error: {v.error}" if v.error else "")
        )


# --------------------------------------------------------------------------- jobs

jobs_app = typer.Typer(
    help="Background jobs (ingestion, re-index, evaluation): list, show, cancel.",
    invoke_without_command=True,
)


def _job_line(job: Job) -> str:
    where = f"#{job.queue_position}" if job.queue_position is not None else (job.stage or "")
    what = job.filename or (f"version {job.version}" if job.version else "")
    if not what and job.progress.get("total"):
        what = f"{job.progress.get('done') or 0:g}/{job.progress['total']:g}"
    line = f"{job.id}  {job.kind:13}  {job.status:9}  {where:8}  {what}"
    return line.rstrip() + (f"  ({job.error})" if job.error else "")


@jobs_app.callback()
def jobs(
    ctx: typer.Context,
    kb: Annotated[str | None, typer.Option("--kb", help="only this knowledge base")] = None,
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, ...")] = None,
    kind: Annotated[str | None, typer.Option(help="ingest, reindex, eval, ...")] = None,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 100,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """List jobs, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    with connect(url, api_key) as client:
        kb_id = resolve_kb(client, kb).id if kb else None
        rows = client.list_jobs(status=status, kind=kind, kb_id=kb_id, limit=limit)
    for job in rows:
        typer.echo(_job_line(job))
    if not rows:
        typer.echo("no jobs", err=True)


@jobs_app.command("show")
def jobs_show(job_id: str, url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None) -> None:
    """One job as JSON: status, progress, error and result."""
    with connect(url, api_key) as client:
        job = client.get_job(job_id)
    typer.echo(json.dumps(job.raw, indent=2, ensure_ascii=False))


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None) -> None:
    """Cancel a job: a queued one at once, a running one at its next stage."""
    with connect(url, api_key) as client:
        job = client.cancel_job(job_id)
    typer.echo(_job_line(job))
