"""The `rag` command line against a live server (uvicorn in a thread, the fake embedder, the LLM
faked at the transport): the client commands in-process with CliRunner, and in a subprocess to
show that search and ask load no model there; confirmations, quiet output, and the commands that
work on the data directory refusing one that does not exist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from rag.cli import common
from rag.cli.main import app
from rag.client import Client
from tests.cli_live import LiveServer, live_server
from tests.conftest import REPO

runner = CliRunner()
SAMPLES = REPO / "data" / "samples"


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    with live_server(tmp_path, monkeypatch) as server:
        yield server


def rag(*args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.output


def sample_folder(tmp_path: Path) -> tuple[Path, int]:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    samples = [p for p in SAMPLES.iterdir() if p.suffix in (".md", ".pdf", ".docx")]
    for src in samples:
        (folder / "sub" / src.name).write_bytes(src.read_bytes())
    return folder, len(samples)


def test_ingest_search_ask_and_reindex_through_the_server(live: LiveServer, tmp_path: Path) -> None:
    folder, n = sample_folder(tmp_path)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n" + b"garbage" * 50)
    (folder / "ignored.bin").write_bytes(b"\x00\x01")

    code, out = rag("ingest", str(folder), "--kb", "handbook", "--create", "--wait")
    assert code == 2, out  # one failed document -> exit status 2
    assert "created knowledge base 'handbook'" in out
    assert f"ready: {n}, failed: 1, duplicate: 0, rejected: 0" in out
    assert "failed" in out and "broken.pdf" in out and "ignored.bin" not in out

    code, out = rag("ingest", str(folder / "sub"), "--kb", "handbook", "--wait")
    assert code == 0 and f"duplicate: {n}" in out, out

    code, out = rag("kb", "list")
    assert code == 0 and "handbook" in out and f"documents={n + 1}" in out

    code, out = rag("search", "年假有多少天", "--kb", "handbook", "--top-k", "2")
    assert code == 0 and "员工手册.pdf p." in out, out
    code, out = rag("documents", "--kb", "handbook", "--status", "failed")
    assert code == 0 and "broken.pdf" in out and "员工手册" not in out

    code, out = rag("ask", "年假有多少天？", "--kb", "handbook", "--retrieval-only")
    assert code == 0 and out.startswith("[1] "), out
    code, out = rag("ask", "年假有多少天？", "--kb", "handbook")
    assert code == 0 and out.startswith(live.llm.reply) and "\n[1] " in out, out
    live.llm.reply = "我不知道。"  # cites nothing: the command says so
    code, out = rag("ask", "病假怎么请？", "--kb", "handbook")
    assert code == 0 and "note: the answer cites none of the passages" in out
    live.llm.fail_with = httpx.ConnectError("connection refused")
    code, out = rag("ask", "加班费怎么算？", "--kb", "handbook")
    assert code == 1 and "llm_unavailable" in out and "Traceback" not in out

    code, out = rag("reindex", "--kb", "handbook", "--cache-only")
    assert code == 0 and "rebuilt index of handbook" in out, out
    code, out = rag("reindex", "--kb", "handbook", "--chunk-size", "64")
    assert code == 0, out
    assert "building index version 2" in out
    assert "dense_hit_rate=" in out and "index version 2 is live" in out
    code, out = rag("reindex", "versions", "--kb", "handbook")
    assert "v1  retired" in out and "v2  live" in out and "64/0 tokens" in out
    code, out = rag("reindex", "rollback", "--kb", "handbook")
    assert code == 0 and "index version 1 is live" in out, out

    code, out = rag("jobs", "--kb", "handbook", "--kind", "reindex")
    assert code == 0 and out.count("succeeded") == 2, out
    live.app.state.worker.stop()  # the next job stays queued
    code, out = rag("reindex", "--kb", "handbook", "--no-wait")
    assert code == 0 and "queued" in out
    job_id = out.split("rag jobs show ")[1].split("`")[0]
    code, out = rag("reindex", "--kb", "handbook")
    assert code == 1 and "conflict" in out  # a version is being built
    code, out = rag("jobs", "show", job_id)
    assert code == 0 and json.loads(out)["status"] == "queued"
    code, out = rag("jobs", "cancel", job_id)
    assert code == 0 and "cancelled" in out
    assert rag("reindex")[0] != 0  # --kb is required


def test_ingest_refuses_an_unknown_knowledge_base_and_missing_files(
    live: LiveServer, tmp_path: Path
) -> None:
    assert rag("kb", "create", "demo")[0] == 0
    note = tmp_path / "note.md"
    note.write_text("# 通知\n\n年假十天。\n", encoding="utf-8")

    code, out = rag("ingest", str(note), "--kb", "demmo")
    assert code == 1 and "no knowledge base 'demmo'" in out
    assert "Did you mean 'demo'?" in out and "--create" in out
    code, out = rag("ingest", str(tmp_path / "missing.pdf"), "--kb", "demo")
    assert code == 1 and "not found" in out and "missing.pdf" in out
    code, out = rag("ingest", str(note), str(tmp_path / "missing.pdf"), "--kb", "demo", "--create")
    assert code == 1 and "missing.pdf" in out  # nothing is sent when a path is missing
    with Client(live.url) as client:
        assert [kb.name for kb in client.list_kbs()] == ["demo"]
        assert client.list_documents("demo") == []

    code, out = rag("ingest", str(note), "--kb", "demo")
    assert code == 0 and "queued: 1, duplicate: 0, rejected: 0" in out, out
    code, out = rag("ingest", str(note), "--kb", "demo", "--wait")
    assert code == 0 and "duplicate: 1" in out, out
    code, out = rag("ingest", str(note), "--kb", "demo", "--engine", "ray")
    assert code == 1 and "--local" in out


def test_destructive_commands_confirm_or_take_yes(
    live: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    note = tmp_path / "note.md"
    note.write_text("# 通知\n\n年假十天。\n", encoding="utf-8")
    assert rag("ingest", str(note), "--kb", "hr", "--create", "--wait")[0] == 0

    def kbs() -> list[str]:
        return rag("kb", "list")[1].split()

    code, out = rag("kb", "delete", "hr")  # no terminal, no --yes: refused
    assert code == 1 and "--yes" in out and "hr" in kbs()
    code, out = rag("documents", "delete", "note.md", "--kb", "hr")
    assert code == 1 and "--yes" in out
    code, out = rag("reindex", "prune", "--kb", "hr")
    assert code == 1 and "--yes" in out

    monkeypatch.setattr(common, "_interactive", lambda: True)
    code, out = rag("kb", "delete", "hr", input="n\n")
    assert code == 1 and "cancelled" in out and "hr" in kbs()
    code, out = rag("documents", "delete", "note.md", "--kb", "hr", input="y\n")
    assert code == 0 and "deleted 1 document(s)" in out
    assert "no documents in hr" in rag("documents", "--kb", "hr")[1]
    code, out = rag("kb", "delete", "hr", input="y\n")
    assert code == 0 and "deleted hr" in out and "hr" not in kbs()

    assert rag("kb", "create", "tmp")[0] == 0
    monkeypatch.setattr(common, "_interactive", lambda: False)
    code, out = rag("kb", "delete", "tmp", "--yes")
    assert code == 0 and "tmp" not in kbs()
    code, out = rag("kb", "delete", "nothing-here", "--yes")
    assert code == 1 and "no knowledge base 'nothing-here'" in out


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`rag ARGS` in a fresh interpreter; it reports on stderr, at exit, which modules of a
    model stack (or of the server) were imported."""
    code = (
        "import atexit, json, sys\n"
        "HEAVY = ('torch', 'sentence_transformers', 'transformers', 'faiss', 'numpy',\n"
        "         'sqlalchemy', 'rag.ml', 'rag.services', 'rag.index', 'rag.retrieval')\n"
        "def report():\n"
        "    loaded = sorted(m for m in HEAVY if m in sys.modules)\n"
        "    print('LOADED=' + json.dumps(loaded), file=sys.stderr)\n"
        "atexit.register(report)\n"
        f"sys.argv = ['rag', *{list(args)!r}]\n"
        "from rag.cli.main import main\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _loaded(stderr: str) -> list[str]:
    line = next(x for x in stderr.splitlines() if x.startswith("LOADED="))
    return json.loads(line.removeprefix("LOADED="))


def test_search_and_ask_load_no_model_in_the_cli_process(live: LiveServer, tmp_path: Path) -> None:
    with Client(live.url) as client:
        client.create_kb("handbook")
        for path in SAMPLES.iterdir():
            if path.suffix in (".md", ".pdf", ".docx"):
                doc = client.upload("handbook", path)
                client.wait_until_ready("handbook", doc.id, timeout=60, poll_interval=0.05)

    found = _run_cli("search", "年假有多少天", "--kb", "handbook", "--url", live.url)
    assert found.returncode == 0, found.stderr
    assert "员工手册.pdf" in found.stdout
    assert _loaded(found.stderr) == []
    # Quiet: nothing on stderr but the report of the probe.
    assert [x for x in found.stderr.splitlines() if not x.startswith("LOADED=")] == []

    answered = _run_cli("ask", "年假有多少天？", "--kb", "handbook")  # the URL from RAG_URL
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.startswith(live.llm.reply) and "[1] " in answered.stdout
    assert _loaded(answered.stderr) == []

    nowhere = _run_cli("kb", "list", "--url", "http://127.0.0.1:9")
    assert nowhere.returncode == 1 and "cannot reach the server at http://127.0.0.1:9" in (
        nowhere.stderr
    )


def test_quiet_by_default_and_verbose_shows_logs(tmp_path: Path) -> None:
    quiet = _run_cli("db", "upgrade", env={"RAG_DATA_DIR": str(tmp_path / "a")})
    assert quiet.returncode == 0, quiet.stderr
    assert "database schema is up to date" in quiet.stdout
    assert [x for x in quiet.stderr.splitlines() if not x.startswith("LOADED=")] == []

    loud = _run_cli("-v", "db", "upgrade", env={"RAG_DATA_DIR": str(tmp_path / "b")})
    assert loud.returncode == 0, loud.stderr
    assert " INFO " in loud.stderr


LOCAL_COMMANDS = [
    ["doctor"],
    ["doctor", "--dry-run"],
    ["doctor", "--quarantined"],
    ["worker"],
    ["backup", "{tmp}/backup"],
    ["keys", "list"],
    ["keys", "create", "--scopes", "admin"],
    ["ingest", "{tmp}/note.md", "--kb", "demo", "--create", "--local"],
    ["reindex", "--kb", "demo", "--local"],
]


def test_local_commands_refuse_a_missing_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "nowhere"
    monkeypatch.setenv("RAG_DATA_DIR", str(data))
    monkeypatch.setenv("RAG_EMBEDDING__MODEL", "fake:64")
    (tmp_path / "note.md").write_text("# 通知\n\n年假十天。\n", encoding="utf-8")
    for args in LOCAL_COMMANDS:
        code, out = rag(*(a.format(tmp=tmp_path) for a in args))
        assert code == 1, (args, out)
        assert "no data directory at" in out and "RAG_DATA_DIR" in out, (args, out)
        assert "rag db upgrade" in out
        assert not data.exists(), args

    code, out = rag("db", "upgrade")  # its job is to create it
    assert code == 0 and (data / "rag.db").is_file()
    code, out = rag("doctor", "--dry-run")
    assert code == 0 and "no drift" in out, out
    code, out = rag("ingest", str(tmp_path / "note.md"), "--kb", "demo", "--local")
    assert code == 1 and "--create" in out
    code, out = rag("ingest", str(tmp_path / "note.md"), "--kb", "demo", "--local", "--create")
    assert code == 0 and "ready: 1" in out, out


def test_keys_take_knowledge_base_names_and_revoke_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBEDDING__MODEL", "fake:64")
    assert rag("db", "upgrade")[0] == 0
    from rag.core.config import load_settings
    from rag.services import Services

    svc = Services.create(load_settings())
    kb = svc.knowledge.create_kb("handbook")
    svc.close()
    code, out = rag("keys", "create", "--kb", "handbook", "--scopes", "query")
    assert code == 0, out
    key_id = out.splitlines()[0].split()[1]
    listed = json.loads(rag("keys", "list")[1].splitlines()[0])
    assert listed["kb_ids"] == [kb.id]
    assert rag("keys", "create", "--kb", "nope")[0] == 1
    code, out = rag("keys", "revoke", key_id)
    assert code == 1 and "--yes" in out
    assert rag("keys", "revoke", key_id, "--yes")[0] == 0
