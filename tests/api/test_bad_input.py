"""Bad input gets a clear 4xx or a failed document with a reason; nothing else is harmed."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader, PdfWriter

from rag.core.config import Settings
from tests.conftest import FILES, upload, wait_document

PDF = (FILES / "R-FAQ.pdf").read_bytes()


@pytest.fixture
def kb(client: TestClient) -> str:
    return client.post("/v1/knowledge-bases", json={"name": "bad"}).json()["id"]


def _encrypted_pdf() -> bytes:
    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(PDF)).pages[:2]:
        writer.add_page(page)
    writer.encrypt(user_password="secret", owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "status"),
    [
        ("empty.txt", b"", 422),
        ("tool.exe", b"MZ\x90\x00" + b"\x00" * 100, 415),
        ("report.pdf", b"\x7fELF\x02\x01\x01" + b"\x00" * 200, 415),
        ("memo.docx", b"this is not a zip file at all" * 10, 415),
        ("picture.gif", b"GIF89a" + b"\x00" * 64, 415),
        ("picture.png", b"\xff\xd8\xff\xe0" + b"\x00" * 64, 415),  # a JPEG named .png
    ],
)
def test_rejected_at_upload(
    client: TestClient, kb: str, name: str, data: bytes, status: int
) -> None:
    resp = upload(client, kb, name, data)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["message"]
    assert client.get(f"/v1/knowledge-bases/{kb}/documents").json()["documents"] == []


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("truncated.pdf", PDF[:3000], ""),
        ("locked.pdf", _encrypted_pdf(), "encrypted"),
        ("nul.txt", b"\x00" * 4096, ""),
    ],
)
def test_failed_with_reason_and_others_unharmed(
    client: TestClient, kb: str, name: str, data: bytes, reason: str
) -> None:
    resp = upload(client, kb, name, data)
    if resp.status_code in (415, 422):  # rejected up front is fine too, with a message
        assert resp.json()["error"]["message"]
    else:
        assert resp.status_code == 202, resp.text
        state = wait_document(client, kb, resp.json()["id"])
        assert state["status"] == "failed"
        assert state["error"] and reason in state["error"].lower()
    good = upload(client, kb, "good.txt", "正常的文档，可以检索。".encode())
    assert wait_document(client, kb, good.json()["id"])["status"] == "ready"
    assert client.get("/healthz").status_code == 200


def test_over_size_limit_is_413(
    tmp_path: Path, client: TestClient, kb: str, settings: Settings
) -> None:
    limit = settings.ingest.max_upload_bytes
    settings.ingest.max_upload_bytes = 1000
    try:
        resp = upload(client, kb, "big.txt", b"a" * 5000)
    finally:
        settings.ingest.max_upload_bytes = limit
    assert resp.status_code == 413
    assert "limit" in resp.json()["error"]["message"]
    assert not list((settings.data_dir / "tmp").glob("*"))


def test_path_traversal_filename_stays_in_data_dir(
    client: TestClient, kb: str, settings: Settings
) -> None:
    resp = upload(client, kb, "../../escape.txt", "路径穿越测试内容。".encode())
    assert resp.status_code == 202
    doc = resp.json()
    assert doc["filename"] == "escape.txt"
    assert wait_document(client, kb, doc["id"])["status"] == "ready"
    root = settings.data_dir.resolve()
    assert not (root.parent / "escape.txt").exists()
    assert not (root.parent.parent / "escape.txt").exists()
    for path in root.rglob("*"):
        assert root in path.resolve().parents or path.resolve() == root
    assert all("escape" not in p for p in os.listdir(root))


def test_unknown_kb_and_bad_metadata(client: TestClient, kb: str) -> None:
    assert upload(client, "missing", "a.txt", b"hello").status_code == 404
    resp = upload(client, kb, "a.txt", b"hello world", data={"metadata": "{not json"})
    assert resp.status_code == 422
    resp = client.post(f"/v1/knowledge-bases/{kb}/search", json={"query": ""})
    assert resp.status_code == 422
