"""Parse untrusted bytes in pooled child processes with memory, CPU and wall-clock limits.

A parser that hangs, balloons or crashes takes down only its child; the worker reports the
document as failed with a reason and goes on, and the next document gets a fresh child.
Children are reused and come from a forkserver (`ParserPool` says why, and why not a
standard-library pool).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from ingest.parsers import ParseError, parse
from ingest.parsers.base import ParsedDocument, ParseLimits
from ingest.parsers.ocr import page_progress
from rag.core.errors import IngestionError

_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(["ingest.parsers", "openpyxl"])
_MB = 1024 * 1024

# bytes, file name, limits -> document; raises ParseError with a reason a user can read.
ParseFn = Callable[[bytes, str, ParseLimits], ParsedDocument]
# (pages done, pages to do) of the slow part of a parse (OCR), as the child reports it.
ProgressFn = Callable[[int, int], None]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_bytes() -> int:
    try:  # the resident size now; ru_maxrss is the peak, which never comes down
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _serve(conn: Connection, memory_mb: int, parse_fn: ParseFn) -> None:
    """The child: parse one document per request until the pipe closes."""
    memory = memory_mb * _MB
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # OCR says when each page is done; the parent hears it before the document's answer.
    page_progress.set(lambda done, total: conn.send(("progress", done, total)))
    while True:
        try:
            path, filename, limits, cpu_s = conn.recv()
        except EOFError:
            return
        # RLIMIT_CPU counts the child's whole life: allow this document cpu_s seconds more.
        # Going past it raises SIGXCPU, which kills the child.
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = math.ceil(_cpu_seconds()) + cpu_s
        resource.setrlimit(
            resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard)
        )
        try:
            result: tuple[str, object] = ("ok", parse_fn(Path(path).read_bytes(), filename, limits))
        except ParseError as exc:
            result = ("error", str(exc))
        except MemoryError:
            result = ("memory", f"parsing needed more than {memory_mb} MB of memory")
        except Exception as exc:  # a parser bug must still fail only this document
            result = ("error", f"the parser failed: {exc.__class__.__name__}: {exc}")
        conn.send((*result, _rss_bytes()))


class _Child:
    def __init__(self, memory_mb: int, parse_fn: ParseFn) -> None:
        self.conn, theirs = _CTX.Pipe(duplex=True)
        self.proc = _CTX.Process(
            target=_serve, args=(theirs, memory_mb, parse_fn), name="rag-parser", daemon=True
        )
        self.proc.start()
        theirs.close()
        self.documents = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def stop(self) -> None:
        self.conn.close()
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)


class ParserPool:
    """Child processes that parse one document at a time each, under `memory_mb` of address
    space, `timeout_s` of wall-clock time and as many seconds of CPU per document.

    As many children run as threads call `parse` at once; up to `max_idle` wait between
    documents. Thread-safe.

    Children are reused: starting one costs about 0.1 s, more than parsing a small text file,
    so a child serves documents until it has parsed `max_documents` of them or its memory grew
    past `max_rss_mb` (a parser's heap rarely shrinks), and is then replaced. Children come
    from a forkserver, so they do not inherit the parent's threads or loaded models.

    Why not concurrent.futures.ProcessPoolExecutor or multiprocessing.Pool: neither can stop the
    one task that hangs (a timeout only stops waiting for it), and a worker that dies breaks a
    ProcessPoolExecutor for every pending task and leaves a multiprocessing.Pool result waiting
    forever. Here each child is driven over its own pipe by the one thread that checked it out,
    so the parent kills exactly the child that overran and starts another.
    """

    def __init__(
        self,
        *,
        memory_mb: int,
        max_documents: int = 200,
        max_rss_mb: int = 512,
        max_idle: int = 4,
        parse_fn: ParseFn = parse,
    ) -> None:
        self.memory_mb = memory_mb
        self.max_documents = max_documents
        self.max_rss_mb = max_rss_mb
        self.max_idle = max_idle
        self._parse_fn = parse_fn
        self._idle: list[_Child] = []
        self._lock = threading.Lock()
        self._closed = False

    def parse(
        self,
        path: Path,
        filename: str,
        limits: ParseLimits,
        *,
        timeout_s: float,
        cpu_s: float | None = None,
        on_progress: ProgressFn | None = None,
    ) -> ParsedDocument:
        """Parse in a child; IngestionError with a reason when the file or a limit fails it.
        The document may use `cpu_s` seconds of CPU time (default: as many as `timeout_s`).
        `on_progress(done, total)` hears of each OCRed page; what it raises stops the parse
        (the child is replaced)."""
        task = (str(path), filename, limits, max(1, math.ceil(cpu_s or timeout_s)))
        child = self._checkout()
        keep = False
        try:
            try:
                child.conn.send(task)
            except OSError:  # it died while idle (killed from outside): not this file's fault
                child.stop()
                child = _Child(self.memory_mb, self._parse_fn)
                child.conn.send(task)
            deadline = time.monotonic() + timeout_s
            while True:
                if not child.conn.poll(max(0.0, deadline - time.monotonic())):
                    raise IngestionError(
                        f"parsing took longer than {timeout_s:g} s and was stopped"
                    )
                try:
                    message = child.conn.recv()
                except (EOFError, OSError):  # it died mid-document
                    child.proc.join(5)
                    raise IngestionError(self._death(child.proc.exitcode, task[3])) from None
                if message[0] != "progress":
                    break
                if on_progress is not None:
                    on_progress(message[1], message[2])
            status, payload, rss = message
            child.documents += 1
            keep = (
                status != "memory"  # a heap that hit the limit may stay fragmented
                and child.documents < self.max_documents
                and rss <= self.max_rss_mb * _MB
            )
        finally:
            self._checkin(child, keep)
        if status != "ok":
            raise IngestionError(str(payload))
        assert isinstance(payload, ParsedDocument)
        return payload

    def pids(self) -> list[int]:
        """The idle children's process ids (for tests and operators)."""
        with self._lock:
            return [c.pid for c in self._idle if c.pid is not None]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            child.stop()

    def _checkout(self) -> _Child:
        with self._lock:
            while self._idle:
                child = self._idle.pop()  # the most recently used: its pages are warm
                if child.proc.is_alive():
                    return child
                child.stop()
        return _Child(self.memory_mb, self._parse_fn)  # outside the lock: it takes a while

    def _checkin(self, child: _Child, keep: bool) -> None:
        with self._lock:
            if keep and not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(child)
                return
        child.stop()

    def _death(self, exitcode: int | None, cpu_s: int) -> str:
        if exitcode == -signal.SIGXCPU:
            return f"parsing used more than {cpu_s} s of CPU time and was stopped"
        return (
            f"the parser process died (exit code {exitcode}); the file is probably malformed "
            f"or needs more than {self.memory_mb} MB"
        )


# One pool per memory limit for this process, made on first use: every caller of
# parse_isolated (the workers' threads, re-index, Ray tasks) shares its warm children.
_shared: dict[int, ParserPool] = {}
_shared_lock = threading.Lock()
_recycle = [200, 512]  # max_documents, max_rss_mb of the shared pools


def configure_shared(*, max_documents: int, max_rss_mb: int) -> None:
    """When the shared pools' children are replaced (the worker applies its settings)."""
    with _shared_lock:
        _recycle[:] = [max_documents, max_rss_mb]
        for pool in _shared.values():
            pool.max_documents, pool.max_rss_mb = max_documents, max_rss_mb


def shared_pool(memory_mb: int) -> ParserPool:
    with _shared_lock:
        pool = _shared.get(memory_mb)
        if pool is None:
            max_documents, max_rss_mb = _recycle
            pool = ParserPool(
                memory_mb=memory_mb, max_documents=max_documents, max_rss_mb=max_rss_mb
            )
            _shared[memory_mb] = pool
        return pool


def _forget_shared_after_fork() -> None:
    # A forked process does not own its parent's children (or a lock a parent thread held).
    global _shared_lock
    _shared.clear()
    _shared_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_shared_after_fork)


def parse_isolated(
    path: Path,
    filename: str,
    limits: ParseLimits,
    *,
    timeout_s: float,
    memory_mb: int,
    pool: ParserPool | None = None,
    on_progress: ProgressFn | None = None,
) -> ParsedDocument:
    """Parse in `pool`, by default this process's shared pool for `memory_mb`."""
    return (pool or shared_pool(memory_mb)).parse(
        path, filename, limits, timeout_s=timeout_s, on_progress=on_progress
    )
