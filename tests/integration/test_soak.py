"""A bounded soak: one `rag serve` process (its built-in worker on) on PostgreSQL and Redis takes
mixed upload / search / ask / delete traffic; after a warm-up its resident memory and open file
descriptors are sampled every second. It must stay flat and end clean:

- RSS: the median of the last fifth of the samples at most RSS_FACTOR times the median of the
  first fifth (the warm-up is not sampled: imports, pools and caches fill there);
- file descriptors: the median of the last fifth at most FD_SLACK above the first fifth's, and
  no more than that above it once the traffic has stopped and the queue drained;
- nothing stuck once drained (no document queued or processing, no job queued or running), no
  request failed (no 5xx, no dropped connection; the load only sends valid requests), every
  document ready or failed for its bytes, none ingested twice, the index equal to SQL.

Tolerances, not timings. bench/soak.py runs the same harness for 30 minutes and reports the
figures (bench/README.md); RAG_TEST_SOAK_S sets the sampled length here (default 150 s after a
30 s warm-up: about three and a half minutes on two cores).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.harness import ClusterConfig, run_soak, summary
from tests.conftest import REDIS_URL, postgres_reason, postgres_schema, redis_reason

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
DURATION_S = float(os.environ.get("RAG_TEST_SOAK_S", "150"))
WARMUP_S = 30.0
# A leak of a few KiB per request would not show within minutes; these bounds catch the gross
# ones (every request's buffers kept, one connection or file left open per upload) without
# failing on allocator noise. The 30-minute bench/soak.py is the finer measurement.
RSS_FACTOR = 1.2
FD_SLACK = 8


def test_soak_one_process(tmp_path: Path) -> None:
    reason = postgres_reason() or redis_reason()
    if reason:
        pytest.skip(reason)
    with postgres_schema("soak") as database_url:
        result = run_soak(
            tmp_path,
            ClusterConfig(
                database_url=database_url,
                redis_url=REDIS_URL,
                apis=1,
                workers=0,
                api_worker_threads=1,
            ),
            duration_s=DURATION_S,
            warmup_s=WARMUP_S,
        )
    print(summary(result))
    assert result["stuck"] == {"documents": 0, "jobs": 0}, result["stuck"]
    assert result["failed"] == 0 and result["server_errors"] == 0, result["not_excused_examples"]
    assert result["lost"] == [], result["lost"]
    assert result["problems"] == [], result["problems"]
    assert result["deleted"] > 0 and result["documents"].get("ready", 0) > 0, result
    first, last = result["rss_first_fifth_median_mib"], result["rss_last_fifth_median_mib"]
    assert last <= first * RSS_FACTOR, (first, last)
    fds = result["fds_first_fifth_median"]
    assert result["fds_last_fifth_median"] <= fds + FD_SLACK, result
    assert result["fds_after_drain"] <= fds + FD_SLACK, result
