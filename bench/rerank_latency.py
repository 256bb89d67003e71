"""Reranker latency per query on CPU, ONNX Runtime int8 against the torch path, same inputs.

    .venv/bin/python bench/rerank_latency.py [--candidates 20 50] [--tokens 300] [--queries 5]
        [--repeat 1] [--models bge-base-shape m3e-small-ce] [--json-out PATH]

No real cross-encoder is reachable offline, so both models are stand-ins, good for latency and
for int8-vs-fp32 agreement, not for quality: `bge-base-shape` is bge-reranker-base's
architecture (XLM-R base, 278M parameters) with RANDOM weights; `m3e-small-ce` is m3e-small's
real 4-layer encoder with an untrained one-logit head. Both read m3e-small's tokenizer. Inputs:
FAQ questions, each with the same N windows of the FAQ text (about --tokens tokens a pair).
The three paths are rag/ml/rerank.py's own (torch = CrossEncoder.predict), run interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FAQ = ROOT / "tests/fixtures/files/debian-faq.zh-cn.txt"
QUESTIONS = ROOT / "tests/fixtures/debian-faq-zh.jsonl"
WORK = ROOT / "var/bench/rerank"


def m3e_folder() -> Path:
    from rag.ml.offline_models import ensure_offline_models

    models = Path(os.environ.get("RAG_TEST_MODELS_DIR", ROOT / ".models"))
    return ensure_offline_models(models, only={"m3e_small"}).m3e_small


def build_model(name: str) -> Path:
    """A CrossEncoder folder for `name` under var/bench/rerank (made once, seed 0)."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    folder = WORK / name
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(m3e_folder())
    if name == "bge-base-shape":
        # One segment type, as XLM-R has: no token_type_ids (saved with the tokenizer).
        tokenizer = AutoTokenizer.from_pretrained(
            m3e_folder(), model_input_names=["input_ids", "attention_mask"]
        )
        config = XLMRobertaConfig(  # type: ignore[call-arg]  # num_labels: a PretrainedConfig kwarg
            vocab_size=250_002,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=514,
            type_vocab_size=1,
            pad_token_id=tokenizer.pad_token_id,
            num_labels=1,
        )
        model = XLMRobertaForSequenceClassification(config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(m3e_folder(), num_labels=1)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def inputs(queries: int, windows: int, tokens: int, folder: Path) -> tuple[list[str], list[str]]:
    """FAQ questions and `windows` slices of the FAQ text, cut by the model's tokenizer so that
    a question and a slice make about `tokens` tokens."""
    from transformers import AutoTokenizer

    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines()]
    text = " ".join(FAQ.read_text(encoding="utf-8").split())
    offsets = AutoTokenizer.from_pretrained(folder)(text, return_offsets_mapping=True)[
        "offset_mapping"
    ][1:-1]
    width = tokens - 20  # a question is about 15 tokens, plus [CLS] and two [SEP]
    step = max(width, (len(offsets) - width) // windows)
    passages = [
        text[offsets[i * step][0] : offsets[i * step + width - 1][1]] for i in range(windows)
    ]
    return questions[:: max(1, len(questions) // queries)][:queries], passages


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def measure(model: str, args: argparse.Namespace) -> dict[str, object]:
    from rag.core.config import RetrievalSettings
    from rag.ml.rerank import load_reranker

    folder = build_model(model)
    cache = WORK / "onnx-cache"
    loaded: dict[str, Callable[[str, list[str]], list[float]]] = {}
    load_s: dict[str, float] = {}
    for backend in ("torch", "onnx-fp32", "onnx-int8"):  # onnx-fp32 exports both ONNX files
        settings = RetrievalSettings(
            reranker_model=str(folder), reranker_backend=backend, reranker_onnx_cache=str(cache)
        )
        started = time.perf_counter()
        loaded[backend] = load_reranker(settings).score
        load_s[backend] = round(time.perf_counter() - started, 1)
    queries, passages = inputs(args.queries, max(args.candidates), args.tokens, folder)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    pair_tokens = [
        len(ids)
        for ids in tokenizer([queries[0]] * len(passages), passages, truncation=True)["input_ids"]
    ]
    for score in loaded.values():  # warm-up: first-call allocations out of the timings
        score(queries[0], passages[:2])
    rows = []
    top = max(args.candidates)
    scores: dict[str, list[list[float]]] = {b: [] for b in loaded}  # at top-N, for agreement
    for n in args.candidates:
        times: dict[str, list[float]] = {b: [] for b in loaded}
        for _ in range(args.repeat):
            for query in queries:
                for backend, score in loaded.items():  # interleaved: load drifts hit all alike
                    started = time.perf_counter()
                    got = score(query, passages[:n])
                    times[backend].append(time.perf_counter() - started)
                    if n == top and len(scores[backend]) < len(queries):
                        scores[backend].append(got)
        medians = {b: statistics.median(t) for b, t in times.items()}
        rows.append(
            {
                "candidates": n,
                "tokens": round(statistics.mean(pair_tokens[:n])),
                "median_s": medians["torch"],
                "torch_median_s": medians["torch"],
                "onnx_fp32_median_s": medians["onnx-fp32"],
                "onnx_int8_median_s": medians["onnx-int8"],
                "torch_over_int8": medians["torch"] / medians["onnx-int8"],
                "torch_over_fp32": medians["torch"] / medians["onnx-fp32"],
            }
        )
        print(
            f"{model} top-{n} x ~{rows[-1]['tokens']} tokens, median per query: torch "
            f"{medians['torch']:.3f} s, onnx fp32 {medians['onnx-fp32']:.3f} s, onnx int8 "
            f"{medians['onnx-int8']:.3f} s; torch / int8 = {rows[-1]['torch_over_int8']:.2f}",
            flush=True,
        )
    agreement = {
        f"{a}_vs_{b}": {
            "spearman_mean": statistics.mean(spearman(x, y) for x, y in zip(sa, sb, strict=True)),
            "spearman_min": min(spearman(x, y) for x, y in zip(sa, sb, strict=True)),
            "top1_same": statistics.mean(
                float(np.argmax(x) == np.argmax(y)) for x, y in zip(sa, sb, strict=True)
            ),
            "top5_overlap": statistics.mean(
                len(set(np.argsort(x)[-5:]) & set(np.argsort(y)[-5:])) / 5
                for x, y in zip(sa, sb, strict=True)
            ),
        }
        for a, b in (("int8", "fp32"), ("int8", "torch"), ("fp32", "torch"))
        for sa, sb in [(scores[_name(a)], scores[_name(b)])]
    }
    spread = statistics.mean(float(np.std(s)) for s in scores["torch"])
    for key, value in agreement.items():
        print(
            f"{model} top-{top} agreement {key}: Spearman mean {value['spearman_mean']:.3f} "
            f"(min {value['spearman_min']:.3f}), same top-1 {value['top1_same']:.2f}, "
            f"top-5 overlap {value['top5_overlap']:.2f}",
            flush=True,
        )
    return {
        "model": model,
        "load_s (first load of fp32 includes the export)": load_s,
        "queries": len(queries),
        "repeat": args.repeat,
        "rows": rows,
        "agreement_top": top,
        "agreement": agreement,
        "score_std_per_query": spread,
    }


def _name(short: str) -> str:
    return {"int8": "onnx-int8", "fp32": "onnx-fp32", "torch": "torch"}[short]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candidates", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--tokens", type=int, default=300, help="query + passage, per pair")
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=["bge-base-shape", "m3e-small-ce"])
    parser.add_argument("--json-out", type=Path, default=ROOT / "bench/results/rerank_latency.json")
    args = parser.parse_args()
    import onnxruntime

    print(
        f"torch {torch.get_num_threads()} threads, onnxruntime {onnxruntime.__version__}, "
        f"{os.cpu_count()} CPUs"
    )
    results = [measure(model, args) for model in args.models]
    head = next((r for r in results if r["model"] == "bge-base-shape"), results[0])
    out = {
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        # The headline rows (bench_report.py): bge-reranker-base's shape; median_s is torch.
        "rows": head["rows"],
        "models": results,
        "quality": "not measured: no trained cross-encoder is reachable offline",
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(out, indent=1, ensure_ascii=False))
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
