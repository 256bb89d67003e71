"""The formats enterprises keep, each parsed from a real file made in the test: XLSX and CSV,
PPTX, HTML, EML and MSG mail, Markdown, legacy Office through LibreOffice; and the hostile
versions of them (10,000 sheets, a 1 GB video, 100 MB of nested divs, 500 attachments)."""

from __future__ import annotations

import email.message
import io
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from ingest.attachments import child_name
from ingest.chunking import ChunkingConfig, chunk_document
from ingest.parsers import ParseError, UnsupportedMediaType, detect_media_type, parse
from ingest.parsers import detect as detect_module
from ingest.parsers.base import ParseLimits
from ingest.parsers.detect import (
    CSV,
    DOC,
    EML,
    HTML,
    JPEG,
    MARKDOWN,
    MSG,
    PNG,
    PPT,
    PPTX,
    TIFF,
    TSV,
    XLS,
    XLSX,
)
from ingest.parsers.notices import warning
from ingest.sandbox import parse_isolated
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

SOFFICE = shutil.which("soffice")
needs_libreoffice = pytest.mark.skipif(
    SOFFICE is None, reason="LibreOffice (Debian libreoffice-*-nogui) is not installed"
)
ZIP, OLE = b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

EXPENSES: dict[str, list[list[object]]] = {
    "差旅标准": [
        ["差旅费用报销标准（2024 版）"],
        [],
        ["城市", "住宿上限（元/晚）", "餐补（元/天）"],
        ["北京", 600, 100],
        ["成都", 400, 80],
    ],
    "Approvals": [["Amount", "Approver"], ["< 5000", "Team lead"], [">= 5000", "Director"]],
}


def _count_tokens(text: str) -> int:
    return len(text)


# --- detection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "head", "media_type"),
    [
        ("a.xlsx", ZIP, XLSX),
        ("a.pptx", ZIP, PPTX),
        ("a.csv", b"a,b\n1,2\n", CSV),
        ("a.tsv", b"a\tb\n", TSV),
        ("a.HTML", b"<!doctype html><p>x", HTML),
        ("a.htm", b"<p>x</p>", HTML),
        ("a.eml", b"Subject: x\n\nbody", EML),
        ("a.msg", OLE, MSG),
        ("a.png", b"\x89PNG\r\n\x1a\n\x00", PNG),
        ("a.JPG", b"\xff\xd8\xff\xe0", JPEG),
        ("a.tif", b"II*\x00", TIFF),
        ("a.tiff", b"MM\x00*", TIFF),
        ("a.md", b"# Title\n", MARKDOWN),
    ],
)
def test_detect_new_formats(filename: str, head: bytes, media_type: str) -> None:
    assert detect_media_type(filename, head) == media_type


@pytest.mark.parametrize(
    ("filename", "head", "reason"),
    [
        ("a.xlsx", b"name,age\n", "is not an Excel workbook"),
        ("a.pptx", OLE, "legacy Office"),  # a .ppt renamed .pptx
        ("a.msg", b"Subject: x\n", "not an Outlook message"),
        ("a.txt", b"\x89PNG\r\n\x1a\n", "PNG"),  # images only under their own names
        ("a.csv", b"II*\x00\x08\x00", "TIFF"),
        ("a.png", b"\xff\xd8\xff\xe0", "not a PNG image: it is a JPEG"),
        ("a.html", b"\x7fELF\x02\x01", "ELF"),
        ("a.eml", b"PK\x03\x04", "zip"),
    ],
)
def test_detect_refuses_contradictions(filename: str, head: bytes, reason: str) -> None:
    with pytest.raises(UnsupportedMediaType, match=reason):
        detect_media_type(filename, head)


def test_legacy_without_libreoffice_is_refused_naming_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(detect_module.shutil, "which", lambda name: None)
    for filename, package in [
        ("a.doc", "libreoffice-writer-nogui"),
        ("a.wps", "libreoffice-writer-nogui"),
        ("a.xls", "libreoffice-calc-nogui"),
        ("a.ppt", "libreoffice-impress-nogui"),
    ]:
        with pytest.raises(UnsupportedMediaType, match=f"Debian package {package}"):
            detect_media_type(filename, OLE)
        with pytest.raises(UnsupportedMediaType, match="not installed"):  # and at parse time
            parse(OLE + b"\x00" * 600, filename)


# --- spreadsheets ----------------------------------------------------------------------------


def test_xlsx_sheets_are_pages_with_their_header() -> None:
    doc = parse(make_xlsx(EXPENSES), "expenses.xlsx")
    assert doc.media_type == XLSX and doc.pages == 2
    got = [(b.kind, b.page, b.text) for b in doc.blocks]
    assert got == [
        ("heading", 1, "差旅标准"),
        ("paragraph", 1, "差旅费用报销标准（2024 版）"),  # a caption above the table
        (
            "table",
            1,
            "| 城市 | 住宿上限（元/晚） | 餐补（元/天） |\n|---|---|---|\n"
            "| 北京 | 600 | 100 |\n| 成都 | 400 | 80 |",
        ),
        ("heading", 2, "Approvals"),
        (
            "table",
            2,
            "| Amount | Approver |\n|---|---|\n| < 5000 | Team lead |\n| >= 5000 | Director |",
        ),
    ]


def test_xlsx_values_are_written_as_people_read_them() -> None:
    import datetime as dt

    rows: list[list[object]] = [
        ["day", "amount", "paid", "ratio"],
        [dt.datetime(2024, 3, 1), 12.0, True, 0.25],
    ]
    doc = parse(make_xlsx({"S": rows}), "a.xlsx")
    assert "| 2024-03-01 | 12 | TRUE | 0.25 |" in doc.blocks[-1].text


def test_xlsx_rows_keep_their_header_when_the_table_is_cut() -> None:
    rows: list[list[object]] = [["员工编号", "姓名", "部门", "年假天数"]]
    rows += [
        [f"E{i:04d}", f"员工{i}", "研发部" if i % 2 else "市场部", 5 + i % 10] for i in range(300)
    ]
    doc = parse(make_xlsx({"年假": rows}), "leave.xlsx")
    _, chunks = chunk_document(doc, ChunkingConfig(200, 0), _count_tokens)
    with_rows = [c for c in chunks if "| E0" in c.text]
    assert len(with_rows) > 5  # the table was cut
    for chunk in with_rows:
        assert "| 员工编号 | 姓名 | 部门 | 年假天数 |" in chunk.text, chunk.text[:200]
    row = next(c for c in with_rows if "| E0123 |" in c.text)
    assert "| E0123 | 员工123 | 研发部 | 8 |" in row.text


def test_xlsx_cell_limit_fails_with_the_setting_named() -> None:
    data = make_xlsx({"S": [[i, i + 1] for i in range(20)]})
    with pytest.raises(ParseError, match=r"more than 10 non-empty cells.*RAG_INGEST__MAX_CELLS"):
        parse(data, "a.xlsx", ParseLimits(max_cells=10))


def test_ten_thousand_sheets_fail_with_a_reason() -> None:
    data = many_sheets(10_000)
    assert len(data) < 400_000
    with pytest.raises(ParseError, match="10000 sheets; the limit is 5000"):
        parse(data, "sheets.xlsx")
    doc = parse(many_sheets(30), "sheets.xlsx")  # the same shape within the limit parses
    assert doc.pages == 30


def test_xlsx_claimed_dimension_is_not_trusted() -> None:
    data = make_xlsx({"S": [["a", "b"], [1, 2]]})
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            body = source.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                body = re.sub(
                    rb'<dimension ref="[^"]*"/>', b'<dimension ref="A1:XFD1048576"/>', body
                )
            target.writestr(info.filename, body)
    doc = parse(out.getvalue(), "a.xlsx")
    assert doc.blocks[-1].text == "| a | b |\n|---|---|\n| 1 | 2 |"


def test_xlsx_bomb_is_refused() -> None:
    source = zipfile.ZipFile(io.BytesIO(make_xlsx({"S": [["a"]]})))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
        target.writestr("xl/worksheets/sheet9.xml", b"<x>" + b" " * (8 << 20) + b"</x>")
    with pytest.raises(ParseError, match="zip bomb"):
        parse(out.getvalue(), "a.xlsx", ParseLimits(max_decompressed_bytes=4 << 20))
    with pytest.raises(ParseError, match="compression ratio"):
        parse(out.getvalue(), "a.xlsx")


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        ("城市;住宿上限\n北京;600\n成都;400\n".encode("gb18030"), "a.csv"),
        ("城市,住宿上限\n北京,600\n成都,400\n".encode("utf-8-sig"), "a.csv"),
        ("城市\t住宿上限\n北京\t600\n成都\t400\n".encode(), "a.tsv"),
    ],
)
def test_csv_dialects_and_encodings(data: bytes, filename: str) -> None:
    doc = parse(data, filename)
    assert doc.pages == 1
    assert [b.text for b in doc.blocks] == [
        "| 城市 | 住宿上限 |\n|---|---|\n| 北京 | 600 |\n| 成都 | 400 |"
    ]


def test_csv_limits() -> None:
    with pytest.raises(ParseError, match="RAG_INGEST__MAX_CELLS"):
        parse(b"a,b\n" * 100, "a.csv", ParseLimits(max_cells=50))
    with pytest.raises(ParseError, match="not valid CSV"):
        parse(b'a,"' + b"x" * 200_000 + b'"\n', "a.csv")


# --- slides ----------------------------------------------------------------------------------

DECK = [
    Slide(
        "Q3 results",
        ["Revenue grew 12%", "Margin stable"],
        [["Region", "Sales"], ["North", "120"]],
        "Thank the sales team",
    ),
    Slide("下一步", ["招聘两名工程师"], notes="预算已批准"),
]


def test_pptx_slides_are_pages_with_notes() -> None:
    doc = parse(make_pptx(DECK), "deck.pptx")
    assert doc.media_type == PPTX and doc.pages == 2
    assert [(b.kind, b.page, b.text) for b in doc.blocks] == [
        ("heading", 1, "Q3 results"),
        ("paragraph", 1, "Revenue grew 12%\nMargin stable"),
        ("table", 1, "| Region | Sales |\n|---|---|\n| North | 120 |"),
        ("paragraph", 1, "Thank the sales team"),
        ("heading", 2, "下一步"),
        ("paragraph", 2, "招聘两名工程师"),
        ("paragraph", 2, "预算已批准"),
    ]


@pytest.fixture(scope="module")
def deck_with_1gb_video() -> bytes:
    return with_video(make_pptx(DECK), 1 << 30)


def test_pptx_with_a_1gb_video_ingests_its_text_in_little_memory(
    deck_with_1gb_video: bytes, tmp_path: Path
) -> None:
    assert len(deck_with_1gb_video) < 5 << 20
    declared = zipfile.ZipFile(io.BytesIO(deck_with_1gb_video)).getinfo("ppt/media/media1.mp4")
    assert declared.file_size == 1 << 30
    path = tmp_path / "deck.pptx"
    path.write_bytes(deck_with_1gb_video)
    doc = parse_isolated(path, "deck.pptx", ParseLimits(), timeout_s=60, memory_mb=700)
    assert doc.pages == 2 and doc.blocks[0].text == "Q3 results"


def test_pptx_dtd_is_refused() -> None:
    source = zipfile.ZipFile(io.BytesIO(make_pptx(DECK)))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            body = source.read(info)
            if info.filename == "ppt/slides/slide1.xml":
                body = body.replace(b"?>", b'?><!DOCTYPE x [<!ENTITY a "aaaa">]>', 1)
            target.writestr(info.filename, body)
    with pytest.raises(ParseError, match="DTD"):
        parse(out.getvalue(), "deck.pptx")


def test_slide_limit() -> None:
    with pytest.raises(ParseError, match="2 slides; the limit is 1"):
        parse(make_pptx(DECK), "deck.pptx", ParseLimits(max_pages=1))


# --- HTML ------------------------------------------------------------------------------------

ARTICLE = (
    "<h1>差旅报销制度</h1><p>本制度适用于公司全体员工因公出差所发生的费用报销。员工出差前应提交"
    "出差申请，经部门负责人批准后方可出行。</p><h2>住宿标准</h2><p>一线城市每晚不超过 600 元，"
    "其他城市每晚不超过 400 元。超出部分由个人承担，特殊情况需总经理审批。</p>"
    "<table><tr><th>城市</th><th>标准</th></tr><tr><td>北京</td><td>600</td></tr></table>"
)


def test_html_keeps_the_main_content_without_navigation() -> None:
    doc = parse(make_html("制度", ARTICLE), "policy.html")
    assert doc.media_type == HTML and doc.pages == 1
    text = "\n".join(b.text for b in doc.blocks)
    for chrome in ("Sign in", "Products", "Copyright", "Privacy", "ACME Intranet"):
        assert chrome not in text
    headings = [(b.heading_level, b.text) for b in doc.blocks if b.kind == "heading"]
    assert headings == [(1, "差旅报销制度"), (2, "住宿标准")]
    assert any(b.kind == "table" and "| 北京 | 600 |" in b.text for b in doc.blocks)


def test_html_without_a_main_article_keeps_its_text() -> None:
    doc = parse(b"<html><body><div>Short note: the door code is 4711.</div></body></html>", "a.htm")
    assert "door code is 4711" in doc.blocks[0].text


def test_100mb_of_nested_divs_fail_with_a_reason() -> None:
    depth = 100_000_000 // 11
    data = b"<html><body>" + b"<div>" * depth + b"x" + b"</div>" * depth
    assert len(data) >= 100_000_000
    with pytest.raises(ParseError, match=r"the limit is 20971520.*RAG_INGEST__MAX_MARKUP_BYTES"):
        parse(data, "deep.html")
    deep = b"<html><body>" + b"<div>" * 200_000 + b"<p>deep text</p>" + b"</div>" * 200_000
    with pytest.raises(ParseError, match="no readable text"):  # under the limit: still quick
        parse(deep, "deep.html")


# --- mail ------------------------------------------------------------------------------------


def test_eml_headers_body_and_attachments() -> None:
    report = "季度报告：收入增长 12%。".encode()
    data = make_eml("Q3 季度报告", "各位好，\n\n请查收附件中的季度报告。", [("report.txt", report)])
    doc = parse(data, "mail.eml")
    assert doc.media_type == EML and doc.pages == 1
    assert doc.blocks[0].kind == "heading" and doc.blocks[0].text == "Q3 季度报告"
    assert "From: 张三 <zhangsan@example.com>" in doc.blocks[1].text
    assert "请查收附件中的季度报告。" in doc.blocks[-1].text
    assert [(a.filename, a.data) for a in doc.attachments] == [("report.txt", report)]


def test_eml_html_body_and_forwarded_message() -> None:
    inner = email.message.EmailMessage()
    inner["Subject"] = "原始通知"
    inner.set_content("原始邮件正文")
    outer = email.message.EmailMessage()
    outer["Subject"] = "FW: 通知"
    outer.set_content(
        "<html><body><nav>Menu</nav><h1>通知</h1><p>请阅读转发的邮件，周五前回复。</p></body></html>",
        subtype="html",
    )
    outer.add_attachment(inner)
    doc = parse(outer.as_bytes(), "fw.eml")
    assert any("请阅读转发的邮件" in b.text for b in doc.blocks)
    [forwarded] = doc.attachments
    assert forwarded.filename == "原始通知.eml"
    assert parse(forwarded.data, forwarded.filename).blocks[0].text == "原始通知"


def test_eml_with_500_attachments_keeps_the_limit_and_says_so() -> None:
    files = [(f"note-{i}.txt", f"note {i}".encode()) for i in range(500)]
    doc = parse(make_eml("many", "see attached", files), "many.eml")
    assert len(doc.attachments) == 100
    assert doc.attachments[-1].filename == "note-99.txt"
    assert warning("mail_attachments_limit", count=400, limit=100) in doc.warnings


def test_msg_headers_body_and_attachments() -> None:
    data = make_msg(
        "报销审批",
        "您的报销单已批准。\n金额：1200 元。",
        [("清单.txt", "打车 200 元".encode()), ("big.bin", b"\x01" * 5000)],
    )
    doc = parse(data, "approval.msg")
    assert doc.media_type == MSG
    assert doc.blocks[0].text == "报销审批"
    assert 'From: "Li Si" <lisi@example.com>' in doc.blocks[1].text
    assert "To: team@example.com" in doc.blocks[1].text
    assert "金额：1200 元。" in doc.blocks[-1].text
    assert [(a.filename, len(a.data)) for a in doc.attachments] == [
        ("清单.txt", 14),
        ("big.bin", 5000),
    ]


def test_child_names_keep_the_attachment_extension() -> None:
    assert child_name("mail.eml", "report.pdf") == "mail.eml › report.pdf"
    assert child_name("m" * 300 + ".eml", "../../etc/report.pdf").endswith(" › report.pdf")
    assert len(child_name("m" * 300 + ".eml", "report.pdf")) <= 255


# --- Markdown --------------------------------------------------------------------------------


def test_markdown_heading_structure_and_tables() -> None:
    text = (
        "# 员工手册\n\n欢迎加入。\n\n## 假期\n\n### 年假\n\n入职满一年享有 5 天年假。\n\n"
        "| 工龄 | 天数 |\n|:--|--:|\n| 1 年 | 5 |\n| 10 年 | 10 \\| 另加 1 |\n\n"
        "## 报销\n\n见附件。\n"
    )
    doc = parse(text.encode(), "handbook.md")
    outline = [(b.heading_level, b.text) for b in doc.blocks if b.kind == "heading"]
    assert outline == [(1, "员工手册"), (2, "假期"), (3, "年假"), (2, "报销")]
    [table] = [b for b in doc.blocks if b.kind == "table"]
    assert table.text == "| 工龄 | 天数 |\n|---|---|\n| 1 年 | 5 |\n| 10 年 | 10 \\| 另加 1 |"
    _, chunks = chunk_document(doc, ChunkingConfig(64, 0), _count_tokens)
    leave = next(c for c in chunks if "5 天年假" in c.text)
    assert list(leave.heading_path)[-3:] == ["员工手册", "假期", "年假"]


# --- legacy Office through LibreOffice -------------------------------------------------------


def _to_legacy(tmp_path: Path, name: str, data: bytes, target: str) -> bytes:
    source = tmp_path / name
    source.write_bytes(data)
    profile = (tmp_path / "profile").as_uri()
    subprocess.run(
        [
            str(SOFFICE),
            "--headless",
            f"-env:UserInstallation={profile}",
            "--convert-to",
            target,
            "--outdir",
            str(tmp_path / "out"),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return (tmp_path / "out" / f"{source.stem}.{target}").read_bytes()


@needs_libreoffice
def test_legacy_office_files_are_converted(tmp_path: Path) -> None:
    xls = _to_legacy(tmp_path, "expenses.xlsx", make_xlsx(EXPENSES), "xls")
    ppt = _to_legacy(tmp_path, "deck.pptx", make_pptx(DECK), "ppt")
    assert xls.startswith(OLE) and ppt.startswith(OLE)
    sheet = parse(xls, "expenses.xls")
    assert sheet.media_type == XLS and sheet.pages == 2
    assert any("| 北京 | 600 | 100 |" in b.text for b in sheet.blocks)
    slides = parse(ppt, "deck.ppt")
    assert slides.media_type == PPT and slides.pages == 2
    assert "预算已批准" in [b.text for b in slides.blocks]
    import docx

    word = docx.Document()
    word.add_heading("旧版制度", 1)
    word.add_paragraph("本文件为 Word 97 格式。")
    out = io.BytesIO()
    word.save(out)
    doc = parse(_to_legacy(tmp_path, "policy.docx", out.getvalue(), "doc"), "policy.doc")
    assert doc.media_type == DOC
    assert [b.text for b in doc.blocks] == ["旧版制度", "本文件为 Word 97 格式。"]


@needs_libreoffice
def test_legacy_names_on_other_content_are_refused() -> None:
    with pytest.raises(ParseError, match="damaged"):
        parse(OLE + b"junk" * 500, "a.doc")
    with pytest.raises(ParseError, match=r"holds no \.xls content"):
        parse(make_msg("x", "y"), "a.xls")  # an Outlook message renamed .xls
