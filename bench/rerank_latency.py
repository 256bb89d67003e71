"""CPU latency of the default reranker's architecture (BAAI/bge-reranker-base) scoring top-N
passages of about 300 tokens each.

    .venv/bin/python bench/rerank_latency.py [--candidates 20 50] [--tokens 300] [--repeat 3]
        [--json-out var/bench/rerank_latency.json]

No model hub is reachable here, so the model is XLMRobertaForSequenceClassification built from
a config with bge-reranker-base's shape (12 layers, hidden 768, 12 heads, FFN 3072, vocabulary
250,002, one output) with RANDOM weights, fed random token ids: the arithmetic, and so the
latency, is that of the real model; its scores mean nothing. Batches of 16 pairs, as
rag/ml/rerank.py sends them; torch uses its default CPU threads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

BATCH = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candidates", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--tokens", type=int, default=300, help="query + passage, per pair")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json-out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    config = XLMRobertaConfig(  # type: ignore[call-arg]  # num_labels: a PretrainedConfig kwarg
        vocab_size=250_002,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        num_labels=1,
    )
    model = XLMRobertaForSequenceClassification(config).eval()
    params = sum(p.numel() for p in model.parameters())
    print(
        f"bge-reranker-base shape, random weights: {params / 1e6:.0f}M parameters, "
        f"{torch.get_num_threads()} torch threads"
    )
    generator = torch.Generator().manual_seed(0)
    rows = []
    for n in args.candidates:
        ids = torch.randint(5, 250_000, (n, args.tokens), generator=generator)
        ids[:, 0] = 0  # <s>
        mask = torch.ones_like(ids)
        times = []
        with torch.inference_mode():
            model(input_ids=ids[:2], attention_mask=mask[:2])  # warm-up
            for _ in range(args.repeat):
                started = time.perf_counter()
                for start in range(0, n, BATCH):
                    model(
                        input_ids=ids[start : start + BATCH],
                        attention_mask=mask[start : start + BATCH],
                    )
                times.append(time.perf_counter() - started)
        print(
            f"top-{n} x {args.tokens} tokens: median {statistics.median(times):.2f} s "
            f"(min {min(times):.2f}, max {max(times):.2f}) per query"
        )
        rows.append({"candidates": n, "tokens": args.tokens, "median_s": statistics.median(times)})
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(
            json.dumps({"torch_threads": torch.get_num_threads(), "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
