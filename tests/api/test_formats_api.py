"""Every format of issue 17 uploaded through the API, ingested end to end and found by search;
mail attachments as child documents; hostile files that fail with a reason (or ingest within
their limits) while the service keeps answering."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ingest.parsers import detect
from ingest.parsers.notices import warning
from rag.core.config import Settings
from tests.conftest import make_settings, upload, wait_document, wait_for
from tests.ingest.format_files import (
    Slide,
    make_eml,
    make_html,
    make_msg,
    make_pptx,
    make_xlsx,
    many_sheets,
    with_video,
)

MAX_ATTACHMENTS = 10


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    base = make_settings(tmp_path / "data")
    ingest = base.ingest.model_copy(update={"max_attachments": MAX_ATTACHMENTS})
    return base.model_copy(update={"ingest": ingest})


@pytest.fixture
def kb(client: TestClient) -> str:
    resp = client.post("/v1/knowledge-bases", json={"name": "formats"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _search(client: TestClient, kb: str, query: str, top_k: int = 3) -> list[dict[str, Any]]:
    resp = client.post(
        f"/v1/knowledge-bases/{kb}/search", json={"query": query, "top_k": top_k, "mode": "lexical"}
    )
    assert resp.status_code == 200, resp.text
    return list(resp.json()["results"])


def _documents(client: TestClient, kb: str) -> list[dict[str, Any]]:
    return list(client.get(f"/v1/knowledge-bases/{kb}/documents").json()["documents"])


def _ingest(client: TestClient, kb: str, name: str, body: bytes, **kw: Any) -> dict[str, Any]:
    resp = upload(client, kb, name, body, **kw)
    assert resp.status_code == 202, resp.text
    return wait_document(client, kb, resp.json()["id"], timeout=120)


ROWS = [["城市", "住宿上限（元/晚）", "餐补（元/天）"]] + [
    [f"城市{i:03d}", 300 + i, 50 + i % 7] for i in range(200)
]
ROWS.insert(137, ["拉萨", 777, 99])

FORMATS: list[tuple[str, Callable[[], bytes], int, str]] = [
    (
        "expenses.xlsx",
        lambda: make_xlsx({"标准": ROWS, "审批": [["金额", "审批人"], ["大额", "总监"]]}),
        2,
        "审批人 总监",
    ),
    ("limits.csv", lambda: "项目,上限\n会议室预订,两小时\n".encode("gb18030"), 1, "会议室预订"),
    (
        "review.pptx",
        lambda: make_pptx(
            [Slide("季度回顾", ["收入增长"]), Slide("计划", ["招聘"], notes="预算已由财务部批准")]
        ),
        2,
        "预算 财务部 批准",
    ),
    (
        "policy.html",
        lambda: make_html(
            "制度",
            "<h1>远程办公</h1><p>员工每周可以远程办公两天，需提前在系统中登记，并保持通讯畅通。</p>",
        ),
        1,
        "远程办公 登记",
    ),
    (
        "notice.eml",
        lambda: make_eml("停电通知", "本周六上午九点至十二点大楼停电检修。"),
        1,
        "大楼 停电 检修",
    ),
    (
        "approval.msg",
        lambda: make_msg("报销审批", "您的差旅报销单已批准，款项三日内到账。"),
        1,
        "款项 到账",
    ),
    (
        "handbook.md",
        lambda: "# 手册\n\n## 门禁\n\n门禁卡丢失请联系行政部补办。\n".encode(),
        1,
        "门禁卡 补办",
    ),
]


def test_each_format_is_ingested_and_found(client: TestClient, kb: str) -> None:
    ids = {}
    for name, make, _, _ in FORMATS:
        resp = upload(client, kb, name, make())
        assert resp.status_code == 202, (name, resp.text)
        ids[name] = resp.json()["id"]
    for name, _, pages, query in FORMATS:
        doc = wait_document(client, kb, ids[name], timeout=120)
        assert doc["status"] == "ready", doc
        assert doc["pages"] == pages and doc["chunks"] >= 1, doc
        hits = _search(client, kb, query)
        assert hits and hits[0]["filename"] == name, (name, hits[:1])


def test_a_row_is_found_with_its_header(client: TestClient, kb: str) -> None:
    """A question whose answer is one spreadsheet row returns the chunk with that row and
    the column names that say what its numbers are."""
    _ingest(client, kb, "expenses.xlsx", make_xlsx({"标准": ROWS}))
    [hit] = _search(client, kb, "拉萨的住宿上限是多少？", top_k=1)
    assert "| 拉萨 | 777 | 99 |" in hit["text"]
    assert "| 城市 | 住宿上限（元/晚） | 餐补（元/天） |" in hit["text"]


def test_mail_attachments_become_child_documents(client: TestClient, kb: str) -> None:
    attachments = [
        ("report.txt", "第三季度收入增长百分之十二，主要来自华东区。".encode()),
        ("budget.xlsx", make_xlsx({"预算": [["部门", "预算"], ["研发部", 880000]]})),
        ("tool.exe", b"MZ\x90\x00" + b"\x00" * 200),
    ]
    mail = _ingest(
        client,
        kb,
        "mail.eml",
        make_eml("季度报告", "请查收附件。", attachments),
        data={"metadata": '{"team": "finance"}'},
    )
    assert mail["status"] == "ready", mail
    assert warning("attachment_unsupported", names="tool.exe") in mail["warnings"]

    def children() -> list[dict[str, Any]]:
        return [d for d in _documents(client, kb) if d["parent_id"] == mail["id"]]

    wait_for(lambda: len(children()) == 2 and all(d["status"] == "ready" for d in children()))
    by_name = {d["filename"]: d for d in children()}
    assert set(by_name) == {"mail.eml › report.txt", "mail.eml › budget.xlsx"}
    assert all(d["metadata"] == {"team": "finance"} and d["key"] is None for d in by_name.values())
    [hit] = _search(client, kb, "华东区 收入增长", top_k=1)
    assert hit["filename"] == "mail.eml › report.txt"
    [hit] = _search(client, kb, "研发部 预算", top_k=1)
    assert hit["filename"] == "mail.eml › budget.xlsx"

    assert client.delete(f"/v1/knowledge-bases/{kb}/documents/{mail['id']}").status_code == 204
    assert _documents(client, kb) == []  # the children went with their mail
    for child in by_name.values():
        assert client.get(f"/v1/knowledge-bases/{kb}/documents/{child['id']}").status_code == 404
    assert _search(client, kb, "华东区 收入增长") == []


def test_a_new_version_of_a_mail_keeps_the_attachments_it_shares(
    client: TestClient, kb: str
) -> None:
    shared = ("plan.txt", "项目计划：十二月完成验收。".encode())
    first = _ingest(client, kb, "weekly.eml", make_eml("周报", "第一版。", [shared]))
    wait_for(lambda: [d["status"] for d in _documents(client, kb) if d["parent_id"]] == ["ready"])
    second = _ingest(client, kb, "weekly.eml", make_eml("周报", "第二版，有修改。", [shared]))
    assert second["status"] == "ready" and second["id"] != first["id"], second
    [child] = [d for d in _documents(client, kb) if d["parent_id"]]
    assert child["parent_id"] == second["id"] and child["status"] == "ready"
    [hit] = _search(client, kb, "十二月 验收", top_k=1)
    assert hit["filename"] == "weekly.eml › plan.txt"


def test_msg_attachment_becomes_a_child(client: TestClient, kb: str) -> None:
    data = make_msg(
        "合同", "合同见附件。", [("合同条款.md", "# 合同\n\n付款期限为三十天。\n".encode())]
    )
    mail = _ingest(client, kb, "contract.msg", data)
    assert mail["status"] == "ready", mail
    wait_for(lambda: any(d["status"] == "ready" for d in _documents(client, kb) if d["parent_id"]))
    [hit] = _search(client, kb, "付款期限", top_k=1)
    assert hit["filename"] == "contract.msg › 合同条款.md"


# --- hostile files ---------------------------------------------------------------------------


def test_hostile_files_fail_with_a_reason_or_ingest_within_limits(
    client: TestClient, kb: str
) -> None:
    many = [(f"note-{i}.txt", f"附件编号 {i} 的内容".encode()) for i in range(500)]
    queued = {
        "sheets.xlsx": many_sheets(10_000),
        "video.pptx": with_video(make_pptx([Slide("视频", ["一段介绍"]), Slide("结尾")]), 1 << 30),
        "deep.html": b"<html><body>" + b"<div>" * 9_100_000 + b"x" + b"</div>" * 9_100_000,
        "many.eml": make_eml("五百个附件", "见附件。", many),
    }
    ids = {}
    for name, data in queued.items():
        resp = upload(client, kb, name, data)
        assert resp.status_code == 202, (name, resp.text)
        ids[name] = resp.json()["id"]
    # The service answers while they are ingested.
    assert client.get("/healthz").status_code == 200
    normal = _ingest(client, kb, "normal.md", "# 正常文档\n\n正常的内容。\n".encode())
    assert normal["status"] == "ready"

    states = {name: wait_document(client, kb, ids[name], timeout=180) for name in queued}
    assert states["sheets.xlsx"]["status"] == "failed"
    assert "10000 sheets; the limit is 5000" in states["sheets.xlsx"]["error"]
    assert states["video.pptx"]["status"] == "ready" and states["video.pptx"]["pages"] == 2
    assert states["deep.html"]["status"] == "failed"
    assert "RAG_INGEST__MAX_MARKUP_BYTES" in states["deep.html"]["error"]
    mail = states["many.eml"]
    assert mail["status"] == "ready"
    limit = warning("mail_attachments_limit", count=500 - MAX_ATTACHMENTS, limit=MAX_ATTACHMENTS)
    assert limit in mail["warnings"]

    def children() -> list[dict[str, Any]]:
        return [d for d in _documents(client, kb) if d["parent_id"] == mail["id"]]

    wait_for(lambda: [d["status"] for d in children()] == ["ready"] * MAX_ATTACHMENTS, 120)


# --- legacy Office ---------------------------------------------------------------------------


def test_legacy_without_libreoffice_is_a_415_naming_the_package(
    client: TestClient, kb: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(detect.shutil, "which", lambda name: None)
    resp = upload(client, kb, "old.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)
    assert resp.status_code == 415
    assert "libreoffice-writer-nogui" in resp.json()["error"]["message"]


@pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice is not installed")
def test_legacy_word_file_is_ingested(client: TestClient, kb: str, tmp_path: Path) -> None:
    import docx

    word = docx.Document()
    word.add_heading("旧版考勤制度", 1)
    word.add_paragraph("迟到三次以上扣除当月全勤奖。")
    source = tmp_path / "attendance.docx"
    word.save(str(source))
    profile = (tmp_path / "profile").as_uri()
    subprocess.run(
        [
            "soffice",
            "--headless",
            f"-env:UserInstallation={profile}",
            "--convert-to",
            "doc",
            "--outdir",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    doc = _ingest(client, kb, "attendance.doc", (tmp_path / "attendance.doc").read_bytes())
    assert doc["status"] == "ready" and doc["media_type"] == "application/msword", doc
    [hit] = _search(client, kb, "全勤奖", top_k=1)
    assert hit["filename"] == "attendance.doc"


def test_a_damaged_package_fails_alone(client: TestClient, kb: str) -> None:
    broken = io.BytesIO()
    with zipfile.ZipFile(broken, "w") as z:
        z.writestr("ppt/presentation.xml", b"<not-xml")
    bad = _ingest(client, kb, "broken.pptx", broken.getvalue())
    assert bad["status"] == "failed" and bad["error"]
    good = _ingest(client, kb, "fine.csv", b"a,b\n1,2\n")
    assert good["status"] == "ready"
