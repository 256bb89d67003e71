"""Analytics figures computed from a seeded question log (rows with known channels, days,
flags, latencies, ratings and hand-offs), checked exactly: totals, per channel, per day, the
filters; the unanswered and down-rated lists, paged; top questions clustered by embedding;
golden rows (a JSONL `rag eval` reads) from a logged question and a chosen passage."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rag.core import tenancy
from rag.evaluation.golden import load_golden
from rag.qa.analytics import Analytics, Filter, percentile
from rag.services import Services
from rag.store.models import KnowledgeBase, QuestionRecord
from tests.conftest import upload, wait_document, wait_for


def _at(day: int, hour: int) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


# (kb, channel, created_at, latency, grounded, covered, curated, rating, handoff)
SEED: list[tuple[str, str, datetime, int, bool, bool, bool, int | None, bool]] = [
    ("hr", "api", _at(1, 10), 100, True, True, False, 1, False),
    ("hr", "api", _at(1, 11), 200, False, True, False, -1, True),
    ("hr", "widget", _at(1, 12), 300, False, False, False, None, True),
    ("hr", "widget", _at(2, 9), 400, True, True, False, None, False),
    ("hr", "openai", _at(2, 10), 500, False, True, True, 1, False),
    ("it", "api", _at(2, 11), 1000, True, True, False, -1, False),
]


@pytest.fixture
def seeded(client: TestClient, services: Services) -> Iterator[dict[str, Any]]:
    kbs = {
        n: client.post("/v1/knowledge-bases", json={"name": n}).json()["id"] for n in ("hr", "it")
    }
    ids = []
    with services.db.write() as session:
        other = KnowledgeBase(
            tenant_id="other", name="hr", embedding_model="fake:64", embedding_dim=64
        )
        session.add(other)
        session.flush()
        for n, (kb, channel, at, latency, grounded, covered, curated, rating, handoff) in enumerate(
            SEED
        ):
            row = QuestionRecord(
                tenant_id="default",
                kb_id=kbs[kb],
                channel=channel,
                question=f"q{n}",
                answer=f"a{n}",
                citations=[],
                latency_ms=latency,
                grounded=grounded,
                covered=covered,
                curated=curated,
                rating=rating,
                handoff_at=at if handoff else None,
                created_at=at,
            )
            session.add(row)
            session.flush()
            ids.append(row.id)
        # another tenant's question: never counted
        session.add(
            QuestionRecord(
                tenant_id="other",
                kb_id=other.id,
                channel="api",
                question="theirs",
                latency_ms=9999,
                grounded=True,
                covered=True,
                rating=-1,
                created_at=_at(1, 10),
            )
        )
    yield {"kbs": kbs, "ids": ids, "client": client}


def _figures(**expected: Any) -> dict[str, Any]:
    base = {"up": 0, "down": 0, "handoffs": 0, "refused": 0}
    return {**base, **expected}


def _pick(got: dict[str, Any], keys: dict[str, Any]) -> dict[str, Any]:
    return {k: got[k] for k in keys}


def test_summary_figures(seeded: dict[str, Any]) -> None:
    client: TestClient = seeded["client"]
    got = client.get("/v1/analytics/summary").json()
    total = _figures(
        volume=6,
        answered=4,
        answered_rate=4 / 6,
        refused=1,
        grounded=3,
        grounded_rate=0.5,
        up=2,
        down=2,
        handoffs=2,
        latency_p50_ms=300,
        latency_p95_ms=1000,
    )
    assert _pick(got, total) == total
    channels = got["by_channel"]
    assert sorted(channels) == ["api", "openai", "widget"]
    api = _figures(
        volume=3,
        answered=2,
        answered_rate=2 / 3,
        grounded=2,
        up=1,
        down=2,
        handoffs=1,
        latency_p50_ms=200,
        latency_p95_ms=1000,
    )
    assert _pick(channels["api"], api) == api
    widget = _figures(
        volume=2,
        answered=1,
        answered_rate=0.5,
        refused=1,
        grounded=1,
        handoffs=1,
        latency_p50_ms=300,
        latency_p95_ms=400,
    )
    assert _pick(channels["widget"], widget) == widget
    # a curated answer is answered without being grounded
    openai = _figures(volume=1, answered=1, answered_rate=1.0, grounded=0, grounded_rate=0.0, up=1)
    assert _pick(channels["openai"], openai) == openai
    days = [
        (d["day"], d["volume"], d["answered"], d["refused"], d["handoffs"]) for d in got["by_day"]
    ]
    assert days == [("2026-11-01", 3, 1, 1, 2), ("2026-11-02", 3, 3, 0, 0)]


def test_summary_filters(seeded: dict[str, Any]) -> None:
    client: TestClient = seeded["client"]
    hr = client.get("/v1/analytics/summary", params={"kb": "hr"}).json()
    assert (hr["volume"], hr["answered"], hr["latency_p50_ms"], hr["latency_p95_ms"]) == (
        5,
        3,
        300,
        500,
    )
    by_id = client.get("/v1/analytics/summary", params={"kb": seeded["kbs"]["hr"]}).json()
    assert by_id == hr
    late = client.get("/v1/analytics/summary", params={"since": "2026-11-02"}).json()
    early = client.get("/v1/analytics/summary", params={"until": "2026-11-02T00:00:00Z"}).json()
    assert (late["volume"], early["volume"]) == (3, 3)
    assert late["down"] == 1 and early["handoffs"] == 2
    widget = client.get("/v1/analytics/summary", params={"channel": "widget"}).json()
    assert widget["volume"] == 2 and widget["refused"] == 1
    empty = client.get("/v1/analytics/summary", params={"channel": "slack"}).json()
    assert empty["volume"] == 0 and empty["answered_rate"] is None
    assert empty["latency_p50_ms"] is None and empty["by_day"] == []
    # an unknown or another tenant's knowledge base
    assert client.get("/v1/analytics/summary", params={"kb": "nope"}).status_code == 404


def test_question_lists(seeded: dict[str, Any]) -> None:
    client: TestClient = seeded["client"]
    ids = seeded["ids"]

    def listed(**params: Any) -> tuple[list[str], int | None]:
        page = client.get("/v1/analytics/questions", params=params).json()
        return [q["id"] for q in page["questions"]], page["next_offset"]

    assert listed(kind="unanswered") == ([ids[2], ids[1]], None)
    assert listed(kind="downrated") == ([ids[5], ids[1]], None)
    assert listed(kind="downrated", kb="hr") == ([ids[1]], None)
    first = listed(limit=4)
    assert first == ([ids[5], ids[4], ids[3], ids[2]], 4)
    assert listed(limit=4, offset=4) == ([ids[1], ids[0]], None)
    page = client.get("/v1/analytics/questions", params={"kind": "downrated"}).json()
    assert page["questions"][0]["rating"] == "down" and page["questions"][0]["answered"] is True
    assert "theirs" not in str(page)
    assert client.get("/v1/analytics/questions", params={"kind": "bad"}).status_code == 422


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7], 95) == 7
    assert percentile([400, 100, 300, 200], 50) == 200
    assert percentile(list(range(1, 101)), 95) == 95


class _Stub:
    """Questions about leave point one way, questions about passwords another."""

    model_name = "stub"
    dim = 3

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        table = {
            "年假": [1.0, 0.1, 0.0],
            "年休": [0.95, 0.3, 0.0],
            "密码": [0.0, 0.1, 1.0],
        }
        return np.array([next(v for k, v in table.items() if k in t) for t in texts], np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_passages([text])[0]


def test_top_questions_are_clustered(client: TestClient, services: Services) -> None:
    kb_id = client.post("/v1/knowledge-bases", json={"name": "hr"}).json()["id"]
    asked = [  # oldest first
        ("年假有几天", True),
        ("年假有几天？", True),
        ("年假有几天？", False),
        ("年假有几天?", True),
        ("年休一共几天", False),
        ("年休一共几天", False),
        ("怎么重置密码", True),
    ]
    with services.db.write() as session:
        for i, (question, answered) in enumerate(asked):
            session.add(
                QuestionRecord(
                    tenant_id="default",
                    kb_id=kb_id,
                    question=question,
                    grounded=answered,
                    covered=True,
                    created_at=_at(1, i),
                )
            )
    settings = services.settings.analytics.model_copy(update={"cluster_threshold": 0.85})
    analytics = Analytics(services.db, settings, embedder_for=lambda model: _Stub())
    with tenancy.acting_as(tenancy.OPEN):
        clusters = analytics.top_questions(Filter(kb_id=kb_id), limit=10)
    got = [(c.representative, c.count, c.answered, c.examples) for c in clusters]
    assert got == [
        ("年假有几天?", 6, 3, ["年假有几天?", "年休一共几天"]),
        ("怎么重置密码", 1, 1, ["怎么重置密码"]),
    ]
    # over HTTP with the knowledge base's own (fake) embedder: identical questions, whatever
    # their punctuation, are one cluster
    body = client.get("/v1/analytics/top-questions", params={"kb": "hr", "limit": 1}).json()
    [top] = body["clusters"]
    assert top["count"] >= 4 and top["representative"].startswith("年假有几天")


def test_golden_rows_from_logged_questions(
    client: TestClient, services: Services, tmp_path: Path
) -> None:
    client.post("/v1/knowledge-bases", json={"name": "hr"})
    client.post("/v1/knowledge-bases", json={"name": "it"})
    doc = upload(client, "hr", "hr.txt", "年假：入职满一年的员工每年有十天带薪年假。".encode())
    assert wait_document(client, "hr", doc.json()["id"])["status"] == "ready"
    other = upload(client, "it", "it.txt", "密码每九十天更换一次。".encode())
    assert wait_document(client, "it", other.json()["id"])["status"] == "ready"
    answer = client.post("/v1/knowledge-bases/hr/ask", json={"question": "年假有几天？"}).json()
    chunk = answer["citations"][0]
    made = client.post(
        f"/v1/analytics/questions/{answer['answer_id']}/golden",
        json={"chunk_id": chunk["chunk_id"]},
    )
    assert made.status_code == 201, made.text
    row = made.json()
    assert row["question"] == "年假有几天？" and row["filename"] == "hr.txt"
    assert row["pages"] == [chunk["page"]] and row["source_question_id"] == answer["answer_id"]
    assert chunk["text"].replace(" ", "").startswith(row["answer_excerpt"].replace(" ", "")[:24])
    # a passage of another knowledge base is refused, naming the reason
    it_chunks = client.get(f"/v1/knowledge-bases/it/documents/{other.json()['id']}/chunks").json()
    wrong = client.post(
        f"/v1/analytics/questions/{answer['answer_id']}/golden",
        json={"chunk_id": it_chunks["chunks"][0]["id"]},
    )
    assert wrong.status_code == 422 and "not a passage" in wrong.json()["error"]["message"]
    # the download is a golden set `rag eval` loads, and its row finds the passage
    download = client.get("/v1/knowledge-bases/hr/golden")
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("application/x-ndjson")
    path = tmp_path / "golden.jsonl"
    path.write_bytes(download.content)
    [item] = load_golden(path)
    assert item.question == "年假有几天？" and item.pages == (chunk["page"],)
    hits = client.post("/v1/knowledge-bases/hr/search", json={"query": item.question}).json()
    assert any(item.answered_by(_Hit(h)) for h in hits["results"])
    evaluated = client.post(
        "/v1/knowledge-bases/hr/eval",
        json={"golden": [item.__dict__ | {"pages": list(item.pages)}]},
    )
    assert evaluated.status_code == 202, evaluated.text
    job: dict[str, Any] = {}

    def finished() -> bool:
        job.update(client.get(f"/v1/jobs/{evaluated.json()['id']}").json())
        return job["status"] in ("succeeded", "failed")

    wait_for(finished, timeout=60)
    assert job["status"] == "succeeded", job
    assert job["result"]["modes"]["hybrid"]["hit_at"]["1"] == 1.0
    assert client.get("/v1/knowledge-bases/it/golden").text == ""


class _Hit:
    def __init__(self, hit: dict[str, Any]) -> None:
        self.text = hit["text"]
        self.filename = hit["filename"]
        self.page = hit["page"]
