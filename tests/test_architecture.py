"""The shape of the code base: the import contract (layers, the client apart from the server),
no import cycles, and no component handed the composition root."""

from __future__ import annotations

import ast
import re
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
    """Only the composition root itself and the CLI may take `Services`; in the API only the
    app factory, its dependencies and the readiness check (which reports on the root) take
    the API's view of it, `Root`."""
    roots = {
        "Services": {"rag/services.py"},
        "Root": {"api/deps.py", "api/app.py", "api/routes/health.py"},
    }
    offenders = []
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("rag/cli/"):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                args = node.args.args + node.args.kwonlyargs + node.args.posonlyargs
                for arg in args:
                    hint = ast.unparse(arg.annotation) if arg.annotation is not None else ""
                    for name, allowed in roots.items():
                        if re.search(rf"\b{name}(Dep)?\b", hint) and rel not in allowed:
                            offenders.append(f"{rel}:{node.lineno} {node.name}({arg.arg}: {hint})")
    assert offenders == []
