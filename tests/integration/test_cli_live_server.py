"""The quickstart's command line against a real `rag serve` process with the real offline
embedding model: `rag ingest data/samples --kb demo --create --wait` twice (the second run finds
duplicates), then `rag search` and `rag ask`, each a fresh process that must load no model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag.ml.offline_models import OfflineModels
from tests.integration.service_process import REPO, ServiceProcess

pytestmark = pytest.mark.integration

# What a process that embeds or searches itself would import.
PROBE = """
import atexit, json, sys
HEAVY = ("torch", "sentence_transformers", "transformers", "faiss", "numpy", "sqlalchemy",
         "rag.ml", "rag.services", "rag.index", "rag.retrieval")
atexit.register(lambda: print("LOADED=" + json.dumps(sorted(m for m in HEAVY if m in sys.modules)),
                              file=sys.stderr))
sys.argv = ["rag", *json.loads(sys.argv[1])]
from rag.cli.main import main
main()
"""


def rag(url: str, *args: str) -> tuple[int, str, str, list[str]]:
    """`rag ARGS` as its own process (RAG_URL=url, no RAG_DATA_DIR): exit status, stdout,
    stderr without the probe's line, and the heavy modules it imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | {"RAG_URL": url}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(args))],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = done.stderr.splitlines()
    loaded = json.loads(next(x for x in lines if x.startswith("LOADED=")).split("=", 1)[1])
    rest = "\n".join(x for x in lines if not x.startswith("LOADED="))
    return done.returncode, done.stdout, rest, loaded


def test_the_quickstart_commands_against_a_real_server(
    tmp_path: Path, offline_models: OfflineModels
) -> None:
    env = {
        "RAG_DATA_DIR": str(tmp_path / "data"),
        "RAG_EMBEDDING__MODEL": str(offline_models.m3e_small),
        "RAG_TOKENIZER__PATH": str(offline_models.qwen_tiktoken),
        "RAG_LLM__BASE_URL": "http://127.0.0.1:9/v1",  # no LLM: answers fail, passages do not
        "RAG_LLM__MAX_RETRIES": "0",
    }
    service = ServiceProcess(env, tmp_path / "service.log")
    service.start(timeout=300)
    try:
        samples = [str(REPO / "data" / "samples")]
        code, out, err, loaded = rag(service.url, "ingest", *samples, "--kb", "demo", "--wait")
        assert code == 1 and "no knowledge base 'demo'" in err and "--create" in err

        args = ["ingest", *samples, "--kb", "demo", "--create", "--wait"]
        code, out, err, loaded = rag(service.url, *args)
        assert code == 0, err
        assert "created knowledge base 'demo'" in out and "failed: 0" in out
        assert loaded == [] and err == ""  # quiet; uploading needs no model either
        code, out, err, _ = rag(service.url, *args)
        assert code == 0 and "ready: 0, failed: 0" in out and "rejected: 0" in out, out

        code, out, err, loaded = rag(service.url, "search", "年假有多少天", "--kb", "demo")
        assert code == 0 and "员工手册" in out.splitlines()[0], (out, err)
        assert loaded == [] and err == ""

        code, out, err, loaded = rag(
            service.url, "ask", "年假有多少天？", "--kb", "demo", "--retrieval-only"
        )
        assert code == 0 and out.startswith("[1] ") and loaded == []
        code, out, err, loaded = rag(service.url, "ask", "年假有多少天？", "--kb", "demo")
        assert code == 1 and "llm_unavailable" in err and loaded == []
    finally:
        service.kill()
