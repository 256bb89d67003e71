"""Assistants: a knowledge base's face to its users. An assistant's settings (system prompt,
greeting, refusal text, retrieval and sampling) are validated here and applied to a question's
`AskSpec`; every channel (REST, the OpenAI endpoint, the widget, the bots) answers through
`AssistantSettings.apply`, so an assistant answers the same wherever it is asked.
`Assistants` stores them: one knowledge base each, every change a new, audited version.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rag.core import tenancy
from rag.core.errors import Conflict, InvalidInput, NotFound
from rag.kb.knowledge import find_kb, is_id_shaped
from rag.qa.answer import AskSpec
from rag.security import audit
from rag.store.db import Database
from rag.store.models import Assistant, AssistantVersion, new_id, utcnow


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
            language=None if self.language == "auto" else self.language,
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


# --- the store ----------------------------------------------------------------------------------

# The settings a PATCH may change; "retrieval" and "sampling" merge field by field.
_NESTED = ("retrieval", "sampling")


def merged(config: dict[str, Any], patch: dict[str, Any]) -> AssistantSettings:
    """`config` with `patch` applied (nested sections merged, an explicit None clears a field),
    validated: a bad value raises InvalidInput naming the field, and nothing is saved."""
    out = dict(config)
    for key, value in patch.items():
        if key in _NESTED and isinstance(value, dict):
            out[key] = {**(out.get(key) or {}), **value}
        else:
            out[key] = value
    return validated(out)


def validated(config: dict[str, Any]) -> AssistantSettings:
    try:
        return AssistantSettings.model_validate(config)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise InvalidInput(f"assistant setting {where}: {first['msg']}") from exc


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("an assistant needs a name of 1 to 200 characters")
    if is_id_shaped(name):
        # Routes take an id or a name: a name shaped like an id could never be told apart.
        raise InvalidInput("an assistant name cannot look like an id (32 hexadecimal characters)")
    return name


class Assistants:
    """Creating, changing, restoring and deleting assistants, within the current principal's
    tenant and knowledge bases. Every change is a new version (its config kept in
    `assistant_versions`, with the actor) and a row of the audit log, in one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str, kb_ref: str, config: dict[str, Any] | None = None) -> Assistant:
        name = _check_name(name)
        settings = validated(config or {})
        stored = settings.model_dump(mode="json")
        actor, _ = audit.actor()
        try:
            with self.db.write() as session:
                kb = find_kb(session, kb_ref)
                row = Assistant(
                    id=new_id(), tenant_id=kb.tenant_id, name=name, kb_id=kb.id, config=stored
                )
                session.add(row)
                session.flush()
                session.add(
                    AssistantVersion(assistant_id=row.id, version=1, config=stored, actor=actor)
                )
                audit.record(
                    session,
                    "assistant.create",
                    row.id,
                    tenant_id=kb.tenant_id,
                    name=name,
                    kb_id=kb.id,
                )
        except IntegrityError as exc:
            raise Conflict(f"an assistant named {name!r} already exists") from exc
        return row

    def list_all(self, kb_ref: str | None = None) -> list[Assistant]:
        """The tenant's assistants on the knowledge bases the principal sees (of one of them)."""
        principal = tenancy.current()
        with self.db.read() as session:
            stmt = select(Assistant).order_by(Assistant.created_at, Assistant.name)
            if kb_ref is not None:
                stmt = stmt.where(Assistant.kb_id == find_kb(session, kb_ref).id)
            if principal is not None:
                stmt = stmt.where(Assistant.tenant_id == principal.tenant_id)
                if principal.kb_ids is not None:
                    stmt = stmt.where(Assistant.kb_id.in_(principal.kb_ids))
            return list(session.execute(stmt).scalars())

    def get(self, ref: str) -> Assistant:
        with self.db.read() as session:
            return find_assistant(session, ref)

    def update(
        self, ref: str, patch: dict[str, Any], *, name: str | None = None, kb_ref: str | None = None
    ) -> Assistant:
        """PATCH semantics: only the given fields change; the result is validated as a whole,
        then saved as a new version."""
        try:
            with self.db.write() as session:
                row = find_assistant(session, ref)
                settings = merged(row.config or {}, patch)
                changes: dict[str, Any] = {"fields": sorted(patch)}
                if name is not None and _check_name(name) != row.name:
                    changes["name"] = row.name = _check_name(name)
                if kb_ref is not None:
                    kb_id = find_kb(session, kb_ref).id
                    if kb_id != row.kb_id:
                        changes["kb_id"] = row.kb_id = kb_id
                self._new_version(session, row, settings.model_dump(mode="json"))
                audit.record(
                    session,
                    "assistant.update",
                    row.id,
                    tenant_id=row.tenant_id,
                    version=row.version,
                    **changes,
                )
        except IntegrityError as exc:
            # Another assistant has the name, or a simultaneous change took this version.
            raise Conflict(f"assistant {ref} changed meanwhile or {name!r} is taken") from exc
        return row

    def versions(self, ref: str) -> list[AssistantVersion]:
        """Newest first."""
        with self.db.read() as session:
            row = find_assistant(session, ref)
            stmt = (
                select(AssistantVersion)
                .where(AssistantVersion.assistant_id == row.id)
                .order_by(AssistantVersion.version.desc())
            )
            return list(session.execute(stmt).scalars())

    def restore(self, ref: str, version: int) -> Assistant:
        """A new version whose config is that of `version` (the history is never rewritten)."""
        try:
            with self.db.write() as session:
                row = find_assistant(session, ref)
                old = session.get(AssistantVersion, (row.id, version))
                if old is None:
                    raise NotFound(f"assistant {row.name} has no version {version}")
                config = validated(old.config).model_dump(mode="json")
                self._new_version(session, row, config)
                audit.record(
                    session,
                    "assistant.restore",
                    row.id,
                    tenant_id=row.tenant_id,
                    version=row.version,
                    restored=version,
                )
        except IntegrityError as exc:
            raise Conflict(f"assistant {ref} changed meanwhile; try again") from exc
        return row

    def delete(self, ref: str) -> None:
        with self.db.write() as session:
            row = find_assistant(session, ref)
            audit.record(
                session, "assistant.delete", row.id, tenant_id=row.tenant_id, name=row.name
            )
            # Explicitly: SQLite enforces the cascade only with foreign keys switched on.
            session.execute(delete(AssistantVersion).where(AssistantVersion.assistant_id == row.id))
            session.delete(row)

    @staticmethod
    def _new_version(session: Session, row: Assistant, config: dict[str, Any]) -> None:
        actor, _ = audit.actor()
        row.version = (row.version or 1) + 1
        row.config = config
        row.updated_at = utcnow()
        session.add(
            AssistantVersion(assistant_id=row.id, version=row.version, config=config, actor=actor)
        )
