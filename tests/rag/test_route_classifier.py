"""The routing classifier: trained from the shipped labelled questions, kept as JSON weights,
applied after the rules with a confidence threshold and a default route; each decision logged,
counted and returned. The accuracy on the held-out set is printed, with a real embedding model."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from rag.cli.main import app
from rag.core.config import LLMRoute, LLMSettings
from rag.core.errors import ConfigError
from rag.generation.llm import LLMClient
from rag.generation.model_routes import Router
from rag.generation.route_classifier import (
    HELD_OUT_FILE,
    TRAIN_FILE,
    Example,
    Prediction,
    RouteClassifier,
    accuracy,
    load_examples,
    question_classifier,
)
from rag.ml.embedding import FakeEmbedder
from rag.services import Services
from tests.llm_script import ScriptedLLM, app_with, english_kb

LABELS = {"kb", "code", "math", "chitchat"}
ROUTES = [
    {"name": "coder", "model": "coder", "labels": ["code"], "base_url": "http://coder:8000/v1"},
    {"name": "maths", "model": "maths", "preset": "math", "labels": ["math"]},
    {"name": "small", "model": "small", "labels": ["chitchat"], "base_url": "http://small:8000/v1"},
]


def _no_server(request: httpx.Request) -> httpx.Response:
    return httpx.Response(404)


def router(classify: Prediction | None, **settings: object) -> Router:
    cfg = LLMSettings(routes=[LLMRoute(**r) for r in ROUTES], **settings)
    transport = httpx.MockTransport(_no_server)
    return Router(
        cfg,
        LLMClient(cfg, transport),
        transport,
        classifier=None if classify is None else (lambda question: classify),
    )


def test_the_shipped_examples_are_labelled_bilingual_and_apart() -> None:
    train, held_out = load_examples(TRAIN_FILE), load_examples(HELD_OUT_FILE)
    assert len(train) >= 300 and len(held_out) >= 100
    for rows in (train, held_out):
        counts = Counter(e.label for e in rows)
        assert set(counts) == LABELS and min(counts.values()) >= len(rows) // 5
        chinese = sum(any("\u4e00" <= ch <= "\u9fff" for ch in e.text) for e in rows)
        assert 0.35 < chinese / len(rows) < 0.65
    assert not {e.text for e in train} & {e.text for e in held_out}


def test_training_saving_and_loading_keep_the_predictions(tmp_path: Path) -> None:
    embedder = FakeEmbedder(64)
    train = load_examples(TRAIN_FILE)
    classifier = RouteClassifier.train(train, embedder.embed_query, embedder.model_name)
    assert set(classifier.labels) == LABELS and classifier.dim == 64
    path = tmp_path / "routing" / "classifier.json"
    classifier.save(path)
    loaded = RouteClassifier.load(path)
    vectors = np.stack([embedder.embed_query(e.text) for e in train[:20]])
    assert np.allclose(loaded.probabilities(vectors), classifier.probabilities(vectors), atol=1e-5)
    assert np.allclose(loaded.probabilities(vectors).sum(axis=1), 1.0)
    # hashed character n-grams are a weak embedding, but far better than chance (0.25)
    assert accuracy(loaded, load_examples(HELD_OUT_FILE), embedder.embed_query).ratio > 0.5
    classify = question_classifier(path, embedder.embed_query, embedder.model_name)
    assert classify is not None and classify("你好呀").label in LABELS


def test_a_classifier_for_another_model_or_a_bad_file_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    embedder = FakeEmbedder(16)
    rows = [Example(f"question {i}", "kb" if i % 2 else "code") for i in range(20)]
    path = tmp_path / "classifier.json"
    RouteClassifier.train(rows, embedder.embed_query, "fake:16").save(path)
    assert question_classifier(path, embedder.embed_query, "BAAI/bge-small-zh-v1.5") is None
    assert "trained for fake:16" in caplog.text
    assert question_classifier(tmp_path / "none.json", embedder.embed_query, "fake:16") is None
    path.write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ConfigError, match="unreadable route classifier"):
        RouteClassifier.load(path)
    with pytest.raises(ConfigError, match="5 examples each"):
        RouteClassifier.train(rows[:4], embedder.embed_query, "fake:16")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": "kb"}\nnot json\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl:2"):
        load_examples(bad)


def test_rules_first_then_a_confident_label_then_the_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "rag.generation.model_routes")
    confident = router(Prediction("code", 0.93))
    rule = confident.decide("What is 17 * 23?")  # the math preset matches first
    assert (rule.route.name, rule.source, rule.label) == ("maths", "rule", None)
    labelled = confident.decide("my loop never ends")
    assert (labelled.route.name, labelled.source, labelled.label) == ("coder", "classifier", "code")
    assert labelled.as_dict() == {
        "route": "coder",
        "source": "classifier",
        "label": "code",
        "confidence": 0.93,
    }
    assert "routing: classifier -> route coder (label code, confidence 0.930)" in caplog.text
    # a label no route lists goes to the default route
    kb = router(Prediction("kb", 0.99)).decide("年假有多少天？")
    assert (kb.route.name, kb.source, kb.label) == ("default", "classifier", "kb")
    # below the threshold: the default route, or the one named by route_default
    unsure = router(Prediction("chitchat", 0.41)).decide("hmm")
    assert (unsure.route.name, unsure.source, unsure.confidence) == ("default", "default", 0.41)
    named = router(Prediction("chitchat", 0.41), route_default="small").decide("hmm")
    assert named.route.name == "small" and named.source == "default"
    assert router(Prediction("chitchat", 0.41), route_threshold=0.4).decide("hmm").route.name == (
        "small"
    )
    # no classifier: rules and the default only
    assert router(None).decide("my loop never ends").source == "default"


def test_decisions_are_counted_and_a_broken_classifier_is_survived() -> None:
    def count(route: str, source: str) -> float:
        labels = {"route": route, "source": source}
        return REGISTRY.get_sample_value("rag_route_decisions_total", labels) or 0.0

    def boom(question: str) -> Prediction:
        raise RuntimeError("embedder gone")

    before = count("default", "default")
    cfg = LLMSettings()
    transport = httpx.MockTransport(_no_server)
    broken = Router(cfg, LLMClient(cfg, transport), transport, classifier=boom)
    assert broken.decide("anything").route.name == "default"
    assert count("default", "default") == before + 1


def test_bad_route_settings_fail_at_startup() -> None:
    with pytest.raises(ValueError, match="route_default 'nowhere' names no route"):
        LLMSettings(routes=[LLMRoute(**ROUTES[0])], route_default="nowhere")
    with pytest.raises(ValueError, match="classifier labels"):
        LLMSettings(routes=[LLMRoute(name="empty", model="m")])


def test_the_route_follows_the_context_its_server_serves() -> None:
    asked: list[str] = []
    now = [0.0]

    def vllm(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        model = {"id": "Qwen/Qwen2.5-7B-Instruct", "max_model_len": 98304}
        return httpx.Response(200, json={"data": [model]})

    cfg = LLMSettings(max_model_len=131072)
    transport = httpx.MockTransport(vllm)
    routes = Router(cfg, LLMClient(cfg, transport), transport, clock=lambda: now[0])
    assert routes.decide("q").route.settings.max_model_len == 98304
    routes.decide("q")
    assert asked == ["/v1/models"]  # not asked again within CONTEXT_RECHECK_S
    now[0] += 301
    routes.decide("q")
    assert len(asked) == 2


def test_routes_train_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RAG_EMBEDDING__MODEL", "fake:64")
    result = CliRunner().invoke(app, ["routes", "train"])
    assert result.exit_code == 0, result.output
    assert "trained on" in result.output and "held-out (held_out.jsonl): accuracy" in result.output
    saved = RouteClassifier.load(tmp_path / "routing" / "classifier.json")
    assert saved.embedding_model == "fake:64" and set(saved.labels) == LABELS


@pytest.mark.integration
def test_held_out_accuracy_with_a_real_embedding_model() -> None:
    """Prints the routing accuracy on the held-out set (bench/route_accuracy.py measures more)."""
    from rag.core.config import EmbeddingSettings
    from rag.ml.embedding import load_embedder
    from rag.ml.offline_models import ensure_offline_models

    models = Path(os.environ.get("RAG_TEST_MODELS_DIR", ".models"))
    folder = ensure_offline_models(models, only={"m3e_small"}).m3e_small
    embedder = load_embedder(EmbeddingSettings(model=str(folder)))
    classifier = RouteClassifier.train(load_examples(TRAIN_FILE), embedder.embed_query, str(folder))
    result = accuracy(classifier, load_examples(HELD_OUT_FILE), embedder.embed_query)
    print(f"\nrouting classifier on the held-out set, m3e-small: {result.report()}")
    assert result.ratio > 0.8


def test_the_answer_returns_the_routing_decision(tmp_path: Path) -> None:
    """The classifier the API loads from the data directory routes /ask, and says so."""
    embedder = FakeEmbedder(64)
    classifier = RouteClassifier.train(load_examples(TRAIN_FILE), embedder.embed_query, "fake:64")
    classifier.save(tmp_path / "data" / "routing" / "classifier.json")
    question = "Hello! How is your day going?"
    label = classifier.predict(embedder.embed_query(question)).label
    script = ScriptedLLM("Fine [1].")

    def routed(svc: Services) -> None:
        classify = svc._route_classifier()  # what Services.router builds the router with
        assert classify is not None
        svc._router = Router(
            svc.settings.llm, svc.llm, transport=script.transport(), classifier=classify
        )

    routes = [
        {"name": "labelled", "model": "other", "labels": [label], "base_url": "http://o:1/v1"}
    ]
    with app_with(tmp_path, script, services=routed, routes=routes, route_threshold=0.0) as (
        client,
        _,
    ):
        kb = english_kb(client)
        body = client.post(f"/v1/knowledge-bases/{kb}/ask", json={"question": question}).json()
    assert body["route"] == "labelled"
    assert body["routing"]["source"] == "classifier" and body["routing"]["label"] == label
    assert 0 < body["routing"]["confidence"] <= 1


def test_cli_defaults_match_the_classifier_module() -> None:
    """rag/cli/routes.py names the shipped files and C itself (to keep numpy out of every
    `rag` command); they must stay the classifier's own."""
    from rag.cli import routes
    from rag.generation import route_classifier

    assert routes.TRAIN_FILE == route_classifier.TRAIN_FILE
    assert routes.HELD_OUT_FILE == route_classifier.HELD_OUT_FILE
    assert routes.DEFAULT_C == route_classifier.DEFAULT_C
