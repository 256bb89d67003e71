"""Packaging: the base install of `kbqa` is the Python client, the service is the `server` extra.

- `rag.client` imports and works with nothing on the path but the standard library, the base
  dependencies pyproject.toml declares (httpx, httpx-sse) and what they need in turn: a server
  import in the client fails here, and so does a client dependency missing from the base list;
- every script and image that installs the service asks for the `server` extra;
- the wheel, built offline from a copy of the checkout, ships the packages with their data
  (migrations, prompts, the web console) and no benchmarks or tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# Distributions and modules of the server that must not come with, or be imported by, the client.
SERVER_DISTRIBUTIONS = {
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "pydantic",
    "pydantic-settings",
    "numpy",
    "torch",
    "faiss-cpu",
    "sentence-transformers",
    "transformers",
    "llama-index-core",
    "bm25s",
    "jieba",
    "typer",
    "tiktoken",
}
SERVER_MODULES = {
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "pydantic",
    "pydantic_settings",
    "numpy",
    "torch",
    "faiss",
    "sentence_transformers",
    "transformers",
    "llama_index",
    "bm25s",
    "jieba",
    "typer",
    "tiktoken",
    "api",
    "ingest",
}
CLIENT_MODULES = {"rag", "rag.client", "rag.client._client", "rag.client._models"}


def _closure(requirements: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions that `requirements` need, recursively (markers evaluated
    for this interpreter, extras followed)."""
    found: dict[str, metadata.Distribution] = {}
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} (needed by the client install) is not installed in the venv")
        new_extras = [""] if name not in found else []
        new_extras += sorted(req.extras)
        found[name] = dist
        for wanted in new_extras:
            todo += [(Requirement(r), wanted) for r in dist.requires or []]
    return found


def _top_level(dist: metadata.Distribution) -> set[Path]:
    """The importable top-level packages and modules a distribution installed."""
    tops = set()
    for file in dist.files or []:
        first = file.parts[0]
        if first in ("..", "__pycache__") or first.endswith((".dist-info", ".pth", ".data")):
            continue
        if len(file.parts) == 1 and not first.endswith((".py", ".so", ".pyd")):
            continue
        tops.add(Path(str(dist.locate_file(first))))
    return tops


def _base_closure() -> dict[str, metadata.Distribution]:
    return _closure(PYPROJECT["project"]["dependencies"])


# Run with the client's files only: imports it, talks to a mock server, reports what it loaded.
CLIENT_SCRIPT = r"""
import asyncio, json, sys

isolated = sys.argv[1] == "isolated"
if isolated:
    sys.path[:0] = [sys.argv[2]]
    for server_module in ("fastapi", "pydantic", "numpy", "rag.core"):
        try:
            __import__(server_module)
        except ImportError:
            pass
        else:
            raise SystemExit(f"not isolated: {server_module} imports")

import httpx
from rag.client import ApiError, AsyncClient, Client

seen = []

def handler(request):
    seen.append((request.method, request.url.path, request.headers.get("authorization")))
    if request.url.path == "/v1/knowledge-bases" and request.method == "POST":
        body = json.loads(request.content)
        return httpx.Response(201, json={"id": "kb1", "name": body["name"], "chunks": 3})
    return httpx.Response(
        429,
        headers={"Retry-After": "7"},
        json={"error": {"code": "rate_limited", "message": "slow down"}},
    )

with Client("http://kbqa.test", api_key="k", transport=httpx.MockTransport(handler)) as kbqa:
    kb = kbqa.create_kb("handbook")
    assert (kb.id, kb.name, kb.chunks) == ("kb1", "handbook", 3), kb
    try:
        kbqa.list_kbs()
    except ApiError as exc:
        assert (exc.status, exc.code, exc.retry_after) == (429, "rate_limited", 7), exc
    else:
        raise AssertionError("a 429 must raise ApiError")

async def main():
    async with AsyncClient("http://kbqa.test", transport=httpx.MockTransport(handler)) as kbqa:
        return await kbqa.create_kb("async")

assert asyncio.run(main()).name == "async"
assert seen[0] == ("POST", "/v1/knowledge-bases", "Bearer k"), seen
print(json.dumps(sorted(sys.modules)))
"""


def _run_client(*args: str, cwd: Path) -> list[str]:
    """Run CLIENT_SCRIPT with these interpreter options and arguments: the modules it loaded."""
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _server_modules(loaded: list[str]) -> list[str]:
    rag = [m for m in loaded if m.split(".")[0] == "rag" and m not in CLIENT_MODULES]
    return rag + [m for m in loaded if m.split(".")[0] in SERVER_MODULES]


def test_client_works_with_only_its_base_dependencies(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    closure = _base_closure()
    for dist in closure.values():
        for top in _top_level(dist):
            (site / top.name).symlink_to(top, target_is_directory=top.is_dir())
    (site / "rag").mkdir()
    shutil.copy2(ROOT / "rag" / "__init__.py", site / "rag" / "__init__.py")
    shutil.copytree(
        ROOT / "rag" / "client", site / "rag" / "client", ignore=shutil.ignore_patterns("*.pyc")
    )

    # -I: no PYTHON* variables, no user site, no script directory; -S: no site-packages
    loaded = _run_client("-I", "-S", "-c", CLIENT_SCRIPT, "isolated", str(site), cwd=site)

    assert not _server_modules(loaded), _server_modules(loaded)
    installed = {top.name.removesuffix(".py") for top in site.iterdir()}
    allowed = {"__main__", "rag", *sys.stdlib_module_names, *installed}
    strays = sorted({m.split(".")[0] for m in loaded} - allowed)
    assert not strays, f"the client loaded modules from outside its dependencies: {strays}"


def test_client_imports_nothing_of_the_server_when_it_is_installed() -> None:
    """In the full environment too: an optional (try/except) server import would show here."""
    loaded = _run_client("-c", CLIENT_SCRIPT, "full", cwd=ROOT)
    assert not _server_modules(loaded), _server_modules(loaded)


def test_the_base_install_is_the_client_and_server_is_an_extra() -> None:
    pulled = set(_base_closure())
    assert {"httpx", "httpx-sse"} <= pulled
    assert not pulled & SERVER_DISTRIBUTIONS, pulled & SERVER_DISTRIBUTIONS

    extras = PYPROJECT["project"]["optional-dependencies"]

    def names(extra: str) -> set[str]:
        return {canonicalize_name(Requirement(r).name) for r in extras[extra]}

    assert {"fastapi", "sqlalchemy", "torch", "typer", "pydantic"} <= names("service")
    # Both FAISS builds install the `faiss` module: server has the CPU one, gpu the GPU one,
    # and nothing else brings either (docs/deployment.md, "FAISS on the GPU").
    assert "kbqa[service]" in extras["server"] and "faiss-cpu" in names("server")
    assert "kbqa[service]" in extras["gpu"] and "faiss-gpu-cu12" in names("gpu")
    assert "faiss-cpu" not in names("gpu") and "kbqa[server]" not in extras["gpu"]
    for name, requirements in extras.items():  # every other extra brings the service with it
        if name not in ("service", "server", "gpu"):
            assert {"kbqa[service]", "kbqa[server]"} & set(requirements), name
            assert not {"faiss-cpu", "faiss-gpu-cu12"} & names(name), name


def _extras(text: str, pattern: str) -> set[str]:
    match = re.search(pattern, text, re.M)
    assert match, pattern
    return set(match.group(1).split(","))


def test_every_installer_asks_for_the_server() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    assert "server" in _extras(setup, r'^EXTRAS="\$\{EXTRAS:-([\w,]+)\}"$')
    assert '-e ".[${EXTRAS}]"' in setup
    tests = (ROOT / "scripts" / "test.sh").read_text(encoding="utf-8")
    assert {"server", "dev"} <= _extras(tests, r'^EXTRAS="([\w,]+)" bash scripts/setup.sh$')
    docker = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "server" in _extras(docker, r"^ARG EXTRAS=([\w,]+)$")
    assert 'RUN pip install ".[${EXTRAS}]"' in docker


def _checkout_copy(dest: Path) -> Path:
    """The files of a fresh checkout (tracked and new files, not ignored ones) under dest."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    if listed.returncode != 0:  # not a git checkout: everything but the usual ignored folders
        ignore = shutil.ignore_patterns(
            ".git", ".venv", ".models", "var", "build", "dist", "site", "*.egg-info",
            "__pycache__", "*.pyc", ".*_cache", ".hypothesis",
        )  # fmt: skip
        shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
        return dest
    for name in listed.stdout.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():  # a file deleted in the working tree is not copied
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("wheel")
    source = _checkout_copy(base / "src")
    offline = ["--no-deps", "--no-build-isolation", "--no-index", "--quiet"]
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", *offline, "--wheel-dir", str(base / "dist"), source],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = (base / "dist").glob("kbqa-*.whl")
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        return {
            "names": names,
            "source": source,
            "metadata": archive.read(info).decode(),
            "entry_points": archive.read(entry_points).decode(),
        }


def _files(source: Path, folder: str, pattern: str) -> set[str]:
    found = {p.relative_to(source).as_posix() for p in (source / folder).glob(pattern)}
    return {name for name in found if "__pycache__" not in name and (source / name).is_file()}


@pytest.mark.timeout(600)
def test_wheel_ships_the_packages_and_their_data(wheel: dict[str, Any]) -> None:
    names, source = wheel["names"], wheel["source"]
    expected = {
        "rag/__init__.py",
        "rag/client/__init__.py",
        "rag/client/_client.py",
        "rag/client/_models.py",
        "rag/cli/main.py",
        "rag/store/migrations/env.py",
        "rag/store/migrations/script.py.mako",
        "api/__init__.py",
        "ingest/__init__.py",
    }
    migrations = _files(source, "rag/store/migrations", "**/*.py")
    prompts = _files(source, "rag/qa/prompts", "*.txt")
    ui = _files(source, "api/ui", "**/*")
    routing = _files(source, "rag/generation/routing_data", "*.jsonl")
    widget = _files(source, "api/widget", "*")  # served as /widget.js by the installed service
    assert len(migrations) > 2 and prompts and "api/ui/index.html" in ui and len(routing) == 2
    assert "api/widget/widget.js" in widget
    missing = sorted((expected | migrations | prompts | ui | routing | widget) - names)
    assert not missing, f"not in the wheel: {missing}"


@pytest.mark.timeout(600)
def test_wheel_leaves_out_development_files(wheel: dict[str, Any]) -> None:
    names = wheel["names"]
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"rag", "api", "ingest"}, tops
    assert not [n for n in names if n.startswith(("bench/", "tests/", "scripts/"))]
    assert "rag/cli/bench.py" not in names, "the benchmark runner is bench/runner.py"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert re.search(r"^rag = rag\.cli\.main:main$", wheel["entry_points"], re.M)


@pytest.mark.timeout(600)
def test_wheel_metadata_makes_the_client_the_base_install(wheel: dict[str, Any]) -> None:
    requires = re.findall(r"^Requires-Dist: (.+)$", wheel["metadata"], re.M)
    base = {canonicalize_name(Requirement(r).name) for r in requires if "extra ==" not in r}
    assert {"httpx", "httpx-sse"} <= base and not base & SERVER_DISTRIBUTIONS, base
    assert re.search(r"^Provides-Extra: server$", wheel["metadata"], re.M)
    service = [r for r in requires if re.search(r"""extra == ["']service["']""", r)]
    assert any(r.startswith("fastapi") for r in service), service
