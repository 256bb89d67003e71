"""Search modes and filters over HTTP, and retrieval evaluation as a background job."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import upload, wait_document, wait_for

HANDBOOK = (
    "员工手册\n\n第一章 年假\n\n员工每年享有十天带薪年假。\n\n"
    "第二章 设备\n\n电脑型号 ThinkPad-X1-G11。\n"
)
POLICY = "安全政策\n\n第一章 密码\n\n密码至少十二位。年假期间不得远程访问。\n"


def _kb(client: TestClient) -> tuple[str, dict[str, str]]:
    kb = client.post("/v1/knowledge-bases", json={"name": "kb"}).json()["id"]
    docs = {}
    for name, text, meta in (
        ("员工手册.txt", HANDBOOK, {"team": "hr"}),
        ("policy.md", POLICY, {"team": "it"}),
    ):
        doc = upload(client, kb, name, text.encode(), data={"metadata": json.dumps(meta)}).json()
        assert wait_document(client, kb, doc["id"])["status"] == "ready"
        docs[name] = doc["id"]
    return kb, docs


def _search(client: TestClient, kb: str, **body: Any) -> Any:
    return client.post(f"/v1/knowledge-bases/{kb}/search", json=body)


def test_modes_and_filters(client: TestClient) -> None:
    kb, docs = _kb(client)
    for mode in ("dense", "lexical", "hybrid"):
        resp = _search(client, kb, query="年假", top_k=5, mode=mode)
        assert resp.status_code == 200, resp.text
        results = resp.json()["results"]
        assert results and set(results[0]) >= {
            "chunk_id",
            "document_id",
            "filename",
            "page",
            "text",
            "score",
        }
    top = _search(client, kb, query="ThinkPad-X1-G11", top_k=1, mode="lexical").json()["results"]
    assert top[0]["filename"] == "员工手册.txt"
    only_it = _search(client, kb, query="年假", top_k=5, filters={"metadata": {"team": "it"}})
    assert {r["filename"] for r in only_it.json()["results"]} == {"policy.md"}
    by_id = _search(client, kb, query="年假", filters={"document_ids": [docs["员工手册.txt"]]})
    assert {r["document_id"] for r in by_id.json()["results"]} == {docs["员工手册.txt"]}
    by_name = _search(client, kb, query="年假", filters={"filename": "*.md"})
    assert {r["filename"] for r in by_name.json()["results"]} == {"policy.md"}


def test_bad_mode_and_filter_are_422(client: TestClient) -> None:
    kb, _ = _kb(client)
    assert _search(client, kb, query="年假", mode="fuzzy").status_code == 422
    bad = _search(client, kb, query="年假", filters={"owner": "me"})
    assert bad.status_code == 422 and "unknown filter" in bad.text


def test_eval_job_reports_every_mode(client: TestClient) -> None:
    kb, _ = _kb(client)
    golden = [
        {"id": "1", "question": "年假有几天", "answer_excerpt": "员工每年享有十天带薪年假"},
        {"id": "2", "question": "ThinkPad-X1-G11", "filename": "员工手册.txt", "page": 1},
        {"id": "3", "question": "密码多长", "answer_excerpt": "密码至少十二位"},
    ]
    resp = client.post(f"/v1/knowledge-bases/{kb}/eval", json={"golden": golden})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["job_id"]
    state: dict[str, Any] = {}

    def finished() -> bool:
        state.update(client.get(f"/v1/jobs/{job_id}").json())
        return state["status"] in ("succeeded", "failed")

    wait_for(finished, timeout=60)
    assert state["status"] == "succeeded", state
    report = state["result"]
    assert report["questions"] == 3 and set(report["modes"]) == {"lexical", "dense", "hybrid"}
    for metrics in report["modes"].values():
        assert set(metrics["hit_at"]) == {"1", "5", "10"}
        assert 0 <= metrics["mrr"] <= 1 and 0 <= metrics["ndcg_at_10"] <= 1
        assert metrics["latency_p95_ms"] >= metrics["latency_p50_ms"] >= 0
    # Every question's answer is in this tiny KB: lexical finds each within the top 10.
    assert report["modes"]["lexical"]["hit_at"]["10"] == 1.0
    assert "hybrid" in report["table"]


def test_eval_request_is_validated_before_queueing(client: TestClient) -> None:
    kb, _ = _kb(client)
    url = f"/v1/knowledge-bases/{kb}/eval"
    assert client.post(url, json={}).status_code == 422
    assert client.post(url, json={"golden": [{"question": "q"}]}).status_code == 422
    assert client.post(url, json={"path": "../../etc/passwd"}).status_code == 422
    modes = {"golden": [{"question": "q", "page": 1}], "modes": ["bogus"]}
    assert client.post(url, json=modes).status_code == 422
    assert (
        client.post(
            "/v1/knowledge-bases/nope/eval", json={"golden": [{"question": "q", "page": 1}]}
        ).status_code
        == 404
    )


def test_search_names_the_page_of_a_multi_page_chunks_best_sentence(client: TestClient) -> None:
    kb = client.post("/v1/knowledge-bases", json={"name": "paged"}).json()["id"]
    text = (
        "设备手册\n\n第一章 配发\n\n本章说明公司设备的配发与归还。\f"
        "笔记本电脑由信息部统一配发，领取时须签字。\f"
        "显示器和键盘可在行政部申领。\n"
    )
    doc = upload(client, kb, "设备手册.txt", text.encode()).json()
    assert wait_document(client, kb, doc["id"])["status"] == "ready"
    resp = _search(client, kb, query="显示器 键盘 申领", top_k=1)
    assert resp.status_code == 200, resp.text
    (hit,) = resp.json()["results"]
    assert (hit["page"], hit["page_start"], hit["page_end"]) == (3, 1, 3)
    (hit,) = _search(client, kb, query="笔记本电脑", top_k=1, mode="lexical").json()["results"]
    assert hit["page"] == 2


def test_search_aggregates_per_document_on_request(client: TestClient) -> None:
    kb, docs = _kb(client)
    resp = _search(client, kb, query="年假", top_k=5, aggregate="document")
    assert resp.status_code == 200, resp.text
    ids = [r["document_id"] for r in resp.json()["results"]]
    assert sorted(ids) == sorted(docs.values())
    assert _search(client, kb, query="年假", aggregate="section").status_code == 422
