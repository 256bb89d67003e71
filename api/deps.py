"""Annotated dependencies: routes get the process's Services without touching globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ingest.jobs import Worker
from rag.services import Services


# `async def` although they do no I/O: FastAPI runs a plain `def` dependency in its thread
# pool, a thread hop (tenths of a millisecond, more under load) on every request.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_worker(request: Request) -> Worker | None:
    worker: Worker | None = request.app.state.worker
    return worker


ServicesDep = Annotated[Services, Depends(get_services)]
WorkerDep = Annotated[Worker | None, Depends(get_worker)]
