"""Set "iso-code-tables" (kind: questions over tables): the answer is one row of a table.

    .venv/bin/python -m bench.eval_sets.iso_tables

Source: Debian package iso-codes (ISO 3166-1, 4217, 639-2 and 15924 as JSON, Chinese names
from its zh_CN translations). Four one-table documents: three Word files, one Markdown. Questions
come from templates (name -> code, code -> name); `answer_excerpt` is the row as the parser
reads it.
"""

from __future__ import annotations

import gettext
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.eval_sets.common import debian_package, package_version, set_dir, write_set

PACKAGE = "iso-codes"
Row = dict[str, str]
# (file, list key, translation domain, heading, columns: (header, field)), question templates
TABLES: list[tuple[str, str, str, str, list[tuple[str, str]], list[str], int]] = [
    ("国家和地区代码表.docx", "3166-1", "iso_3166-1", "国家和地区代码（ISO 3166-1）",
     [("中文名称", "zh"), ("英文名称", "name"), ("二位字母代码", "alpha_2"),
      ("三位字母代码", "alpha_3"), ("数字代码", "numeric")],
     ["{zh}的三位字母国家代码是什么？", "请问{zh}的 ISO 数字代码是多少", "{zh}的二位字母代码",
      "国家代码 {alpha_3} 指的是哪个国家或地区？", "数字代码为 {numeric} 的是哪个地区",
      "{name} 的中文名称是什么"], 90),
    ("货币代码表.docx", "4217", "iso_4217", "货币代码（ISO 4217）",
     [("中文名称", "zh"), ("英文名称", "name"), ("字母代码", "alpha_3"), ("数字代码", "numeric")],
     ["{zh}的货币代码是什么？", "{alpha_3} 是哪种货币的代码？", "货币{zh}的数字代码是多少",
      "请问 {name} 用中文怎么说"], 60),
    ("语言代码表.md", "639-2", "iso_639-2", "语言代码（ISO 639-2）",
     [("中文名称", "zh"), ("英文名称", "name"), ("三位字母代码", "alpha_3"),
      ("二位字母代码", "alpha_2")],
     ["{zh}的 ISO 639-2 代码是什么？", "语言代码 {alpha_3} 表示什么语言", "{zh}用哪个三字母代码",
      "{name} 这种语言的中文名"], 70),
    ("文字代码表.docx", "15924", "iso_15924", "书写系统代码（ISO 15924）",
     [("中文名称", "zh"), ("英文名称", "name"), ("四位字母代码", "alpha_4"),
      ("数字代码", "numeric")],
     ["{zh}的文字代码是什么？", "书写系统代码 {alpha_4} 对应哪种文字", "{zh}的 ISO 15924 数字代码"],
     30),
]  # fmt: skip


def load(root: Path, key: str, domain: str) -> list[Row]:
    rows = json.loads((root / f"usr/share/iso-codes/json/iso_{key}.json").read_text())[key]
    zh = gettext.translation(domain, root / "usr/share/locale", ["zh_CN"])
    out = []
    for row in rows:
        name = zh.gettext(row["name"])
        if name != row["name"]:  # untranslated rows are left out
            out.append({**{k: str(v) for k, v in row.items()}, "zh": name})
    return out


def write_docx(path: Path, heading: str, header: list[str], rows: list[list[str]]) -> None:
    import docx

    document = docx.Document()
    document.add_heading(heading, level=1)
    document.add_paragraph(f"下表列出{heading}，共 {len(rows)} 项，按英文名称排序。")
    table = document.add_table(rows=1, cols=len(header))
    for cell, text in zip(table.rows[0].cells, header, strict=True):
        cell.text = text
    for values in rows:
        for cell, text in zip(table.add_row().cells, values, strict=True):
            cell.text = text
    document.save(str(path))


def write_markdown(path: Path, heading: str, header: list[str], rows: list[list[str]]) -> None:
    lines = [f"# {heading}", "", f"下表列出{heading}，共 {len(rows)} 项，按英文名称排序。", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(values) + " |" for values in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    root = debian_package(PACKAGE)
    folder = set_dir("iso-code-tables")
    rng = random.Random("iso-code-tables")
    items: list[dict[str, Any]] = []
    for filename, key, domain, heading, columns, templates, count in TABLES:
        rows = sorted(load(root, key, domain), key=lambda r: r["name"])
        header = [h for h, _ in columns]
        table = [[row.get(field, "") for _, field in columns] for row in rows]
        writer: Callable[..., None] = write_markdown if filename.endswith(".md") else write_docx
        writer(folder / "docs" / filename, heading, header, table)
        # A name shared by two rows does not single one out.
        unique = [r for r in rows if sum(o["zh"] == r["zh"] for o in rows) == 1]
        for row in rng.sample(unique, min(count, len(unique))):
            usable = [t for t in templates if all(row.get(f) for f in _fields(t))]
            # Every cell, as the parsers render a table row (Markdown, equal neighbours kept).
            excerpt = " | ".join(row.get(field, "") for _, field in columns)
            items.append({
                "id": f"{key}:{row.get('alpha_3') or row.get('alpha_4')}",
                "question": rng.choice(usable).format(**row),
                "answer_excerpt": f"| {excerpt} |" if filename.endswith(".md") else excerpt,
            })  # fmt: skip
    meta = {
        "kind": "tables",
        "heldout": False,
        "source": f"Debian package {PACKAGE} {package_version(root)}: usr/share/iso-codes/json, "
        "usr/share/locale/zh_CN/LC_MESSAGES/iso_*.mo",
        "licence": "LGPL-2.1+ (iso-codes; the translations by the Translation Project teams)",
        "built_by": "bench/eval_sets/iso_tables.py",
    }
    write_set(folder, items, meta, seed=2)


def _fields(template: str) -> list[str]:
    import string

    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


if __name__ == "__main__":
    main()
