"""Per-knowledge-base user dictionaries: domain terms the lexical analyser keeps whole
(KnowledgeBase.lexical_terms), read, replaced, and suggested from the knowledge base's own text.

A suggestion is a run of two or three adjacent jieba words that occurs often and whose words
stick together far more than chance would have them (normalised PMI): "软件 包 管理器" split
by jieba's general dictionary, but one term in the corpus. Terms already kept are not offered.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select

from rag.core.errors import InvalidInput
from rag.index.analyzer import fold, normalize_terms, segmenter_for
from rag.index.store import IndexStore
from rag.kb.knowledge import get_kb
from rag.security import audit
from rag.store.db import Database
from rag.store.models import Chunk

# The API's limits (the analyser itself accepts more): a term is a word, not a phrase.
MAX_TERM_CHARS = 32
MAX_TERMS = 5000
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
# Words a term never starts or ends with: they glue onto anything, so their pairs are noise.
_EDGE_WORDS = """
的 了 是 在 和 与 及 或 也 都 就 而 之 其 这 那 有 中 上 下 等 个 对 为 将 被 把 从 到 以
可以 一个 我们 你 您 他 它 如果 因为 所以 并 但 还 又 即 则 不 没有 使用 进行
"""
_EDGE_STOP = frozenset(_EDGE_WORDS.split())


def check_terms(terms: Sequence[object]) -> list[str]:
    """The terms as stored (folded, deduplicated, sorted: rag/index/analyzer.py); InvalidInput
    for a list over MAX_TERMS or a term that is not a non-empty word of at most MAX_TERM_CHARS."""
    if len(terms) > MAX_TERMS:
        raise InvalidInput(f"{len(terms)} terms: at most {MAX_TERMS} per knowledge base")
    for term in terms:
        if isinstance(term, str) and len(term.strip()) > MAX_TERM_CHARS:
            raise InvalidInput(f"term {term[:20]!r}… is over {MAX_TERM_CHARS} characters")
    return normalize_terms(terms)


def get_terms(db: Database, kb_id: str) -> list[str]:
    with db.read() as session:
        return list(get_kb(session, kb_id).lexical_terms or [])


@dataclass(frozen=True)
class TermsChange:
    terms: list[str]
    added: list[str]
    removed: list[str]
    reindexed: bool  # this process's BM25 index was re-analysed with the new terms


def set_terms(
    db: Database, indexes: IndexStore, kb_id: str, terms: Sequence[object]
) -> TermsChange:
    """Replace the knowledge base's terms, then re-analyse its BM25 index. Other processes
    notice the change on their next search (IndexStore compares the terms with SQL)."""
    new = check_terms(terms)
    return _change(db, indexes, kb_id, lambda old: new)


def change_terms(
    db: Database,
    indexes: IndexStore,
    kb_id: str,
    add: Sequence[object] = (),
    remove: Sequence[object] = (),
) -> TermsChange:
    """Add and remove terms in one transaction on the locked row, so concurrent changes never
    undo each other (a read, then a replace, would lose one writer's terms)."""
    adding = check_terms(add)
    dropping = set(normalize_terms([t for t in remove if isinstance(t, str) and t.strip()]))
    return _change(
        db,
        indexes,
        kb_id,
        lambda old: check_terms(sorted((set(old) | set(adding)) - dropping)),
    )


def _change(
    db: Database, indexes: IndexStore, kb_id: str, compute: Callable[[list[str]], list[str]]
) -> TermsChange:
    with db.write() as session:
        kb = get_kb(session, kb_id)
        session.refresh(kb, with_for_update=True)  # PostgreSQL: writers queue on the row
        old = list(kb.lexical_terms or [])
        new = compute(old)
        kb.lexical_terms = new
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        if added or removed:
            kb.settings_version += 1  # retrieval changes: new answer cache keys
            audit.record(
                session,
                "kb.lexicon",
                kb_id,
                tenant_id=kb.tenant_id,
                added=len(added),
                removed=len(removed),
            )
    # After the commit: the rebuild reads the terms from SQL.
    reindexed = indexes.lexical_terms_changed(kb_id) if (added or removed) else False
    return TermsChange(new, added, removed, reindexed)


@dataclass(frozen=True)
class Suggestion:
    term: str
    pieces: list[str]  # how jieba cuts it today
    count: int  # occurrences in the chunks read
    cohesion: float  # normalised PMI of its pieces: 1 = they only ever occur together


def suggest_terms(
    db: Database,
    kb_id: str,
    *,
    limit: int = 50,
    min_count: int = 5,
    min_cohesion: float = 0.5,
    max_chunks: int = 5000,
) -> list[Suggestion]:
    """Learned suggestions from the knowledge base's live chunks (at most `max_chunks`, the
    most recent first), best first, leaving out terms it already keeps."""
    with db.read() as session:
        kb = get_kb(session, kb_id)
        existing = set(kb.lexical_terms or [])
        texts = list(
            session.execute(
                select(Chunk.text)
                .where(Chunk.kb_id == kb_id, Chunk.version == kb.live_version)
                .order_by(Chunk.seq.desc())
                .limit(max_chunks)
            ).scalars()
        )
    return suggestions(texts, existing, limit=limit, min_count=min_count, min_cohesion=min_cohesion)


def suggestions(
    texts: Iterable[str],
    existing: set[str],
    *,
    limit: int = 50,
    min_count: int = 5,
    min_cohesion: float = 0.5,
) -> list[Suggestion]:
    """Frequent, cohesive runs of 2-3 adjacent jieba words in `texts` (see the module doc)."""
    segmenter = segmenter_for(())
    words: Counter[str] = Counter()
    grams: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        for run in _CJK_RUN.findall(fold(text)):
            cut = segmenter.lcut(run, HMM=True)
            words.update(cut)
            for n in (2, 3):
                for i in range(len(cut) - n + 1):
                    gram = tuple(cut[i : i + n])
                    if gram[0] not in _EDGE_STOP and gram[-1] not in _EDGE_STOP:
                        grams[gram] += 1
    total = sum(words.values())
    if not total:
        return []
    found: dict[tuple[str, ...], Suggestion] = {}
    for gram, count in grams.items():
        term = "".join(gram)
        if count < min_count or term in existing or len(term) > MAX_TERM_CHARS:
            continue
        p_gram = count / total
        pmi = math.log(p_gram) - sum(math.log(words[w] / total) for w in gram)
        cohesion = pmi / -math.log(p_gram) / (len(gram) - 1)
        if cohesion >= min_cohesion:
            found[gram] = Suggestion(term, list(gram), count, round(cohesion, 3))
    # A pair that almost only occurs inside one longer run is a fragment of that run.
    for gram in [g for g in found if len(g) == 3]:
        for part in (gram[:2], gram[1:]):
            if part in found and found[gram].count >= 0.8 * found[part].count:
                del found[part]
    ranked = sorted(found.values(), key=lambda s: (-s.cohesion * math.log1p(s.count), s.term))
    return ranked[:limit]
