"""The benchmark runner (bench/runner.py): its report renderer on canned results, its plan, and
the locust load driver live.

Behaviour only: which files appear and what they say; no timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

BENCH = Path(__file__).resolve().parents[2] / "bench"
PNG = b"\x89PNG\r\n\x1a\n"


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


runner = _module("runner")


def _stats(p50: float, p95: float) -> dict[str, float]:
    return {"p50_ms": p50, "p95_ms": p95}


def _retrieval_row(chunks: int, ratio: float) -> dict[str, float]:
    return {
        "raw_faiss_p50_ms": chunks / 10_000,
        "raw_bm25_p50_ms": 0.1,
        "hybrid_p50_ms": chunks / 9_000,
        "hybrid_p95_ms": chunks / 7_000,
        "overhead_ratio": ratio,
        "serial_ratio": ratio + 0.111,
        "overhead_p50_ms": 0.15,
    }


CANNED: dict[str, Any] = {
    "meta.json": {
        "mode": "quick",
        "started": "2026-12-02 17:00",
        "finished": "2026-12-02 17:20",
        "machine": {
            "cpu": "Test CPU 9000",
            "cores": 2,
            "ram_gb": 23.4,
            "os": "Debian GNU/Linux 12",
            "python": "3.11.2",
            "packages": {"torch": "2.13.0", "faiss-cpu": "1.15.1"},
            "load_start": 1.5,
            "load_end": 3.0,
        },
        "steps": [
            {"name": "load", "command": "python bench/load_api.py", "seconds": 60, "ok": True}
        ],
    },
    "ingest_pipeline.json": {
        "parse": {"pages": 52, "raw_pages_per_s": 15.0, "ours_pages_per_s": 14.0, "ratio": 0.93},
        "embed": {
            "chunks": 64,
            "plain_chunks_per_s": 3.0,
            "ours_chunks_per_s": 3.1,
            "ratio": 1.03,
            "torch_threads": 2,
        },
        "overlap": {
            "parse_alone_s": 4.0,
            "embed_s": 60.0,
            "whole_s": 62.0,
            "ratio": 1.03,
            "pages": 52,
            "chunks": 150,
            "stage_seconds": {"parse": 4, "chunk": 1, "embed": 60, "store": 0.1, "index": 0.5},
            "stage_throughput": {
                "parse": 13.0,
                "chunk": 150.0,
                "embed": 2.5,
                "store": 1500.0,
                "index": 300.0,
            },
        },
        "memory": {"peak_rss_mb": {"20": 900.0, "100": 910.0}, "ratio": 1.01},
    },
    "retrieval_scale.json": [
        {"chunks": 10_000, "flat": _retrieval_row(10_000, 1.12), "e2e_hybrid_p50_ms": 4.7},
        {"chunks": 100_000, "flat": _retrieval_row(100_000, 1.02)},
    ],
    "load_api.json": {
        "chunks": 230,
        "documents": ["debian-faq.zh-cn.txt"],
        "tokens": 100,
        "duration_s": 6,
        "overhead": {
            "rounds": 100,
            "ask_client": _stats(20, 30),
            "search_client": _stats(12, 20),
            "direct_upstream_client": _stats(1.1, 2),
            "retrieval_in_ask": _stats(8, 11),
            "generation_in_ask": _stats(6, 8),
            "ask_server_total": _stats(19, 29),
            "ask_overhead_client": _stats(4.2, 9),
            "ask_overhead_server": _stats(3.1, 7),
            "search_overhead_client": _stats(4, 6),
            "search_overhead_server": _stats(3, 5),
            "ask_minus_search_minus_direct_p50_ms": 6.9,
        },
        "levels": {
            endpoint: [
                {
                    "users": users,
                    "requests": 100 * users,
                    "errors": 0,
                    "throughput_rps": 40.0 + users,
                    "p50_ms": 10.0 * users,
                    "p95_ms": 15.0 * users,
                    "server_overhead_p50_ms": 3.0,
                }
                for users in (1, 2, 4)
            ]
            for endpoint in ("search", "ask")
        },
    },
    "memory.json": {
        "chunks": 20_000,
        "dim": 512,
        "vector_bytes": 2048,
        "mean_text_bytes": 775.0,
        "own_bytes_per_chunk": 2823.0,
        "service_bytes_per_chunk": 4607.0,
        "ratio": 1.63,
        "target": 1.5,
        "dense_bytes_per_chunk": 2094.0,
        "lexical_bytes_per_chunk": 2376.0,
    },
}


def _write(results: Path, names: list[str] | None = None) -> None:
    results.mkdir(parents=True, exist_ok=True)
    for name, data in CANNED.items():
        if names is None or name in names:
            (results / name).write_text(json.dumps(data))


def test_report_renders_markdown_and_plots_from_results(tmp_path: Path) -> None:
    report_module = _module("bench_report")
    results, report, plots = tmp_path / "results", tmp_path / "out" / "REPORT.md", tmp_path / "p"
    _write(results)

    written = report_module.render(results, report, plots)

    names = {p.name for p in written}
    assert names == {
        "ingest_stages.png",
        "retrieval_latency.png",
        "load_throughput.png",
        "load_latency.png",
        "ask_overhead.png",
        "memory_per_chunk.png",
    }
    for png in written:
        assert png.read_bytes().startswith(PNG) and png.stat().st_size > 5_000
    text = report.read_text("utf-8")
    for plot in names:  # linked relative to the report
        assert f"](../p/{plot})" in text
    # the machine it ran on
    for fact in ("Test CPU 9000", "23.4 GB", "Debian GNU/Linux 12", "3.11.2", "2.13.0", "1.15.1"):
        assert fact in text
    # each target with its verdict
    assert "| /ask overhead p50 | 4.2 ms | ≤ 5 ms | met |" in text
    assert "| memory per chunk ÷ (vector + text) | 1.63 | ≤ 1.5 | NOT met |" in text
    assert "| ours ÷ raw at 10,000 (flat) | 1.12 | ≤ 1.1 | NOT met |" in text
    assert "| 1.120 | 1.231 | 150 µs |" in text  # overlapped, serial, fixed cost per query
    assert "| stream relay efficiency | – | ≥ 0.95 | not run |" in text
    assert "**client-side**" in text and "**server-side**" in text  # the method is explained
    assert "## Streaming relay\n\nNot run" in text


def test_report_renders_whatever_is_there(tmp_path: Path) -> None:
    report_module = _module("bench_report")
    results = tmp_path / "results"
    _write(results, ["memory.json"])

    written = report_module.render(results, tmp_path / "REPORT.md", tmp_path / "plots")

    assert [p.name for p in written] == ["memory_per_chunk.png"]
    text = (tmp_path / "REPORT.md").read_text("utf-8")
    assert "Machine: unknown" in text
    assert "/search and /ask under load\n\nNot run" in text


def test_checks_compare_in_the_right_direction() -> None:
    check = _module("bench_report").Check
    assert check("a", 0.95, 0.9, higher=True).met is True
    assert check("a", 0.85, 0.9, higher=True).met is False
    assert check("a", 5.0, 5.0, higher=False).met is True
    assert check("a", None, 5.0, higher=False).verdict() == "not run"


def test_plan_quick_is_smaller_than_full(tmp_path: Path) -> None:
    quick = {s.name: s for s in runner.plan(True, tmp_path)}
    full = {s.name: s for s in runner.plan(False, tmp_path)}
    assert "1000000" not in quick["retrieval"].args and "1000000" in full["retrieval"].args
    assert set(quick) < set(full)
    for step in full.values():  # every step writes its JSON into the results folder
        assert str(tmp_path / step.output) in step.args
        assert (BENCH / step.script).is_file()


def test_runner_finds_the_benchmarks_of_the_checkout() -> None:
    assert BENCH.parent == runner.REPO and runner.BENCH == BENCH
    assert runner.bench_command.__defaults__ is not None  # --report/--plots default into bench/
    assert BENCH / "REPORT.md" in runner.bench_command.__defaults__


@pytest.mark.parametrize("how", [["bench/runner.py"], ["-m", "bench.runner"]])
def test_runner_runs_from_the_command_line(how: list[str]) -> None:
    shown = subprocess.run(
        [sys.executable, *how, "--help"],
        cwd=BENCH.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    for option in ("--quick", "--only", "--retrieval-size", "--render-only", "--results"):
        assert option in shown.stdout


def test_bench_runner_render_only_writes_the_report(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _write(results)
    args = ["--render-only", "--results", str(results)]
    args += ["--report", str(tmp_path / "REPORT.md"), "--plots", str(tmp_path / "plots")]

    outcome = CliRunner().invoke(runner.app, args)

    assert outcome.exit_code == 0, outcome.output
    assert (tmp_path / "REPORT.md").is_file()
    assert len(list((tmp_path / "plots").glob("*.png"))) == 6


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_load_driver_measures_a_live_server(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    command = [sys.executable, str(BENCH / "load_api.py"), "--levels", "1", "2"]
    command += ["--duration", "2", "--rounds", "5", "--tokens", "10", "--json-out", str(out)]

    subprocess.run(command, check=True, timeout=280, cwd=BENCH.parent)

    result = json.loads(out.read_text())
    assert result["chunks"] > 0
    for endpoint in ("search", "ask"):
        levels = result["levels"][endpoint]
        assert [level["users"] for level in levels] == [1, 2]
        for level in levels:
            assert level["requests"] > 0 and level["errors"] == 0
            assert 0 < level["p50_ms"] <= level["p95_ms"]
            assert level["throughput_rps"] > 0
    overhead = result["overhead"]
    assert overhead["rounds"] == 5
    for key in ("ask_overhead_client", "ask_overhead_server", "retrieval_in_ask"):
        assert set(overhead[key]) == {"p50_ms", "p95_ms"}
