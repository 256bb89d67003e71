"""Dockerfile, .dockerignore and docker-compose.yml: the services, health checks, volumes and
settings wiring, and every RAG_* variable naming a real setting (Settings ignores unknown
variables, so a misspelt one would otherwise be lost without a word). The image is not built
here: that needs the network for the base image."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from rag.core.config import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _interpolate(value: Any) -> Any:
    """Compose's ${NAME:-default} with an empty environment: the defaults."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _interpolate(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _health(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source ("" for an anonymous volume)."""
    out: dict[str, str] = {}
    for entry in service.get("volumes", []):
        parts = entry.split(":")
        if len(parts) == 1:
            out[parts[0]] = ""
        else:
            out[parts[1]] = parts[0]
    return out


def _dockerfile_env() -> dict[str, str]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip().startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def _setting(name: str) -> tuple[type[BaseModel], list[str]]:
    """The Settings path of RAG_A__B, or a failed test naming the unknown part."""
    assert name.startswith("RAG_"), name
    parts = name.removeprefix("RAG_").lower().split("__")
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        assert part in model.model_fields, f"{name}: {part!r} is not a setting of {model.__name__}"
        annotation = model.model_fields[part].annotation
        if i < len(parts) - 1:
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel), name
            model = annotation
    return model, parts


def test_compose_has_the_services_with_health_checks_and_volumes(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == {"api", "worker", "postgres", "redis", "vllm", "milvus"}
    assert services["milvus"]["profiles"] == ["milvus"], "Milvus starts only with its profile"
    assert "/healthz" in _health(services["milvus"])
    api, worker, pg, redis, vllm = (
        services[n] for n in ("api", "worker", "postgres", "redis", "vllm")
    )

    assert api["command"] == ["rag", "serve"] and worker["command"] == ["rag", "worker"]
    assert api["image"] == worker["image"], "api and worker run the same image"
    assert "/healthz" in _health(api)
    assert worker["healthcheck"] == {"disable": True}
    assert "pg_isready" in _health(pg)
    assert "redis-cli ping" in _health(redis)
    assert re.search(r"127\.0\.0\.1:8000/(health|v1/models)", _health(vllm))

    for name in ("api", "worker"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["depends_on"]["api"]["condition"] == "service_healthy"  # migrations first

    declared = set(compose["volumes"])
    mounts = {name: _mounts(service) for name, service in services.items()}
    assert mounts["api"]["/data"] == mounts["worker"]["/data"] == "rag-data"
    assert mounts["worker"]["/data/index"] == ""  # an index cache of its own per replica
    assert mounts["api"]["/models"] == mounts["worker"]["/models"]
    assert mounts["postgres"]["/var/lib/postgresql/data"] == "pg-data"
    assert mounts["vllm"]["/root/.cache/huggingface"] == "hf-cache"
    named = {s for m in mounts.values() for s in m.values() if s and not s.startswith((".", "/"))}
    assert named <= declared


def test_vllm_serves_qwen_on_a_gpu(compose: dict[str, Any]) -> None:
    vllm = compose["services"]["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai")
    args = vllm["command"]

    def arg(flag: str) -> str:
        return str(args[args.index(flag) + 1])

    assert arg("--model") == "Qwen/Qwen2.5-7B-Instruct"
    assert arg("--max-model-len") == "131072" and "--enable-prefix-caching" in args
    # The launcher that fits the context to the GPU is this repository's file, mounted.
    assert vllm["entrypoint"][:2] == ["python3", "/opt/kbqa/vram_plan.py"]
    assert _mounts(vllm)["/opt/kbqa/vram_plan.py"] == "./rag/generation/vram_plan.py"
    assert (REPO / "rag/generation/vram_plan.py").is_file()
    assert arg("--port") == "8000" and arg("--host") == "0.0.0.0"
    device = vllm["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]

    env = _env(compose["services"]["api"])
    assert env["RAG_LLM__MODEL"] == arg("--served-model-name")
    assert env["RAG_LLM__MAX_MODEL_LEN"] == arg("--max-model-len")
    assert env["RAG_LLM__BASE_URL"] == f"http://vllm:{arg('--port')}/v1"


def test_settings_are_wired_by_environment(compose: dict[str, Any]) -> None:
    api, worker = _env(compose["services"]["api"]), _env(compose["services"]["worker"])
    for env in (api, worker):
        assert env["RAG_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in env["RAG_DATABASE_URL"]
        assert env["RAG_SECURITY__REDIS_URL"] == "redis://redis:6379/0"
        assert env["RAG_LLM__BASE_URL"] == "http://vllm:8000/v1"
        assert env["RAG_EMBEDDING__MODEL"].startswith("/models/")  # a mounted local folder
        assert env["RAG_DATA_DIR"] == "/data"
    assert api["RAG_HOST"] == "0.0.0.0"
    assert api["RAG_INGEST__WORKERS"] == "0", "only the worker service ingests"
    assert int(worker.get("RAG_INGEST__WORKERS", "1")) >= 1
    pg = _env(compose["services"]["postgres"])
    user, password = pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"]
    assert api["RAG_DATABASE_URL"] == (
        f"postgresql+psycopg://{user}:{password}@postgres:5432/{pg['POSTGRES_DB']}"
    )


def _all_rag_variables(compose: dict[str, Any]) -> dict[str, dict[str, str]]:
    found = {f"compose:{name}": _env(svc) for name, svc in compose["services"].items()}
    found["Dockerfile"] = _dockerfile_env()
    return {
        where: {k: v for k, v in env.items() if k.startswith("RAG_")}
        for where, env in found.items()
    }


def test_every_rag_variable_names_a_setting_and_reaches_it(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = COMPOSE.read_text(encoding="utf-8") + DOCKERFILE.read_text(encoding="utf-8")
    code = "\n".join(re.sub(r"(^|\s)#.*", "", line) for line in text.splitlines())
    mentioned = set(re.findall(r"\bRAG_[A-Z0-9_]+", code))
    variables = _all_rag_variables(compose)
    assert set().union(*variables.values()) == mentioned, "RAG_* set outside `environment`/ENV"
    assert variables["Dockerfile"], "the Dockerfile sets the data dir, host and port"

    for where, env in variables.items():
        if not env:
            continue
        for name in list(os.environ):
            if name.startswith("RAG_"):
                monkeypatch.delenv(name)
        for name, value in env.items():
            _setting(name)
            if name == "RAG_EMBEDDING__MODEL":  # a folder mounted into the container
                value = str(tmp_path)
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)  # no stray .env file
        settings = Settings()
        for name, value in env.items():
            _, parts = _setting(name)
            got: Any = settings
            for part in parts:
                got = getattr(got, part)
            expected = str(tmp_path) if name == "RAG_EMBEDDING__MODEL" else value
            assert str(got) == expected, f"{where}: {name}={value!r} reached Settings as {got!r}"


def test_setting_names_are_checked_strictly() -> None:
    with pytest.raises(AssertionError, match="redis_ur"):
        _setting("RAG_SECURITY__REDIS_UR")
    with pytest.raises(AssertionError, match="not a setting"):
        _setting("RAG_INGEST_WORKERS")


def test_dockerfile_builds_a_cpu_image_for_a_non_root_user() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    torch = text.index("download.pytorch.org/whl/cpu")
    extras = re.search(r"^ARG EXTRAS=(\S+)$", text, re.M)
    assert extras and {"server", "postgres", "redis", "milvus"} <= set(extras[1].split(","))
    assert torch < text.index('pip install ".[${EXTRAS}]"'), "CPU torch goes in before the server"
    # Legacy Office formats and the second OCR engine are in the image unless left out.
    assert re.search(r"^ARG INSTALL_OFFICE=1$", text, re.M)
    for package in ("libreoffice-writer-nogui", "tesseract-ocr-chi-sim", "fonts-wqy-microhei"):
        assert package in text, package
    assert re.search(r"torch==\$\{TORCH_VERSION\}", text)
    assert re.search(r"^ARG TORCH_VERSION=2\.13\.0$", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^VOLUME \[\"/data\"\]", text, re.M)
    assert re.search(r"^HEALTHCHECK .*", text, re.M) and "/healthz" in text
    assert re.search(r'^CMD \["rag", "serve"\]$', text, re.M)
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    for path in (".git", ".venv", ".models", ".env", "var", "tests"):
        assert path in ignored, path


def _compose_command() -> tuple[list[str] | None, str]:
    """The Compose command to validate with, or None and why there is none: the Docker CLI's
    plugin (`docker compose`), else the standalone `docker-compose` (Debian's package, which
    scripts/test.sh installs beside docker)."""
    if shutil.which("docker") is None:
        return None, "docker is not installed"
    try:
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        probe = None
        why = f"`docker compose version` did not run: {exc}"
    if probe is not None:
        if probe.returncode == 0:
            return ["docker", "compose"], ""
        why = f"`docker compose version` failed: {(probe.stderr or probe.stdout).strip()[:200]}"
    if shutil.which("docker-compose") is not None:
        return ["docker-compose"], ""
    return None, f"{why}; no docker-compose either"


def test_docker_compose_accepts_the_file() -> None:
    command, reason = _compose_command()
    if command is None:
        pytest.skip(f"Docker Compose is not available here ({reason})")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
