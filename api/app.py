"""FastAPI application over a composition root (`Root`, api/deps.py) it is given."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry

from api import errors, route_policy
from api.auth import AuthMiddleware, Guard
from api.body_limit import BodyLimitMiddleware
from api.cors import WidgetCorsMiddleware
from api.deps import Root
from api.observe import ObserveMiddleware
from api.routes import (
    analytics,
    answers,
    ask,
    assistants,
    bots,
    conversations,
    docs,
    documents,
    health,
    jobs,
    keys,
    knowledge_bases,
    openai_compat,
    search,
    sources,
    sync,
    ui,
    versions,
    webhooks,
    widget,
)
from rag.core import log_setup, tracing
from rag.core.errors import ConfigError
from rag.generation.upstream_metrics import UpstreamCollector, load_nvml
from rag.kb.doc_metrics import DocumentStatusCollector
from rag.kb.queue_metrics import JobQueueCollector

log = logging.getLogger(__name__)


def _warm_up(app: FastAPI, svc: Root) -> None:
    """Load every index in the background; /readyz says when done."""
    try:
        from rag.kb.knowledge import list_kbs

        with svc.db.read() as session:
            kb_ids = [kb.id for kb in list_kbs(session)]
        for kb_id in kb_ids:
            svc.indexes.get(kb_id)
        svc.indexes.save_dirty()
        app.state.ready = True
        log.info("ready: %d knowledge base index(es) loaded", len(kb_ids))
    except Exception:
        log.exception("warm-up failed")


def _doctor_loop(app: FastAPI, svc: Root, stop: threading.Event) -> None:
    """Periodic consistency check; /readyz says 'degraded' while a repair runs."""

    interval = svc.settings.doctor_interval_s
    while interval and not stop.wait(interval):
        try:
            found = svc.doctor.examine(repair=False)
            if found:
                app.state.repairing = True
                found = svc.doctor.examine(repair=True)
            app.state.doctor = {"last_run": time.time(), "findings": [f.as_dict() for f in found]}
        except Exception:
            log.exception("consistency check failed")
        finally:
            app.state.repairing = False


def _sync_loop(app: FastAPI, svc: Root, stop: threading.Event) -> None:
    """Catch up with rows other processes committed (replicas, the CLI)."""
    while not stop.wait(svc.settings.index_sync_interval_s):
        try:
            svc.indexes.sync()
        except Exception:
            log.exception("index sync failed")


def _declare_security_scheme(app: FastAPI) -> None:
    """Name the bearer-key scheme the keyed routes refer to (route_policy.access) in the schema:
    the auth middleware, not a FastAPI dependency, checks keys, so FastAPI cannot infer it."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # FastAPI caches it: adding the scheme again changes nothing
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes[route_policy.SECURITY_SCHEME_NAME] = route_policy.SECURITY_SCHEME
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    services: Root | None = None,
    *,
    start_worker: bool = True,
    warm_up: bool = True,
    close_services: bool = False,
) -> FastAPI:
    """The app over `services` (required once it starts; without it the routes can still be
    listed). `close_services`: the app owns them and closes them when it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is None:
            raise ConfigError("create_app needs the services to serve (rag.services.Services)")
        svc = services
        # Only a configured endpoint starts (and later stops) tracing: an app without one leaves
        # the process's tracing as it found it.
        traced = bool(svc.settings.tracing.otlp_endpoint) and tracing.configure(
            svc.settings.tracing
        )
        # Fail fast on an unloadable embedding model (ConfigError names the setting); the
        # indexes load in the background and /readyz reports when they are done.
        await run_in_threadpool(lambda: svc.embedder)
        app.state.services = svc
        app.state.guard = Guard.create(svc.db, svc.settings.security, svc.settings.host)
        mode = await run_in_threadpool(app.state.guard.mode)
        if mode == "open":
            log.warning(
                "no API keys exist and the server is on loopback: the API is open to local "
                "clients; create a key with `rag keys create` to require keys"
            )
        elif mode == "locked":
            log.warning("no API keys exist: every /v1 request is refused until `rag keys create`")
        app.state.ready = False
        app.state.worker = None
        # Per-app registry: these gauges read this app's database at scrape time.
        app.state.registry = CollectorRegistry()
        app.state.registry.register(DocumentStatusCollector(svc.db))
        app.state.registry.register(JobQueueCollector(svc.db))
        if svc.settings.llm.upstream_metrics:  # the LLM servers' own metrics and this host's GPUs
            upstream = UpstreamCollector.for_settings(svc.settings.llm, nvml=load_nvml())
            app.state.registry.register(upstream)
        stop = threading.Event()
        if warm_up:
            threading.Thread(target=_warm_up, args=(app, svc), daemon=True).start()
        else:
            app.state.ready = True
        threading.Thread(target=_sync_loop, args=(app, svc, stop), daemon=True).start()
        app.state.repairing = False
        app.state.doctor = {"last_run": None, "findings": []}
        threading.Thread(target=_doctor_loop, args=(app, svc, stop), daemon=True).start()
        dispatcher = svc.webhook_dispatcher() if svc.settings.webhooks.enabled else None
        if dispatcher is not None:
            dispatcher.start()
        retained = svc.settings.analytics  # the question log's purge of expired rows
        purger = svc.question_log_purger() if retained.enabled and retained.retention_days else None
        if purger is not None:
            purger.start()
        if start_worker:
            app.state.worker = svc.ingest_worker()
            if app.state.worker is not None:
                app.state.worker.start()
        try:
            yield
        finally:
            stop.set()
            if dispatcher is not None:
                dispatcher.stop()
            if purger is not None:
                purger.stop()
            await svc.bots.aclose()  # the answers still running are cancelled
            if app.state.worker is not None:
                app.state.worker.stop()
            if close_services:
                svc.close()
            else:
                svc.indexes.save_dirty()
            if traced:
                tracing.shutdown()

    app = FastAPI(
        title="Knowledge-base QA",
        version="0.1.0",
        description="Upload documents, search them, ask questions with cited answers.",
        lifespan=lifespan,
        # FastAPI's pages load their scripts from a CDN; api/routes/docs.py serves them from
        # the package instead, at the same URLs.
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    _declare_security_scheme(app)
    for router in (
        knowledge_bases.router,
        documents.router,
        sources.router,
        search.router,
        ask.router,
        answers.router,
        analytics.router,
        assistants.router,
        conversations.router,
        openai_compat.router,
        jobs.router,
        sync.router,
        versions.router,
        keys.router,
        webhooks.router,
        widget.router,
        bots.router,
        health.router,
        ui.router,
        docs.router,
    ):
        # Every operation documents its errors as the one envelope (api/errors.py).
        app.include_router(router, responses=errors.RESPONSES)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(AuthMiddleware)  # outside the body limit, inside ObserveMiddleware
    # Widget CORS (api/cors.py): outside the auth middleware, which would refuse a preflight
    # for want of a key; inside ObserveMiddleware, so preflights are counted and carry the id.
    app.add_middleware(WidgetCorsMiddleware)
    # Added last, so outermost: refusals by the auth and body-limit middlewares are counted,
    # carry the request id, and their log records too.
    app.add_middleware(ObserveMiddleware)
    # Log records made while serving a request carry its id, however logging is configured.
    log_setup.install_record_factory()
    return app
