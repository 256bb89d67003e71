"""Pruning retired index versions: after a switch, and on demand; never the live version or one
being built (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from ingest.upload import stage_upload
from rag.cli.main import app
from rag.core.config import load_settings
from rag.core.errors import ConfigError, Conflict, InvalidInput
from rag.kb import job_control, versions
from rag.services import Services
from rag.store.models import Chunk, ChunkTombstone, Job, JobStatus
from tests.conftest import REPO, upload, wait_document, wait_for

FINAL = ("succeeded", "failed", "cancelled")
TOPICS = {
    "leave.txt": "年假制度：员工每年享有十五天带薪年假，需提前两周申请。",
    "expense.txt": "报销流程：差旅费用须在出差结束后三十天内提交发票报销。",
    "security.txt": "信息安全：密码每九十天更换一次，禁止在公共网络传输机密文件。",
}


@pytest.fixture
def svc(db_services: Services) -> Services:
    return db_services


@pytest.fixture
def kb(svc: Services) -> str:
    kb_id = svc.knowledge.create_kb("handbook").id
    for name, text in TOPICS.items():
        path = svc.settings.data_dir / "incoming" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(f"{text}（第 {i} 条，{name}）" for i in range(30)))
        with path.open("rb") as fh:
            svc.knowledge.add_document(kb_id, stage_upload(fh, name, svc.settings.data_dir, 10**7))
    worker = svc.worker()
    while worker.run_once():
        pass
    svc.indexes.rebuild(kb_id)  # version 1 has index files on disk, as in a running service
    return kb_id


def _reindex(svc: Services, kb_id: str, **settings: Any) -> Job:
    _, job = svc.versions.start_reindex(kb_id, **settings)
    assert svc.worker().run_job(job.id)
    with svc.db.read() as session:
        done = job_control.get_job(session, job.id)
    assert done.status == JobStatus.succeeded, done.error
    return done


def _versions(svc: Services, kb_id: str) -> dict[int, versions.VersionInfo]:
    with svc.db.read() as session:
        return {v.number: v for v in versions.list_versions(session, kb_id)}


def _statuses(svc: Services, kb_id: str) -> dict[int, str]:
    return {n: v.status for n, v in _versions(svc, kb_id).items()}


def _files(svc: Services, kb_id: str, number: int) -> bool:
    directory = svc.indexes.directory(kb_id, number)
    return directory.is_dir() and any(directory.iterdir())


def test_a_switch_keeps_the_live_and_one_previous_version_by_default(
    svc: Services, kb: str
) -> None:
    assert svc.settings.index.keep_versions == 2
    first = _reindex(svc, kb, chunk_tokens=64)
    assert first.result["pruned"] == []
    v1_chunks = _versions(svc, kb)[1].chunks
    assert v1_chunks > 0 and _files(svc, kb, 1)
    second = _reindex(svc, kb, chunk_tokens=128)
    assert second.result["pruned"] == [1]
    listed = _versions(svc, kb)
    assert {n: v.status for n, v in listed.items()} == {1: "pruned", 2: "retired", 3: "live"}
    assert listed[1].chunks == 0 and not _files(svc, kb, 1)
    assert listed[2].chunks > 0 and _files(svc, kb, 2)
    with svc.db.read() as session:
        # Deleted like any chunk: tombstoned, so every replica's index drops them too.
        tombstones = session.execute(
            select(func.count()).select_from(ChunkTombstone).where(ChunkTombstone.kb_id == kb)
        ).scalar_one()
    assert tombstones >= v1_chunks
    assert svc.indexes.check(kb)["consistent"]
    # The kept version is still a rollback target; the pruned one is not.
    version, job = svc.versions.start_rollback(kb)
    assert version.number == 2
    assert svc.worker().run_job(job.id)
    assert _statuses(svc, kb) == {1: "pruned", 2: "live", 3: "retired"}
    assert svc.retriever.search(kb, "年假怎么申请", top_k=3)[0].text.startswith("年假制度")


def test_prune_on_demand_and_a_larger_setting(svc: Services, kb: str) -> None:
    svc.settings.index.keep_versions = 3
    _reindex(svc, kb, chunk_tokens=64)
    third = _reindex(svc, kb, chunk_tokens=128)
    assert third.result["pruned"] == []
    assert _statuses(svc, kb) == {1: "retired", 2: "retired", 3: "live"}
    with pytest.raises(InvalidInput):
        svc.versions.prune(kb, keep=0)
    assert svc.versions.prune(kb) == []  # the setting keeps them all
    assert svc.versions.prune(kb, keep=2) == [1]
    assert svc.versions.prune(kb, keep=1) == [2]
    assert _statuses(svc, kb) == {1: "pruned", 2: "pruned", 3: "live"}
    with svc.db.read() as session:
        left = set(session.execute(select(Chunk.version).where(Chunk.kb_id == kb)).scalars())
    assert left == {3}
    with pytest.raises(Conflict, match="no earlier index version"):
        svc.versions.start_rollback(kb)
    assert svc.retriever.search(kb, "密码多久更换", top_k=3)[0].text.startswith("信息安全")
    assert svc.indexes.check(kb)["consistent"]
    # Numbers are not given out again.
    assert _reindex(svc, kb, chunk_tokens=96).result["version"] == 4


def test_prune_never_touches_the_live_version_or_one_being_built(svc: Services, kb: str) -> None:
    _reindex(svc, kb, chunk_tokens=64)
    # A rollback queued: version 1 is being built again (it only needs catching up).
    target, rollback = svc.versions.start_rollback(kb)
    assert target.number == 1
    assert svc.versions.prune(kb, keep=1) == []
    assert _statuses(svc, kb) == {1: "building", 2: "live"}
    assert svc.worker().run_job(rollback.id)
    assert _statuses(svc, kb) == {1: "live", 2: "retired"}
    # A new version being built, and a prune arriving in the middle of its build.
    _, job = svc.versions.start_reindex(kb, chunk_tokens=128)
    claimed = svc.worker().claim(job.id)
    assert claimed is not None
    pruned: list[list[int]] = []

    def progress(done: int, total: int) -> None:
        if done and not pruned:
            pruned.append(svc.versions.prune(kb, keep=1))

    outcome = svc.reindexer.run(claimed, progress)
    assert outcome.ok, outcome.error
    assert pruned == [[2]]  # the retired one only: not live 1, not building 3
    assert _statuses(svc, kb) == {1: "retired", 2: "pruned", 3: "live"}
    listed = _versions(svc, kb)
    assert listed[3].documents == len(TOPICS) and listed[1].chunks > 0


def test_keep_versions_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_INDEX__KEEP_VERSIONS", "4")
    assert load_settings().index.keep_versions == 4
    monkeypatch.setenv("RAG_INDEX__KEEP_VERSIONS", "0")
    with pytest.raises(ConfigError, match="RAG_INDEX__KEEP_VERSIONS"):
        load_settings()


def test_reindex_prune_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.cli_live import live_server

    runner = CliRunner()
    samples = str(REPO / "data" / "samples")
    server = live_server(tmp_path, monkeypatch, index={"keep_versions": 3})
    with server:
        args = ["ingest", samples, "--kb", "handbook", "--create", "--wait"]
        assert runner.invoke(app, args).exit_code == 0
        for size in ("64", "128"):
            done = runner.invoke(app, ["reindex", "--kb", "handbook", "--chunk-size", size])
            assert done.exit_code == 0, done.output
        nothing = runner.invoke(app, ["reindex", "prune", "--kb", "handbook", "--yes"])
        assert nothing.exit_code == 0 and "nothing to prune" in nothing.output
        args = ["reindex", "prune", "--kb", "handbook", "--keep", "1", "--yes"]
        pruned = runner.invoke(app, args)
        assert pruned.exit_code == 0 and "pruned index version(s) 1, 2" in pruned.output
        listed = runner.invoke(app, ["reindex", "versions", "--kb", "handbook"])
        assert "v1  pruned" in listed.output and "v3  live" in listed.output
    assert runner.invoke(app, ["reindex", "prune", "--kb", "handbook", "--keep", "0"]).exit_code
    bad = runner.invoke(app, ["reindex", "--kb", "handbook", "--engine", "spark"])
    assert bad.exit_code != 0 and "--engine must be local or ray" in bad.output
    both = runner.invoke(app, ["reindex", "--kb", "handbook", "--engine", "ray", "--no-wait"])
    assert both.exit_code != 0 and "--no-wait" in both.output


def test_prune_over_http(client: TestClient) -> None:
    kb = client.post("/v1/knowledge-bases", json={"name": "handbook"}).json()["id"]
    sample = (REPO / "tests" / "fixtures" / "员工手册.md").read_bytes()
    doc = upload(client, kb, "handbook.md", sample).json()
    assert wait_document(client, kb, doc["id"])["status"] == "ready"
    for size in (64, 128):
        job_id = client.post(
            f"/v1/knowledge-bases/{kb}/reindex", json={"chunk_tokens": size}
        ).json()["job_id"]
        wait_for(lambda job_id=job_id: client.get(f"/v1/jobs/{job_id}").json()["status"] in FINAL)
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    listed = client.get(f"/v1/knowledge-bases/{kb}/versions").json()["versions"]
    assert [v["status"] for v in listed] == ["pruned", "retired", "live"]  # after the switch
    resp = client.post(f"/v1/knowledge-bases/{kb}/versions/prune", params={"keep": 1})
    assert resp.status_code == 200 and resp.json() == {"pruned": [2], "live": 3}
    listed = client.get(f"/v1/knowledge-bases/{kb}/versions").json()["versions"]
    assert [(v["status"], v["chunks"]) for v in listed][:2] == [("pruned", 0), ("pruned", 0)]
    again = client.post(f"/v1/knowledge-bases/{kb}/versions/prune")
    assert again.status_code == 200 and again.json()["pruned"] == []
    bad = client.post(f"/v1/knowledge-bases/{kb}/versions/prune", params={"keep": 0})
    assert bad.status_code == 422
    assert client.post("/v1/knowledge-bases/nope/versions/prune").status_code == 404
