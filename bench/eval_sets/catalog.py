"""Every evaluation set the benchmarks know: the four older fixture sets and each folder
tests/fixtures/eval/<id>/ with a set.json (written by the build scripts here)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.eval_sets.common import EVAL, REPO

FIXTURES = REPO / "tests" / "fixtures"


@dataclass(frozen=True)
class EvalSet:
    id: str
    kind: str
    heldout: bool
    documents: tuple[Path, ...]
    golden: Path

    @property
    def role(self) -> str:
        return "held-out" if self.heldout else "tuned"


def _older() -> list[EvalSet]:
    files, faq = FIXTURES / "files", FIXTURES / "debian-faq-zh.jsonl"
    return [
        EvalSet("faq-txt", "faq headings", False, (files / "debian-faq.zh-cn.txt",), faq),
        EvalSet("faq-docx", "faq headings", False, (files / "debian-faq.zh-cn.docx",), faq),
        EvalSet(
            "maint-pages",
            "title-page",
            False,
            (files / "maint-guide.zh-cn.pdf",),
            EVAL / "maint-guide-zh-pages.jsonl",
        ),
        EvalSet(
            "rfaq-pages",
            "title-page (en)",
            False,
            (files / "R-FAQ.pdf",),
            EVAL / "r-faq-en-pages.jsonl",
        ),
    ]


def built() -> list[EvalSet]:
    """The sets built by bench/eval_sets/*.py, in name order."""
    found = []
    for meta_path in sorted(EVAL.glob("*/set.json")):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        folder = meta_path.parent
        found.append(
            EvalSet(
                meta["id"],
                meta["kind"],
                bool(meta["heldout"]),
                tuple(sorted((folder / "docs").iterdir())),
                folder / "golden.jsonl",
            )
        )
    return found


def all_sets() -> dict[str, EvalSet]:
    return {s.id: s for s in [*_older(), *built()]}


def pick(names: str | None) -> list[EvalSet]:
    """The sets named in a comma-separated list (all of them for None or "all")."""
    sets = all_sets()
    if not names or names == "all":
        return list(sets.values())
    if names == "new":
        return built()
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in sets]
    if unknown:
        raise SystemExit(f"unknown set(s) {unknown}; known: {', '.join(sets)}")
    return [sets[n] for n in wanted]
