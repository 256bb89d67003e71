"""Generate docs/configuration.md from the Settings class in rag/core/config.py.

Usage:
    .venv/bin/python scripts/gen_config_docs.py          # (re)write docs/configuration.md
    .venv/bin/python scripts/gen_config_docs.py --check  # exit 1 when the file is out of date

Every setting comes from the pydantic model: its environment variable (the settings' prefix,
nested groups joined with the nested delimiter), type, default and constraints. The human
descriptions are the comments in rag/core/config.py: the comment lines right above a field and a
comment at the end of its line, read from the source with `tokenize`; a model's docstring
describes its group. tests/test_docs.py fails when the committed page differs from this
script's output, so a new setting cannot go undocumented.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import sys
import tokenize
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "configuration.md"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Groups whose model has no docstring get this one-line summary (keyed by the field name in
# Settings). A key that is no longer a group is an error, so this cannot go stale.
GROUP_SUMMARIES = {
    "": "Where the service keeps its data, where it listens, and its background loops.",
    "embedding": "The embedding model that turns chunks and questions into vectors.",
    "llm": (
        "The OpenAI-compatible LLM server (vLLM in production), timeouts, retries, the circuit "
        "breaker, prompt budgets, conversations, routing, and what `rag llm serve` starts."
    ),
    "chunking": "How documents are cut into chunks (sizes in Qwen2.5 tokens).",
    "ingest": "Upload limits, the sandboxed parser processes, and the background workers.",
    "retrieval": "Search: modes, fusion, candidates, reranking, and the dense index layout.",
    "tokenizer": "Token counting for prompt budgets and chunk sizes.",
}

# Notes added after a setting's own comment, for what the source states in code rather than in
# a comment (validators, units, where a value is used). Keyed by environment variable.
NOTES = {
    "RAG_DATA_DIR": "Holds the SQLite file, stored uploads (`files/`), index caches (`index/`).",
    "RAG_HOST": "Where `rag serve` listens. On any address but loopback API keys are required.",
    "RAG_PORT": "Where `rag serve` listens.",
    "RAG_EMBEDDING__MODEL": "A path that does not exist is refused at startup.",
    "RAG_EMBEDDING__DEVICE": "`cuda` on a GPU host.",
    "RAG_EMBEDDING__BATCH_SIZE": "Passages per encode call.",
    "RAG_EMBEDDING__MAX_SEQ_LENGTH": "Longest input the embedding model reads, in its tokens.",
    "RAG_LLM__BASE_URL": "Must start with `http://` or `https://`.",
    "RAG_LLM__MODEL": "The model name sent to the server (vLLM's `--served-model-name`).",
    "RAG_LLM__API_KEY": "Bearer token sent to the LLM server.",
    "RAG_LLM__READ_TIMEOUT_S": "Also the longest wait between two streamed tokens; not retried.",
    "RAG_LLM__MAX_RETRIES": "Retries on connection errors and upstream 429/502/503/504.",
    "RAG_LLM__MAX_TOKENS": "Tokens reserved for the answer in the prompt budget.",
    "RAG_LLM__MAX_MODEL_LEN": "131072 makes `rag llm serve` turn on YaRN rope scaling.",
    "RAG_LLM__ROUTES": "A JSON list of route objects; see [LLM routes](#llm-routes).",
    "RAG_INGEST__MAX_UPLOAD_BYTES": "Larger uploads are answered 413 while they stream.",
    "RAG_INGEST__MAX_PAGES": "Pages, sheets or slides; longer documents fail with a reason.",
    "RAG_INGEST__MAX_DECOMPRESSED_BYTES": (
        "Limit on what a DOCX, XLSX or PPTX archive may unpack to (XLSX/PPTX media not counted)."
    ),
    "RAG_INGEST__PARSE_TIMEOUT_S": "Wall-clock limit of one parse in the child process.",
    "RAG_INGEST__PARSE_MEMORY_MB": "Memory limit of the parser child process.",
    "RAG_INGEST__POLL_INTERVAL_S": "How often an idle worker looks for queued jobs.",
    "RAG_INGEST__MAX_ATTEMPTS": "Then the document fails with the reason.",
    "RAG_RETRIEVAL__TOP_K": "Passages per search or ask when the request names none.",
    "RAG_RETRIEVAL__MAX_TOP_K": "The largest `top_k` a request may ask for.",
    "RAG_RETRIEVAL__RRF_K": "The k of reciprocal rank fusion.",
    "RAG_RETRIEVAL__RERANKER_MODEL": "Hub name or local folder (a CrossEncoder).",
    "RAG_RETRIEVAL__RERANKER_DEVICE": "`cuda` on a GPU host.",
    "RAG_SECURITY__REQUESTS_PER_MINUTE": "Per key (GCRA: a burst of the limit, then a rate).",
    "RAG_SECURITY__CONCURRENT_GENERATIONS": "Answers being generated at a time, per key.",
    "RAG_SECURITY__UPLOAD_BYTES_PER_DAY": "Upload bytes per key per UTC day.",
    "RAG_CACHE__ENABLED": "`false` turns the answer cache off.",
    "RAG_CACHE__TTL_S": "Entries older than this expire.",
    "RAG_TRACING__SERVICE_NAME": "The OpenTelemetry service name.",
    "RAG_TRACING__SAMPLE_RATIO": "Share of traces sampled.",
    "RAG_LOG_LEVEL": "Log level of the service; `RAG_LOG__LEVEL` overrides it.",
    "RAG_LOG__FORMAT": "`text` shows `[request id]` on each line; `json` writes one object a line.",
    "RAG_LLM__CONNECT_TIMEOUT_S": "Seconds to connect to the LLM server; a timeout is retried.",
    "RAG_LLM__RETRY_BACKOFF_MAX_S": "The longest wait between two retries.",
    "RAG_LLM__BREAKER_RESET_S": "Seconds an open circuit answers 503 at once, before a trial call.",
    "RAG_LLM__TEMPERATURE": "Sampling temperature of answers; a request may set its own.",
    "RAG_LLM__CONDENSE_MAX_TOKENS": (
        "Budget of the call that rewrites a follow-up into a standalone question."
    ),
    "RAG_LLM__LANGUAGE": "Language of the prompt templates; `auto` follows the question.",
    "RAG_LLM__GPU_MEMORY_UTILIZATION": "vLLM's `--gpu-memory-utilization` in `rag llm serve`.",
    "RAG_LLM__TENSOR_PARALLEL_SIZE": "vLLM's `--tensor-parallel-size` in `rag llm serve`.",
    "RAG_LLM__LOCAL_MODEL": (
        "The model `rag llm serve` runs with `transformers serve` where there is no GPU or no "
        "vllm (fetched by `rag models fetch`)."
    ),
    "RAG_INGEST__PARSE_CHILD_RSS_MB": "A parser child whose resident memory grew past this is "
    "replaced.",
    "RAG_RETRIEVAL__DENSE_WEIGHT": "The dense share in either fusion (0.3 measured better on "
    "English text with a Chinese embedding model).",
    "RAG_RETRIEVAL__RERANK_CANDIDATES": "Fused passages the cross-encoder reads.",
    "RAG_RETRIEVAL__IVF_NPROBE": "IVF lists probed per query.",
    # keys of list entries: model name and key
    "LLMRoute.name": "Reported as `route` in answers and in the LLM metrics.",
    "LLMRoute.model": "The model name sent to this route's server.",
    "LLMRoute.max_tokens": "Default: RAG_LLM__MAX_TOKENS.",
}


@dataclass
class Row:
    env: str
    type: str
    default: str
    constraints: str
    description: str


def _comments(source: str) -> tuple[dict[int, str], dict[int, str]]:
    """Full-line comments and end-of-line comments of a source, by line number."""
    own_line: dict[int, str] = {}
    trailing: dict[int, str] = {}
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        row, col = token.start
        text = token.string.lstrip("#").strip()
        if lines[row - 1][:col].strip():
            trailing[row] = text
        else:
            own_line[row] = text
    return own_line, trailing


class SourceComments:
    """The comments that describe each field of each class in one module's source."""

    def __init__(self, source: str) -> None:
        own_line, trailing = _comments(source)
        self.fields: dict[tuple[str, str], str] = {}
        self.defaults: dict[tuple[str, str], str] = {}
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.ClassDef):
                continue
            for stmt in node.body:
                if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                    continue
                above: list[str] = []
                line = stmt.lineno - 1
                while line in own_line:
                    above.insert(0, own_line[line])
                    line -= 1
                after = [
                    trailing[n]
                    for n in range(stmt.lineno, stmt.end_lineno or stmt.lineno)
                    if n in trailing
                ]
                if (stmt.end_lineno or stmt.lineno) in trailing:
                    after.append(trailing[stmt.end_lineno or stmt.lineno])
                text = " ".join(above + after).strip()
                key = (node.name, stmt.target.id)
                self.fields[key] = text
                default = _default_expression(stmt.value)
                if default is not None:
                    self.defaults[key] = default


def _default_expression(value: ast.expr | None) -> str | None:
    """The default as written, when it is arithmetic (e.g. `100 * 1024 * 1024`)."""
    if value is None:
        return None
    if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "Field" and value.args:
        value = value.args[0]
    if isinstance(value, ast.BinOp):
        return ast.unparse(value)
    return None


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        name = " or ".join(_type_name(a) for a in rest)
        return f"{name}, optional" if len(rest) < len(args) else name
    if origin is list:
        inner = _type_name(args[0]) if args else "any"
        return f"JSON list of {inner}"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "object"
        if issubclass(annotation, Path):
            return "path"
        return annotation.__name__
    return str(annotation)


def _default_text(field: Any, written: str | None) -> str:
    value = field.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, Path):
        text = str(value)
    elif isinstance(value, list):
        text = "[]" if not value else repr(value)
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    out = f"`{text}`" if text else '`""`'
    if written is not None:
        out += f" (`{written}`)"
    return out


_BOUNDS = {
    "ge": "≥",
    "gt": ">",
    "le": "≤",
    "lt": "<",
    "min_length": "length ≥",
    "max_length": "length ≤",
}


def _constraints(field: Any) -> str:
    parts: list[str] = []
    for meta in field.metadata:
        for attr, symbol in _BOUNDS.items():
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(
                    f"{symbol} {value:,}" if isinstance(value, int) else f"{symbol} {value}"
                )
    return ", ".join(parts)


def _sentence(text: str) -> str:
    """A comment as a sentence: a capital for a plain first word, a closing full stop."""
    text = text.strip()
    if not text:
        return text
    first = text.split()[0].rstrip(":,")
    if first.isalpha() and first.islower():
        text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?)" else text + "."


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _list_model_of(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) is list:
        args = typing.get_args(annotation)
        if args:
            return _model_of(args[0])
    return None


def _table(rows: list[Row], first: str) -> list[str]:
    out = [f"| {first} | type | default | allowed | description |", "|---|---|---|---|---|"]
    for row in rows:
        out.append(
            f"| `{row.env}` | {_cell(row.type)} | {_cell(row.default)} | "
            f"{_cell(row.constraints)} | {_cell(row.description)} |"
        )
    return out


def _docstring(model: type) -> str:
    own = model.__dict__.get("__doc__")  # a class's own docstring, never an inherited one
    return " ".join(inspect.cleandoc(own).split()) if own else ""


class _Reference:
    """Collects the rows of every group; remembers which NOTES were used."""

    def __init__(self, comments: SourceComments, delimiter: str) -> None:
        self.comments = comments
        self.delimiter = delimiter
        self.used_notes: set[str] = set()
        self.lists: list[tuple[str, type[BaseModel]]] = []

    def rows(
        self,
        model: type[BaseModel],
        prefix: str,
        *,
        env_names: bool = True,
        only: str | None = None,
    ) -> list[Row]:
        rows: list[Row] = []
        for name, field in model.model_fields.items():
            if only is not None and name != only:
                continue
            nested = _model_of(field.annotation)
            if nested is not None:  # a group inside a group: a longer prefix
                rows += self.rows(nested, f"{prefix}{name}{self.delimiter}")
                continue
            env = f"{prefix}{name}".upper() if env_names else name
            inner = _list_model_of(field.annotation)
            if inner is not None and env_names:
                self.lists.append((env, inner))
            key = (model.__name__, name)
            note_key = env if env_names else f"{model.__name__}.{name}"
            description = _sentence(field.description or self.comments.fields.get(key, ""))
            note = NOTES.get(note_key)
            if note:
                self.used_notes.add(note_key)
                description = f"{description} {note}".strip()
            rows.append(
                Row(
                    env,
                    _type_name(field.annotation),
                    _default_text(field, self.comments.defaults.get(key)),
                    _constraints(field),
                    description,
                )
            )
        return rows


def render() -> str:
    """The text of docs/configuration.md."""
    from rag.core import config
    from rag.core.config import Settings

    source = Path(inspect.getsourcefile(config) or "").read_text(encoding="utf-8")
    env_prefix = Settings.model_config.get("env_prefix") or ""
    delimiter = Settings.model_config.get("env_nested_delimiter") or "__"
    ref = _Reference(SourceComments(source), delimiter)

    top_level: list[Row] = []
    groups: list[tuple[str, type[BaseModel]]] = []
    for name, field in Settings.model_fields.items():
        model = _model_of(field.annotation)
        if model is not None:
            groups.append((name, model))
        else:
            top_level += ref.rows(Settings, env_prefix, only=name)
    unknown = set(GROUP_SUMMARIES) - {""} - {name for name, _ in groups}
    if unknown:
        raise SystemExit(f"GROUP_SUMMARIES names groups Settings no longer has: {sorted(unknown)}")

    paragraphs = inspect.cleandoc(config.__doc__ or "").split("\n\n")
    module_doc = " ".join(paragraphs[1].split()) if len(paragraphs) > 1 else ""
    example = f"`{env_prefix}LLM{delimiter}BASE_URL`"
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by scripts/gen_config_docs.py from rag/core/config.py. Do not edit:",
        "     run `.venv/bin/python scripts/gen_config_docs.py` after changing a setting. -->",
        "",
        "All settings live in one object, `Settings` in `rag/core/config.py`, built once per "
        "process and handed to everything that needs it.",
    ]
    if module_doc:
        lines += ["", module_doc]
    lines += [
        "",
        f"Environment variables start with `{env_prefix}`. A setting inside a group joins the "
        f"group and the setting with `{delimiter}` (for example {example}). Names are not "
        "case-sensitive. Lists and objects are written as JSON. Every setting that names a "
        "model also accepts a local folder with the model's files.",
        "",
        "This page is generated from the source by `scripts/gen_config_docs.py`: the "
        "descriptions are the comments beside each field, and a test fails when the page is "
        "out of date. *allowed* lists the bounds a value is checked against; a value outside "
        "them stops the service at startup.",
        "",
        "## General",
        "",
        GROUP_SUMMARIES[""],
        "",
        *_table(top_level, "variable"),
    ]
    for name, model in groups:
        prefix = f"{env_prefix}{name}{delimiter}".upper()
        rows = ref.rows(model, prefix)
        lines += ["", f"## {name}", "", f"Variables `{prefix}*`."]
        summary = _docstring(model) or GROUP_SUMMARIES.get(name, "")
        if summary:
            lines += ["", summary]
        lines += ["", *_table(rows, "variable")]
    for env, model in ref.lists:
        title = "LLM routes" if model.__name__ == "LLMRoute" else f"Entries of {env}"
        lines += ["", f"## {title}", "", f"Each entry of `{env}` is a JSON object with these keys."]
        summary = _docstring(model)
        if summary:
            lines += ["", summary]
        lines += ["", *_table(ref.rows(model, "", env_names=False), "key")]

    stale = set(NOTES) - ref.used_notes
    if stale:
        raise SystemExit(f"NOTES names settings that no longer exist: {sorted(stale)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if docs/configuration.md differs from the generated text",
    )
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(
                f"{args.output} is out of date: run python scripts/gen_config_docs.py",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
