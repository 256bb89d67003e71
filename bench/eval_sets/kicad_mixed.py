"""Set "kicad-mixed" (kind: English-and-Chinese mixed): questions that mix English terms with
Chinese over KiCad's partly translated Chinese manuals.

    .venv/bin/python -m bench.eval_sets.kicad_mixed

Source: Debian package kicad-doc-zh (KiCad 6 help, zh), seven HTML manuals as Markdown. One
question per section with a paragraph under its heading: the heading, some Chinese terms
swapped for KiCad's English ones, in a Chinese template; answered by that first paragraph.
`main` has the details.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import lxml.html

from bench.eval_sets.common import debian_package, package_version, set_dir, write_set

PACKAGE = "kicad-doc-zh"
HELP = "usr/share/doc/kicad/help/zh"
MANUALS = ("pcbnew", "kicad", "getting_started_in_kicad", "pl_editor", "pcb_calculator",
           "introduction", "gerbview")  # fmt: skip
MAX_QUESTIONS = 220
# Chinese UI terms and the English words KiCad users type for them.
GLOSSARY = {
    "封装": "footprint", "焊盘": "pad", "布线": "routing", "原理图": "schematic",
    "电路板": "PCB", "层": "layer", "区域": "zone", "过孔": "via", "网络": "net",
    "符号": "symbol", "库": "library", "设计规则": "design rules", "标注": "dimension",
    "丝印": "silkscreen", "阻焊": "solder mask", "快捷键": "hotkey", "导出": "export",
    "导入": "import", "文件": "file", "设置": "settings", "工具": "tool", "属性": "properties",
    "网表": "netlist", "元件": "component", "工程": "project", "图框": "drawing sheet",
    "走线": "track", "铺铜": "copper pour", "鼠标": "mouse", "菜单": "menu", "坐标": "coordinates",
    "编辑器": "editor", "插件": "plugin", "绘图": "plot", "打印": "print", "差分对": "diff pair",
}  # fmt: skip
TEMPLATES = [
    "KiCad 里{q}怎么用？", "请问{q}在哪里设置", "如何{q}？", "{q}是什么意思", "关于{q}的说明",
    "{q}有哪些选项？", "在 Pcbnew 中{q}", "{q}怎么操作", "想了解一下{q}",
]  # fmt: skip
_NUMBER = re.compile(r"^\s*(?:\d+\.)+\s*")
_BLOCK_TAGS = {"h2": 2, "h3": 3, "h4": 4, "h5": 5}


def _text(el: Any) -> str:
    return " ".join(el.text_content().split())


def to_markdown(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """The manual as Markdown, and (heading, first paragraph) for every section that has one."""
    root = lxml.html.parse(str(path)).getroot()
    (content,) = root.xpath('//div[@id="content"]')
    title = _text(root.xpath("//h1")[0]) if root.xpath("//h1") else path.stem
    lines, sections, heading = [f"# {title}", ""], [], None
    for el in content.iter("h2", "h3", "h4", "h5", "p", "li", "tr", "pre"):
        if el.tag != "tr" and el.tag != "li" and el.xpath("ancestor::li|ancestor::table"):
            continue  # inside a list item or table: emitted with it
        text = _text(el) if el.tag != "pre" else el.text_content().rstrip()
        if not text:
            continue
        if el.tag in _BLOCK_TAGS:
            lines += ["#" * _BLOCK_TAGS[el.tag] + " " + text, ""]
            heading = text
        elif el.tag == "li":
            lines += ["- " + text, ""]
        elif el.tag == "tr":
            cells = [_text(c) for c in el.xpath("./th|./td")]
            lines += ["| " + " | ".join(cells) + " |", ""]
        elif el.tag == "pre":
            lines += ["```", text, "```", ""]
        else:
            lines += [text, ""]
            if heading is not None:
                sections.append((heading, text))
                heading = None
    return "\n".join(lines), sections


def mix(heading: str, rng: random.Random) -> str:
    q = _NUMBER.sub("", heading).rstrip("：:")
    for zh in sorted(GLOSSARY, key=len, reverse=True):
        if zh in q and rng.random() < 0.6:
            q = q.replace(zh, f" {GLOSSARY[zh]} ")
    return " ".join(q.split())


def main() -> None:
    """Sections whose first paragraph has 24 characters or more and a numbered heading; a
    `GLOSSARY` term is swapped with probability 0.6; a heading left all Chinese gets a template
    that names KiCad or Pcbnew. Sections whose first 24 characters occur twice are left out."""
    root = debian_package(PACKAGE)
    folder = set_dir("kicad-mixed")
    rng = random.Random("kicad-mixed")
    texts, candidates = [], []
    for manual in MANUALS:
        markdown, sections = to_markdown(root / HELP / f"{manual}.html")
        filename = f"kicad-{manual}.zh.md"
        (folder / "docs" / filename).write_text(markdown, encoding="utf-8")
        texts.append(re.sub(r"\s+", "", markdown))
        candidates += [(manual, h, p) for h, p in sections if len(p) >= 24]
    items: list[dict[str, Any]] = []
    for manual, heading, paragraph in candidates:
        needle = re.sub(r"\s+", "", paragraph)[:24]
        if sum(t.count(needle) for t in texts) != 1 or not _NUMBER.match(heading):
            continue
        mixed = mix(heading, rng)
        # Every question mixes the two: an all-Chinese heading gets a template naming the tool.
        usable = TEMPLATES if re.search("[A-Za-z]{2,}", mixed) else TEMPLATES[:1] + TEMPLATES[6:7]
        q = rng.choice(usable).format(q=mixed)
        q = re.sub(r"(?<=[\u4e00-\u9fff]) (?=[\u4e00-\u9fff])", "", q)
        items.append({"id": f"{manual}:{_NUMBER.match(heading)[0].strip()}",  # type: ignore[index]
                      "question": q, "answer_excerpt": paragraph[:120]})  # fmt: skip
    if len(items) > MAX_QUESTIONS:
        items = rng.sample(items, MAX_QUESTIONS)
    meta = {
        "kind": "mixed-zh-en",
        "heldout": False,
        "source": f"Debian package {PACKAGE} {package_version(root)}: {HELP}/*.html",
        "licence": "GPL-2+ or CC-BY-SA-3.0 (KiCad documentation, (C) 2006-2022 KiCad Developers)",
        "built_by": "bench/eval_sets/kicad_mixed.py",
    }
    write_set(folder, items, meta, seed=3)


if __name__ == "__main__":
    main()
