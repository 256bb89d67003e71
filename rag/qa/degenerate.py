"""Degenerate generations, caught as the answer streams: runaway repetition, prompt echo.

`RepetitionDetector`, every STRIDE characters: does the text end in a loop? In a periodic tail
the last ANCHOR characters recur exactly one period back, so one `str.rfind` over the last
MAX_PERIOD characters proposes the periods (rarely more than two in sound text), each confirmed
by one string comparison, on the text and on a digit-free copy (counters change in loops too).
Cost on a loaded 2-core VM, 3-character tokens, stride 16: 0.7 µs a token on Chinese prose, 1.2
on English, 2.5 over 840k characters of this repository's docs and code and a Chinese FAQ (none
of it flagged); the sanitizer before it costs 7-20 µs. Stride 48 took the relay benchmark's
decoding-client efficiency from 1.18 to 1.30 (bench/REPORT.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rag.qa.sanitize import REMOVED_ECHO, AnswerSanitizer

STRIDE = 48  # characters between checks: a loop is stopped at most this late
ANCHOR = 8  # characters whose recurrence proposes a period
MAX_PERIOD = 512  # the longest repeated unit looked for
EXACT_COPIES, EXACT_SPAN = 3, 48  # a verbatim loop: copies and characters, both at least
# A loop whose numbers change: 10 copies of a short unit (a list whose items differ only in
# their numbers is still an answer below that), 3 of a unit of LONG_UNIT characters or more.
LOOSE_COPIES, LONG_UNIT, LOOSE_SPAN = 10, 100, 300
LETTER_SHARE = 1 / 3  # of the unit: below it, a repeat is a table or a rule, not a loop...
BARE_SPAN = 200  # ... unless it goes on verbatim this long ("1.1.1.1.", blank lines)
WINDOW = EXACT_COPIES * MAX_PERIOD + ANCHOR  # the characters a check looks at, at most
MIN_USABLE = 8  # letters and digits an answer needs before an echo to be worth keeping
_NO_DIGITS = str.maketrans("", "", "0123456789０１２３４５６７８９")


class RepetitionDetector:
    """Feed the answer in pieces; `feed` returns where to cut it once it has become a loop.

    It keeps the last WINDOW + STRIDE characters twice: as written, and without digits (so
    "[9] a.pdf | page 12" and "[10] a.pdf | page 13" are the same unit), each made once.
    """

    def __init__(self) -> None:
        self._text = ""  # the answer's tail, from position _start on
        self._loose = ""  # the same without digits
        self._start = 0
        self.cut: int | None = None  # set once a loop is found: the answer's length to keep

    def feed(self, piece: str) -> int | None:
        """The length of the answer to keep, once a loop is evident; None until then."""
        if self.cut is not None or not piece:
            return self.cut
        end = self._start + len(self._text)
        loose_end = len(self._loose)
        self._text += piece
        self._loose += piece.translate(_NO_DIGITS)
        done = 0
        for check in range((end // STRIDE + 1) * STRIDE, end + len(piece) + 1, STRIDE):
            loose_end += len(piece[done : check - end].translate(_NO_DIGITS))
            done = check - end
            if self._looping(check - self._start, loose_end):
                self.cut = check
                return check
        if len(self._text) > 2 * WINDOW:
            drop = len(self._text) - WINDOW - STRIDE
            self._loose = self._loose[len(self._text[:drop].translate(_NO_DIGITS)) :]
            self._text, self._start = self._text[drop:], self._start + drop
        return None

    def finish(self) -> int | None:
        """A loop that ends the text between two checks is a loop too."""
        if self.cut is None and self._looping(len(self._text), len(self._loose)):
            self.cut = self._start + len(self._text)
        return self.cut

    def _looping(self, end: int, loose_end: int) -> bool:
        if _period(self._text, end, lambda _: EXACT_COPIES, EXACT_SPAN, BARE_SPAN):
            return True
        if loose_end == end:
            return False  # no digits: nothing more to find
        return _period(self._loose, loose_end, _loose_copies, LOOSE_SPAN, None)


def _loose_copies(period: int) -> int:
    return LOOSE_COPIES if period < LONG_UNIT else EXACT_COPIES


def _period(
    text: str,
    end: int,
    min_copies: Callable[[int], int],
    min_span: int,
    bare_span: int | None,
) -> bool:
    """Whether text[:end] ends with a unit of at most MAX_PERIOD characters repeated to
    min_copies(its length) copies and min_span characters; bare_span characters for a unit
    that is not mostly letters (None: such a unit never counts)."""
    if end <= ANCHOR or end < min(min_span, bare_span or min_span):
        return False
    anchor = text[end - ANCHOR : end]
    low = max(0, end - ANCHOR - MAX_PERIOD)
    found = text.rfind(anchor, low, end - 1)
    shortest = 0  # the shortest unit written twice: its multiples are the same loop
    while found >= 0:
        period = end - ANCHOR - found
        unit = text[end - period : end]
        if (not shortest or period % shortest) and text.startswith(unit, end - 2 * period):
            shortest = shortest or period
            span: int | None = min_span
            if sum(ch.isalpha() for ch in unit) < LETTER_SHARE * period:
                span = bare_span
            if span is not None:
                copies = max(min_copies(period), -(-span // period))
                start = end - copies * period
                if start >= 0 and text.startswith(unit * copies, start):
                    return True
        found = text.rfind(anchor, low, found + ANCHOR - 1)
    return False


@dataclass
class AnswerGuard:
    """The answer's way to the user: sanitised (links, prompt echoes), and stopped when it
    degenerates. `degenerate` says why ("echo", "repetition"); `stopped`: generating more is
    pointless, close the upstream.

    An echo of the system prompt is cut out and flagged; the answer stops there unless what it
    said before is a usable answer (MIN_USABLE letters and digits) that outweighs the echo.
    """

    sanitizer: AnswerSanitizer
    detector: RepetitionDetector
    degenerate: str | None = None
    stopped: bool = False
    _sent: int = 0  # characters passed on
    _said: int = 0  # letters and digits among them

    def feed(self, piece: str) -> str:
        return "" if self.stopped else self._pass(self.sanitizer.feed(piece))

    def finish(self) -> str:
        if self.stopped:
            return ""
        text = self._pass(self.sanitizer.finish())
        if not self.stopped and self.detector.finish() is not None:
            self.degenerate = "repetition"  # the loop ends the text: nothing left to cut
        return text

    def _pass(self, safe: str) -> str:
        if not safe:
            return ""
        echoed = self.sanitizer.echoed
        if echoed:
            self.degenerate = self.degenerate or "echo"
            said = self._said + _letters(safe)
            if said < MIN_USABLE or echoed >= said:
                marker = safe.find(REMOVED_ECHO)
                safe = safe[:marker] if marker >= 0 else ""
                self.stopped = True
        cut = None if self.stopped else self.detector.feed(safe)
        if cut is not None:
            safe = safe[: max(0, cut - self._sent)]
            self.degenerate, self.stopped = "repetition", True
        self._sent += len(safe)
        self._said += _letters(safe)
        return safe


def _letters(text: str) -> int:
    return sum(ch.isalnum() for ch in text)


def guard(sanitizer: AnswerSanitizer) -> AnswerGuard:
    return AnswerGuard(sanitizer, RepetitionDetector())
