"""The source behind a citation over HTTP: the original file, a PDF page rendered with the cited
chunk highlighted, a document's chunks page by page, and disabling a chunk (out of every index
and every answer, kept in SQL), also under concurrent searches, a rebuild and a second process."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import numpy as np
import pypdfium2 as pdfium
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select, update

from api.app import create_app
from ingest.upload import stage_upload
from rag.client import Client
from rag.core.tenancy import DEFAULT_TENANT
from rag.generation.llm import LLMClient
from rag.kb.chunks import Chunks
from rag.kb.page_render import MAX_PIXELS, MAX_SCALE, PageRenderer, locate
from rag.security import keys
from rag.services import Services
from rag.store.models import Chunk, Document
from tests.conftest import REPO, FakeLLM, make_settings, serving, upload, wait_document

HANDBOOK = REPO / "data" / "samples" / "员工手册.pdf"
# On page 3 of the handbook, wrapped over two lines in the PDF.
FACT = "入职满五年的员工，每年享有十五天带薪年假"
FACT_PAGE = 3
QUERY = "入职满五年 十五天带薪年假"
MODES = ("dense", "lexical", "hybrid")


@pytest.fixture
def kb(client: TestClient) -> str:
    resp = client.post("/v1/knowledge-bases", json={"name": "sources"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _ready(client: TestClient, kb: str, name: str, data: bytes) -> dict[str, Any]:
    resp = upload(client, kb, name, data)
    assert resp.status_code == 202, resp.text
    doc = wait_document(client, kb, resp.json()["id"])
    assert doc["status"] == "ready", doc
    return doc


def _all_chunks(client: TestClient, kb: str, doc_id: str, limit: int = 3) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        url = f"/v1/knowledge-bases/{kb}/documents/{doc_id}/chunks"
        page = client.get(url, params={"offset": len(out), "limit": limit})
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["offset"] == len(out) and body["limit"] == limit
        out += body["chunks"]
        if not body["chunks"]:
            assert len(out) == body["total"]
            return out


def _fact_chunk(client: TestClient, kb: str, doc_id: str) -> dict[str, Any]:
    found = [c for c in _all_chunks(client, kb, doc_id, limit=50) if "十五天带薪年" in c["text"]]
    assert len(found) == 1, found
    return found[0]


def _hits(client: TestClient, kb: str, mode: str, query: str = QUERY) -> list[int]:
    resp = client.post(
        f"/v1/knowledge-bases/{kb}/search", json={"query": query, "top_k": 50, "mode": mode}
    )
    assert resp.status_code == 200, resp.text
    return [r["chunk_id"] for r in resp.json()["results"]]


def _patch(client: TestClient, kb: str, doc_id: str, chunk_id: int, disabled: bool) -> Any:
    return client.patch(
        f"/v1/knowledge-bases/{kb}/documents/{doc_id}/chunks/{chunk_id}",
        json={"disabled": disabled},
    )


# -- the original file ---------------------------------------------------------------------------


def test_the_original_file_comes_back_as_uploaded(
    client: TestClient, kb: str, services: Services
) -> None:
    data = HANDBOOK.read_bytes()
    name = '员工手册 "2025"; final.pdf'
    doc = _ready(client, kb, name, data)
    url = f"/v1/knowledge-bases/{kb}/documents/{doc['id']}/file"
    resp = client.get(url)
    assert resp.status_code == 200
    assert resp.content == data
    assert resp.headers["content-type"] == "application/pdf"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in resp.headers["content-security-policy"]
    disposition = resp.headers["content-disposition"]
    stored = doc["filename"]  # as the multipart encoder sent it (httpx escapes the quotes)
    assert ";" in stored and not stored.isascii()
    # The exact name, percent-encoded; the ASCII stand-in has no quote, semicolon or percent.
    assert disposition.startswith('attachment; filename="')
    assert f"filename*=UTF-8''{quote(stored, safe='')}" in disposition
    assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == stored
    fallback = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert fallback.isascii() and len(fallback) == len(stored)
    assert not set(fallback) & set('";%\\') and fallback.endswith(" final.pdf")

    # A name with quotes and a line break (as another client might send) cannot add a header.
    hostile = '报告 "终稿";\r\nX-Evil: 1.pdf'
    with services.db.write() as session:
        session.execute(update(Document).where(Document.id == doc["id"]).values(filename=hostile))
    resp = client.get(url)
    assert resp.status_code == 200 and "x-evil" not in resp.headers
    disposition = resp.headers["content-disposition"]
    assert disposition.count('"') == 2 and "\n" not in disposition
    assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == hostile


def test_a_stored_path_outside_the_files_folder_is_never_served(
    client: TestClient, kb: str, services: Services
) -> None:
    doc = _ready(client, kb, "notes.txt", "值班电话是 8001。\n".encode())
    url = f"/v1/knowledge-bases/{kb}/documents/{doc['id']}/file"
    secret = services.settings.data_dir / "secret.txt"
    secret.write_text("do not serve me")
    for path in ("secret.txt", "files/../secret.txt", str(secret.resolve())):
        with services.db.write() as session:
            session.execute(
                update(Document).where(Document.id == doc["id"]).values(storage_path=path)
            )
        resp = client.get(url)
        assert resp.status_code == 404, (path, resp.text)
        assert "do not serve me" not in resp.text
    with services.db.write() as session:
        session.execute(
            update(Document).where(Document.id == doc["id"]).values(storage_path=f"files/{kb}/gone")
        )
    resp = client.get(url)
    assert resp.status_code == 404 and "missing" in resp.json()["error"]["message"]
    assert client.get(f"/v1/knowledge-bases/{kb}/documents/{'0' * 32}/file").status_code == 404


# -- rendered pages ------------------------------------------------------------------------------


def _highlighted(png: bytes) -> np.ndarray:
    """The pixels painted by the translucent yellow highlight over white paper."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.asarray((r >= 240) & (g >= 225) & (g <= 252) & (b >= 130) & (b <= 200))


def _char_box_px(page_no: int, text: str, scale: float) -> tuple[int, int, int, int]:
    """Where `text` starts on the page, in the pixels of a render at `scale`."""
    pdf = pdfium.PdfDocument(str(HANDBOOK))
    page = pdf[page_no - 1]
    textpage = page.get_textpage()
    found = textpage.search(text).get_next()
    assert found is not None, text
    left, bottom, right, top = textpage.get_charbox(found[0])
    height = page.get_height()
    box = (left * scale, (height - top) * scale, right * scale, (height - bottom) * scale)
    pdf.close()
    return tuple(int(v) for v in box)  # type: ignore[return-value]


def test_a_page_is_rendered_with_the_cited_chunk_highlighted(
    client: TestClient, kb: str, services: Services
) -> None:
    doc = _ready(client, kb, "handbook.pdf", HANDBOOK.read_bytes())
    chunk = _fact_chunk(client, kb, doc["id"])
    assert chunk["page_start"] <= FACT_PAGE <= chunk["page_end"]
    base = f"/v1/knowledge-bases/{kb}/documents/{doc['id']}/pages"

    resp = client.get(f"{base}/{FACT_PAGE}.png", params={"chunk_id": chunk["id"], "scale": 2})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    assert int(resp.headers["x-highlight-count"]) >= 2  # the sentence wraps over two lines
    pdf = pdfium.PdfDocument(str(HANDBOOK))
    width, height = pdf[FACT_PAGE - 1].get_size()
    pdf.close()
    image = Image.open(io.BytesIO(resp.content))
    assert abs(image.size[0] - width * 2) <= 1 and abs(image.size[1] - height * 2) <= 1
    mask = _highlighted(resp.content)
    assert mask.sum() > 2000
    # The highlight covers the cited sentence where the PDF draws it...
    x0, y0, x1, y1 = _char_box_px(FACT_PAGE, "十五天带薪年", 2)
    assert mask[y0:y1, x0 : x1 + 1].mean() > 0.3
    # ... and not the chapter title at the top of the page, which is another chunk's text.
    tx0, ty0, tx1, ty1 = _char_box_px(FACT_PAGE, "第二章", 2)
    if "第二章" not in chunk["text"]:
        assert not mask[ty0:ty1, tx0:tx1].any()

    plain = client.get(f"{base}/{FACT_PAGE}.png")
    assert plain.status_code == 200 and plain.headers["x-highlight-count"] == "0"
    assert not _highlighted(plain.content).any()

    # Rendered once: the same request is answered from the cache with the same bytes.
    cache = services.settings.data_dir / "cache" / "pages"
    assert len(list(cache.glob("*.png"))) == 2
    again = client.get(f"{base}/{FACT_PAGE}.png", params={"chunk_id": chunk["id"], "scale": 2})
    assert again.content == resp.content and len(list(cache.glob("*.png"))) == 2


def test_page_requests_that_cannot_be_served(client: TestClient, kb: str) -> None:
    pdf = _ready(client, kb, "handbook.pdf", HANDBOOK.read_bytes())
    text = _ready(client, kb, "notes.txt", "值班电话是 8001。\n".encode())
    pages = f"/v1/knowledge-bases/{kb}/documents/{pdf['id']}/pages"
    missing = client.get(f"{pages}/99.png")
    assert missing.status_code == 404 and "7 pages" in missing.json()["error"]["message"]
    assert client.get(f"{pages}/0.png").status_code == 404
    assert client.get(f"{pages}/1.png", params={"scale": 10}).status_code == 422
    assert client.get(f"{pages}/one.png").status_code == 422
    other = _all_chunks(client, kb, text["id"])[0]
    assert client.get(f"{pages}/1.png", params={"chunk_id": other["id"]}).status_code == 404

    refused = client.get(f"/v1/knowledge-bases/{kb}/documents/{text['id']}/pages/1.png")
    assert refused.status_code == 415
    error = refused.json()["error"]
    assert error["code"] == "unsupported_media_type" and "PDF" in error["message"]


def test_a_broken_pdf_fails_its_render_with_a_reason(client: TestClient, kb: str) -> None:
    resp = upload(client, kb, "broken.pdf", b"%PDF-1.7\nthis is not really a PDF\n")
    doc = wait_document(client, kb, resp.json()["id"])
    got = client.get(f"/v1/knowledge-bases/{kb}/documents/{doc['id']}/pages/1.png")
    assert got.status_code == 422
    assert "could not be rendered" in got.json()["error"]["message"]
    assert client.get("/healthz").status_code == 200


def test_locating_a_passage_ignores_spacing_hyphens_and_ligatures() -> None:
    page = "Chapter 2\r\nThe de-\r\nscaling pro\ufb01le runs for 42 min-\r\nutes.\r\nOther text."
    spans = locate(page, "The descaling profile runs for 42 minutes.")
    assert spans and page[spans[0][0] : spans[-1][1] + 1].startswith("The de-")
    assert page[spans[-1][1]] == "s"  # ends on "minutes", not on "Other text"
    assert locate(page, "nothing like this at all") == []
    # Chinese across a line break, and a passage that only partly matches.
    zh = (
        "带薪年假的天数按工龄确定：入职满五年的员工，每年享有十五天带薪年\r\n假；入职当年按月折算。"
    )
    first, last = locate(zh, "入职满五年的员工，每年享有十五天带薪年假")[0]
    assert zh[first] == "入" and zh[last] == "假"
    assert locate(zh, "入职满五年的员工，每年享有十五天带薪年假；另有其他规定写在别处未出现")


# -- chunks --------------------------------------------------------------------------------------


def test_chunks_are_listed_in_order_with_paging(client: TestClient, kb: str) -> None:
    doc = _ready(client, kb, "handbook.pdf", HANDBOOK.read_bytes())
    chunks = _all_chunks(client, kb, doc["id"], limit=3)
    assert len(chunks) == doc["chunks"] > 3
    assert [c["ordinal"] for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c["document_id"] == doc["id"] and c["version"] == 1 and not c["disabled"]
        assert c["text"] and c["token_count"] > 0
        assert 1 <= c["page_start"] <= c["page_end"] <= 7
        assert isinstance(c["heading_path"], list)
    assert chunks[0]["page_start"] == 1 and chunks[-1]["page_end"] == 7
    assert any(c["heading_path"] for c in chunks)
    url = f"/v1/knowledge-bases/{kb}/documents/{doc['id']}/chunks"
    past = client.get(url, params={"offset": 1000}).json()
    assert past["chunks"] == [] and past["total"] == len(chunks)
    assert client.get(url, params={"limit": 0}).status_code == 422
    assert client.get(url, params={"limit": 501}).status_code == 422
    assert client.get(url, params={"offset": -1}).status_code == 422
    gone = f"/v1/knowledge-bases/{kb}/documents/{'0' * 32}/chunks"
    assert client.get(gone).status_code == 404


def test_a_disabled_chunk_leaves_every_index_and_comes_back(
    client: TestClient, kb: str, services: Services
) -> None:
    doc = _ready(client, kb, "handbook.pdf", HANDBOOK.read_bytes())
    chunk = _fact_chunk(client, kb, doc["id"])
    cid = chunk["id"]
    for mode in MODES:
        assert cid in _hits(client, kb, mode), mode

    resp = _patch(client, kb, doc["id"], cid, True)
    assert resp.status_code == 200, resp.text
    assert resp.json()["disabled"] is True and resp.json()["id"] == cid
    for mode in MODES:
        hits = _hits(client, kb, mode)
        assert cid not in hits, mode
        assert mode == "lexical" or hits  # the other chunks are still found
    # Kept in SQL and listed, marked; the document keeps its count.
    listed = {c["id"]: c for c in _all_chunks(client, kb, doc["id"], limit=50)}
    assert listed[cid]["disabled"] is True and len(listed) == doc["chunks"]
    ask = client.post(
        f"/v1/knowledge-bases/{kb}/ask", json={"question": QUERY, "retrieval_only": True}
    )
    assert cid not in [c["chunk_id"] for c in ask.json()["citations"]]

    # The indexes agree with SQL: a disabled chunk is expected absent, not drift.
    index = client.get(f"/v1/knowledge-bases/{kb}/index").json()
    assert index["consistent"] is True, index
    assert not [f for f in services.doctor.examine() if f.kind == "index_drift"]

    # Setting the state it has changes nothing (no new sequence number).
    with services.db.read() as session:
        seq = session.execute(select(Chunk.seq).where(Chunk.id == cid)).scalar_one()
    assert _patch(client, kb, doc["id"], cid, True).json()["disabled"] is True
    with services.db.read() as session:
        assert session.execute(select(Chunk.seq).where(Chunk.id == cid)).scalar_one() == seq

    # A rebuild from SQL and another process sharing the database leave it out too.
    services.indexes.rebuild(kb)
    assert cid not in _hits(client, kb, "dense")
    replica = Services.create(services.settings)
    try:
        assert cid not in [p.chunk_id for p in replica.retriever.search(kb, QUERY, top_k=50)]
        assert cid not in replica.indexes.lexical(kb).ids()
        assert replica.indexes.check(kb)["consistent"]

        back = _patch(client, kb, doc["id"], cid, False)
        assert back.status_code == 200 and back.json()["disabled"] is False
        for mode in MODES:
            assert cid in _hits(client, kb, mode), mode
        replica.indexes.sync()
        assert cid in replica.indexes.get(kb).ids() and cid in replica.indexes.lexical(kb).ids()
        assert replica.indexes.check(kb)["consistent"]
    finally:
        replica.close()

    other = _ready(client, kb, "notes.txt", "值班电话是 8001。\n".encode())
    assert _patch(client, kb, other["id"], cid, True).status_code == 404
    assert _patch(client, kb, doc["id"], 10**9, True).status_code == 404
    bad = client.patch(
        f"/v1/knowledge-bases/{kb}/documents/{doc['id']}/chunks/{cid}", json={"disabled": "x"}
    )
    assert bad.status_code == 422
    extra = client.patch(
        f"/v1/knowledge-bases/{kb}/documents/{doc['id']}/chunks/{cid}",
        json={"disabled": True, "text": "new"},
    )
    assert extra.status_code == 422


def test_toggling_under_concurrent_searches_and_rebuilds(
    client: TestClient, kb: str, services: Services
) -> None:
    doc = _ready(client, kb, "handbook.pdf", HANDBOOK.read_bytes())
    cid = _fact_chunk(client, kb, doc["id"])["id"]
    stop = threading.Event()
    errors: list[BaseException] = []

    def search() -> None:
        while not stop.is_set():
            try:
                for mode in MODES:
                    services.retriever.search(kb, QUERY, top_k=20, mode=mode)
            except BaseException as exc:  # reported below
                errors.append(exc)
                return

    def rebuild() -> None:
        while not stop.is_set():
            try:
                services.indexes.rebuild(kb)
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=search) for _ in range(3)]
    threads.append(threading.Thread(target=rebuild))
    for t in threads:
        t.start()
    try:
        for i in range(8):
            disabled = i % 2 == 0
            assert _patch(client, kb, doc["id"], cid, disabled).status_code == 200
            # Once the PATCH has answered, every search started afterwards agrees with it.
            for mode in MODES:
                found = cid in [
                    p.chunk_id for p in services.retriever.search(kb, QUERY, top_k=50, mode=mode)
                ]
                assert found is not disabled, (i, mode)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert services.indexes.check(kb)["consistent"]
    assert cid in services.indexes.get(kb).ids()  # the last toggle enabled it


# -- who may do what, and the Python client ------------------------------------------------------


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[TestClient, Services]]:
    cfg = make_settings(tmp_path / "data")
    svc = Services.create(
        cfg, llm=LLMClient(cfg.llm, transport=httpx.MockTransport(FakeLLM().handler))
    )
    with TestClient(create_app(services=svc, warm_up=False)) as client:
        yield client, svc
    svc.close()


def test_reading_needs_any_key_and_disabling_the_ingest_scope(
    keyed: tuple[TestClient, Services],
) -> None:
    client, svc = keyed
    secrets = {}
    with svc.db.write() as session:
        for scope in ("admin", "query", "ingest"):
            _, secrets[scope] = keys.create(session, tenant_id=DEFAULT_TENANT, scopes=[scope])
    client.app.state.guard.forget()  # type: ignore[attr-defined]
    client.headers["Authorization"] = f"Bearer {secrets['admin']}"
    kb = client.post("/v1/knowledge-bases", json={"name": "keyed"}).json()["id"]
    doc = _ready(client, kb, "notes.txt", "值班电话是 8001。\n".encode())
    cid = _all_chunks(client, kb, doc["id"])[0]["id"]

    client.headers["Authorization"] = f"Bearer {secrets['query']}"
    assert client.get(f"/v1/knowledge-bases/{kb}/documents/{doc['id']}/chunks").status_code == 200
    assert client.get(f"/v1/knowledge-bases/{kb}/documents/{doc['id']}/file").status_code == 200
    assert _patch(client, kb, doc["id"], cid, True).status_code == 403
    client.headers["Authorization"] = f"Bearer {secrets['ingest']}"
    assert _patch(client, kb, doc["id"], cid, True).status_code == 200
    del client.headers["Authorization"]
    assert client.get(f"/v1/knowledge-bases/{kb}/documents/{doc['id']}/chunks").status_code == 401


def test_the_python_client_reaches_every_source_route(services: Services) -> None:
    with serving(create_app(services=services)) as url, Client(url) as kbqa:
        kb = kbqa.create_kb("client-sources")
        doc = kbqa.wait_until_ready(kb.id, kbqa.upload(kb.id, HANDBOOK).id)
        first = kbqa.list_chunks(kb.id, doc.id, limit=2)
        assert first.total == doc.chunks and [c.ordinal for c in first.chunks] == [0, 1]
        everything = kbqa.list_chunks(kb.id, doc.id, limit=500).chunks
        fact = next(c for c in everything if "十五天带薪年" in c.text)
        assert kbqa.set_chunk_disabled(kb.id, doc.id, fact.id, True).disabled
        assert fact.id not in [p.chunk_id for p in kbqa.search(kb.id, QUERY, top_k=50)]
        assert not kbqa.set_chunk_disabled(kb.id, doc.id, fact.id, False).disabled
        assert kbqa.download(kb.id, doc.id) == HANDBOOK.read_bytes()
        page = kbqa.render_page(kb.id, doc.id, FACT_PAGE, chunk_id=fact.id, scale=1.0)
        assert page.png.startswith(b"\x89PNG") and page.highlights >= 1


# -- the same rules on SQLite and PostgreSQL, across a restart ---------------------------------


def test_a_restarted_process_applies_toggles_made_after_its_snapshot(
    db_services: Services, tmp_path: Path
) -> None:
    svc = db_services
    kb = svc.knowledge.create_kb("restart").id
    source = tmp_path / "handbook.pdf"
    source.write_bytes(HANDBOOK.read_bytes())
    with source.open("rb") as fh:
        staged = stage_upload(fh, source.name, svc.settings.data_dir, 10**8)
    doc, _ = svc.knowledge.add_document(kb, staged)
    worker = svc.worker()
    while worker.run_once():
        pass
    with svc.db.read() as session:
        ids = list(session.execute(select(Chunk.id).where(Chunk.document_id == doc.id)).scalars())
    target = ids[len(ids) // 2]
    assert target in svc.indexes.get(kb).ids()
    svc.indexes.save_dirty()  # the snapshot on disk has the chunk

    service = Chunks(svc.db, svc.indexes)
    assert service.set_disabled(kb, doc.id, target, True).disabled
    assert target not in svc.indexes.get(kb).ids()
    assert target not in svc.indexes.lexical(kb).ids()

    again = Services.create(svc.settings)
    try:
        # Loaded from the older snapshot, then caught up: the chunk is dropped.
        assert target not in again.indexes.get(kb).ids()
        assert target not in again.indexes.lexical(kb).ids()
        check = again.indexes.check(kb)
        assert check["consistent"] and check["disabled_chunks"] == 1
        assert set(again.indexes.get(kb).ids().tolist()) == set(ids) - {target}
        again.indexes.save_dirty()
        service.set_disabled(kb, doc.id, target, False)
        again.indexes.sync()
        assert set(again.indexes.get(kb).ids().tolist()) == set(ids)
        assert again.indexes.check(kb)["consistent"]
    finally:
        again.close()


def test_a_poster_sized_page_is_drawn_within_the_pixel_bound(tmp_path: Path) -> None:
    pdf = pdfium.PdfDocument.new()
    pdf.new_page(14_400, 14_400)  # 200 inches square, the largest page PDF allows
    poster = tmp_path / "poster.pdf"
    pdf.save(str(poster))
    pdf.close()
    renderer = PageRenderer(tmp_path / "cache", memory_mb=2048, max_entries=1)
    rendered = renderer.render(poster, "poster", 1, scale=MAX_SCALE, passage="anything")
    width, height = Image.open(io.BytesIO(rendered.png)).size
    assert width * height <= MAX_PIXELS and width > 1000 and rendered.highlights == 0
    # The cache keeps max_entries renders.
    renderer.render(poster, "poster", 1, scale=1.0)
    assert len(list((tmp_path / "cache").glob("*.png"))) == 1
