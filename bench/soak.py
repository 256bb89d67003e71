"""Soak, measured: one `rag serve` process (built-in worker on, PostgreSQL, Redis) under mixed
upload / search / ask / delete traffic; resident memory and open file descriptors over time.

    .venv/bin/python bench/soak.py [--minutes 30] [--warmup-s 60] [--threads 3]
        [--upload-rate 0.3] [--keep-live 10] [--json-out var/bench/soak.json] [--keep]

Sampled every second after the warm-up: the median RSS of the first fifth of the run against
the last fifth (for 30 minutes: the first six minutes against the last six), the fd count
first and last (and after the drain), the requests by outcome, and what was left queued or
running once the traffic stopped (must be nothing). tests/integration/test_soak.py runs the
same harness (bench/harness) for 150 s and asserts tolerances on these figures. Needs
PostgreSQL (RAG_TEST_POSTGRES_URL) and Redis (RAG_TEST_REDIS_URL), as bench/replica_kill.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import ClusterConfig, report, run_bench, run_soak  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=30.0, help="sampled length")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="traffic before sampling")
    parser.add_argument("--threads", type=int, default=3, help="load threads")
    parser.add_argument("--upload-rate", type=float, default=0.3, help="uploads per second")
    parser.add_argument("--keep-live", type=int, default=10, help="documents deletes leave")
    parser.add_argument("--embedding-model", default="fake:64")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    args = parser.parse_args()

    root, result = run_bench(
        "soak",
        lambda root, database_url, redis: run_soak(
            root,
            ClusterConfig(
                database_url=database_url,
                redis_url=redis,
                apis=1,
                workers=0,
                api_worker_threads=1,
                embedding_model=args.embedding_model,
            ),
            duration_s=args.minutes * 60,
            warmup_s=args.warmup_s,
            threads=args.threads,
            upload_rate=args.upload_rate,
            keep_live=args.keep_live,
        ),
        keep=args.keep,
    )
    headline = (
        f"RSS median first fifth {result['rss_first_fifth_median_mib']} MiB, last fifth "
        f"{result['rss_last_fifth_median_mib']} MiB (x{result['rss_ratio']}); fds "
        f"{result['fds_first']} -> {result['fds_last']} (after drain "
        f"{result.get('fds_after_drain')}); requests {result['requests']}, failed "
        f"{result['failed']}, 5xx {result['server_errors']}; stuck {result['stuck']}; "
        f"problems {len(result['problems']) + len(result['lost'])}"
    )
    report(result, headline, root, keep=args.keep, json_out=args.json_out)


if __name__ == "__main__":
    main()
