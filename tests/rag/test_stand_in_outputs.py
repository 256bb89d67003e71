"""The degenerate-answer checks on what the quickstart's stand-in model really answered
(tests/fixtures/stand_in_outputs/, recorded by record.py there): every loop is flagged and cut,
and every answer the user gets, with the default penalty or without, is sound or says what is
wrong with it (degenerate, truncated, or grounded in no passage)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rag.qa.answer import Answer, Citation
from rag.qa.degenerate import guard
from rag.qa.sanitize import AnswerSanitizer
from rag.retrieval.retriever import Passage
from tests.conftest import FIXTURES

RECORDED = FIXTURES / "stand_in_outputs"
TOP_K = 5  # the prompt held at most this many passages, numbered [1]..[5]
# name: (degenerate, truncated, grounded), read from each text by hand first.
EXPECTED: dict[str, tuple[str | None, bool, bool]] = {
    # "你是问题！你可以在这里提取一个问题……" over and over
    "annual_leave_zh.none": ("repetition", True, False),
    # a made-up Python snippet, then the same block again and again
    "annual_leave_zh.default": ("repetition", True, False),
    # word salad in five scripts: no loop to find, but cut off and citing nothing
    "annual_leave_zh.strong": (None, True, False),
    # "1. 1.1.1.1.1.1…" to max_tokens
    "access_key_en.none": ("repetition", True, False),
    # a plausible first step, then "**n) product-faq.md | page 1 | …" blocks, numbers changing
    "access_key_en.default": ("repetition", True, False),
    "access_key_en.strong": (None, True, False),
    # the report: "[n] maint-guide.zh-cn.pdf | page n | 5.1.2.2" lines
    "maint_guide_en.none": ("repetition", True, True),
    # a short, confident, wrong answer ("sudo make install"): it cites nothing
    "maint_guide_en.default": (None, False, False),
    "maint_guide_en.strong": (None, True, False),
}


def _recording(name: str) -> dict[str, Any]:
    return json.loads((RECORDED / f"{name}.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _served(record: dict[str, Any], piece: int | None) -> tuple[Answer, str]:
    """The answer the user gets when the upstream sends the text in `piece`-character chunks
    (None: whole), and the text the guard passed on."""
    checked = guard(AnswerSanitizer(record["system_prompt"]))
    text = record["text"]
    size = piece or len(text)
    out = "".join(checked.feed(text[i : i + size]) for i in range(0, len(text), size))
    out += checked.finish()
    passages = [Passage(i, "d", "f", 1, 1, "t", 0.0, ()) for i in range(TOP_K)]
    cited = {n for n in range(1, TOP_K + 1) if f"[{n}]" in out}
    citations = [Citation(i, p, i in cited) for i, p in enumerate(passages, 1)]
    answer = Answer(
        out,
        citations,
        record["model"],
        finish_reason=record["finish_reason"],
        degenerate=checked.degenerate,
    )
    return answer, out


def test_every_recording_is_judged() -> None:
    assert {path.stem for path in RECORDED.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_answers_are_flagged_as_judged(name: str) -> None:
    record = _recording(name)
    streamed, text = _served(record, 3)  # about a token a chunk
    whole, whole_text = _served(record, None)
    assert text == whole_text and streamed.degenerate == whole.degenerate
    assert (streamed.degenerate, streamed.truncated, streamed.grounded) == EXPECTED[name]
    if streamed.degenerate:
        # Cut where the loop became evident: a prefix of what the model wrote, well short of it.
        assert record["text"].startswith(text) and len(text) < 0.8 * len(record["text"])


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if not n.endswith(".none")))
def test_with_penalties_no_unsound_answer_passes_for_a_sound_one(name: str) -> None:
    """None of the stand-in's answers is sound (read by hand); each says so by a flag."""
    record = _recording(name)
    assert record["penalties_sent"]  # recorded with a penalty on
    answer, _ = _served(record, 3)
    assert answer.degenerate is not None or answer.truncated or not answer.grounded
