"""Locust users for bench/load_api.py: closed-loop POSTs to /search or /ask of one knowledge base.

Run by load_api.py as its own process (`locust --headless -u N -r N`), so the load comes from
a second process over loopback. Settings come from the environment:

  BENCH_KB         knowledge base id
  BENCH_ENDPOINT   "search" or "ask"
  BENCH_QUESTIONS  a file with one question per line (cycled, a different start per user)
  BENCH_OUT        where to write every request's end time and latency as JSON on exit

Locust's own statistics round latencies to whole milliseconds; the request hook below keeps
the exact float milliseconds, and load_api.py computes the percentiles from them.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant, events, task

KB = os.environ.get("BENCH_KB", "")
ENDPOINT = os.environ.get("BENCH_ENDPOINT", "search")
QUESTIONS = [
    line.strip()
    for line in Path(os.environ.get("BENCH_QUESTIONS", os.devnull)).read_text("utf-8").splitlines()
    if line.strip()
] or ["年假有多少天？"]
OUT = os.environ.get("BENCH_OUT")

_samples: list[tuple[float, float]] = []  # (wall-clock end, latency ms) of successful requests
_errors: list[str] = []
_users = itertools.count()


@events.request.add_listener
def _record(response_time: float, exception: BaseException | None, **_: Any) -> None:
    if exception is None:
        _samples.append((time.time(), float(response_time)))
    elif len(_errors) < 1000:
        _errors.append(repr(exception)[:200])


@events.quitting.add_listener
def _dump(**_: Any) -> None:
    if OUT:
        Path(OUT).write_text(json.dumps({"samples": _samples, "errors": _errors}))


class Caller(FastHttpUser):
    wait_time = constant(0)  # closed loop: concurrency = number of users

    def on_start(self) -> None:
        start = next(_users) * 7
        self.questions = itertools.islice(itertools.cycle(QUESTIONS), start, None)

    @task
    def call(self) -> None:
        question = next(self.questions)
        if ENDPOINT == "ask":
            body: dict[str, Any] = {"question": question}
        else:
            body = {"query": question, "top_k": 5}
        path = f"/v1/knowledge-bases/{KB}/{ENDPOINT}"
        with self.client.post(path, json=body, name=ENDPOINT, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
