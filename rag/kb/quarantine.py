"""Quarantine: stored files the consistency check set aside, kept so that it can be undone.

A file under files/ that no document row names is moved to quarantine/<same relative path>,
never deleted, and every move (and every move back) is appended to quarantine/log.jsonl with
its time and reason. A document whose file turns out to be in quarantine gets it back
(`restore`) instead of being failed; deleting a document or knowledge base also removes its
quarantined copy (`discard`), so deleted bytes do not linger there.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
DIRNAME = "quarantine"
LOG_NAME = "log.jsonl"


def location(data_dir: Path, relative: str | Path) -> Path:
    """Where the file stored at data_dir/relative lies while quarantined."""
    return data_dir / DIRNAME / relative


def set_aside(data_dir: Path, relative: str, reason: str) -> bool:
    """Move data_dir/relative into quarantine; False when it was gone already (a delete or
    another checker got there first)."""
    target = location(data_dir, relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        # One rename: the file is either still in files/ or in quarantine, never half-copied.
        os.rename(data_dir / relative, target)
    except FileNotFoundError:
        return False
    _record(data_dir, "quarantine", relative, reason)
    log.warning("quarantined %s: %s", relative, reason)
    return True


def restore(data_dir: Path, relative: str, reason: str) -> bool:
    """Move a quarantined file back to data_dir/relative; False when there is none (or the
    original place is taken, which is never overwritten)."""
    source, target = location(data_dir, relative), data_dir / relative
    if not source.is_file() or target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, target)
    except FileNotFoundError:
        return False
    _record(data_dir, "restore", relative, reason)
    log.warning("restored %s from quarantine: %s", relative, reason)
    return True


def discard(data_dir: Path, relative: str | Path) -> None:
    """Remove the quarantined copy of a deleted document's file, or of a whole folder."""
    path = location(data_dir, relative)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def entries(data_dir: Path) -> list[str]:
    """Relative paths (as stored in documents.storage_path) of the files in quarantine."""
    root = data_dir / DIRNAME
    if not root.is_dir():
        return []
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != LOG_NAME
    )


def history(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / DIRNAME / LOG_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _record(data_dir: Path, action: str, relative: str, reason: str) -> None:
    entry = {"at": time.time(), "action": action, "path": relative, "reason": reason}
    with (data_dir / DIRNAME / LOG_NAME).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
