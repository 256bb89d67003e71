"""Parse throughput per format (issue 17's closing note): documents made here, parsed in process.

Each format gets one document of realistic size (a 5,000-row sheet, a 40-slide deck, a 60 KB
article, a mail with 20 attachments …); the script parses it `--repeat` times and prints the
best time, pages per second and input MB per second, and the ratio to the plain library call on
the same bytes where one exists (openpyxl's rows, python-pptx's text frames, trafilatura's
extract), so our overhead shows apart from the library's cost. Legacy .doc includes the
LibreOffice conversion (a fresh profile each time). Measures, asserts nothing.

    python bench/format_throughput.py [--repeat 3] [--save bench/results/format_throughput.json]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import openpyxl  # noqa: E402
import pptx  # noqa: E402
import trafilatura  # noqa: E402

from ingest.parsers import parse  # noqa: E402
from tests.ingest.format_files import (  # noqa: E402
    Slide,
    make_eml,
    make_html,
    make_msg,
    make_pptx,
    make_xlsx,
)

SENTENCE = "员工出差前应提交出差申请，经部门负责人批准后方可出行，费用按标准报销。"


def _documents() -> dict[str, bytes]:
    rows: list[list[object]] = [["编号", "城市", "住宿上限", "说明"]]
    rows += [[i, f"城市{i}", 300 + i % 400, SENTENCE[: 10 + i % 20]] for i in range(5000)]
    slides = [
        Slide(f"第 {i} 页", [SENTENCE, SENTENCE[:20]], [["项目", "数值"], ["a", str(i)]], SENTENCE)
        for i in range(40)
    ]
    article = "".join(f"<h2>第 {i} 节</h2><p>{SENTENCE * 6}</p>" for i in range(60))
    attachments = [(f"附件{i}.txt", (SENTENCE * 20).encode()) for i in range(20)]
    return {
        "sheet.xlsx": make_xlsx({"标准": rows}),
        "sheet.csv": "\n".join(",".join(str(c) for c in r) for r in rows).encode(),
        "deck.pptx": make_pptx(slides),
        "page.html": make_html("制度", article),
        "mail.eml": make_eml("通知", SENTENCE * 30, attachments),
        "mail.msg": make_msg("通知", SENTENCE * 30, attachments),
        "notes.md": "\n\n".join(f"## 第 {i} 节\n\n{SENTENCE * 6}" for i in range(60)).encode(),
    }


def _legacy_doc() -> bytes | None:
    import docx

    if shutil.which("soffice") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        word = docx.Document()
        for i in range(40):
            word.add_heading(f"第 {i} 节", 2)
            word.add_paragraph(SENTENCE * 6)
        word.save(str(Path(tmp) / "a.docx"))
        profile = (Path(tmp) / "profile").as_uri()
        subprocess.run(
            [
                *("soffice", "--headless", f"-env:UserInstallation={profile}"),
                *("--convert-to", "doc", "--outdir", tmp, str(Path(tmp) / "a.docx")),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        return (Path(tmp) / "a.doc").read_bytes()


def _plain(name: str) -> Callable[[bytes], object] | None:
    """The library alone on the same bytes, for the ratio."""
    if name.endswith(".xlsx"):
        return lambda data: [
            list(s.iter_rows(values_only=True))
            for s in openpyxl.load_workbook(io.BytesIO(data), read_only=True).worksheets
        ]
    if name.endswith(".pptx"):
        return lambda data: [
            [s.text_frame.text for s in slide.shapes if s.has_text_frame]
            for slide in pptx.Presentation(io.BytesIO(data)).slides
        ]
    if name.endswith(".html"):
        return lambda data: trafilatura.extract(data, output_format="markdown")
    return None


def _best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--save", type=Path)
    args = ap.parse_args()
    documents = _documents()
    legacy = _legacy_doc()
    if legacy is not None:
        documents["policy.doc"] = legacy
    results = []
    head = ("format", "KB", "pages", "best s", "pages/s", "MB/s", "÷ lib")
    print("{:<12} {:>7} {:>5} {:>8} {:>8} {:>6} {:>6}".format(*head))
    for name, data in documents.items():
        doc = parse(data, name)
        seconds = _best(lambda: parse(data, name), args.repeat)  # noqa: B023 (called at once)
        plain = _plain(name)
        lib = _best(lambda: plain(data), args.repeat) if plain else None  # noqa: B023
        row = {
            "format": name.rsplit(".", 1)[1],
            "bytes": len(data),
            "pages": doc.pages,
            "blocks": len(doc.blocks),
            "seconds": round(seconds, 4),
            "pages_per_s": round(doc.pages / seconds, 1),
            "mb_per_s": round(len(data) / seconds / 1e6, 2),
            "ratio_to_library": round(seconds / lib, 2) if lib else None,
        }
        results.append(row)
        ratio = f"{row['ratio_to_library']:>6}" if lib else f"{'-':>6}"
        print(
            f"{row['format']:<12} {len(data) / 1024:>7.0f} {doc.pages:>5} {seconds:>8.3f}"
            f" {row['pages_per_s']:>8} {row['mb_per_s']:>6} {ratio}"
        )
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
