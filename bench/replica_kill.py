"""Replicas killed mid-flight, measured: two API replicas and two workers on one PostgreSQL and
one Redis under traffic while one of them is SIGKILLed and restarted every 20-40 s.

    .venv/bin/python bench/replica_kill.py [--minutes 10] [--kill-every 20 40] [--threads 3]
        [--upload-rate 0.3] [--json-out var/bench/replica_kill.json] [--keep]

Prints the counts: uploads (accepted, broken, unanswered), kills (by role, with work in
flight), requests that failed (excused: their replica was killed while they were in flight;
not excused), lost documents and every other violation the checks found (bench/harness;
tests/integration/test_replica_kill.py runs the same harness for 150 s and asserts on it).
Needs PostgreSQL (RAG_TEST_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/
test; a schema of its own, dropped afterwards) and Redis (RAG_TEST_REDIS_URL, default
redis://127.0.0.1:6379/15). Logs stay in the work folder with --keep.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import ClusterConfig, report, run_bench, run_replica_kill  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the traffic")
    parser.add_argument("--kill-every", type=float, nargs=2, default=(20.0, 40.0), metavar="S")
    parser.add_argument("--apis", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=3, help="load threads")
    parser.add_argument("--upload-rate", type=float, default=0.3, help="uploads per second")
    parser.add_argument("--embedding-model", default="fake:64")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    args = parser.parse_args()

    root, result = run_bench(
        "replica_kill",
        lambda root, database_url, redis: run_replica_kill(
            root,
            ClusterConfig(
                database_url=database_url,
                redis_url=redis,
                apis=args.apis,
                workers=args.workers,
                embedding_model=args.embedding_model,
            ),
            duration_s=args.minutes * 60,
            kill_every=(args.kill_every[0], args.kill_every[1]),
            threads=args.threads,
            upload_rate=args.upload_rate,
        ),
        keep=args.keep,
    )
    headline = (
        f"uploads {result['uploads']} (accepted {result['accepted']}), kills {result['kills']}, "
        f"failed requests {result['failed']} (excused {result['failed_excused']}, not excused "
        f"{result['failed_not_excused']}), lost documents {len(result['lost'])}, "
        f"other problems {len(result['problems'])}"
    )
    report(result, headline, root, keep=args.keep, json_out=args.json_out)


if __name__ == "__main__":
    main()
