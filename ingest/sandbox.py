"""Parse untrusted bytes in a child process with memory, CPU and wall-clock limits.

A parser that hangs, balloons or crashes takes down only its child; the worker reports the
document as failed with a reason and goes on. Children come from a forkserver, so they do not
inherit the parent's threads or loaded models.
"""

from __future__ import annotations

import multiprocessing
import resource
from multiprocessing.connection import Connection
from pathlib import Path

from ingest.parsers import ParseError, parse
from ingest.parsers.base import ParsedDocument, ParseLimits
from rag.errors import IngestionError

_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(["ingest.parsers"])


def _child(
    conn: Connection, path: str, filename: str, limits: ParseLimits, memory_mb: int, cpu_s: int
) -> None:
    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    try:
        result: tuple[str, object] = ("ok", parse(Path(path).read_bytes(), filename, limits))
    except ParseError as exc:
        result = ("error", str(exc))
    except MemoryError:
        result = ("error", f"parsing needed more than {memory_mb} MB of memory")
    except Exception as exc:  # a parser bug must still fail only this document
        result = ("error", f"the parser failed: {exc.__class__.__name__}: {exc}")
    conn.send(result)
    conn.close()


def parse_isolated(
    path: Path, filename: str, limits: ParseLimits, *, timeout_s: float, memory_mb: int
) -> ParsedDocument:
    receiver, sender = _CTX.Pipe(duplex=False)
    proc = _CTX.Process(
        target=_child,
        args=(sender, str(path), filename, limits, memory_mb, max(1, int(timeout_s))),
        daemon=True,
    )
    proc.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            raise IngestionError(f"parsing took longer than {timeout_s:g} s and was stopped")
        try:
            status, payload = receiver.recv()
        except EOFError:
            proc.join(5)
            raise IngestionError(
                f"the parser process died (exit code {proc.exitcode}); the file is probably "
                f"malformed or needs more than {memory_mb} MB"
            ) from None
    finally:
        receiver.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)
    if status != "ok":
        raise IngestionError(str(payload))
    assert isinstance(payload, ParsedDocument)
    return payload
