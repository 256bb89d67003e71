"""Annotated dependencies: routes get the process's Services without touching globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ingest.jobs import Worker
from rag.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_worker(request: Request) -> Worker | None:
    worker: Worker | None = request.app.state.worker
    return worker


ServicesDep = Annotated[Services, Depends(get_services)]
WorkerDep = Annotated[Worker | None, Depends(get_worker)]
