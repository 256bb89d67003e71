"""Per-knowledge-base user dictionaries over the API: read, replace (validated, re-analysing the
lexical index), learned suggestions; writes need the admin scope."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from rag.services import Services
from tests.conftest import make_settings, upload, wait_document

# "星河云盘" is no jieba word: it is cut into pieces, and occurs often enough to be suggested.
TEXT = "\n\n".join(
    f"第{n}节：星河云盘的同步客户端支持断点续传。星河云盘管理员可以在控制台设置配额。"
    for n in range(8)
)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    svc = Services.create(make_settings(tmp_path / "data"))
    with TestClient(create_app(services=svc, warm_up=False)) as c:
        c.post("/v1/knowledge-bases", json={"name": "docs"})
        doc = upload(c, "docs", "cloud.txt", TEXT.encode())
        assert wait_document(c, "docs", doc.json()["id"])["status"] == "ready"
        yield c
    svc.close()


def test_get_put_roundtrip(client: TestClient) -> None:
    assert client.get("/v1/knowledge-bases/docs/lexicon").json() == {"terms": []}
    out = client.put(
        "/v1/knowledge-bases/docs/lexicon", json={"terms": ["星河云盘", "ＡＢＣ", "星河云盘"]}
    )
    assert out.status_code == 200, out.text
    body = out.json()
    assert body["terms"] == ["abc", "星河云盘"]  # folded, deduplicated, sorted
    assert body["added"] == ["abc", "星河云盘"] and body["removed"] == []
    assert body["reindexed"] is True  # this server re-analysed the index before answering
    assert client.get("/v1/knowledge-bases/docs/lexicon").json()["terms"] == ["abc", "星河云盘"]
    again = client.put("/v1/knowledge-bases/docs/lexicon", json={"terms": ["abc"]}).json()
    assert again["removed"] == ["星河云盘"] and again["added"] == []
    same = client.put("/v1/knowledge-bases/docs/lexicon", json={"terms": ["ABC"]}).json()
    assert same["added"] == same["removed"] == [] and same["reindexed"] is False


def test_terms_change_what_search_matches(client: TestClient) -> None:
    client.put("/v1/knowledge-bases/docs/lexicon", json={"terms": ["星河云盘"]})
    hits = client.post(
        "/v1/knowledge-bases/docs/search", json={"query": "星河云盘", "mode": "lexical"}
    ).json()["results"]
    assert hits and all("星河云盘" in h["text"] for h in hits)


@pytest.mark.parametrize(
    "terms, fragment",
    [
        (["x" * 33], "32 characters"),
        ([""], "empty"),
        (["two words"], "whitespace"),
        ([f"t{n}" for n in range(5001)], "5000"),
    ],
)
def test_bad_terms_are_refused(client: TestClient, terms: list[str], fragment: str) -> None:
    out = client.put("/v1/knowledge-bases/docs/lexicon", json={"terms": terms})
    assert out.status_code == 422
    error = out.json()["error"]
    assert error["code"] in ("invalid_input", "validation_error")
    assert fragment in str(error) or error["code"] == "validation_error"
    assert client.get("/v1/knowledge-bases/docs/lexicon").json()["terms"] == []


def test_not_a_list_is_a_validation_error(client: TestClient) -> None:
    out = client.put("/v1/knowledge-bases/docs/lexicon", json={"terms": "星河云盘"})
    assert out.status_code == 422 and out.json()["error"]["code"] == "validation_error"


def test_suggestions(client: TestClient) -> None:
    out = client.post("/v1/knowledge-bases/docs/lexicon/suggestions", json={"min_count": 3})
    assert out.status_code == 200, out.text
    found = {s["term"]: s for s in out.json()["suggestions"]}
    assert "星河云盘" in found
    assert len(found["星河云盘"]["pieces"]) >= 2 and found["星河云盘"]["count"] >= 8
    client.put("/v1/knowledge-bases/docs/lexicon", json={"terms": ["星河云盘"]})
    after = client.post("/v1/knowledge-bases/docs/lexicon/suggestions", json={"min_count": 3})
    assert "星河云盘" not in {s["term"] for s in after.json()["suggestions"]}


def test_unknown_knowledge_base(client: TestClient) -> None:
    assert client.get("/v1/knowledge-bases/nope/lexicon").status_code == 404
    assert client.put("/v1/knowledge-bases/nope/lexicon", json={"terms": []}).status_code == 404


def test_patch_adds_and_removes(client: TestClient) -> None:
    client.put("/v1/knowledge-bases/docs/lexicon", json={"terms": ["星河云盘", "配额"]})
    out = client.patch(
        "/v1/knowledge-bases/docs/lexicon", json={"add": ["断点续传", "ＡＢＣ"], "remove": ["配额"]}
    )
    assert out.status_code == 200, out.text
    body = out.json()
    assert body["terms"] == ["abc", "断点续传", "星河云盘"]
    assert body["added"] == ["abc", "断点续传"] and body["removed"] == ["配额"]
    too_long = client.patch("/v1/knowledge-bases/docs/lexicon", json={"add": ["x" * 40]})
    assert too_long.status_code in (400, 422)
    assert client.get("/v1/knowledge-bases/docs/lexicon").json()["terms"] == body["terms"]


def test_concurrent_adds_all_land(tmp_path: Path) -> None:
    """Eight writers adding different terms at once: every term is kept (a read-then-replace
    client would lose some to the others)."""
    from concurrent.futures import ThreadPoolExecutor

    from rag.kb import lexicon

    svc = Services.create(make_settings(tmp_path / "data"))
    try:
        kb = svc.knowledge.create_kb("race").id

        def add(n: int) -> None:
            lexicon.change_terms(svc.db, svc.indexes, kb, add=[f"术语{n}号"])

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(add, range(16)))
        assert len(lexicon.get_terms(svc.db, kb)) == 16
    finally:
        svc.close()
