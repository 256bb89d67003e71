"""Documents that change (issue 17 item 5): a stable key, a new version that replaces the old
one in one commit, versions listed and restored, a failed version that leaves the old one live,
and searches running through the switch that see one version, never both, neither or a stale one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from ingest.upload import stage_upload
from rag.kb.doctor import Doctor
from rag.services import Services
from rag.store.models import Chunk, Document
from tests.conftest import make_settings, wait_for


def _text(tag: str) -> bytes:
    return (f"{tag} 的规定\n\n" + f"这是{tag}版本的正文，唯一标记 {tag}。" * 20).encode()


OLD, NEW = _text("旧版甲"), _text("新版乙")


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    s = Services.create(make_settings(tmp_path / "data"))
    yield s
    s.close()


@pytest.fixture
def api(svc: Services) -> Iterator[TestClient]:
    """The API without a worker: the test decides when a queued version is ingested."""
    with TestClient(create_app(services=svc, start_worker=False, warm_up=False)) as client:
        yield client


def _drain(svc: Services) -> None:
    worker = svc.worker()
    while worker.run_once():
        pass


def _kb(api: TestClient, name: str = "kb") -> str:
    return str(api.post("/v1/knowledge-bases", json={"name": name}).json()["id"])


def _upload(api: TestClient, kb: str, name: str, data: bytes, **form: str) -> Any:
    return api.post(
        f"/v1/knowledge-bases/{kb}/documents", files={"file": (name, data)}, data=form or None
    )


def _doc(api: TestClient, kb: str, doc_id: str) -> dict[str, Any]:
    return dict(api.get(f"/v1/knowledge-bases/{kb}/documents/{doc_id}").json())


def _found(api: TestClient, kb: str, query: str) -> set[str]:
    """Document ids the search returns (every chunk of this small KB, top_k above its size)."""
    hits = api.post(f"/v1/knowledge-bases/{kb}/search", json={"query": query, "top_k": 50})
    assert hits.status_code == 200, hits.text
    return {h["document_id"] for h in hits.json()["results"]}


def _texts(api: TestClient, kb: str, query: str) -> str:
    hits = api.post(f"/v1/knowledge-bases/{kb}/search", json={"query": query, "top_k": 50})
    return "".join(h["text"] for h in hits.json()["results"])


def test_new_version_replaces_old_only_when_ready(api: TestClient, svc: Services) -> None:
    kb = _kb(api)
    first = _upload(api, kb, "policy.txt", OLD).json()
    _drain(svc)
    assert _doc(api, kb, first["id"])["status"] == "ready"

    second = _upload(api, kb, "policy.txt", NEW)
    assert second.status_code == 202
    v2 = second.json()
    assert (v2["key"], v2["version"], v2["current"]) == ("policy.txt", 2, False)
    # Until v2 is ready, v1 is the document: listed, current and the only one searched.
    listed = api.get(f"/v1/knowledge-bases/{kb}/documents").json()["documents"]
    assert [d["id"] for d in listed] == [first["id"]]
    assert _found(api, kb, "唯一标记") == {first["id"]}

    _drain(svc)
    v1, v2 = _doc(api, kb, first["id"]), _doc(api, kb, v2["id"])
    assert (v1["status"], v1["current"], v1["chunks"]) == ("superseded", False, 0)
    assert (v2["status"], v2["current"]) == ("ready", True)
    assert _found(api, kb, "唯一标记") == {v2["id"]}
    assert "旧版甲" not in _texts(api, kb, "旧版甲 唯一标记")
    listed = api.get(f"/v1/knowledge-bases/{kb}/documents").json()["documents"]
    assert [d["id"] for d in listed] == [v2["id"]]
    everything = api.get(f"/v1/knowledge-bases/{kb}/documents", params={"all_versions": True})
    assert {d["id"] for d in everything.json()["documents"]} == {v1["id"], v2["id"]}
    versions = api.get(f"/v1/knowledge-bases/{kb}/documents/{v1['id']}/versions").json()
    assert versions["key"] == "policy.txt"
    assert [(v["version"], v["status"]) for v in versions["versions"]] == [
        (2, "ready"),
        (1, "superseded"),
    ]
    # SQL holds the new version's chunks only, in every index version.
    with svc.db.read() as session:
        owners = set(session.execute(select(Chunk.document_id)).scalars())
    assert owners == {v2["id"]}


def test_same_bytes_under_the_same_key_make_no_new_version(api: TestClient, svc: Services) -> None:
    kb = _kb(api)
    first = _upload(api, kb, "policy.txt", OLD).json()
    _drain(svc)
    again = _upload(api, kb, "policy.txt", OLD)
    assert again.status_code == 200
    assert (again.json()["id"], again.json()["duplicate"]) == (first["id"], True)
    # A→B→A: the first bytes come back as version 3, the superseded version 1 stays history.
    second = _upload(api, kb, "policy.txt", NEW).json()
    _drain(svc)
    third = _upload(api, kb, "policy.txt", OLD)
    assert third.status_code == 202
    assert third.json()["version"] == 3
    _drain(svc)
    assert _doc(api, kb, second["id"])["status"] == "superseded"
    assert _found(api, kb, "唯一标记") == {third.json()["id"]}


def test_external_id_is_the_key(api: TestClient, svc: Services) -> None:
    kb = _kb(api)
    a = _upload(api, kb, "report-2024.txt", OLD, external_id="annual-report").json()
    _drain(svc)
    b = _upload(api, kb, "report-2025.txt", NEW, external_id="annual-report").json()
    assert (b["key"], b["external_id"], b["version"]) == ("annual-report", "annual-report", 2)
    # A file name without an external id is its own key: another document.
    other = _upload(api, kb, "report-2025.txt", _text("丙")).json()
    assert (other["key"], other["version"], other["current"]) == ("report-2025.txt", 1, True)
    _drain(svc)
    found = api.get(
        f"/v1/knowledge-bases/{kb}/documents", params={"external_id": "annual-report"}
    ).json()["documents"]
    assert [d["id"] for d in found] == [b["id"]]
    assert _doc(api, kb, a["id"])["status"] == "superseded"
    bad = _upload(api, kb, "x.txt", _text("丁"), external_id="   ")
    assert bad.status_code == 422


def test_failed_version_leaves_the_old_one_live(api: TestClient, svc: Services) -> None:
    kb = _kb(api)
    first = _upload(api, kb, "policy.txt", OLD).json()
    _drain(svc)
    broken = _upload(api, kb, "policy.txt", b"   \n\n   \n").json()  # accepted, nothing to index
    _drain(svc)
    broken = _doc(api, kb, broken["id"])
    assert (broken["status"], broken["current"]) == ("failed", False)
    v1 = _doc(api, kb, first["id"])
    assert (v1["status"], v1["current"]) == ("ready", True)
    assert _found(api, kb, "唯一标记") == {first["id"]}
    # The consistency check and repair leave both as they are.
    doctor: Doctor = svc.doctor
    assert doctor.examine(repair=True, grace_s=0) == []
    assert _doc(api, kb, first["id"])["status"] == "ready"
    # The next good version still replaces v1.
    good = _upload(api, kb, "policy.txt", NEW).json()
    assert good["version"] == 3
    _drain(svc)
    assert _found(api, kb, "唯一标记") == {good["id"]}


def test_restore_makes_an_older_version_current_again(api: TestClient, svc: Services) -> None:
    kb = _kb(api)
    first = _upload(api, kb, "policy.txt", OLD).json()
    _drain(svc)
    second = _upload(api, kb, "policy.txt", NEW).json()
    _drain(svc)
    path = f"/v1/knowledge-bases/{kb}/documents/{second['id']}"
    assert api.post(f"{path}/restore", json={"version": 2}).status_code == 200  # current
    restored = api.post(f"{path}/restore")
    assert restored.status_code == 202, restored.text
    v3 = restored.json()
    assert (v3["version"], v3["sha256"], v3["current"]) == (3, first["sha256"], False)
    assert _found(api, kb, "唯一标记") == {second["id"]}  # until v3 is ready
    _drain(svc)
    assert _found(api, kb, "唯一标记") == {v3["id"]}
    assert "旧版甲" in _texts(api, kb, "旧版甲 唯一标记")
    assert _doc(api, kb, second["id"])["status"] == "superseded"
    assert api.post(f"{path}/restore", json={"version": 9}).status_code == 404


def test_old_files_are_pruned_beyond_the_setting(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    keep_one = settings.ingest.model_copy(update={"keep_document_versions": 1})
    svc = Services.create(settings.model_copy(update={"ingest": keep_one}))
    try:
        with TestClient(create_app(services=svc, start_worker=False, warm_up=False)) as api:
            kb = _kb(api)
            ids = []
            for tag in ("一", "二", "三", "四"):
                ids.append(_upload(api, kb, "policy.txt", _text(tag)).json()["id"])
                _drain(svc)
            versions = api.get(f"/v1/knowledge-bases/{kb}/documents/{ids[-1]}/versions").json()
            assert [(v["version"], v["status"]) for v in versions["versions"]] == [
                (4, "ready"),
                (3, "superseded"),
            ]
            files = sorted(p.name for p in (svc.settings.data_dir / "files" / kb).iterdir())
            assert files == sorted(ids[2:])
            assert (
                api.post(f"/v1/knowledge-bases/{kb}/documents/{ids[-1]}/restore").json()["version"]
                == 5
            )
    finally:
        svc.close()


def test_delete_removes_every_version(api: TestClient, svc: Services) -> None:
    kb = _kb(api)
    first = _upload(api, kb, "policy.txt", OLD).json()
    _drain(svc)
    second = _upload(api, kb, "policy.txt", NEW).json()
    _drain(svc)
    pending = _upload(api, kb, "policy.txt", _text("丙")).json()
    assert api.delete(f"/v1/knowledge-bases/{kb}/documents/{first['id']}").status_code == 204
    for doc in (first, second, pending):
        assert api.get(f"/v1/knowledge-bases/{kb}/documents/{doc['id']}").status_code == 404
    assert not list((svc.settings.data_dir / "files" / kb).iterdir())
    _drain(svc)  # the pending version's job finds nothing to do
    assert _found(api, kb, "唯一标记") == set()


def test_searches_through_the_switch_see_exactly_one_current_version(
    db_services: Services,
) -> None:
    """Searches run without pause while new versions replace each other: every result holds
    exactly one version of the document (never both, never neither), and a search that starts
    after a switch committed never returns an older version. On SQLite and PostgreSQL."""
    svc = db_services
    kb = svc.knowledge.create_kb("kb").id
    stage_dir = svc.settings.data_dir.parent / "in"
    stage_dir.mkdir()

    def add(name: str, data: bytes) -> str:
        path = stage_dir / name
        path.write_bytes(data)
        with path.open("rb") as fh:
            staged = stage_upload(fh, name, svc.settings.data_dir, 10**8)
        return svc.knowledge.add_document(kb, staged)[0].id

    for tag in ("其他甲", "其他乙", "其他丙"):
        add(f"{tag}.txt", _text(tag))
    worker = svc.worker()
    versions = [add("policy.txt", _text("版本0"))]
    while worker.run_once():
        pass

    live = [0]  # index into `versions` of the version committed live
    stop = threading.Event()
    problems: list[str] = []
    searches = [0]
    lock = threading.Lock()

    def search() -> None:
        while not stop.is_set():
            floor = live[0]
            hits = svc.retriever.search(kb, "唯一标记 规定", top_k=50)
            seen = sorted(
                {versions.index(h.document_id) for h in hits if h.document_id in versions}
            )
            others = {h.document_id for h in hits} - set(versions)
            with lock:
                searches[0] += 1
                if len(seen) != 1:
                    problems.append(f"versions {seen} in one result (live {floor})")
                elif seen[0] < floor:
                    problems.append(f"version {seen[0]} after {floor} went live")
                if len(others) != 3:
                    problems.append(f"{len(others)} other documents instead of 3")

    def more_searches(count: int) -> None:
        target = searches[0] + count
        wait_for(lambda: searches[0] >= target, timeout=120)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for n in range(1, 9):
            versions.append(add("policy.txt", _text(f"版本{n}")))
            while worker.run_once():
                pass
            live[0] = n  # the switch has committed (and this process's index caught up)
            more_searches(3)  # some of them overlapped the switch and its catch-up
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not problems, problems[:5]
    assert searches[0] >= 8 * 3
    with svc.db.read() as session:
        rows = session.execute(select(Document).where(Document.doc_key == "policy.txt")).scalars()
        current = [d.id for d in rows if d.is_current]
    assert current == [versions[-1]]


def test_migration_keys_existing_documents_by_file_name(database_url: str) -> None:
    """Documents from before versions: the newest of each file name gets it as key, older
    namesakes none (they stay separate documents), everything current at version 1."""
    from alembic import command
    from sqlalchemy import text

    from rag.store import schema
    from rag.store.db import Database

    db = Database(database_url)
    try:
        cfg = schema.alembic_config(database_url)
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0008")
            conn.execute(
                text(
                    "INSERT INTO knowledge_bases (id, tenant_id, name, description, "
                    "embedding_model, embedding_dim, created_at, live_version, lexical_terms) "
                    "VALUES ('k1', 'default', 'old', '', 'fake:64', 64, CURRENT_TIMESTAMP, 1, "
                    "'[]')"
                )
            )
            for doc_id, name, sha, when in (
                ("d1", "a.txt", "s1", "2020-01-01 00:00:00"),
                ("d2", "a.txt", "s2", "2021-01-01 00:00:00"),
                ("d3", "b.txt", "s3", "2020-01-01 00:00:00"),
            ):
                conn.execute(
                    text(
                        "INSERT INTO documents (id, kb_id, filename, media_type, size_bytes, "
                        "sha256, status, chunk_count, warnings, metadata, storage_path, "
                        "created_at, updated_at) VALUES (:id, 'k1', :name, 'text/plain', 1, "
                        ":sha, 'ready', 0, '[]', '{}', :path, :when, :when)"
                    ),
                    {
                        "id": doc_id,
                        "name": name,
                        "sha": sha,
                        "path": f"files/k1/{doc_id}",
                        "when": when,
                    },
                )
        schema.upgrade(db.engine)
        with db.read() as session:
            rows = {
                d.id: (d.doc_key, d.revision, d.is_current, d.parent_id)
                for d in session.execute(select(Document)).scalars()
            }
        assert rows == {
            "d1": (None, 1, True, None),
            "d2": ("a.txt", 1, True, None),
            "d3": ("b.txt", 1, True, None),
        }
    finally:
        db.dispose()


def test_a_replica_keeps_a_chunk_id_sqlite_reused_after_a_delete(svc: Services) -> None:
    """SQLite gives a new row the highest id + 1, so a document uploaded after the newest one was
    deleted reuses its chunk ids. A replica catching up over both (tombstone, then the new row
    with the same id) must keep the new chunk."""
    kb = svc.knowledge.create_kb("kb").id
    stage_dir = svc.settings.data_dir.parent / "in"
    stage_dir.mkdir()

    def add(name: str, data: bytes) -> str:
        path = stage_dir / name
        path.write_bytes(data)
        with path.open("rb") as fh:
            staged = stage_upload(fh, name, svc.settings.data_dir, 10**8)
        return svc.knowledge.add_document(kb, staged)[0].id

    add("keep.txt", _text("保留"))
    gone = add("gone.txt", _text("删除"))
    _drain(svc)
    replica = Services.create(svc.settings)
    try:
        assert len(replica.indexes.get(kb)) > 0  # loaded now, caught up later
        with svc.db.read() as session:
            old_ids = set(session.execute(select(Chunk.id).where(Chunk.document_id == gone)))
        svc.knowledge.delete_document(kb, gone)
        new = add("new.txt", _text("新增"))
        _drain(svc)
        with svc.db.read() as session:
            new_ids = set(session.execute(select(Chunk.id).where(Chunk.document_id == new)))
        assert old_ids & new_ids  # the reuse this test is about
        hits = replica.retriever.search(kb, "新增 唯一标记", top_k=10)
        assert new in {h.document_id for h in hits}
        ids = set(replica.indexes.get(kb).ids().tolist())
        assert {i for (i,) in new_ids} <= ids
    finally:
        replica.db.dispose()
