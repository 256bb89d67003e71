"""`rag sync` jobs (issue 17 item 5): a knowledge base kept equal to a local folder and to the
files of a local HTTP server (added, changed, deleted), reported, and run on a schedule."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from rag.services import Services
from tests.conftest import make_settings, wait_for


def _text(tag: str) -> str:
    return f"{tag} 的说明\n\n" + f"这是{tag}的正文，同步标记 {tag}。" * 20


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "source"
    folder.mkdir()
    return folder


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_root(source: Path) -> Iterator[str]:
    """A local HTTP server serving `source` (with Last-Modified and 304 answers)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=source))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def svc(tmp_path: Path, source: Path, http_root: str) -> Iterator[Services]:
    s = Services.create(
        make_settings(
            tmp_path / "data",
            sync={
                "folders": [str(source)],
                "url_prefixes": [http_root],
                "min_interval_s": 0.2,
            },
        )
    )
    yield s
    s.close()


@pytest.fixture
def api(svc: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=svc, start_worker=False, warm_up=False)) as client:
        yield client


def _drain(svc: Services) -> None:
    worker = svc.worker()
    while worker.run_once():
        pass


def _sync(api: TestClient, svc: Services, kb: str, **body: Any) -> dict[str, Any]:
    """Queue a sync, run it and the ingestion it queued; the job's result."""
    queued = api.post(f"/v1/knowledge-bases/{kb}/sync", json=body)
    assert queued.status_code == 202, queued.text
    _drain(svc)
    job = api.get(f"/v1/jobs/{queued.json()['id']}").json()
    assert job["status"] == "succeeded", job
    return dict(job["result"])


def _documents(api: TestClient, kb: str) -> dict[str, dict[str, Any]]:
    docs = api.get(f"/v1/knowledge-bases/{kb}/documents").json()["documents"]
    return {d["key"]: d for d in docs}


def _search_text(api: TestClient, kb: str) -> str:
    hits = api.post(f"/v1/knowledge-bases/{kb}/search", json={"query": "同步标记", "top_k": 50})
    return "".join(h["text"] for h in hits.json()["results"])


def _kb(api: TestClient) -> str:
    return str(api.post("/v1/knowledge-bases", json={"name": "synced"}).json()["id"])


def test_sync_keeps_a_kb_equal_to_a_folder(api: TestClient, svc: Services, source: Path) -> None:
    kb = _kb(api)
    (source / "a.txt").write_text(_text("甲一"), encoding="utf-8")
    (source / "sub").mkdir()
    (source / "sub" / "b.md").write_text(_text("乙一"), encoding="utf-8")
    (source / ".hidden.txt").write_text(_text("隐藏"), encoding="utf-8")
    (source / "notes.bin").write_bytes(b"\x00\x01\x02 binary")

    first = _sync(api, svc, kb, folder=str(source))
    assert sorted(first["added"]) == ["a.txt", "sub/b.md"]
    assert [f["key"] for f in first["failed"]] == ["notes.bin"]  # refused like an upload
    docs = _documents(api, kb)
    assert set(docs) == {"a.txt", "sub/b.md"}
    assert all(d["status"] == "ready" and d["external_id"] == key for key, d in docs.items())

    (source / "a.txt").write_text(_text("甲二"), encoding="utf-8")
    (source / "sub" / "b.md").unlink()
    (source / "c.txt").write_text(_text("丙一"), encoding="utf-8")
    second = _sync(api, svc, kb, folder=str(source))
    assert (second["changed"], second["deleted"], second["added"]) == (
        ["a.txt"],
        ["sub/b.md"],
        ["c.txt"],
    )
    docs = _documents(api, kb)
    assert set(docs) == {"a.txt", "c.txt"}
    assert docs["a.txt"]["version"] == 2
    text = _search_text(api, kb)
    assert "甲二" in text and "丙一" in text
    assert "甲一" not in text and "乙一" not in text

    third = _sync(api, svc, kb, folder=str(source))
    assert third["counts"] == {
        "added": 0,
        "changed": 0,
        "deleted": 0,
        "unchanged": 2,
        "duplicates": 0,
        "failed": 1,
    }


def test_a_source_that_lists_nothing_deletes_nothing(
    api: TestClient, svc: Services, source: Path
) -> None:
    kb = _kb(api)
    (source / "a.txt").write_text(_text("甲"), encoding="utf-8")
    _sync(api, svc, kb, folder=str(source))
    (source / "a.txt").unlink()
    report = _sync(api, svc, kb, folder=str(source))
    assert report["deleted"] == [] and report["notes"]
    assert set(_documents(api, kb)) == {"a.txt"}
    kept = _sync(api, svc, kb, folder=str(source), delete_missing=False)
    assert kept["deleted"] == []


def test_sync_refuses_what_the_settings_do_not_allow(
    api: TestClient, tmp_path: Path, source: Path
) -> None:
    kb = _kb(api)
    outside = api.post(f"/v1/knowledge-bases/{kb}/sync", json={"folder": str(tmp_path)})
    assert outside.status_code == 422 and "RAG_SYNC__FOLDERS" in outside.text
    climbing = api.post(
        f"/v1/knowledge-bases/{kb}/sync", json={"folder": str(source / ".." / "..")}
    )
    assert climbing.status_code == 422
    url = api.post(f"/v1/knowledge-bases/{kb}/sync", json={"urls": ["http://example.com/a"]})
    assert url.status_code == 422 and "RAG_SYNC__URL_PREFIXES" in url.text
    both = api.post(
        f"/v1/knowledge-bases/{kb}/sync",
        json={"folder": str(source), "urls": ["http://127.0.0.1:1/a.txt"]},  # both
    )
    assert both.status_code == 422
    often = api.post(
        f"/v1/knowledge-bases/{kb}/sync", json={"folder": str(source), "interval_s": 0.01}
    )
    assert often.status_code == 422


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_links_out_of_the_folder_are_not_followed(
    api: TestClient, svc: Services, source: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(_text("机密"), encoding="utf-8")
    (source / "link.txt").symlink_to(secret)
    (source / "ok.txt").write_text(_text("公开"), encoding="utf-8")
    kb = _kb(api)
    report = _sync(api, svc, kb, folder=str(source))
    assert report["added"] == ["ok.txt"]
    assert report["failed"] == [{"key": "link.txt", "reason": "a link out of the folder"}]
    assert "机密" not in _search_text(api, kb)


def test_sync_keeps_a_kb_equal_to_urls(
    api: TestClient, svc: Services, source: Path, http_root: str
) -> None:
    kb = _kb(api)
    (source / "a.txt").write_text(_text("网甲"), encoding="utf-8")
    (source / "b.txt").write_text(_text("网乙"), encoding="utf-8")
    urls = [f"{http_root}a.txt", f"{http_root}b.txt", f"{http_root}missing.txt"]

    first = _sync(api, svc, kb, urls=urls)
    assert sorted(first["added"]) == urls[:2]
    docs = _documents(api, kb)
    assert {d["filename"] for d in docs.values()} == {"a.txt", "b.txt"}

    (source / "a.txt").unlink()  # 404 now: gone from the source
    (source / "b.txt").write_text(_text("网乙二"), encoding="utf-8")
    os.utime(source / "b.txt", (2e9, 2e9))  # a newer Last-Modified than the first fetch
    second = _sync(api, svc, kb, urls=urls)
    assert (second["changed"], second["deleted"]) == ([urls[1]], [urls[0]])
    text = _search_text(api, kb)
    assert "网乙二" in text and "网甲" not in text

    # Unchanged: answered 304 from the validators the previous run kept.
    third = _sync(api, svc, kb, urls=urls[1:2])
    assert third["counts"]["unchanged"] == 1 and third["counts"]["changed"] == 0


def test_scheduled_sync_runs_again_until_cancelled(
    api: TestClient, svc: Services, source: Path
) -> None:
    kb = _kb(api)
    (source / "a.txt").write_text(_text("定时甲"), encoding="utf-8")
    started = api.post(
        f"/v1/knowledge-bases/{kb}/sync", json={"folder": str(source), "interval_s": 0.2}
    ).json()
    worker = svc.worker()
    worker.start()
    try:
        wait_for(lambda: api.get(f"/v1/jobs/{started['id']}").json()["status"] == "succeeded")
        assert "a.txt" in _documents(api, kb)
        following = api.get(f"/v1/jobs/{started['id']}").json()["result"]["next_job_id"]
        (source / "b.txt").write_text(_text("定时乙"), encoding="utf-8")
        wait_for(lambda: _documents(api, kb).get("b.txt", {}).get("status") == "ready")

        def queued() -> list[dict[str, Any]]:
            jobs = api.get("/v1/jobs", params={"kind": "sync", "kb_id": kb}).json()["jobs"]
            return [j for j in jobs if j["status"] == "queued"]

        wait_for(lambda: bool(queued()))
        assert api.get(f"/v1/jobs/{following}").json()["status"] in ("succeeded", "running")
        # Cancelling the waiting run ends the schedule.
        for job in queued():
            api.post(f"/v1/jobs/{job['id']}/cancel")
        wait_for(
            lambda: (
                not any(
                    j["status"] in ("queued", "running")
                    for j in api.get("/v1/jobs", params={"kind": "sync", "kb_id": kb}).json()[
                        "jobs"
                    ]
                )
            )
        )
        (source / "c.txt").write_text(_text("定时丙"), encoding="utf-8")
        time.sleep(1.0)
        assert "c.txt" not in _documents(api, kb)
    finally:
        worker.stop()


def test_url_prefixes_match_at_a_path_boundary() -> None:
    from rag.core.config import SyncSettings
    from rag.core.errors import InvalidInput
    from rag.kb.sync import check_url

    allowed = SyncSettings(url_prefixes=["https://intra.example.com/docs", "http://h:8000/a/"])
    for good in (
        "https://intra.example.com/docs",
        "https://intra.example.com/docs/x.pdf",
        "https://intra.example.com/docs?page=2",
        "http://h:8000/a/b.txt",
    ):
        assert check_url(good, allowed) == good
    for bad in (
        "https://intra.example.com/docs-private/x.pdf",
        "https://intra.example.com.evil.net/docs/x.pdf",
        "https://intra.example.com/docs/../admin",
        "https://user:pw@intra.example.com/docs/x.pdf",
        "ftp://intra.example.com/docs/x.pdf",
        "http://h:8000/ab.txt",
    ):
        with pytest.raises(InvalidInput):
            check_url(bad, allowed)
