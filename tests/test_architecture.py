"""The shape of the code base: the import contract (layers, the client apart from the server),
no import cycles, and no component handed the composition root."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rag", "api", "ingest")


def test_the_import_contract_holds() -> None:
    linter = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run(
        [str(linter), "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "BROKEN" not in run.stdout and "KEPT" in run.stdout


def test_no_module_imports_itself_back() -> None:
    graph = grimp.build_graph(*PACKAGES)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    try:
        tuple(TopologicalSorter(edges).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_components_are_not_handed_the_composition_root() -> None:
    """Only the composition root's users (the CLI, the API's dependencies and app factory,
    the health check that reports on the root itself) may take `Services`."""
    allowed = {"rag/services.py", "api/deps.py", "api/app.py", "api/routes/health.py"}
    offenders = []
    for top in ("rag", "api"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in allowed or rel.startswith("rag/cli/"):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    args = node.args.args + node.args.kwonlyargs + node.args.posonlyargs
                    for arg in args:
                        if arg.annotation is not None and "Services" in ast.unparse(arg.annotation):
                            offenders.append(f"{rel}:{node.lineno} {node.name}({arg.arg})")
    assert offenders == []
