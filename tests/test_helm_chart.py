"""The Helm chart (deploy/helm/kbqa): `helm lint`, `helm template` and the rendered objects
checked against the Kubernetes JSON schemas, then what the objects must say: commands, probes
on /healthz and /readyz, secrets kept out of ConfigMaps, the GPU node for vLLM, every RAG_*
variable naming a setting, and values that cannot work refused with a message.

Helm runs through helm-python-sdk (Helm's Go SDK in a wheel: Debian has no helm package) and
the schemas come from kubernetes-validate; both are in the `dev` extra."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rag.core.config import Settings
from tests.test_deploy_files import _setting

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (the dev extra) is not installed")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate (the dev extra) is not installed"
)

CHART = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "kbqa"
KUBE_VERSIONS = ("1.27.0", "1.35.0")  # the oldest the chart supports (kubeVersion), a recent one

EXTERNAL: dict[str, Any] = {
    "externalDatabase": {"url": "postgresql+psycopg://kbqa:s3cret@db.example:5432/kbqa"},
    "externalRedis": {"url": "redis://:r3dis@redis.example:6379/0"},
    "llm": {"baseUrl": "http://vllm.llm.svc:8000/v1", "apiKey": "llm-key"},
    "models": {"existingClaim": "kbqa-models"},
}
BUNDLED: dict[str, Any] = {
    "postgresql": {"enabled": True, "auth": {"password": "pg-pass"}},
    "redis": {"enabled": True},
    "milvus": {"enabled": True},
    "vllm": {"enabled": True, "gpus": 2},
    "index": {"backend": "milvus"},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "tls": [{"secretName": "kbqa-tls", "hosts": ["kbqa.example.com"]}],
    },
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "api": {"autoscaling": {"enabled": True}},
    "models": {"existingClaim": "kbqa-models"},
}
PROFILES = {"external": EXTERNAL, "bundled": BUNDLED}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """`helm template kb deploy/helm/kbqa -n prod` with these values: every object."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values, name="kb", namespace="prod")
    return [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} objects"
    return matches[0]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = (
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name
    )
    return found


def env_of(objects: list[dict[str, Any]], c: dict[str, Any]) -> dict[str, str]:
    """The container's variables as Kubernetes resolves them: envFrom, then env, $(VAR) expanded."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            secret = find(objects, "Secret", source["secretRef"]["name"])
            env.update(
                {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
            )
    for item in c.get("env", []):
        if "value" in item:
            value = item["value"]
            for name, known in env.items():
                value = value.replace(f"$({name})", known)
            env[item["name"]] = value
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            secret = find(objects, "Secret", ref["name"])
            env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return env


@pytest.fixture(scope="module", params=sorted(PROFILES))
def profile(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(PROFILES[request.param])


def test_helm_lint_passes_strictly() -> None:
    for values in (None, EXTERNAL, BUNDLED):
        report = helm.lint(CHART, values, strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not problems and not report["errors"], (values, problems, report["errors"])


def test_rendered_objects_match_the_kubernetes_schemas(
    profile: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = profile
    kinds = {o["kind"] for o in objects}
    assert {"ConfigMap", "Secret", "Deployment", "Service", "PersistentVolumeClaim"} <= kinds
    for obj in objects:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # a CRD: checked in test_service_monitor_scrapes_every_api_replica
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} @ {version}: {exc}")


def test_api_and_worker_run_the_image_with_probes_on_the_health_routes() -> None:
    objects = render(EXTERNAL)
    api = find(objects, "Deployment", "kb-kbqa-api")
    worker = find(objects, "Deployment", "kb-kbqa-worker")
    a, w = container(api, "api"), container(worker, "worker")
    assert a["args"] == ["rag", "serve"] and w["args"] == ["rag", "worker"]
    assert a["image"] == w["image"] == "kbqa:0.1.0"
    assert api["spec"]["replicas"] == 2 and worker["spec"]["replicas"] == 1

    (port,) = a["ports"]
    assert port["name"] == "http" and port["containerPort"] == 8080
    assert a["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert a["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert a["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    api_env, worker_env = env_of(objects, a), env_of(objects, w)
    assert api_env["RAG_HOST"] == "0.0.0.0" and api_env["RAG_PORT"] == "8080"
    assert api_env["RAG_INGEST__WORKERS"] == "0", "only the worker ingests"
    assert worker_env["RAG_INGEST__WORKERS"] == "1"
    for env in (api_env, worker_env):
        assert env["RAG_DATABASE_URL"] == EXTERNAL["externalDatabase"]["url"]
        assert env["RAG_SECURITY__REDIS_URL"] == env["RAG_CACHE__REDIS_URL"]
        assert env["RAG_LLM__BASE_URL"] == "http://vllm.llm.svc:8000/v1"
        assert env["RAG_LLM__API_KEY"] == "llm-key"
        assert env["RAG_DATA_DIR"] == "/data" and env["RAG_INDEX__BACKEND"] == "faiss"

    service = find(objects, "Service", "kb-kbqa-api")
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = find(objects, "PodDisruptionBudget", "kb-kbqa-api")
    assert pdb["spec"]["selector"] == api["spec"]["selector"]


def test_uploads_are_shared_and_each_pod_has_its_own_index_cache() -> None:
    objects = render(EXTERNAL)
    claim = find(objects, "PersistentVolumeClaim", "kb-kbqa-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for name, cname in (("kb-kbqa-api", "api"), ("kb-kbqa-worker", "worker")):
        pod = find(objects, "Deployment", name)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {
            m["mountPath"]: m
            for m in container({"spec": {"template": {"spec": pod}}}, cname)["volumeMounts"]
        }
        assert (
            volumes[mounts["/data"]["name"]]["persistentVolumeClaim"]["claimName"] == "kb-kbqa-data"
        )
        assert "emptyDir" in volumes[mounts["/data/index"]["name"]]
        assert mounts["/models"]["readOnly"] is True
        assert (
            volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["claimName"]
            == "kbqa-models"
        )
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_secrets_stay_out_of_config_maps(profile: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = profile
    config = "\n".join(yaml.safe_dump(o) for o in objects if o["kind"] == "ConfigMap")
    for secret in ("s3cret", "r3dis", "llm-key", "pg-pass"):
        assert secret not in config
    for deployment in (o for o in objects if o["kind"] in ("Deployment", "StatefulSet")):
        text = yaml.safe_dump(deployment)
        for secret in ("s3cret", "r3dis", "llm-key", "pg-pass"):
            assert secret not in text, f"{deployment['metadata']['name']} spells out a secret"


def test_an_existing_secret_replaces_the_charts_own() -> None:
    values = {"secrets": {"existingSecret": "kbqa-prod"}, "llm": {"baseUrl": "http://llm/v1"}}
    objects = render(values)
    assert not [o for o in objects if o["kind"] == "Secret"]
    api = container(find(objects, "Deployment", "kb-kbqa-api"), "api")
    assert {"secretRef": {"name": "kbqa-prod"}} in api["envFrom"]


def test_every_rag_variable_names_a_setting_and_reaches_it(
    profile: tuple[str, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, objects = profile
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            env = {k: v for k, v in env_of(objects, c).items() if k.startswith("RAG_")}
            if not env:
                continue  # vLLM, Redis
            for name in list(os.environ):
                if name.startswith("RAG_"):
                    monkeypatch.delenv(name)
            for name, value in env.items():
                _setting(name)
                if name in ("RAG_EMBEDDING__MODEL", "RAG_TOKENIZER__PATH"):
                    value = str(tmp_path)  # a folder on the models volume
                monkeypatch.setenv(name, value)
            monkeypatch.chdir(tmp_path)  # no stray .env file
            settings = Settings()
            assert settings.sqlalchemy_url.startswith("postgresql+psycopg://")
            for name, value in env.items():
                got: Any = settings
                for part in _setting(name)[1]:
                    got = getattr(got, part)
                if name not in ("RAG_EMBEDDING__MODEL", "RAG_TOKENIZER__PATH"):
                    assert str(got) == value, f"{name}={value!r} reached Settings as {got!r}"


def test_bundled_dependencies_are_wired_to_the_api() -> None:
    objects = render(BUNDLED)
    env = env_of(objects, container(find(objects, "Deployment", "kb-kbqa-api"), "api"))
    assert env["RAG_DATABASE_URL"] == (
        "postgresql+psycopg://kbqa:pg-pass@kb-kbqa-postgresql:5432/kbqa"
    )
    assert env["RAG_SECURITY__REDIS_URL"] == "redis://kb-kbqa-redis:6379/0"
    assert env["RAG_CACHE__REDIS_URL"] == "redis://kb-kbqa-redis:6379/1"
    assert env["RAG_INDEX__BACKEND"] == "milvus"
    assert env["RAG_INDEX__MILVUS_URI"] == "http://kb-kbqa-milvus:19530"
    assert env["RAG_INDEX__MILVUS_INDEX"] == "AUTOINDEX"  # values.yaml index.milvusIndex
    assert env["RAG_LLM__BASE_URL"] == "http://kb-kbqa-vllm:8000/v1"

    def ports(name: str) -> set[int]:
        return {p["port"] for p in find(objects, "Service", name)["spec"]["ports"]}

    assert 5432 in ports("kb-kbqa-postgresql") and 6379 in ports("kb-kbqa-redis")
    assert 19530 in ports("kb-kbqa-milvus") and 8000 in ports("kb-kbqa-vllm")
    pg = container(find(objects, "StatefulSet", "kb-kbqa-postgresql"), "postgresql")
    assert "pg_isready" in " ".join(pg["readinessProbe"]["exec"]["command"])
    milvus = container(find(objects, "StatefulSet", "kb-kbqa-milvus"), "milvus")
    assert milvus["args"] == ["milvus", "run", "standalone"]
    assert milvus["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert "replicas" not in find(objects, "Deployment", "kb-kbqa-api")["spec"], "the HPA owns it"
    assert (
        find(objects, "HorizontalPodAutoscaler", "kb-kbqa-api")["spec"]["scaleTargetRef"]["name"]
        == "kb-kbqa-api"
    )


def test_vllm_runs_on_a_gpu_node_and_serves_the_model_kbqa_asks_for() -> None:
    objects = render(BUNDLED)
    vllm = find(objects, "Deployment", "kb-kbqa-vllm")
    pod = vllm["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    c = container(vllm, "vllm")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 2
    args = c["args"]

    def arg(flag: str) -> str:
        return str(args[args.index(flag) + 1])

    env = env_of(objects, container(find(objects, "Deployment", "kb-kbqa-api"), "api"))
    assert arg("--served-model-name") == env["RAG_LLM__MODEL"] == "Qwen/Qwen2.5-7B-Instruct"
    assert arg("--max-model-len") == env["RAG_LLM__MAX_MODEL_LEN"]
    assert arg("--tensor-parallel-size") == "2" and arg("--port") == "8000"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    shm = {v["name"]: v for v in pod["volumes"]}["shm"]
    assert shm["emptyDir"]["medium"] == "Memory"


def test_service_monitor_scrapes_every_api_replica() -> None:
    objects = render(BUNDLED)
    monitor = find(objects, "ServiceMonitor", "kb-kbqa-api")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    service = find(objects, "Service", "kb-kbqa-api")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["prod"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_ingress_routes_to_the_api() -> None:
    objects = render(BUNDLED)
    ingress = find(objects, "Ingress", "kb-kbqa")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "kb-kbqa-api", "port": {"name": "http"}}
    assert ingress["spec"]["tls"][0]["secretName"] == "kbqa-tls"


def _refusals() -> Iterator[tuple[dict[str, Any], str]]:
    llm = {"llm": {"baseUrl": "http://llm/v1"}}
    yield llm, "a database is required"
    yield {**EXTERNAL, "llm": {"baseUrl": ""}}, "an LLM is required"
    yield (
        {**EXTERNAL, "index": {"backend": "milvus"}},
        "needs milvus.enabled=true or externalMilvus.uri",
    )
    yield {**llm, "postgresql": {"enabled": True}}, "needs postgresql.auth.password"
    yield {**EXTERNAL, "postgresql": {"enabled": True, "auth": {"password": "x"}}}, "not both"
    yield (
        {**EXTERNAL, "persistence": {"accessModes": ["ReadWriteOnce"]}},
        "needs ReadWriteMany",
    )


@pytest.mark.parametrize(("values", "message"), list(_refusals()))
def test_values_that_cannot_work_are_refused_with_the_fix(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"api": {"replica": 3}}, "/api"),  # a misspelt key is not ignored
        ({"index": {"backend": "elasticsearch"}}, "/index/backend"),
        ({"externalDatabase": {"url": "mysql://db/kbqa"}}, "/externalDatabase/url"),
        ({"config": {"LOG_LEVEL": "INFO"}}, "LOG_LEVEL. does not match pattern"),
    ],
)
def test_the_values_schema_rejects_mistakes(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=where):
        render(values)
