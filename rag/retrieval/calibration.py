"""Choosing a knowledge base's relevance threshold (rag/retrieval/relevance.py) from questions
it should answer and questions it should not: the threshold that best separates the two while
keeping at least `min_answered` of the answerable ones answered.

Answerable: a golden set, or else the knowledge base's own section headings as pseudo-questions.
Unanswerable: the caller's, or else the built-in questions on everyday topics below.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select

from rag.core.errors import InvalidInput
from rag.kb.knowledge import get_kb
from rag.retrieval.relevance import RelevanceJudge
from rag.retrieval.retriever import Retriever
from rag.security import audit
from rag.store.db import Database
from rag.store.models import Chunk

# Not the questions bench/refusal.py measures with: those stay out of every calibration.
FOREIGN_QUESTIONS = (
    "今天晚饭做什么菜比较好？",
    "怎么给自行车的链条上油？",
    "春节期间的火车票什么时候开售？",
    "咳嗽一直不好要去医院看哪个科？",
    "如何教小孩学会游泳？",
    "足球比赛的越位规则是什么？",
    "银行定期存款提前支取有利息吗？",
    "去云南旅游穿什么衣服合适？",
    "怎样清洗羽绒服不会结块？",
    "宋词和元曲有什么区别？",
    "猫砂多久换一次？",
    "租房合同到期房东不退押金怎么办？",
    "如何挑选一台空气净化器？",
    "马拉松前一天应该吃什么？",
    "绿茶和红茶哪个更提神？",
    "What is a good recipe for pancakes?",
    "How do I get rid of ants in the kitchen?",
    "When is the best time to plant tulip bulbs?",
    "How many players are on a rugby team?",
    "What should I pack for a beach holiday?",
    "How do I lower my electricity bill in winter?",
    "What is the tallest building in the world?",
    "How do I clean a cast iron pan?",
    "What are the rules of chess castling?",
    "How can I learn to whistle?",
)
MAX_HEADINGS = 200


@dataclass(frozen=True)
class Calibration:
    threshold: float
    source: Literal["golden", "headings"]
    positives: int
    negatives: int
    answered: float  # share of the answerable questions at or above the threshold
    refused: float  # share of the unanswerable questions below it


def questions_of(items: Sequence[object]) -> list[str]:
    """The questions of golden items ({"question": ...}; other keys are ignored)."""
    out = []
    for n, item in enumerate(items, start=1):
        question = item.get("question") if isinstance(item, dict) else None
        if not isinstance(question, str) or not question.strip():
            raise InvalidInput(f"golden item #{n} needs a non-empty 'question'")
        out.append(question.strip())
    return out


def heading_questions(db: Database, kb_id: str, limit: int = MAX_HEADINGS) -> list[str]:
    """Distinct section titles of the live version (at least 4 characters), sampled evenly."""
    with db.read() as session:
        kb = get_kb(session, kb_id)
        paths = session.execute(
            select(Chunk.heading_path).where(Chunk.kb_id == kb_id, Chunk.version == kb.live_version)
        ).scalars()
        titles = sorted({path[-1].strip() for path in paths if path and len(path[-1].strip()) >= 4})
    random.Random(0).shuffle(titles)
    return titles[:limit]


def choose_threshold(
    answerable: Sequence[float], unanswerable: Sequence[float], min_answered: float
) -> float:
    """The threshold maximising (answered share + refused share), among those that keep at
    least `min_answered` of `answerable` answered; the lowest such on ties (answering wins)."""
    if not answerable:
        raise InvalidInput("calibration needs at least one answerable question")
    pos, neg = sorted(answerable), sorted(unanswerable)
    candidates = sorted({0.0, *pos, *(v + 1e-4 for v in neg)})
    best, best_gain = 0.0, -1.0
    for t in candidates:
        answered = sum(v >= t for v in pos) / len(pos)
        if answered < min_answered:
            break  # answered only shrinks as t grows
        refused = sum(v < t for v in neg) / len(neg) if neg else 0.0
        if answered + refused > best_gain + 1e-9:
            best, best_gain = t, answered + refused
    return round(min(best, 1.0), 4)


def calibrate(
    retriever: Retriever,
    judge: RelevanceJudge,
    kb_id: str,
    *,
    golden: Sequence[str] | None,
    negatives: Sequence[str] | None,
    min_answered: float,
    max_questions: int = MAX_HEADINGS,
) -> Calibration:
    """Measure the relevance of each question's best hits and choose the threshold; without a
    golden set, from at most `max_questions` headings."""
    source: Literal["golden", "headings"] = "golden" if golden else "headings"
    positives = list(golden) if golden else heading_questions(retriever.db, kb_id, max_questions)
    if not positives:
        raise InvalidInput(
            "the knowledge base has no section headings to calibrate from; send a golden set"
        )
    foreign = list(negatives) if negatives else list(FOREIGN_QUESTIONS)
    pos = [_best(retriever, judge, kb_id, q) for q in positives]
    neg = [_best(retriever, judge, kb_id, q) for q in foreign]
    threshold = choose_threshold(pos, neg, min_answered)
    return Calibration(
        threshold,
        source,
        len(pos),
        len(neg),
        round(sum(v >= threshold for v in pos) / len(pos), 4),
        round(sum(v < threshold for v in neg) / len(neg), 4) if neg else 0.0,
    )


def _best(retriever: Retriever, judge: RelevanceJudge, kb_id: str, question: str) -> float:
    passages = retriever.search(kb_id, question)
    return judge.verdict(kb_id, question, passages).relevance


def set_threshold(db: Database, kb_id: str, threshold: float | None) -> float | None:
    """Store the knowledge base's threshold (None: the configured default); returns the old one."""
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise InvalidInput("relevance_threshold must be between 0 and 1")
    with db.write() as session:
        kb = get_kb(session, kb_id)
        previous = kb.relevance_threshold
        kb.relevance_threshold = threshold
        kb.settings_version += 1  # refusals change: new answer cache keys
        audit.record(
            session, "kb.relevance_threshold", kb_id, tenant_id=kb.tenant_id, value=threshold
        )
    return previous
