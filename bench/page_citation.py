"""Page-citation accuracy on PDF page sets: how often the first passage names the right page.

.venv/bin/python bench/page_citation.py [--sets maint-pages,rfaq-pages,edu-manual-pages,
    iso4217-rows] [--variants outline,plain] [--modes lexical,hybrid] [--quick] [--json PATH]

Each PDF goes through the project's own ingest (m3e-small, Qwen's tokenizer, default chunking)
into a fresh knowledge base; every question of its set is asked and the page of the first hit
(the page of its best-matching sentence) compared with the golden page: hit@1 is the
page-citation accuracy. Variant "plain" is the same PDF with its outline (bookmarks) removed, so
headings can only come from typography. iso4217-rows is built here: the ISO 4217 row questions of
the iso-code-tables set over tests/fixtures/files/iso4217-currencies.zh-cn.pdf, each answered
by the page its currency code is printed on. To measure older code, run this file with
PYTHONPATH pointing at a checkout of it (a `git worktree`): it only uses long-standing APIs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FILES = REPO / "tests" / "fixtures" / "files"
EVAL = REPO / "tests" / "fixtures" / "eval"
PAGE_SETS = {
    "maint-pages": (FILES / "maint-guide.zh-cn.pdf", EVAL / "maint-guide-zh-pages.jsonl"),
    "rfaq-pages": (FILES / "R-FAQ.pdf", EVAL / "r-faq-en-pages.jsonl"),
    "edu-manual-pages": (
        EVAL / "edu-manual-pages" / "docs" / "debian-edu-bookworm-manual.zh-cn.pdf",
        EVAL / "edu-manual-pages" / "golden.jsonl",
    ),
    "iso4217-rows": (
        FILES / "iso4217-currencies.zh-cn.pdf",
        EVAL / "iso-code-tables" / "golden.jsonl",
    ),
}
QUICK_QUESTIONS = 60


def without_outline(data: bytes) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(data)).pages:
        writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def iso4217_golden(pdf: Path, golden: Path, out: Path) -> Path:
    """The ISO 4217 questions of the tables set, each with the page its code is printed on."""
    from pypdf import PdfReader

    pages = [p.extract_text() or "" for p in PdfReader(pdf).pages]
    lines = []
    for raw in golden.read_text(encoding="utf-8").splitlines():
        item = json.loads(raw)
        if not item["id"].startswith("4217:"):
            continue
        code = re.compile(rf"\b{item['id'].split(':')[1]}\b")
        on = [i + 1 for i, text in enumerate(pages) if code.search(text)]
        if len(on) == 1:
            lines.append(
                json.dumps(
                    {
                        "id": item["id"],
                        "question": item["question"],
                        "filename": pdf.name,
                        "page": on[0],
                    },
                    ensure_ascii=False,
                )
            )
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def services(data_dir: Path) -> Any:
    from rag.core.config import Settings
    from rag.ml.offline_models import ensure_offline_models
    from rag.services import Services

    models = ensure_offline_models(REPO / ".models")
    settings = Settings(
        data_dir=data_dir,
        embedding={"model": str(models.m3e_small)},
        tokenizer={"path": models.qwen_tiktoken},
        ingest={"workers": 0},
    )
    return Services.create(settings)


def measure(set_id: str, variant: str, modes: list[str], quick: bool, tmp: Path) -> dict[str, Any]:
    from ingest.upload import stage_upload
    from rag.evaluation.golden import load_golden

    pdf, golden = PAGE_SETS[set_id]
    if set_id == "iso4217-rows":
        golden = iso4217_golden(pdf, golden, tmp / "iso4217-rows.jsonl")
    data = pdf.read_bytes()
    if variant == "plain":
        data = without_outline(data)
    source = tmp / "docs" / variant / pdf.name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(data)
    items = load_golden(golden)[: QUICK_QUESTIONS if quick else None]
    svc = services(tmp / f"data-{set_id}-{variant}")
    try:
        kb_id = svc.knowledge.create_kb(f"{set_id}-{variant}").id
        started = time.perf_counter()
        with source.open("rb") as fh:
            staged = stage_upload(fh, pdf.name, svc.settings.data_dir, 10**8)
        svc.knowledge.add_document(kb_id, staged)
        worker = svc.worker()
        while worker.run_once():
            pass
        ingest_s = time.perf_counter() - started
        reports = svc.evaluator.run_modes(kb_id, items, modes)
    finally:
        svc.close()
    return {
        "questions": len(items),
        "ingest_s": round(ingest_s, 1),
        "modes": {
            mode: {"hit@1": r.hit_at[1], "hit@5": r.hit_at[5], "mrr": r.mrr}
            for mode, r in reports.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", default=",".join(PAGE_SETS))
    parser.add_argument("--variants", default="outline,plain")
    parser.add_argument("--modes", default="lexical,hybrid")
    parser.add_argument(
        "--quick", action="store_true", help=f"the first {QUICK_QUESTIONS} questions"
    )
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    os.environ.setdefault("RAG_TEST_MODELS_DIR", str(REPO / ".models"))
    import ingest

    print(f"code under test: {Path(ingest.__file__).resolve().parents[1]}", flush=True)
    modes = args.modes.split(",")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="page-citation-") as tmp:
        for set_id in args.sets.split(","):
            for variant in args.variants.split(","):
                if variant == "plain" and set_id == "iso4217-rows":
                    continue  # it has one bookmark only; nothing to take away
                key = f"{set_id}/{variant}"
                results[key] = measure(set_id, variant, modes, args.quick, Path(tmp))
                r = results[key]
                cells = " | ".join(
                    f"{m['hit@1']:.3f} / {m['hit@5']:.3f} / {m['mrr']:.3f}"
                    for m in r["modes"].values()
                )
                print(f"| {key} | {r['questions']} | {r['ingest_s']} | {cells} |", flush=True)
    head = "| set/variant | n | ingest s | " + " | ".join(modes) + " |"
    print("\ncells: page hit@1 (the page-citation accuracy) / page hit@5 / MRR\n")
    print(head)
    print("|" + "---|" * (3 + len(modes)))
    for key, r in results.items():
        cells = " | ".join(
            f"{m['hit@1']:.3f} / {m['hit@5']:.3f} / {m['mrr']:.3f}" for m in r["modes"].values()
        )
        print(f"| {key} | {r['questions']} | {r['ingest_s']} | {cells} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
