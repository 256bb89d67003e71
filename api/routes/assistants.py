"""/v1/assistants: a knowledge base's assistants (system prompt, greeting, refusal text,
retrieval and sampling), their version history and restore, asking one (the same body, response
and SSE events as /v1/knowledge-bases/{kb}/ask) and its playground (the composed prompt, the
retrieved passages and the answer, never cached). `{assistant_id}` is an id or a name.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response, status
from fastapi.concurrency import run_in_threadpool

from api.deps import AnswerServiceDep, DatabaseDep, SettingsDep
from api.route_policy import GENERATION, access
from api.routes.ask import respond
from api.schemas import (
    AskRequest,
    AskResponse,
    AssistantCreate,
    AssistantList,
    AssistantOut,
    AssistantPatch,
    AssistantVersionList,
    AssistantVersionOut,
    PlaygroundOut,
    PlaygroundRequest,
    SearchResult,
)
from api.streaming import EventStream
from rag.core.config import Settings
from rag.qa.answer import AskSpec, Plan
from rag.qa.assistants import Assistants, spec_for
from rag.qa.prompt import NOT_COVERED
from rag.qa.service import require_ready
from rag.store.db import Database

router = APIRouter(prefix="/v1/assistants", tags=["assistants"])
_CACHE_HEADER = Header(description="no-cache: a fresh answer; no-store: the cache is not used")


async def _visible_assistant(assistant_id: str, db: DatabaseDep) -> str:
    """The `{assistant_id}` segment once the caller may see that assistant: another tenant's
    is a 404 before any request body is validated (a 422 would confirm that it exists)."""
    await run_in_threadpool(Assistants(db).get, assistant_id)
    return assistant_id


AssistantRefDep = Annotated[str, Depends(_visible_assistant)]


@router.post("", status_code=status.HTTP_201_CREATED, openapi_extra=access("admin"))
async def create(body: AssistantCreate, db: DatabaseDep) -> AssistantOut:
    """An assistant on one knowledge base (a knowledge base may have several); its name is
    unique in the tenant. Version 1 is saved and audited."""
    row = await run_in_threadpool(Assistants(db).create, body.name, body.kb, body.settings_patch())
    return AssistantOut.of(row)


@router.get("", openapi_extra=access("read"))
async def list_all(
    db: DatabaseDep,
    kb: Annotated[str | None, Query(description="only this knowledge base's (id or name)")] = None,
) -> AssistantList:
    rows = await run_in_threadpool(Assistants(db).list_all, kb)
    return AssistantList(assistants=[AssistantOut.of(r) for r in rows])


@router.get("/{assistant_id}", openapi_extra=access("read"))
async def get_one(assistant_id: str, db: DatabaseDep) -> AssistantOut:
    return AssistantOut.of(await run_in_threadpool(Assistants(db).get, assistant_id))


@router.patch("/{assistant_id}", openapi_extra=access("admin"))
async def update(
    assistant_id: AssistantRefDep, body: AssistantPatch, db: DatabaseDep
) -> AssistantOut:
    """Change the given fields; the result is validated whole and saved as a new version."""
    row = await run_in_threadpool(
        lambda: Assistants(db).update(
            assistant_id, body.settings_patch(), name=body.name, kb_ref=body.kb
        )
    )
    return AssistantOut.of(row)


@router.delete(
    "/{assistant_id}", status_code=status.HTTP_204_NO_CONTENT, openapi_extra=access("admin")
)
async def delete(assistant_id: str, db: DatabaseDep) -> Response:
    await run_in_threadpool(Assistants(db).delete, assistant_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{assistant_id}/versions", openapi_extra=access("read"))
async def versions(assistant_id: str, db: DatabaseDep) -> AssistantVersionList:
    """Every saved configuration, newest first, with who saved it."""
    rows = await run_in_threadpool(Assistants(db).versions, assistant_id)
    return AssistantVersionList(versions=[AssistantVersionOut.of(r) for r in rows])


@router.post("/{assistant_id}/versions/{version}/restore", openapi_extra=access("admin"))
async def restore(assistant_id: AssistantRefDep, version: int, db: DatabaseDep) -> AssistantOut:
    """A new version with the settings of `version` (the history is kept)."""
    return AssistantOut.of(await run_in_threadpool(Assistants(db).restore, assistant_id, version))


def assistant_spec(db: Database, ref: str, spec: AskSpec) -> AskSpec:
    """`spec` as the assistant `ref` answers it (NotFound: no such assistant for the caller)."""
    with db.read() as session:
        return spec_for(session, ref, spec)


@router.post(
    "/{assistant_id}/ask",
    response_model=AskResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
    openapi_extra=access("query", GENERATION),
)
async def ask(
    assistant_id: AssistantRefDep,
    body: AskRequest,
    db: DatabaseDep,
    qa: AnswerServiceDep,
    cache_control: Annotated[str | None, _CACHE_HEADER] = None,
) -> AskResponse | EventStream:
    """Ask the assistant: its knowledge base, with its settings (a request's own top_k,
    temperature or max_tokens stay, within the assistant's)."""
    spec = await run_in_threadpool(assistant_spec, db, assistant_id, body.spec(""))
    return await respond(spec, body, qa, cache_control)


@router.post("/{assistant_id}/playground", openapi_extra=access("query", GENERATION))
async def playground(
    assistant_id: AssistantRefDep,
    body: PlaygroundRequest,
    db: DatabaseDep,
    qa: AnswerServiceDep,
    settings: SettingsDep,
) -> PlaygroundOut:
    """Try the assistant: the messages as composed for the LLM (not sent when the question is
    refused as not covered: `settings.covered`), the retrieved passages with their scores, the
    answer and the effective settings. The answer cache is bypassed and the
    question is not logged: trying settings out is no user's question."""
    spec = AskSpec("", body.question, channel="console")
    spec = await run_in_threadpool(assistant_spec, db, assistant_id, spec)
    answerer = qa.answerer
    plan = await answerer.plan(spec, require_ready)
    result = await (answerer.generate(plan) if plan.covered else answerer.refuse(plan))
    relevance = plan.verdict.per_hit if plan.verdict is not None else []
    passages = [
        SearchResult.of(p).model_copy(
            update={"relevance": relevance[i] if i < len(relevance) else None}
        )
        for i, p in enumerate(plan.passages)
    ]
    return PlaygroundOut(
        prompt=[dict(m) for m in plan.prompt.messages],
        passages=passages,
        answer=AskResponse.of(result),
        settings=effective(plan, settings),
    )


def effective(plan: Plan, settings: Settings) -> dict[str, Any]:
    """What the answer was made with: the assistant's settings, the defaults where it has none."""
    spec = plan.spec
    search = spec.search_options
    route = plan.route.settings
    return {
        "assistant_id": spec.assistant_id,
        "version": spec.assistant_version,
        "kb_id": spec.kb_id,
        "language": plan.prompt.language,
        "system_prompt": plan.prompt.messages[0]["content"],
        "refusal_text": spec.refusal_text or NOT_COVERED[plan.prompt.language],
        "retrieval": {
            "mode": search.get("mode", settings.retrieval.mode),
            "top_k": spec.top_k or settings.retrieval.top_k,
            "rerank": search.get("rerank", settings.retrieval.rerank),
            "threshold": plan.verdict.threshold if plan.verdict is not None else None,
            "relevance": plan.verdict.relevance if plan.verdict is not None else None,
        },
        "sampling": {
            "temperature": spec.temperature if spec.temperature is not None else route.temperature,
            "top_p": spec.top_p,
            "max_tokens": plan.answer_tokens,
        },
        "route": plan.route.name,
        "covered": plan.covered,
    }
