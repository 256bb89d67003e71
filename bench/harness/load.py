"""Traffic at the API replicas, and the killer."""

from __future__ import annotations

import hashlib
import itertools
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa

from bench.harness.cluster import Cluster, Node, Pool

_VOCABULARY = (
    "知识库 文档 检索 向量 索引 服务器 数据库 备份 恢复 权限 用户 配置 日志 网络 存储 缓存 "
    "队列 任务 进程 线程 内存 磁盘 证书 密钥 接口 请求 响应 超时 重试 版本 升级 安装 卸载 "
    "监控 告警 容器 集群 节点 副本 分片 事务 快照 压缩 加密 解密 认证 授权 审计 报表 模板 "
    "镜像 带宽 延迟 吞吐 负载 均衡 故障 切换"
)
WORDS = tuple(_VOCABULARY.split())
FIXED_QUESTIONS = ("如何恢复备份？", "集群节点故障怎么切换？", "缓存超时如何配置？")


# --- traffic ----------------------------------------------------------------------------------


@dataclass
class Request:
    op: str
    node: str
    started: float
    ended: float
    status: int | None  # None: no HTTP response
    error: str | None = None  # the exception, or the stream's error event
    # The knowledge base had no ready document yet (409 no_ready_documents): the right answer
    # to a question asked before the first upload finished, not a failure.
    nothing_ready: bool = False

    @property
    def failed(self) -> bool:
        if self.nothing_ready:
            return False
        return self.error is not None or self.status is None or self.status >= 400


@dataclass
class Upload:
    name: str
    data: bytes
    good: bool  # False: a broken PDF, which must fail with a reason about its bytes
    key: str  # Idempotency-Key, the same on every retry
    doc_ids: set[str] = field(default_factory=set)  # from every accepted attempt
    attempts: int = 0
    deleted: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def accepted(self) -> bool:
        return bool(self.doc_ids)


@dataclass
class Mix:
    upload: float = 0.3
    search: float = 0.4
    ask: float = 0.3
    delete: float = 0.0
    broken_every: int = 10  # every n-th upload is a broken PDF (0: none)
    stream_share: float = 0.25  # of asks: streamed
    # Uploads per second at most (over the run so far, after a first `upload_burst`): the
    # workers must keep up, or the queue only grows and the drain never ends.
    upload_rate: float = 0.3
    upload_burst: int = 5
    keep_live: int = 0  # deletes leave at least this many accepted documents


class Traffic:
    """Closed-loop load from `threads` threads until `deadline` (time.monotonic()) or
    `max_requests` requests; uploads stop at `max_uploads`."""

    def __init__(
        self,
        pool: Pool,
        kb_id: str,
        *,
        threads: int,
        deadline: float,
        max_requests: int,
        max_uploads: int,
        mix: Mix,
        seed: int,
        think_s: float = 0.02,
        timeout_s: float = 60.0,
    ) -> None:
        self.pool = pool
        self.kb_id = kb_id
        self.threads = threads
        self.deadline = deadline
        self.max_requests = max_requests
        self.max_uploads = max_uploads
        self.mix = mix
        self.seed = seed
        self.think_s = think_s
        self.timeout_s = timeout_s
        self.requests: list[Request] = []
        self.uploads: list[Upload] = []
        self._issued = 0
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._tag = uuid.uuid4().hex[:8]
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        self._started = time.monotonic()
        for n in range(self.threads):
            t = threading.Thread(target=self._loop, args=(n,), name=f"load-{n}", daemon=True)
            t.start()
            self._workers.append(t)

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> None:
        for t in self._workers:
            t.join()

    def _take(self) -> bool:
        with self._lock:
            if self._issued >= self.max_requests:
                return False
            self._issued += 1
            return True

    def _loop(self, n: int) -> None:
        rng = random.Random(self.seed * 1000 + n)
        clients: dict[tuple[str, int], httpx.Client] = {}
        try:
            while not self._stop.is_set() and time.monotonic() < self.deadline and self._take():
                op = self._choose(rng)
                if op == "upload":
                    self._upload(rng, clients, n)
                elif op == "delete":
                    self._delete(rng, clients)
                elif op == "search":
                    self._call(clients, "search", "POST", "/search", self._search_body(rng))
                else:
                    self._ask(rng, clients)
                time.sleep(self.think_s)
        finally:
            for c in clients.values():
                c.close()

    def _choose(self, rng: random.Random) -> str:
        mix = self.mix
        op = rng.choices(
            ("upload", "search", "ask", "delete"), (mix.upload, mix.search, mix.ask, mix.delete)
        )[0]
        with self._lock:
            uploads = len(self.uploads)
            live = sum(1 for u in self.uploads if u.accepted and not u.deleted)
        allowed = mix.upload_burst + mix.upload_rate * (time.monotonic() - self._started)
        if op == "upload" and (uploads >= self.max_uploads or uploads >= allowed):
            op = "search"
        if op == "delete" and live <= max(0, mix.keep_live):
            op = "search"
        return op

    # -- one request -------------------------------------------------------------------------

    def _client(
        self, clients: dict[tuple[str, int], httpx.Client], node: Node, inc: int
    ) -> httpx.Client:
        key = (node.name, inc)
        if key not in clients:
            for old in [k for k in clients if k[0] == node.name]:
                clients.pop(old).close()
            clients[key] = httpx.Client(base_url=f"{node.url}", timeout=self.timeout_s)
        return clients[key]

    def _call(
        self,
        clients: dict[tuple[str, int], httpx.Client],
        op: str,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        files: dict[str, tuple[str, bytes]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response | None:
        started = time.monotonic()
        node, inc = self.pool.acquire(op)
        response: httpx.Response | None = None
        error: str | None = None
        try:
            client = self._client(clients, node, inc)
            url = f"/v1/knowledge-bases/{self.kb_id}{path}"
            response = client.request(method, url, json=body, files=files, headers=headers)
            if op == "ask-stream" and response.status_code == 200:
                text = response.text
                if "event: error" in text or "event: done" not in text:
                    error = "stream ended without done: " + text[-300:]
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self.pool.release(node, op)
        nothing_ready = (
            error is None
            and response is not None
            and response.status_code == 409
            and '"no_ready_documents"' in response.text
        )
        record = Request(
            op,
            node.name,
            started,
            time.monotonic(),
            response.status_code if response is not None else None,
            error
            if error or response is None or response.status_code < 400 or nothing_ready
            else f"{response.status_code}: {response.text[:300]}",
            nothing_ready=nothing_ready,
        )
        with self._lock:
            self.requests.append(record)
        return response if error is None else None

    def _upload(
        self, rng: random.Random, clients: dict[tuple[str, int], httpx.Client], n: int
    ) -> None:
        with self._lock:
            number = len(self.uploads)
            every = self.mix.broken_every
            good = not every or number % every != every - 1
            upload = Upload(
                name=f"{self._tag}-{n}-{number}.{'txt' if good else 'pdf'}",
                data=self._document(rng, number) if good else self._broken_pdf(rng, number),
                good=good,
                key=f"{self._tag}-{number}",
            )
            self.uploads.append(upload)
        # A client whose request got no answer retries it, with the same Idempotency-Key.
        for attempt in range(4):
            upload.attempts += 1
            response = self._call(
                clients,
                "upload",
                "POST",
                "/documents",
                files={"file": (upload.name, upload.data)},
                headers={"Idempotency-Key": upload.key},
            )
            if response is not None and response.status_code in (200, 202):
                with self._lock:
                    upload.doc_ids.add(response.json()["id"])
                return
            if time.monotonic() > self.deadline + 30:
                return
            time.sleep(0.5 * (attempt + 1))

    def _delete(self, rng: random.Random, clients: dict[tuple[str, int], httpx.Client]) -> None:
        with self._lock:
            live = [u for u in self.uploads if u.accepted and not u.deleted]
            if not live:
                return
            victim = rng.choice(live)
            victim.deleted = True  # claimed by this thread
        doc_id = next(iter(victim.doc_ids))
        response = self._call(clients, "delete", "DELETE", f"/documents/{doc_id}")
        if response is None or response.status_code != 204:
            with self._lock:
                victim.deleted = False  # not known to be gone; another try may come

    def _ask(self, rng: random.Random, clients: dict[tuple[str, int], httpx.Client]) -> None:
        if rng.random() < 0.2:
            question = rng.choice(FIXED_QUESTIONS)  # repeated: answer-cache hits
        else:
            a, b = rng.sample(WORDS, 2)
            question = f"{a}和{b}有什么关系？"
        stream = rng.random() < self.mix.stream_share
        body = {"question": question, "top_k": 4, "stream": stream}
        self._call(clients, "ask-stream" if stream else "ask", "POST", "/ask", body)

    def _search_body(self, rng: random.Random) -> dict[str, Any]:
        with self._lock:
            names = [u.name for u in self.uploads[-50:] if u.good]
        if names and rng.random() < 0.3:
            query = f"编号 {rng.choice(names)}"
        else:
            query = " ".join(rng.sample(WORDS, 2))
        return {"query": query, "top_k": 5}

    def _document(self, rng: random.Random, number: int) -> bytes:
        lines = [f"# 文档 {self._tag}-{number}", f"编号 {self._tag}-{number}。"]
        for i in range(rng.choice((3, 12, 40, 120))):
            a, b, c = rng.sample(WORDS, 3)
            lines.append(f"{a}与{b}的{c}说明，第 {i} 条，记录 {number}-{i}。")
        return "\n".join(lines).encode()

    def _broken_pdf(self, rng: random.Random, number: int) -> bytes:
        junk = bytes(rng.randrange(256) for _ in range(256))
        return b"%PDF-1.7\n" + f"{self._tag}-{number}\n".encode() + junk

    # -- figures -----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for r in self.requests:
            out[r.op] += 1
            out[f"{r.op} {r.status if r.status is not None else 'no-response'}"] += 1
        return dict(sorted(out.items()))


# --- the killer -------------------------------------------------------------------------------


@dataclass
class Kill:
    node: str
    role: str
    at: float
    back_at: float = 0.0
    busy: int = 0  # requests in flight (API) or jobs running (worker) at the kill


class Killer:
    """Every `every` seconds (a uniform draw) SIGKILL an API replica or a worker, alternately
    (each role's processes in turn), and start it again on the same port with the same
    configuration. An API replica is killed while it serves an upload when one comes within
    `busy_wait_s` (else while it serves any request), a worker while it runs a job when one
    comes within `busy_wait_s`."""

    def __init__(
        self,
        cluster: Cluster,
        pool: Pool,
        database_url: str,
        *,
        every: tuple[float, float],
        deadline: float,
        seed: int,
        busy_wait_s: float = 5.0,
    ) -> None:
        self.cluster = cluster
        self.pool = pool
        self.engine = sa.create_engine(database_url, pool_size=1)
        self.every = every
        self.deadline = deadline
        self.rng = random.Random(seed)
        self.busy_wait_s = busy_wait_s
        self.kills: list[Kill] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="killer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()

    def _run(self) -> None:
        roles = ["api", "worker"]
        self.rng.shuffle(roles)
        # Each role's processes in a shuffled round: every one of them gets killed in turn.
        turns: dict[str, Iterator[Node] | None] = {}
        for role, nodes in (("api", self.cluster.apis), ("worker", self.cluster.workers)):
            order = list(nodes)
            self.rng.shuffle(order)
            turns[role] = itertools.cycle(order) if order else None
        for role in itertools.cycle(roles):
            wait = self.rng.uniform(*self.every)
            if time.monotonic() + wait > self.deadline or self._stop.wait(wait):
                return
            turn = turns[role]
            if turn is None:
                continue
            try:
                self._kill(next(turn))
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return

    def _running_jobs(self, pid: int) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM jobs WHERE status = 'running' AND worker_id LIKE :p"
                    ),
                    {"p": f"%:{pid}:%"},
                ).scalar_one()
            )

    def _kill(self, node: Node) -> None:
        busy = 0
        if node.role == "api":
            busy = self.pool.take_out(node, self.busy_wait_s)
        else:
            pid = node.child.pid
            until = time.monotonic() + self.busy_wait_s
            while pid is not None and time.monotonic() < until:
                busy = self._running_jobs(pid)
                if busy:
                    break
                time.sleep(0.05)
        kill = Kill(node.name, node.role, time.monotonic(), busy=busy)
        node.child.kill()
        self.kills.append(kill)
        node.child.start(180)
        kill.back_at = time.monotonic()
        if node.role == "api":
            self.pool.put_back(node)


def excused(request: Request, kills: list[Kill]) -> bool:
    """A failure is excused when its replica was SIGKILLed while the request was in flight."""
    return any(k.node == request.node and request.started <= k.at <= request.ended for k in kills)
