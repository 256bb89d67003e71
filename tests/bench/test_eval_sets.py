"""The evaluation sets in tests/fixtures/eval/<set>/ (bench/eval_sets/): well-formed, small,
and every answer really is in the documents, as the project's parsers read them."""

from __future__ import annotations

import re

import pytest

from bench.eval_sets.catalog import EvalSet, all_sets, built, pick
from ingest.parsers import parse
from rag.evaluation.golden import load_golden

SETS = {s.id: s for s in built()}
KINDS = {"title-page", "many-short-docs", "tables", "mixed-zh-en"}


def test_four_kinds_and_a_held_out_set() -> None:
    assert {s.kind for s in SETS.values()} >= KINDS
    held = [s for s in SETS.values() if s.heldout]
    assert held and all("heldout" in s.id for s in held)
    # Nothing held out is seen in tuning, not even under another name (man page copies).
    tuned_docs = {p.read_bytes() for s in SETS.values() if not s.heldout for p in s.documents}
    assert not any(p.read_bytes() in tuned_docs for s in held for p in s.documents)
    for s in SETS.values():
        assert len({p.read_bytes() for p in s.documents}) == len(s.documents), s.id
    assert set(SETS) <= set(all_sets()) and pick("new") == list(SETS.values())
    with pytest.raises(SystemExit, match="unknown"):
        pick("no-such-set")


@pytest.mark.parametrize("set_id", sorted(SETS))
def test_set_is_well_formed_and_answerable(set_id: str) -> None:
    s: EvalSet = SETS[set_id]
    items = load_golden(s.golden)
    assert 60 <= len(items) <= 300
    assert len({i.id for i in items}) == len(items)
    assert sum(p.stat().st_size for p in s.documents) < 2_000_000  # fixtures stay small
    parsed = {p.name: parse(p.read_bytes(), p.name) for p in s.documents}
    compact = {n: re.sub(r"\s+", "", "".join(b.text for b in d.blocks)) for n, d in parsed.items()}
    for item in items:
        if item.answer_excerpt:
            assert any(item.needle in text for text in compact.values()), item
        if item.pages:
            assert item.filename in parsed, item
            assert all(1 <= page <= parsed[item.filename].pages for page in item.pages), item


def test_many_short_docs_questions_are_not_the_heading_verbatim() -> None:
    for s in SETS.values():
        if s.kind != "many-short-docs":
            continue
        lines = {
            " ".join(line.split())
            for p in s.documents
            for line in p.read_text(encoding="utf-8").splitlines()
        }
        for item in load_golden(s.golden):
            assert item.question not in lines, item
