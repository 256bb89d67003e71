"""The deployment: PostgreSQL schema, fake upstream, API replicas and workers, and the
load balancer in front of the replicas (see the package docstring)."""

from __future__ import annotations

import contextlib
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from bench.processes import Child, free_port, http_ready, log_ready

REPO = Path(__file__).resolve().parents[2]
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
# What every process sees of the one data volume; `index/` stays each process's own.
SHARED = ("files", "tmp", "quarantine")


@contextlib.contextmanager
def postgres_schema(base_url: str = DEFAULT_POSTGRES_URL, prefix: str = "h") -> Iterator[str]:
    """A database URL whose search_path is a fresh schema, dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base_url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in base_url else "?"
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


# --- the deployment ---------------------------------------------------------------------------


@dataclass
class ClusterConfig:
    database_url: str
    redis_url: str | None
    apis: int = 2
    workers: int = 2
    api_worker_threads: int = 0  # `rag serve`'s built-in worker (0: off, as with replicas)
    worker_threads: int = 2  # threads of each `rag worker`
    embedding_model: str = "fake:64"
    upstream_tokens: int = 24
    lease_s: float = 4.0
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Node:
    name: str
    role: str  # "api" or "worker"
    child: Child
    url: str | None = None


class Cluster:
    """Start with `with Cluster(root, config) as cluster:`; everything is stopped on exit."""

    def __init__(self, root: Path, config: ClusterConfig) -> None:
        self.root = root
        self.config = config
        self.shared = root / "shared"
        self.upstream_port = free_port()
        self.upstream = Child(
            "upstream",
            [
                sys.executable,
                str(REPO / "bench" / "fake_openai.py"),
                "--port",
                str(self.upstream_port),
                "--tokens",
                str(config.upstream_tokens),
            ],
            {**os.environ, "PYTHONUNBUFFERED": "1"},
            root / "logs" / "upstream.log",
            cwd=REPO,
            ready=http_ready(f"http://127.0.0.1:{self.upstream_port}/v1/models"),
        )
        self.apis = [self._api(f"api-{chr(ord('a') + i)}") for i in range(config.apis)]
        self.workers = [self._worker(f"worker-{i + 1}") for i in range(config.workers)]

    @property
    def nodes(self) -> list[Node]:
        return [*self.apis, *self.workers]

    def _env(self, name: str, threads: int) -> dict[str, str]:
        cfg = self.config
        data_dir = self.root / "nodes" / name
        data_dir.mkdir(parents=True, exist_ok=True)
        for entry in SHARED:
            (self.shared / entry).mkdir(parents=True, exist_ok=True)
            link = data_dir / entry
            if not link.is_symlink():
                link.symlink_to(self.shared / entry, target_is_directory=True)
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "RAG_DATA_DIR": str(data_dir),
            "RAG_DATABASE_URL": cfg.database_url,
            "RAG_EMBEDDING__MODEL": cfg.embedding_model,
            "RAG_LLM__BASE_URL": f"http://127.0.0.1:{self.upstream_port}/v1",
            "RAG_LLM__MODEL": "fake",
            "RAG_LLM__MAX_TOKENS": str(cfg.upstream_tokens),
            "RAG_INGEST__WORKERS": str(threads),
            "RAG_INGEST__LEASE_S": str(cfg.lease_s),
            "RAG_INGEST__POLL_INTERVAL_S": "0.2",
            "RAG_INDEX_SYNC_INTERVAL_S": "1",
            # Valid traffic is never refused: the limits are not what is under test.
            "RAG_SECURITY__REQUESTS_PER_MINUTE": "10000000",
            "RAG_SECURITY__CONCURRENT_GENERATIONS": "256",
            **cfg.extra_env,
        }
        if cfg.redis_url:
            env["RAG_CACHE__REDIS_URL"] = cfg.redis_url
            env["RAG_SECURITY__REDIS_URL"] = cfg.redis_url
        return env

    def _api(self, name: str) -> Node:
        port = free_port()
        env = {**self._env(name, self.config.api_worker_threads), "RAG_PORT": str(port)}
        url = f"http://127.0.0.1:{port}"
        child = Child(
            name,
            [sys.executable, "-m", "rag.cli", "serve"],
            env,
            self.root / "logs" / f"{name}.log",
            cwd=REPO,
            ready=http_ready(f"{url}/readyz"),
        )
        return Node(name, "api", child, url)

    def _worker(self, name: str) -> Node:
        env = self._env(name, self.config.worker_threads)
        child = Child(
            name,
            [sys.executable, "-m", "rag.cli", "worker"],
            env,
            self.root / "logs" / f"{name}.log",
            cwd=REPO,
            ready=log_ready("started with"),
        )
        return Node(name, "worker", child)

    def start(self) -> None:
        self.upstream.start(60)
        # The first API applies the migrations; the rest start together once it is up.
        self.apis[0].child.start(180)
        rest = self.nodes[1:]
        for node in rest:
            node.child.spawn()
        for node in rest:
            node.child.wait_ready(180)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.child.stop(15)
        with contextlib.suppress(Exception):
            self.upstream.stop(5)

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def logs(self, chars: int = 2000) -> str:
        return "\n".join(
            f"== {c.name}\n{c.log_tail(chars)}"
            for c in [self.upstream] + [n.child for n in self.nodes]
        )


# --- the load balancer ------------------------------------------------------------------------


class Pool:
    """API replicas that take requests; counts what is in flight on each, by operation."""

    def __init__(self, apis: list[Node]) -> None:
        self._apis = {n.name: n for n in apis}
        self._up = set(self._apis)
        self._incarnation = dict.fromkeys(self._apis, 0)
        self._in_flight: dict[str, Counter[str]] = {name: Counter() for name in self._apis}
        self._lock = threading.Lock()
        self._rng = random.Random(7)

    def acquire(self, op: str) -> tuple[Node, int]:
        """A replica that is up (waiting while none is), and its incarnation."""
        while True:
            with self._lock:
                if self._up:
                    name = self._rng.choice(sorted(self._up))
                    self._in_flight[name][op] += 1
                    return self._apis[name], self._incarnation[name]
            time.sleep(0.05)

    def release(self, node: Node, op: str) -> None:
        with self._lock:
            self._in_flight[node.name][op] -= 1

    def take_out(self, node: Node, wait_s: float = 0.0, prefer: str = "upload") -> int:
        """Stop sending it requests: as soon as it serves a `prefer` request, or after
        `wait_s` as soon as it serves any (waiting `wait_s` more at most). Returns how many
        requests it is serving then."""
        started = time.monotonic()
        while True:
            with self._lock:
                serving = self._in_flight[node.name]
                busy = sum(serving.values())
                waited = time.monotonic() - started
                if serving[prefer] or (busy and waited >= wait_s) or waited >= 2 * wait_s:
                    self._up.discard(node.name)
                    return busy
            time.sleep(0.002)

    def put_back(self, node: Node) -> None:
        with self._lock:
            self._incarnation[node.name] += 1
            self._up.add(node.name)
