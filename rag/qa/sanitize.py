"""Answer hygiene against prompt injection: what a planted instruction could make the model
write is neutralised before it reaches the client.

- Markdown images and links, HTML images and bare URLs pointing outside the allow-list are
  removed (`strip_links`: a rendered image fetches its URL, the classic way to smuggle data out).
- Any run of the system prompt is never echoed (`EchoGuard`).

`AnswerSanitizer` works on a stream, holding back only what could still become a link or an echo.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

REMOVED_LINK = "[link removed]"
REMOVED_ECHO = "[…]"
# Characters of the system prompt that count as an echo when repeated: 24 of a Chinese prompt,
# twice that of a Latin-script one, where an honest refusal in the prompt's own words ("the
# knowledge base does not contain it") would otherwise count as one.
_ECHO_WINDOW = 24
# ![alt](url "title") | [text](url) | <img ...> | <scheme://...> | bare URL
_LINKS = re.compile(
    r"!\[(?P<alt>[^\]\n]{0,500})\]\((?P<img>[^)\s]{0,2000})(?:\s+\"[^\"\n]*\")?\)"
    r"|\[(?P<text>[^\]\n]{0,500})\]\((?P<href>[^)\s]{0,2000})(?:\s+\"[^\"\n]*\")?\)"
    r"|<img\b[^>]{0,2000}>"
    r"|<(?P<auto>[a-z][a-z0-9+.-]{1,20}://[^>\s]{1,2000})>"
    r"|(?P<bare>(?<![A-Za-z0-9])(?:https?|ftp)://[^\s<>()\[\]\"'，。；）]{1,2000})",
    re.IGNORECASE,
)
# A tail that may still grow into one of the above: "!", "[..", "[..]" (a "(" may follow),
# "<..", a URL in progress, or letters that may yet become "https://".
_OPEN_TAIL = re.compile(
    r"(!?\[[^\]\n]{0,500}(\](\([^)\s]{0,2000})?)?|!|<[^>\n]{0,2000}|\S*://\S*"
    r"|(?<![A-Za-z0-9])(?:h|ht|htt|https?|f|ft|ftp)(?::/{0,2})?)$",
    re.IGNORECASE,
)


def host_allowed(url: str, allowlist: Iterable[str]) -> bool:
    """Relative URLs are allowed; absolute ones only for listed hosts and their subdomains."""
    parts = urlsplit(url.strip())
    if not parts.scheme and not parts.netloc:
        return not url.strip().lower().startswith(("javascript:", "data:", "//"))
    host = (parts.hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in (a.lower() for a in allowlist))


def strip_links(text: str, allowlist: Iterable[str]) -> str:
    """Remove Markdown images and links, HTML images and bare URLs pointing outside the
    allow-list (a rendered image fetches its URL: the classic way to smuggle data out). Link
    text and image alt text stay; relative links stay."""
    allowed = tuple(allowlist)

    def replace(m: re.Match[str]) -> str:
        if m.group("img") is not None:
            return m.group(0) if host_allowed(m.group("img"), allowed) else m.group("alt")
        if m.group("href") is not None:
            return m.group(0) if host_allowed(m.group("href"), allowed) else m.group("text")
        if m.group("auto") is not None:
            return m.group(0) if host_allowed(m.group("auto"), allowed) else REMOVED_LINK
        if m.group("bare") is not None:
            return m.group(0) if host_allowed(m.group("bare"), allowed) else REMOVED_LINK
        return ""  # <img ...>: never rendered

    return _LINKS.sub(replace, text)


class EchoGuard:
    """Marks the characters of a text that belong to a run of the system prompt (whitespace
    ignored, so re-wrapped echoes are caught too)."""

    def __init__(self, system_prompt: str, window: int | None = None) -> None:
        compact = "".join(system_prompt.split())
        self.window = window or (_ECHO_WINDOW if _mostly_cjk(compact) else 2 * _ECHO_WINDOW)
        window = self.window
        self._prompt = compact
        self._shingles = {compact[i : i + window] for i in range(len(compact) - window + 1)}

    def open_run(self, text: str) -> int:
        """Length of the longest tail of `text` that could still grow into an echo: its
        non-space characters (fewer than a window) occur in the prompt. Usually 0-3
        characters, so streaming is held back only while an echo is actually possible."""
        length = seen = best = 0
        tail = ""
        while length < len(text) and seen < self.window - 1:
            length += 1
            ch = text[-length]
            if ch.isspace():
                continue
            seen += 1
            tail = ch + tail
            if tail not in self._prompt:
                break
            best = length
        return best

    def mask(self, text: str) -> list[bool]:
        marked = [False] * len(text)
        if not self._shingles:
            return marked
        positions = [i for i, ch in enumerate(text) if not ch.isspace()]
        compact = "".join(text[i] for i in positions)
        last_hit_end = -1
        for i in range(len(compact) - self.window + 1):
            if compact[i : i + self.window] in self._shingles:
                lo = positions[i]
                hi = positions[i + self.window - 1]
                for j in range(max(lo, last_hit_end), hi + 1):
                    marked[j] = True
                last_hit_end = hi + 1
        return marked

    def redact(self, text: str) -> str:
        return _apply(text, self.mask(text), inside=False)[0]


def _mostly_cjk(text: str) -> bool:
    letters = [ch for ch in text if ch.isalpha()]
    cjk = sum("\u3400" <= ch <= "\u9fff" for ch in letters)
    return bool(letters) and cjk / len(letters) >= 0.2


def _apply(text: str, marked: list[bool], *, inside: bool) -> tuple[str, bool]:
    """Replace each marked run with one marker; `inside`: a run was open before `text`."""
    out = []
    for ch, cut in zip(text, marked, strict=True):
        if cut:
            if not inside:
                out.append(REMOVED_ECHO)
            inside = True
        else:
            inside = False
            out.append(ch)
    return "".join(out), inside


def _tail_length(text: str, non_space: int) -> int:
    """Length of the shortest tail of `text` holding `non_space` non-whitespace characters."""
    length = seen = 0
    while length < len(text) and seen < non_space:
        length += 1
        seen += not text[-length].isspace()
    return length


class AnswerSanitizer:
    """Feed answer text in pieces (`feed`), then `finish`; each returns what is safe to send.

    It holds back only a tail that could still become a link or a prompt echo (an open "[", a
    URL being written, characters that occur in the system prompt), so ordinary text flows
    without delay; windows of the system prompt found in the answer are cut out.
    """

    def __init__(self, system_prompt: str, allowlist: Iterable[str] = ()) -> None:
        self.allowlist = tuple(allowlist)
        self.echo = EchoGuard(system_prompt)
        self._pending = ""
        self._context = ""  # the tail already sent: a prompt run may have begun there
        self._inside = False
        self.echoed = 0  # characters cut out as echoes of the system prompt so far

    def clean(self, text: str) -> str:
        """The whole-text form, for answers that are not streamed."""
        return strip_links(self.echo.redact(text), self.allowlist)

    def feed(self, piece: str) -> str:
        self._pending += piece
        return self._emit(len(self._pending) - self._held_tail(self._pending))

    def finish(self) -> str:
        return self._emit(len(self._pending))

    def _emit(self, n: int) -> str:
        if n <= 0:
            return ""
        full = self._context + self._pending
        marked = self.echo.mask(full)[len(self._context) : len(self._context) + n]
        ready, self._pending = self._pending[:n], self._pending[n:]
        self.echoed += sum(marked)
        text, self._inside = _apply(ready, marked, inside=self._inside)
        context = self._context + ready
        self._context = context[len(context) - _tail_length(context, self.echo.window - 1) :]
        return strip_links(text, self.allowlist)

    def _held_tail(self, text: str) -> int:
        """How many trailing characters might still change meaning with more text."""
        keep = self.echo.open_run(text)  # a prompt run may straddle the cut
        m = _OPEN_TAIL.search(text)
        if m:
            keep = max(keep, len(text) - m.start())
        # A complete link near the end is held whole, never cut in two.
        for link in _LINKS.finditer(text):
            if link.end() > len(text) - keep:
                keep = max(keep, len(text) - link.start())
        return min(keep, len(text))
