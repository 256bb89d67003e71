"""`transformers serve` as the CPU stand-in for vLLM: start, wait until ready, stop.

wait_until_ready and stop serve llama.cpp's server (rag/generation/llamacpp_server.py) too.

`transformers serve` (transformers 5.x, needs `transformers[serving]`) preloads the one model
it is pinned to before it binds its port, so once the port answers the model is loaded. A model
folder is served through a throwaway hub cache, named `local/<folder name>`
(`served_model_name`); `start_transformers_serve` lists the server's quirks.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from rag.core.errors import LLMUnavailable

# Any 40-hex string: the hub cache wants a commit-like snapshot name behind refs/main.
_REVISION = "0" * 40
_LOG_TAIL_CHARS = 4000
_KILLED_GRACE_S = 2.0  # for a SIGKILLed group to be reaped


class LLMServerError(LLMUnavailable):
    """The local LLM server did not start; the message carries its log tail."""


class ServerProcess(subprocess.Popen[bytes]):
    """The server's Popen, remembering its log and the temporary files stop() removes."""

    hub_dir: Path | None  # transformers serve's throwaway hub cache
    log_file: Path
    own_log: bool


def served_model_name(model_dir: Path) -> str:
    """The value for a chat request's "model" field when model_dir is served by this module."""
    name = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]+", "-", model_dir.name)).strip("-.")
    return f"local/{name or 'model'}"


def start_transformers_serve(
    model_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_file: Path | None = None,
    *,
    threads: int | None = None,
) -> ServerProcess:
    """Start `transformers serve` on model_dir in its own process group; returns at once.

    Follow with wait_until_ready(). Output goes to log_file (a temporary file if None).
    threads: torch CPU threads; default OMP_NUM_THREADS if set, else 1, because OpenMP threads
    that spin on a shared, busy machine wreck decoding: for SmolLM2-135M on 2 cores we measured
    32 tokens in ~2 s on one thread, and 1.4 s idle but 5-40 s under load on two; for the
    offline stand-in, Qwen2.5-Coder-0.5B, 4-6 tokens/s on one thread but 1-2 on two under load
    (bench/stand_in_models.py).

    How `transformers serve` behaves, and what we do about it:

    - `transformers serve MODEL --device cpu --host H --port P` preloads MODEL before it binds
      the port, pins the server to it, and answers POST /v1/chat/completions (stream or not)
      and GET /v1/models. Once the port answers, the model is loaded.
    - A request whose "model" differs from MODEL gets 400 ("Server is pinned to ..."); answers
      name the model as "MODEL@main".
    - MODEL is a hub id or a folder, but GET /v1/models only lists the Hugging Face cache (and
      fails with 500 when there is none). So we serve a folder through a private, throwaway
      hub cache holding symlinks to it (`_hub_view`): the model is named `local/<folder name>`
      (`served_model_name`), /v1/models lists exactly it, and HF_HUB_OFFLINE keeps the child
      off the network.
    - Streams carry usage in the last chunk and end without a `data: [DONE]` line.
    """
    model_dir = model_dir.expanduser().resolve()
    if not (model_dir / "config.json").is_file():
        raise LLMServerError(f"{model_dir} is not a transformers model folder (no config.json)")
    ensure_port_free(host, port)
    name = served_model_name(model_dir)
    hub_dir = _hub_view(model_dir, name)
    own_log = log_file is None
    if log_file is None:
        fd, log_name = tempfile.mkstemp(prefix="transformers-serve-", suffix=".log")
        os.close(fd)
        log_file = Path(log_name)
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(hub_dir),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",  # else the CLI asks PyPI for a newer transformers
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": str(threads or os.environ.get("OMP_NUM_THREADS") or 1),
    }
    cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", name]
    cmd += ["--device", "cpu", "--host", host, "--port", str(port)]
    try:
        with open(log_file, "ab") as log:
            proc = ServerProcess(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: stop() kills it whole
            )
    except OSError:
        shutil.rmtree(hub_dir, ignore_errors=True)
        raise
    proc.hub_dir, proc.log_file, proc.own_log = hub_dir, log_file, own_log
    return proc


def wait_until_ready(
    base_url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll GET {base_url}/models until it answers 200; raise LLMServerError otherwise.

    With proc (from start_transformers_serve), fail as soon as it exits, with its log tail.
    """
    url = base_url.rstrip("/") + "/models"
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    with httpx.Client(timeout=2.0) as client:
        while True:
            if proc is not None and proc.poll() is not None:
                raise LLMServerError(
                    f"the LLM server exited with status {proc.returncode} before it was ready"
                    f"{_log_tail(proc)}"
                )
            try:
                response = client.get(url)
                if response.status_code == 200:
                    return
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise LLMServerError(
                    f"the LLM server at {base_url} was not ready after {timeout_s:.0f}s "
                    f"({last_error}){_log_tail(proc)}"
                )
            time.sleep(0.25)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM the server's process group, SIGKILL what is left of it after timeout_s; return
    once the whole group is gone, not only its leader; remove temp files."""
    deadline = time.monotonic() + timeout_s
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:  # group gone, or proc was never a group leader
        if proc.poll() is None:
            proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout_s)
    # Children of the server (workers, resource trackers) can outlive it by a moment, holding
    # its port or GPU memory: wait for them too, then kill whatever still stands.
    if proc.returncode is None or not _group_gone(proc.pid, deadline):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # not a group leader: kill the process itself
            if proc.poll() is None:
                proc.kill()
        proc.wait()
        _group_gone(proc.pid, time.monotonic() + _KILLED_GRACE_S)
    if isinstance(proc, ServerProcess):
        if proc.hub_dir is not None:
            shutil.rmtree(proc.hub_dir, ignore_errors=True)
        if proc.own_log:
            proc.log_file.unlink(missing_ok=True)


def _group_gone(pgid: int, deadline: float) -> bool:
    """Wait until no process of group `pgid` is left, or the deadline passes."""
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _hub_view(model_dir: Path, name: str) -> Path:
    """A throwaway hub cache in which `name` resolves to model_dir's files (symlinked)."""
    org, repo = name.split("/")
    hub_dir = Path(tempfile.mkdtemp(prefix="kbqa-hf-hub-"))
    repo_dir = hub_dir / f"models--{org}--{repo}"
    snapshot = repo_dir / "snapshots" / _REVISION
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(_REVISION)
    for path in model_dir.iterdir():
        if path.is_file() and not path.name.startswith("."):
            (snapshot / path.name).symlink_to(path)
    return hub_dir


def ensure_port_free(host: str, port: int) -> None:
    # Otherwise wait_until_ready could be answered by whatever already listens there.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise LLMServerError(f"cannot serve on {host}:{port}: {exc.strerror}") from exc


def _log_tail(proc: subprocess.Popen[bytes] | None) -> str:
    if not isinstance(proc, ServerProcess):
        return ""
    try:
        text = proc.log_file.read_bytes()[-_LOG_TAIL_CHARS:].decode("utf-8", "replace")
    except OSError:
        return ""
    return f"\n--- last lines of {proc.log_file} ---\n{text}"


def main(argv: list[str] | None = None) -> int:
    """`python -m rag.generation.local_server --model-dir DIR`: serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-file", type=Path)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for ready")
    args = parser.parse_args(argv)

    proc = start_transformers_serve(
        args.model_dir, args.host, args.port, args.log_file, threads=args.threads
    )
    model = served_model_name(args.model_dir.expanduser().resolve())
    return serve_until_exit(proc, args.host, args.port, args.timeout, {"RAG_LLM__MODEL": model})


def serve_until_exit(
    proc: ServerProcess, host: str, port: int, timeout: float, settings: dict[str, str]
) -> int:
    """Wait until `proc` answers, print the settings that point the service at it
    (RAG_LLM__BASE_URL first, then `settings`), and serve until it exits or is killed."""
    # SIGTERM from a shell script's `kill` must take the server's process group down too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        base_url = f"http://{host}:{port}/v1"
        wait_until_ready(base_url, timeout, proc)
        print(f"RAG_LLM__BASE_URL={base_url}", flush=True)
        for name, value in settings.items():
            print(f"{name}={value}", flush=True)
        return proc.wait()
    except LLMServerError as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        stop(proc)


if __name__ == "__main__":
    sys.exit(main())
