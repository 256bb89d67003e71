"""Sets "manpages-zh" and "manpages-zh-heldout" (kind: natural questions over many short,
similar documents): one document per Chinese man page, one answer document per question.

    .venv/bin/python -m bench.eval_sets.manpages

Source: Debian package manpages-zh (zh_CN), rendered to text by groff. Pages with a Chinese
NAME description are split by a hash of their name into two disjoint halves: a tuning set and
a held-out one. `questions` says how questions are made.
"""

from __future__ import annotations

import gzip
import random
import re
import subprocess
import zlib
from pathlib import Path
from typing import Any

from bench.eval_sets.common import debian_package, package_version, set_dir, write_set

PACKAGE = "manpages-zh"
MAN = "usr/share/man/zh_CN"
MIN_CHARS, MAX_CHARS = 300, 30_000
DOCS_PER_SET = 150
# What a page of each manual section is called in a question.
NOUN = {"1": "命令", "2": "系统调用", "3": "函数", "4": "设备文件", "5": "配置文件", "6": "程序",
        "7": "命令", "8": "管理命令"}  # fmt: skip
_NAME_HEADS = ("名称", "NAME", "名字", "NAME 名称", "名称 NAME")
_DESC_HEADS = ("描述", "DESCRIPTION", "说明", "DESCRIPTION 描述", "描述 DESCRIPTION")
_CJK = re.compile(r"[\u4e00-\u9fff]")
# Everyday rewordings a user might type instead of the manual's word.
SYNONYMS = {
    "显示": "查看", "列出": "显示", "删除": "移除", "创建": "新建", "修改": "更改",
    "目录": "文件夹", "用户": "使用者", "设置": "设定", "获取": "取得", "打印": "输出",
    "检查": "检验", "信息": "资料", "执行": "运行", "文件": "档案", "程序": "软件",
    "指定": "给定", "读取": "读", "输出": "打印", "改变": "修改", "系统": "操作系统",
}  # fmt: skip
TEMPLATES = [
    "请问哪个{noun}可以{q}？", "如何{q}？", "{q}用什么{noun}？", "有没有{noun}能{q}",
    "是否有办法{q}？", "想要{q}，该用哪个{noun}", "{q}的{noun}是哪个？", "怎样才能{q}",
    "哪个{noun}负责{q}？", "我需要{q}", "{q}，怎么做",
]  # fmt: skip


def render(path: Path) -> str:
    roff = subprocess.run(["preconv"], input=gzip.decompress(path.read_bytes()),
                          capture_output=True, check=True).stdout  # fmt: skip
    out = subprocess.run(
        ["groff", "-Tutf8", "-mandoc", "-rLL=100n", "-rHY=0", "-P-cbou"],
        input=roff, capture_output=True, check=True,
    ).stdout.decode("utf-8", "replace")  # fmt: skip
    lines = []
    for line in out.splitlines():
        indent = len(line) - len(line.lstrip())
        lines.append(" " * indent + " ".join(line.split()))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def section_text(text: str, heads: tuple[str, ...]) -> str:
    """The body of the first section whose heading (a line at column 0) is one of `heads`."""
    lines = text.splitlines()
    for n, line in enumerate(lines):
        if line.strip() in heads and not line.startswith(" "):
            body = []
            for rest in lines[n + 1 :]:
                if rest and not rest.startswith(" "):
                    break
                body.append(rest.strip())
            return " ".join(body).strip()
    return ""


def clean(text: str) -> str:
    text = re.sub(r"（[^）]*）|\([^)]*\)|“|”|\"|「|」", "", text)
    return text.strip(" 。.，,；;：:")


def reword(text: str, rng: random.Random) -> str:
    """Synonyms, then maybe one word dropped and maybe two neighbours swapped."""
    import jieba

    words = [w for w in jieba.lcut(text) if w.strip()]
    words = [SYNONYMS[w] if w in SYNONYMS and rng.random() < 0.5 else w for w in words]
    content = [i for i, w in enumerate(words) if len(w) > 1 and 0 < i < len(words) - 1]
    if len(words) >= 4 and content and rng.random() < 0.5:
        del words[rng.choice(content)]
    if len(words) >= 4 and rng.random() < 0.25:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    joined = ""
    for w in words:  # a space only between two Latin words
        joined += (" " if joined and joined[-1].isascii() and w[0].isascii() else "") + w
    return joined


def questions(name: str, section: str, text: str, rng: random.Random) -> list[dict[str, Any]]:
    """One question from the NAME line's description and, for a third of the pages, one from
    the first sentence of DESCRIPTION (unless it speaks of "this"/"it"). The page's own names
    are removed; parentheses and quotes dropped; `reword` applied; a `TEMPLATES` filler added
    with the section's noun (命令, 函数, ...)."""
    made = []
    names_part, _, desc = section_text(text, _NAME_HEADS).partition(" - ")
    own = {n.strip() for n in names_part.split(",") if n.strip()} | {name}
    sources = [("name", desc)]
    first = re.split(r"[。！？]", section_text(text, _DESC_HEADS), maxsplit=1)[0]
    # A sentence about "this tool" or "it" does not single out a page.
    vague = first.startswith(("这", "此", "本", "该")) or "它" in first
    if rng.random() < 1 / 3 and 12 <= len(first) <= 60 and not vague:
        sources.append(("description", first))
    for origin, raw in sources:
        q = clean(raw)
        for n in sorted(own, key=len, reverse=True):
            q = re.sub(rf"(?<![\w-]){re.escape(n)}(?![\w-])", "", q).strip()
        if len(_CJK.findall(q)) < 4:
            continue
        question = rng.choice(TEMPLATES).format(noun=NOUN.get(section, "命令"), q=reword(q, rng))
        made.append({"origin": origin, "question": question})
    return made


def main() -> None:
    root = debian_package(PACKAGE)
    pages: dict[str, tuple[str, str]] = {}
    for path in sorted((root / MAN).glob("man*/*.gz")):
        name = path.name.removesuffix(".gz")  # "ls.1"
        try:
            text = render(path)
        except subprocess.CalledProcessError:
            continue
        desc = section_text(text, _NAME_HEADS).partition(" - ")[2]
        if MIN_CHARS <= len(text) <= MAX_CHARS and len(_CJK.findall(desc)) >= 4:
            pages[name] = (path.parent.name.removeprefix("man"), text)
    # A description shared by two pages cannot single out one document.
    by_desc: dict[str, int] = {}
    for _, text in pages.values():
        key = section_text(text, _NAME_HEADS).partition(" - ")[2]
        by_desc[key] = by_desc.get(key, 0) + 1
    halves: dict[str, list[str]] = {"manpages-zh": [], "manpages-zh-heldout": []}
    for name in pages:
        half = "manpages-zh-heldout" if zlib.crc32(name.encode()) % 2 else "manpages-zh"
        halves[half].append(name)
    written: set[str] = set()  # some pages are copies of others (vi, gvim, ...): keep one
    for set_id, names in halves.items():
        rng = random.Random(set_id)
        names = sorted(rng.sample(sorted(names), min(DOCS_PER_SET, len(names))))
        folder = set_dir(set_id)
        items = []
        for name in names:
            section, text = pages[name]
            if text in written:
                continue
            written.add(text)
            filename = f"{name}.txt"
            (folder / "docs" / filename).write_text(text, encoding="utf-8")
            if by_desc[section_text(text, _NAME_HEADS).partition(" - ")[2]] > 1:
                continue
            for n, q in enumerate(questions(name, section, text, rng)):
                items.append({"id": f"{name}#{n}", **q, "filename": filename, "page": 1})
        meta = {
            "kind": "many-short-docs",
            "heldout": set_id.endswith("heldout"),
            "source": f"Debian package {PACKAGE} {package_version(root)}: {MAN}/man*/*.gz",
            "licence": "GFDL-1.2+ (manpages-zh translators; see the package's copyright file)",
            "built_by": "bench/eval_sets/manpages.py",
        }
        write_set(folder, items, meta, seed=1)


if __name__ == "__main__":
    main()
