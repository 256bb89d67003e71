from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import RootDep
from api.route_policy import PUBLIC, access

router = APIRouter(tags=["operations"])


@router.get("/healthz", openapi_extra=access(PUBLIC))
def healthz() -> dict[str, str]:
    """The process is up (liveness)."""
    return {"status": "ok"}


@router.get("/readyz", openapi_extra=access(PUBLIC))
def readyz(svc: RootDep, request: Request) -> JSONResponse:
    """Ready to serve: database reachable and index store usable. The LLM is reported, not
    required: retrieval-only requests work without it."""
    checks: dict[str, Any] = {}
    try:
        with svc.db.read() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except Exception as exc:
        checks["database"] = {"ok": False, "error": str(exc)[:300]}
    checks["index"] = {
        "ok": request.app.state.ready,
        "loaded_knowledge_bases": len(svc.indexes.loaded()),
    }
    checks["embedding_model"] = {"ok": svc.embedder_loaded, "model": svc.settings.embedding.model}
    checks["llm"] = {
        "ok": svc.llm.ping(),
        "base_url": svc.settings.llm.base_url,
        "model": svc.settings.llm.model,
    }
    guard = request.app.state.guard
    checks["auth"] = {"mode": guard.mode(), "limits": type(guard.limiter).__name__}
    if getattr(guard.limiter, "healthy", True) is False:
        checks["auth"]["error"] = "Redis unreachable: per-key limits are not enforced"
    checks["consistency"] = {"repairing": request.app.state.repairing, **request.app.state.doctor}
    ready = checks["database"]["ok"] and checks["index"]["ok"] and checks["embedding_model"]["ok"]
    status = "degraded" if request.app.state.repairing else ("ok" if ready else "unavailable")
    return JSONResponse(
        {"ready": ready, "status": status, "checks": checks}, status_code=200 if ready else 503
    )


@router.get("/metrics", openapi_extra=access(PUBLIC))
def metrics(request: Request) -> Response:
    body = generate_latest() + generate_latest(request.app.state.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
