"""Knowledge bases: create, list, read, update and delete; index status; the user dictionary
(lexicon) and its learned suggestions; calibrating the "not covered" relevance threshold."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import (
    DatabaseDep,
    IndexesDep,
    KbIdDep,
    KnowledgeDep,
    RelevanceDep,
    RetrieverDep,
    SettingsDep,
)
from api.route_policy import access
from api.schemas import (
    CalibrateRequest,
    CalibrationOut,
    KnowledgeBaseCreate,
    KnowledgeBaseList,
    KnowledgeBaseOut,
    KnowledgeBaseUpdate,
    LexiconChangeOut,
    LexiconIn,
    LexiconOut,
    LexiconPatch,
    SuggestionList,
    SuggestionOut,
    SuggestionsRequest,
)
from rag.kb import knowledge, lexicon
from rag.retrieval import calibration

router = APIRouter(prefix="/v1/knowledge-bases", tags=["knowledge bases"])


@router.post("", status_code=status.HTTP_201_CREATED, openapi_extra=access("admin"))
def create(body: KnowledgeBaseCreate, db: DatabaseDep, kbs: KnowledgeDep) -> KnowledgeBaseOut:
    kb = kbs.create_kb(body.name, body.description)
    with db.read() as session:
        return KnowledgeBaseOut.of(kb, knowledge.kb_stats(session, kb))


@router.get("", openapi_extra=access("read"))
def list_all(db: DatabaseDep) -> KnowledgeBaseList:
    with db.read() as session:
        kbs = knowledge.list_kbs(session)
        return KnowledgeBaseList(
            knowledge_bases=[KnowledgeBaseOut.of(kb, knowledge.kb_stats(session, kb)) for kb in kbs]
        )


@router.get("/{kb_id}", openapi_extra=access("read"))
def get_one(kb_id: KbIdDep, db: DatabaseDep) -> KnowledgeBaseOut:
    with db.read() as session:
        kb = knowledge.get_kb(session, kb_id)
        return KnowledgeBaseOut.of(kb, knowledge.kb_stats(session, kb))


@router.delete("/{kb_id}", status_code=status.HTTP_204_NO_CONTENT, openapi_extra=access("admin"))
def delete(kb_id: KbIdDep, kbs: KnowledgeDep) -> None:
    kbs.delete_kb(kb_id)


@router.get("/{kb_id}/index", openapi_extra=access("read"))
def index_status(kb_id: KbIdDep, indexes: IndexesDep) -> dict[str, object]:
    """The FAISS index of this knowledge base compared with the chunks in SQL."""
    return indexes.check(kb_id)


@router.patch("/{kb_id}", openapi_extra=access("admin"))
def update(kb_id: KbIdDep, body: KnowledgeBaseUpdate, db: DatabaseDep) -> KnowledgeBaseOut:
    """Change the fields given; `relevance_threshold: null` returns to the configured default."""
    if "relevance_threshold" in body.model_fields_set:
        calibration.set_threshold(db, kb_id, body.relevance_threshold)
    return get_one(kb_id, db)


@router.get("/{kb_id}/lexicon", openapi_extra=access("read"))
def get_lexicon(kb_id: KbIdDep, db: DatabaseDep) -> LexiconOut:
    """The knowledge base's user dictionary: words its lexical index keeps whole."""
    return LexiconOut(terms=lexicon.get_terms(db, kb_id))


@router.put("/{kb_id}/lexicon", openapi_extra=access("admin"))
def put_lexicon(
    kb_id: KbIdDep, body: LexiconIn, db: DatabaseDep, indexes: IndexesDep
) -> LexiconChangeOut:
    """Replace the user dictionary; the lexical index is re-analysed before this returns (about
    1 s per 10k chunks), other servers re-analyse on their next search."""
    change = lexicon.set_terms(db, indexes, kb_id, body.terms)
    return LexiconChangeOut(
        terms=change.terms, added=change.added, removed=change.removed, reindexed=change.reindexed
    )


@router.patch("/{kb_id}/lexicon", openapi_extra=access("admin"))
def patch_lexicon(
    kb_id: KbIdDep, body: LexiconPatch, db: DatabaseDep, indexes: IndexesDep
) -> LexiconChangeOut:
    """Add and remove terms atomically: concurrent changes never undo each other."""
    change = lexicon.change_terms(db, indexes, kb_id, body.add, body.remove)
    return LexiconChangeOut(
        terms=change.terms, added=change.added, removed=change.removed, reindexed=change.reindexed
    )


@router.post("/{kb_id}/lexicon/suggestions", openapi_extra=access("admin"))
def suggest_lexicon(
    kb_id: KbIdDep, db: DatabaseDep, settings: SettingsDep, body: SuggestionsRequest | None = None
) -> SuggestionList:
    """Terms learned from the knowledge base's chunks: frequent, cohesive runs of words the
    analyser cuts apart, not yet in the dictionary; best first. Reads at most
    RAG_RETRIEVAL__LEXICON_SUGGEST_MAX_CHUNKS chunks (a few seconds)."""
    body = body or SuggestionsRequest()
    found = lexicon.suggest_terms(
        db,
        kb_id,
        limit=body.limit,
        min_count=body.min_count,
        min_cohesion=body.min_cohesion,
        max_chunks=settings.retrieval.lexicon_suggest_max_chunks,
    )
    return SuggestionList(
        suggestions=[
            SuggestionOut(term=s.term, pieces=s.pieces, count=s.count, cohesion=s.cohesion)
            for s in found
        ]
    )


@router.post("/{kb_id}/relevance/calibrate", openapi_extra=access("admin"))
def calibrate_relevance(
    kb_id: KbIdDep,
    body: CalibrateRequest,
    db: DatabaseDep,
    retriever: RetrieverDep,
    judge: RelevanceDep,
) -> CalibrationOut:
    """Measure the relevance of answerable questions (the golden set given, else the knowledge
    base's section headings) and of questions on other topics (given, else built in), and
    choose the threshold that separates them best while keeping `min_answered` answered."""
    golden = calibration.questions_of(body.golden) if body.golden else None
    with db.read() as session:
        previous = knowledge.get_kb(session, kb_id).relevance_threshold
    found = calibration.calibrate(
        retriever,
        judge,
        kb_id,
        golden=golden,
        negatives=body.negatives,
        min_answered=body.min_answered,
    )
    if body.apply:
        calibration.set_threshold(db, kb_id, found.threshold)
    return CalibrationOut(
        threshold=found.threshold,
        previous=previous,
        applied=body.apply,
        source=found.source,
        positives=found.positives,
        negatives=found.negatives,
        answered=found.answered,
        refused=found.refused,
    )
