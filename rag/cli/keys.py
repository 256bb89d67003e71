"""`rag keys`: create, list and revoke API keys (the operator's tool; works offline on the DB)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

import typer

from rag.core.config import load_settings
from rag.core.errors import RagError
from rag.core.tenancy import DEFAULT_TENANT
from rag.security import keys
from rag.services import Services

app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)


def _services() -> Services:
    return Services.create(load_settings())


@app.command("create")
def create(
    scopes: Annotated[str, typer.Option(help="comma-separated: admin, ingest, query")] = "query",
    tenant: Annotated[str, typer.Option(help="the tenant that owns the key")] = DEFAULT_TENANT,
    name: Annotated[str, typer.Option(help="what the key is for")] = "",
    kb: Annotated[
        list[str] | None, typer.Option("--kb", help="limit the key to this knowledge base id")
    ] = None,
    expires_days: Annotated[float | None, typer.Option(help="expire after this many days")] = None,
    rpm: Annotated[int | None, typer.Option(help="requests per minute")] = None,
    concurrent: Annotated[int | None, typer.Option(help="answers at a time")] = None,
    upload_bytes_per_day: Annotated[int | None, typer.Option(help="upload quota")] = None,
) -> None:
    """Create a key and print it once; only its hash is stored."""
    svc = _services()
    try:
        with svc.db.write() as session:
            row, secret = keys.create(
                session,
                tenant_id=tenant,
                scopes=[s.strip() for s in scopes.split(",") if s.strip()],
                name=name,
                kb_ids=kb or None,
                expires_in=timedelta(days=expires_days) if expires_days else None,
                limits=keys.KeyLimits(rpm, concurrent, upload_bytes_per_day),
            )
    except RagError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    finally:
        svc.close()
    typer.echo(f"key {row.id} for tenant {row.tenant_id} ({', '.join(row.scopes)}):")
    typer.echo(secret)
    typer.secho("store it now: it cannot be shown again", fg=typer.colors.YELLOW, err=True)


@app.command("list")
def list_(tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None) -> None:
    """List keys (never their secrets) as JSON lines."""
    svc = _services()
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
def revoke(key_id: str) -> None:
    """Revoke a key; requests with it are refused within two seconds on every replica."""
    svc = _services()
    try:
        with svc.db.write() as session:
            keys.revoke(session, key_id)
    except RagError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    finally:
        svc.close()
    typer.echo(f"revoked {key_id}")
