"""`rag keys`: create, list and revoke API keys. The operator's tool, on the data directory's
database directly (no server, no key needed): the first admin key is made before any exists,
and keys for any tenant. It refuses a data directory that does not exist yet."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

import typer

from rag.cli.common import YesOpt, confirm, fail, local_services
from rag.core.errors import RagError
from rag.core.tenancy import DEFAULT_TENANT

app = typer.Typer(
    help="API keys: create (shown once), list, revoke. Works on the data directory "
    "(RAG_DATA_DIR) directly, not through the server.",
    no_args_is_help=True,
)


@app.command("create")
def create(
    scopes: Annotated[str, typer.Option(help="comma-separated: admin, ingest, query")] = "query",
    tenant: Annotated[str, typer.Option(help="the tenant that owns the key")] = DEFAULT_TENANT,
    name: Annotated[str, typer.Option(help="what the key is for")] = "",
    kb: Annotated[
        list[str] | None,
        typer.Option("--kb", help="limit the key to this knowledge base (name or id; repeatable)"),
    ] = None,
    expires_days: Annotated[float | None, typer.Option(help="expire after this many days")] = None,
    rpm: Annotated[int | None, typer.Option(help="requests per minute")] = None,
    concurrent: Annotated[int | None, typer.Option(help="answers at a time")] = None,
    upload_bytes_per_day: Annotated[int | None, typer.Option(help="upload quota")] = None,
) -> None:
    """Create a key and print it once; only its hash is stored."""
    from rag.core import tenancy
    from rag.kb import knowledge
    from rag.security import keys

    svc = local_services()
    # Names are looked up among the tenant's own knowledge bases, as its key would see them.
    owner = tenancy.Principal(actor="cli", tenant_id=tenant, scopes=frozenset({"admin"}))
    try:
        with svc.db.write() as session:
            with tenancy.acting_as(owner):
                kb_ids = [knowledge.find_kb(session, ref).id for ref in kb or []]
            row, secret = keys.create(
                session,
                tenant_id=tenant,
                scopes=[s.strip() for s in scopes.split(",") if s.strip()],
                name=name,
                kb_ids=kb_ids or None,
                expires_in=timedelta(days=expires_days) if expires_days else None,
                limits=keys.KeyLimits(rpm, concurrent, upload_bytes_per_day),
            )
    except RagError as exc:
        fail(str(exc))
    finally:
        svc.close()
    typer.echo(f"key {row.id} for tenant {row.tenant_id} ({', '.join(row.scopes)}):")
    typer.echo(secret)
    typer.secho("store it now: it cannot be shown again", fg=typer.colors.YELLOW, err=True)


@app.command("list")
def list_(tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None) -> None:
    """List keys (never their secrets) as JSON lines."""
    from rag.security import keys

    svc = local_services()
    try:
        with svc.db.read() as session:
            rows = keys.listing(session, tenant)
    finally:
        svc.close()
    for r in rows:
        state = "revoked" if r.revoked_at else "active"
        fields: dict[str, object] = {"id": r.id, "tenant": r.tenant_id, "name": r.name}
        fields |= {"scopes": r.scopes, "kb_ids": r.kb_ids, "state": state}
        fields["expires_at"] = r.expires_at.isoformat() if r.expires_at else None
        typer.echo(json.dumps(fields, ensure_ascii=False))


@app.command("revoke")
def revoke(key_id: str, yes: YesOpt = False) -> None:
    """Revoke a key: refused within two seconds on every replica, for good.

    Asks first; --yes skips the question (and is needed without a terminal)."""
    from rag.security import keys

    confirm(f"Revoke key {key_id}? Clients using it stop working.", yes)
    svc = local_services()
    try:
        with svc.db.write() as session:
            keys.revoke(session, key_id)
    except RagError as exc:
        fail(str(exc))
    finally:
        svc.close()
    typer.echo(f"revoked {key_id}")
