"""`rag routes train`: (re)train the routing classifier on labelled questions, with the
configured embedding model, and report its accuracy on the held-out set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rag.core.config import load_settings

# The shipped examples and the default C, named here rather than imported: the classifier
# module loads numpy, and every `rag` command imports this one (the client commands stay light).
_DATA = Path(__file__).resolve().parents[1] / "generation" / "routing_data"
TRAIN_FILE = _DATA / "train.jsonl"
HELD_OUT_FILE = _DATA / "held_out.jsonl"
DEFAULT_C = 10.0

app = typer.Typer(help="Model routing: the routing classifier.", no_args_is_help=True)


@app.command("train")
def train(
    examples: Annotated[
        Path, typer.Option(help="JSON lines of {text, label} to train on")
    ] = TRAIN_FILE,
    held_out: Annotated[
        Path | None, typer.Option(help="JSON lines to measure accuracy on (none: skip)")
    ] = HELD_OUT_FILE,
    output: Annotated[
        Path | None,
        typer.Option(
            help="where to write it (default: RAG_LLM__ROUTE_CLASSIFIER, else "
            "<data_dir>/routing/classifier.json)"
        ),
    ] = None,
    regularisation: Annotated[
        float, typer.Option("--c", help="inverse regularisation strength (C)")
    ] = DEFAULT_C,
) -> None:
    """Train on EXAMPLES with RAG_EMBEDDING__MODEL; the API loads it on its next start."""
    from rag.generation.route_classifier import (
        RouteClassifier,
        accuracy,
        classifier_path,
        load_examples,
    )
    from rag.ml.embedding import load_embedder

    settings = load_settings()
    rows = load_examples(examples)
    embedder = load_embedder(settings.embedding)
    model = settings.embedding.model
    classifier = RouteClassifier.train(
        rows, embedder.embed_query, model, regularisation=regularisation
    )
    path = output or classifier_path(settings.llm.route_classifier, settings.data_dir)
    classifier.save(path)
    typer.echo(
        f"trained on {len(rows)} examples ({', '.join(classifier.labels)}) with {model}, "
        f"C={classifier.regularisation:g}: {path}"
    )
    if held_out is not None:
        result = accuracy(classifier, load_examples(held_out), embedder.embed_query)
        typer.echo(f"held-out ({held_out.name}): {result.report()}")
