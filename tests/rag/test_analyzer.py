"""BM25 tokenisation: jieba for Chinese, words (and compounds) for English."""

from __future__ import annotations

import subprocess
import sys

from rag.index.analyzer import Analyzer, AnalyzerOptions, tokenize
from tests.conftest import REPO


def test_chinese_is_segmented_with_sub_words() -> None:
    tokens = Analyzer(AnalyzerOptions("words")).tokenize("如何构建 Debian 软件包？")
    assert "构建" in tokens and "debian" in tokens
    # Search mode: the long word and its dictionary parts, so "软件" meets "软件包".
    assert "软件包" in tokens and "软件" in tokens


def test_function_words_and_punctuation_are_dropped() -> None:
    # Function words go; question words stay in the index (a query weighs them down).
    words = Analyzer(AnalyzerOptions("words"))
    assert words.tokenize("什么是 the Debian 的？！") == ["什么", "debian"]
    assert tokenize("是 the 的") == []


def test_compounds_are_kept_whole_and_split() -> None:
    tokens = tokenize("Run dpkg-buildpackage on x86_64, model ABC-1234.")
    for token in ("dpkg-buildpackage", "dpkg", "buildpackage", "x86_64", "abc-1234", "1234"):
        assert token in tokens


def test_full_width_letters_and_case_are_normalised() -> None:
    assert tokenize("ＡＰＴ Apt apt") == ["apt", "apt", "apt"]


def test_first_use_prints_nothing_to_stdout() -> None:
    # A fresh interpreter: jieba loads its dictionary on this first call.
    out = subprocess.run(
        [sys.executable, "-c", "from rag.index.analyzer import tokenize; tokenize('中文分词')"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == ""


def test_ascii_text_tokenises_like_its_full_width_form() -> None:
    # ASCII text skips NFKC (a no-op on ASCII); the result must equal the normalised path's.
    ascii_text = "Install ABC-1234 with apt-get, the x86_64 build 2.3.1 of foo"
    full_width = ascii_text.translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)})
    assert not full_width.isascii()
    assert tokenize(full_width) == tokenize(ascii_text)
    assert tokenize(ascii_text) == [
        "install", "abc-1234", "abc", "1234", "apt-get", "apt", "get",
        "x86_64", "x86", "64", "build", "2.3.1", "2", "3", "1", "foo",
    ]  # fmt: skip
