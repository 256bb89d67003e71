"""Run every issue's benchmark, collect its JSON, render bench/REPORT.md and the plots.

    .venv/bin/python bench/runner.py [--quick] [--only STEP ...] [--render-only] ...

(or `python -m bench.runner`, or `make bench` / `make bench-quick`). Development only: it runs
the `bench/*.py` scripts of a source checkout, so it is not part of the installed package.
Each benchmark runs as its own process, so one that fails or runs out of memory is reported
and the others still run; their JSON goes to the results folder, which bench/bench_report.py
turns into the report.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer

REPO = Path(__file__).resolve().parents[1]  # bench/runner.py -> the repository root
BENCH = REPO / "bench"
PACKAGES = (
    "torch",
    "faiss-cpu",
    "numpy",
    "sentence-transformers",
    "bm25s",
    "fastapi",
    "uvicorn",
    "locust",
    "matplotlib",
)


@dataclass(frozen=True)
class Step:
    name: str
    script: str
    args: tuple[str, ...]
    output: str  # the JSON file it writes in the results folder
    timeout_s: int


def plan(quick: bool, out: Path, retrieval_sizes: list[int] | None = None) -> list[Step]:
    """The benchmarks and their sizes: --quick for minutes, full for the sizes the issues ask."""
    sizes = retrieval_sizes or ([10_000, 100_000] if quick else [10_000, 100_000, 1_000_000])
    retrieval = ["--sizes", *map(str, sizes), "--json", str(out / "retrieval_scale.json")]
    if quick:
        retrieval += ["--queries", "100", "--e2e-max", "10000"]
    steps = [
        Step(
            "ingest",
            "ingest_pipeline.py",
            (*(["--quick"] if quick else []), "--json-out", str(out / "ingest_pipeline.json")),
            "ingest_pipeline.json",
            1800 if quick else 5400,
        ),
        Step("retrieval", "retrieval_scale.py", tuple(retrieval), "retrieval_scale.json", 3600),
        Step(
            "load",
            "load_api.py",
            (
                *(["--duration", "6", "--rounds", "100"] if quick else ["--duration", "20"]),
                "--json-out",
                str(out / "load_api.json"),
            ),
            "load_api.json",
            1800,
        ),
        Step(
            "memory",
            "memory_per_chunk.py",
            ("--chunks", "20000" if quick else "100000", "--json-out", str(out / "memory.json")),
            "memory.json",
            1800,
        ),
        Step(
            "relay",
            "stream_relay.py",
            ("--runs", "10" if quick else "30", "--save", str(out / "stream_relay.json")),
            "stream_relay.json",
            900,
        ),
    ]
    if not quick:  # minutes each, and dense_ann embeds the corpus once (cached in var/bench)
        steps += [
            Step(
                "rerank",
                "rerank_latency.py",
                ("--json-out", str(out / "rerank_latency.json")),
                "rerank_latency.json",
                1800,
            ),
            Step(
                "ann",
                "dense_ann.py",
                ("--json", str(out / "dense_ann.json")),
                "dense_ann.json",
                3600,
            ),
        ]
    return steps


def machine() -> dict[str, Any]:
    """What the report states about the machine it ran on."""
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "load_start": round(os.getloadavg()[0], 2),
    }
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        total_kb = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        info["ram_gb"] = round(total_kb / 2**20, 1)
    release = Path("/etc/os-release")
    if release.is_file():
        fields = dict(
            line.split("=", 1) for line in release.read_text().splitlines() if "=" in line
        )
        name = fields.get("PRETTY_NAME", "").strip('"')
        info["os"] = f"{name}, kernel {platform.release()}" if name else info["os"]
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "not installed"
    info["packages"] = packages
    return info


def _run(step: Step, out: Path, logs: Path) -> dict[str, Any]:
    """Run one benchmark, its output both on the terminal and in logs/<name>.log."""
    command = [sys.executable, str(BENCH / step.script), *step.args]
    shown = " ".join(["python", f"bench/{step.script}", *step.args]).replace(f"{REPO}/", "")
    typer.secho(f"\n== {step.name}: {shown}", bold=True)
    (out / step.output).unlink(missing_ok=True)  # stream_relay --save appends: start afresh
    started = time.monotonic()
    error = None
    with (logs / f"{step.name}.log").open("w") as log:
        proc = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"},  # no progress bars
        )
        assert proc.stdout is not None
        watchdog = threading.Timer(step.timeout_s, proc.kill)  # a hung benchmark prints nothing
        watchdog.start()
        for line in proc.stdout:
            log.write(line)
            if "\r" not in line:  # progress bars only go to the log
                typer.echo(line, nl=False)
        code = proc.wait()
        if not watchdog.is_alive():
            error = f"killed after {step.timeout_s} s"
        watchdog.cancel()
    if error is None and code != 0:
        error = f"exit status {code}; see {logs / (step.name + '.log')}"
    if error is None and not (out / step.output).is_file():
        error = f"it wrote no {step.output}"
    seconds = time.monotonic() - started
    if error:
        typer.secho(f"{step.name} FAILED: {error}", fg=typer.colors.RED, err=True)
    return {
        "name": step.name,
        "command": shown,
        "seconds": seconds,
        "ok": not error,
        "error": error,
    }


def bench_command(
    quick: Annotated[
        bool, typer.Option("--quick", help="small sizes: minutes instead of an hour")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(help="run only these steps: ingest retrieval load memory relay rerank ann"),
    ] = None,
    retrieval_size: Annotated[
        list[int] | None,
        typer.Option(help="corpus sizes for the retrieval step (repeat; default by mode)"),
    ] = None,
    results: Annotated[Path, typer.Option(help="where each benchmark's JSON goes")] = BENCH
    / "results"
    / "report",
    report: Annotated[Path, typer.Option(help="the Markdown report")] = BENCH / "REPORT.md",
    plots: Annotated[Path, typer.Option(help="the PNG figures")] = BENCH / "plots",
    render_only: Annotated[
        bool, typer.Option("--render-only", help="only re-render from the results folder")
    ] = False,
) -> None:
    """Run the benchmarks of every issue and write bench/REPORT.md with ratios and plots."""
    if not (BENCH / "bench_report.py").is_file():
        typer.secho(
            f"the benchmarks need a source checkout: {BENCH} has no bench_report.py",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    results.mkdir(parents=True, exist_ok=True)
    logs = REPO / "var" / "bench" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    failed = []
    if not render_only:
        steps = plan(quick, results.resolve(), retrieval_size)
        known = {s.name for s in steps}
        if only and not set(only) <= known:
            typer.secho(f"unknown step(s) {set(only) - known}; known: {sorted(known)}", fg="red")
            raise typer.Exit(2)
        meta: dict[str, Any] = {
            "mode": "quick" if quick else "full",
            "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "machine": machine(),
            "steps": [],
        }
        earlier = results / "meta.json"
        if only and earlier.is_file():  # keep the record of the steps not re-run this time
            kept = json.loads(earlier.read_text())["steps"]
            meta["steps"] = [s for s in kept if s["name"] not in only]
        for step in steps:
            if only and step.name not in only:
                continue
            meta["steps"].append(_run(step, results, logs))
        meta["finished"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
        meta["machine"]["load_end"] = round(os.getloadavg()[0], 2)
        failed = [s["name"] for s in meta["steps"] if not s["ok"]]
        (results / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    rendered = subprocess.run(
        [
            sys.executable,
            str(BENCH / "bench_report.py"),
            "--results",
            str(results),
            "--report",
            str(report),
            "--plots",
            str(plots),
        ],
        cwd=REPO,
        check=False,
    )
    if rendered.returncode or failed:
        typer.secho(
            f"failed: {', '.join(failed) or 'rendering the report'}", fg=typer.colors.RED, err=True
        )
        raise typer.Exit(1)
    typer.secho(f"\nwrote {report}", fg=typer.colors.GREEN)


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(bench_command)


if __name__ == "__main__":
    app()
