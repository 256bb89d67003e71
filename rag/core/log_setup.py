"""Process-wide logging: plain text or one JSON object per line, with the request id.

`configure()` runs once at startup (`rag` CLI, `rag serve`). A log record factory stamps every
record with the current request id (rag/core/request_context.py) when the record is made, so the id
is right whichever handler formats the record later, and in whichever thread. Settings:
RAG_LOG__FORMAT (text | json) and RAG_LOG__LEVEL (default RAG_LOG_LEVEL).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

from rag.core import request_context, tracing
from rag.core.config import Settings

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged,
# except uvicorn's ANSI-coloured copy of its message.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
    "color_message",
}
_SCALARS = (str, int, float, bool, type(None))
_install_lock = threading.Lock()
_installed = False
_HANDLER_MARK = "_kbqa_handler"


def install_record_factory() -> None:
    """Stamp `request_id` (and `trace_id` while tracing) on every record; idempotent."""
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            record.request_id = request_context.current()
            trace_id = tracing.current_trace_id()
            if trace_id is not None:
                record.trace_id = trace_id
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, extras, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, _SCALARS) else repr(value)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The usual one-line format, with `[request id]` after the logger name when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.request_tag = f" [{request_id}]" if request_id else ""
        return super().format(record)


def level_of(settings: Settings) -> str:
    return settings.log.level or settings.log_level


def configure(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Send every logger's records (uvicorn's included) to one handler on the root logger."""
    install_record_factory()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log.format == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in list(root.handlers):  # ours from an earlier call, or basicConfig's default
        if getattr(old, _HANDLER_MARK, False) or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_of(settings))
