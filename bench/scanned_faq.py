"""Retrieval over a scanned FAQ against the same FAQ as text: hit@1/5/10 and MRR per mode.

    .venv/bin/python bench/scanned_faq.py [--engine rapidocr] [--pages N]
        [--json bench/results/scanned_faq.json]

The Debian FAQ text (tests/fixtures/files/debian-faq.zh-cn.txt) is typeset onto A4 pages at
150 dpi with a CJK font (fonts-wqy-microhei), each page "scanned" (bench/scans.py: skew, noise,
JPEG, seeded) and the pages written as an image-only PDF. That PDF and the text file go into
two knowledge bases through the project's own upload → sandboxed parse (OCR) → chunk → embed
pipeline (m3e-small, Qwen's tokenizer, default chunking), and the FAQ golden set (121
questions, tests/fixtures/debian-faq-zh.jsonl) is run in every mode with rag.evaluation.
"needles found" counts the questions whose 24-character answer excerpt occurs at all in the
stored chunks: a question whose needle OCR garbled cannot be a hit, whatever is retrieved.
--pages N keeps the first N pages and the questions whose answers start there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.scans import images_to_pdf, scanned, text_pages  # noqa: E402

FAQ = REPO / "tests" / "fixtures" / "files" / "debian-faq.zh-cn.txt"
GOLDEN = REPO / "tests" / "fixtures" / "debian-faq-zh.jsonl"
_WS = re.compile(r"\s+")


def cjk_font() -> str:
    try:
        found = subprocess.run(
            ["fc-match", "-f", "%{file}", ":lang=zh-cn"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        found = ""
    if not found or not Path(found).exists():
        sys.exit("no CJK font found: apt-get install fonts-wqy-microhei")
    return found


def services(data_dir: Path, engine: str) -> Any:
    from rag.core.config import Settings
    from rag.ml.offline_models import ensure_offline_models
    from rag.services import Services

    models = ensure_offline_models(REPO / ".models")
    settings = Settings(
        data_dir=data_dir,
        embedding={"model": str(models.m3e_small)},  # type: ignore[arg-type]
        tokenizer={"path": models.qwen_tiktoken},  # type: ignore[arg-type]
        # A whole scanned book in one child, on a machine others share: this measures what OCR
        # reads, so the time limits (parse, and per page) are set out of its way.
        ingest={  # type: ignore[arg-type]
            "workers": 0,
            "parse_timeout_s": 7200,
            "ocr_engine": engine,
            "ocr_page_timeout_s": 900,
        },
    )
    return Services.create(settings)


def stored_text(svc: Any, kb_id: str) -> str:
    from sqlalchemy import select

    from rag.store.models import Chunk

    with svc.db.read() as session:
        texts = session.execute(select(Chunk.text).where(Chunk.kb_id == kb_id)).scalars()
        return _WS.sub("", "".join(texts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", default="rapidocr")
    parser.add_argument("--pages", type=int, default=0)
    parser.add_argument("--no-json", action="store_true", help="print only")
    parser.add_argument(
        "--json", type=Path, default=REPO / "bench" / "results" / "scanned_faq.json"
    )
    args = parser.parse_args()
    os.environ.setdefault("RAG_TEST_MODELS_DIR", str(REPO / ".models"))
    from bench.eval_sets.kb import ingest_files
    from bench.eval_table import scores
    from rag.evaluation.golden import load_golden

    lines = FAQ.read_text(encoding="utf-8").splitlines()
    started = time.perf_counter()
    pages = text_pages(lines, cjk_font())
    items = load_golden(GOLDEN)
    if args.pages:  # only the questions whose answers start on the kept pages
        pages = pages[: args.pages]
        kept = _WS.sub("", "".join(text for _, text in pages))
        items = [item for item in items if item.needle in kept]
    scans = [scanned(image, seed=i) for i, (image, _) in enumerate(pages)]
    print(f"{len(scans)} scanned pages made in {time.perf_counter() - started:.0f} s", flush=True)

    results: dict[str, Any] = {"engine": args.engine, "pages": len(scans), "kbs": {}}
    with tempfile.TemporaryDirectory(prefix="scanned-faq-") as tmp:
        folder = Path(tmp)
        scan_pdf = folder / "debian-faq.zh-cn.scanned.pdf"
        scan_pdf.write_bytes(images_to_pdf(scans))
        text_copy = folder / FAQ.name
        shutil.copyfile(FAQ, text_copy)
        svc = services(folder / "data", args.engine)
        try:
            for label, path in (("text", text_copy), ("scanned", scan_pdf)):
                began = time.perf_counter()
                kb_id = ingest_files(svc, f"faq-{label}", [path])
                ingest_s = time.perf_counter() - began
                text = stored_text(svc, kb_id)
                reports = svc.evaluator.run_modes(kb_id, items, svc.evaluator.default_modes())
                results["kbs"][label] = {
                    "ingest_s": round(ingest_s, 1),
                    "needles_found": sum(item.needle in text for item in items),
                    "questions": len(items),
                    "modes": {mode: scores(r) for mode, r in reports.items()},
                }
                hybrid = results["kbs"][label]["modes"]["hybrid"]
                print(
                    f"{label}: ingested in {ingest_s:.0f} s; needles found "
                    f"{results['kbs'][label]['needles_found']}/{len(items)}; hybrid hit@5 "
                    f"{hybrid['hit@5']:.3f}, MRR {hybrid['mrr']:.3f}",
                    flush=True,
                )
        finally:
            svc.close()
    results["measured"] = time.strftime("%Y-%m-%d %H:%M")
    results["load"] = round(os.getloadavg()[0], 1)
    if not args.no_json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        print(f"written to {args.json}")


if __name__ == "__main__":
    main()
