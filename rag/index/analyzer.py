"""Text analysis for BM25: Chinese words and character bigrams, English words, one token list.

Text is NFKC-normalised (full-width letters, digits and punctuation become ASCII), lower-cased and
folded from traditional to simplified Chinese (OpenCC t2s), then cut into CJK runs and ASCII
words. CJK runs give jieba search-mode words (a per-knowledge-base user dictionary keeps domain
terms whole) and/or character bigrams (a separate "2:" namespace), `AnalyzerOptions.segmentation`
says which. Compounds such as "dpkg-buildpackage" are kept whole *and* split. Function words are
dropped; question words and fillers are kept and weighted down on the query side only
(`Analyzer.query_terms`), so a question made only of them still finds something.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from rag.core.errors import InvalidInput

if TYPE_CHECKING:
    import jieba

# Bump when tokenising changes: snapshots made by another version are rebuilt from SQL.
ANALYZER_VERSION = 3

Segmentation = Literal["words", "bigrams", "both"]
BIGRAM = "2:"  # bigram tokens live in their own namespace: their own IDF, no clash with words
MAX_TERM_CHARS = 50
MAX_TERMS = 10_000

# CJK ideographs (with extension A and compatibility ideographs) vs ASCII words.
_RUNS = re.compile(
    r"(?P<cjk>[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+)"
    r"|(?P<word>[a-z0-9]+(?:[._+\-/][a-z0-9]+)*)"
)
_PARTS = re.compile(r"[a-z0-9]+")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Function words, dropped on both sides: they carry no meaning in a question or a passage.
_STOP_ZH = _words(
    """
的 了 是 在 和 与 及 或 也 都 就 而 之 其 这 那 这个 那个 这些 那些 一个 有 没有 吗 呢 吧
啊 么 把 被 将 对 对于 从 向 到 给 让 使 我 我们 你 你们 您 他 她 它 他们 它们 自己 个 中
上 下 里 等 着 过 又 还 并 但 但是 如果 因为 所以 以及 还是 即 则
    """
)
# Question words, modal verbs and politeness fillers: indexed, but a query weights them down
# (they say what kind of answer is wanted, not what it is about). 才能 and 能够 are 能 ("can")
# with an adverb, 想/想要 want, 该 should; 办法 is the "way" of 有办法/什么办法 questions.
FILLERS_ZH = _words(
    """
什么 怎么 怎样 怎么样 如何 为什么 为何 哪些 哪个 哪里 哪儿 哪 是否 能否 可否 是不是 有没有
能不能 可不可以 可以 能 会 要 应该 需要 请 请问 一下 多少 几 才能 能够 想 想要 该 办法
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


def fold(text: str) -> str:
    """NFKC (full-width to half-width, compatibility ideographs), lower case, traditional to
    simplified Chinese: what documents, queries and user terms all go through first."""
    # NFKC and OpenCC leave ASCII as it is; skipping them for ASCII text (most queries of an
    # English knowledge base) halves the cost of tokenising a short query.
    if text.isascii():
        return text.lower()
    return _t2s().convert(unicodedata.normalize("NFKC", text).lower())


def normalize_terms(terms: Iterable[object]) -> list[str]:
    """User-dictionary terms as the analyzer keeps them: folded, stripped, deduplicated, sorted.
    InvalidInput for a term that is not a non-empty string without whitespace of at most
    MAX_TERM_CHARS characters, or for more than MAX_TERMS terms."""
    out: set[str] = set()
    for term in terms:
        if not isinstance(term, str):
            raise InvalidInput(f"lexical terms must be strings, not {type(term).__name__}")
        cleaned = fold(term.strip())
        if not cleaned:
            raise InvalidInput("a lexical term is empty")
        if any(ch.isspace() for ch in cleaned):
            raise InvalidInput(f"lexical term {term!r} contains whitespace: give one word per term")
        if len(cleaned) > MAX_TERM_CHARS:
            raise InvalidInput(f"lexical term {term[:20]!r}… is over {MAX_TERM_CHARS} characters")
        out.add(cleaned)
    if len(out) > MAX_TERMS:
        raise InvalidInput(f"{len(out)} lexical terms: at most {MAX_TERMS} per knowledge base")
    return sorted(out)


@dataclass(frozen=True)
class AnalyzerOptions:
    """What decides the tokens of a document; all of it is in the fingerprint."""

    segmentation: Segmentation = "bigrams"
    terms: tuple[str, ...] = ()  # normalize_terms() output: the KB's user dictionary

    @cached_property
    def fingerprint(self) -> str:
        """Equal fingerprints tokenise identically: snapshots record it (lexical.py)."""
        digest = hashlib.sha256("\n".join(self.terms).encode()).hexdigest()[:16]
        return f"v{ANALYZER_VERSION}/{self.segmentation}/t2s/terms-{digest}"


@dataclass
class _Span:
    token: str
    start: int
    end: int
    top: bool = field(default=True)  # a default-mode word (not a search-mode sub-word)


class Analyzer:
    """Tokenises documents (`tokenize`) and queries (`query_terms`) the same way, with one
    options set; the jieba tokenizer of its user terms is shared through `segmenter_for`."""

    def __init__(self, options: AnalyzerOptions | None = None) -> None:
        self.options = options or AnalyzerOptions()
        self._segmenter: jieba.Tokenizer | None = None
        self._words = self.options.segmentation != "bigrams"
        self._bigrams = self.options.segmentation != "words"
        # Bigrams alone still index a user term whole: jieba runs, only its terms are kept.
        self._terms = frozenset(self.options.terms)

    @property
    def fingerprint(self) -> str:
        return self.options.fingerprint

    def segmenter(self) -> jieba.Tokenizer:
        if self._segmenter is None:
            self._segmenter = segmenter_for(self.options.terms)
        return self._segmenter

    def tokenize(self, text: str) -> list[str]:
        """The BM25 terms of a document, in order, with repeats (term frequency matters)."""
        out: list[str] = []
        for cjk, word in _RUNS.findall(fold(text)):
            if cjk:
                if self._words:
                    cut = self.segmenter().cut_for_search(cjk, HMM=True)
                    out.extend(w for w in cut if w not in _STOP_ZH)
                elif self._terms:
                    cut = self.segmenter().cut_for_search(cjk, HMM=True)
                    out.extend(w for w in cut if w in self._terms)
                if self._bigrams:
                    out.extend(_bigrams(cjk))
            else:
                out.extend(_ascii(word))
        return out

    def query_terms(self, text: str, filler_weight: float = 1.0) -> dict[str, float]:
        """Each distinct term of a query with its weight: 1, or `filler_weight` for question
        words and fillers and for bigrams that touch one (or a function word). A repeated
        term counts once (a repeated word is not a boost)."""
        out: dict[str, float] = {}

        def put(token: str, weight: float) -> None:
            if out.get(token, -1.0) < weight:
                out[token] = weight

        for cjk, word in _RUNS.findall(fold(text)):
            if not cjk:
                for token in _ascii(word):
                    put(token, 1.0)
                continue
            spans = self._spans(cjk)
            weak = _weak_characters(cjk, spans)
            if self._words:
                for span in spans:
                    if span.token in _STOP_ZH:
                        continue
                    filler = all(weak[span.start : span.end])
                    put(span.token, filler_weight if filler else 1.0)
            elif self._terms:
                for span in spans:
                    if span.token in self._terms:
                        put(span.token, 1.0)
            if self._bigrams:
                for n, token in enumerate(_bigrams(cjk)):
                    strong = not (weak[n] or weak[min(n + 1, len(cjk) - 1)])
                    put(token, 1.0 if strong else filler_weight)
        return out

    def _spans(self, run: str) -> list[_Span]:
        """jieba's search-mode words of a CJK run with their offsets; `top` marks the words
        that partition the run (the others are their dictionary sub-words)."""
        spans = [_Span(w, s, e) for w, s, e in self.segmenter().tokenize(run, mode="search")]
        # Longest first at each offset: a span ending no later than one before it lies inside it.
        reach = 0
        for span in sorted(spans, key=lambda sp: (sp.start, -sp.end)):
            span.top = span.end > reach
            reach = max(reach, span.end)
        return spans


def _weak_characters(run: str, spans: list[_Span]) -> list[bool]:
    """Which characters of a CJK run lie inside a question word, filler or function word.

    A word counts when it is one, or when its dictionary sub-words all are: jieba keeps
    怎样才能 whole, and its parts 怎样 + 才能 say it asks "how can", not what about."""
    weak = [False] * len(run)
    for top in (span for span in spans if span.top):
        inside = [
            sub for sub in spans if not sub.top and top.start <= sub.start and sub.end <= top.end
        ]
        covered = [False] * (top.end - top.start)
        for sub in inside:
            if _is_weak(sub.token):
                covered[sub.start - top.start : sub.end - top.start] = [True] * len(sub.token)
        if _is_weak(top.token) or (inside and all(covered)):
            weak[top.start : top.end] = [True] * (top.end - top.start)
    return weak


def _is_weak(token: str) -> bool:
    return token in FILLERS_ZH or token in _STOP_ZH


def _bigrams(run: str) -> list[str]:
    if len(run) == 1:  # a lone character still needs a token, unless it is a function word
        return [] if run in _STOP_ZH else [BIGRAM + run]
    return [BIGRAM + run[i : i + 2] for i in range(len(run) - 1)]


def _ascii(word: str) -> list[str]:
    if word.isalnum():  # a plain word, no "-", ".", "_", "+", "/" inside
        return [] if word in _STOP_EN else [word]
    # The compound as written ("apt-get", "x86_64", "2.3.1"), then its parts.
    return [word, *(p for p in _PARTS.findall(word) if p not in _STOP_EN)]


# -- shared, lazily loaded resources ------------------------------------------------------------

_lock = threading.Lock()
_base: jieba.Tokenizer | None = None
_opencc: Any = None
# Tokenizers with user terms, by terms fingerprint; each copies jieba's dictionary (tens of MB),
# so only the most recently used few are kept.
_with_terms: OrderedDict[str, jieba.Tokenizer] = OrderedDict()
_MAX_TOKENIZERS = 8


def _t2s() -> Any:
    global _opencc
    if _opencc is None:
        import opencc  # its dictionaries ship in the wheel: no download

        _opencc = opencc.OpenCC("t2s")
    return _opencc


def _base_segmenter() -> jieba.Tokenizer:
    """jieba's tokenizer, its dictionary loaded on first use (about half a second, once), behind
    a lock; jieba's log goes nowhere near stdout. Caller holds `_lock`."""
    global _base
    if _base is None:
        import jieba as jieba_module

        # jieba announces loading its dictionary through its logger; keep it quiet.
        jieba_module.setLogLevel(logging.WARNING)
        tokenizer = jieba_module.Tokenizer()
        tokenizer.initialize()
        _base = tokenizer
    return _base


def segmenter_for(terms: tuple[str, ...]) -> jieba.Tokenizer:
    """A jieba tokenizer that keeps `terms` whole (the shared plain one when there are none)."""
    with _lock:
        base = _base_segmenter()
        if not terms:
            return base
        key = AnalyzerOptions(terms=terms).fingerprint
        found = _with_terms.get(key)
        if found is not None:
            _with_terms.move_to_end(key)
            return found
        import jieba as jieba_module

        # A copy of the loaded dictionary (tens of ms) instead of reading it again (~0.5 s).
        tokenizer = jieba_module.Tokenizer()
        tokenizer.FREQ, tokenizer.total = dict(base.FREQ), base.total
        tokenizer.initialized = True
        for term in terms:
            tokenizer.add_word(term)  # with the frequency that makes jieba cut it whole
        _with_terms[key] = tokenizer
        while len(_with_terms) > _MAX_TOKENIZERS:
            _with_terms.popitem(last=False)
        return tokenizer


_default: Analyzer | None = None


def tokenize(text: str) -> list[str]:
    """The BM25 terms of `text` with the default options (no user terms)."""
    global _default
    if _default is None:
        _default = Analyzer()
    return _default.tokenize(text)
