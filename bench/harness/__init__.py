"""A multi-process deployment on loopback, traffic against it, a killer, and the checks.

Shared by tests/integration/test_replica_kill.py, tests/integration/test_soak.py,
bench/replica_kill.py and bench/soak.py (import it as `bench.harness` with the repository root
on sys.path). Only the public behaviour is used: HTTP, the rows in SQL, processes' exits.

The deployment (`Cluster`) is what a multi-replica installation runs, as docker-compose.yml
lays it out: `rag serve` API replicas (their built-in worker off, or on for a single-process
setup) and `rag worker` processes, all on one PostgreSQL database and one Redis (answer cache
and per-key limits), with a fake OpenAI-compatible upstream (bench/fake_openai.py) and the
deterministic fake embedder. The data volume is shared as in docker-compose.yml, the index
caches are not: every process has a data dir of its own whose `files`, `tmp` and `quarantine`
are links to one shared folder (a worker reads what an API stored), while its `index/` is its
own (docs/architecture.md: an index is a per-process cache derived from SQL; two live
processes writing snapshots into one folder would overwrite each other's files; compose gives
each worker its own index volume likewise). A restarted process gets its old data dir back,
as a container gets its volumes.

`Pool` is the load balancer: requests go to API replicas that are up; the killer takes a
replica out of the pool (at a moment it serves an upload if one comes within a few seconds,
else any request, so the kill cuts one off) before it kills it and puts it back once /readyz
answers again, and every restart is a new incarnation, so the load opens fresh connections to
it. A worker is killed while it holds a running job when one
comes within a few seconds (found in SQL by its pid in jobs.worker_id).

Failures are judged strictly (`excused`): a request that got no HTTP response, a 5xx, or a
stream that ended in an `error` event is excused only when the replica serving it was SIGKILLed
while that request was in flight. Everything else counts, 4xx included: the load only sends
valid requests.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.harness.checks import (
    INFRASTRUCTURE_REASONS,
    Sampler,
    check_documents,
    check_indexes,
    drain,
    fd_count,
    is_infrastructure_reason,
)
from bench.harness.cluster import (
    DEFAULT_POSTGRES_URL,
    DEFAULT_REDIS_URL,
    Cluster,
    ClusterConfig,
    Node,
    Pool,
    postgres_schema,
)
from bench.harness.load import Kill, Killer, Mix, Request, Traffic, Upload, excused

__all__ = [
    "DEFAULT_POSTGRES_URL",
    "DEFAULT_REDIS_URL",
    "INFRASTRUCTURE_REASONS",
    "Cluster",
    "ClusterConfig",
    "Kill",
    "Killer",
    "Mix",
    "Node",
    "Pool",
    "Request",
    "Traffic",
    "Upload",
    "check_documents",
    "check_indexes",
    "drain",
    "excused",
    "is_infrastructure_reason",
    "postgres_schema",
    "report",
    "run_bench",
    "run_replica_kill",
    "run_soak",
    "summary",
]

# --- the two runs -----------------------------------------------------------------------------


def _create_kb(node: Node, name: str) -> str:
    response = httpx.post(f"{node.url}/v1/knowledge-bases", json={"name": name}, timeout=60)
    response.raise_for_status()
    return str(response.json()["id"])


def _failures(requests: list[Request], kills: list[Kill]) -> dict[str, Any]:
    failed = [r for r in requests if r.failed]
    excused_ones = [r for r in failed if excused(r, kills)]
    not_excused = [r for r in failed if not excused(r, kills)]
    return {
        "requests": len(requests),
        "failed": len(failed),
        "failed_excused": len(excused_ones),
        "failed_not_excused": len(not_excused),
        "server_errors": sum(1 for r in requests if r.status is not None and r.status >= 500),
        "not_excused_examples": [
            f"{r.op} on {r.node} at {r.started:.1f}-{r.ended:.1f}: {r.status} {r.error}"
            for r in not_excused[:10]
        ],
    }


def _finish(
    cluster: Cluster, traffic: Traffic, kb_id: str, drain_timeout_s: float
) -> dict[str, Any]:
    """Drain, then check SQL and every replica's index; collects the problems."""
    left, waited = drain(cluster.config.database_url, kb_id, drain_timeout_s)
    time.sleep(2.5)  # a couple of index sync intervals on every replica
    docs = check_documents(cluster.config.database_url, kb_id, traffic.uploads)
    problems = list(docs["problems"])
    if any(left.values()):
        problems.append(f"not drained after {waited:.0f} s: {left}")
    problems += check_indexes(cluster.apis, kb_id, docs["ready_chunks"])
    problems += [f"{n.name} exited on its own" for n in cluster.nodes if not n.child.alive()]
    return {
        **{k: v for k, v in docs.items() if k != "problems"},
        "drain_s": round(waited, 1),
        "stuck": left,
        "problems": problems,
    }


def run_replica_kill(
    root: Path,
    config: ClusterConfig,
    *,
    duration_s: float,
    kill_every: tuple[float, float] = (20.0, 40.0),
    threads: int = 3,
    think_s: float = 0.05,
    upload_rate: float = 0.3,
    seed: int = 14,
    max_uploads: int = 2000,
    drain_timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Traffic at every API replica while the killer SIGKILLs replicas and workers; then
    drain and check. The result's `problems` and `lost` are empty when all went well."""
    started = time.monotonic()
    with Cluster(root, config) as cluster:
        kb_id = _create_kb(cluster.apis[0], f"replica-kill-{uuid.uuid4().hex[:6]}")
        pool = Pool(cluster.apis)
        deadline = time.monotonic() + duration_s
        traffic = Traffic(
            pool,
            kb_id,
            threads=threads,
            deadline=deadline,
            max_requests=int(duration_s * 100),
            max_uploads=max_uploads,
            mix=Mix(upload_rate=upload_rate),
            seed=seed,
            think_s=think_s,
        )
        killer = Killer(
            cluster, pool, config.database_url, every=kill_every, deadline=deadline, seed=seed
        )
        traffic.start()
        killer.start()
        traffic.join()
        killer.stop()
        result = _finish(cluster, traffic, kb_id, drain_timeout_s)
    failures = _failures(traffic.requests, killer.kills)
    result["problems"] += [f"killer: {e}" for e in killer.errors]
    return {
        "duration_s": round(time.monotonic() - started, 1),
        "load_s": duration_s,
        "kills": len(killer.kills),
        "kills_by_role": dict(Counter(k.role for k in killer.kills)),
        "kills_with_work_in_flight": sum(1 for k in killer.kills if k.busy),
        "kill_log": [
            f"{k.node} at {k.at - started:.1f}s (busy {k.busy}), back after {k.back_at - k.at:.1f}s"
            for k in killer.kills
        ],
        **failures,
        "by_op": traffic.counts(),
        **result,
    }


def run_soak(
    root: Path,
    config: ClusterConfig,
    *,
    duration_s: float,
    warmup_s: float = 20.0,
    threads: int = 3,
    think_s: float = 0.05,
    seed: int = 15,
    upload_rate: float = 0.3,
    keep_live: int = 10,
    sample_every_s: float = 1.0,
    drain_timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Mixed upload/search/ask/delete traffic at one API process (its built-in worker on):
    RSS and open fds sampled after a warm-up, then drained and checked."""
    started = time.monotonic()
    with Cluster(root, config) as cluster:
        api = cluster.apis[0]
        kb_id = _create_kb(api, f"soak-{uuid.uuid4().hex[:6]}")
        pool = Pool(cluster.apis)
        deadline = time.monotonic() + warmup_s + duration_s
        traffic = Traffic(
            pool,
            kb_id,
            threads=threads,
            deadline=deadline,
            max_requests=int((warmup_s + duration_s) * 100),
            max_uploads=10**9,
            mix=Mix(
                upload=0.25,
                search=0.35,
                ask=0.25,
                delete=0.15,
                upload_rate=upload_rate,
                keep_live=keep_live,
            ),
            seed=seed,
            think_s=think_s,
        )
        sampler = Sampler(lambda: api.child.pid, sample_every_s)
        traffic.start()
        time.sleep(warmup_s)
        sampler.start()
        traffic.join()
        sampler.stop()
        result = _finish(cluster, traffic, kb_id, drain_timeout_s)
        pid = api.child.pid
        after = {"fds_after_drain": fd_count(pid)} if pid and api.child.alive() else {}
    return {
        "duration_s": round(time.monotonic() - started, 1),
        "load_s": duration_s,
        "warmup_s": warmup_s,
        **sampler.figures(),
        **after,
        **_failures(traffic.requests, []),
        "by_op": traffic.counts(),
        **result,
    }


def summary(result: dict[str, Any]) -> str:
    """The figures, one per line (lists last)."""
    scalars = {k: v for k, v in result.items() if not isinstance(v, list)}
    lists = {k: v for k, v in result.items() if isinstance(v, list)}
    lines = [f"{k:>28}: {v}" for k, v in scalars.items()]
    for k, v in lists.items():
        lines.append(f"{k:>28}: {len(v)}")
        lines += [f"{'':>30}{item}" for item in v[:20]]
    return "\n".join(lines)


def run_bench(
    name: str, run: Callable[[Path, str, str], dict[str, Any]], *, keep: bool
) -> tuple[Path, dict[str, Any]]:
    """A bench script's run: `run(work folder, database URL in a fresh schema, Redis URL)`
    against RAG_TEST_POSTGRES_URL and RAG_TEST_REDIS_URL; the folder is removed unless `keep`."""
    root = Path(tempfile.mkdtemp(prefix=f"{name.replace('_', '-')}-"))
    postgres = os.environ.get("RAG_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    redis = os.environ.get("RAG_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    try:
        with postgres_schema(postgres, f"{name}_bench") as database_url:
            return root, run(root, database_url, redis)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def report(
    result: dict[str, Any], headline: str, root: Path, *, keep: bool, json_out: Path | None
) -> None:
    """Print a bench run's figures and its one-line headline; write them as JSON if asked."""
    print(summary(result))
    print(f"\n{headline}")
    if keep:
        print(f"logs: {root / 'logs'}")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
