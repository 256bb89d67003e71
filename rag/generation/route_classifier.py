"""The routing classifier: a logistic regression over a question's embedding.

It labels what the model routing rules did not catch (kb, code, math, chitchat; the labels are
those of the training file) with a confidence. Trained by `rag routes train` from the labelled
examples in rag/generation/routing_data/ (scikit-learn), kept as plain JSON weights for one
embedding model, and applied with numpy. The embedder is passed in: this layer holds no models.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.core.errors import ConfigError

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
DATA_DIR = Path(__file__).with_name("routing_data")
TRAIN_FILE = DATA_DIR / "train.jsonl"
HELD_OUT_FILE = DATA_DIR / "held_out.jsonl"
Embed = Callable[[str], np.ndarray]
# Inverse regularisation strength: unit-length sentence embeddings need large weights to give
# confident probabilities. 5-fold accuracy on the training set (bench/route_accuracy.py), C = 1,
# 3, 10, 30, 100: m3e-small 0.906, 0.911, 0.920, 0.926, 0.926; all-MiniLM-L6-v2 0.840, 0.831,
# 0.826, 0.811, 0.823. 10 is within 1.5 points of the best for both.
DEFAULT_C = 10.0


@dataclass(frozen=True)
class Example:
    text: str
    label: str


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float  # the softmax probability of `label`


def load_examples(path: Path) -> list[Example]:
    """JSON lines of {"text": ..., "label": ...}; a bad line names its number."""
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            examples.append(Example(str(row["text"]), str(row["label"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}:{number}: not a {{text, label}} JSON line ({exc})") from exc
    return examples


class RouteClassifier:
    """Multinomial logistic regression: probabilities = softmax(W x + b) over `labels`."""

    def __init__(
        self,
        embedding_model: str,
        labels: list[str],
        coef: np.ndarray,
        intercept: np.ndarray,
        *,
        regularisation: float = 1.0,
    ) -> None:
        if coef.shape != (len(labels), coef.shape[1]) or intercept.shape != (len(labels),):
            raise ConfigError("route classifier weights do not match its labels")
        self.embedding_model = embedding_model
        self.labels = labels
        self.coef = coef.astype(np.float32)
        self.intercept = intercept.astype(np.float32)
        self.regularisation = regularisation

    @property
    def dim(self) -> int:
        return int(self.coef.shape[1])

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        logits = np.atleast_2d(vectors).astype(np.float32) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, vector: np.ndarray) -> Prediction:
        probs = self.probabilities(vector)[0]
        best = int(probs.argmax())
        return Prediction(self.labels[best], float(probs[best]))

    @classmethod
    def train(
        cls,
        examples: list[Example],
        embed: Embed,
        embedding_model: str,
        *,
        regularisation: float = DEFAULT_C,
    ) -> RouteClassifier:
        """Fit a multinomial logistic regression on the examples' embeddings."""
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        counts = Counter(e.label for e in examples)
        if len(counts) < 2 or min(counts.values()) < 5:
            raise ConfigError(f"need at least two labels with 5 examples each, got {dict(counts)}")
        vectors = np.stack([embed(e.text) for e in examples])
        model = LogisticRegression(C=regularisation, max_iter=2000)
        # One BLAS thread: a fit this small takes ~0.05 s on one, 10x more with threads that
        # spin against each other on a busy machine.
        with threadpool_limits(limits=1):
            model.fit(vectors, [e.label for e in examples])
        labels = [str(label) for label in model.classes_]
        coef, intercept = np.asarray(model.coef_), np.asarray(model.intercept_)
        if len(labels) == 2:  # scikit-learn keeps one row for two classes: make it a softmax
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        return cls(embedding_model, labels, coef, intercept, regularisation=regularisation)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "format_version": FORMAT_VERSION,
            "embedding_model": self.embedding_model,
            "labels": self.labels,
            "regularisation": self.regularisation,
            "coef": self.coef.round(6).tolist(),
            "intercept": self.intercept.round(6).tolist(),
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> RouteClassifier:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["format_version"] != FORMAT_VERSION:
                raise ValueError(f"format {data['format_version']}, not {FORMAT_VERSION}")
            return cls(
                data["embedding_model"],
                list(data["labels"]),
                np.asarray(data["coef"], dtype=np.float32),
                np.asarray(data["intercept"], dtype=np.float32),
                regularisation=float(data.get("regularisation", 1.0)),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"unreadable route classifier {path}: {exc}") from exc


@dataclass(frozen=True)
class Accuracy:
    total: int
    correct: int
    per_label: dict[str, tuple[int, int]]  # label -> (correct, total)
    confusion: dict[tuple[str, str], int]  # (expected, predicted) -> count, mistakes only

    @property
    def ratio(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def report(self) -> str:
        lines = [f"accuracy {self.ratio:.3f} ({self.correct}/{self.total})"]
        for label, (ok, n) in sorted(self.per_label.items()):
            lines.append(f"  {label:<10} {ok / n:.3f} ({ok}/{n})")
        for (want, got), n in sorted(self.confusion.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {want} taken for {got}: {n}")
        return "\n".join(lines)


def accuracy(classifier: RouteClassifier, examples: Iterable[Example], embed: Embed) -> Accuracy:
    per_label: dict[str, list[int]] = {}
    confusion: Counter[tuple[str, str]] = Counter()
    for example in examples:
        got = classifier.predict(embed(example.text)).label
        ok_n = per_label.setdefault(example.label, [0, 0])
        ok_n[0] += got == example.label
        ok_n[1] += 1
        if got != example.label:
            confusion[(example.label, got)] += 1
    correct = sum(ok for ok, _ in per_label.values())
    total = sum(n for _, n in per_label.values())
    return Accuracy(
        total, correct, {k: (v[0], v[1]) for k, v in per_label.items()}, dict(confusion)
    )


def classifier_path(configured: Path | None, data_dir: Path) -> Path:
    """RAG_LLM__ROUTE_CLASSIFIER, else routing/classifier.json in the data directory."""
    return configured or data_dir / "routing" / "classifier.json"


def question_classifier(
    path: Path, embed: Embed, embedding_model: str
) -> Callable[[str], Prediction] | None:
    """question -> Prediction with the classifier trained at `path` for `embedding_model`;
    None (rules only) when there is none, or (with a warning) when it was trained for another
    embedding model."""
    if not path.is_file():
        return None
    classifier = RouteClassifier.load(path)
    if classifier.embedding_model != embedding_model:
        log.warning(
            "the route classifier at %s was trained for %s, not %s: run `rag routes train`; "
            "rules only",
            path,
            classifier.embedding_model,
            embedding_model,
        )
        return None
    return lambda question: classifier.predict(embed(question))
