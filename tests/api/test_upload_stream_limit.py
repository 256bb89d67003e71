"""The upload limit holds for chunked bodies too: 413 long before the whole body is sent, and
nothing of it is left on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.body_limit import ENVELOPE
from rag.services import Services
from tests.conftest import make_settings, serving

LIMIT = 64 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Services]]:
    settings = make_settings(tmp_path / "data")
    settings.ingest.max_upload_bytes = LIMIT
    svc = Services.create(settings)
    try:
        with serving(create_app(services=svc, start_worker=False, warm_up=False)) as url:
            yield url, svc
    finally:
        svc.close()


def _multipart(sent: list[int], total: int) -> Iterator[bytes]:
    boundary = b"xyzBOUNDARY"
    yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.txt"'
    yield b"\r\nContent-Type: text/plain\r\n\r\n"
    piece = "很长的上传内容。".encode() * 1000
    while sent[0] < total:
        sent[0] += len(piece)
        yield piece
    yield b"\r\n--" + boundary + b"--\r\n"


def test_chunked_upload_over_the_limit_is_cut_off(server: tuple[str, Services]) -> None:
    url, svc = server
    with httpx.Client(base_url=url, timeout=60) as http:
        kb = http.post("/v1/knowledge-bases", json={"name": "limits"}).json()["id"]
        sent = [0]
        total = 200 * 1024 * 1024  # far more than the limit: it must never all be sent
        try:
            resp = http.post(
                f"/v1/knowledge-bases/{kb}/documents",
                content=_multipart(sent, total),
                headers={"content-type": "multipart/form-data; boundary=xyzBOUNDARY"},
            )
        except httpx.HTTPError:
            resp = None  # the server may close the socket while we are still sending
        if resp is not None:
            assert resp.status_code == 413, resp.text
            assert "limit" in resp.json()["error"]["message"]
        assert sent[0] < total // 4, sent[0]  # stopped early, not after the whole body
        assert http.get(f"/v1/knowledge-bases/{kb}/documents").json()["documents"] == []
        small = http.post(
            f"/v1/knowledge-bases/{kb}/documents",
            files={"file": ("ok.txt", "正常大小的文件。".encode())},
        )
        assert small.status_code == 202
    leftovers = [p for p in (svc.settings.data_dir / "tmp").glob("*") if p.is_file()]
    assert not leftovers


def test_declared_length_over_the_limit_is_413_without_reading(
    server: tuple[str, Services],
) -> None:
    url, _ = server
    with httpx.Client(base_url=url, timeout=30) as http:
        kb = http.post("/v1/knowledge-bases", json={"name": "declared"}).json()["id"]
        body = b"x" * (LIMIT + ENVELOPE + 1)
        resp = http.post(
            f"/v1/knowledge-bases/{kb}/documents",
            content=body,
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert resp.status_code == 413
