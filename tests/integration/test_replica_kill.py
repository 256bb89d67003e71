"""Two API replicas (`rag serve`, built-in worker off) and two `rag worker` processes on one
PostgreSQL database and one Redis take uploads, searches and asks at both replicas while one of
them is SIGKILLed every 20-40 s (an API replica and a worker in turn) and started again on the
same port with the same configuration. Afterwards, drained:

- every accepted upload (202, or 200 for a retry) is ready, or failed for its bytes (the broken
  PDFs among them); a failure of the machinery (a killed worker given up on, a stored file
  another process could not find, a database error: bench/harness/checks.py
  INFRASTRUCTURE_REASONS) counts as a lost document, and there must be none;
- nothing was ingested twice: one document per sha256, each chunk (document, version,
  ordinal) once, chunk_count chunks per ready document;
- each replica's index holds exactly the chunk ids of the ready documents;
- no request failed unless the replica serving it was killed while it was in flight.

The harness (bench/harness) is shared with bench/replica_kill.py, which runs it for longer and
measures. RAG_TEST_REPLICA_KILL_S sets the length of the traffic (default 150 s; the whole test
takes about three minutes on two cores).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.harness import ClusterConfig, run_replica_kill, summary
from tests.conftest import REDIS_URL, postgres_reason, postgres_schema, redis_reason

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
DURATION_S = float(os.environ.get("RAG_TEST_REPLICA_KILL_S", "150"))


def test_replicas_and_workers_killed_mid_flight(tmp_path: Path) -> None:
    reason = postgres_reason() or redis_reason()
    if reason:
        pytest.skip(reason)
    with postgres_schema("replica_kill") as database_url:
        result = run_replica_kill(
            tmp_path,
            ClusterConfig(database_url=database_url, redis_url=REDIS_URL, apis=2, workers=2),
            duration_s=DURATION_S,
            kill_every=(20.0, 40.0),
        )
    print(summary(result))
    assert result["lost"] == [], result["lost"]
    assert result["problems"] == [], result["problems"]
    assert result["failed_not_excused"] == 0, result["not_excused_examples"]
    # The run did what it is for: both kinds of process were killed, work was in flight, and
    # documents of both outcomes went through.
    assert result["kills_by_role"].get("api", 0) >= 1, result["kill_log"]
    assert result["kills_by_role"].get("worker", 0) >= 1, result["kill_log"]
    assert result["kills_with_work_in_flight"] >= 1, result["kill_log"]
    assert result["documents"].get("ready", 0) > 0 and result["accepted_broken"] > 0, result
