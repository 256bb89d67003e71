"""llama.cpp's OpenAI-compatible server (llama-cpp-python) on a GGUF file: start it on the CPU.

The CPU fallback route: a quantised GGUF model that answers while the GPU server is down or
absent (`rag llm serve --backend llamacpp`). Readiness and shutdown are local_server's
(`wait_until_ready`, `stop`); `start_llamacpp_server` lists the server's quirks.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from rag.generation.local_server import (
    LLMServerError,
    ServerProcess,
    ensure_port_free,
    serve_until_exit,
)

GGUF_MAGIC = b"GGUF"
INSTALL_HINT = (
    "llama-cpp-python is not installed: pip install -e '.[llamacpp]' (it compiles llama.cpp "
    "from source: docs/deployment.md#llamacpp-gguf-on-the-cpu says how long that takes)"
)


def served_model_name(gguf: Path) -> str:
    """The "model" a chat request names: `gguf/<file name without .gguf>`."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", gguf.name.removesuffix(".gguf")).strip("-.")
    return f"gguf/{stem or 'model'}"


def check_gguf(gguf: Path) -> Path:
    """The resolved path of a readable GGUF file; LLMServerError saying what is wrong if not."""
    path = gguf.expanduser().resolve()
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise LLMServerError(
            f"cannot read the GGUF model {path} ({exc.strerror}); set RAG_LLM__GGUF_MODEL or run "
            "`rag models fetch`, which keeps SmolLM2-135M-Instruct's GGUF"
        ) from exc
    if magic != GGUF_MAGIC:
        raise LLMServerError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
    return path


def llamacpp_argv(
    gguf: Path,
    host: str,
    port: int,
    *,
    n_ctx: int,
    threads: int,
    alias: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command line of llama-cpp-python's server for one GGUF model."""
    argv = [python, "-m", "llama_cpp.server", "--model", str(gguf)]
    argv += ["--model_alias", alias or served_model_name(gguf)]
    argv += ["--host", host, "--port", str(port), "--n_ctx", str(n_ctx)]
    # Prompt reading (batch) on the same threads as decoding: more would spin on a busy box.
    argv += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    return [*argv, "--verbose", "false"]


def start_llamacpp_server(
    gguf: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_file: Path | None = None,
    *,
    n_ctx: int = 4096,
    threads: int | None = None,
) -> ServerProcess:
    """Start llama-cpp-python's server on gguf in its own process group; returns at once.

    Follow with wait_until_ready(). threads: CPU threads, default OMP_NUM_THREADS or 1 (the
    reason is the one start_transformers_serve gives). How the server behaves:

    - It loads the model before it binds the port: once GET /v1/models answers, it is ready.
      /v1/models lists the one model under its alias (`served_model_name`); a request may name
      any model, it is answered by this one.
    - It ignores request fields it does not know (vLLM's `repetition_penalty`, and
      `stream_options`, so streams carry no usage); its own `repeat_penalty` defaults to 1.1.
      Streams end with `data: [DONE]`; answers echo the requested model name.
    - `response_format` must be `{"type": "json_object", "schema": ...}` (a grammar built from
      the schema); `json_schema` gets 500 (a validation error naming response_format), after
      which LLMClient sends the other form.
    - A prompt over n_ctx gets 400 in OpenAI's words ("maximum context length is N tokens").
    """
    if importlib.util.find_spec("llama_cpp") is None:
        raise LLMServerError(INSTALL_HINT)
    path = check_gguf(gguf)
    ensure_port_free(host, port)
    own_log = log_file is None
    if log_file is None:
        fd, log_name = tempfile.mkstemp(prefix="llamacpp-server-", suffix=".log")
        os.close(fd)
        log_file = Path(log_name)
    threads = threads or int(os.environ.get("OMP_NUM_THREADS") or 1)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = llamacpp_argv(path, host, port, n_ctx=n_ctx, threads=threads)
    with open(log_file, "ab") as log:
        proc = ServerProcess(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,  # own process group: stop() kills it whole
        )
    proc.hub_dir, proc.log_file, proc.own_log = None, log_file, own_log
    return proc


def main(argv: list[str] | None = None) -> int:
    """`python -m rag.generation.llamacpp_server --model FILE.gguf`: serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, required=True, help="a .gguf file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--n-ctx", type=int, default=4096, help="context length in tokens")
    parser.add_argument("--threads", type=int, help="CPU threads (default 1)")
    parser.add_argument("--log-file", type=Path)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for ready")
    args = parser.parse_args(argv)
    try:
        proc = start_llamacpp_server(
            args.model, args.host, args.port, args.log_file, n_ctx=args.n_ctx, threads=args.threads
        )
    except LLMServerError as exc:
        print(exc, file=sys.stderr)
        return 1
    settings = {
        "RAG_LLM__MODEL": served_model_name(args.model),
        "RAG_LLM__MAX_MODEL_LEN": str(args.n_ctx),
    }
    return serve_until_exit(proc, args.host, args.port, args.timeout, settings)


if __name__ == "__main__":
    sys.exit(main())
