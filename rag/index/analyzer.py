"""Text analysis for BM25: jieba-segmented Chinese, word-tokenised English, one token list.

Text is NFKC-normalised (full-width letters and digits become ASCII) and lower-cased, then cut
into runs of CJK characters and runs of ASCII letters/digits. CJK runs go through jieba's search
mode, which emits a long word and its dictionary sub-words ("软件包" -> "软件", "软件包"), so a
question that uses the short word still meets a passage that uses the long one. ASCII runs
become words; a compound such as "dpkg-buildpackage" or "x86_64" is kept whole *and* split, so
exact product codes and their parts both match. Function words are dropped.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jieba

# Bump when tokenize() changes: snapshots made by another version are rebuilt from SQL.
ANALYZER_VERSION = 2

# CJK ideographs (with extension A and compatibility ideographs) vs ASCII words.
_RUNS = re.compile(
    r"(?P<cjk>[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+)"
    r"|(?P<word>[a-z0-9]+(?:[._+\-/][a-z0-9]+)*)"
)
_PARTS = re.compile(r"[a-z0-9]+")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Function words only: content words ("使用", "安装") stay, they carry meaning in questions.
_STOP_ZH = _words(
    """
的 了 是 在 和 与 及 或 也 都 就 而 之 其 这 那 这个 那个 这些 那些 一个 有 没有 吗 呢 吧
啊 么 什么 怎么 怎样 怎么样 如何 为什么 哪些 哪个 是否 能否 可以 能 会 要 应该 需要 把 被
将 对 对于 从 向 到 给 让 使 我 我们 你 你们 您 他 她 它 他们 它们 自己 请 个 中 上 下 里
等 着 过 又 还 并 但 但是 如果 因为 所以 以及 还是 即 则
    """
)
_STOP_EN = _words(
    """
a an and are as at be but
by can do does for from
how i if in into is it
its me my no not of on or
so such than that the
their them then there
these they this to was
were what when where
which who why will with
would you your
    """
)

_lock = threading.Lock()
_jieba: jieba.Tokenizer | None = None


def _segmenter() -> jieba.Tokenizer:
    """jieba's tokenizer, its dictionary loaded on first use (about half a second, once),
    behind a lock; jieba's log goes nowhere near stdout."""
    global _jieba
    with _lock:
        if _jieba is None:
            import jieba as jieba_module

            # jieba announces loading its dictionary through its logger; keep it quiet.
            jieba_module.setLogLevel(logging.WARNING)
            tokenizer = jieba_module.Tokenizer()
            tokenizer.initialize()
            _jieba = tokenizer
        return _jieba


def tokenize(text: str) -> list[str]:
    """The BM25 terms of `text`, in order, with repeats (term frequency matters)."""
    # NFKC leaves ASCII as it is; skipping it for ASCII text (most queries of an English
    # knowledge base) halves the cost of tokenising a short query.
    text = text.lower() if text.isascii() else unicodedata.normalize("NFKC", text).lower()
    out: list[str] = []
    segmenter: jieba.Tokenizer | None = None
    for cjk, word in _RUNS.findall(text):
        if cjk:
            segmenter = segmenter or _segmenter()
            out.extend(w for w in segmenter.cut_for_search(cjk, HMM=True) if w not in _STOP_ZH)
        elif word.isalnum():  # a plain word, no "-", ".", "_", "+", "/" inside
            if word not in _STOP_EN:
                out.append(word)
        else:
            parts = _PARTS.findall(word)
            out.append(word)  # the compound as written: "apt-get", "x86_64", "2.3.1"
            out.extend(p for p in parts if p not in _STOP_EN)
    return out
