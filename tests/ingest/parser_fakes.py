"""Parse functions for the parser-pool tests, importable by the pool's child processes (which
import this module, not the test module and its heavy conftest)."""

from __future__ import annotations

import os
import signal
import time

from ingest.parsers.base import Block, ParsedDocument, ParseLimits

_kept: list[bytearray] = []  # what "grow" holds on to, as a leaking parser would


def by_name(data: bytes, filename: str, limits: ParseLimits) -> ParsedDocument:
    """Does what the file name says (hang, spin, burn, balloon, crash, grow); answers with the
    id of the process that parsed it."""
    if filename.startswith("hang"):
        time.sleep(3600)
    elif filename.startswith("spin"):
        while True:
            pass
    elif filename.startswith("burn"):  # about 0.6 s of CPU time
        started = time.process_time()
        while time.process_time() - started < 0.6:
            pass
    elif filename.startswith("balloon"):
        _kept.append(bytearray(4 * 1024**3))  # far over the address-space limit
    elif filename.startswith("crash"):
        os.kill(os.getpid(), signal.SIGKILL)
    elif filename.startswith("grow"):
        _kept.append(b"x" * (150 * 1024**2))  # written, so resident
    return ParsedDocument([Block(str(os.getpid()), 1)], 1, "text/plain")


def pid_of(doc: ParsedDocument) -> int:
    return int(doc.blocks[0].text)
