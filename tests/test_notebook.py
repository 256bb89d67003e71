"""notebooks/quickstart.ipynb runs top to bottom against an in-process app."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_notebook_executes(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBEDDING__MODEL", "fake:64")
    monkeypatch.setenv("RAG_LLM__BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    monkeypatch.setenv("RAG_LLM__MAX_RETRIES", "0")
    monkeypatch.delenv("RAG_BASE_URL", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    source = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    assert "from rag.client import" in source and "import httpx" not in source
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO / "notebooks")}},
    ).execute()
    outputs = "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "ready chunks:" in outputs
    assert "员工手册.pdf" in outputs
    assert "cannot reach the LLM at http://127.0.0.1:9/v1" in outputs
    assert "[1] " in outputs
    assert "talking to http://127.0.0.1:" in outputs  # over a real socket, through the client
    assert "no stream: 503 llm_unavailable" in outputs  # ask_stream refused before a token
