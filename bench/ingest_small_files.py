"""Many small files through the HTTP API: documents/s and chunks/s against raw encode (issue 14).

    .venv/bin/python bench/ingest_small_files.py [--files 2000] [--clients 4] [--seed 14]
        [--service-batch-size N] [--models .models] [--keep]
        [--json-out var/bench/ingest_small_files.json]

Generates --files small Chinese text files (300-800 characters, deterministic from --seed,
assembled from sentence pools so that no two chunks share a text: identical text is embedded
once and would flatter the figure), starts `rag serve` as a real process with the offline
Chinese model m3e-small and Qwen's tokenizer (the quickstart's configuration, with the
service's own embedding batch size unless --service-batch-size sets RAG_EMBEDDING__BATCH_SIZE),
uploads every file over HTTP from --clients concurrent clients and waits until every document
is ready or failed.

    ours  chunks stored / seconds from the first upload to the last document settled
    raw   the same chunk texts (read back from the service's SQLite, as embedded: heading path
          included) through SentenceTransformer(m3e-small).encode(texts, batch_size=64), in this
          process after the service stopped, with the same torch thread count
    ratio ours chunks/s / raw chunks/s                                            target >= 0.8

Uploading overlaps ingestion, as it does for a user, so the service's HTTP work is part of
"ours". A benchmark measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from processes import free_port, wait_until_up  # noqa: E402

from rag.core.config import EmbeddingSettings  # noqa: E402
from rag.generation.local_server import stop  # noqa: E402

BATCH_SIZE = 64  # the baseline's encode batch size

# Sentence pools of office-handbook prose; a sentence is one pick from each, so 2,000 files
# of 5-15 sentences repeat a whole sentence rarely and a whole chunk practically never.
TIMES = (
    "每个季度初", "在系统升级之前", "遇到紧急故障时", "每周一上午", "收到客户投诉以后",
    "在合同签订以前", "年度审计期间", "夜间维护窗口内", "节假日前后", "新版本发布当天",
    "月底结账之前", "搬迁机房期间", "接到上级通知后", "试运行阶段", "项目验收之前",
)  # fmt: skip
SUBJECTS = (
    "公司的运维团队", "新入职的员工", "客服中心", "财务部门", "各地分支机构", "项目负责人",
    "信息安全小组", "采购专员", "技术支持工程师", "人力资源部", "产品经理", "数据中心值班人员",
    "法务顾问", "培训讲师", "销售团队", "仓储管理员", "行政办公室", "质量管理部",
)  # fmt: skip
ACTIONS = (
    "应当核对服务器的备份记录", "需要提交书面的变更申请", "必须在工单系统中登记处理进度",
    "会重新评估供应商的交付能力", "负责检查网络设备的运行状态", "要及时更新知识库中的操作手册",
    "可以申请临时的访问权限", "应该向直属主管报告异常情况", "需要组织一次内部培训",
    "会抽查报销单据的完整性", "要确认客户资料已经脱敏", "应当把测试结果归档保存",
    "负责协调跨部门的资源", "需要重新设置账户密码", "会统计本月的加班时长",
    "要检查消防通道是否畅通", "应当复核采购合同中的付款条款", "需要更新员工的社保信息",
    "会发布新的考勤制度说明", "要检查打印机和复印机的耗材",
)  # fmt: skip
REASONS = (
    "以免重要数据在迁移过程中丢失", "从而缩短平均故障恢复时间", "这样可以减少重复沟通带来的成本",
    "避免同一问题被多次上报", "确保每一笔支出都有据可查", "以便审计人员追溯责任",
    "防止未经授权的人员接触敏感信息", "让新同事尽快熟悉工作流程", "保证服务水平协议得到遵守",
    "减少因为疏忽造成的损失", "使客户的等待时间不超过承诺的期限", "为下一年度的预算编制提供依据",
)  # fmt: skip
FACTS = (
    "根据第{a}版管理办法，相关费用的报销上限为{b}元。",
    "去年共有{a}起类似事件被记录在案，其中{b}起在两小时内得到解决。",
    "目前该流程平均需要{a}个工作日，目标是缩短到{b}个工作日以内。",
    "如有疑问，请拨打内线电话{a}{b}转技术支持。",
    "本制度自{a}年{b}月起执行，此前的规定同时废止。",
    "系统每天凌晨{a}点自动生成报表，保留最近{b}天的数据。",
)  # fmt: skip
TOPICS = (
    "差旅报销", "账号与权限", "数据备份", "设备采购", "客户投诉处理", "信息安全", "考勤与休假",
    "合同管理", "机房巡检", "新员工入职", "办公用品领用", "软件版本发布",
)  # fmt: skip


def make_texts(n: int, seed: int) -> list[str]:
    """n documents of 300-800 characters: a title line, then paragraphs of 2-4 sentences."""
    rng = random.Random(seed)

    def sentence() -> str:
        if rng.random() < 0.25:
            fact = rng.choice(FACTS)
            return fact.format(a=rng.randint(2, 2025), b=rng.randint(1, 999))
        time_, subject, action = rng.choice(TIMES), rng.choice(SUBJECTS), rng.choice(ACTIONS)
        return f"{time_}，{subject}{action}，{rng.choice(REASONS)}。"

    texts = []
    for i in range(n):
        target = rng.randint(300, 800)
        parts = [f"{rng.choice(TOPICS)}说明（第{i + 1}号）\n\n"]
        size = len(parts[0])
        while size < target:
            paragraph = "".join(sentence() for _ in range(rng.randint(2, 4))) + "\n\n"
            parts.append(paragraph)
            size += len(paragraph)
        texts.append("".join(parts)[:target].rstrip() + "\n")
    return texts


# --- the service ------------------------------------------------------------------------------


def start_service(
    data_dir: Path, models: Path, port: int, log: Path, batch_size: int | None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RAG_DATA_DIR": str(data_dir),
        "RAG_PORT": str(port),
        "RAG_EMBEDDING__MODEL": str(models / "m3e-small"),
        "RAG_TOKENIZER__PATH": str(models / "qwen.tiktoken"),
        "RAG_LLM__BASE_URL": "http://127.0.0.1:9/v1",  # not asked: nothing generates here
        "RAG_SECURITY__REQUESTS_PER_MINUTE": str(10**7),
        "RAG_LOG_LEVEL": "WARNING",
        "TQDM_DISABLE": "1",
    }
    if batch_size is not None:
        env["RAG_EMBEDDING__BATCH_SIZE"] = str(batch_size)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "serve"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def upload_all(api: str, kb: str, files: list[Path], clients: int) -> float:
    """Upload every file from `clients` threads, each with its own connection; seconds taken."""
    local = threading.local()

    def one(path: Path) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=api, timeout=120)
        response = local.client.post(
            f"/v1/knowledge-bases/{kb}/documents",
            files={"file": (path.name, path.read_bytes(), "text/plain")},
        )
        if response.status_code != 202:
            raise SystemExit(f"upload of {path.name}: {response.status_code} {response.text}")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, files))
    return time.perf_counter() - started


def wait_settled(api: str, kb: str, n: int, timeout: float) -> dict[str, int]:
    """Poll the knowledge base until n documents are ready or failed; their counts by status."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=api, timeout=30) as client:
        while time.monotonic() < deadline:
            counts: dict[str, int] = client.get(f"/v1/knowledge-bases/{kb}").json()[
                "documents_by_status"
            ]
            if counts.get("ready", 0) + counts.get("failed", 0) >= n:
                return counts
            time.sleep(0.5)  # each poll costs the service a little CPU
    raise SystemExit(f"not settled after {timeout:.0f} s: {counts}")


def stage_seconds(api: str) -> dict[str, dict[str, float]]:
    """Seconds and calls per ingest stage, from the service's /metrics (where the time went)."""
    text = httpx.get(f"{api}/metrics", timeout=30).text
    found: dict[str, dict[str, float]] = {}
    for kind, stage, value in re.findall(
        r'^rag_ingest_stage_duration_seconds_(sum|count)\{stage="(\w+)"\} (\S+)$', text, re.M
    ):
        found.setdefault(stage, {})["seconds" if kind == "sum" else "calls"] = float(value)
    return found


def stored_texts(db: Path, kb: str) -> list[str]:
    """The texts the service embedded for its chunks (text plus heading path, as it does)."""
    from ingest.chunking import Chunk

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT text, heading_path FROM chunks WHERE kb_id = ? ORDER BY seq", (kb,)
        ).fetchall()
    return [
        Chunk(0, text, 1, 1, 0, len(text), tuple(json.loads(path or "[]")), 0).embed_text
        for text, path in rows
    ]


def raw_encode(model_dir: Path, texts: list[str]) -> float:
    """Seconds SentenceTransformer.encode takes for `texts` (after one warm-up batch)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    model.encode(texts[:BATCH_SIZE], batch_size=BATCH_SIZE, show_progress_bar=False)
    started = time.perf_counter()
    model.encode(texts, batch_size=BATCH_SIZE, show_progress_bar=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4, help="concurrent upload clients")
    parser.add_argument("--seed", type=int, default=14)
    default_models = os.environ.get("RAG_TEST_MODELS_DIR") or str(REPO / ".models")
    parser.add_argument("--models", type=Path, default=Path(default_models))
    parser.add_argument("--timeout", type=float, default=7200, help="seconds to wait for ingest")
    parser.add_argument(
        "--json-out", type=Path, default=REPO / "var" / "bench" / "ingest_small_files.json"
    )
    parser.add_argument("--keep", action="store_true", help="keep the files, data dir and log")
    parser.add_argument(
        "--service-batch-size", type=int, help="RAG_EMBEDDING__BATCH_SIZE (default: the service's)"
    )
    args = parser.parse_args()
    if not (args.models / "m3e-small").is_dir():
        raise SystemExit(f"no m3e-small in {args.models}: run `rag models fetch --dest DIR`")

    tmp = Path(tempfile.mkdtemp(prefix="bench-small-files-"))
    corpus = tmp / "files"
    corpus.mkdir()
    texts = make_texts(args.files, args.seed)
    files = []
    for i, text in enumerate(texts):
        path = corpus / f"doc-{i:05d}.txt"
        path.write_text(text, "utf-8")
        files.append(path)
    sizes = sorted(len(t) for t in texts)
    median = sizes[len(sizes) // 2]
    print(f"{len(files)} files, {sizes[0]}-{sizes[-1]} characters (median {median})")

    port = free_port()
    api = f"http://127.0.0.1:{port}"
    data_dir = tmp / "data"
    proc = start_service(data_dir, args.models, port, tmp / "service.log", args.service_batch_size)
    try:
        wait_until_up(f"{api}/readyz", proc, 300)
        with httpx.Client(base_url=api, timeout=30) as client:
            kb = client.post("/v1/knowledge-bases", json={"name": "small-files"}).json()["id"]
        load_start = os.getloadavg()[0]
        started = time.perf_counter()
        upload_s = upload_all(api, kb, files, args.clients)
        counts = wait_settled(api, kb, len(files), args.timeout)
        ours_s = time.perf_counter() - started
        load_end = os.getloadavg()[0]
        stages = stage_seconds(api)
    finally:
        stop(proc, timeout_s=60)
    texts_stored = stored_texts(data_dir / "rag.db", kb)
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    chunks = len(texts_stored)
    distinct = len(set(texts_stored))
    raw_s = raw_encode(args.models / "m3e-small", texts_stored)

    import torch  # loaded by raw_encode: its thread count is the one both sides used

    ours_cps, raw_cps = chunks / ours_s, chunks / raw_s
    service_batch = args.service_batch_size or int(
        os.environ.get("RAG_EMBEDDING__BATCH_SIZE")
        or EmbeddingSettings.model_fields["batch_size"].default
    )
    ratio = ours_cps / raw_cps
    print(
        f"ours  {len(files) / ours_s:7.2f} documents/s  {ours_cps:7.1f} chunks/s  "
        f"({chunks} chunks, {distinct} distinct texts; {ours_s:.1f} s, uploads took "
        f"{upload_s:.1f} s; {counts})"
    )
    print(
        "stages (seconds in the stage / calls): "
        + ", ".join(
            f"{k} {v.get('seconds', 0):.1f}/{v.get('calls', 0):.0f}" for k, v in stages.items()
        )
    )
    print(f"raw   {raw_cps:7.1f} chunks/s  SentenceTransformer.encode(batch_size={BATCH_SIZE})")
    print(f"the service's embedding batch size: {service_batch}")
    print(
        f"ratio {ratio:.3f} (target >= 0.8; {torch.get_num_threads()} torch threads, "
        f"load average {load_start:.2f} -> {load_end:.2f})"
    )
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "files": len(files),
        "clients": args.clients,
        "seed": args.seed,
        "chunks": chunks,
        "distinct_chunk_texts": distinct,
        "statuses": counts,
        "ours_seconds": ours_s,
        "upload_seconds": upload_s,
        "ours_documents_per_s": len(files) / ours_s,
        "ours_chunks_per_s": ours_cps,
        "raw_seconds": raw_s,
        "raw_chunks_per_s": raw_cps,
        "ratio": ratio,
        "service_batch_size": service_batch,
        "stages": stages,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average": [round(load_start, 2), round(load_end, 2)],
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
