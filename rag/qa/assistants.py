"""Assistants: a knowledge base's face to its users. An assistant's settings (system prompt,
greeting, refusal text, retrieval and sampling) are validated here and applied to a question's
`AskSpec`; every channel (REST, the OpenAI endpoint, the widget, the bots) answers through
`AssistantSettings.apply`, so an assistant answers the same wherever it is asked.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from rag.core import tenancy
from rag.core.errors import NotFound
from rag.qa.answer import AskSpec
from rag.store.models import Assistant


class RetrievalChoice(BaseModel):
    """How an assistant retrieves; None: the service's configured default."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["hybrid", "dense", "lexical"] | None = None
    top_k: int | None = Field(None, ge=1, le=50)
    rerank: bool | None = None
    threshold: float | None = Field(
        None, ge=0, le=1, description="The 'not covered' relevance threshold; None: the KB's."
    )


class Sampling(BaseModel):
    """How an assistant samples; None: the route's configured default."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=32_768)


class AssistantSettings(BaseModel):
    """What an assistant's `config` holds; every field is optional, None meaning the default."""

    model_config = ConfigDict(extra="forbid")

    system_prompt: str | None = Field(None, max_length=8_000)
    greeting: str = Field("", max_length=2_000)
    refusal_text: str | None = Field(None, max_length=2_000)
    language: Literal["auto", "zh", "en"] = "auto"
    retrieval: RetrievalChoice = Field(default_factory=RetrievalChoice)
    sampling: Sampling = Field(default_factory=Sampling)

    def apply(self, spec: AskSpec, assistant_id: str, version: int) -> AskSpec:
        """`spec` as this assistant answers it: its settings fill what the request left open
        (a request's own top_k, temperature or max_tokens stay, within the assistant's)."""
        search = dict(spec.search_options)
        r = self.retrieval
        if r.mode is not None:
            search.setdefault("mode", r.mode)
        if r.rerank is not None:
            search.setdefault("rerank", r.rerank)
        s = self.sampling
        max_tokens = spec.max_tokens or s.max_tokens
        if spec.max_tokens and s.max_tokens:
            max_tokens = min(spec.max_tokens, s.max_tokens)
        return replace(
            spec,
            top_k=spec.top_k or r.top_k,
            search_options=search,
            assistant_id=assistant_id,
            assistant_version=version,
            system_prompt=self.system_prompt,
            refusal_text=self.refusal_text,
            temperature=spec.temperature if spec.temperature is not None else s.temperature,
            top_p=s.top_p,
            max_tokens=max_tokens,
            relevance_threshold=r.threshold,
        )


def settings_of(assistant: Assistant) -> AssistantSettings:
    return AssistantSettings.model_validate(assistant.config or {})


def find_assistant(session: Session, ref: str) -> Assistant:
    """The assistant with this id, else this name, among the current principal's tenant's
    (another tenant's, or one on a knowledge base the principal may not see: NotFound)."""
    principal = tenancy.current()
    found = session.get(Assistant, ref)
    if found is None:
        stmt = select(Assistant).where(Assistant.name == ref)
        if principal is not None:
            stmt = stmt.where(Assistant.tenant_id == principal.tenant_id)
        found = session.execute(stmt).scalars().first()
    if found is None or (
        principal is not None and not principal.sees(found.kb_id, found.tenant_id)
    ):
        raise NotFound(f"assistant {ref} does not exist")
    return found


def spec_for(session: Session, ref: str, spec: AskSpec) -> AskSpec:
    """`spec` (whose kb_id is ignored) as assistant `ref` answers it, on its knowledge base."""
    assistant = find_assistant(session, ref)
    applied = settings_of(assistant).apply(spec, assistant.id, assistant.version)
    return replace(applied, kb_id=assistant.kb_id)
