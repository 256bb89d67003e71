"""An upload ends as one complete document or as nothing (issue 14, bad input): a client that
goes away mid-body, a process killed at any step of an upload, the same bytes sent at once."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from api.app import create_app
from rag.services import Services
from rag.store.models import Document
from tests.conftest import REPO, make_settings, serving


def _stored(svc: Services) -> list[Path]:
    """Every file in the served part of the data dir: stored documents and staged uploads."""
    roots = [svc.settings.files_dir, svc.settings.data_dir / "tmp"]
    return [p for root in roots if root.is_dir() for p in root.rglob("*") if p.is_file()]


def _documents(svc: Services) -> int:
    with svc.db.read() as session:
        return int(session.execute(select(func.count()).select_from(Document)).scalar_one())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Services]]:
    svc = Services.create(make_settings(tmp_path / "data"))
    try:
        with serving(create_app(services=svc, start_worker=False, warm_up=False)) as url:
            yield url, svc
    finally:
        svc.close()


def test_client_that_disconnects_mid_upload_leaves_nothing(server: tuple[str, Services]) -> None:
    url, svc = server
    with httpx.Client(base_url=url, timeout=30) as http:
        kb = http.post("/v1/knowledge-bases", json={"name": "gone"}).json()["id"]
    port = int(url.rsplit(":", 1)[1])
    boundary = "cutBOUNDARY"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode() + "只发了一半的文件。".encode() * 2000
    request = (
        f"POST /v1/knowledge-bases/{kb}/documents HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(head) * 4}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request + head)  # a quarter of the declared body, then the client is gone
    with httpx.Client(base_url=url, timeout=30) as http:
        # The server is still healthy, and the next upload is unaffected.
        ok = http.post(
            f"/v1/knowledge-bases/{kb}/documents",
            files={"file": ("ok.txt", "完整的文件。".encode())},
        )
        assert ok.status_code == 202
        listed = http.get(f"/v1/knowledge-bases/{kb}/documents").json()["documents"]
    assert [d["filename"] for d in listed] == ["ok.txt"]
    svc.doctor.examine(repair=True, grace_s=0)  # past the grace period
    assert [p.name for p in _stored(svc)] == [listed[0]["id"]]


def test_the_same_bytes_uploaded_at_once_give_one_document(server: tuple[str, Services]) -> None:
    url, svc = server
    with httpx.Client(base_url=url, timeout=60) as http:
        kb = http.post("/v1/knowledge-bases", json={"name": "same"}).json()["id"]
    body = "同一份文件，同时上传八次。".encode() * 50
    answers: list[httpx.Response] = []
    start = threading.Barrier(8)

    def send() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            start.wait()
            answers.append(
                http.post(f"/v1/knowledge-bases/{kb}/documents", files={"file": ("s.txt", body)})
            )

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r.status_code for r in answers).count(202) == 1
    assert {r.json()["id"] for r in answers} == {answers[0].json()["id"]}
    assert all(r.json()["duplicate"] for r in answers if r.status_code == 200)
    assert _documents(svc) == 1
    assert len([p for p in _stored(svc) if svc.settings.files_dir in p.parents]) == 1


# The upload path, run in a child process that dies (os._exit, like SIGKILL: no cleanup, no
# finally) at one of its steps.
_CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from rag.kb import knowledge
    from rag.services import Services
    from ingest import upload
    from tests.conftest import make_settings

    data_dir, kb_id, step = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    svc = Services.create(make_settings(data_dir))

    def die(*_args, **_kwargs):
        os._exit(9)

    if step == "staging":  # the body is half in tmp/ when the process dies
        real_fsync = upload.os.fsync
        upload.os.fsync = lambda fd: (real_fsync(fd), die())
    elif step == "moved":  # the file is in files/, its row not yet committed
        place = knowledge._place_file
        knowledge._place_file = lambda s, t: (place(s, t), die())
    elif step == "committed":  # the row is committed, the 202 never sent
        add = knowledge.KnowledgeBases.add_document
        knowledge.KnowledgeBases.add_document = lambda *a, **k: (add(*a, **k), die())
    with open(sys.argv[4], "rb") as fh:
        staged = upload.stage_upload(fh, "文件.txt", data_dir, 10**7)
    svc.knowledge.add_document(kb_id, staged)
    os._exit(0)
    """
)


@pytest.mark.parametrize("step", ["staging", "moved", "committed", "none"])
def test_a_process_killed_at_any_step_of_an_upload_leaves_a_document_or_nothing(
    tmp_path: Path, step: str
) -> None:
    settings = make_settings(tmp_path / "data")
    svc = Services.create(settings)
    try:
        kb = svc.knowledge.create_kb("kb")
        source = tmp_path / "upload.txt"
        source.write_text("重启时正在上传的文件。" * 30, encoding="utf-8")
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(settings.data_dir), kb.id, step, str(source)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert child.returncode == (0 if step == "none" else 9), child.stderr
        # After the restart: the check past its grace period, then the worker.
        svc.doctor.examine(repair=True, grace_s=0)
        worker = svc.worker()
        while worker.run_once():
            pass
        with svc.db.read() as session:
            docs = list(session.execute(select(Document)).scalars())
        if step in ("staging", "moved"):
            # Never acknowledged: no document, nothing staged or stored (an unacknowledged
            # file is set aside in quarantine/, outside what is served, and logged).
            assert docs == [] and _stored(svc) == []
        else:
            [doc] = docs
            assert doc.status == "ready", doc.error
            assert [p.name for p in _stored(svc)] == [doc.id]
        assert svc.doctor.examine(repair=True, grace_s=0) == []
    finally:
        svc.close()
