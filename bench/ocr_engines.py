"""OCR engines side by side on scanned renderings: character error rate and pages per second.

    .venv/bin/python bench/ocr_engines.py [--engines rapidocr,tesseract] [--every 1]
        [--dpi 150] [--json bench/results/ocr_engines.json]

Every page of the Chinese PDF (tests/fixtures/files/maint-guide.zh-cn.pdf) and every 5th of
the English R FAQ is rendered at --dpi, skewed and noised (bench/scans.py, seeded), and read by
each engine in turn through ingest/parsers/ocr.py. CER is scored against the page's text layer
(NFKC, no whitespace); "han": Chinese characters only. Pages/s is OCR wall time after the model
is loaded; CPU s/page counts every thread and Tesseract's process (steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.scans import cer, page_texts, render_pages, scanned  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "files"
_HAN = re.compile(r"[^\u3400-\u9fff]")


def corpus() -> list[tuple[str, Path, int]]:
    """(language, pdf, step): the Chinese PDF every page, the English one every 5th."""
    return [("zh", FIXTURES / "maint-guide.zh-cn.pdf", 1), ("en", FIXTURES / "R-FAQ.pdf", 5)]


def _cpu_s() -> float:
    """CPU seconds of this process (every thread) and of its finished children (Tesseract)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _summary(rows: list[dict[str, Any]], document: str) -> dict[str, Any]:
    weight = sum(r["chars"] for r in rows)
    return {
        "document": document,
        "pages": len(rows),
        # CER over all the pages' characters together, and the median page's
        "cer": round(sum(r["cer"] * r["chars"] for r in rows) / weight, 4),
        "cer_median_page": round(statistics.median(r["cer"] for r in rows), 4),
        "han_cer": round(sum(r["han_cer"] * r["chars"] for r in rows) / weight, 4),
        "pages_per_s": round(len(rows) / sum(r["seconds"] for r in rows), 3),
        "cpu_s_per_page": round(statistics.fmean(r["cpu_s"] for r in rows), 2),
        "worst_pages": sorted(
            ({"page": r["page"], "cer": round(r["cer"], 3)} for r in rows),
            key=lambda r: -r["cer"],
        )[:5],
    }


def measure(engines: list[str], every: int, dpi: int) -> dict[str, Any]:
    """Each page is scanned once and read by every engine in turn, so that the engines share
    whatever else the machine is doing at that moment."""
    from ingest.parsers.base import ParseLimits
    from ingest.parsers.ocr import PageReport, load_engine, read_page

    out: dict[str, Any] = {name: {"languages": {}} for name in engines}
    loaded = {}
    for name in engines:
        started = time.perf_counter()
        loaded[name] = load_engine(name)
        out[name]["load_s"] = round(time.perf_counter() - started, 2)
    limits = ParseLimits(ocr_page_timeout_s=600)
    for language, pdf, step in corpus():
        data = pdf.read_bytes()
        texts = page_texts(data)
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in engines}
        for index in range(0, len(texts), step * every):
            reference = texts[index]
            if len(reference.strip()) < 20:  # blank or near-blank pages say nothing
                continue
            [page] = render_pages(data, dpi, [index])
            image = scanned(page, seed=index)
            for name in engines:
                began, cpu = time.perf_counter(), _cpu_s()
                lines = read_page(loaded[name], image, index + 1, limits, PageReport())
                seconds, cpu = time.perf_counter() - began, _cpu_s() - cpu
                text = "\n".join(line.text for line in lines)
                rows[name].append(
                    {
                        "page": index + 1,
                        "cer": cer(text, reference),
                        "han_cer": cer(_HAN.sub("", text), _HAN.sub("", reference)),
                        "chars": len(reference),
                        "seconds": seconds,
                        "cpu_s": cpu,
                    }
                )
                print(
                    f"  {name} {pdf.name} p{index + 1}: CER {rows[name][-1]['cer']:.3f} "
                    f"in {seconds:.1f} s ({cpu:.1f} s CPU)",
                    flush=True,
                )
        for name in engines:
            out[name]["languages"][language] = _summary(rows[name], pdf.name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engines", default="rapidocr,tesseract")
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--no-json", action="store_true", help="print only")
    parser.add_argument("--dpi", type=int, default=150)
    parser.add_argument(
        "--json", type=Path, default=REPO / "bench" / "results" / "ocr_engines.json"
    )
    args = parser.parse_args()
    results: dict[str, Any] = {
        "measured": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "scan": f"{args.dpi} dpi, skew up to 1.5 degrees, noise 12, specks, JPEG 75 (seeded)",
        "every": args.every,
    }
    engines = [name.strip() for name in args.engines.split(",")]
    results["engines"] = measure(engines, args.every, args.dpi)
    results["load_after"] = round(os.getloadavg()[0], 1)
    for name, measured in results["engines"].items():
        for language, r in measured["languages"].items():
            print(
                f"{name} {language}: CER {r['cer']:.3f} (han {r['han_cer']:.3f}) "
                f"{r['pages_per_s']:.2f} pages/s, {r['cpu_s_per_page']:.1f} s CPU/page "
                f"over {r['pages']} pages",
                flush=True,
            )
    if not args.no_json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        print(f"written to {args.json}")


if __name__ == "__main__":
    main()
