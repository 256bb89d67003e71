from __future__ import annotations

import pytest

from ingest.normalize import collapse_cjk_spaces, join_wrapped_lines, normalize_text


def test_normalize_removes_controls_and_unifies_newlines() -> None:
    raw = "a\x00b\r\nc\rd\u2028e\x07f \t\n\ufeffg\u200bh\u00a0i\tj"
    assert normalize_text(raw) == "ab\nc\nd\nef\ngh i\tj"


def test_normalize_keeps_full_width_punctuation() -> None:
    text = "什么是 Debian？它是：自由的，（免费的）。"
    assert normalize_text(text) == text


@pytest.mark.parametrize(
    ("lines", "joined"),
    [
        # CJK on either side: no space
        (
            ["然后自己编译。之后，他们可以获得源代码", "，编译这些程序"],
            "然后自己编译。之后，他们可以获得源代码，编译这些程序",
        ),
        (
            ["Debian GNU/Linux 是 Linux 操作系统的一个发行版，以及其上运行的无", "数软件包。"],
            "Debian GNU/Linux 是 Linux 操作系统的一个发行版，以及其上运行的无数软件包。",
        ),
        (["用户通常选择从某个", "Linux 发行版获得"], "用户通常选择从某个Linux 发行版获得"),
        (["兼容", "Unix 的操作系统"], "兼容Unix 的操作系统"),
        # Latin on both sides: one space
        (["Free Software", "Foundation"], "Free Software Foundation"),
        (["version 11", "released"], "version 11 released"),
        # quotes are looked through: Latin "free" ends, Latin starts
        (["the “free”", "software"], "the “free” software"),
        # a wrapped path or URL
        (["Debian GNU/", "Linux"], "Debian GNU/Linux"),
        # typesetter hyphenation of a lower-case word
        (["and rec-", "ommended packages"], "and recommended packages"),
        # indentation is dropped, blank lines ignored
        (["    第一行", "", "      第二行"], "第一行第二行"),
    ],
)
def test_join_wrapped_lines(lines: list[str], joined: str) -> None:
    assert join_wrapped_lines(lines) == joined


def test_bullets_start_new_lines() -> None:
    lines = [
        "Debian GNU/Linux 是：",
        "  * 全功能的：Debian 目前包含",
        "    了超过 59100 个软件包。",
        "  - 可自由使用的",
        "  • 充满活力的",
        "  1) first",
        "  1.2. 章节",
    ]
    assert join_wrapped_lines(lines) == (
        "Debian GNU/Linux 是：\n* 全功能的：Debian 目前包含了超过 59100 个软件包。\n"
        "- 可自由使用的\n• 充满活力的\n1) first\n1.2. 章节"
    )


def test_collapse_cjk_spaces_only_between_cjk() -> None:
    assert collapse_cjk_spaces("此 软 件 包 包 含 了 GNU 项 目") == "此软件包包含了 GNU 项目"
