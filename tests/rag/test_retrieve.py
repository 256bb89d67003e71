"""Dense, lexical and hybrid retrieval through the real pipeline (fake embedder), with filters,
deletion, replicas and restarts. Filter and lifecycle tests run on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.upload import stage_upload
from rag.core.errors import InvalidInput
from rag.index.lexical import MANIFEST as LEXICAL_MANIFEST
from rag.services import Services
from tests.conftest import make_settings

HANDBOOK = (
    "员工手册\n\n第一章 年假\n\n入职满一年的员工每年享有十天带薪年假，年假须提前三天申请。\n\n"
    "第二章 报销\n\n差旅费用在出差结束后十五天内提交报销单，附上发票原件。\n\n"
    "第三章 设备\n\n笔记本电脑型号 ThinkPad-X1-G11 由信息部统一配发，损坏请联系 IT 服务台。\n"
)
POLICY = (
    "安全政策\n\n第一章 密码\n\n密码至少十二位，每九十天更换一次。\n\n"
    "第二章 年假期间的远程访问\n\n员工年假期间不得使用个人设备访问公司系统。\n"
)
NOTES = "会议纪要\n\n周一例会讨论了年假排班、报销系统升级和新办公室搬迁。\n"


def _add(
    svc: Services, kb_id: str, name: str, text: str, meta: dict[str, Any] | None = None
) -> str:
    staging = svc.settings.data_dir / "incoming"
    staging.mkdir(parents=True, exist_ok=True)
    path = staging / name
    path.write_text(text, encoding="utf-8")
    with path.open("rb") as fh:
        staged = stage_upload(fh, name, svc.settings.data_dir, 10**8)
    doc, _ = svc.knowledge.add_document(kb_id, staged, meta)
    return doc.id


def _drain(svc: Services) -> None:
    worker = svc.worker()
    while worker.run_once():
        pass


@pytest.fixture
def svc(tmp_path: Path, database_url: str) -> Iterator[Services]:
    s = Services.create(make_settings(tmp_path / "data", database_url))
    yield s
    s.close()


@pytest.fixture
def kb(svc: Services) -> dict[str, str]:
    kb_id = svc.knowledge.create_kb("handbook").id
    docs = {
        "handbook": _add(svc, kb_id, "员工手册.txt", HANDBOOK, {"team": "hr", "year": 2024}),
        "policy": _add(svc, kb_id, "安全政策.md", POLICY, {"team": "it"}),
        "notes": _add(svc, kb_id, "notes-2024.txt", NOTES, {"team": "hr", "year": 2023}),
    }
    _drain(svc)
    return {"kb": kb_id, **docs}


def test_every_mode_answers_and_lexical_finds_exact_codes(
    svc: Services, kb: dict[str, str]
) -> None:
    for mode in ("dense", "lexical", "hybrid"):
        hits = svc.retriever.search(kb["kb"], "年假有几天", 3, mode=mode)
        assert hits and len(hits) <= 3
        assert hits[0].score >= hits[-1].score
    # The fake embedder knows no meaning; BM25 still finds the exact model number, and hybrid
    # keeps it first.
    for mode in ("lexical", "hybrid"):
        top = svc.retriever.search(kb["kb"], "ThinkPad-X1-G11 坏了", 1, mode=mode)[0]
        assert "ThinkPad-X1-G11" in top.text and top.filename == "员工手册.txt"


def test_backward_compatible_call_uses_the_configured_mode(
    svc: Services, kb: dict[str, str]
) -> None:
    assert svc.settings.retrieval.mode == "hybrid"
    default = svc.retriever.search(kb["kb"], "报销单", 2)
    assert [p.chunk_id for p in default] == [
        p.chunk_id for p in svc.retriever.search(kb["kb"], "报销单", 2, mode="hybrid")
    ]


def test_bad_mode_and_filters_are_refused(svc: Services, kb: dict[str, str]) -> None:
    with pytest.raises(InvalidInput, match="mode"):
        svc.retriever.search(kb["kb"], "年假", mode="fuzzy")
    with pytest.raises(InvalidInput, match="unknown filter"):
        svc.retriever.search(kb["kb"], "年假", filters={"author": "x"})
    with pytest.raises(InvalidInput, match="document_ids"):
        svc.retriever.search(kb["kb"], "年假", filters={"document_ids": "abc"})


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_filters_rank_inside_the_allowed_set(svc: Services, kb: dict[str, str], mode: str) -> None:
    def files(**filters: Any) -> set[str]:
        return {
            p.filename
            for p in svc.retriever.search(kb["kb"], "年假", 10, mode=mode, filters=filters)
        }

    assert files(document_ids=[kb["policy"]]) == {"安全政策.md"}
    assert files(filename="*.TXT") == {"员工手册.txt", "notes-2024.txt"}
    assert files(filename="notes-*") == {"notes-2024.txt"}
    assert files(metadata={"team": "hr"}) == {"员工手册.txt", "notes-2024.txt"}
    assert files(metadata={"team": "hr", "year": 2023}) == {"notes-2024.txt"}
    assert files(metadata={"team": "finance"}) == set()
    assert files(document_ids=[kb["policy"]], metadata={"team": "hr"}) == set()


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_filtered_top_k_is_full(svc: Services, kb: dict[str, str], mode: str) -> None:
    """top_k of the filtered set, not what survives a filter applied after ranking."""
    many = "\n\n".join(f"第{i}节 细则\n\n补充说明第{i}条：年假、报销、电脑。" for i in range(30))
    other = _add(svc, kb["kb"], "细则.txt", many)
    _drain(svc)
    query = "年假 报销 电脑"
    unfiltered = svc.retriever.search(kb["kb"], query, 5, mode=mode)
    assert all(p.document_id == other for p in unfiltered)
    hr_only = svc.retriever.search(kb["kb"], query, 3, mode=mode, filters={"filename": "员工手册*"})
    # Three handbook chapters match (one term each): all three come back.
    assert len(hr_only) == 3
    assert {p.filename for p in hr_only} == {"员工手册.txt"}


def test_deleted_documents_leave_both_indexes(svc: Services, kb: dict[str, str]) -> None:
    assert svc.retriever.search(kb["kb"], "ThinkPad-X1-G11", 1, mode="lexical")
    svc.knowledge.delete_document(kb["kb"], kb["handbook"])
    for mode in ("dense", "lexical", "hybrid"):
        hits = svc.retriever.search(kb["kb"], "ThinkPad-X1-G11 年假 报销", 10, mode=mode)
        assert all(p.document_id != kb["handbook"] for p in hits)
    check = svc.indexes.check(kb["kb"])
    assert check["consistent"] and check["lexical_consistent"]


def test_replica_and_restart_catch_up_lexically(
    svc: Services, kb: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    svc.indexes.get(kb["kb"])  # loaded (built from SQL), so there is something to snapshot
    svc.indexes.save_dirty()
    assert (svc.indexes.directory(kb["kb"]) / LEXICAL_MANIFEST).exists()
    replica = Services.create(make_settings(tmp_path / "replica", database_url))
    try:
        assert (
            replica.retriever.search(kb["kb"], "密码", 1, mode="lexical")[0].filename
            == "安全政策.md"
        )
        # Written by the first process, seen by the replica through sequence catch-up.
        _add(svc, kb["kb"], "停车.txt", "停车场管理办法\n\n访客车辆须在门卫处登记车牌号。\n")
        _drain(svc)
        assert (
            replica.retriever.search(kb["kb"], "车牌号", 1, mode="lexical")[0].filename
            == "停车.txt"
        )
        svc.knowledge.delete_document(kb["kb"], kb["policy"])
        replica.indexes.sync()
        assert not replica.retriever.search(kb["kb"], "密码", 5, mode="lexical")
    finally:
        replica.close()
    svc.close()
    again = Services.create(make_settings(tmp_path / "data", database_url))
    try:  # from the snapshot plus catch-up: the deletion and the new document are both there
        assert (
            again.retriever.search(kb["kb"], "车牌号", 1, mode="lexical")[0].filename == "停车.txt"
        )
        assert not again.retriever.search(kb["kb"], "密码", 5, mode="lexical")
        assert again.indexes.check(kb["kb"])["lexical_consistent"]
    finally:
        again.close()


def test_a_corrupt_lexical_snapshot_is_rebuilt_from_sql(
    svc: Services, kb: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    svc.indexes.get(kb["kb"])
    svc.indexes.save_dirty()
    directory = svc.indexes.directory(kb["kb"])
    for data in directory.glob("lexical-*.npz"):
        data.write_bytes(b"not a snapshot")
    svc.close()
    again = Services.create(make_settings(tmp_path / "data", database_url))
    try:
        assert (
            again.retriever.search(kb["kb"], "密码", 1, mode="lexical")[0].filename == "安全政策.md"
        )
        assert list(directory.parent.glob(f"{directory.name}.corrupt-lexical-*"))
    finally:
        again.close()


PAGED = (
    "设备手册\n\n第一章 配发\n\n本章说明公司设备的配发与归还。\f"
    "笔记本电脑由信息部统一配发，领取时须签字。\f"
    "显示器和键盘可在行政部申领。\n"
)


def test_a_multi_page_chunk_names_the_page_of_its_best_sentence(svc: Services) -> None:
    kb_id = svc.knowledge.create_kb("paged").id
    _add(svc, kb_id, "设备手册.txt", PAGED)
    _drain(svc)
    for mode in ("lexical", "hybrid", "dense"):
        (laptop,) = svc.retriever.search(kb_id, "笔记本电脑配发", 1, mode=mode)
        assert (laptop.page_start, laptop.page_end) == (1, 3)
        assert laptop.page == 2, mode
        (screen,) = svc.retriever.search(kb_id, "显示器 键盘 申领", 1, mode=mode)
        assert screen.page == 3 and screen.first_page == 1
    svc.settings.retrieval.page_locate = False
    (plain,) = svc.retriever.search(kb_id, "显示器 键盘 申领", 1, mode="lexical")
    assert plain.page == 1


def test_document_aggregation_returns_each_document_once(svc: Services, kb: dict[str, str]) -> None:
    many = "\n\n".join(f"第{i}节 细则\n\n补充说明第{i}条：年假、报销、电脑。" for i in range(12))
    other = _add(svc, kb["kb"], "细则.txt", many)
    _drain(svc)
    query = "年假 报销 电脑"
    chunks = svc.retriever.search(kb["kb"], query, 5, mode="lexical")
    assert {p.document_id for p in chunks} == {other}
    for mode in ("lexical", "hybrid", "dense"):
        docs = svc.retriever.search(kb["kb"], query, 5, mode=mode, aggregate="document")
        ids = [p.document_id for p in docs]
        assert len(ids) == len(set(ids)) >= 3, mode
        assert [p.score for p in docs] == sorted((p.score for p in docs), reverse=True)
    lexical_docs = svc.retriever.search(kb["kb"], query, 5, mode="lexical", aggregate="document")
    assert lexical_docs[0].document_id == other  # its best chunk matches every term
    with pytest.raises(InvalidInput, match="aggregate"):
        svc.retriever.search(kb["kb"], query, aggregate="section")


def test_auto_aggregation_ranks_documents_once_the_kb_is_many_short_ones(
    svc: Services, kb: dict[str, str]
) -> None:
    assert svc.settings.retrieval.doc_aggregate == "auto"
    many = "\n\n".join(f"第{i}节 细则\n\n补充说明第{i}条：年假、报销、电脑。" for i in range(12))
    other = _add(svc, kb["kb"], "细则.txt", many)
    _drain(svc)
    query = "年假 报销 电脑"
    # Four documents: a handful of long ones, ranked by chunk (one document fills the list).
    chunks = svc.retriever.search(kb["kb"], query, 5, mode="lexical")
    assert [p.document_id for p in chunks] == [other] * 5
    # Twenty more one-chunk notes: now many short documents, ranked by document.
    for n in range(20):
        _add(svc, kb["kb"], f"通知{n}.txt", f"第{n}号通知：年假安排另行公布。")
    _drain(svc)
    for mode in ("lexical", "hybrid", "dense"):
        docs = svc.retriever.search(kb["kb"], query, 5, mode=mode)
        ids = [p.document_id for p in docs]
        assert len(ids) == len(set(ids)) == 5, mode
    assert svc.retriever.search(kb["kb"], query, 5, mode="lexical")[0].document_id == other
    # Asked for by chunk, the same knowledge base still gives several chunks of one document.
    plain = svc.retriever.search(kb["kb"], query, 5, mode="lexical", aggregate="chunk")
    assert [p.document_id for p in plain].count(other) >= 2


def test_adaptive_fusion_searches_like_weighted_fusion(svc: Services, kb: dict[str, str]) -> None:
    svc.settings.retrieval.fusion = "adaptive"
    top = svc.retriever.search(kb["kb"], "ThinkPad-X1-G11 坏了", 1, mode="hybrid")[0]
    assert "ThinkPad-X1-G11" in top.text
    assert svc.retriever.search(kb["kb"], "年假有几天", 3, mode="hybrid")
