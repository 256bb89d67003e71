"""The answerable / unanswerable question set behind the "not covered" refusal
(rag/retrieval/relevance.py), shared by bench/fit_relevance.py and bench/refusal.py.

Answerable: the golden sets' questions, each against the knowledge base of its documents (the
manpages-zh set's are reworded, not copied). Unanswerable (bench/relevance_data/
unanswerable.jsonl, written for this): everyday questions on other topics (Chinese, English)
asked of every knowledge base, and near-miss questions of the same domain the documents do not
answer (Linux/IT beyond Debian's FAQ and packaging guide; other statistics tools than R;
commands without a page in the 150 man pages), asked of their domain's knowledge base. 30% of
the questions (by a hash of knowledge base and id) are held out of the fit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_kb import EVAL, REPO, ingest_documents, real_services

DATA_DIR = REPO / "var" / "bench" / "relevance" / "data"
UNANSWERABLE = Path(__file__).resolve().parent / "relevance_data" / "unanswerable.jsonl"
# document -> (golden set, domain of its near-miss questions)
KBS = {
    "debian-faq.zh-cn.txt": (REPO / "tests" / "fixtures" / "debian-faq-zh.jsonl", "debian"),
    "maint-guide.zh-cn.pdf": (EVAL / "maint-guide-zh-pages.jsonl", "debian"),
    "R-FAQ.pdf": (EVAL / "r-faq-en-pages.jsonl", "r"),
    "manpages-zh": (EVAL / "manpages-zh" / "golden.jsonl", "manpages"),
}
FOLDERS = {"manpages-zh": EVAL / "manpages-zh" / "docs"}  # one knowledge base of many files
HELD_OUT_PERCENT = 30


@dataclass(frozen=True)
class Question:
    document: str
    id: str
    question: str
    answerable: bool
    kind: str  # "golden", "off-topic" or "near-miss"
    golden: dict[str, object] | None

    @property
    def held_out(self) -> bool:
        digest = hashlib.sha256(f"{self.document}/{self.id}".encode()).digest()
        return digest[0] * 100 // 256 < HELD_OUT_PERCENT


def questions() -> list[Question]:
    out: list[Question] = []
    unanswerable = [json.loads(line) for line in UNANSWERABLE.read_text().splitlines() if line]
    for document, (golden, domain) in KBS.items():
        for line in golden.read_text().splitlines():
            if line.strip():
                item = json.loads(line)
                out.append(Question(document, item["id"], item["question"], True, "golden", item))
        for item in unanswerable:
            if item["domain"] in ("any", domain):
                out.append(
                    Question(document, item["id"], item["question"], False, item["kind"], None)
                )
    return out


def services():  # type: ignore[no-untyped-def]
    """The benchmark's services with the documents ingested (cached in DATA_DIR)."""
    from ingest.upload import stage_upload
    from rag.kb import knowledge

    svc = real_services(DATA_DIR, 256, 0)
    kbs = ingest_documents(svc, tuple(k for k in KBS if k not in FOLDERS))
    with svc.db.read() as session:
        existing = {kb.name: kb.id for kb in knowledge.list_kbs(session)}
    for name, folder in FOLDERS.items():
        if name in existing:
            kbs[name] = existing[name]
            continue
        kbs[name] = svc.knowledge.create_kb(name).id
        for path in sorted(folder.iterdir()):
            with path.open("rb") as fh:
                staged = stage_upload(fh, path.name, svc.settings.data_dir, 10**8)
            svc.knowledge.add_document(kbs[name], staged)
        worker = svc.worker()
        while worker.run_once():
            pass
        svc.indexes.save_dirty()
    return svc, kbs
