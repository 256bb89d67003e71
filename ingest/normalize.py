"""Text clean-up shared by all parsers.

No NFKC: it would turn full-width Chinese punctuation (，。：) into ASCII and change the text a
user sees in citations. We only remove what is never content (control characters, zero-width
marks), unify line breaks, and re-join hard-wrapped lines without inventing spaces inside
Chinese text (spurious spaces split words for BM25 and shift embeddings).
"""

from __future__ import annotations

import re

# C0/C1 controls except \t and \n, plus invisible marks that only get in the way of matching.
# A regex, not str.translate: translate with a dict is ~10x slower on non-ASCII text.
_DELETE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u2060\ufeff\u00ad]")
_SPACES = re.compile("[\u00a0\u2007\u202f]")
_NEWLINES = re.compile(r"\r\n?|[\u2028\u2029\x85]")

# A line starting with one of these begins a new item rather than continuing the previous line.
_BULLET = re.compile(r"^(?:[*\-•·▪‣◦–]\s|\d{1,3}(?:\.\d{1,3})*[.)]\s|\(\d{1,3}\)\s|（\d{1,3}）)")
# "rec-" + "ommended": a word hyphenated by the typesetter (PDF), not a real hyphen.
_HYPHENATED = re.compile(r"[a-z]-$")
# Quotes, dashes and ellipses are used by both scripts: look past them to decide.
_AMBIGUOUS = set("“”‘’\"'…—–-·")


def is_cjk(ch: str) -> bool:
    """Han, kana, CJK punctuation and full-width forms: scripts written without spaces."""
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x3000 <= cp <= 0x30FF  # CJK punctuation, hiragana, katakana
        or 0xF900 <= cp <= 0xFAFF
        or 0xFE30 <= cp <= 0xFE4F  # CJK compatibility forms (vertical punctuation)
        or 0xFF00 <= cp <= 0xFFEF  # full-width forms: ，（）！？：；
        or 0x20000 <= cp <= 0x3FFFF
    )


def _edge_is_cjk(text: str, from_end: bool) -> bool:
    chars = reversed(text) if from_end else iter(text)
    for ch in chars:
        if ch not in _AMBIGUOUS:
            return is_cjk(ch)
    return False


def normalize_text(text: str) -> str:
    """Remove control and zero-width characters, use \\n line breaks, strip trailing spaces."""
    text = _NEWLINES.sub("\n", text)
    text = _SPACES.sub(" ", _DELETE.sub("", text))
    # rstrip per line, not a "[ \t]+$" regex: that backtracks quadratically on long space runs
    return "\n".join(line.rstrip(" \t") for line in text.split("\n"))


def is_bullet(line: str) -> bool:
    return bool(_BULLET.match(line))


def join_separator(left: str, right: str) -> str:
    """What goes between two hard-wrapped pieces: nothing, a space, or a line break."""
    if is_bullet(right):
        return "\n"
    if _edge_is_cjk(left, from_end=True) or _edge_is_cjk(right, from_end=False):
        return ""
    if left.endswith("/"):  # a wrapped path or URL ("GNU/" + "Linux")
        return ""
    return " "


def join_wrapped_lines(lines: list[str]) -> str:
    """Join the hard-wrapped lines of one paragraph.

    Indentation is dropped; CJK on either side of a join means no space ("源代码" + "，编译"
    -> "源代码，编译"); Latin on both sides gets one space; a bulleted line starts a new line;
    a lower-case word hyphenated at the line end is rejoined ("rec-" + "ommended").
    """
    parts: list[str] = []  # list + join: a paragraph can be a whole file of unbroken lines
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if not parts:
            parts.append(line)
            continue
        prev = parts[-1]
        if _HYPHENATED.search(prev) and line[0].islower() and not is_bullet(line):
            parts[-1] = prev[:-1]
        else:
            parts.append(join_separator(prev, line))
        parts.append(line)
    return "".join(parts)


def collapse_cjk_spaces(text: str) -> str:
    """Drop single spaces between two CJK characters (justified PDF text: "此 软 件 包")."""
    return _CJK_SPACE.sub("", text)


_CJK_CLASS = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_SPACE = re.compile(f"(?<=[{_CJK_CLASS}]) (?=[{_CJK_CLASS}])")
