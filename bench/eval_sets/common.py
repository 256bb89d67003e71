"""What every set builder shares: fetching a Debian package, and writing a set's folder.

A set lives in tests/fixtures/eval/<id>/: `docs/` (the documents to ingest), `golden.jsonl`
(rag.evaluation.golden's format) and `set.json` (kind, held-out flag, source, licence).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EVAL = REPO / "tests" / "fixtures" / "eval"
CACHE = REPO / "var" / "eval_sets"


def debian_package(name: str) -> Path:
    """The unpacked tree of a Debian package (`apt-get download` + `dpkg -x`), cached."""
    root = CACHE / "debs" / name
    if root.exists():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", name], cwd=tmp, check=True, capture_output=True)
        (deb,) = Path(tmp).glob(f"{name}_*.deb")
        staging = Path(tmp) / "tree"
        subprocess.run(["dpkg", "-x", str(deb), str(staging)], check=True)
        root.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), root)
        (root / ".deb").write_text(deb.name + "\n")
    return root


def package_version(root: Path) -> str:
    """The version out of the cached .deb file name (name_version_arch.deb)."""
    return (root / ".deb").read_text().strip().split("_")[1]


def set_dir(set_id: str, *, clean: bool = True) -> Path:
    folder = EVAL / set_id
    if clean and folder.exists():
        shutil.rmtree(folder)
    (folder / "docs").mkdir(parents=True, exist_ok=True)
    return folder


def write_set(
    folder: Path, items: list[dict[str, Any]], meta: dict[str, Any], *, seed: int = 0
) -> None:
    """golden.jsonl (order shuffled by `seed`, so a prefix is an unbiased subset) and set.json."""
    random.Random(seed).shuffle(items)
    lines = [json.dumps(item, ensure_ascii=False) for item in items]
    (folder / "golden.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    meta = {**meta, "id": folder.name, "questions": len(items)}
    (folder / "set.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n")
    print(f"{folder.name}: {len(items)} questions, {len(list((folder / 'docs').iterdir()))} docs")
